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

use crate::profile::{Binding, Op, Profile};

/// The configuration as JSON in this variable...
pub const SERVERS_ENV: &str = "CHIMERA_MCP_SERVERS";
/// ...or in the file this variable names.
pub const CONFIG_FILE_ENV: &str = "CHIMERA_MCP_CONFIG";

const DEFAULT_TIMEOUT_MS: u64 = 20_000;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 15_000;
const DEFAULT_LIST_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
const DEFAULT_SESSIONS_PER_SERVER: usize = 32;

/// Where a server's credentials come from: a secret (JSON object of strings) in Secrets
/// Manager. A name containing `{agent_id}` makes them per agent: each agent its own account,
/// its own session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub secret: String,
}

impl Credentials {
    pub fn per_agent(&self) -> bool {
        self.secret.contains(AGENT_ID)
    }
}

/// The placeholder of a per-agent secret name.
pub const AGENT_ID: &str = "{agent_id}";

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerSpec {
    /// A child process speaking MCP on its stdin/stdout. It starts with an empty environment
    /// plus `env` (values may use `{{secret.<field>}}`).
    Stdio {
        command: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        credentials: Option<Credentials>,
        /// Fields of the credentials' secret that bindings may use as `{{account.<field>}}`.
        #[serde(default)]
        account: Vec<String>,
    },
    /// A Streamable HTTP endpoint (`https`, or `http` on a loopback address), sent `headers`
    /// (values may use `{{secret.<field>}}`).
    Http {
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        credentials: Option<Credentials>,
        #[serde(default)]
        account: Vec<String>,
    },
}

/// Environment values and headers name secrets by template, and may carry them: `Debug` shows
/// their names only.
impl std::fmt::Debug for ServerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdio {
                command,
                args,
                env,
                credentials,
                account,
            } => f
                .debug_struct("Stdio")
                .field("command", command)
                .field("args", args)
                .field("env", &env.keys().collect::<Vec<_>>())
                .field("credentials", credentials)
                .field("account", account)
                .finish(),
            Self::Http {
                url,
                headers,
                credentials,
                account,
            } => f
                .debug_struct("Http")
                .field("url", url)
                .field("headers", &headers.keys().collect::<Vec<_>>())
                .field("credentials", credentials)
                .field("account", account)
                .finish(),
        }
    }
}

impl ServerSpec {
    /// A Streamable HTTP server at `url`, nothing else configured.
    pub fn http(url: impl Into<String>) -> Self {
        Self::Http {
            url: url.into(),
            headers: BTreeMap::new(),
            credentials: None,
            account: Vec::new(),
        }
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        match self {
            Self::Stdio { credentials, .. } | Self::Http { credentials, .. } => {
                credentials.as_ref()
            }
        }
    }

    pub fn account(&self) -> &[String] {
        match self {
            Self::Stdio { account, .. } | Self::Http { account, .. } => account,
        }
    }

