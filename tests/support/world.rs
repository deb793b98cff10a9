//! The project's MCP server (`chimera-world`) as tests use it: over stdio (the client starts
//! it as a child process) or over Streamable HTTP (started here on port 0), always on the
//! test's own database, and its usage log to count what was called.

use std::process::Stdio;
use std::time::Duration;

use chimera_mcp::McpConfig;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::workspace_bin;

/// A configuration with the world server as a stdio child process on `database_url`.
pub fn stdio_config(database_url: &str, debug_tools: bool, extra: &str) -> McpConfig {
    let mut args = vec!["stdio".to_owned()];
    if debug_tools {
        args.push("--debug-tools".into());
    }
    let json = serde_json::json!({
        "servers": {"world": {
            "transport": "stdio",
            "command": workspace_bin("chimera-world"),
            "args": args,
            "env": {"WORLD_DATABASE_URL": database_url, "RUST_LOG": "warn"},
        }},
    });
    config_with(json, extra)
}

/// `json` with the top-level fields of `extra` (a JSON object, or empty) merged in.
fn config_with(mut json: serde_json::Value, extra: &str) -> McpConfig {
    if !extra.is_empty() {
        let extra: serde_json::Value = serde_json::from_str(extra).expect("extra is JSON");
        for (k, v) in extra.as_object().expect("extra is an object") {
            json[k] = v.clone();
        }
    }
    McpConfig::parse(&json.to_string()).expect("a valid MCP configuration")
}

/// The world server listening on Streamable HTTP.
pub struct HttpWorld {
    child: Child,
    pub url: String,
}

impl HttpWorld {
    pub async fn start(database_url: &str, debug_tools: bool) -> HttpWorld {
        Self::start_with(database_url, debug_tools, None).await
    }

    /// [`HttpWorld::start`], its logs (`info` and up) written to `logs`.
    pub async fn start_logging(database_url: &str, logs: std::fs::File) -> HttpWorld {
        Self::start_with(database_url, false, Some(logs)).await
    }

    async fn start_with(
        database_url: &str,
        debug_tools: bool,
        logs: Option<std::fs::File>,
    ) -> HttpWorld {
        let mut cmd = Command::new(workspace_bin("chimera-world"));
        let (level, stderr) = match logs {
            Some(file) => ("info", Stdio::from(file)),
            None => ("warn", Stdio::inherit()),
        };
        cmd.args(["http", "--listen", "127.0.0.1:0"])
            .env("WORLD_DATABASE_URL", database_url)
            .env("RUST_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        if debug_tools {
            cmd.arg("--debug-tools");
        }
        let mut child = cmd.spawn().expect("starting chimera-world http");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("chimera-world announced its address within 30 s")
            .expect("reading chimera-world's stdout")
            .expect("chimera-world printed its address");
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        HttpWorld { child, url }
    }

    pub fn config(&self, extra: &str) -> McpConfig {
        config_with(
            serde_json::json!({"servers": {"world": {"transport": "http", "url": self.url}}}),
            extra,
        )
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// How many times `tool` was called on the world of `pool`'s database (0 before the world
/// first started there).
pub async fn calls(pool: &PgPool, tool: &str) -> i64 {
    let exists: bool = sqlx::query_scalar("select to_regclass('world.calls') is not null")
        .fetch_one(pool)
        .await
        .unwrap();
    if !exists {
        return 0;
    }
    sqlx::query_scalar("select count(*) from world.calls where tool = $1")
        .bind(tool)
        .fetch_one(pool)
        .await
        .unwrap()
}
