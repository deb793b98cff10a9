//! Titan's adapter against the Bedrock stand-in (the real SDK client signs, sends and reads
//! `InvokeModel`), and the checks every answer passes.

use serde_json::{Value, json};

use super::*;
use crate::bedrock::tests::{endpoint, error, ok, sdk_config};

const TITAN: &str = "amazon.titan-embed-text-v2:0";

fn titan_answer(dimensions: usize, tokens: u32) -> Value {
    let mut v = vec![0.0f32; dimensions];
    v[0] = 0.6;
    v[1] = 0.8;
    json!({"embedding": v, "inputTextTokenCount": tokens})
}

#[tokio::test]
async fn titan_sends_one_normalised_text_per_call_at_the_configured_length() {
    let endpoint = endpoint(vec![ok(titan_answer(512, 7))]).await;
    let titan =
        TitanEmbedder::new(&sdk_config(&endpoint), TITAN, 512, Duration::from_secs(5)).unwrap();
    let texts = vec!["a post about tea".to_owned(), "x".repeat(MAX_CHARS + 50)];
    let got = titan.embed(&texts).await.unwrap();
    assert_eq!(got.vectors.len(), 2);
    assert_eq!(got.vectors[0].len(), 512);
    assert_eq!((got.input_tokens, got.model.as_str()), (14, TITAN));
    let seen = endpoint.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    assert!(
        seen[0].headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256")
    );
    assert_eq!(
        seen[0].body,
        json!({"inputText": "a post about tea", "dimensions": 512, "normalize": true})
    );
    // A long text is cut before it is sent.
    assert_eq!(
        seen[1].body["inputText"].as_str().unwrap().chars().count(),
        MAX_CHARS
    );
}

#[tokio::test]
async fn titan_retries_throttling_and_refuses_what_is_not_a_vector_of_its_length() {
    let busy = endpoint(vec![
        error(429, "ThrottlingException", Some("0")),
        ok(titan_answer(512, 3)),
    ])
    .await;
    let titan = TitanEmbedder::new(&sdk_config(&busy), TITAN, 512, Duration::from_secs(5)).unwrap();
    titan.embed(&["tea".to_owned()]).await.unwrap();
    assert_eq!(busy.calls(), 2);

    let short = endpoint(vec![ok(titan_answer(256, 3))]).await;
    let titan =
        TitanEmbedder::new(&sdk_config(&short), TITAN, 512, Duration::from_secs(5)).unwrap();
    let err = titan.embed(&["tea".to_owned()]).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::InvalidOutput { why: m, .. } if m.contains("256 dimensions")),
        "{err}"
    );

    let refused = endpoint(vec![error(400, "ValidationException", None)]).await;
    let titan =
        TitanEmbedder::new(&sdk_config(&refused), TITAN, 512, Duration::from_secs(5)).unwrap();
    let err = titan.embed(&["tea".to_owned()]).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Refused { status: 400, .. }),
        "{err}"
    );
    assert_eq!(refused.calls(), 1);

    assert!(
        TitanEmbedder::new(&sdk_config(&refused), TITAN, 384, Duration::from_secs(5))
            .err()
            .unwrap()
            .contains("[256, 512, 1024]")
    );
    assert!(matches!(
        titan.embed(&[]).await,
        Err(LlmError::Refused { status: 400, .. })
    ));
}

#[test]
fn an_answer_is_one_finite_direction_of_the_right_length_per_text() {
    let good = vec![vec![0.5f32, 0.5], vec![1.0, 0.0]];
    assert!(check(&good, 2, 2).is_ok());
    assert!(check(&good, 3, 2).is_err());
    assert!(check(&good, 2, 3).is_err());
    assert!(check(&[vec![0.0, 0.0]], 1, 2).is_err());
    assert!(check(&[vec![f32::NAN, 1.0]], 1, 2).is_err());
    assert_eq!(bounded("héllo"), "héllo");
    assert_eq!(
        bounded(&"é".repeat(MAX_CHARS + 1)).chars().count(),
        MAX_CHARS
    );
}
