//! A goal's server-sent events (`GET /goals/{id}/events`) over HTTP from the runner's API: the
//! goal at once, again as its tasks move, and `settled` when it is done.

use std::time::{Duration, Instant};

use chimera_core::domain::{GoalId, TenantId};
use chimera_store::records;
use chimera_tests::swarm::{Swarm, SwarmOptions, sign_token, test_auth};
use chimera_tests::{TestDb, clients, serve_local, unique_stage};
use serde_json::{Value, json};

use crate::hitl::{call, operator};

/// The events of one stream, as (event name, data), read until the stream ends or `wait`.
async fn read_events(swarm: &Swarm, goal: uuid::Uuid, wait: Duration) -> Vec<(String, Value)> {
    let mut response = reqwest::Client::new()
        .get(format!("{}/goals/{goal}/events", swarm.api()))
        .bearer_auth(operator(swarm))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let deadline = Instant::now() + wait;
    let mut text = String::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        response.chunk(),
    )
    .await
    .expect("the stream ends in time")
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                }
            }
            Some((name?, data?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_goals_events_follow_it_live_until_it_settles() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let goal = swarm
        .submit(
            0,
            "campaign",
            "retro gaming night",
            json!({"platforms": ["instagram", "x"], "simulated_quality": 0.95}),
        )
        .await;
    let events = read_events(&swarm, goal.0, Duration::from_secs(90)).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.len() >= 3,
        "the goal at once, as it moves, settled: {names:?}"
    );
    assert_eq!(names.last(), Some(&"settled"), "{names:?}");
    assert!(
        names[..names.len() - 1].iter().all(|n| *n == "goal"),
        "{names:?}"
    );
    let (_, last) = events.last().unwrap();
    assert_eq!(last["status"], "completed");
    assert_eq!(last["tasks"].as_array().map(Vec::len), Some(8));
    // Each event is a new state of the goal: committed tasks only ever grow.
    let committed = |v: &Value| {
        v["tasks"].as_array().map_or(0, |t| {
            t.iter().filter(|t| t["status"] == "committed").count()
        })
    };
    let counts: Vec<usize> = events.iter().map(|(_, v)| committed(v)).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert!(
        events.windows(2).all(|w| w[0].1 != w[1].1),
        "no event repeats the last"
    );
    // A settled goal's stream says so at once and ends.
    let again = read_events(&swarm, goal.0, Duration::from_secs(10)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, "settled");
    // Another tenant's or a missing goal: 404 with the JSON error; no token: 401.
    let (status, body) = call(
        &swarm,
        reqwest::Method::GET,
        &format!("/goals/{}/events", uuid::Uuid::new_v4()),
        Some(&operator(&swarm)),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = call(
        &swarm,
        reqwest::Method::GET,
        &format!("/goals/{}/events", goal.0),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    swarm.stop().await;
}

/// Opens a goal's event stream; the response (open until dropped) or the refusal.
async fn open_stream(api: &str, token: &str, goal: GoalId) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{api}/goals/{}/events", goal.0))
        .bearer_auth(token)
        .send()
        .await
        .expect("the API answers")
}

/// A pending goal of a new agent of `tenant` (nothing runs it: its stream stays open).
async fn pending_goal(pool: &sqlx::PgPool, tenant: TenantId) -> GoalId {
    let handle = format!("a{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    chimera_tests::seed::agent_with_goal(pool, tenant, &handle)
        .await
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_caller_holds_at_most_twenty_streams_and_others_are_unaffected() {
    let db = TestDb::migrated().await;
    // The API as deployed: working as its database role.
    let state = chimera_hitl_api::AppState::new(
        db.pool_as(chimera_store::DbRole::Api),
        clients().await,
        unique_stage(),
        test_auth(),
    );
    assert_eq!(state.streams_per_caller, 20);
    let (api, server) = serve_local(chimera_hitl_api::router(state)).await;
    let acme = records::create_tenant(&db.pool, "acme").await.unwrap();
    let other = records::create_tenant(&db.pool, "other").await.unwrap();
    let goal = pending_goal(&db.pool, acme).await;
    let otto = sign_token(acme, "otto", &["operator"]);

    // Twenty at once from one caller: all open.
    let opened = futures::future::join_all((0..20).map(|_| open_stream(&api, &otto, goal))).await;
    assert!(
        opened.iter().all(|r| r.status() == 200),
        "{:?}",
        opened.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
    // The twenty-first: 429 with the JSON error, nothing else changed.
    let refused = open_stream(&api, &otto, goal).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests", "{body}");
    // Another caller of the same tenant, and a caller of another tenant: unaffected.
    let ines = sign_token(acme, "ines", &["operator"]);
    assert_eq!(open_stream(&api, &ines, goal).await.status(), 200);
    let theirs = pending_goal(&db.pool, other).await;
    let olga = sign_token(other, "olga", &["operator"]);
    assert_eq!(open_stream(&api, &olga, theirs).await.status(), 200);
    assert_eq!(
        chimera_store::streams::open(&db.pool, acme, "otto")
            .await
            .unwrap(),
        20
    );

    // A client that goes away gives its stream back: the caller may open one again.
    let mut opened = opened;
    opened.truncate(19);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let again = open_stream(&api, &otto, goal).await;
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(
            Instant::now() < deadline,
            "the closed stream's lease was never given back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(opened);
    server.abort();
    db.drop_db().await;
}
