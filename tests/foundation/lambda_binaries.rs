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
