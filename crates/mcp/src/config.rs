//! Which MCP servers to use, by name.
//!
//! ```json
//! {
//!   "servers": {
//!     "world": { "transport": "stdio", "command": "chimera-world", "args": ["stdio"] },
//!     "social": { "transport": "http", "url": "https://mcp.example.com/mcp" }
//!   },
//!   "call_timeout_ms": 20000,
//!   "max_output_bytes": 4194304
//! }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The configuration as JSON in this variable...
pub const SERVERS_ENV: &str = "CHIMERA_MCP_SERVERS";
/// ...or in the file this variable names.
pub const CONFIG_FILE_ENV: &str = "CHIMERA_MCP_CONFIG";

const DEFAULT_TIMEOUT_MS: u64 = 20_000;
const DEFAULT_MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerSpec {
    /// A child process speaking MCP on its stdin/stdout.
    Stdio {
        command: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// A Streamable HTTP endpoint.
    Http { url: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpConfig {
    pub servers: BTreeMap<String, ServerSpec>,
    pub call_timeout: Duration,
    /// Largest tool answer accepted (text, images as base64, structured JSON together).
    pub max_output_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    servers: BTreeMap<String, ServerSpec>,
    #[serde(default)]
    call_timeout_ms: Option<u64>,
    #[serde(default)]
    max_output_bytes: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no MCP servers configured: set {SERVERS_ENV} (JSON) or {CONFIG_FILE_ENV} (a file)")]
    Missing,
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid MCP configuration: {0}")]
    Invalid(String),
}

impl McpConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        if let Ok(json) = std::env::var(SERVERS_ENV) {
            return Self::parse(&json);
        }
        if let Ok(path) = std::env::var(CONFIG_FILE_ENV) {
            let json = std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::Read { path, source })?;
            return Self::parse(&json);
        }
        Err(ConfigError::Missing)
    }

    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        let raw: Raw =
            serde_json::from_str(json).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if raw.servers.is_empty() {
            return Err(ConfigError::Invalid("servers is empty".into()));
        }
        for (name, spec) in &raw.servers {
            let bad = match spec {
                ServerSpec::Stdio { command, .. } => command.is_empty(),
                ServerSpec::Http { url } => {
                    !(url.starts_with("http://") || url.starts_with("https://"))
                }
            };
            if bad || name.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "server {name:?}: a stdio server needs a command, an http server an http(s) URL"
                )));
            }
        }
        let call_timeout_ms = raw.call_timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if call_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "call_timeout_ms must be positive".into(),
            ));
        }
        Ok(Self {
            servers: raw.servers,
            call_timeout: Duration::from_millis(call_timeout_ms),
            max_output_bytes: raw.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_transports_and_defaults() {
        let config = McpConfig::parse(
            r#"{"servers": {
                "world": {"transport": "stdio", "command": "chimera-world", "args": ["stdio"]},
                "remote": {"transport": "http", "url": "http://127.0.0.1:9/mcp"}}}"#,
        )
        .unwrap();
        assert_eq!(config.servers.len(), 2);
        assert_eq!(config.call_timeout, Duration::from_secs(20));
        assert_eq!(
            config.servers["remote"],
            ServerSpec::Http {
                url: "http://127.0.0.1:9/mcp".into()
            }
        );
    }

    #[test]
    fn refuses_what_cannot_work() {
        for bad in [
            r#"{"servers": {}}"#,
            r#"{"servers": {"a": {"transport": "stdio", "command": ""}}}"#,
            r#"{"servers": {"a": {"transport": "http", "url": "ftp://x"}}}"#,
            r#"{"servers": {"a": {"transport": "carrier-pigeon"}}}"#,
            r#"{"servers": {"a": {"transport": "http", "url": "http://x"}}, "call_timeout_ms": 0}"#,
            r#"{"servers": {"a": {"transport": "http", "url": "http://x"}}, "surprise": 1}"#,
            "not json",
        ] {
            assert!(McpConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
