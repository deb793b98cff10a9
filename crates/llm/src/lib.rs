//! The language-model port: chat messages in, text or a JSON-schema structured output back,
//! with token usage, the model's id and the latency.
//!
//! - [`LanguageModel`]: the port the planner, the drafter and the judge speak to.
//! - [`openai::OpenAiCompatible`]: any OpenAI-compatible `/v1/chat/completions` endpoint
//!   (OpenAI, vLLM, llama.cpp, Ollama, the local stack's model), with a per-call timeout,
//!   retries with jittered backoff on 429 and 5xx honouring `Retry-After`, and a bound on the
//!   output's size.
//! - [`bedrock::Bedrock`]: Amazon Bedrock's Converse API through the AWS SDK, a structured
//!   answer asked for as a forced tool call, with the same timeout, retry and size policy.
//! - [`mind::Mind`]: a model behind a price table and the budget ledger: a call that could
//!   overspend is refused before it is sent, and each call is charged once under its key.
//! - [`limit`]: at most `CHIMERA_LLM_CONCURRENCY` calls in flight per endpoint and process,
//!   so a small server is never flooded and a call that cannot get a slot in time is busy.
//! - [`provider::from_env`]: the model configured by `CHIMERA_LLM` (`openai`, `bedrock`, or
//!   `none`: no model, the deterministic tools draft and nothing scores).
//! - [`schema`]: every structured answer is validated against its schema here, whatever the
//!   server promised: a model's output is untrusted input.

pub mod bedrock;
pub mod embed;
pub mod limit;
pub mod mind;
pub mod openai;
pub mod provider;
pub mod schema;

use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// A configuration variable, when set and not empty.
pub(crate) fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `CHIMERA_LLM_TIMEOUT_MS`, the per-attempt timeout of either adapter (default 60 s).
pub(crate) fn timeout_from_env() -> Result<Duration, String> {
    match var("CHIMERA_LLM_TIMEOUT_MS") {
        None => Ok(Duration::from_secs(60)),
        Some(ms) => ms
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| format!("CHIMERA_LLM_TIMEOUT_MS={ms} is not a number")),
    }
}

/// Untrusted text (a brief, a mention, a post, a tool's output, the judge's feedback) as a
/// delimited block of a user message: the delimiters cannot be forged inside it, in any case
/// or spacing (`</DATA>`, `< /data >`), nor can a chat template's own markers (`<|im_end|>`).
/// Prompts tell the model that what stands between `<data>` tags is data, never instructions.
pub fn data_block(text: &str) -> String {
    format!("<data>\n{}\n</data>", defang(text))
}

/// `text` with every `<` that could open a `data` tag or a template marker made harmless.
fn defang(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        if c == '<' {
            let rest = text[i + 1..].trim_start();
            let rest = rest.strip_prefix('/').unwrap_or(rest).trim_start();
            let tag = rest
                .get(..4)
                .is_some_and(|name| name.eq_ignore_ascii_case("data"));
            if tag || rest.starts_with('|') {
                out.push('(');
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// `text` on one line, at most `max` characters: for configured values placed in a system
/// prompt (a persona's name or voice).
pub fn one_line(text: &str, max: usize) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(max)
        .collect()
}

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
}

/// The shape a structured answer must have: a JSON Schema (the subset [`schema`] checks).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSchema {
    /// `^[a-zA-Z0-9_-]{1,64}$`, as the OpenAI API wants.
    pub name: String,
    pub schema: serde_json::Value,
}

/// One call.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// A structured answer of this shape; plain text when `None`.
    pub output: Option<OutputSchema>,
    pub max_tokens: u32,
    /// 0 for deterministic answers (tests, the local demo).
    pub temperature: f32,
    pub seed: Option<u64>,
    /// Another model than the configured one (an agent's policy may choose it), with its price
    /// when the price table lacks it.
    pub model: Option<ModelChoice>,
}

/// A model chosen for a call.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelChoice {
    pub id: String,
    pub price: Option<mind::Price>,
}

impl ChatRequest {
    /// The SHA-256 of the messages, hex: which prompt made an answer (for provenance).
    pub fn prompt_sha256(&self) -> String {
        use sha2::Digest;
        let bytes = serde_json::to_vec(&self.messages).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(bytes))
    }
}

/// Tokens a call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// What a call gave.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The answer's text (the JSON text for a structured answer).
    pub text: String,
    /// The structured answer, validated against the request's schema.
    pub json: Option<serde_json::Value>,
    pub usage: Usage,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub latency: Duration,
    /// The answer was cut at `max_tokens`.
    pub truncated: bool,
}

/// Why a call gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// No answer within the per-call timeout (after the retries).
    #[error("the model did not answer within {0:?}")]
    Timeout(Duration),
    /// The provider is unreachable or failing (after the retries): try later.
    #[error("the model provider is unavailable: {0}")]
    Unavailable(String),
    /// The model is busy with other calls: its server said so (429, a full queue, throttling)
    /// after the retries, or no call slot of this process freed in time ([`limit`]). Later
    /// is the answer, never a worse plan now.
    #[error("the model is busy: {0}")]
    Busy(String),
    /// The provider refused the request (a 4xx other than 429): the same request fails again.
    #[error("the model provider refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// The answer is larger than the configured bound; `used`: the tokens the model reported
    /// for it, when it reported them (what the call is charged).
    #[error("the answer is larger than {limit} bytes")]
    TooLarge { limit: usize, used: Option<Usage> },
    /// The answer is not what was asked for: not JSON, or not of the schema; `used` as above.
    #[error("the answer is invalid: {why}")]
    InvalidOutput { why: String, used: Option<Usage> },
}

impl LlmError {
    /// An answer that is not what was asked for, its usage unknown.
    pub fn invalid(why: impl Into<String>) -> Self {
        Self::InvalidOutput {
            why: why.into(),
            used: None,
        }
    }

    /// The tokens an answer that arrived but could not be used took, when the model said.
    pub fn used(&self) -> Option<Usage> {
        match self {
            Self::TooLarge { used, .. } | Self::InvalidOutput { used, .. } => *used,
            _ => None,
        }
    }

    /// Whether calling again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::Unavailable(_) | Self::Busy(_)
        )
    }
}

/// A language model.
pub trait LanguageModel: Send + Sync {
    /// The model's id, as configured.
    fn model_id(&self) -> &str;

    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, LlmError>>;
}

/// One attempt's failure: worth another attempt or not.
pub(crate) enum Attempt {
    Again {
        error: LlmError,
        retry_after: Option<Duration>,
    },
    Final(LlmError),
}

/// Calls `call` until it succeeds, fails for good, or has been retried `retries` times, waiting
/// a jittered, doubling backoff from `first` (or the answer's `Retry-After`) between attempts.
pub(crate) async fn with_retries<T, F, Fut>(
    retries: u32,
    first: Duration,
    mut call: F,
) -> Result<T, LlmError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Attempt>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(output) => return Ok(output),
            Err(Attempt::Final(error)) => return Err(error),
            Err(Attempt::Again { error, .. }) if attempt >= retries => return Err(error),
            Err(Attempt::Again { error, retry_after }) => {
                let wait = retry_after.unwrap_or_else(|| openai::backoff(first, attempt));
                tracing::warn!(attempt = attempt + 1, wait_ms = wait.as_millis() as u64, %error, "model call failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}
