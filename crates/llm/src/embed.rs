//! The embedding port: texts in, one vector per text back, for semantic memory.
//!
//! - [`Embedder`]: the port the judge (writing memories) and the planner (recalling them)
//!   speak to.
//! - [`OpenAiEmbedder`]: any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM, Ollama,
//!   the local stack's all-MiniLM-L6-v2), with the chat adapter's timeout, retry and size
//!   policy.
//! - [`TitanEmbedder`]: Amazon Titan Text Embeddings V2 on Bedrock (`InvokeModel`), one text
//!   per call, normalised, at 256, 512 or 1,024 dimensions.
//! - [`from_env`]: the embedder configured by `CHIMERA_EMBED` (`openai`, `bedrock`, or `none`:
//!   no memory is written or recalled).
//!
//! Every answer is checked whatever the server promised: one vector per text, each of the
//! configured length, finite and not all zero. Texts longer than [`MAX_CHARS`] are cut (at a
//! character boundary) before they are sent: a memory is about what a post says, and the
//! models read at most a few hundred tokens anyway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::primitives::Blob;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use crate::openai::{OpenAiConfig, post_json};
use crate::{LlmError, bedrock, var, with_retries};

/// The longest text sent, in characters.
pub const MAX_CHARS: usize = 8_000;

/// Texts per request to an OpenAI-compatible endpoint; longer lists go in several requests.
const BATCH: usize = 64;

/// What a call gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One per text, in the texts' order.
    pub vectors: Vec<Vec<f32>>,
    /// The model that made them, as configured (vectors of two models are not comparable).
    pub model: String,
    pub input_tokens: u32,
    pub latency: Duration,
}

/// An embedding model.
pub trait Embedder: Send + Sync {
    /// The model's id, as configured: memories name it.
    fn model_id(&self) -> &str;

    /// The length of every vector it gives.
    fn dimensions(&self) -> usize;

    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Embeddings, LlmError>>;
}

/// `text` cut at [`MAX_CHARS`] characters.
fn bounded(text: &str) -> &str {
    match text.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// One vector per text, each `dimensions` long, finite, not all zero.
fn check(vectors: &[Vec<f32>], texts: usize, dimensions: usize) -> Result<(), LlmError> {
    if vectors.len() != texts {
        return Err(LlmError::invalid(format!(
            "{} vectors for {texts} texts",
            vectors.len()
        )));
    }
    for (i, v) in vectors.iter().enumerate() {
        if v.len() != dimensions {
            return Err(LlmError::invalid(format!(
                "vector {i} has {} dimensions, not the configured {dimensions}",
                v.len()
            )));
        }
        if v.iter().any(|x| !x.is_finite()) || v.iter().all(|x| *x == 0.0) {
            return Err(LlmError::invalid(format!(
                "vector {i} is not a direction (a non-finite value, or only zeros)"
            )));
        }
    }
    Ok(())
}

fn no_texts() -> LlmError {
    LlmError::Refused {
        status: 400,
        message: "nothing to embed: no texts, or an empty one".into(),
    }
}

/// Any OpenAI-compatible `/v1/embeddings` endpoint.
pub struct OpenAiEmbedder {
    http: reqwest::Client,
    config: OpenAiConfig,
    dimensions: usize,
    /// Ask for `dimensions` (OpenAI's text-embedding-3 models shorten their vectors); a model
    /// of one size is not asked.
    ask_dimensions: bool,
}

impl OpenAiEmbedder {
    /// `config`'s endpoint and model, whose vectors are `dimensions` long.
    pub fn new(config: OpenAiConfig, dimensions: usize) -> Self {
        Self {
            http: reqwest::Client::new(),
            config,
            dimensions,
            ask_dimensions: false,
        }
    }

    /// Sends `dimensions` with each request.
    pub fn asking_dimensions(mut self) -> Self {
        self.ask_dimensions = true;
        self
    }

    async fn call(&self, texts: &[String]) -> Result<Embeddings, LlmError> {
        if texts.is_empty() || texts.iter().any(|t| t.trim().is_empty()) {
            return Err(no_texts());
        }
        let url = format!("{}/embeddings", self.config.base_url.trim_end_matches('/'));
        let started = Instant::now();
        let mut vectors = Vec::with_capacity(texts.len());
        let mut input_tokens = 0u32;
        for batch in texts.chunks(BATCH) {
            let input: Vec<&str> = batch.iter().map(|t| bounded(t)).collect();
            let mut body =
                json!({"model": self.config.model, "input": input, "encoding_format": "float"});
            if self.ask_dimensions {
                body["dimensions"] = json!(self.dimensions);
            }
            let mut answer: EmbeddingList =
                post_json(&self.http, &self.config, &url, &body).await?;
            answer.data.sort_by_key(|d| d.index);
            if answer.data.iter().enumerate().any(|(i, d)| d.index != i) {
                return Err(LlmError::invalid("the vectors' indexes are not 0..n"));
            }
            let batch_vectors: Vec<Vec<f32>> =
                answer.data.into_iter().map(|d| d.embedding).collect();
            check(&batch_vectors, batch.len(), self.dimensions)?;
            vectors.extend(batch_vectors);
            input_tokens += answer.usage.map_or(0, |u| u.prompt_tokens);
        }
        Ok(Embeddings {
            vectors,
            model: self.config.model.clone(),
            input_tokens,
            latency: started.elapsed(),
        })
    }
}

impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.config.model
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Embeddings, LlmError>> {
        Box::pin(self.call(texts))
    }
}

