//! Amazon Bedrock's Converse API, through the AWS SDK.
//!
//! `converse_input` turns a [`ChatRequest`] into a Converse request: system messages become
//! the `system` blocks, the user's and the assistant's turns the `messages` (consecutive turns
//! of one role merged into one message, as Converse wants the roles to alternate), and
//! `max_tokens` and `temperature` the `inferenceConfig`. Converse has no seed: `seed` is not
//! sent. A structured answer is asked for as a forced tool call: one tool named after the
//! schema, whose input schema is the schema, and a `toolChoice` naming it (Anthropic Claude 3
//! and later, Mistral Large and Amazon Nova accept it; other models refuse the request).
//! `parse_output` reads the answer back: the tool call's input, or the text blocks joined;
//! bounds its size; and validates a structured answer against its schema ([`crate::schema`])
//! whatever the model promised.
//!
//! Timeouts and retries are ours, as in [`crate::openai`]: the SDK's own retries are off and
//! each attempt has an operation timeout; throttling, a 5xx, a timeout or a failed dispatch is
//! retried with a jittered, doubling backoff (or after the response's `Retry-After`), a bounded
//! number of times; any other error (`ValidationException`, `AccessDeniedException`, another
//! 4xx) is refused at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::error::{
    BuildError, DisplayErrorContext, ProvideErrorMetadata, SdkError,
};
use aws_sdk_bedrockruntime::operation::converse::builders::ConverseInputBuilder;
use aws_sdk_bedrockruntime::operation::converse::{ConverseInput, ConverseOutput};
use aws_sdk_bedrockruntime::types::{
    self as converse, ContentBlock, ConversationRole, InferenceConfiguration, SpecificToolChoice,
    StopReason, SystemContentBlock, Tool, ToolChoice, ToolConfiguration, ToolInputSchema,
    ToolSpecification,
};
use aws_smithy_types::{Document, Number};
use futures::future::BoxFuture;
use serde_json::Value;

use crate::openai::parse_retry_after;
use crate::{
    Attempt, ChatRequest, ChatResponse, LanguageModel, LlmError, Role, Usage, schema, var,
    with_retries,
};

/// Which model and how to call it.
#[derive(Debug, Clone)]
pub struct BedrockConfig {
    /// A model id or an inference profile, e.g. `anthropic.claude-3-5-haiku-20241022-v1:0`.
    pub model_id: String,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first, on throttling, 5xx, timeouts and failed dispatches.
    pub retries: u32,
    /// The first backoff; it doubles with each retry (with jitter), at most 30 s.
    pub backoff: Duration,
    /// The largest answer accepted: its text, or its structured answer as JSON text. (The SDK
    /// reads a response whole before it is parsed; the provider bounds it by `max_tokens`.)
    pub max_response_bytes: usize,
}

impl BedrockConfig {
    /// `CHIMERA_LLM_MODEL`, `CHIMERA_LLM_TIMEOUT_MS` (default 60000). The region and the
    /// credentials come from the SDK's configuration.
    pub fn from_env() -> Result<Self, String> {
        let model_id = var("CHIMERA_LLM_MODEL").ok_or("CHIMERA_LLM_MODEL is not set")?;
        let timeout = crate::timeout_from_env()?;
        Ok(Self {
            timeout,
            ..Self::new(model_id)
        })
    }

    /// Defaults for `model_id`: 60 s per attempt, 3 retries from 500 ms, 1 MiB.
    pub fn new(model_id: impl Into<String>) -> Self {
        Self {
            model_id: model_id.into(),
            timeout: Duration::from_secs(60),
            retries: 3,
            backoff: Duration::from_millis(500),
            max_response_bytes: 1024 * 1024,
        }
    }
}

pub struct Bedrock {
    client: Client,
    config: BedrockConfig,
}

