//! The adapter against a stand-in for the Bedrock runtime endpoint on a local port: the real
//! SDK client signs and sends the request and parses the recorded Converse answers with its own
//! deserializer.

use std::sync::{Arc, Mutex};

use aws_sdk_bedrockruntime::config::{Credentials, SharedCredentialsProvider};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::*;
use crate::{Message, OutputSchema};

const MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

/// How the stand-in answers one call.
#[derive(Clone)]
pub(crate) enum Reply {
    Answer {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: Value,
    },
    /// Reads the request and never answers.
    Stall,
}

pub(crate) fn ok(body: Value) -> Reply {
    Reply::Answer {
        status: 200,
        headers: vec![],
        body,
    }
}

/// A Bedrock error as the service sends it: the type in `x-amzn-errortype`, the message in
/// the body.
pub(crate) fn error(status: u16, kind: &'static str, retry_after: Option<&'static str>) -> Reply {
    let mut headers = vec![("x-amzn-errortype", kind)];
    headers.extend(retry_after.map(|seconds| ("retry-after", seconds)));
    Reply::Answer {
        status,
        headers,
        body: json!({"message": format!("{kind} from the stand-in")}),
    }
}

/// A request the stand-in received.
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
}

impl Endpoint {
    pub(crate) fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// Serves `replies` in turn on 127.0.0.1:0, the last one again once they run out.
pub(crate) async fn endpoint(replies: Vec<Reply>) -> Endpoint {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let (seen, replies) = (recorder.clone(), replies.clone());
        async move {
            let call = {
                let mut seen = seen.lock().unwrap();
                seen.push(Seen {
                    path: uri.path().to_owned(),
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                seen.len() - 1
            };
            match replies[call.min(replies.len() - 1)].clone() {
                Reply::Answer {
                    status,
                    headers,
                    body,
                } => answer(status, &headers, &body),
                Reply::Stall => std::future::pending().await,
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Endpoint {
        url: format!("http://{addr}"),
        seen,
    }
}

fn answer(status: u16, headers: &[(&'static str, &'static str)], body: &Value) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response();
    for (name, value) in headers {
        response.headers_mut().insert(*name, value.parse().unwrap());
    }
    response
}

/// An SDK configuration pointed at `endpoint`, with static test credentials in us-east-1.
pub(crate) fn sdk_config(endpoint: &Endpoint) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&endpoint.url)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDLOCALTEST",
            "local-test-secret",
            None,
            None,
            "test",
        )))
        .build()
}

/// The adapter pointed at `endpoint`.
fn bedrock(endpoint: &Endpoint, config: BedrockConfig) -> Bedrock {
    Bedrock::new(&sdk_config(endpoint), config)
}

fn plan_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["goal", "tasks"],
        "properties": {
            "goal": {"type": "string", "maxLength": 80},
            "tasks": {"type": "array", "minItems": 1, "maxItems": 5, "items": {
                "type": "object",
                "additionalProperties": false,
                "required": ["kind", "priority"],
                "properties": {
                    "kind": {"type": "string", "enum": ["research", "draft", "post"]},
                    "priority": {"type": "integer", "minimum": 1, "maximum": 3}
                }
            }}
        }
    })
}

fn plan_request() -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![
            Message::system("You plan a creator's week."),
            Message::user("Plan a retro gaming night stream."),
            Message::user("Keep it short."),
        ],
        output: Some(OutputSchema {
            name: "plan".into(),
            schema: plan_schema(),
        }),
        max_tokens: 512,
        temperature: 0.0,
        seed: Some(7),
    }
}

fn text_request() -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![Message::user("Say hello.")],
        output: None,
        max_tokens: 8,
        temperature: 0.5,
        seed: None,
    }
}

/// A forced tool call, recorded as the Converse API returns it.
fn tool_use_answer(input: Value) -> Value {
    json!({
        "output": {"message": {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "plan", "input": input}}
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 412, "outputTokens": 57, "totalTokens": 469},
        "metrics": {"latencyMs": 1135}
    })
}

fn a_plan() -> Value {
    json!({"goal": "A retro gaming night stream",
           "tasks": [{"kind": "research", "priority": 1}, {"kind": "post", "priority": 2}]})
}