#[derive(Deserialize)]
struct EmbeddingList {
    data: Vec<EmbeddingItem>,
    #[serde(default)]
    usage: Option<EmbeddingUsage>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct EmbeddingUsage {
    #[serde(default)]
    prompt_tokens: u32,
}

/// Titan Text Embeddings V2's lengths.
pub const TITAN_DIMENSIONS: [usize; 3] = [256, 512, 1024];

/// Amazon Titan Text Embeddings V2 (`amazon.titan-embed-text-v2:0`) through `InvokeModel`.
pub struct TitanEmbedder {
    client: Client,
    model_id: String,
    dimensions: usize,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
}

impl TitanEmbedder {
    /// A client for `sdk_config`'s region, credentials and endpoint, with the SDK's retries off
    /// (ours are used) and `timeout` per call. `dimensions` must be one of [`TITAN_DIMENSIONS`].
    pub fn new(
        sdk_config: &aws_config::SdkConfig,
        model_id: impl Into<String>,
        dimensions: usize,
        timeout: Duration,
    ) -> Result<Self, String> {
        if !TITAN_DIMENSIONS.contains(&dimensions) {
            return Err(format!(
                "Titan text embeddings come in {TITAN_DIMENSIONS:?} dimensions, not {dimensions}"
            ));
        }
        let client_config = aws_sdk_bedrockruntime::config::Builder::from(sdk_config)
            .retry_config(RetryConfig::disabled())
            .timeout_config(TimeoutConfig::builder().operation_timeout(timeout).build())
            .build();
        Ok(Self {
            client: Client::from_conf(client_config),
            model_id: model_id.into(),
            dimensions,
            timeout,
            retries: 3,
            backoff: Duration::from_millis(500),
        })
    }

    async fn one(&self, text: &str) -> Result<(Vec<f32>, u32), LlmError> {
        let body = serde_json::to_vec(&json!({
            "inputText": bounded(text),
            "dimensions": self.dimensions,
            "normalize": true,
        }))
        .map_err(|e| LlmError::invalid(e.to_string()))?;
        let output = with_retries(self.retries, self.backoff, || async {
            self.client
                .invoke_model()
                .model_id(&self.model_id)
                .content_type("application/json")
                .accept("application/json")
                .body(Blob::new(body.clone()))
                .send()
                .await
                .map_err(|error| bedrock::classify(error, self.timeout))
        })
        .await?;
        let answer: TitanAnswer = serde_json::from_slice(output.body().as_ref())
            .map_err(|e| LlmError::invalid(format!("not a Titan embedding: {e}")))?;
        Ok((answer.embedding, answer.input_text_token_count))
    }

