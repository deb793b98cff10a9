//! Chimera's MCP client layer: every external capability is an MCP tool.
//!
//! - Servers are configured by name ([`McpConfig`]): stdio child processes (command + args)
//!   or Streamable HTTP endpoints (URL), from `CHIMERA_MCP_SERVERS` (JSON) or the file named by
//!   `CHIMERA_MCP_CONFIG`. Which server serves which tool is learnt from the servers
//!   themselves (`tools/list`) when they are first connected, so swapping the simulated world
//!   for real servers is a configuration change.
//! - [`McpClient`] opens each session once and keeps it for the life of the process (a Lambda
//!   execution environment); a session found dead is opened again on the next call.
//! - Every call names the tools its caller may use ([`allowed_tools`] per task kind); any
//!   other tool is refused before anything is sent.
//! - Calls time out; tool output is untrusted: its size is bounded and typed callers parse it
//!   into their own types ([`ToolOutput::parse`]).
//! - A call made [`within`] a [`CallContext`] tells the server whom it works for, in the
//!   request's `_meta`: the W3C `traceparent` (MCP's SEP-414) and the goal, task and agent ids
//!   (`chimera/goal_id`...), so the server's logs join the goal's trace.

mod config;
mod profile;
mod template;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use chimera_core::domain::{AgentId, TaskKind};
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceError, ServiceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

pub use config::{
    AGENT_ID, CONFIG_FILE_ENV, ConfigError, Credentials, McpConfig, SERVERS_ENV, ServerSpec,
};
pub use profile::{Binding, ErrorRule, Op, Profile, ProfileError, RateLimitRule};
pub use template::{Mapping, Vars};

/// Whom the tool calls of a piece of work are for.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub traceparent: String,
    pub goal_id: String,
    pub task_id: String,
    pub agent_id: String,
}

tokio::task_local! {
    static CONTEXT: CallContext;
}

/// Runs `work` with `context` sent along with each of its tool calls.
pub async fn within<F: std::future::Future>(context: CallContext, work: F) -> F::Output {
    CONTEXT.scope(context, work).await
}

/// The `_meta` of a call made within a [`CallContext`], if it is.
fn request_meta() -> Option<rmcp::model::RequestMetaObject> {
    CONTEXT
        .try_with(|c| {
            let mut meta = rmcp::model::RequestMetaObject::new();
            meta.0.set_traceparent(c.traceparent.clone());
            for (key, value) in [
                ("chimera/goal_id", &c.goal_id),
                ("chimera/task_id", &c.task_id),
                ("chimera/agent_id", &c.agent_id),
            ] {
                meta.0
                    .0
                    .insert(key.into(), serde_json::Value::String(value.clone()));
            }
            meta
        })
        .ok()
}

/// The tools of Chimera's own contract a task of `kind` may call directly: the native tools of
/// [`allowed_ops`]. Generation tasks never reach an effect tool (publish, reply, transfer): those
/// run only in `execute` tasks, for approved actions.
pub fn allowed_tools(kind: TaskKind) -> Vec<&'static str> {
    allowed_ops(kind)
        .iter()
        .map(|op| op.native_tool())
        .collect()
}

/// The operations a task of `kind` may ask for: effects only in `execute` tasks (for approved
/// actions), with the reads they need (the post replied to, the look-up of an effect whose
/// outcome was lost); a reply reads the post it answers to write it.
pub fn allowed_ops(kind: TaskKind) -> &'static [Op] {
    match kind {
        TaskKind::Research => &[Op::Research],
        TaskKind::Draft | TaskKind::Publish => &[Op::Draft],
        TaskKind::Reply => &[Op::Draft, Op::ReadPost],
        TaskKind::RenderMedia => &[Op::Render],
        TaskKind::Transact => &[Op::Balance],
        TaskKind::Execute => &[
            Op::Publish,
            Op::Reply,
            Op::Transfer,
            Op::Balance,
            Op::ReadPost,
            Op::Lookup,
            Op::FindTransfer,
        ],
    }
}

