//! The fleet view's API (`GET /fleet`): every agent with what it is doing, those needing a
//! person first.

use std::time::Duration;

use chimera_tests::eventually;
use chimera_tests::swarm::{Swarm, SwarmOptions};
use reqwest::Method;
use serde_json::{Value, json};

use crate::hitl::{call, held_reply, operator};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_lists_every_agent_with_its_work_and_puts_the_one_needing_attention_first() {
    let mut swarm = Swarm::new(SwarmOptions {
        agents: 2,
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    // agent1 replies on x (published at once); agent0's reply waits for a person.
    let published = swarm
        .submit(
            1,
            "reply",
            "thanks for the kind words",
            json!({"platforms": ["x"], "in_reply_to": "post-f1", "simulated_quality": 0.95}),
        )
        .await;
    let held = held_reply(&swarm, 0, "thanks for asking", "post-f0").await;
    assert_eq!(
        swarm
            .settle(&[published, held], Duration::from_secs(90))
            .await,
        ["completed", "awaiting_review"]
    );
    let token = operator(&swarm);
    let fleet = eventually(Duration::from_secs(30), "the fleet view", || async {
        let (status, body) = call(&swarm, Method::GET, "/fleet", Some(&token), None).await;
        if status == 200 && body["items"].as_array().is_some_and(|i| i.len() == 2) {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    let items = fleet["items"].as_array().unwrap();
    // The agent with a held item comes first, and says why.
    assert_eq!(items[0]["handle"], "agent0", "{fleet}");
    assert_eq!(items[0]["attention"], json!(["held"]));
    assert_eq!(
        (&items[0]["held"], &items[0]["goals_in_flight"]),
        (&json!(1), &json!(1))
    );
    let other = &items[1];
    assert_eq!(other["handle"], "agent1");
    assert_eq!(other["attention"], json!([]));
    assert_eq!(other["goals_in_flight"], 0);
    // What it published, and the quota it used for it.
    let posts: &Vec<Value> = other["last_posts"].as_array().unwrap();
    assert_eq!(posts.len(), 1, "{other}");
    assert_eq!(posts[0]["action"], "social.reply");
    assert_eq!(posts[0]["platform"], "x");
    assert!(posts[0]["text"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        other["quota_use"],
        json!([{"platform": "x", "kind": "reply", "used": 1, "limit": 8,
                "window_start": other["quota_use"][0]["window_start"]}])
    );
    assert_eq!(other["balance_cents"], 10_000);
    // Filtered by name; a bad page is the caller's mistake.
    let (status, body) = call(
        &swarm,
        Method::GET,
        "/fleet?search=agent1",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
    let (status, body) = call(&swarm, Method::GET, "/fleet?limit=0", Some(&token), None).await;
    assert_eq!(status, 400, "{body}");
    // Other orders are the database's, over the whole fleet: a page of one is a page of all.
    let handles = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["handle"].as_str().unwrap().to_owned())
            .collect()
    };
    for (sort, first) in [
        ("name", "agent0"),
        ("held", "agent0"),
        ("goals_in_flight", "agent0"),
        ("attention", "agent0"),
    ] {
        let (status, body) = call(
            &swarm,
            Method::GET,
            &format!("/fleet?sort={sort}&limit=1"),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(handles(&body), [first], "sort={sort}");
    }
    let (_, page2) = call(
        &swarm,
        Method::GET,
        "/fleet?sort=name&limit=1&offset=1",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(handles(&page2), ["agent1"]);
    let (status, body) = call(&swarm, Method::GET, "/fleet?sort=age", Some(&token), None).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = call(&swarm, Method::GET, "/fleet", None, None).await;
    assert_eq!(status, 401);
    swarm.stop().await;
}
