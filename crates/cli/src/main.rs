//! `chimera`: the operator's command line (`chimera --help`, `chimera <command> --help`).
//!
//! - Operator work through the HITL API ([`ops`], [`client`]): `agents`, `budgets`, `goals`,
//!   `reviews`; the API's address and token from `--api`/`CHIMERA_API`, `CHIMERA_TOKEN` or the
//!   config file; human output, `--json` for scripts, documented exit codes.
//! - Stage administration, on the database and AWS directly: `migrate`, `bootstrap`, `health`,
//!   `up` (the three in a row), `demo` (seeds a tenant and submits goals to a running runner's
//!   API) and `token` (a bearer token for the local API). The stage comes from `CHIMERA_STAGE`
//!   (default `chimera-local`), the endpoints from the standard AWS variables and
//!   `DATABASE_URL`.

mod client;
mod demo;
mod ops;

use std::process::ExitCode;

use anyhow::{Context, Result};
use chimera_aws::Clients;
use chimera_aws::bootstrap::{self, BootstrapOptions, StageReport};
use chimera_core::names::{self, ResourceNames};
use clap::{Parser, Subcommand};

/// The operator's command line for a Chimera stage.
///
/// agents, budgets, goals and reviews talk to the HITL API: its address from --api, CHIMERA_API
/// or the config file (default http://127.0.0.1:8080), the bearer token from CHIMERA_TOKEN or the
/// config file (CHIMERA_CONFIG, default ~/.config/chimera/config: lines `api = <url>` and
/// `token = <jwt>`). Exit codes: 0 done; 1 other error; 2 usage; 3 not found; 4 conflict
/// (taken, stale, already decided, paused); 5 invalid request (nothing stored); 6 no valid
/// token or role; 7 API unreachable or failing; 8 a watched goal failed or was cancelled; 9 a
/// watched goal did not settle in time.
///
/// migrate, bootstrap, health, up and demo work on the stage directly: CHIMERA_STAGE (default
/// chimera-local), the standard AWS variables (AWS_ENDPOINT_URL...) and DATABASE_URL;
/// `eval "$(scripts/stack env)"` sets them for the local stack.
#[derive(Debug, Parser)]
#[command(name = "chimera", version)]
struct Cli {
    /// The HITL API (operator commands).
    #[arg(long, global = true, value_name = "URL")]
    api: Option<String>,
    /// Print the API's JSON instead of text (operator commands).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Onboard, list, show, update, pause and resume agents.
    #[command(subcommand)]
    Agents(ops::Agents),
    /// Open budgets, top them up, read ledgers.
    #[command(subcommand)]
    Budgets(ops::Budgets),
    /// Submit, list, show, watch and cancel goals.
    #[command(subcommand)]
    Goals(ops::Goals),
    /// List, show, approve, reject and edit held items.
    #[command(subcommand)]
    Reviews(ops::Reviews),
    /// Apply migrations/ to DATABASE_URL (an up-to-date database is left alone).
    Migrate,
    /// Create the stage's queues (each with its DLQ), artifact bucket and idempotency table;
    /// idempotent.
    Bootstrap,
    /// Check every service and resource of the stage and print a report; non-zero if any fails.
    Health,
    /// migrate, then bootstrap, then print the stage's report.
    Up,
    /// Seed a tenant with agents, submit goals to a running runner's API, show their progress
    /// and a summary (scripts/demo runs it).
    Demo {
        /// The runner's API, e.g. http://127.0.0.1:8080.
        #[arg(long, value_name = "URL")]
        api: String,
        /// Where the agents publish: `world` (the project's simulator) or `bluesky` (the local
        /// network `scripts/stack up --bsky` runs, CHIMERA_BSKY_PDS_URL).
        #[arg(long, default_value = "world", value_parser = ["world", "bluesky"])]
        platform: String,
    },
    /// Print a bearer token for the local HITL API, signed with CHIMERA_JWT_SECRET.
    Token {
        /// The tenant the token acts for.
        #[arg(long, value_name = "UUID")]
        tenant: uuid::Uuid,
        /// Comma-separated roles: operator, reviewer, admin.
        #[arg(long, value_name = "ROLES", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// The subject (who the audit log names).
        #[arg(long, value_name = "NAME", default_value = "cli")]
        sub: String,
        /// How long the token is valid, in seconds.
        #[arg(long, value_name = "N", default_value_t = 8 * 3600)]
        ttl_secs: i64,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Migrate => "migrate",
            Command::Bootstrap => "bootstrap",
            Command::Health => "health",
            Command::Up => "up",
            Command::Demo { .. } => "demo",
            Command::Token { .. } => "token",
            Command::Agents(_) => "agents",
            Command::Budgets(_) => "budgets",
            Command::Goals(_) => "goals",
            Command::Reviews(_) => "reviews",
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let name = cli.command.name();
    let (api, json) = (cli.api, cli.json);
    let outcome = match cli.command {
        Command::Agents(c) => {
            async { ops::agents(&client::Api::from_env(api)?, json, c).await }.await
        }
        Command::Budgets(c) => {
            async { ops::budgets(&client::Api::from_env(api)?, json, c).await }.await
        }
        Command::Goals(c) => {
            async { ops::goals(&client::Api::from_env(api)?, json, c).await }.await
        }
        Command::Reviews(c) => {
            async { ops::reviews(&client::Api::from_env(api)?, json, c).await }.await
        }
        Command::Migrate => migrate().await,
        Command::Bootstrap => bootstrap_stage().await.map(|report| print_report(&report)),
        Command::Health => health().await,
        Command::Up => up().await,
        Command::Demo { api, platform } => demo(&api, &platform).await,
        Command::Token {
            tenant,
            roles,
            sub,
            ttl_secs,
        } => token(tenant, &roles, &sub, ttl_secs),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chimera {name}: error: {err:#}");
            ExitCode::from(client::exit_code(&err))
        }
    }
}

fn database_url() -> Result<String> {
    std::env::var(names::env::DATABASE_URL).context(
        "DATABASE_URL is not set (scripts/stack up prints it; eval \"$(scripts/stack env)\")",
    )
}

async fn migrate() -> Result<()> {
    let pool = chimera_store::connect(&database_url()?, 2)
        .await
        .context("connecting to PostgreSQL")?;
    if let Err(err) = chimera_store::migrate(&pool).await {
        let hint = chimera_store::migration_hint(&err)
            .map(|hint| format!("\n{hint}"))
            .unwrap_or_default();
        return Err(anyhow::Error::new(err).context(format!("applying migrations{hint}")));
    }
    let applied: i64 = sqlx_count(&pool).await?;
    println!("postgres   ok   {applied} migrations applied");
    Ok(())
}

async fn sqlx_count(pool: &chimera_store::PgPool) -> Result<i64> {
    chimera_store::applied_migrations(pool)
        .await
        .context("counting applied migrations")
}

async fn bootstrap_stage() -> Result<StageReport> {
    let names = ResourceNames::from_env()?;
    let max_receive_count = names::max_receive_count_from_env().map_err(anyhow::Error::msg)?;
    let clients = Clients::from_env().await;
    bootstrap::bootstrap(&clients, &names, BootstrapOptions { max_receive_count })
        .await
        .with_context(|| format!("bootstrapping stage {}", names.stage()))
}

async fn health() -> Result<()> {
    let pool = chimera_store::connect(&database_url()?, 1)
        .await
        .context("connecting to PostgreSQL")?;
    println!(
        "postgres   ok   {} migrations applied",
        sqlx_count(&pool).await?
    );
    let names = ResourceNames::from_env()?;
    let report = bootstrap::describe(&Clients::from_env().await, &names)
        .await
        .with_context(|| {
            format!(
                "stage {} is not complete (run `chimera bootstrap`)",
                names.stage()
            )
        })?;
    print_report(&report);
    Ok(())
}

async fn demo(api: &str, platform: &str) -> Result<()> {
    let pool = chimera_store::connect(&database_url()?, 4)
        .await
        .context("connecting to PostgreSQL")?;
    let on = match platform {
        "bluesky" => demo::Platform::Bluesky(Box::new(demo::Bluesky {
            pds: std::env::var("CHIMERA_BSKY_PDS_URL").context(
                "CHIMERA_BSKY_PDS_URL is not set: `scripts/demo --platform bluesky` starts the local Bluesky network",
            )?,
            stage: ResourceNames::from_env()?.stage().to_owned(),
            clients: chimera_aws::Clients::from_env().await,
        })),
        _ => demo::Platform::World,
    };
    demo::run(&pool, api.trim_end_matches('/'), on).await
}

/// Prints a bearer token for the local HITL API, signed with `CHIMERA_JWT_SECRET`.
fn token(tenant: uuid::Uuid, roles: &[String], sub: &str, ttl_secs: i64) -> Result<()> {
    let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    println!("{}", demo::mint(sub, tenant, &roles, ttl_secs)?);
    Ok(())
}

async fn up() -> Result<()> {
    migrate().await?;
    let report = bootstrap_stage().await?;
    print_report(&report);
    Ok(())
}

fn print_report(report: &StageReport) {
    for q in &report.queues {
        println!(
            "sqs        ok   {:<24} visibility {}s, redrive after {} receives, {} in flight, {} dead-lettered",
            q.url.rsplit('/').next().unwrap_or(&q.url),
            q.visibility_timeout_secs,
            q.max_receive_count,
            q.approximate_messages,
            q.dead_letter_messages,
        );
    }
    println!("s3         ok   {}", report.bucket);
    println!(
        "dynamodb   ok   {} (TTL on {})",
        report.table,
        report.table_ttl_attribute.as_deref().unwrap_or("nothing")
    );
}
