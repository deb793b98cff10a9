//! `chimera-world`: the outside world for local runs and tests, as an MCP server.
//!
//! It stands in for the real MCP servers an agent uses in production (social platforms, image
//! generation, a wallet) and is swapped for them by configuration alone. Tools:
//! - `trends.search`: news items of a bundled corpus matching a query;
//! - `content.draft`: a templated post from a persona and a brief;
//! - `media.render_image`: a real PNG from a prompt;
//! - `social.publish`, `social.reply`: posts recorded in an outbox, once per idempotency key;
//! - `social.read_post`: one post by id, an agent's or one of the bundled readers' posts
//!   (`corpus/mentions.json`, what the demo's replies answer);
//! - `social.metrics`: engagement of published posts (views, likes, replies, shares), growing
//!   with the time since each was published, deterministic per post;
//! - `wallet.balance`, `wallet.transfer`: a wallet, transfers once per idempotency key;
//! - with `--debug-tools` only: `debug.wait` (a tool that hangs), `debug.echo` (returns
//!   whatever it is asked to), `debug.crash` (the process exits), to test timeouts,
//!   untrusted output and dead sessions, and `debug.script_quality` (the quality
//!   `content.draft` reports for a brief, so tests can engineer a drafter's self-assessment).
//!
//! Everything is deterministic, and state is durable in the `world` schema of a PostgreSQL
//! database. A tool that fails answers a tool error whose structured content is
//! `{"code", "retryable", "message"}`.

pub mod content;
pub mod store;

use std::time::Duration;

use base64::Engine;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

pub const SERVER_NAME: &str = "chimera-world";

/// Largest image side `media.render_image` renders.
pub const MAX_IMAGE_SIDE: u32 = 1024;

#[derive(Clone)]
pub struct World {
    pool: PgPool,
    debug_tools: bool,
    tool_router: ToolRouter<Self>,
}

type ToolResult = Result<CallToolResult, ErrorData>;

/// A successful answer with `value` as its structured content.
fn answer<T: Serialize>(value: &T) -> ToolResult {
    serde_json::to_value(value)
        .map(CallToolResult::structured)
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))
}

/// A tool error the caller can act on.
fn failure(code: &str, retryable: bool, message: impl std::fmt::Display) -> ToolResult {
    Ok(CallToolResult::structured_error(json!({
        "code": code,
        "retryable": retryable,
        "message": message.to_string(),
    })))
}

fn database_failure(err: sqlx::Error) -> ToolResult {
    tracing::error!(error = %err, "world database error");
    failure("unavailable", true, "the service's storage is unavailable")
}

fn effect_failure(err: store::EffectError) -> ToolResult {
    match err {
        store::EffectError::KeyReused(_) => failure("idempotency_key_reused", false, err),
        store::EffectError::InsufficientFunds { .. } => failure("insufficient_funds", false, err),
        store::EffectError::Database(err) => database_failure(err),
    }
}