    pub fn per_agent(&self) -> bool {
        self.credentials().is_some_and(Credentials::per_agent)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct McpConfig {
    pub servers: BTreeMap<String, ServerSpec>,
    pub profile: Profile,
    pub call_timeout: Duration,
    /// Starting a server and its `initialize` handshake.
    pub connect_timeout: Duration,
    /// `tools/list`.
    pub list_timeout: Duration,
    /// Largest tool answer accepted (text, images as base64, structured JSON together).
    pub max_output_bytes: usize,
    /// Sessions kept open per server (one per agent for per-agent credentials); the least
    /// recently used is closed beyond it.
    pub sessions_per_server: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    servers: BTreeMap<String, ServerSpec>,
    #[serde(default)]
    operations: BTreeMap<Op, Binding>,
    #[serde(default)]
    platforms: BTreeMap<String, BTreeMap<Op, Binding>>,
    #[serde(default)]
    call_timeout_ms: Option<u64>,
    #[serde(default)]
    connect_timeout_ms: Option<u64>,
    #[serde(default)]
    list_timeout_ms: Option<u64>,
    #[serde(default)]
    max_output_bytes: Option<usize>,
    #[serde(default)]
    sessions_per_server: Option<usize>,
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

/// `text` with `${NAME}` and `${NAME:-default}` replaced from `lookup`.
fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {text:?}"))?;
        let (name, default) = match after[..end].split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (&after[..end], None),
        };
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "{text:?} uses ${{{name}}}, which is not set in the environment"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn expand_spec(
    spec: &mut ServerSpec,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    let expand_all = |values: &mut dyn Iterator<Item = &mut String>| -> Result<(), String> {
        for value in values {
            *value = expand(value, lookup)?;
        }
        Ok(())
    };
    match spec {
        ServerSpec::Stdio {
            command,
            args,
            env,
            credentials,
            ..
        } => {
            expand_all(&mut std::iter::once(command))?;
            expand_all(&mut args.iter_mut())?;
            expand_all(&mut env.values_mut())?;
            expand_all(&mut credentials.iter_mut().map(|c| &mut c.secret))?;
        }
        ServerSpec::Http {
            url,
            headers,
            credentials,
            ..
        } => {
            expand_all(&mut std::iter::once(url))?;
            expand_all(&mut headers.values_mut())?;
            expand_all(&mut credentials.iter_mut().map(|c| &mut c.secret))?;
        }
    }
    Ok(())
}

/// Whether `url` may be used: `https`, or `http` to this machine.
fn url_allowed(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn positive_ms(value: Option<u64>, default: u64, name: &str) -> Result<Duration, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(ConfigError::Invalid(format!("{name} must be positive"))),
        ms => Ok(Duration::from_millis(ms)),
    }
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

    /// Parses a configuration, `${NAME}` taken from the process environment.
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        Self::parse_with(json, &|name| std::env::var(name).ok())
    }

