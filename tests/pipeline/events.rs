//! A goal's server-sent events (`GET /goals/{id}/events`) over HTTP from the runner's API: the
//! goal at once, again as its tasks move, and `settled` when it is done.

use std::time::{Duration, Instant};

use chimera_tests::swarm::{Swarm, SwarmOptions};
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
