//! Errors mean what they say: text PostgreSQL cannot store is the client's mistake (400 naming
//! the field, nothing stored), a fault of ours is an opaque 500, only a dependency that does not
//! answer is a 503.

use std::time::Duration;

use chimera_tests::swarm::{Swarm, SwarmOptions, sign_token, test_auth};
use reqwest::Method;
use serde_json::{Value, json};

async fn call(
    swarm: &Swarm,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", swarm.api()))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{path}: a JSON body, got {status} {text:?}"));
    (status, body)
}

/// Counts of everything a request could have written.
async fn written(swarm: &Swarm) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "select (select count(*) from goals), (select count(*) from audit_log),
                (select count(*) from reviews where status = 'pending'), (select count(*) from outbox)",
    )
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap()
}

/// A reply held for a human (medium confidence): (review id, artifact hash, policy version).
async fn held_reply(swarm: &Swarm) -> (String, String, i32) {
    let goal = swarm
        .submit(
            0,
            "reply",
            "thanks for the feedback",
            json!({"platforms": ["x"], "in_reply_to": "post-1", "simulated_quality": 0.80}),
        )
        .await;
    assert_eq!(
        swarm.settle(&[goal], Duration::from_secs(60)).await,
        ["awaiting_review"]
    );
    let (id, hash, policy): (uuid::Uuid, String, i32) = sqlx::query_as(
        "select id, artifact_hash, policy_version from reviews where status = 'pending'",
    )
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    (id.to_string(), hash, policy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_the_database_cannot_store_is_a_400_naming_the_field_and_stores_nothing() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let (review, hash, policy) = held_reply(&swarm).await;
    let operator = swarm.token("olga", &["operator"]);
    let reviewer = swarm.token("rita", &["reviewer"]);
    let agent = swarm.agents[0].0;
    let goal = |text: &str, kind: &str, constraints: Value| json!({"agent_id": agent, "kind": kind, "text": text, "constraints": constraints});
    let nul = "bad\u{0}text";
    let probes: Vec<(String, &str, Value, &str)> = vec![
        (
            "/goals".into(),
            &operator,
            goal(nul, "reply", json!({})),
            "text",
        ),
        (
            "/goals".into(),
            &operator,
            goal("hi", nul, json!({})),
            "kind",
        ),
        (
            "/goals".into(),
            &operator,
            goal(
                "hi",
                "reply",
                json!({"platforms": ["x"], "in_reply_to": nul}),
            ),
            "constraints.in_reply_to",
        ),
        (
            "/goals".into(),
            &operator,
            goal(
                "pay",
                "paid_action",
                json!({"pay_to": nul, "amount_cents": 100}),
            ),
            "constraints.pay_to",
        ),
        (
            "/goals".into(),
            &operator,
            goal("hi", "campaign", json!({"platforms": [nul]})),
            "constraints.platforms[0]",
        ),
        (
            format!("/reviews/{review}/approve"),
            &reviewer,
            json!({"artifact_hash": nul, "policy_version": policy}),
            "artifact_hash",
        ),
        (
            format!("/reviews/{review}/reject"),
            &reviewer,
            json!({"artifact_hash": hash, "policy_version": policy, "reason": nul}),
            "reason",
        ),
        (
            format!("/reviews/{review}/edit"),
            &reviewer,
            json!({"artifact_hash": hash, "policy_version": policy, "arguments": {"text": nul}}),
            "arguments.text",
        ),
        (
            format!("/reviews/{review}/edit"),
            &reviewer,
            json!({"artifact_hash": hash, "policy_version": policy, "arguments": {"memo": nul}}),
            "arguments.memo",
        ),
        (
            "/reviews/bulk-approve".into(),
            &reviewer,
            json!({"items": [{"id": review, "artifact_hash": nul, "policy_version": policy}]}),
            "items[0].artifact_hash",
        ),
    ];
    let before = written(&swarm).await;
    for (path, token, body, field) in &probes {
        let (status, answer) = call(&swarm, Method::POST, path, token, Some(body)).await;
        assert_eq!(status, 400, "{path} {field}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{path}: {message:?} names {field}");
    }
    // A query parameter, and a token's subject.
    let (status, answer) = call(
        &swarm,
        Method::GET,
        "/reviews?risk=sensitive%00",
        &reviewer,
        None,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let nul_subject = sign_token(swarm.tenant, "ri\u{0}ta", &["reviewer"]);
    let (status, answer) = call(
        &swarm,
        Method::POST,
        &format!("/reviews/{review}/approve"),
        &nul_subject,
        Some(&json!({"artifact_hash": hash, "policy_version": policy})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("sub"));
    assert_eq!(written(&swarm).await, before, "nothing was stored");
    // The item is still there to decide, with clean text.
    let (status, answer) = call(
        &swarm,
        Method::POST,
        &format!("/reviews/{review}/reject"),
        &reviewer,
        Some(&json!({"artifact_hash": hash, "policy_version": policy, "reason": "off tone"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fault_of_ours_is_an_opaque_500_and_a_database_down_a_503() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let (review, _, _) = held_reply(&swarm).await;
    let reviewer = swarm.token("rita", &["reviewer"]);
    // A stored result the API cannot read: an invariant broken under it.
    sqlx::query(
        "update results set artifact = '{\"artifacts\": \"not a list\"}'
         where id = (select result_id from reviews where id = $1::uuid)",
    )
    .bind(&review)
    .execute(&swarm.db.pool)
    .await
    .unwrap();
    let (status, answer) = call(
        &swarm,
        Method::GET,
        &format!("/reviews/{review}"),
        &reviewer,
        None,
    )
    .await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(
        answer,
        json!({"error": {"code": "internal", "message": "internal error"}}),
        "opaque: nothing of the cause is echoed"
    );

    // The same router over a database that does not answer.
    let down = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .unwrap();
    let app = chimera_hitl_api::router(chimera_hitl_api::AppState::new(
        down,
        swarm.clients.clone(),
        swarm.names.clone(),
        test_auth(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/reviews"))
        .bearer_auth(&reviewer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "unavailable");
    swarm.stop().await;
}
