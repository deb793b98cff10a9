//! `chimera-world stdio` | `chimera-world http [--listen ADDR]` [`--debug-tools`]
//!
//! The database comes from `WORLD_DATABASE_URL`, else `DATABASE_URL`. Logs go to stderr only
//! (stdout is the MCP channel in stdio mode). In http mode the server answers MCP at `/mcp`
//! and prints `listening on http://ADDR/mcp` to stdout once it accepts connections.

use std::sync::Arc;

use anyhow::Context;
use chimera_world::World;
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: chimera-world (stdio | http [--listen ADDR]) [--debug-tools]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let debug_tools = args.iter().any(|a| a == "--debug-tools");
    let mode = args.first().map(String::as_str).context(USAGE)?;
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

    match mode {
        "stdio" => {
            tracing::info!(debug_tools, "serving MCP on stdio");
            let service = World::new(pool, debug_tools)
                .serve(rmcp::transport::stdio())
                .await?;
            service.waiting().await?;
        }
        "http" => {
            let listen = match args.iter().position(|a| a == "--listen") {
                Some(i) => args.get(i + 1).context(USAGE)?.clone(),
                None => "127.0.0.1:0".to_owned(),
            };
            serve_http(pool, debug_tools, &listen).await?;
        }
        _ => anyhow::bail!(USAGE),
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
