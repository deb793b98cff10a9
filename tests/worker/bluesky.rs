//! Server profiles against real third-party servers: the Bluesky MCP server (PyPI
//! `mseep-bluesky-social-mcp`, a stdio child per agent) on the reference PDS and AppView the
//! stack runs, the agents' accounts in Secrets Manager (LocalStack); and what any stdio server
//! is given (nothing of the worker's environment) and how long it may take to start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chimera_aws::handler::QueueHandler;
use chimera_core::domain::AgentId;
use chimera_mcp::{McpClient, McpConfig, Op, ToolError, Vars};
use chimera_tests::pds_proxy::PdsProxy;
use chimera_tests::world::{HttpWorld, stdio_config};
use chimera_tests::{TestDb, clients, eventually, repo_root, stack_env, unique_stage};
use chimera_worker::Worker;
use chimera_worker::accounts::{self, BlueskyAccount};
use chimera_worker::secrets::SecretsManager;

use crate::handler::{Setup, deadline, event_of, failed};
use serde_json::{Value, json};

/// The shipped Bluesky profile, for a stage of its own, beside the world at `world_url`.
fn bluesky_profile(stage: &str, world_url: &str) -> McpConfig {
    bluesky_profile_via(stage, world_url, &stack_env("CHIMERA_BSKY_PDS_URL"))
}

/// [`bluesky_profile`], its server talking to the PDS at `pds_url`.
fn bluesky_profile_via(stage: &str, world_url: &str, pds_url: &str) -> McpConfig {
    let json = std::fs::read_to_string(repo_root().join("infra/mcp/bluesky.json"))
        .expect("infra/mcp/bluesky.json");
    let stage = stage.to_owned();
    let world_url = world_url.to_owned();
    let pds_url = pds_url.to_owned();
    McpConfig::parse_with(&json, &move |name| match name {
        "CHIMERA_STAGE" => Some(stage.clone()),
        "CHIMERA_WORLD_URL" => Some(world_url.clone()),
        "CHIMERA_BSKY_PDS_URL" => Some(pds_url.clone()),
        other => std::env::var(other).ok(),
    })
    .expect("the shipped Bluesky profile parses")
}

