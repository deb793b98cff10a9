//! `chimera-runner`: the local event-source runner (see the library docs).
//!
//! ```text
//! chimera-runner [--listen ADDR|none] [--concurrency planner=N,worker=N,judge=N]
//!                [--batch-size N] [--batching-window-ms N] [--wait-secs N] [--retry-after-secs N]
//!                [--sweep-every-secs N]
//! ```
//! Configuration comes from the same variables as the functions: `CHIMERA_STAGE` (or the
//! queue URLs), `DATABASE_URL`, `CHIMERA_MCP_SERVERS` / `CHIMERA_MCP_CONFIG`, the AWS
//! endpoints; the API checks bearer tokens signed with `CHIMERA_JWT_SECRET` (HS256, optionally
//! `CHIMERA_JWT_ISSUER` and `CHIMERA_JWT_AUDIENCE`). The review sweep (escalation, default
//! decisions) runs every `--sweep-every-secs` (default 30; 0 turns it off). It prints `listening on http://ADDR` once the API serves and runs until
//! interrupted (Ctrl-C or SIGTERM), then lets the batches in hand finish.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chimera_aws::Clients;
use chimera_core::names::{self, Queue, ResourceNames};
use chimera_judge::Judge;
use chimera_mcp::{McpClient, McpConfig};
use chimera_planner::PlannerService;
use chimera_planner::plan::TemplatePlanner;
use chimera_runner::{Handlers, RunnerConfig, SourceSettings};
use chimera_worker::Worker;

struct Args {
    listen: Option<SocketAddr>,
    planner: SourceSettings,
    worker: SourceSettings,
    judge: SourceSettings,
    sweep_every: Duration,
}

fn parse_args() -> Result<Args> {
    let mut listen = Some(SocketAddr::from(([127, 0, 0, 1], 8080)));
    let mut common = SourceSettings::default();
    let mut concurrency = [2usize, 4, 2];
    let mut sweep_every = Duration::from_secs(30);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = if v == "none" {
                    None
                } else {
                    Some(v.parse().with_context(|| format!("--listen {v}"))?)
                };
            }
            "--concurrency" => {
                for part in value()?.split(',') {
                    let (name, n) = part
                        .split_once('=')
                        .with_context(|| format!("--concurrency expects name=N, got {part:?}"))?;
                    let n: usize = n.parse().with_context(|| format!("--concurrency {part}"))?;
                    let slot = match name {
                        "planner" => 0,
                        "worker" => 1,
                        "judge" => 2,
                        other => bail!("--concurrency: unknown function {other:?}"),
                    };
                    concurrency[slot] = n.clamp(1, 64);
                }
            }
            "--batch-size" => {
                common.batch_size = value()?.parse().context("--batch-size")?;
                if !(1..=10).contains(&common.batch_size) {
                    bail!("--batch-size must be from 1 to 10");
                }
            }
            "--batching-window-ms" => {
                common.batching_window =
                    Duration::from_millis(value()?.parse().context("--batching-window-ms")?);
            }
            "--wait-secs" => {
                common.wait =
                    Duration::from_secs(value()?.parse::<u64>().context("--wait-secs")?.min(20));
            }
            "--retry-after-secs" => {
                common.retry_after = Some(Duration::from_secs(
                    value()?.parse().context("--retry-after-secs")?,
                ));
            }
            "--sweep-every-secs" => {
                sweep_every =
                    Duration::from_secs(value()?.parse::<u64>().context("--sweep-every-secs")?);
            }
            "-h" | "--help" => {
                println!(
                    "usage: chimera-runner [--listen ADDR|none] [--concurrency planner=N,worker=N,judge=N] \
                     [--batch-size N] [--batching-window-ms N] [--wait-secs N] [--retry-after-secs N] \
                     [--sweep-every-secs N]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    let with = |n| SourceSettings {
        concurrency: n,
        ..common.clone()
    };
    Ok(Args {
        listen,
        sweep_every,
        planner: with(concurrency[0]),
        worker: with(concurrency[1]),
        judge: with(concurrency[2]),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chimera-runner: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let args = parse_args()?;
    let names = ResourceNames::from_env()?;
    let url = std::env::var(names::env::DATABASE_URL)
        .context("DATABASE_URL is not set (eval \"$(scripts/stack env)\")")?;
    let pool = chimera_store::connect(&url, 24)
        .await
        .context("connecting to PostgreSQL")?;
    let clients = Clients::from_env().await;
    let mcp = McpClient::new(McpConfig::from_env()?);
    let worker = Arc::new(Worker::new(
        clients.clone(),
        pool.clone(),
        mcp,
        names.clone(),
    ));
    let handlers = Handlers {
        planner: Arc::new(PlannerService::new(
            clients.clone(),
            pool.clone(),
            names.clone(),
            Box::new(TemplatePlanner),
        )),
        worker: worker.clone(),
        judge: Arc::new(Judge::new(clients.clone(), pool.clone(), names.clone())),
    };
    // Tokens are checked only where the API serves; the sweep checks none.
    let auth = match args.listen {
        Some(_) => chimera_hitl_api::Auth::local_from_env()
            .context("the HITL API checks bearer tokens locally")?,
        None => chimera_hitl_api::Auth::Gateway,
    };
    let state = || {
        chimera_hitl_api::AppState::new(pool.clone(), clients.clone(), names.clone(), auth.clone())
    };
    let api = args
        .listen
        .map(|addr| (addr, chimera_hitl_api::router(state())));
    let sweep = (!args.sweep_every.is_zero()).then(|| (args.sweep_every, Arc::new(state())));
    let running = chimera_runner::start(
        &clients,
        handlers,
        RunnerConfig {
            names: names.clone(),
            planner: args.planner,
            worker: args.worker,
            judge: args.judge,
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
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
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