    /// Parses a configuration, `${NAME}` taken from `lookup`.
    pub fn parse_with(
        json: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut raw: Raw =
            serde_json::from_str(json).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if raw.servers.is_empty() {
            return Err(ConfigError::Invalid("servers is empty".into()));
        }
        for (name, spec) in &mut raw.servers {
            expand_spec(spec, lookup)
                .map_err(|e| ConfigError::Invalid(format!("server {name:?}: {e}")))?;
            let bad = match spec {
                ServerSpec::Stdio { command, .. } => command.is_empty(),
                ServerSpec::Http { url, .. } => !url_allowed(url),
            };
            if bad || name.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "server {name:?}: a stdio server needs a command, an http server an https \
                     URL (plain http only to this machine: localhost, 127.0.0.1, ::1)"
                )));
            }
        }
        let profile = Profile {
            operations: raw.operations,
            platforms: raw.platforms,
        };
        for (platform, op, binding) in profile.explicit() {
            let on = platform.map(|p| format!(" on {p}")).unwrap_or_default();
            let account = match &binding.server {
                Some(server) => raw
                    .servers
                    .get(server)
                    .ok_or_else(|| {
                        ConfigError::Invalid(format!(
                            "{op}{on}: no server named {server:?} is configured"
                        ))
                    })?
                    .account(),
                None => &[],
            };
            binding
                .check_shape(op, account)
                .map_err(|e| ConfigError::Invalid(format!("{}{on}", e.0)))?;
        }
        profile
            .check_recoverable()
            .map_err(|e| ConfigError::Invalid(e.0))?;
        Ok(Self {
            servers: raw.servers,
            profile,
            call_timeout: positive_ms(raw.call_timeout_ms, DEFAULT_TIMEOUT_MS, "call_timeout_ms")?,
            connect_timeout: positive_ms(
                raw.connect_timeout_ms,
                DEFAULT_CONNECT_TIMEOUT_MS,
                "connect_timeout_ms",
            )?,
            list_timeout: positive_ms(
                raw.list_timeout_ms,
                DEFAULT_LIST_TIMEOUT_MS,
                "list_timeout_ms",
            )?,
            max_output_bytes: raw.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES),
            sessions_per_server: raw
                .sessions_per_server
                .unwrap_or(DEFAULT_SESSIONS_PER_SERVER)
                .max(1),
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
            ServerSpec::http("http://127.0.0.1:9/mcp")
        );
    }

    #[test]
    fn environment_names_expand_and_missing_ones_are_named() {
        let lookup = |name: &str| (name == "PDS").then(|| "http://localhost:2583".to_owned());
        let config = McpConfig::parse_with(
            r#"{"servers": {"b": {"transport": "stdio", "command": "${MCP_BIN:-bluesky-mcp}",
                "env": {"BLUESKY_SERVICE_URL": "${PDS}", "BLUESKY_APP_PASSWORD": "{{secret.app_password}}"},
                "credentials": {"secret": "${STAGE:-chimera-local}/agents/{agent_id}/bluesky"}}}}"#,
            &lookup,
        )
        .unwrap();
        let ServerSpec::Stdio {
            command,
            env,
            credentials,
            ..
        } = &config.servers["b"]
        else {
            panic!("stdio");
        };
        assert_eq!(command, "bluesky-mcp");
        assert_eq!(env["BLUESKY_SERVICE_URL"], "http://localhost:2583");
        assert_eq!(env["BLUESKY_APP_PASSWORD"], "{{secret.app_password}}");
        let credentials = credentials.as_ref().unwrap();
        assert_eq!(
            credentials.secret,
            "chimera-local/agents/{agent_id}/bluesky"
        );
        assert!(config.servers["b"].per_agent());
        let debug = format!("{:?}", config.servers["b"]);
        assert!(!debug.contains("secret.app_password") && debug.contains("BLUESKY_APP_PASSWORD"));
        let err = McpConfig::parse_with(
            r#"{"servers": {"b": {"transport": "http", "url": "${NOPE}"}}}"#,
            &lookup,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("NOPE"), "{err}");
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        for ok in [
            "https://mcp.example.com/mcp",
            "http://127.0.0.1:9/mcp",
            "http://localhost/x",
            "http://[::1]:8/m",
        ] {
            assert!(url_allowed(ok), "{ok}");
        }
        for bad in [
            "http://mcp.example.com/mcp",
            "http://10.0.0.1/mcp",
            "http://localhost.evil.com/",
            "ftp://x",
        ] {
            assert!(!url_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn every_shipped_profile_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/mcp");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let json = std::fs::read_to_string(&path).unwrap();
                McpConfig::parse_with(&json, &|_| Some("https://mcp.example.com/mcp".into()))
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 3, "{seen} profiles in {}", dir.display());
    }

    #[test]
    fn bindings_are_checked_at_load() {
        let base = r#""servers": {"w": {"transport": "stdio", "command": "w"}}"#;
        McpConfig::parse(&format!(
            r#"{{{base}, "platforms": {{"bluesky": {{"publish": {{"server": "w", "tool": "send_post",
                "arguments": {{"text": "{{{{text}}}}"}}, "result": {{"post_id": "/result/post_uri"}}}},
                "lookup": {{"server": "w", "tool": "feed", "arguments": {{}}}}}}}}}}"#
        ))
        .unwrap();
        for bad in [
            r#""operations": {"publish": {"server": "nope", "tool": "t", "arguments": {}}}"#,
            r#""operations": {"publish": {"tool": "t", "arguments": {"x": "{{unknown}}"}}}"#,
            r#""operations": {"dance": {"tool": "t", "arguments": {}}}"#,
        ] {
            assert!(
                McpConfig::parse(&format!("{{{base}, {bad}}}")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_what_cannot_work() {
        for bad in [
            r#"{"servers": {}}"#,
            r#"{"servers": {"a": {"transport": "stdio", "command": ""}}}"#,
            r#"{"servers": {"a": {"transport": "http", "url": "ftp://x"}}}"#,
            r#"{"servers": {"a": {"transport": "carrier-pigeon"}}}"#,
            r#"{"servers": {"a": {"transport": "http", "url": "http://localhost"}}, "call_timeout_ms": 0}"#,
            r#"{"servers": {"a": {"transport": "http", "url": "http://localhost"}}, "surprise": 1}"#,
            r#"{"servers": {"a": {"transport": "http", "url": "http://remote.example.com/mcp"}}}"#,
            "not json",
        ] {
            assert!(McpConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