/// A new account on the local PDS for `agent`, stored where the profile looks for it.
async fn account_for(stage: &str, agent: AgentId, name: &str) -> BlueskyAccount {
    let http = reqwest::Client::new();
    let handle = format!(
        "{name}{}.test",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let account = accounts::create_on_pds(&http, &stack_env("CHIMERA_BSKY_PDS_URL"), &handle)
        .await
        .expect("an account on the local PDS");
    let aws = clients().await;
    accounts::store(
        &aws.secrets,
        &accounts::secret_name(stage, agent, "bluesky"),
        account.secret(),
    )
    .await
    .expect("the account's secret stored");
    account
}

async fn client(config: McpConfig) -> McpClient {
    let aws = clients().await;
    McpClient::new(config).with_secrets(Arc::new(SecretsManager::new(aws.secrets.clone())))
}

/// The record `uri` (`at://did/collection/rkey`) as the PDS holds it.
async fn record(uri: &str) -> Value {
    let parts: Vec<&str> = uri.trim_start_matches("at://").split('/').collect();
    let [repo, collection, rkey] = parts[..] else {
        panic!("not a record URI: {uri}")
    };
    let url = format!(
        "{}/xrpc/com.atproto.repo.getRecord?repo={repo}&collection={collection}&rkey={rkey}",
        stack_env("CHIMERA_BSKY_PDS_URL")
    );
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The posts in `did`'s repository.
async fn posts_of(did: &str) -> Vec<Value> {
    let url = format!(
        "{}/xrpc/com.atproto.repo.listRecords?repo={did}&collection=app.bsky.feed.post&limit=100",
        stack_env("CHIMERA_BSKY_PDS_URL")
    );
    let answer: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    answer["records"].as_array().cloned().unwrap_or_default()
}

fn vars(value: Value) -> Vars {
    value
        .as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

const EXECUTE: &[Op] = &[Op::Publish, Op::Reply, Op::ReadPost, Op::Lookup];

#[tokio::test]
async fn publish_and_reply_are_records_of_each_agents_own_account() {
    let db = TestDb::migrated().await;
    let world = HttpWorld::start(&db.url(), false).await;
    let stage = unique_stage().stage().to_owned();
    let (nova, orion) = (AgentId::random(), AgentId::random());
    let nova_account = account_for(&stage, nova, "nova").await;
    let orion_account = account_for(&stage, orion, "orion").await;
    let mcp = client(bluesky_profile(&stage, &world.url)).await;
    mcp.connect()
        .await
        .expect("the shipped profile fits the server");

    let text = "Solar panels on every school roof: here is what it costs.";
    let published = mcp
        .invoke(
            EXECUTE,
            Op::Publish,
            Some("bluesky"),
            Some(nova),
            vars(json!({"platform": "bluesky", "text": text, "idempotency_key": "approval:1"})),
        )
        .await
        .expect("published");
    let post_id = published.value["post_id"].as_str().unwrap().to_owned();
    assert!(
        post_id.starts_with(&format!("at://{}/app.bsky.feed.post/", nova_account.did)),
        "{post_id}"
    );
    let stored = record(&post_id).await;
    assert_eq!(stored["value"]["text"], text);
    assert_eq!(stored["cid"], published.value["cid"]);

    // The reply references the post it answers, read through MCP (the AppView indexes the
    // PDS's new records a moment after they are written).
    eventually(
        Duration::from_secs(20),
        "the post readable in the AppView",
        || {
            let mcp = &mcp;
            let post_id = post_id.clone();
            async move {
                mcp.invoke(
                    &[Op::ReadPost],
                    Op::ReadPost,
                    Some("bluesky"),
                    Some(orion),
                    vars(json!({"platform": "bluesky", "post_id": post_id})),
                )
                .await
                .map_err(|e| e.to_string())
            }
        },
    )
    .await;
    let answer = "What about the maintenance?";
    let replied = mcp
        .invoke(
            EXECUTE,
            Op::Reply,
            Some("bluesky"),
            Some(orion),
            vars(
                json!({"platform": "bluesky", "text": answer, "in_reply_to": post_id,
                        "idempotency_key": "approval:2"}),
            ),
        )
        .await
        .expect("replied");
    let reply_id = replied.value["post_id"].as_str().unwrap();
    assert!(
        reply_id.starts_with(&format!("at://{}/", orion_account.did)),
        "{reply_id}"
    );
    let reply = record(reply_id).await;
    assert_eq!(reply["value"]["text"], answer);
    assert_eq!(reply["value"]["reply"]["parent"]["uri"], post_id);
    assert_eq!(reply["value"]["reply"]["root"]["uri"], post_id);
    assert_eq!(reply["value"]["reply"]["parent"]["cid"], stored["cid"]);

    assert_eq!(posts_of(&nova_account.did).await.len(), 1);
    assert_eq!(posts_of(&orion_account.did).await.len(), 1);

    // An agent without an account is told so, and nothing is sent.
    let stranger = mcp
        .invoke(
            EXECUTE,
            Op::Publish,
            Some("bluesky"),
            Some(AgentId::random()),
            vars(json!({"platform": "bluesky", "text": "hi", "idempotency_key": "approval:3"})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(stranger, ToolError::NoAccount { .. }),
        "{stranger}"
    );
    mcp.shutdown().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_binding_that_does_not_fit_its_tool_refuses_the_start_naming_the_field() {
    let stage = unique_stage().stage().to_owned();
    let profile = json!({
        "servers": {"bluesky": {
            "transport": "stdio", "command": stack_env("CHIMERA_BSKY_MCP"),
            "env": {"BLUESKY_SERVICE_URL": stack_env("CHIMERA_BSKY_PDS_URL"),
                    "BLUESKY_IDENTIFIER": "{{secret.identifier}}",
                    "BLUESKY_APP_PASSWORD": "{{secret.app_password}}"},
            "credentials": {"secret": format!("{stage}/agents/{{agent_id}}/bluesky")},
            "account": ["did"]}},
        "platforms": {"bluesky": {
            "publish": {
                "server": "bluesky", "tool": "send_post",
                // `langs` is a list of language codes: a platform name does not fit.
                "arguments": {"text": "{{text}}", "langs": "{{platform}}"}},
            "lookup": {
                "server": "bluesky", "tool": "get_author_feed",
                "arguments": {"actor": "{{account.did}}"}}}}
    });
    let mcp = client(McpConfig::parse(&profile.to_string()).unwrap()).await;
    let err = mcp.connect().await.unwrap_err().to_string();
    for part in ["server bluesky", "tool send_post", "/langs"] {
        assert!(err.contains(part), "{part} in {err}");
    }
    mcp.shutdown().await;
}

#[tokio::test]
async fn a_stdio_server_sees_only_the_variables_its_profile_gives() {
    let db = TestDb::migrated().await;
    // The test process has the stack's AWS credentials and endpoints; the child must not.
    assert!(std::env::var("AWS_SECRET_ACCESS_KEY").is_ok());
    let mcp = McpClient::new(stdio_config(&db.url(), true, ""));
    let seen = mcp
        .call(&["debug.env"], "debug.env", json!({}))
        .await
        .unwrap();
    let names: Vec<String> =
        serde_json::from_value(seen.structured.unwrap()["names"].clone()).expect("a list of names");
    assert_eq!(names, ["RUST_LOG", "WORLD_DATABASE_URL"]);
    mcp.shutdown().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_server_that_never_answers_initialize_is_given_up_in_time() {
    // A real process that speaks no MCP: it reads nothing and answers nothing.
    let config = McpConfig::parse(
        &json!({"servers": {"mute": {"transport": "stdio", "command": "sleep", "args": ["60"]}},
                "connect_timeout_ms": 500})
        .to_string(),
    )
    .unwrap();
    let mcp = McpClient::new(config);
    let started = Instant::now();
    let err = mcp.connect().await.unwrap_err();
    assert!(
        matches!(&err, ToolError::Unavailable { reason, .. } if reason.contains("initialize")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    mcp.shutdown().await;
}

/// The effect ledger's row for `approval`: (state, sends, platform_ref, the tool that told).
async fn ledger(s: &Setup, approval: uuid::Uuid) -> (String, i32, Option<String>, String) {
    sqlx::query_as(
        "select state::text, sends, platform_ref, coalesce(tool, '') from effects where approval_id = $1",
    )
    .bind(approval)
    .fetch_one(&s.db.pool)
    .await
    .unwrap()
}

/// A worker on `s`'s stage whose Bluesky server reaches the PDS through `proxy`, and the DID
/// of the seeded agent's new account.
async fn worker_through(s: &Setup, world: &HttpWorld, proxy: &PdsProxy) -> (Worker, String) {
    let stage = unique_stage().stage().to_owned();
    let account = account_for(&stage, s.seed.agent, "nova").await;
    let mcp = client(bluesky_profile_via(&stage, &world.url, &proxy.url)).await;
    mcp.connect().await.expect("the profile fits the server");
    let worker = Worker::new(s.clients.clone(), s.db.pool.clone(), mcp, s.names.clone());
    (worker, account.did)
}

async fn approved_post(s: &Setup, text: &str) -> chimera_core::domain::Task {
    s.approved_execute(json!({"action": "social.publish",
                              "arguments": {"platform": "bluesky", "text": text},
                              "disclosure_level": "automated"}))
        .await
}

#[tokio::test]
async fn a_post_committed_whose_answer_was_lost_is_found_not_posted_again() {
    let s = Setup::new().await;
    let world = HttpWorld::start(&s.db.url(), false).await;
    let proxy = PdsProxy::start(&stack_env("CHIMERA_BSKY_PDS_URL")).await;
    let (worker, did) = worker_through(&s, &world, &proxy).await;
    let task = approved_post(&s, "Heat pumps work in the cold: three winters of data.").await;
    let approval = task.approval_id.unwrap().0;

    // The PDS commits the post and the connection drops before the answer: the server
    // reports a failure; the worker looks the post up instead of sending it again.
    proxy.drop_next_writes(1);
    let first = worker
        .handle(&event_of(std::slice::from_ref(&task)), deadline())
        .await;
    assert_eq!(failed(&first), Vec::<String>::new());
    let posts = posts_of(&did).await;
    assert_eq!(posts.len(), 1, "one record on the PDS: {posts:?}");
    assert_eq!(proxy.writes(), 1);
    let (state, sends, platform_ref, told_by) = ledger(&s, approval).await;
    assert_eq!((state.as_str(), sends), ("confirmed", 1));
    assert_eq!(told_by, "get_author_feed", "confirmed by the look-up");
    assert_eq!(platform_ref.as_deref(), posts[0]["uri"].as_str());

    // Delivered again with its idempotency record gone: the ledger answers, nothing is sent.
    s.forget_claim(&task).await;
    let again = worker
        .handle(&event_of(std::slice::from_ref(&task)), deadline())
        .await;
    assert_eq!(failed(&again), Vec::<String>::new());
    assert_eq!(proxy.writes(), 1);
    assert_eq!(posts_of(&did).await.len(), 1);
    let results = s.results(2).await;
    assert_eq!(results.len(), 2, "each delivery answered");
    worker.mcp().shutdown().await;
    s.db.drop_db().await;
}

#[tokio::test]
async fn an_unknown_outcome_the_platform_does_not_show_is_sent_once() {
    let s = Setup::new().await;
    let world = HttpWorld::start(&s.db.url(), false).await;
    let proxy = PdsProxy::start(&stack_env("CHIMERA_BSKY_PDS_URL")).await;
    let (worker, did) = worker_through(&s, &world, &proxy).await;
    let task = approved_post(&s, "Bike lanes pay for themselves: the city's own numbers.").await;
    let approval = task.approval_id.unwrap().0;
    // An earlier attempt was sent and came back without an answer a while ago; the post never
    // reached the platform.
    sqlx::query(
        "insert into effects (approval_id, agent_id, op, platform, state, sends, sent_at, answered_at, error)
         values ($1, $2, 'publish', 'bluesky', 'unknown', 1, now() - interval '1 minute',
                 now() - interval '1 minute', 'connection reset')",
    )
    .bind(approval)
    .bind(s.seed.agent.0)
    .execute(&s.db.pool)
    .await
    .unwrap();

    let handled = worker
        .handle(&event_of(std::slice::from_ref(&task)), deadline())
        .await;
    assert_eq!(failed(&handled), Vec::<String>::new());
    assert_eq!(proxy.writes(), 1, "looked up, found nothing, sent once");
    let posts = posts_of(&did).await;
    assert_eq!(posts.len(), 1);
    let (state, sends, platform_ref, told_by) = ledger(&s, approval).await;
    assert_eq!((state.as_str(), sends), ("confirmed", 2));
    assert_eq!(told_by, "send_post", "confirmed by the platform's answer");
    assert_eq!(platform_ref.as_deref(), posts[0]["uri"].as_str());
    worker.mcp().shutdown().await;
    s.db.drop_db().await;
}

#[tokio::test]
async fn a_post_the_platform_rate_limits_waits_for_its_time_and_then_goes_once() {
    let s = Setup::new().await;
    let world = HttpWorld::start(&s.db.url(), false).await;
    let proxy = PdsProxy::start(&stack_env("CHIMERA_BSKY_PDS_URL")).await;
    let (worker, did) = worker_through(&s, &world, &proxy).await;
    let task = approved_post(&s, "Rain barrels: a weekend project that pays for itself.").await;
    let approval = task.approval_id.unwrap().0;

    // The PDS's write-points limiter answers 429: the task is put off, not failed or retried.
    proxy.rate_limit_next_writes(1);
    let before = chrono::Utc::now();
    let limited = worker
        .handle(&event_of(std::slice::from_ref(&task)), deadline())
        .await;
    assert_eq!(
        failed(&limited),
        Vec::<String>::new(),
        "the message is done"
    );
    assert!(posts_of(&did).await.is_empty());
    let (state, sends, _, _) = ledger(&s, approval).await;
    assert_eq!((state.as_str(), sends), ("intended", 1), "as if never sent");
    let (status, not_before): (String, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("select status::text, not_before from tasks where id = $1")
            .bind(task.id.0)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "queued");
    // The profile's wait (the server passes no reset time on): five minutes.
    let wait = not_before - before;
    assert!(
        wait >= chrono::Duration::seconds(299) && wait <= chrono::Duration::seconds(310),
        "{wait}"
    );
    // Its message goes out again then (the relay hands it to SQS with a delivery delay).
    let deliver_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select deliver_at from outbox where dedup_key = $1")
            .bind(format!("task:{}:{}", task.id.0, task.attempt))
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(deliver_at, not_before);
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where task_id = $1 and action = 'worker.deferred'",
    )
    .bind(task.id.0)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // Its time comes: delivered again, it posts once.
    let later = worker
        .handle(&event_of(std::slice::from_ref(&task)), deadline())
        .await;
    assert_eq!(failed(&later), Vec::<String>::new());
    assert_eq!(posts_of(&did).await.len(), 1);
    let (state, sends, _, _) = ledger(&s, approval).await;
    assert_eq!((state.as_str(), sends), ("confirmed", 2));
    worker.mcp().shutdown().await;
    s.db.drop_db().await;
}