/// Why a tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("tool {tool} is not allowed here (allowed: {allowed:?})")]
    NotAllowed {
        tool: String,
        allowed: Vec<&'static str>,
    },
    #[error("no configured MCP server offers tool {0}")]
    UnknownTool(String),
    #[error("MCP server {server} could not be reached: {reason}")]
    Unavailable { server: String, reason: String },
    #[error("tool {tool} did not answer within {after:?}")]
    Timeout { tool: String, after: Duration },
    #[error("tool {tool} refused the request: {message}")]
    Rejected { tool: String, message: String },
    #[error("tool {tool} failed ({code}): {message}")]
    Failed {
        tool: String,
        code: String,
        message: String,
        retryable: bool,
    },
    #[error("tool {tool} answered {size} bytes, more than the {limit} allowed")]
    OutputTooLarge {
        tool: String,
        size: usize,
        limit: usize,
    },
    #[error("tool {tool} answered something unusable: {reason}")]
    InvalidOutput { tool: String, reason: String },
    /// The configuration cannot work: a binding does not fit its tool, a server is missing.
    #[error("MCP configuration: {0}")]
    Misconfigured(String),
    /// The platform refused for now (its rate limit): nothing was done; ask again after
    /// `retry_after`.
    #[error("tool {tool} was rate limited by its platform ({message}); again in {retry_after:?}")]
    RateLimited {
        tool: String,
        message: String,
        retry_after: Duration,
    },
    /// The agent has no account on the server (its per-agent secret does not exist).
    #[error("no account for server {server}: the secret {secret} does not exist")]
    NoAccount { server: String, secret: String },
}

impl ToolError {
    /// Worth trying again later (the message goes back to its queue); otherwise the task
    /// cannot succeed as it is.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::RateLimited { .. } => true,
            Self::Failed { retryable, .. } => *retryable,
            Self::NotAllowed { .. }
            | Self::UnknownTool(_)
            | Self::Rejected { .. }
            | Self::OutputTooLarge { .. }
            | Self::InvalidOutput { .. }
            | Self::Misconfigured(_)
            | Self::NoAccount { .. } => false,
        }
    }
}

/// What a tool answered, with where it came from (for provenance).
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub tool: String,
    pub server: String,
    /// `name version` the server announced.
    pub server_version: String,
    pub structured: Option<serde_json::Value>,
    pub content: Vec<ContentBlock>,
}

impl ToolOutput {
    /// The structured content as `T`; anything else is [`ToolError::InvalidOutput`].
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ToolError> {
        let value = self
            .structured
            .clone()
            .ok_or_else(|| self.invalid("no structured content"))?;
        serde_json::from_value(value).map_err(|e| self.invalid(e.to_string()))
    }

    /// The first image block, decoded, with its media type.
    pub fn image(&self) -> Result<(Vec<u8>, String), ToolError> {
        let image = self
            .content
            .iter()
            .find_map(|c| c.as_image())
            .ok_or_else(|| self.invalid("no image content"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(image.data.as_bytes())
            .map_err(|e| self.invalid(format!("image is not base64: {e}")))?;
        Ok((bytes, image.mime_type.clone()))
    }

    /// The answer as JSON: the structured content, else the text content parsed as JSON (what
    /// servers that predate structured content send).
    pub fn answer(&self) -> Result<serde_json::Value, ToolError> {
        if let Some(value) = &self.structured {
            return Ok(value.clone());
        }
        let text: String = self
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
            .collect();
        serde_json::from_str(&text)
            .map_err(|e| self.invalid(format!("neither structured content nor JSON text: {e}")))
    }

    fn invalid(&self, reason: impl Into<String>) -> ToolError {
        ToolError::InvalidOutput {
            tool: self.tool.clone(),
            reason: reason.into(),
        }
    }
}

/// Where secrets come from (Secrets Manager in the deployed functions and on LocalStack): the
/// secret's string, `None` when there is no such secret.
pub trait Secrets: Send + Sync {
    fn secret<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + 'a>>;
}

/// How long a secret read is reused before it is read again (a rotated password is picked up
/// within this).
const SECRET_TTL: Duration = Duration::from_secs(300);

/// A secret's fields, as read.
type SecretFields = serde_json::Map<String, serde_json::Value>;

struct Session {
    service: RunningService<RoleClient, ()>,
    version: String,
}

/// A session is per server, or per server and agent when the server's credentials are.
type SessionKey = (String, Option<AgentId>);

struct Open {
    session: Arc<Session>,
    used: Instant,
}

/// What an operation answered: the tool's output, the values its binding read from it, and the
/// arguments it was called with.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub output: ToolOutput,
    pub value: serde_json::Value,
    pub arguments: serde_json::Value,
}

impl Invoked {
    /// The mapped value as `T`; anything else is [`ToolError::InvalidOutput`].
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ToolError> {
        serde_json::from_value(self.value.clone()).map_err(|e| self.output.invalid(e.to_string()))
    }
}

/// A call ready to go ([`McpClient::prepare`]): which tool of which server, with what.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub op: Op,
    pub server: String,
    agent: Option<AgentId>,
    pub binding: Binding,
    pub arguments: serde_json::Value,
}

