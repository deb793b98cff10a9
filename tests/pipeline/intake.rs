use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chimera_aws::bootstrap::{BootstrapOptions, bootstrap};
use chimera_core::envelope::{self, PlannerMessage};
use chimera_core::names::{Queue, ResourceNames};
use chimera_hitl_api::{AppState, router};
use chimera_tests::seed::{Seeded, seed_agent};
use chimera_tests::swarm::{sign_token, test_auth};
use chimera_tests::{TestDb, clients, drain, unique_stage};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Api {
    db: TestDb,
    names: ResourceNames,
    seed: Seeded,
}

impl Api {
    async fn new() -> Api {
        let db = TestDb::migrated().await;
        let seed = seed_agent(&db.pool).await;
        let names = unique_stage();
        bootstrap(
            &clients().await,
            &names,
            BootstrapOptions {
                max_receive_count: 3,
            },
        )
        .await
        .unwrap();
        Api { db, names, seed }
    }

    /// Calls the router as the seeded tenant's operator (unless the request has a token).
    async fn call(&self, mut request: Request<Body>) -> (StatusCode, Value) {
        let app = router(AppState::new(
            self.db.pool.clone(),
            clients().await,
            self.names.clone(),
            test_auth(),
        ));
        if !request.headers().contains_key("authorization") {
            let token = sign_token(self.seed.tenant, "op", &["operator"]);
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("a JSON body, got {:?}", String::from_utf8_lossy(&bytes)));
        (status, body)
    }

    async fn post(&self, body: &str, key: Option<&str>) -> (StatusCode, Value) {
        let mut request = Request::post("/goals").header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        self.call(request.body(Body::from(body.to_owned())).unwrap())
            .await
    }

    fn goal(&self, text: &str) -> String {
        json!({
            "tenant_id": self.seed.tenant.0, "agent_id": self.seed.agent.0, "kind": "campaign",
            "text": text, "constraints": {"platforms": ["instagram", "x"]}
        })
        .to_string()
    }

