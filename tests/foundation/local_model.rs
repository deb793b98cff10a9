//! The real language model the local stack runs (`scripts/stack up`): SmolLM2-135M-Instruct
//! behind the project's OpenAI-compatible server, at temperature 0.

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