    async fn call(&self, texts: &[String]) -> Result<Embeddings, LlmError> {
        if texts.is_empty() || texts.iter().any(|t| t.trim().is_empty()) {
            return Err(no_texts());
        }
        let started = Instant::now();
        let mut vectors = Vec::with_capacity(texts.len());
        let mut input_tokens = 0;
        for text in texts {
            let (vector, tokens) = self.one(text).await?;
            vectors.push(vector);
            input_tokens += tokens;
        }
        check(&vectors, texts.len(), self.dimensions)?;
        Ok(Embeddings {
            vectors,
            model: self.model_id.clone(),
            input_tokens,
            latency: started.elapsed(),
        })
    }
}

impl Embedder for TitanEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Embeddings, LlmError>> {
        Box::pin(self.call(texts))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanAnswer {
    embedding: Vec<f32>,
    #[serde(default)]
    input_text_token_count: u32,
}

/// The configured embedder, or `None` for `CHIMERA_EMBED=none` (or unset):
///
/// - `openai`: `CHIMERA_EMBED_BASE_URL`, `CHIMERA_EMBED_MODEL`, `CHIMERA_EMBED_API_KEY`
///   (optional; `api_key` when given, as read from a secret, wins), `CHIMERA_EMBED_DIMENSIONS`
///   (default 384, all-MiniLM-L6-v2's; when set, it is also asked for);
/// - `bedrock`: `CHIMERA_EMBED_MODEL` (default `amazon.titan-embed-text-v2:0`),
///   `CHIMERA_EMBED_DIMENSIONS` (256, 512 or 1024; default 512), the region and credentials of
///   `sdk`.
///
/// `CHIMERA_EMBED_TIMEOUT_MS` bounds each attempt (default 10000).
pub fn from_env(
    sdk: &aws_config::SdkConfig,
    api_key: Option<String>,
) -> Result<Option<Arc<dyn Embedder>>, String> {
    let choice = var("CHIMERA_EMBED").unwrap_or_default();
    let timeout = match var("CHIMERA_EMBED_TIMEOUT_MS") {
        None => Duration::from_secs(10),
        Some(ms) => ms
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| format!("CHIMERA_EMBED_TIMEOUT_MS={ms} is not a number"))?,
    };
    let dimensions = match var("CHIMERA_EMBED_DIMENSIONS") {
        None => None,
        Some(d) => Some(
            d.parse::<usize>()
                .map_err(|_| format!("CHIMERA_EMBED_DIMENSIONS={d} is not a number"))?,
        ),
    };
    match choice.trim() {
        "" | "none" => Ok(None),
        "openai" => {
            let base_url =
                var("CHIMERA_EMBED_BASE_URL").ok_or("CHIMERA_EMBED_BASE_URL is not set")?;
            let model = var("CHIMERA_EMBED_MODEL").ok_or("CHIMERA_EMBED_MODEL is not set")?;
            let config = OpenAiConfig {
                api_key: api_key.or_else(|| var("CHIMERA_EMBED_API_KEY")),
                timeout,
                ..OpenAiConfig::new(base_url, model)
            };
            let embedder = OpenAiEmbedder::new(config, dimensions.unwrap_or(384));
            Ok(Some(Arc::new(if dimensions.is_some() {
                embedder.asking_dimensions()
            } else {
                embedder
            })))
        }
        "bedrock" => {
            let model = var("CHIMERA_EMBED_MODEL")
                .unwrap_or_else(|| "amazon.titan-embed-text-v2:0".to_owned());
            Ok(Some(Arc::new(TitanEmbedder::new(
                sdk,
                model,
                dimensions.unwrap_or(512),
                timeout,
            )?)))
        }
        other => Err(format!(
            "CHIMERA_EMBED={other:?} is not a provider (openai, bedrock or none)"
        )),
    }
}

#[cfg(test)]
mod tests;