    /// Goals submitted through the API (the seed's own goal aside).
    async fn goals(&self) -> i64 {
        sqlx::query_scalar("select count(*) from goals where id <> $1")
            .bind(self.seed.goal.0)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Goal messages on the goal queue, received and deleted, waiting up to `wait` for them.
    async fn announced(&self, expected: usize, wait: Duration) -> Vec<PlannerMessage> {
        drain(&self.names, Queue::Goal, expected, wait)
            .await
            .iter()
            .map(|body| envelope::decode(body).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn a_goal_is_stored_announced_and_reported() {
    let api = Api::new().await;
    let (status, body) = api
        .post(&api.goal("launch the spring collection"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["goal_id"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "received");
    let announced = api.announced(1, Duration::from_secs(10)).await;
    assert_eq!(
        announced,
        vec![PlannerMessage::Goal {
            goal_id: chimera_core::domain::GoalId(id.parse().unwrap())
        }]
    );

    let (status, view) = api
        .call(
            Request::get(format!("/goals/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["id"], id.as_str());
    assert_eq!(view["status"], "received");
    assert_eq!(view["constraints"]["platforms"], json!(["instagram", "x"]));
    assert_eq!(view["tasks"], json!([]));

    for missing in [
        format!("/goals/{}", uuid::Uuid::new_v4()),
        "/goals/not-a-uuid".into(),
    ] {
        let (status, body) = api
            .call(Request::get(missing).body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");
    }
    api.db.drop_db().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_goal_and_refuses_a_different_request() {
    let api = Api::new().await;
    let body = api.goal("summer teaser");
    let (s1, first) = api.post(&body, Some("req-1")).await;
    let (s2, second) = api.post(&body, Some("req-1")).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(first["goal_id"], second["goal_id"]);
    assert_eq!(api.goals().await, 1);

    let (status, err) = api.post(&api.goal("something else"), Some("req-1")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "conflict");
    assert_eq!(api.goals().await, 1);
    api.db.drop_db().await;
}

#[tokio::test]
async fn bad_goals_get_a_json_4xx_and_store_nothing() {
    let api = Api::new().await;
    let (t, a) = (api.seed.tenant.0, api.seed.agent.0);
    let cases = [
        ("not json".to_owned(), StatusCode::BAD_REQUEST),
        (json!({"tenant_id": t, "agent_id": a, "kind": "campaign"}).to_string(), StatusCode::BAD_REQUEST),
        (json!({"tenant_id": t, "agent_id": a, "kind": "campaign", "text": "x", "extra": 1}).to_string(), StatusCode::BAD_REQUEST),
        (json!({"tenant_id": t, "agent_id": a, "kind": "party", "text": "x"}).to_string(), StatusCode::BAD_REQUEST),
        (json!({"tenant_id": t, "agent_id": a, "kind": "campaign", "text": "  "}).to_string(), StatusCode::BAD_REQUEST),
        (json!({"tenant_id": t, "agent_id": a, "kind": "campaign", "text": "x", "constraints": {"platforms": ["myspace"]}}).to_string(), StatusCode::BAD_REQUEST),
        (json!({"tenant_id": t, "agent_id": a, "kind": "paid_action", "text": "x"}).to_string(), StatusCode::BAD_REQUEST),
        (json!({"tenant_id": t, "agent_id": uuid::Uuid::new_v4(), "kind": "campaign", "text": "x"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"tenant_id": uuid::Uuid::new_v4(), "agent_id": a, "kind": "campaign", "text": "x"}).to_string(), StatusCode::FORBIDDEN),
        // The fields in order, as an array: serde would read it as the struct.
        (json!([t, a, "campaign", "launch", {}]).to_string(), StatusCode::BAD_REQUEST),
    ];
    for (body, expected) in cases {
        let (status, err) = api.post(&body, None).await;
        assert_eq!(status, expected, "{body} -> {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{err}"
        );
    }
    for key in ["k".repeat(201), "with space".into(), "tab\there".into()] {
        let (status, _) = api.post(&api.goal("ok"), Some(&key)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?}");
    }
    assert_eq!(api.goals().await, 0);
    assert!(
        api.announced(1, Duration::from_secs(2)).await.is_empty(),
        "nothing announced"
    );
    api.db.drop_db().await;
}

#[tokio::test]
async fn a_goal_accepted_while_the_queue_is_down_is_announced_once_it_is_back() {
    let api = Api::new().await;
    let mut no_sqs = clients().await;
    no_sqs.sqs = aws_sdk_sqs::Client::from_conf(
        no_sqs
            .sqs
            .config()
            .to_builder()
            .endpoint_url("http://127.0.0.1:1")
            .build(),
    );
    let app = router(AppState::new(
        api.db.pool.clone(),
        no_sqs,
        api.names.clone(),
        test_auth(),
    ));
    let token = sign_token(api.seed.tenant, "op", &["operator"]);
    let request = Request::post("/goals")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(api.goal("lost in transit")))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let accepted: Value = serde_json::from_slice(&bytes).unwrap();
    let goal = accepted["goal_id"].as_str().unwrap().to_owned();
    assert_eq!(api.goals().await, 1, "the goal is kept");
    // Its message waits in the outbox, the failed send recorded.
    let (sent, attempts, error): (Option<chrono::DateTime<chrono::Utc>>, i32, Option<String>) =
        sqlx::query_as("select sent_at, attempts, last_error from outbox where goal_id = $1::uuid")
            .bind(&goal)
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert!(
        sent.is_none() && attempts == 1 && error.is_some(),
        "{attempts} {error:?}"
    );
    // With the queue back, the relay's next pass (the sweep's, the runner's) announces it.
    let state = AppState::new(
        api.db.pool.clone(),
        clients().await,
        api.names.clone(),
        test_auth(),
    );
    chimera_tests::eventually(Duration::from_secs(30), "the goal announced", || async {
        state
            .relay
            .drain(chrono::Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        let (sent, error): (Option<chrono::DateTime<chrono::Utc>>, Option<String>) =
            sqlx::query_as("select sent_at, last_error from outbox where goal_id = $1::uuid")
                .bind(&goal)
                .fetch_one(&api.db.pool)
                .await
                .map_err(|e| e.to_string())?;
        match sent {
            Some(_) => Ok(()),
            None => Err(format!("not sent; last error {error:?}")),
        }
    })
    .await;
    // The seeded goal's message went out too.
    let bodies = drain(&api.names, Queue::Goal, 2, Duration::from_secs(10)).await;
    let announced = PlannerMessage::Goal {
        goal_id: chimera_core::domain::GoalId(goal.parse().unwrap()),
    };
    assert!(
        bodies
            .iter()
            .any(|b| envelope::decode::<PlannerMessage>(b).ok() == Some(announced.clone())),
        "{bodies:?}"
    );
    api.db.drop_db().await;
}
