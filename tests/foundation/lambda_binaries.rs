//! Each function binary starts under its Lambda runtime (`lambda_runtime`, or `lambda_http` for
//! the HITL API), takes events from the Runtime API and answers them: the same contract
//! `cargo lambda build` packages for AWS.

use chimera_tests::lambda::{Outcome, RunningFunction};
use chimera_tests::{TestDb, stack_env, workspace_bin};

const BAD_MESSAGES: &str = include_str!("../fixtures/sqs_event_bad_messages.json");
const GET_HEALTH: &str = include_str!("../fixtures/apigw_v2_get_health.json");
const GET_UNKNOWN: &str = include_str!("../fixtures/apigw_v2_get_unknown.json");

fn aws_env() -> Vec<(&'static str, String)> {
    [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ]
    .into_iter()
    .map(|var| (var, stack_env(var)))
    .collect()
}

#[tokio::test]
async fn each_queue_function_runs_under_lambda_runtime_and_reports_only_failed_messages() {
    let db = TestDb::empty().await;
    let mut env = aws_env();
    // The worker opens its database pool lazily; its MCP servers are listed and the profile's
    // bindings checked at init.
    env.push(("DATABASE_URL", db.url()));
    env.push((
        "CHIMERA_MCP_SERVERS",
        serde_json::json!({"servers": {"world": {"transport": "stdio",
            "command": workspace_bin("chimera-world"), "args": ["stdio"],
            "env": {"WORLD_DATABASE_URL": db.url()}}}})
        .to_string(),
    ));
    for name in ["planner", "worker", "judge"] {
        let mut function = RunningFunction::start(&workspace_bin(name), name, &env).await;
        let outcome = function
            .invoke(serde_json::from_str(BAD_MESSAGES).unwrap())
            .await;
        let Outcome::Response(response) = outcome else {
            panic!("{name} answered with an error: {outcome:?}")
        };
        let mut failed: Vec<&str> = response["batchItemFailures"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} returned an SqsBatchResponse, got {response}"))
            .iter()
            .filter_map(|f| f["itemIdentifier"].as_str())
            .collect();
        failed.sort();
        assert_eq!(
            failed,
            [
                "11111111-1111-4111-8111-111111111111",
                "22222222-2222-4222-8222-222222222222"
            ],
            "{name} reports the malformed and the unknown-version message"
        );
        let init = function
            .init_duration()
            .expect("the function polled for an event");
        eprintln!("{name}: init (process start to first poll) {init:?}");
        function.stop().await;
    }
    db.drop_db().await;
}

#[tokio::test]
async fn the_hitl_api_runs_under_lambda_http_and_answers_json() {
    let db = TestDb::empty().await;
    let mut env = aws_env();
    env.push(("DATABASE_URL", db.url()));
    let mut function = RunningFunction::start(&workspace_bin("hitl-api"), "hitl-api", &env).await;

    let Outcome::Response(health) = function
        .invoke(serde_json::from_str(GET_HEALTH).unwrap())
        .await
    else {
        panic!("GET /health failed")
    };
    assert_eq!(health["statusCode"], 200, "{health}");
    let body: serde_json::Value = serde_json::from_str(health["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["database"], "ok");

    let Outcome::Response(missing) = function
        .invoke(serde_json::from_str(GET_UNKNOWN).unwrap())
        .await
    else {
        panic!("GET of an unknown route failed")
    };
    assert_eq!(missing["statusCode"], 404, "{missing}");
    let body: serde_json::Value = serde_json::from_str(missing["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    eprintln!(
        "hitl-api: init (process start to first poll) {:?}",
        function.init_duration()
    );
    function.stop().await;
    db.drop_db().await;
}

/// An API Gateway (HTTP API, payload 2.0) request for `path`, with the claims its JWT
/// authorizer passed (none on a public route).
fn gateway_get(path: &str, claims: Option<serde_json::Value>) -> serde_json::Value {
    let mut event: serde_json::Value = serde_json::from_str(GET_HEALTH).unwrap();
    event["rawPath"] = path.into();
    event["requestContext"]["http"]["path"] = path.into();
    if let Some(claims) = claims {
        event["requestContext"]["authorizer"] =
            serde_json::json!({"jwt": {"claims": claims, "scopes": null}});
    }
    event
}

#[tokio::test]
async fn behind_the_gateway_a_goals_event_stream_answers_at_once_for_a_cognito_user() {
    let db = TestDb::migrated().await;
    let tenant = chimera_store::records::create_tenant(&db.pool, "acme")
        .await
        .unwrap();
    let (_, goal) = chimera_tests::seed::agent_with_goal(&db.pool, tenant, "nova").await;
    let mut env = aws_env();
    env.push(("DATABASE_URL", db.url()));
    let mut function = RunningFunction::start(&workspace_bin("hitl-api"), "hitl-api", &env).await;

    // A Cognito ID token's claims, as API Gateway's JWT authorizer hands them over.
    let claims = serde_json::json!({
        "sub": "5f0c1d2e-user",
        "custom:tenant": tenant.0.to_string(),
        "cognito:groups": "[operator]",
    });
    let Outcome::Response(answer) = function
        .invoke(gateway_get(
            &format!("/goals/{}/events", goal.0),
            Some(claims),
        ))
        .await
    else {
        panic!("GET /goals/{{id}}/events failed")
    };
    assert_eq!(answer["statusCode"], 200, "{answer}");
    // The whole stream in one answer: the goal, then `timeout` with when to poll again.
    let body = answer["body"].as_str().unwrap();
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events, ["goal", "timeout"], "{body}");
    assert!(body.contains("retry: 2000"), "{body}");

    // The sign-in settings are public.
    let Outcome::Response(config) = function.invoke(gateway_get("/auth/config", None)).await else {
        panic!("GET /auth/config failed")
    };
    assert_eq!(config["statusCode"], 200, "{config}");
    function.stop().await;
    db.drop_db().await;
}