impl Bedrock {
    /// A client for `sdk_config`'s region, credentials and endpoint, built once at start-up,
    /// with the SDK's retries off and `config.timeout` per call.
    pub fn new(sdk_config: &aws_config::SdkConfig, config: BedrockConfig) -> Self {
        let client_config = aws_sdk_bedrockruntime::config::Builder::from(sdk_config)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(config.timeout)
                    .build(),
            )
            .build();
        Self {
            client: Client::from_conf(client_config),
            config,
        }
    }

    async fn call(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let model_id = request
            .model
            .as_ref()
            .map_or(self.config.model_id.as_str(), |m| m.id.as_str());
        let input = converse_input(model_id, request)?;
        let started = Instant::now();
        let output = with_retries(self.config.retries, self.config.backoff, || async {
            input
                .clone()
                .send_with(&self.client)
                .await
                .map_err(|error| classify(error, self.config.timeout))
        })
        .await?;
        parse_output(request, &output, &self.config, started.elapsed())
    }
}

impl LanguageModel for Bedrock {
    fn model_id(&self) -> &str {
        &self.config.model_id
    }

    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, LlmError>> {
        Box::pin(self.call(request))
    }
}

/// The Converse request for `request`.
fn converse_input(model_id: &str, request: &ChatRequest) -> Result<ConverseInputBuilder, LlmError> {
    let mut input = ConverseInput::builder()
        .model_id(model_id)
        .inference_config(
            InferenceConfiguration::builder()
                .max_tokens(i32::try_from(request.max_tokens).unwrap_or(i32::MAX))
                .temperature(request.temperature)
                .build(),
        );
    let mut turns: Vec<(ConversationRole, Vec<ContentBlock>)> = Vec::new();
    for message in &request.messages {
        let role = match message.role {
            Role::System => {
                input = input.system(SystemContentBlock::Text(message.content.clone()));
                continue;
            }
            Role::User => ConversationRole::User,
            Role::Assistant => ConversationRole::Assistant,
        };
        let block = ContentBlock::Text(message.content.clone());
        match turns.last_mut() {
            Some((last, blocks)) if *last == role => blocks.push(block),
            _ => turns.push((role, vec![block])),
        }
    }
    for (role, content) in turns {
        let message = converse::Message::builder()
            .role(role)
            .set_content(Some(content))
            .build()
            .map_err(unbuildable)?;
        input = input.messages(message);
    }
    if let Some(output) = &request.output {
        let description = output
            .schema
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("Give your answer as this tool's input.");
        let tool = ToolSpecification::builder()
            .name(&output.name)
            .description(description)
            .input_schema(ToolInputSchema::Json(document(&output.schema)))
            .build()
            .map_err(unbuildable)?;
        let choice = SpecificToolChoice::builder()
            .name(&output.name)
            .build()
            .map_err(unbuildable)?;
        let tools = ToolConfiguration::builder()
            .tools(Tool::ToolSpec(tool))
            .tool_choice(ToolChoice::Tool(choice))
            .build()
            .map_err(unbuildable)?;
        input = input.tool_config(tools);
    }
    Ok(input)
}

/// The SDK's builders fail only on a missing required field, and [`converse_input`] sets them
/// all: this is a bug here, not a request to retry. Status 0: nothing was sent.
fn unbuildable(error: BuildError) -> LlmError {
    LlmError::Refused {
        status: 0,
        message: format!("the Converse request cannot be built: {error}"),
    }
}

