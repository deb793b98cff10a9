//! `chimera`: the operator's command line for a stage.
//!
//! ```text
//! chimera migrate      apply migrations/ to DATABASE_URL
//! chimera bootstrap    create the stage's queues, DLQs, bucket and table (idempotent)
//! chimera health       check every service and resource, print a report; non-zero if any fails
//! chimera up           migrate + bootstrap + health
//! chimera demo --api URL
//!                      seed a tenant and agents, submit goals to a running runner's API, show
//!                      progress and a summary (scripts/demo runs it)
//! ```
//! The stage comes from `CHIMERA_STAGE` (default `chimera-local`), the endpoints from the
//! standard AWS variables and `DATABASE_URL`.

mod demo;

use std::process::ExitCode;

use anyhow::{Context, Result};
use chimera_aws::Clients;
use chimera_aws::bootstrap::{self, BootstrapOptions, StageReport};
use chimera_core::names::{self, ResourceNames};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = std::env::args().nth(1).unwrap_or_default();
    let outcome = match command.as_str() {
        "migrate" => migrate().await,
        "bootstrap" => bootstrap_stage().await.map(|report| print_report(&report)),
        "health" => health().await,
        "up" => up().await,
        "demo" => demo().await,
        "token" => token(),
        _ => {
            eprintln!(
                "usage: chimera migrate|bootstrap|health|up|demo --api URL\n       \
                 chimera token --tenant UUID --roles operator,reviewer [--sub NAME] [--ttl-secs N]"
            );
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chimera {command}: error: {err:#}");
            ExitCode::FAILURE
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
    chimera_store::migrate(&pool)
        .await
        .context("applying migrations")?;
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

async fn demo() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let api = match args.as_slice() {
        [flag, url] if flag == "--api" => url.trim_end_matches('/').to_owned(),
        _ => anyhow::bail!("usage: chimera demo --api http://HOST:PORT"),
    };
    let pool = chimera_store::connect(&database_url()?, 4)
        .await
        .context("connecting to PostgreSQL")?;
    demo::run(&pool, &api).await
}

/// Prints a bearer token for the local HITL API, signed with `CHIMERA_JWT_SECRET`.
fn token() -> Result<()> {
    let usage =
        "usage: chimera token --tenant UUID --roles operator,reviewer [--sub NAME] [--ttl-secs N]";
    let args: Vec<String> = std::env::args().skip(2).collect();
    let (mut tenant, mut roles, mut sub, mut ttl) = (None, None, "cli".to_owned(), 8 * 3600);
    for pair in args.chunks(2) {
        match pair {
            [flag, value] if flag == "--tenant" => {
                tenant = Some(uuid::Uuid::parse_str(value).context("--tenant")?)
            }
            [flag, value] if flag == "--roles" => roles = Some(value.clone()),
            [flag, value] if flag == "--sub" => sub = value.clone(),
            [flag, value] if flag == "--ttl-secs" => ttl = value.parse().context("--ttl-secs")?,
            _ => anyhow::bail!("{usage}"),
        }
    }
    let (Some(tenant), Some(roles)) = (tenant, roles) else {
        anyhow::bail!("{usage}");
    };
    let roles: Vec<&str> = roles.split(',').collect();
    println!("{}", demo::mint(&sub, tenant, &roles, ttl)?);
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
