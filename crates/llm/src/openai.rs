//! Any OpenAI-compatible `/v1/chat/completions` endpoint.
//!
//! A structured answer is asked for with `response_format: {type: "json_schema", json_schema:
//! {name, strict: true, schema}}` and validated here again ([`crate::schema`]). Each call has a
//! timeout; a 429, a 5xx or a transport error is retried with a jittered, doubling backoff (or
//! after the server's `Retry-After`), a bounded number of times; any other 4xx is refused at
//! once. The answer's body is bounded in size before it is parsed.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Attempt, ChatRequest, ChatResponse, LanguageModel, LlmError, Usage, schema, var, with_retries,
};

/// Where and how to call.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Up to and including `/v1`, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    /// Sent as a bearer token when set.
    pub api_key: Option<String>,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first, on 429, 5xx and transport errors.
    pub retries: u32,
    /// The first backoff; it doubles with each retry (with jitter), at most 30 s.
    pub backoff: Duration,
    /// The largest answer body accepted.
    pub max_response_bytes: usize,
}

impl OpenAiConfig {
    /// `CHIMERA_LLM_BASE_URL`, `CHIMERA_LLM_MODEL`, `CHIMERA_LLM_API_KEY` (optional),
    /// `CHIMERA_LLM_TIMEOUT_MS` (default 60000).
    pub fn from_env() -> Result<Self, String> {
        let base_url = var("CHIMERA_LLM_BASE_URL").ok_or("CHIMERA_LLM_BASE_URL is not set")?;
        let model = var("CHIMERA_LLM_MODEL").ok_or("CHIMERA_LLM_MODEL is not set")?;
        let timeout = crate::timeout_from_env()?;
        Ok(Self {
            base_url,
            model,
            api_key: var("CHIMERA_LLM_API_KEY"),
            timeout,
            ..Self::new("", "")
        })
    }

    /// Defaults for `base_url` and `model`: 60 s per attempt, 3 retries from 500 ms, 1 MiB.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(60),
            retries: 3,
            backoff: Duration::from_millis(500),
            max_response_bytes: 1024 * 1024,
        }
    }
}

pub struct OpenAiCompatible {
    http: reqwest::Client,
    config: OpenAiConfig,
}

impl OpenAiCompatible {
    pub fn new(config: OpenAiConfig) -> Self {
        Self {
            http: reqwest::Client::new(),
            config,
        }
    }

    fn body(&self, request: &ChatRequest) -> Value {
        let mut body = json!({
            "model": request.model.as_ref().map_or(&self.config.model, |m| &m.id),
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        });
        if let Some(seed) = request.seed {
            body["seed"] = json!(seed);
        }
        if let Some(output) = &request.output {
            body["response_format"] = json!({"type": "json_schema", "json_schema":
                {"name": output.name, "strict": true, "schema": output.schema}});
        }
        body
    }

    async fn call(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let started = Instant::now();
        let completion = post_json(&self.http, &self.config, &url, &self.body(request)).await?;
        self.answer(request, completion, started.elapsed())
    }

    fn answer(
        &self,
        request: &ChatRequest,
        completion: Completion,
        latency: Duration,
    ) -> Result<ChatResponse, LlmError> {
        let used = completion.usage.as_ref().map(|usage| Usage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        });
        let invalid = |why: String| LlmError::InvalidOutput { why, used };
        let choice = completion
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| invalid("no choice in the answer".into()))?;
        let text = choice.message.content.unwrap_or_default();
        let truncated = choice.finish_reason.as_deref() == Some("length");
        let json = match &request.output {
            None => None,
            Some(output) => {
                let value: Value = serde_json::from_str(&text).map_err(|e| {
                    invalid(if truncated {
                        format!("the answer was cut at max_tokens: {e}")
                    } else {
                        format!("not JSON: {e}")
                    })
                })?;
                schema::validate(&output.schema, &value)
                    .map_err(|m| invalid(format!("not of the schema: {m}")))?;
                Some(value)
            }
        };
        Ok(ChatResponse {
            text,
            json,
            usage: used.unwrap_or_default(),
            model: completion
                .model
                .unwrap_or_else(|| self.config.model.clone()),
            latency,
            truncated,
        })
    }
}

impl LanguageModel for OpenAiCompatible {
    fn model_id(&self) -> &str {
        &self.config.model
    }

    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, LlmError>> {
        Box::pin(self.call(request))
    }
}

/// POSTs `body` to `url` and reads the answer as `T`, with `config`'s timeout per attempt and
/// its retries (jittered backoff, or the server's `Retry-After`) on 429, 5xx and transport
/// errors; any other 4xx is refused at once, and an answer over the size bound is refused.
pub(crate) async fn post_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    config: &OpenAiConfig,
    url: &str,
    body: &Value,
) -> Result<T, LlmError> {
    with_retries(config.retries, config.backoff, || {
        attempt_once(http, config, url, body)
    })
    .await
}

async fn attempt_once<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    config: &OpenAiConfig,
    url: &str,
    body: &Value,
) -> Result<T, Attempt> {
    let mut call = http.post(url).timeout(config.timeout).json(body);
    if let Some(key) = &config.api_key {
        call = call.bearer_auth(key);
    }
    let response = call.send().await.map_err(|e| {
        let error = if e.is_timeout() {
            LlmError::Timeout(config.timeout)
        } else {
            LlmError::Unavailable(e.to_string())
        };
        Attempt::Again {
            error,
            retry_after: None,
        }
    })?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let bytes = read_bounded(response, config.max_response_bytes).await?;
    if status == 429 || status >= 500 {
        let said = format!("{status}: {}", excerpt(&bytes));
        return Err(Attempt::Again {
            error: if status == 429 {
                LlmError::Busy(said)
            } else {
                LlmError::Unavailable(said)
            },
            retry_after,
        });
    }
    if !(200..300).contains(&status) {
        return Err(Attempt::Final(LlmError::Refused {
            status,
            message: excerpt(&bytes),
        }));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Attempt::Final(LlmError::invalid(format!("not the answer asked for: {e}"))))
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<CompletionUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Default)]
struct CompletionUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// The body, refused past `limit` bytes (counted as it arrives, whatever the headers say).
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Attempt> {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > limit {
                    return Err(Attempt::Final(LlmError::TooLarge { limit, used: None }));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes),
            Err(e) => {
                return Err(Attempt::Again {
                    error: LlmError::Unavailable(format!("reading the answer: {e}")),
                    retry_after: None,
                });
            }
        }
    }
}

/// The start of a body, for an error message.
fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(300).collect()
}

/// `Retry-After` in seconds (the HTTP-date form is not used by model providers), at most 60 s.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(60.0)))
}

/// The wait before retry `attempt` (0-based): `first` doubled per attempt, at most 30 s, with
/// full jitter in its upper half (so concurrent callers do not retry in step).
pub fn backoff(first: Duration, attempt: u32) -> Duration {
    let ceiling = first
        .saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(30));
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
    ceiling.mul_f64(0.5 + 0.5 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_and_bounded() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("3600"), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), None);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for attempt in 0..8 {
            let ceiling = Duration::from_millis(500 * (1 << attempt)).min(Duration::from_secs(30));
            let wait = backoff(Duration::from_millis(500), attempt);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{attempt}: {wait:?}"
            );
        }
    }
}