fn quick(endpoint: &Endpoint) -> Bedrock {
    bedrock(
        endpoint,
        BedrockConfig {
            timeout: Duration::from_secs(10),
            retries: 1,
            backoff: Duration::from_millis(10),
            ..BedrockConfig::new(MODEL)
        },
    )
}

#[tokio::test]
async fn a_structured_answer_is_the_forced_tool_calls_input_with_usage() {
    let endpoint = endpoint(vec![ok(tool_use_answer(a_plan()))]).await;
    let model = quick(&endpoint);

    let answer = model.chat(&plan_request()).await.expect("an answer");

    assert_eq!(answer.json, Some(a_plan()));
    assert_eq!(
        serde_json::from_str::<Value>(&answer.text).unwrap(),
        a_plan()
    );
    assert_eq!(
        answer.usage,
        Usage {
            input_tokens: 412,
            output_tokens: 57
        }
    );
    assert_eq!(answer.model, MODEL);
    assert_eq!(model.model_id(), MODEL);
    assert!(!answer.truncated);

    let seen = endpoint.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(
        request.path,
        "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    );
    assert!(
        request.headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256 Credential=AKIDLOCALTEST/"),
        "signed with the configured credentials"
    );
    let body = &request.body;
    assert_eq!(
        body["system"],
        json!([{"text": "You plan a creator's week."}])
    );
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [
            {"text": "Plan a retro gaming night stream."}, {"text": "Keep it short."}]}]),
        "consecutive user turns are one message"
    );
    assert_eq!(
        body["inferenceConfig"],
        json!({"maxTokens": 512, "temperature": 0.0})
    );
    assert_eq!(body["toolConfig"]["toolChoice"]["tool"]["name"], "plan");
    let tools = body["toolConfig"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0]["toolSpec"]["name"], "plan");
    assert_eq!(tools[0]["toolSpec"]["inputSchema"]["json"], plan_schema());
}

#[tokio::test]
async fn a_text_answer_joins_its_text_blocks_and_is_truncated_at_max_tokens() {
    let endpoint = endpoint(vec![ok(json!({
        "output": {"message": {"role": "assistant", "content": [
            {"text": "Hello"}, {"text": ", there"}
        ]}},
        "stopReason": "max_tokens",
        "usage": {"inputTokens": 11, "outputTokens": 8, "totalTokens": 19},
        "metrics": {"latencyMs": 240}
    }))])
    .await;

    let answer = quick(&endpoint)
        .chat(&text_request())
        .await
        .expect("an answer");

    assert_eq!(answer.text, "Hello, there");
    assert_eq!(answer.json, None);
    assert!(answer.truncated);
    assert_eq!(answer.usage.output_tokens, 8);
    let seen = endpoint.seen.lock().unwrap();
    assert!(seen[0].body.get("toolConfig").is_none(), "{}", seen[0].body);
    assert!(seen[0].body.get("system").is_none(), "{}", seen[0].body);
    assert_eq!(
        seen[0].body["inferenceConfig"],
        json!({"maxTokens": 8, "temperature": 0.5})
    );
}

#[tokio::test]
async fn a_throttled_call_is_retried_after_its_retry_after() {
    let endpoint = endpoint(vec![
        error(429, "ThrottlingException", Some("1")),
        ok(tool_use_answer(a_plan())),
    ])
    .await;
    // A backoff far longer than the test: only the server's Retry-After can be what it waits.
    let model = bedrock(
        &endpoint,
        BedrockConfig {
            backoff: Duration::from_secs(30),
            ..BedrockConfig::new(MODEL)
        },
    );

    let started = Instant::now();
    let answer = model
        .chat(&plan_request())
        .await
        .expect("answered after the retry");

    assert_eq!(answer.json, Some(a_plan()));
    assert_eq!(endpoint.calls(), 2);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(
        answer.latency >= Duration::from_secs(1),
        "latency counts the retries"
    );
}

