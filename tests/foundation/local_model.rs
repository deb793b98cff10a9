//! The real language model the local stack runs (`scripts/stack up`): SmolLM2-135M-Instruct
//! behind the project's OpenAI-compatible server, at temperature 0; and the language-model
//! port's OpenAI-compatible adapter against it and against providers that misbehave.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chimera_llm::openai::{OpenAiCompatible, OpenAiConfig};
use chimera_llm::{ChatRequest, LanguageModel, LlmError, Message, OutputSchema};
use chimera_tests::stack_env;
use serde_json::{Value, json};

async fn chat(body: &Value) -> (u16, Value) {
    let url = format!("{}/chat/completions", stack_env("CHIMERA_LLM_BASE_URL"));
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("the model server answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

#[tokio::test]
async fn the_local_model_answers_a_json_schema_request_deterministically() {
    let schema = json!({
        "type": "object",
        "properties": {
            "topic": {"type": "string", "maxLength": 40},
            "score": {"type": "number"}
        },
        "required": ["topic", "score"],
        "additionalProperties": false
    });
    let request = json!({
        "model": stack_env("CHIMERA_LLM_MODEL"),
        "temperature": 0,
        "seed": 7,
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": "You rate post ideas. Answer in JSON."},
            {"role": "user", "content": "Idea: a retro gaming night stream. Give its topic and a score from 0 to 1."}
        ],
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "rating", "strict": true, "schema": schema}}
    });
    let (status, first) = chat(&request).await;
    assert_eq!(status, 200, "{first}");
    let content = first["choices"][0]["message"]["content"].as_str().unwrap();
    let rating: Value = serde_json::from_str(content).expect("the answer is JSON");
    assert!(
        rating["topic"].is_string() && rating["score"].is_number(),
        "{rating}"
    );
    assert_eq!(
        rating.as_object().unwrap().len(),
        2,
        "no other field: {rating}"
    );
    assert!(first["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(first["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(first["model"], stack_env("CHIMERA_LLM_MODEL"));
    // Temperature 0: the same request, the same answer.
    let (_, second) = chat(&request).await;
    assert_eq!(second["choices"][0]["message"]["content"], content);
    // A malformed request is a 400 with an OpenAI-style error, not a crash.
    let (status, error) = chat(&json!({"messages": "not a list"})).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"]["message"].is_string(), "{error}");
}

/// The port's OpenAI-compatible adapter, on the local stack's model.
fn local_model() -> OpenAiCompatible {
    OpenAiCompatible::new(OpenAiConfig {
        timeout: Duration::from_secs(60),
        ..OpenAiConfig::new(
            stack_env("CHIMERA_LLM_BASE_URL"),
            stack_env("CHIMERA_LLM_MODEL"),
        )
    })
}

#[tokio::test]
async fn the_port_gets_a_schema_valid_answer_with_usage_from_the_local_model() {
    let model = local_model();
    let request = ChatRequest {
        model: None,
        messages: vec![
            Message::system("You classify post ideas. Answer in JSON."),
            Message::user(
                "Idea: a thank-you reply to a fan. Its topic, and whether it is sensitive?",
            ),
        ],
        output: Some(OutputSchema {
            name: "classification".into(),
            schema: json!({"type": "object", "additionalProperties": false,
                           "required": ["topic", "sensitive"],
                           "properties": {"topic": {"type": "string", "maxLength": 40},
                                          "sensitive": {"type": "boolean"}}}),
        }),
        max_tokens: 64,
        temperature: 0.0,
        seed: Some(7),
    };
    let answer = model.chat(&request).await.expect("an answer");
    let value = answer.json.expect("a structured answer");
    assert!(
        value["topic"].is_string() && value["sensitive"].is_boolean(),
        "{value}"
    );
    assert!(answer.usage.input_tokens > 0 && answer.usage.output_tokens > 0);
    assert_eq!(answer.model, stack_env("CHIMERA_LLM_MODEL"));
    assert!(!answer.truncated);
    // Plain text too.
    let text = model
        .chat(&ChatRequest {
            model: None,
            output: None,
            max_tokens: 24,
            ..request
        })
        .await
        .expect("a text answer");
    assert!(!text.text.trim().is_empty() && text.json.is_none());
}

/// A provider that answers 429 (with `Retry-After`) `busy` times, then `answer`.
async fn provider(busy: usize, answer: Value) -> String {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let (calls, answer) = (calls.clone(), answer.clone());
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < busy {
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "1")],
                        axum::Json(json!({"error": {"message": "slow down"}})),
                    )
                } else {
                    (
                        axum::http::StatusCode::OK,
                        [("retry-after", "0")],
                        axum::Json(answer),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

fn completion(content: &str) -> Value {
    json!({"model": "m", "choices": [{"message": {"role": "assistant", "content": content},
           "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
}

fn ask(schema: Option<Value>) -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![Message::user("hi")],
        output: schema.map(|schema| OutputSchema {
            name: "answer".into(),
            schema,
        }),
        max_tokens: 8,
        temperature: 0.0,
        seed: None,
    }
}

#[tokio::test]
async fn a_busy_provider_is_retried_after_its_retry_after_and_a_bad_answer_is_refused() {
    // Two 429s with Retry-After: 1, then an answer: about 2 s, three calls.
    let url = provider(2, completion("fine")).await;
    let model = OpenAiCompatible::new(OpenAiConfig::new(url, "m"));
    let started = std::time::Instant::now();
    let answer = model
        .chat(&ask(None))
        .await
        .expect("answered after the retries");
    assert_eq!(answer.text, "fine");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited as asked"
    );
    // Busy for longer than the retries: busy, worth trying later (never a worse answer now).
    let url = provider(100, completion("never")).await;
    let model = OpenAiCompatible::new(OpenAiConfig {
        retries: 1,
        ..OpenAiConfig::new(url, "m")
    });
    let err = model.chat(&ask(None)).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Busy(_)) && err.is_retryable(),
        "{err}"
    );
    // An answer that is not of the schema is refused, with where.
    let url = provider(0, completion(r#"{"score": "high"}"#)).await;
    let model = OpenAiCompatible::new(OpenAiConfig::new(url, "m"));
    let schema = json!({"type": "object", "required": ["score"],
                        "properties": {"score": {"type": "number"}}});
    let err = model.chat(&ask(Some(schema))).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::InvalidOutput { why: m, .. } if m.contains("$.score")),
        "{err}"
    );
    // An answer larger than the bound is refused before it is parsed.
    let url = provider(0, completion(&"x".repeat(4096))).await;
    let model = OpenAiCompatible::new(OpenAiConfig {
        max_response_bytes: 1024,
        ..OpenAiConfig::new(url, "m")
    });
    let err = model.chat(&ask(None)).await.unwrap_err();
    assert!(
        matches!(err, LlmError::TooLarge { limit: 1024, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_provider_that_never_answers_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let model = OpenAiCompatible::new(OpenAiConfig {
        timeout: Duration::from_millis(300),
        retries: 1,
        backoff: Duration::from_millis(10),
        ..OpenAiConfig::new(format!("http://{addr}/v1"), "m")
    });
    let err = model.chat(&ask(None)).await.unwrap_err();
    assert!(matches!(err, LlmError::Timeout(_)), "{err}");
}
