//! `chimera-world stdio` | `chimera-world http [--listen ADDR]` [`--debug-tools`]
//! (`chimera-world --help`).
//!
//! The database comes from `WORLD_DATABASE_URL`, else `DATABASE_URL`. Logs go to stderr only
//! (stdout is the MCP channel in stdio mode). In http mode the server answers MCP at `/mcp`
//! and prints `listening on http://ADDR/mcp` to stdout once it accepts connections.

use std::sync::Arc;

use anyhow::Context;
use chimera_world::World;
use clap::{Parser, Subcommand};
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

/// The outside world for local runs and tests, as an MCP server: trends, drafting, image
/// rendering, social posting and a wallet, deterministic, its state in the `world` schema of
/// WORLD_DATABASE_URL (else DATABASE_URL). Logs go to stderr only.
#[derive(Debug, Parser)]
#[command(name = "chimera-world", version)]
struct Args {
    #[command(subcommand)]
    transport: Transport,
    /// Also serve debug.wait, debug.echo and debug.crash (for tests of timeouts, untrusted
    /// output and dead sessions).
    #[arg(long, global = true)]
    debug_tools: bool,
}

#[derive(Debug, Subcommand)]
enum Transport {
    /// Serve MCP on stdin/stdout (the client starts this process).
    Stdio,
    /// Serve MCP over Streamable HTTP at /mcp; prints `listening on http://ADDR/mcp` to stdout
    /// once it accepts connections.
    Http {
        /// The address to listen on (port 0 picks a free one).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Standard output is the MCP channel (stdio): logs go to standard error.
    chimera_core::logs::init_logs(chimera_core::logs::LogTo::Stderr);

    let debug_tools = args.debug_tools;
    let url = std::env::var("WORLD_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .context("set WORLD_DATABASE_URL or DATABASE_URL")?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .context("connecting to the world's database")?;
    chimera_world::store::setup(&pool)
        .await
        .context("creating the world schema")?;

    match args.transport {
        Transport::Stdio => {
            tracing::info!(debug_tools, "serving MCP on stdio");
            let service = World::new(pool, debug_tools)
                .serve(rmcp::transport::stdio())
                .await?;
            service.waiting().await?;
        }
        Transport::Http { listen } => serve_http(pool, debug_tools, &listen).await?,
    }
    Ok(())
}

async fn serve_http(pool: sqlx::PgPool, debug_tools: bool, listen: &str) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mcp = StreamableHttpService::new(
        move || Ok(World::new(pool.clone(), debug_tools)),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token()),
    );
    let app = axum::Router::new().nest_service("/mcp", mcp);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, debug_tools, "serving MCP over Streamable HTTP");
    println!("listening on http://{addr}/mcp");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        })
        .await?;
    Ok(())
}