impl Prepared {
    /// Whether the tool is given the effect's idempotency key: the server then answers a
    /// second call with the first one's outcome, and sending again is how an unknown outcome
    /// is resolved.
    pub fn keyed(&self) -> bool {
        self.binding.keyed()
    }
}

/// MCP sessions by server (and agent), opened on first use and reused.
pub struct McpClient {
    config: McpConfig,
    secrets: Option<Arc<dyn Secrets>>,
    sessions: Mutex<HashMap<SessionKey, Open>>,
    /// One opening at a time per session key; openings of other keys go on meanwhile.
    opening: Mutex<HashMap<SessionKey, Arc<Mutex<()>>>>,
    /// Tool name -> (server name, input schema), learnt when every server is first listed.
    tools: Mutex<Option<HashMap<String, (String, serde_json::Value)>>>,
    read_secrets: Mutex<HashMap<String, (Arc<SecretFields>, Instant)>>,
}

impl McpClient {
    /// No connection is made until the first call (or [`McpClient::connect`]).
    pub fn new(config: McpConfig) -> Self {
        Self {
            config,
            secrets: None,
            sessions: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
            tools: Mutex::new(None),
            read_secrets: Mutex::new(HashMap::new()),
        }
    }

    /// Reads servers' credentials from `secrets`.
    pub fn with_secrets(mut self, secrets: Arc<dyn Secrets>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    pub fn config(&self) -> &McpConfig {
        &self.config
    }

    /// Opens every configured server, learns their tools and checks every binding of the
    /// profile against its tool's `inputSchema`. Two servers offering the same tool name is a
    /// configuration error. A server with per-agent credentials is listed without any.
    pub async fn connect(&self) -> Result<(), ToolError> {
        let mut tools = self.tools.lock().await;
        if tools.is_some() {
            return Ok(());
        }
        let mut index: HashMap<String, (String, serde_json::Value)> = HashMap::new();
        for name in self.config.servers.keys() {
            let session = self.session(name, None).await?;
            let after = self.config.list_timeout;
            let listed = tokio::time::timeout(after, session.service.list_all_tools())
                .await
                .map_err(|_| ToolError::Unavailable {
                    server: name.clone(),
                    reason: format!("tools/list did not answer within {after:?}"),
                })?
                .map_err(|e| unavailable(name, e))?;
            for tool in listed {
                let schema = serde_json::Value::Object((*tool.input_schema).clone());
                if let Some((other, _)) =
                    index.insert(tool.name.to_string(), (name.clone(), schema))
                {
                    return Err(ToolError::Misconfigured(format!(
                        "tool {} is offered by both {other} and {name}",
                        tool.name
                    )));
                }
            }
        }
        for (platform, op, binding) in self.config.profile.explicit() {
            let on = platform.map(|p| format!(" on {p}")).unwrap_or_default();
            let found = index.get(&binding.tool);
            let server = binding
                .server
                .clone()
                .or_else(|| found.map(|(s, _)| s.clone()))
                .unwrap_or_else(|| "(any)".into());
            let schema = match found {
                Some((offered_by, schema)) if *offered_by == server => schema,
                _ => {
                    return Err(ToolError::Misconfigured(format!(
                        "{op}{on}: server {server} offers no tool {}",
                        binding.tool
                    )));
                }
            };
            let account = self
                .config
                .servers
                .get(&server)
                .map(ServerSpec::account)
                .unwrap_or_default();
            binding
                .check(op, account, &server, schema)
                .map_err(|e| ToolError::Misconfigured(format!("{}{on}", e.0)))?;
        }
        *tools = Some(index);
        Ok(())
    }

    /// Closes every open session (a stdio server's process exits).
    pub async fn shutdown(&self) {
        let sessions: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .await
            .drain()
            .map(|(_, open)| open.session)
            .collect();
        for session in sessions {
            close(session).await;
        }
    }

    /// The tools every server offers, by name, with the server offering each.
    pub async fn tools(&self) -> Result<HashMap<String, String>, ToolError> {
        self.connect().await?;
        Ok(self
            .tools
            .lock()
            .await
            .as_ref()
            .map(|index| {
                index
                    .iter()
                    .map(|(tool, (server, _))| (tool.clone(), server.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Calls `tool` if `allowed` lets it, with the configured timeout and output limit.
    pub async fn call(
        &self,
        allowed: &[&'static str],
        tool: &str,
        arguments: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        if !allowed.contains(&tool) {
            return Err(ToolError::NotAllowed {
                tool: tool.to_owned(),
                allowed: allowed.to_vec(),
            });
        }
        self.connect().await?;
        let server = self.server_of(tool).await?;
        self.call_on(&server, None, tool, arguments).await
    }

    /// Does `op` (if `allowed` lets it) through the tool the profile binds it to on
    /// `platform`, for `agent` (whose account a per-agent server uses), with `vars`.
    pub async fn invoke(
        &self,
        allowed: &[Op],
        op: Op,
        platform: Option<&str>,
        agent: Option<AgentId>,
        vars: Vars,
    ) -> Result<Invoked, ToolError> {
        let prepared = self.prepare(allowed, op, platform, agent, vars).await?;
        self.send(&prepared).await
    }

    /// Whether the server that does `op` on `platform` acts for one agent at a time (its
    /// credentials are per agent), so a caller asks for each agent's things separately.
    pub async fn per_agent(&self, op: Op, platform: Option<&str>) -> Result<bool, ToolError> {
        self.connect().await?;
        let binding = self.config.profile.binding(op, platform);
        let server = match &binding.server {
            Some(server) => server.clone(),
            None => self.server_of(&binding.tool).await?,
        };
        Ok(self
            .config
            .servers
            .get(&server)
            .is_some_and(ServerSpec::per_agent))
    }

    /// Everything [`McpClient::invoke`] does before the tool is called: the binding chosen,
    /// the account's credentials read, the parent of a reply read, the arguments filled in.
    /// Nothing has reached the tool when this returns (an effect's ledger records that).
    pub async fn prepare(
        &self,
        allowed: &[Op],
        op: Op,
        platform: Option<&str>,
        agent: Option<AgentId>,
        mut vars: Vars,
    ) -> Result<Prepared, ToolError> {
        if !allowed.contains(&op) {
            return Err(ToolError::NotAllowed {
                tool: op.as_str().to_owned(),
                allowed: allowed.iter().map(|op| op.as_str()).collect(),
            });
        }
        self.connect().await?;
        let binding = self.config.profile.binding(op, platform);
        let server = match &binding.server {
            Some(server) => server.clone(),
            None => self.server_of(&binding.tool).await?,
        };
        let spec = self
            .config
            .servers
            .get(&server)
            .ok_or_else(|| ToolError::UnknownTool(format!("(server {server})")))?;
        let agent = if spec.per_agent() {
            Some(agent.ok_or_else(|| {
                ToolError::Misconfigured(format!(
                    "server {server} acts for an agent, and {op} was asked for none"
                ))
            })?)
        } else {
            None
        };
        if !spec.account().is_empty() {
            let secret = self.credentials(&server, spec, agent).await?;
            for field in spec.account() {
                if let Some(value) = secret.get(field) {
                    vars.insert(format!("account.{field}"), value.clone());
                }
            }
        }
        if op == Op::Reply && uses_parent(&binding) {
            let post = vars.get("in_reply_to").cloned().unwrap_or_default();
            let mut read = Vars::new();
            read.insert("post_id".into(), post);
            if let Some(p) = platform {
                read.insert("platform".into(), serde_json::Value::String(p.to_owned()));
            }
            let parent =
                Box::pin(self.invoke(&[Op::ReadPost], Op::ReadPost, platform, agent, read)).await?;
            if let serde_json::Value::Object(fields) = parent.value {
                for (field, value) in fields {
                    vars.insert(format!("parent.{field}"), value);
                }
            }
        }
        let arguments = template::fill(&binding.arguments, &vars)
            .map_err(|e| ToolError::Misconfigured(format!("{op}: {e}")))?;
        Ok(Prepared {
            op,
            server,
            agent,
            binding,
            arguments,
        })
    }

    /// Calls the tool `prepared` names and reads its answer through the binding.
    pub async fn send(&self, prepared: &Prepared) -> Result<Invoked, ToolError> {
        let Prepared {
            server,
            agent,
            binding,
            arguments,
            ..
        } = prepared;
        let output = self
            .call_on(server, *agent, &binding.tool, arguments.clone())
            .await?;
        let answer = output.answer()?;
        if let Some(message) = binding
            .error
            .as_ref()
            .and_then(|rule| rule.failure(&answer))
        {
            if let Some(retry_after) = binding
                .rate_limited
                .as_ref()
                .and_then(|rule| rule.wait(&answer))
            {
                return Err(ToolError::RateLimited {
                    tool: binding.tool.clone(),
                    message,
                    retry_after,
                });
            }
            return Err(ToolError::Failed {
                tool: binding.tool.clone(),
                code: "tool_reported".into(),
                message,
                retryable: true,
            });
        }
        let value = binding.result.apply(&answer);
        Ok(Invoked {
            output,
            value,
            arguments: arguments.clone(),
        })
    }

    async fn server_of(&self, tool: &str) -> Result<String, ToolError> {
        self.tools
            .lock()
            .await
            .as_ref()
            .and_then(|t| t.get(tool).map(|(server, _)| server.clone()))
            .ok_or_else(|| ToolError::UnknownTool(tool.to_owned()))
    }

    async fn call_on(
        &self,
        server: &str,
        agent: Option<AgentId>,
        tool: &str,
        arguments: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        let serde_json::Value::Object(arguments) = arguments else {
            return Err(ToolError::Rejected {
                tool: tool.to_owned(),
                message: "arguments must be a JSON object".into(),
            });
        };
        let session = self.session(server, agent).await?;
        let mut request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        request.meta = request_meta();
        let after = self.config.call_timeout;
        // The tool's own time, as a span of its own (what a trace shows of the call).
        let span = tracing::debug_span!("tool_call", tool, server = %server);
        let call = tracing::Instrument::instrument(session.service.call_tool(request), span);
        let answer = match tokio::time::timeout(after, call).await {
            Err(_) => {
                tracing::warn!(tool, server, ?after, "tool call timed out");
                return Err(ToolError::Timeout {
                    tool: tool.to_owned(),
                    after,
                });
            }
            Ok(Err(err)) => return Err(self.call_error(server, agent, tool, err).await),
            Ok(Ok(answer)) => answer,
        };
        self.check(server, &session, tool, answer)
    }

    fn check(
        &self,
        server: &str,
        session: &Session,
        tool: &str,
        answer: CallToolResult,
    ) -> Result<ToolOutput, ToolError> {
        let size = answer
            .content
            .iter()
            .map(|c| match (c.as_text(), c.as_image()) {
                (Some(text), _) => text.text.len(),
                (_, Some(image)) => image.data.len(),
                _ => serde_json::to_vec(c).map(|v| v.len()).unwrap_or(usize::MAX),
            })
            .sum::<usize>()
            + answer
                .structured_content
                .as_ref()
                .map(|v| serde_json::to_vec(v).map(|v| v.len()).unwrap_or(usize::MAX))
                .unwrap_or(0);
        let limit = self.config.max_output_bytes;
        if size > limit {
            return Err(ToolError::OutputTooLarge {
                tool: tool.to_owned(),
                size,
                limit,
            });
        }
        if answer.is_error == Some(true) {
            return Err(tool_failure(tool, &answer));
        }
        Ok(ToolOutput {
            tool: tool.to_owned(),
            server: server.to_owned(),
            server_version: session.version.clone(),
            structured: answer.structured_content,
            content: answer.content,
        })
    }

    /// Maps a failed call; a broken session is dropped so that the next call opens a new one.
    async fn call_error(
        &self,
        server: &str,
        agent: Option<AgentId>,
        tool: &str,
        err: ServiceError,
    ) -> ToolError {
        match err {
            ServiceError::McpError(data) => ToolError::Rejected {
                tool: tool.to_owned(),
                message: data.message.to_string(),
            },
            ServiceError::Timeout { timeout } => ToolError::Timeout {
                tool: tool.to_owned(),
                after: timeout,
            },
            other => {
                self.sessions
                    .lock()
                    .await
                    .remove(&(server.to_owned(), agent));
                unavailable(server, other)
            }
        }
    }

    /// The credentials' secret of `server` (for `agent` when they are per agent), as an object.
    async fn credentials(
        &self,
        server: &str,
        spec: &ServerSpec,
        agent: Option<AgentId>,
    ) -> Result<Arc<SecretFields>, ToolError> {
        let Some(credentials) = spec.credentials() else {
            return Ok(Arc::default());
        };
        let name = match agent {
            Some(agent) => credentials.secret.replace(AGENT_ID, &agent.0.to_string()),
            None => credentials.secret.clone(),
        };
        if let Some((value, read)) = self.read_secrets.lock().await.get(&name)
            && read.elapsed() < SECRET_TTL
        {
            return Ok(value.clone());
        }
        let secrets = self.secrets.as_ref().ok_or_else(|| {
            ToolError::Misconfigured(format!(
                "server {server} needs the secret {name}, and no secret store is configured"
            ))
        })?;
        let text = secrets
            .secret(&name)
            .await
            .map_err(|reason| ToolError::Unavailable {
                server: server.to_owned(),
                reason: format!("reading the secret {name}: {reason}"),
            })?
            .ok_or_else(|| ToolError::NoAccount {
                server: server.to_owned(),
                secret: name.clone(),
            })?;
        let value: SecretFields = serde_json::from_str(&text).map_err(|_| {
            ToolError::Misconfigured(format!(
                "the secret {name} of server {server} is not a JSON object"
            ))
        })?;
        let value = Arc::new(value);
        self.read_secrets
            .lock()
            .await
            .insert(name, (value.clone(), Instant::now()));
        Ok(value)
    }

    /// The open session to `server` (for `agent`), opening it if there is none or the last one
    /// died. Only openings of the same key wait for each other.
    async fn session(
        &self,
        server: &str,
        agent: Option<AgentId>,
    ) -> Result<Arc<Session>, ToolError> {
        let key = (server.to_owned(), agent);
        if let Some(session) = self.live(&key).await {
            return Ok(session);
        }
        let gate = self
            .opening
            .lock()
            .await
            .entry(key.clone())
            .or_default()
            .clone();
        let _opening = gate.lock().await;
        if let Some(session) = self.live(&key).await {
            return Ok(session);
        }
        let spec = self
            .config
            .servers
            .get(server)
            .ok_or_else(|| ToolError::UnknownTool(format!("(server {server})")))?;
        // A per-agent server is listed (agent `None`) without credentials.
        let secret = match (spec.per_agent(), agent) {
            (true, None) => None,
            _ if spec.credentials().is_some() => Some(self.credentials(server, spec, agent).await?),
            _ => None,
        };
        let launch = Launch::of(spec, secret.as_deref())
            .map_err(|reason| ToolError::Misconfigured(format!("server {server}: {reason}")))?;
        // Starting the server and its handshake are the tool's time, as its calls are.
        let opening = tracing::debug_span!("tool_session", server);
        let after = self.config.connect_timeout;
        let opened = tracing::Instrument::instrument(open(launch, after), opening).await;
        let service = opened.map_err(|reason| ToolError::Unavailable {
            server: server.to_owned(),
            reason,
        })?;
        let version = service
            .peer_info()
            .and_then(|info| info.server_info.clone())
            .map(|server| format!("{} {}", server.name, server.version))
            .unwrap_or_else(|| "unknown".into());
        tracing::info!(server, agent = ?agent.map(|a| a.0), version, "MCP session opened");
        let session = Arc::new(Session { service, version });
        let evicted = {
            let mut sessions = self.sessions.lock().await;
            sessions.insert(
                key.clone(),
                Open {
                    session: session.clone(),
                    used: Instant::now(),
                },
            );
            let of_server: Vec<(SessionKey, Instant)> = sessions
                .iter()
                .filter(|(k, _)| k.0 == server)
                .map(|(k, open)| (k.clone(), open.used))
                .collect();
            if of_server.len() > self.config.sessions_per_server {
                of_server
                    .into_iter()
                    .filter(|(k, _)| *k != key)
                    .min_by_key(|(_, used)| *used)
                    .and_then(|(oldest, _)| sessions.remove(&oldest))
            } else {
                None
            }
        };
        // The gate is needed only while opening: those waiting on it find the session now.
        self.opening.lock().await.remove(&key);
        if let Some(evicted) = evicted {
            close(evicted.session).await;
        }
        Ok(session)
    }

    /// The open session of `key`, if it is alive (a dead one is forgotten).
    async fn live(&self, key: &SessionKey) -> Option<Arc<Session>> {
        let mut sessions = self.sessions.lock().await;
        let open = sessions.get_mut(key)?;
        if !open.session.service.is_transport_closed() {
            open.used = Instant::now();
            return Some(open.session.clone());
        }
        tracing::warn!(server = key.0, "MCP session closed; opening a new one");
        sessions.remove(key);
        None
    }
}

/// Whether a reply's binding needs the post it answers (`{{parent.*}}`).
fn uses_parent(binding: &Binding) -> bool {
    template::placeholders(&binding.arguments)
        .map(|ps| ps.iter().any(|p| p.name.starts_with("parent.")))
        .unwrap_or(false)
}

async fn close(session: Arc<Session>) {
    match Arc::try_unwrap(session) {
        Ok(session) => {
            let _ = session.service.cancel().await;
        }
        Err(shared) => shared.service.cancellation_token().cancel(),
    }
}

/// What starting a session takes, credentials filled in.
enum Launch {
    Stdio {
        command: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
    Http {
        url: String,
        headers: Vec<(String, String)>,
    },
}

impl Launch {
    /// `spec` with `{{secret.<field>}}` filled from `secret`; without a secret, the entries that
    /// need one are left out (a per-agent server listed at start).
    fn of(spec: &ServerSpec, secret: Option<&SecretFields>) -> Result<Self, String> {
        let fill = |values: &std::collections::BTreeMap<String, String>| {
            let mut out = Vec::new();
            for (name, value) in values {
                let needs_secret = value.contains("{{secret.");
                match secret {
                    None if needs_secret => continue,
                    None => out.push((name.clone(), value.clone())),
                    Some(secret) => {
                        let vars: Vars = secret
                            .iter()
                            .map(|(k, v)| (format!("secret.{k}"), v.clone()))
                            .collect();
                        let filled =
                            template::fill(&serde_json::Value::String(value.clone()), &vars)
                                .map_err(|e| format!("{name}: {e}"))?;
                        match filled {
                            serde_json::Value::String(s) => out.push((name.clone(), s)),
                            other => out.push((name.clone(), other.to_string())),
                        }
                    }
                }
            }
            Ok::<_, String>(out)
        };
        Ok(match spec {
            ServerSpec::Stdio {
                command, args, env, ..
            } => Self::Stdio {
                command: command.clone(),
                args: args.clone(),
                env: fill(env)?,
            },
            ServerSpec::Http { url, headers, .. } => Self::Http {
                url: url.clone(),
                headers: fill(headers)?,
            },
        })
    }
}

/// Opens a session on a task of its own, within `after`: the session outlives the call that
/// opened it, and its service loop would otherwise carry that call's span (a message's goal and
/// task ids) for the life of the process. A server that does not answer in time is stopped.
async fn open(launch: Launch, after: Duration) -> Result<RunningService<RoleClient, ()>, String> {
    let mut opening = tokio::spawn(async move { open_here(launch).await });
    match tokio::time::timeout(after, &mut opening).await {
        Ok(joined) => joined.map_err(|err| format!("opening the session: {err}"))?,
        Err(_) => {
            opening.abort();
            Err(format!("no answer to initialize within {after:?}"))
        }
    }
}

async fn open_here(launch: Launch) -> Result<RunningService<RoleClient, ()>, String> {
    match launch {
        Launch::Stdio { command, args, env } => {
            // The server sees only what its profile gives it: none of the worker's variables
            // (AWS credentials, database URLs) leak into a third-party process.
            let command = tokio::process::Command::new(command).configure(|cmd| {
                cmd.env_clear().args(args).envs(env).kill_on_drop(true);
            });
            let transport = TokioChildProcess::new(command).map_err(|e| e.to_string())?;
            ().serve(transport).await.map_err(|e| e.to_string())
        }
        Launch::Http { url, headers } => {
            let transport = http_transport(&url, headers)?;
            ().serve(transport).await.map_err(|e| e.to_string())
        }
    }
}

/// A Streamable HTTP transport to `url` sending `headers` (`Authorization: Bearer ...` as the
/// transport's own bearer token).
fn http_transport(
    url: &str,
    headers: Vec<(String, String)>,
) -> Result<StreamableHttpClientTransport<reqwest::Client>, String> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    let mut custom = HashMap::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("authorization")
            && let Some(token) = value.strip_prefix("Bearer ")
        {
            config = config.auth_header(token);
            continue;
        }
        let header = http::HeaderName::try_from(name.as_str())
            .map_err(|e| format!("header {name:?}: {e}"))?;
        let mut value = http::HeaderValue::try_from(value.as_str())
            .map_err(|_| format!("header {name:?}: not a valid header value"))?;
        value.set_sensitive(true);
        custom.insert(header, value);
    }
    Ok(StreamableHttpClientTransport::from_config(
        config.custom_headers(custom),
    ))
}

fn unavailable(server: &str, err: impl std::fmt::Display) -> ToolError {
    ToolError::Unavailable {
        server: server.to_owned(),
        reason: err.to_string(),
    }
}

/// A tool error answer: `{"code", "retryable", "message"}` when the server says so; an
/// undescribed failure counts as retryable.
fn tool_failure(tool: &str, answer: &CallToolResult) -> ToolError {
    #[derive(serde::Deserialize)]
    struct Described {
        code: String,
        retryable: bool,
        message: String,
    }
    let described = answer
        .structured_content
        .clone()
        .and_then(|v| serde_json::from_value::<Described>(v).ok());
    match described {
        Some(d) => ToolError::Failed {
            tool: tool.to_owned(),
            code: d.code,
            message: d.message,
            retryable: d.retryable,
        },
        None => ToolError::Failed {
            tool: tool.to_owned(),
            code: "unspecified".into(),
            message: answer
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                .collect::<Vec<_>>()
                .join(" "),
            retryable: true,
        },
    }
}