/// What a Converse answer gave for `request`.
fn parse_output(
    request: &ChatRequest,
    output: &ConverseOutput,
    config: &BedrockConfig,
    latency: Duration,
) -> Result<ChatResponse, LlmError> {
    let tokens = |n: i32| u32::try_from(n).unwrap_or(0);
    let usage = output.usage().map_or_else(Usage::default, |usage| Usage {
        input_tokens: tokens(usage.input_tokens()),
        output_tokens: tokens(usage.output_tokens()),
    });
    let used = output.usage().is_some().then_some(usage);
    let stop = output.stop_reason();
    let truncated = *stop == StopReason::MaxTokens;
    let content = match output.output() {
        Some(converse::ConverseOutput::Message(message)) => message.content(),
        _ => &[],
    };
    let limit = config.max_response_bytes;
    let (text, json) = match &request.output {
        None => {
            let text: String = content
                .iter()
                .filter_map(|block| block.as_text().ok())
                .map(String::as_str)
                .collect();
            if text.len() > limit {
                return Err(LlmError::TooLarge { limit, used });
            }
            (text, None)
        }
        Some(shape) => {
            let call = content
                .iter()
                .filter_map(|block| block.as_tool_use().ok())
                .find(|call| call.name() == shape.name)
                .ok_or_else(|| LlmError::InvalidOutput {
                    why: format!(
                        "no call of the tool {} in the answer (stop reason {})",
                        shape.name,
                        stop.as_str()
                    ),
                    used,
                })?;
            let value = json_value(call.input());
            let text = value.to_string();
            if text.len() > limit {
                return Err(LlmError::TooLarge { limit, used });
            }
            schema::validate(&shape.schema, &value).map_err(|m| LlmError::InvalidOutput {
                why: if truncated {
                    format!("the answer was cut at max_tokens: {m}")
                } else {
                    format!("not of the schema: {m}")
                },
                used,
            })?;
            (text, Some(value))
        }
    };
    Ok(ChatResponse {
        text,
        json,
        usage,
        model: request
            .model
            .as_ref()
            .map_or_else(|| config.model_id.clone(), |m| m.id.clone()),
        latency,
        truncated,
    })
}

/// Throttling, 5xx, timeouts and failed dispatches are worth another attempt; the rest is not.
pub(crate) fn classify<E>(error: SdkError<E>, timeout: Duration) -> Attempt
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let again = |error| Attempt::Again {
        error,
        retry_after: None,
    };
    match &error {
        SdkError::TimeoutError(_) => again(LlmError::Timeout(timeout)),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            again(LlmError::Timeout(timeout))
        }
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => again(LlmError::Unavailable(
            DisplayErrorContext(&error).to_string(),
        )),
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let err = context.err();
            let message = format!(
                "{}: {}",
                err.code().unwrap_or("unknown error"),
                err.message().unwrap_or_default()
            );
            // Bedrock's errors that mean "later": the same for Converse and InvokeModel.
            let busy = matches!(
                err.code(),
                Some(
                    "ThrottlingException"
                        | "ServiceUnavailableException"
                        | "InternalServerException"
                        | "ModelNotReadyException"
                        | "ModelTimeoutException"
                )
            );
            let throttled = status == 429 || err.code() == Some("ThrottlingException");
            if busy || status == 429 || status >= 500 {
                let said = format!("{status} {message}");
                Attempt::Again {
                    error: if throttled {
                        LlmError::Busy(said)
                    } else {
                        LlmError::Unavailable(said)
                    },
                    retry_after: context
                        .raw()
                        .headers()
                        .get("retry-after")
                        .and_then(parse_retry_after),
                }
            } else {
                Attempt::Final(LlmError::Refused { status, message })
            }
        }
        // A construction failure: most often no credentials or no region, which is the
        // environment's to fix, not the request's.
        _ => Attempt::Final(LlmError::Unavailable(
            DisplayErrorContext(&error).to_string(),
        )),
    }
}

/// A JSON value as the SDK's document.
fn document(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Number::PosInt(u),
            (None, Some(i)) => Number::NegInt(i),
            (None, None) => Number::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(items) => Document::Array(items.iter().map(document).collect()),
        Value::Object(fields) => Document::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), document(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// The SDK's document as a JSON value (a non-finite float, which JSON cannot hold, as null).
fn json_value(document: &Document) -> Value {
    match document {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        Document::Number(Number::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Document::String(s) => Value::String(s.clone()),
        Document::Array(items) => Value::Array(items.iter().map(json_value).collect()),
        Document::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests;