#[tokio::test]
async fn an_unavailable_service_past_the_retries_is_unavailable() {
    let endpoint = endpoint(vec![error(503, "ServiceUnavailableException", None)]).await;

    let err = quick(&endpoint).chat(&plan_request()).await.unwrap_err();

    assert!(
        matches!(&err, LlmError::Unavailable(m) if m.contains("ServiceUnavailableException")),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(endpoint.calls(), 2, "the first attempt and one retry");
}

#[tokio::test]
async fn a_stalled_endpoint_times_out_after_the_bounded_retries() {
    let endpoint = endpoint(vec![Reply::Stall]).await;
    let model = bedrock(
        &endpoint,
        BedrockConfig {
            timeout: Duration::from_millis(300),
            retries: 1,
            backoff: Duration::from_millis(10),
            ..BedrockConfig::new(MODEL)
        },
    );

    let started = Instant::now();
    let err = model.chat(&text_request()).await.unwrap_err();

    assert!(matches!(err, LlmError::Timeout(_)), "{err}");
    assert!(err.is_retryable());
    assert_eq!(endpoint.calls(), 2, "the first attempt and one retry");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_validation_exception_is_refused_at_once() {
    let endpoint = endpoint(vec![error(400, "ValidationException", None)]).await;

    let err = quick(&endpoint).chat(&plan_request()).await.unwrap_err();

    assert!(
        matches!(&err, LlmError::Refused { status: 400, message }
                 if message.starts_with("ValidationException")),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test]
async fn a_tool_input_not_of_the_schema_is_invalid_output() {
    let endpoint = endpoint(vec![ok(tool_use_answer(json!({
        "goal": "A retro gaming night stream",
        "tasks": [{"kind": "dance", "priority": 1}]
    })))])
    .await;

    let err = quick(&endpoint).chat(&plan_request()).await.unwrap_err();

    assert!(
        matches!(&err, LlmError::InvalidOutput { why: m, .. } if m.contains("$.tasks[0].kind")),
        "{err}"
    );
    assert_eq!(endpoint.calls(), 1, "a bad answer is not retried here");
}

#[tokio::test]
async fn a_text_answer_instead_of_the_tool_call_is_invalid_output() {
    let endpoint = endpoint(vec![ok(json!({
        "output": {"message": {"role": "assistant", "content": [{"text": "Sure! Here is a plan."}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 40, "outputTokens": 7, "totalTokens": 47},
        "metrics": {"latencyMs": 300}
    }))])
    .await;

    let err = quick(&endpoint).chat(&plan_request()).await.unwrap_err();

    assert!(
        matches!(&err, LlmError::InvalidOutput { why: m, .. } if m.contains("no call of the tool plan")),
        "{err}"
    );
}

#[tokio::test]
async fn an_answer_larger_than_the_bound_is_too_large() {
    let endpoint = endpoint(vec![ok(tool_use_answer(json!({
        "goal": "x".repeat(4096), "tasks": []
    })))])
    .await;
    let model = bedrock(
        &endpoint,
        BedrockConfig {
            max_response_bytes: 1024,
            ..BedrockConfig::new(MODEL)
        },
    );

    let err = model.chat(&plan_request()).await.unwrap_err();

    assert!(
        matches!(err, LlmError::TooLarge { limit: 1024, .. }),
        "{err}"
    );
}

#[test]
fn documents_and_json_values_convert_both_ways() {
    let value = json!({
        "null": null, "yes": true, "count": 3, "below": -2, "ratio": 0.25,
        "name": "plan", "list": [1, "two", [3.5], {"nested": {"deep": false}}]
    });
    assert_eq!(json_value(&document(&value)), value);
    assert_eq!(document(&json!(-2)), Document::Number(Number::NegInt(-2)));
    assert_eq!(
        json_value(&Document::Number(Number::Float(f64::NAN))),
        Value::Null
    );
}

#[test]
fn system_messages_anywhere_become_system_blocks_and_turns_alternate() {
    let request = ChatRequest {
        model: None,
        messages: vec![
            Message::user("a"),
            Message::system("rules"),
            Message::user("b"),
            crate::Message {
                role: Role::Assistant,
                content: "c".into(),
            },
            Message::user("d"),
        ],
        ..text_request()
    };
    let input = converse_input(MODEL, &request).unwrap();
    assert_eq!(input.get_model_id().as_deref(), Some(MODEL));
    assert_eq!(
        input.get_system().as_deref(),
        Some(&[SystemContentBlock::Text("rules".into())][..])
    );
    let turns: Vec<(ConversationRole, usize)> = input
        .get_messages()
        .iter()
        .flatten()
        .map(|m| (m.role().clone(), m.content().len()))
        .collect();
    assert_eq!(
        turns,
        [
            (ConversationRole::User, 2),
            (ConversationRole::Assistant, 1),
            (ConversationRole::User, 1)
        ]
    );
}
