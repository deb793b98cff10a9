//! Contention and quotas through the whole swarm on the local stack: state keys as fine as the
//! state (held replies to different posts never invalidate each other, two drafts of one thread
//! do), platform quotas reserved at approval (over quota: deferred, not failed), conflicts that
//! back off instead of burning attempts on a hot key, and bulk approval's dry run predicting
//! the real run.

use std::time::{Duration, Instant};

use chimera_core::domain::GoalId;
use chimera_core::routing::Policy;
use chimera_tests::eventually;
use chimera_tests::hot;
use chimera_tests::swarm::{Swarm, SwarmOptions};
use chrono::{DateTime, DurationRound, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::hitl::{approve, call, effect_of, held_reply, operator, pending_of, posts_of, reviewer};

const SETTLE: Duration = Duration::from_secs(90);

/// A policy allowing `replies` replies an hour on x.
fn x_replies_per_hour(replies: u32) -> Policy {
    hot::policy(replies, Policy::default().max_attempts)
}

/// Approves `item` (a queue entry): the answer's status and body.
async fn scalar(swarm: &Swarm, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap()
}

/// Held replies of agent 0 to `posts`, each with its pending review.
async fn held_replies(swarm: &Swarm, posts: &[&str]) -> Vec<(GoalId, Value)> {
    let mut goals = Vec::new();
    for (i, post) in posts.iter().enumerate() {
        goals.push(held_reply(swarm, 0, &format!("thanks, reply {i}"), post).await);
    }
    swarm.settle(&goals, SETTLE).await;
    let mut held = Vec::new();
    for goal in goals {
        held.push((goal, pending_of(swarm, goal).await));
    }
    held
}

fn deferred(body: &Value) -> Option<DateTime<Utc>> {
    body["deferred_until"].as_str().map(|t| t.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_replies_to_different_posts_of_one_agent_approve_one_after_another_without_conflict() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let held = held_replies(&swarm, &["post-d1", "post-d2", "post-d3", "post-d4"]).await;
    for (_, item) in &held {
        let (status, body) = approve(&swarm, item).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            deferred(&body).is_none(),
            "within the default quota: {body}"
        );
    }
    for (_, item) in &held {
        let id = item["id"].as_str().unwrap();
        assert_eq!(effect_of(&swarm, id).await.len(), 1);
    }
    let goals: Vec<GoalId> = held.iter().map(|(g, _)| *g).collect();
    assert_eq!(swarm.settle(&goals, SETTLE).await, ["completed"; 4]);
    assert_eq!(
        scalar(
            &swarm,
            "select count(*) from audit_log where action in ('review.conflict', 'judge.conflict')"
        )
        .await,
        0
    );
    // Each reply went out once, in its own thread.
    assert_eq!(
        scalar(
            &swarm,
            "select count(distinct in_reply_to) from world.posts where kind = 'reply'"
        )
        .await,
        4
    );
    assert_eq!(scalar(&swarm, "select count(*) from world.posts").await, 4);
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_drafts_of_one_thread_conflict_and_the_second_is_replanned_without_using_an_attempt() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let held = held_replies(&swarm, &["post-t1", "post-t1"]).await;
    let (status, body) = approve(&swarm, &held[0].1).await;
    assert_eq!(status, 200, "{body}");
    // The second read the thread before the first was committed: the intended conflict.
    let (status, body) = approve(&swarm, &held[1].1).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("thread:x:post-t1")),
        "{body}"
    );
    // Replanned (after its backoff) with the thread as it is now, drafted and held again.
    let second = held[1].0;
    let again = eventually(SETTLE, "the replanned reply held again", || async {
        let (_, page) = call(
            &swarm,
            Method::GET,
            &format!("/reviews?goal={}", second.0),
            Some(&operator(&swarm)),
            None,
        )
        .await;
        match page["items"][0]["id"].as_str() {
            Some(id) if id != held[1].1["id"].as_str().unwrap() => Ok(page["items"][0].clone()),
            _ => Err(page.to_string()),
        }
    })
    .await;
    let view = swarm.view(second).await;
    let reply = &view["tasks"][0];
    assert_eq!(
        (
            &reply["attempt"],
            &reply["conflicts"],
            &reply["max_attempts"]
        ),
        (&json!(2), &json!(1), &json!(3)),
        "the conflict is counted, not charged to the policy's attempts: {view}"
    );
    let (status, body) = approve(&swarm, &again).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        effect_of(&swarm, again["id"].as_str().unwrap()).await.len(),
        1
    );
    assert!(
        posts_of(&swarm, held[1].1["id"].as_str().unwrap())
            .await
            .is_empty()
    );
    assert_eq!(
        swarm.settle(&[held[0].0, second], SETTLE).await,
        ["completed", "completed"]
    );
    assert_eq!(
        scalar(
            &swarm,
            "select version from agent_state where key = 'thread:x:post-t1'"
        )
        .await,
        2
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_its_quota_an_approved_reply_waits_for_the_next_window_and_a_cancelled_one_gives_its_place_back()
 {
    let mut swarm = Swarm::new(SwarmOptions {
        policy: x_replies_per_hour(3),
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    let held = held_replies(
        &swarm,
        &["post-q1", "post-q2", "post-q3", "post-q4", "post-q5"],
    )
    .await;
    let next_hour = Utc::now()
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap()
        + chrono::Duration::hours(1);
    let mut answers = Vec::new();
    for (_, item) in &held {
        let (status, body) = approve(&swarm, item).await;
        assert_eq!(status, 200, "approved, not failed: {body}");
        answers.push(deferred(&body));
    }
    assert_eq!(
        answers,
        [None, None, None, Some(next_hour), Some(next_hour)],
        "three go now, two wait for the next hour"
    );
    for (_, item) in &held[..3] {
        assert_eq!(
            effect_of(&swarm, item["id"].as_str().unwrap()).await.len(),
            1
        );
    }
    // The card and the goal say when the other two go; nothing of theirs was published.
    for (goal, item) in &held[3..] {
        let id = item["id"].as_str().unwrap();
        let (_, card) = call(
            &swarm,
            Method::GET,
            &format!("/reviews/{id}"),
            Some(&reviewer(&swarm)),
            None,
        )
        .await;
        assert_eq!(deferred(&card), Some(next_hour), "{card}");
        let view = swarm.view(*goal).await;
        let execute = view["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["kind"] == "execute")
            .cloned()
            .unwrap_or_else(|| panic!("an execute task: {view}"));
        assert_eq!(
            (execute["status"].as_str(), deferred(&execute)),
            (Some("queued"), Some(next_hour)),
            "{view}"
        );
        assert_ne!(view["status"], "completed", "{view}");
        assert!(posts_of(&swarm, id).await.is_empty());
    }
    assert_eq!(scalar(&swarm, "select count(*) from world.posts").await, 3);
    let used = |window: DateTime<Utc>| {
        let pool = swarm.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>(
                "select used from quota_windows where platform = 'x' and kind = 'reply' and window_start = $1",
            )
            .bind(window)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let this_hour = next_hour - chrono::Duration::hours(1);
    assert_eq!((used(this_hour).await, used(next_hour).await), (3, 2));
    // Cancelling a goal whose reply waits revokes the effect: its place goes back.
    let (status, body) = call(
        &swarm,
        Method::POST,
        &format!("/goals/{}/cancel", held[4].0.0),
        Some(&operator(&swarm)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(used(next_hour).await, 1);
    assert_eq!(
        scalar(
            &swarm,
            "select count(*) from quota_reservations where released_at is not null"
        )
        .await,
        1
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_approvals_dry_run_predicts_the_real_run_with_a_conflicting_pair_and_an_over_quota_item()
 {
    let mut swarm = Swarm::new(SwarmOptions {
        agents: 2,
        policy: x_replies_per_hour(2),
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    // Agent 0: two replies in one thread (a conflicting pair), two more in their own threads
    // (the last over the quota of two an hour); agent 1: one of its own.
    let mut goals = Vec::new();
    for (agent, post) in [
        (0, "post-b1"),
        (0, "post-b2"),
        (0, "post-b1"),
        (0, "post-b3"),
        (1, "post-b9"),
    ] {
        goals.push(
            held_reply(
                &swarm,
                agent,
                &format!("thanks on {post}, {}", goals.len()),
                post,
            )
            .await,
        );
    }
    swarm.settle(&goals, SETTLE).await;
    let mut items = Vec::new();
    for goal in &goals {
        let item = pending_of(&swarm, *goal).await;
        items.push(
            json!({"id": item["id"], "artifact_hash": item["artifact_hash"],
                          "policy_version": item["policy_version"]}),
        );
    }
    let bulk = |dry_run: bool| {
        let items = items.clone();
        let swarm = &swarm;
        async move {
            let (status, body) = call(
                swarm,
                Method::POST,
                "/reviews/bulk-approve",
                Some(&reviewer(swarm)),
                Some(json!({"dry_run": dry_run, "items": items})),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let outcomes = |body: &Value| -> Vec<(String, Option<DateTime<Utc>>)> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let result = i["result"].as_str().unwrap();
                (result.replace("would_approve", "approved"), deferred(i))
            })
            .collect()
    };
    let started = Instant::now();
    let dry = bulk(true).await;
    let real = bulk(false).await;
    let next_hour = Utc::now()
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap()
        + chrono::Duration::hours(1);
    let expected: Vec<(String, Option<DateTime<Utc>>)> = vec![
        ("approved".into(), None),
        ("approved".into(), None),
        ("conflict".into(), None),
        ("approved".into(), Some(next_hour)),
        ("approved".into(), None),
    ];
    assert_eq!(outcomes(&dry), expected, "dry run: {dry}");
    assert_eq!(outcomes(&real), expected, "real run: {real}");
    assert_eq!(
        (&dry["summary"]["deferred"], &dry["summary"]["conflict"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(dry["summary"]["would_approve"], real["summary"]["approved"]);
    assert_eq!(dry["summary"]["effects"], real["summary"]["effects"]);
    // The real run did it: three published now, the deferred one waits, the conflicting one
    // is replanned.
    for i in [0, 1, 4] {
        let id = items[i]["id"].as_str().unwrap();
        assert_eq!(effect_of(&swarm, id).await.len(), 1);
    }
    assert!(started.elapsed() < SETTLE);
    assert!(
        posts_of(&swarm, items[3]["id"].as_str().unwrap())
            .await
            .is_empty()
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_replies_in_one_thread_all_settle_with_three_attempts_each() {
    let replies = chimera_tests::bench_setting("HOT_KEY_REPLIES", 200);
    let mut swarm = Swarm::new(SwarmOptions {
        policy: hot::policy(1000, 3),
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    let run = hot::replies_in_one_thread(&swarm, replies, "post-hot").await;
    assert!(
        run.statuses.iter().all(|s| s == "completed"),
        "every reply settles: {:?}",
        run.statuses
            .iter()
            .filter(|s| *s != "completed")
            .collect::<Vec<_>>()
    );
    println!("{run}");
    assert_eq!(
        scalar(
            &swarm,
            "select count(*) from world.posts where in_reply_to = 'post-hot'"
        )
        .await,
        replies as i64
    );
    assert_eq!(
        scalar(
            &swarm,
            "select count(*) from tasks where kind = 'reply' and attempt - conflicts > 1"
        )
        .await,
        0,
        "no conflict used up one of the policy's attempts"
    );
    assert_eq!(
        scalar(
            &swarm,
            "select version from agent_state where key = 'thread:x:post-hot'"
        )
        .await,
        replies as i64
    );
    swarm.stop().await;
}