fn require(field: &str, value: &str, max: usize) -> Result<(), ErrorData> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(ErrorData::invalid_params(
            format!("{field} must be 1..={max} characters"),
            None,
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    /// Words to look for in titles, summaries and tags.
    pub query: String,
    /// At most this many items (1..=20, default 5).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SearchHit {
    #[serde(flatten)]
    pub item: content::TrendItem,
    pub score: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct Persona {
    pub name: String,
    #[serde(default)]
    pub voice: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DraftArgs {
    pub persona: Persona,
    /// What the post is about.
    pub brief: String,
    /// Target platform (x, threads, bluesky, instagram, tiktok, linkedin...).
    pub platform: String,
    /// Reviewer or judge feedback on a previous draft: it changes the draft, and is never
    /// copied into it.
    #[serde(default)]
    pub feedback: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ScriptQualityArgs {
    /// The brief, exactly as `content.draft` will receive it.
    pub brief: String,
    /// The self-assessed quality to report for it, 0..1.
    pub quality: f64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RenderArgs {
    pub prompt: String,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Rendered {
    pub media_type: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PublishArgs {
    pub platform: String,
    pub text: String,
    /// SHA-256 of attached media, if any.
    #[serde(default)]
    pub media_sha256: Option<String>,
    /// A second call with the same key returns the first post.
    pub idempotency_key: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct MetricsArgs {
    /// Posts as `social.publish` and `social.reply` returned them (`post_id`), 1 to 100.
    pub post_ids: Vec<uuid::Uuid>,
    /// The moment to measure at (RFC 3339); now when absent. Engagement is a function of the
    /// time since publication, so a later moment shows more.
    #[serde(default)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReplyArgs {
    pub platform: String,
    /// The post being answered.
    pub in_reply_to: String,
    pub text: String,
    pub idempotency_key: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadPostArgs {
    pub platform: String,
    /// The post's id: an agent's post the world published, or a reader's.
    pub post_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct BalanceArgs {
    pub account: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TransferArgs {
    pub from: String,
    pub to: String,
    pub amount_cents: i64,
    #[serde(default)]
    pub memo: String,
    pub idempotency_key: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WaitArgs {
    pub millis: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct EchoArgs {
    /// Returned as the structured content, `repeat` times in an array when set.
    pub payload: serde_json::Value,
    #[serde(default)]
    pub repeat: Option<usize>,
    /// Answer plain text instead of structured content.
    #[serde(default)]
    pub as_text: Option<String>,
}

#[tool_router]
impl World {
    pub fn new(pool: PgPool, debug_tools: bool) -> Self {
        let mut tool_router = Self::tool_router();
        if !debug_tools {
            tool_router.remove_route("debug.wait");
            tool_router.remove_route("debug.echo");
            tool_router.remove_route("debug.crash");
            tool_router.remove_route("debug.script_quality");
            tool_router.remove_route("debug.env");
        }
        Self {
            pool,
            debug_tools,
            tool_router,
        }
    }

    /// Records the call in the world's usage log.
    async fn log(&self, tool: &str, arguments: serde_json::Value) -> Result<(), sqlx::Error> {
        store::log_call(&self.pool, tool, &arguments).await
    }

    #[tool(
        name = "trends.search",
        description = "Search current news items and trends by keywords."
    )]
    async fn trends_search(&self, Parameters(args): Parameters<SearchArgs>) -> ToolResult {
        require("query", &args.query, 500)?;
        let limit = args.limit.unwrap_or(5).clamp(1, 20) as usize;
        if let Err(err) = self
            .log(
                "trends.search",
                json!({"query": args.query, "limit": limit}),
            )
            .await
        {
            return database_failure(err);
        }
        let hits: Vec<SearchHit> = content::search(&args.query, limit)
            .into_iter()
            .map(|(item, score)| SearchHit { item, score })
            .collect();
        answer(&json!({ "items": hits }))
    }

    #[tool(
        name = "content.draft",
        description = "Draft a post for a platform in a persona's voice from a brief."
    )]
    async fn content_draft(&self, Parameters(args): Parameters<DraftArgs>) -> ToolResult {
        require("brief", &args.brief, 4000)?;
        require("platform", &args.platform, 40)?;
        require("persona.name", &args.persona.name, 200)?;
        if let Err(err) = self
            .log("content.draft", json!({"persona": args.persona.name, "brief": args.brief, "platform": args.platform}))
            .await {
            return database_failure(err);
        }
        let scripted = if self.debug_tools {
            match store::scripted_quality(&self.pool, &args.brief).await {
                Ok(q) => q,
                Err(err) => return database_failure(err),
            }
        } else {
            None
        };
        let draft = content::draft(
            &args.persona.name,
            &args.persona.voice,
            &args.brief,
            &args.platform,
            args.feedback.as_deref(),
            scripted,
        );
        answer(&draft)
    }

    #[tool(
        name = "media.render_image",
        description = "Render a PNG image from a prompt."
    )]
    async fn media_render_image(&self, Parameters(args): Parameters<RenderArgs>) -> ToolResult {
        require("prompt", &args.prompt, 2000)?;
        let (width, height) = (args.width.unwrap_or(256), args.height.unwrap_or(256));
        if !(1..=MAX_IMAGE_SIDE).contains(&width) || !(1..=MAX_IMAGE_SIDE).contains(&height) {
            return Err(ErrorData::invalid_params(
                format!("width and height must be 1..={MAX_IMAGE_SIDE}"),
                None,
            ));
        }
        if let Err(err) = self
            .log(
                "media.render_image",
                json!({"prompt": args.prompt, "width": width, "height": height}),
            )
            .await
        {
            return database_failure(err);
        }
        let png = content::render_png(&args.prompt, width, height)
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let meta = Rendered {
            media_type: "image/png".into(),
            sha256: hex::encode(Sha256::digest(&png)),
            size_bytes: png.len() as u64,
            width,
            height,
        };
        let mut result = answer(&meta)?;
        result.content.push(ContentBlock::image(
            base64::engine::general_purpose::STANDARD.encode(&png),
            "image/png",
        ));
        Ok(result)
    }

    #[tool(
        name = "social.publish",
        description = "Publish a post. Idempotent per idempotency_key."
    )]
    async fn social_publish(&self, Parameters(args): Parameters<PublishArgs>) -> ToolResult {
        require("platform", &args.platform, 40)?;
        require("text", &args.text, 5000)?;
        require("idempotency_key", &args.idempotency_key, 200)?;
        if let Err(err) = self
            .log(
                "social.publish",
                json!({"platform": args.platform, "idempotency_key": args.idempotency_key}),
            )
            .await
        {
            return database_failure(err);
        }
        let request = store::PostRequest {
            kind: "post",
            platform: &args.platform,
            in_reply_to: None,
            text: &args.text,
            media_sha256: args.media_sha256.as_deref(),
        };
        match store::publish(&self.pool, &args.idempotency_key, &request).await {
            Ok(post) => answer(&post),
            Err(err) => effect_failure(err),
        }
    }

    #[tool(
        name = "social.reply",
        description = "Reply to a post. Idempotent per idempotency_key."
    )]
    async fn social_reply(&self, Parameters(args): Parameters<ReplyArgs>) -> ToolResult {
        require("platform", &args.platform, 40)?;
        require("in_reply_to", &args.in_reply_to, 200)?;
        require("text", &args.text, 5000)?;
        require("idempotency_key", &args.idempotency_key, 200)?;
        if let Err(err) = self
            .log(
                "social.reply",
                json!({"platform": args.platform, "idempotency_key": args.idempotency_key}),
            )
            .await
        {
            return database_failure(err);
        }
        let request = store::PostRequest {
            kind: "reply",
            platform: &args.platform,
            in_reply_to: Some(&args.in_reply_to),
            text: &args.text,
            media_sha256: None,
        };
        match store::publish(&self.pool, &args.idempotency_key, &request).await {
            Ok(post) => answer(&post),
            Err(err) => effect_failure(err),
        }
    }

    #[tool(
        name = "social.read_post",
        description = "One post by its id: its text, platform and author (an agent's post, or a reader's)."
    )]
    async fn social_read_post(&self, Parameters(args): Parameters<ReadPostArgs>) -> ToolResult {
        require("platform", &args.platform, 40)?;
        require("post_id", &args.post_id, 200)?;
        let published = match uuid::Uuid::parse_str(&args.post_id) {
            Ok(id) => match store::post_text(&self.pool, id).await {
                Ok(found) => found,
                Err(err) => return database_failure(err),
            },
            Err(_) => None,
        };
        let post = published
            .map(|(platform, text)| (platform, text, "agent".to_owned()))
            .or_else(|| content::mention(&args.post_id).map(|m| (m.platform, m.text, m.author)));
        match post {
            Some((platform, text, author)) if platform == args.platform => answer(&json!({
                "post_id": args.post_id, "platform": platform, "author": author, "text": text,
            })),
            _ => failure(
                "not_found",
                false,
                format!("no post {} on {}", args.post_id, args.platform),
            ),
        }
    }

    #[tool(
        name = "social.metrics",
        description = "Engagement of published posts: views, likes, replies and shares at a moment (now by default). Posts this platform does not know are listed in unknown."
    )]
    async fn social_metrics(&self, Parameters(args): Parameters<MetricsArgs>) -> ToolResult {
        if args.post_ids.is_empty() || args.post_ids.len() > 100 {
            return Err(ErrorData::invalid_params(
                "post_ids must hold 1..=100 ids",
                None,
            ));
        }
        if let Err(err) = self
            .log("social.metrics", json!({"posts": args.post_ids.len()}))
            .await
        {
            return database_failure(err);
        }
        let at = args.at.unwrap_or_else(chrono::Utc::now);
        match store::metrics(&self.pool, &args.post_ids, at).await {
            Ok(report) => answer(&report),
            Err(err) => database_failure(err),
        }
    }

    #[tool(
        name = "wallet.balance",
        description = "The balance of a wallet account, in cents."
    )]
    async fn wallet_balance(&self, Parameters(args): Parameters<BalanceArgs>) -> ToolResult {
        require("account", &args.account, 200)?;
        if let Err(err) = self
            .log("wallet.balance", json!({"account": args.account}))
            .await
        {
            return database_failure(err);
        }
        match store::balance(&self.pool, &args.account).await {
            Ok(balance) => answer(&json!({"account": args.account, "balance_cents": balance})),
            Err(err) => database_failure(err),
        }
    }

    #[tool(
        name = "wallet.transfer",
        description = "Transfer money between accounts. Idempotent per idempotency_key."
    )]
    async fn wallet_transfer(&self, Parameters(args): Parameters<TransferArgs>) -> ToolResult {
        require("from", &args.from, 200)?;
        require("to", &args.to, 200)?;
        require("idempotency_key", &args.idempotency_key, 200)?;
        if args.amount_cents <= 0 {
            return Err(ErrorData::invalid_params(
                "amount_cents must be positive",
                None,
            ));
        }
        if let Err(err) = self
            .log(
                "wallet.transfer",
                json!({"from": args.from, "to": args.to, "amount_cents": args.amount_cents, "idempotency_key": args.idempotency_key}),
            )
            .await {
            return database_failure(err);
        }
        let request = store::TransferRequest {
            from: &args.from,
            to: &args.to,
            amount_cents: args.amount_cents,
            memo: &args.memo,
        };
        match store::transfer(&self.pool, &args.idempotency_key, &request).await {
            Ok(transfer) => answer(&transfer),
            Err(err) => effect_failure(err),
        }
    }

    #[tool(
        name = "debug.wait",
        description = "Test aid: answers after `millis` milliseconds."
    )]
    async fn debug_wait(&self, Parameters(args): Parameters<WaitArgs>) -> ToolResult {
        if let Err(err) = self.log("debug.wait", json!({"millis": args.millis})).await {
            return database_failure(err);
        }
        tokio::time::sleep(Duration::from_millis(args.millis)).await;
        answer(&json!({"waited_ms": args.millis}))
    }

    #[tool(
        name = "debug.script_quality",
        description = "Test aid: the self-assessed quality content.draft reports for a brief."
    )]
    async fn debug_script_quality(
        &self,
        Parameters(args): Parameters<ScriptQualityArgs>,
    ) -> ToolResult {
        require("brief", &args.brief, 4000)?;
        if !(0.0..=1.0).contains(&args.quality) {
            return Err(ErrorData::invalid_params(
                "quality must be within 0..1",
                None,
            ));
        }
        match store::script_quality(&self.pool, &args.brief, args.quality).await {
            Ok(()) => answer(&json!({"brief": args.brief, "quality": args.quality})),
            Err(err) => database_failure(err),
        }
    }

    #[tool(
        name = "debug.crash",
        description = "Test aid: the server process exits at once."
    )]
    async fn debug_crash(&self) -> ToolResult {
        tracing::warn!("debug.crash: exiting");
        std::process::exit(3)
    }

    #[tool(
        name = "debug.env",
        description = "Test aid: the names of the environment variables this process sees."
    )]
    async fn debug_env(&self) -> ToolResult {
        let mut names: Vec<String> = std::env::vars_os()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        answer(&json!({"names": names}))
    }

    #[tool(
        name = "debug.echo",
        description = "Test aid: answers the payload it is given."
    )]
    async fn debug_echo(&self, Parameters(args): Parameters<EchoArgs>) -> ToolResult {
        if let Err(err) = self.log("debug.echo", json!({"repeat": args.repeat})).await {
            return database_failure(err);
        }
        if let Some(text) = args.as_text {
            return Ok(CallToolResult::success(vec![ContentBlock::text(text)]));
        }
        match args.repeat {
            Some(n) => answer(&vec![args.payload; n.min(1_000_000)]),
            None => answer(&args.payload),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for World {
    /// Runs a tool in a span naming whom the call works for, as the client's `_meta` says
    /// (`traceparent` and the `chimera/*` ids), so the server's logs join the goal's trace.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        use tracing::Instrument;
        // rmcp hands the request's `_meta` over in the context (and may leave it in the params).
        let mut meta = context.meta.0.clone();
        if let Some(more) = &request.meta {
            meta.extend(more.0.clone());
        }
        // Untrusted: only ids that read as UUIDs are logged.
        let get = |key: &str| {
            meta.0
                .get(key)
                .and_then(|v| v.as_str())
                .and_then(|v| uuid::Uuid::parse_str(v).ok())
                .map(|id| id.to_string())
        };
        let trace = meta
            .get_traceparent()
            .and_then(chimera_core::trace::TraceContext::parse_traceparent);
        let span = tracing::info_span!(
            "tool_call",
            tool = %request.name,
            trace_id = trace.map(|t| t.trace_id()),
            parent_span_id = trace.map(|t| t.span_id()),
            goal_id = get("chimera/goal_id"),
            task_id = get("chimera/task_id"),
            agent_id = get("chimera/agent_id"),
        );
        let started = std::time::Instant::now();
        let tool = request.name.clone();
        let call = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        async move {
            let answer = self.tool_router.call(call).await;
            tracing::info!(tool = %tool, ok = answer.is_ok(),
                           elapsed_ms = started.elapsed().as_millis() as u64, "tool call");
            answer
        }
        .instrument(span)
        .await
    }

    fn get_info(&self) -> ServerConfig {
        let instructions = if self.debug_tools {
            "A simulated outside world for Chimera (with debug tools)."
        } else {
            "A simulated outside world for Chimera."
        };
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION")))
            .with_instructions(instructions)
    }
}
