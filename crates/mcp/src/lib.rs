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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chimera_core::domain::TaskKind;
use chimera_core::effect::{EffectAction, tools};
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceError, ServiceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

pub use config::{CONFIG_FILE_ENV, ConfigError, McpConfig, SERVERS_ENV, ServerSpec};

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

/// The tools a task of `kind` may call. Generation tasks never reach an effect tool (publish,
/// reply, transfer): those run only in `execute` tasks, for approved actions.
pub fn allowed_tools(kind: TaskKind) -> &'static [&'static str] {
    const EXECUTE: &[&str] = &[
        EffectAction::Publish.as_str(),
        EffectAction::Reply.as_str(),
        EffectAction::Transfer.as_str(),
        tools::WALLET_BALANCE,
    ];
    match kind {
        TaskKind::Research => &[tools::TRENDS_SEARCH],
        TaskKind::Draft | TaskKind::Publish | TaskKind::Reply => &[tools::CONTENT_DRAFT],
        TaskKind::RenderMedia => &[tools::MEDIA_RENDER_IMAGE],
        TaskKind::Transact => &[tools::WALLET_BALANCE],
        TaskKind::Execute => EXECUTE,
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
}

impl ToolError {
    /// Worth trying again later (the message goes back to its queue); otherwise the task
    /// cannot succeed as it is.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Timeout { .. } => true,
            Self::Failed { retryable, .. } => *retryable,
            Self::NotAllowed { .. }
            | Self::UnknownTool(_)
            | Self::Rejected { .. }
            | Self::OutputTooLarge { .. }
            | Self::InvalidOutput { .. } => false,
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

    fn invalid(&self, reason: impl Into<String>) -> ToolError {
        ToolError::InvalidOutput {
            tool: self.tool.clone(),
            reason: reason.into(),
        }
    }
}

struct Session {
    service: RunningService<RoleClient, ()>,
    version: String,
}

/// MCP sessions by server name, opened on first use and reused.
pub struct McpClient {
    config: McpConfig,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Tool name -> server name, learnt when every server is first listed.
    tools: Mutex<Option<HashMap<String, String>>>,
}

impl McpClient {
    /// No connection is made until the first call (or [`McpClient::connect`]).
    pub fn new(config: McpConfig) -> Self {
        Self {
            config,
            sessions: Mutex::new(HashMap::new()),
            tools: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &McpConfig {
        &self.config
    }

    /// Opens every configured server and learns their tools. Two servers offering the same
    /// tool name is a configuration error.
    pub async fn connect(&self) -> Result<(), ToolError> {
        let mut tools = self.tools.lock().await;
        if tools.is_some() {
            return Ok(());
        }
        let mut index = HashMap::new();
        for name in self.config.servers.keys() {
            let session = self.session(name).await?;
            let listed = session
                .service
                .list_all_tools()
                .await
                .map_err(|e| unavailable(name, e))?;
            for tool in listed {
                if let Some(other) = index.insert(tool.name.to_string(), name.clone()) {
                    return Err(ToolError::Unavailable {
                        server: name.clone(),
                        reason: format!("tool {} is offered by both {other} and {name}", tool.name),
                    });
                }
            }
        }
        *tools = Some(index);
        Ok(())
    }

    /// Closes every open session (a stdio server's process exits).
    pub async fn shutdown(&self) {
        let sessions: Vec<Arc<Session>> =
            self.sessions.lock().await.drain().map(|(_, s)| s).collect();
        for session in sessions {
            match Arc::try_unwrap(session) {
                Ok(session) => {
                    let _ = session.service.cancel().await;
                }
                Err(shared) => shared.service.cancellation_token().cancel(),
            }
        }
    }

    /// The tools every server offers, by name, with the server offering each.
    pub async fn tools(&self) -> Result<HashMap<String, String>, ToolError> {
        self.connect().await?;
        Ok(self.tools.lock().await.clone().unwrap_or_default())
    }

    /// Calls `tool` if `allowed` lets it, with the configured timeout and output limit.
    pub async fn call(
        &self,
        allowed: &'static [&'static str],
        tool: &str,
        arguments: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        if !allowed.contains(&tool) {
            return Err(ToolError::NotAllowed {
                tool: tool.to_owned(),
                allowed: allowed.to_vec(),
            });
        }
        let serde_json::Value::Object(arguments) = arguments else {
            return Err(ToolError::Rejected {
                tool: tool.to_owned(),
                message: "arguments must be a JSON object".into(),
            });
        };
        self.connect().await?;
        let server = self
            .tools
            .lock()
            .await
            .as_ref()
            .and_then(|t| t.get(tool).cloned())
            .ok_or_else(|| ToolError::UnknownTool(tool.to_owned()))?;
        let session = self.session(&server).await?;
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
            Ok(Err(err)) => return Err(self.call_error(&server, tool, err).await),
            Ok(Ok(answer)) => answer,
        };
        self.check(&server, &session, tool, answer)
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
    async fn call_error(&self, server: &str, tool: &str, err: ServiceError) -> ToolError {
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
                self.sessions.lock().await.remove(server);
                unavailable(server, other)
            }
        }
    }

    /// The open session to `server`, opening it if there is none or the last one died.
    async fn session(&self, server: &str) -> Result<Arc<Session>, ToolError> {
        let mut sessions = self.sessions.lock().await;
        if let Some(session) = sessions.get(server) {
            if !session.service.is_transport_closed() {
                return Ok(session.clone());
            }
            tracing::warn!(server, "MCP session closed; opening a new one");
            sessions.remove(server);
        }
        let spec = self
            .config
            .servers
            .get(server)
            .ok_or_else(|| ToolError::UnknownTool(format!("(server {server})")))?;
        // Starting the server and its handshake are the tool's time, as its calls are.
        let opening = tracing::debug_span!("tool_session", server);
        let opened = tracing::Instrument::instrument(open(spec), opening).await;
        let service = opened.map_err(|reason| ToolError::Unavailable {
            server: server.to_owned(),
            reason,
        })?;
        let version = service
            .peer_info()
            .and_then(|info| info.server_info.clone())
            .map(|server| format!("{} {}", server.name, server.version))
            .unwrap_or_else(|| "unknown".into());
        tracing::info!(server, version, "MCP session opened");
        let session = Arc::new(Session { service, version });
        sessions.insert(server.to_owned(), session.clone());
        Ok(session)
    }
}

/// Opens a session on a task of its own: the session outlives the call that opened it, and its
/// service loop would otherwise carry that call's span (a message's goal and task ids) for the
/// life of the process.
async fn open(spec: &ServerSpec) -> Result<RunningService<RoleClient, ()>, String> {
    let spec = spec.clone();
    tokio::spawn(async move { open_here(&spec).await })
        .await
        .map_err(|err| format!("opening the session: {err}"))?
}

async fn open_here(spec: &ServerSpec) -> Result<RunningService<RoleClient, ()>, String> {
    match spec {
        ServerSpec::Stdio { command, args, env } => {
            let command = tokio::process::Command::new(command).configure(|cmd| {
                cmd.args(args).envs(env);
            });
            let transport = TokioChildProcess::new(command).map_err(|e| e.to_string())?;
            ().serve(transport).await.map_err(|e| e.to_string())
        }
        ServerSpec::Http { url } => {
            let transport = StreamableHttpClientTransport::from_uri(url.as_str());
            ().serve(transport).await.map_err(|e| e.to_string())
        }
    }
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
