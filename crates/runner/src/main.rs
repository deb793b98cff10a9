//! `chimera-runner`: the local event-source runner (see the library docs and
//! `chimera-runner --help`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chimera_aws::Clients;
use chimera_aws::queues::Queues;
use chimera_aws::relay::Relay;
use chimera_core::names::{self, Queue, ResourceNames};
use chimera_judge::Judge;
use chimera_mcp::McpConfig;
use chimera_planner::PlannerService;
use chimera_planner::llm::LlmPlanner;
use chimera_planner::plan::{Planner, TemplatePlanner};
use chimera_runner::{RunnerConfig, SourceSettings};
use chimera_store::{DbRole, RolePools};
use chimera_worker::Worker;
use clap::Parser;

/// The local event-source runner: the planner, worker and judge handlers fed from the stage's
/// queues as Lambda's SQS event source would feed them, the HITL API on a local port, the sweep
/// on a schedule, the outbox relay.
///
/// Configuration comes from the same variables as the functions: CHIMERA_STAGE (or the queue
/// URLs), DATABASE_URL, CHIMERA_MCP_SERVERS / CHIMERA_MCP_CONFIG, the AWS endpoints; the API
/// checks bearer tokens signed with CHIMERA_JWT_SECRET (HS256, optionally CHIMERA_JWT_ISSUER
/// and CHIMERA_JWT_AUDIENCE). It prints `listening on http://ADDR` once the API serves and runs
/// until interrupted (Ctrl-C or SIGTERM), then lets the batches in hand finish.
#[derive(Debug, Parser)]
#[command(name = "chimera-runner", version)]
struct Args {
    /// Where to serve the HITL API (port 0 picks a free one), or `none`.
    #[arg(long, value_name = "ADDR|none", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    listen: Listen,
    /// Concurrent pollers per function (each 1..=64), e.g. planner=2,worker=4,judge=2.
    #[arg(long, value_name = "FUNCTION=N,...", default_value = "planner=2,worker=4,judge=2", value_parser = parse_concurrency)]
    concurrency: Concurrency,
    /// Messages per batch.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..=10))]
    batch_size: i32,
    /// How long to keep gathering a batch once its first message arrived, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    batching_window_ms: u64,
    /// Long-poll wait of each receive, in seconds (0..=20).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=20))]
    wait_secs: u64,
    /// Make a failed message visible again after this many seconds instead of the handler's
    /// backoff (demos and tests).
    #[arg(long, value_name = "N")]
    retry_after_secs: Option<u64>,
    /// How often the sweep (review escalation and defaults, the reconciler, the outbox relay's
    /// backstop) runs, in seconds; 0 turns it off.
    #[arg(long, value_name = "N", default_value_t = 30)]
    sweep_every_secs: u64,
    /// How often the engagement collector measures the week's posts through `social.metrics`,
    /// in seconds; 0 turns it off.
    #[arg(long, value_name = "N", default_value_t = 300)]
    collect_every_secs: u64,
    /// Where the functions' metrics go (CloudWatch Embedded Metric Format, one JSON object per
    /// line), appended; standard output if not given. Logs go to standard error.
    #[arg(long, value_name = "FILE")]
    metrics: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct Listen(Option<SocketAddr>);

fn parse_listen(value: &str) -> Result<Listen, String> {
    if value == "none" {
        return Ok(Listen(None));
    }
    value
        .parse()
        .map(|addr| Listen(Some(addr)))
        .map_err(|e| format!("{value:?} is not ADDR:PORT or none: {e}"))
}

#[derive(Debug, Clone, Copy)]
struct Concurrency([usize; 3]);

fn parse_concurrency(value: &str) -> Result<Concurrency, String> {
    let mut slots = [2usize, 4, 2];
    for part in value.split(',') {
        let (name, n) = part
            .split_once('=')
            .ok_or_else(|| format!("expected FUNCTION=N, got {part:?}"))?;
        let n: usize = n.parse().map_err(|e| format!("{part:?}: {e}"))?;
        let slot = match name {
            "planner" => 0,
            "worker" => 1,
            "judge" => 2,
            other => {
                return Err(format!(
                    "unknown function {other:?} (planner, worker, judge)"
                ));
            }
        };
        slots[slot] = n.clamp(1, 64);
    }
    Ok(Concurrency(slots))
}

impl Args {
    fn settings(&self, slot: usize) -> SourceSettings {
        SourceSettings {
            batch_size: self.batch_size,
            batching_window: Duration::from_millis(self.batching_window_ms),
            concurrency: self.concurrency.0[slot],
            wait: Duration::from_secs(self.wait_secs),
            retry_after: self.retry_after_secs.map(Duration::from_secs),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    chimera_aws::telemetry::init_logs(chimera_aws::telemetry::LogTo::Stderr);
    if let Some(path) = &args.metrics {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => {
                chimera_aws::telemetry::set_metrics_sink(Box::new(file));
            }
            Err(err) => {
                eprintln!(
                    "chimera-runner: error: cannot write metrics to {}: {err}",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chimera-runner: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Each function's pool, working as its database role as deployed; each connects once here,
/// so a database that does not answer or a role that is missing refuses the start.
async fn role_pools(url: &str) -> Result<RolePools> {
    let pools = RolePools::try_new(|role| {
        let max = match role {
            DbRole::Worker => 8,
            DbRole::Sweep => 3,
            _ => 6,
        };
        chimera_store::connect_lazy_as(url, max, role)
    })
    .context("the database URL")?;
    for role in DbRole::ALL {
        pools
            .get(role)
            .acquire()
            .await
            .with_context(|| format!("connecting to PostgreSQL as {}", role.name()))?;
    }
    Ok(pools)
}

async fn run(args: Args) -> Result<()> {
    let listen = args.listen.0;
    let sweep_every = Duration::from_secs(args.sweep_every_secs);
    let names = ResourceNames::from_env()?;
    let url = std::env::var(names::env::DATABASE_URL)
        .context("DATABASE_URL is not set (eval \"$(scripts/stack env)\")")?;
    // One pool per function, each working as the function's database role, as deployed.
    let pools = role_pools(&url).await?;
    let clients = Clients::from_env().await;
    let mcp = chimera_worker::secrets::mcp_client(McpConfig::from_env()?, &clients);
    // Every MCP server listed and every binding of the profile checked against its tool
    // before anything runs: a profile that does not fit refuses the start.
    mcp.connect().await.context("connecting the MCP servers")?;
    // The language model of CHIMERA_LLM (none: templates draft and plan, nothing scores),
    // metered by each function in its own pool.
    let mind = |pool| chimera_aws::mind::from_env(&clients, pool);
    let planner: Box<dyn Planner> = match mind(&pools.planner).await? {
        Some(mind) => Box::new(LlmPlanner::new(mind)),
        None => Box::new(TemplatePlanner),
    };
    // Semantic memory with the embedder of CHIMERA_EMBED (none: nothing is remembered).
    let memory = |pool| chimera_aws::memory::Memory::from_env(&clients, pool);
    let worker = Arc::new(
        Worker::new(clients.clone(), pools.worker.clone(), mcp, names.clone())
            .with_mind(mind(&pools.worker).await?),
    );
    let handlers: Vec<chimera_runner::Handler> = vec![
        Arc::new(
            PlannerService::new(
                clients.clone(),
                pools.planner.clone(),
                names.clone(),
                planner,
            )
            .with_memory(memory(&pools.planner)?),
        ),
        worker.clone(),
        Arc::new(
            Judge::new(clients.clone(), pools.judge.clone(), names.clone())
                .with_mind(mind(&pools.judge).await?)
                .with_memory(memory(&pools.judge)?),
        ),
    ];
    // What no handler sent (as the sweep relays it in AWS).
    let relay = Arc::new(Relay::new(
        pools.sweep.clone(),
        Queues::new(clients.clone(), names.clone()),
    ));
    // Tokens are checked only where the API serves; the sweep checks none.
    let auth = match listen {
        Some(_) => chimera_hitl_api::Auth::local_from_env()
            .context("the HITL API checks bearer tokens locally")?,
        None => chimera_hitl_api::Auth::Gateway,
    };
    let state = |pool: &chimera_store::PgPool| {
        chimera_hitl_api::AppState::new(pool.clone(), clients.clone(), names.clone(), auth.clone())
    };
    // Mission Control signs in through the local issuer (the code flow with PKCE, as with
    // Cognito when deployed), whose tokens the API's local key checks.
    let api = listen.map(|addr| {
        let mut api_state = state(&pools.api);
        let mut router_extra = None;
        // (Only on a loopback address: it signs whatever its page is told.)
        if let (chimera_hitl_api::Auth::Local(key), true) = (&auth, addr.ip().is_loopback()) {
            api_state.sign_in = chimera_runner::issuer::sign_in();
            router_extra = Some(chimera_runner::issuer::router(key.clone()));
        }
        let router = chimera_hitl_api::router(api_state);
        (
            addr,
            match router_extra {
                Some(issuer) => router.merge(issuer),
                None => router,
            },
        )
    });
    let sweep = (!sweep_every.is_zero()).then(|| (sweep_every, Arc::new(state(&pools.sweep))));
    let running = chimera_runner::start(
        &clients,
        handlers,
        RunnerConfig {
            names: names.clone(),
            planner: args.settings(0),
            worker: args.settings(1),
            judge: args.settings(2),
            relay,
            api,
            sweep,
        },
    )
    .await
    .with_context(|| {
        format!(
            "starting on stage {} (run `chimera up` first)",
            names.stage()
        )
    })?;
    if let Some(addr) = running.api_addr {
        println!("listening on http://{addr}");
    }
    println!("runner ready: stage {}", names.stage());

    let mut report = tokio::time::interval(Duration::from_secs(10));
    report.tick().await;
    // The engagement collector, as the schedule runs it in AWS.
    let mut collect = tokio::time::interval(Duration::from_secs(args.collect_every_secs.max(1)));
    collect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = collect.tick(), if args.collect_every_secs > 0 => {
                if let Err(err) = chimera_worker::engagement::collect(&pools.worker, worker.mcp(), chrono::Utc::now()).await {
                    tracing::warn!(error = format!("{err:#}"), "engagement not collected; the next run tries again");
                }
            }
            _ = report.tick() => {
                for queue in Queue::ALL {
                    let c = running.counts(queue);
                    tracing::info!(function = queue.consumer().name(), batches = c.batches,
                                   received = c.received, succeeded = c.succeeded, failed = c.failed, "progress");
                }
            }
        }
    }
    eprintln!("chimera-runner: stopping (finishing the batches in hand)");
    running.stop().await;
    worker.mcp().shutdown().await;
    Ok(())
}
