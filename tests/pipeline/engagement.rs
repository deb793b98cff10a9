//! The engagement loop on the local stack: posts the swarm published are measured through the
//! world's `social.metrics` MCP tool (on Bluesky, the third-party server's `get_posts`) by the
//! collector, recorded as `engagement` rows in the
//! weekly partition of the moment measured (created when missing), once per moment, and the
//! planner's next plan carries the agent's week.

use std::time::Duration;

use chimera_tests::eventually;
use chimera_tests::swarm::{Swarm, SwarmOptions, local_embedder};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// The weekly partition a moment belongs to, as `ensure_asset_event_partitions` names it.
async fn partition_of(swarm: &Swarm, at: DateTime<Utc>) -> String {
    sqlx::query_scalar(r#"select format('asset_events_%s', to_char(date_trunc('week', $1::timestamptz), 'IYYY"w"IW'))"#)
        .bind(at)
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap()
}

/// (partition, views, likes) of each engagement row measured at `at`.
async fn rows_at(swarm: &Swarm, at: DateTime<Utc>) -> Vec<(String, i64, i64)> {
    sqlx::query_as(
        "select tableoid::regclass::text, (payload ->> 'views')::int8, (payload ->> 'likes')::int8
         from asset_events where event_type = 'engagement' and occurred_at = $1
         order by asset_id",
    )
    .bind(at)
    .fetch_all(&swarm.db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn published_posts_are_measured_into_their_weekly_partition_and_the_planner_sees_the_week() {
    let mut swarm = Swarm::new(SwarmOptions {
        embedder: Some(local_embedder()),
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    let goals = [
        swarm
            .submit(
                0,
                "reply",
                "thank the community for the lantern photos",
                json!({"platforms": ["x"], "in_reply_to": "post-lantern", "simulated_quality": 0.95}),
            )
            .await,
        swarm
            .submit(
                0,
                "reply",
                "answer the question about opening hours",
                json!({"platforms": ["bluesky"], "in_reply_to": "post-hours", "simulated_quality": 0.95}),
            )
            .await,
    ];
    assert_eq!(
        swarm.settle(&goals, Duration::from_secs(120)).await,
        ["completed", "completed"]
    );
    // The judge remembers a committed reply after it settles the goal (a memory whose
    // embedding failed is written on the result's redelivery): wait for both.
    eventually(
        Duration::from_secs(90),
        "both replies remembered",
        || async {
            let remembered: i64 =
                sqlx::query_scalar("select count(*) from memories where agent_id = $1")
                    .bind(swarm.agents[0].0)
                    .fetch_one(&swarm.db.pool)
                    .await
                    .unwrap();
            if remembered == 2 {
                Ok(())
            } else {
                Err(format!("{remembered} memories"))
            }
        },
    )
    .await;

    // Simulated time on the platform's side: the posts went out half a day ago.
    sqlx::query("update world.posts set created_at = created_at - interval '12 hours'")
        .execute(&swarm.db.pool)
        .await
        .unwrap();
    // This week's partition is gone: the collector must make it before writing.
    let now = Utc::now();
    let this_week = partition_of(&swarm, now).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("drop table {this_week}")))
        .execute(&swarm.db.pool)
        .await
        .unwrap();

    let first = swarm.collect_engagement(now).await;
    assert_eq!((first.posts, first.measured, first.rows), (2, 2, 2));
    assert!(first.partitions_created >= 1, "{first:?}");
    let measured = rows_at(&swarm, now).await;
    assert_eq!(measured.len(), 2);
    assert!(
        measured.iter().all(|(_, views, _)| *views > 0),
        "{measured:?}"
    );
    assert!(
        measured.iter().all(|(part, _, _)| *part == this_week),
        "{measured:?}"
    );

    // The same moment again records nothing.
    let again = swarm.collect_engagement(now).await;
    assert_eq!((again.measured, again.rows), (2, 0));

    // Simulated time passes: two days on, every post has at least as much, in that moment's
    // partition (another week's, when the two days cross a Monday).
    let later = now + chrono::Duration::days(2);
    let grown = swarm.collect_engagement(later).await;
    assert_eq!(grown.rows, 2);
    let after = rows_at(&swarm, later).await;
    let later_week = partition_of(&swarm, later).await;
    assert!(
        after.iter().all(|(part, _, _)| *part == later_week),
        "{after:?}"
    );
    for ((_, views, likes), (_, views_after, likes_after)) in measured.iter().zip(&after) {
        assert!(
            views_after >= views && likes_after >= likes,
            "{measured:?} then {after:?}"
        );
    }
    let total: i64 = after.iter().map(|(_, v, _)| v).sum();
    assert!(total > 0, "two days after, nobody saw anything: {after:?}");

    // The next plan carries the agent's week as of now: the first measurement (the later one
    // is in the future), the most liked post first.
    let next = swarm
        .submit(
            0,
            "reply",
            "say good morning",
            json!({"platforms": ["x"], "in_reply_to": "post-morning", "simulated_quality": 0.95}),
        )
        .await;
    swarm.settle(&[next], Duration::from_secs(120)).await;
    let meta: Value = sqlx::query_scalar("select plan_meta from goals where id = $1")
        .bind(next.0)
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap();
    let week = &meta["week"];
    assert_eq!(week["posts"], json!(2), "{meta}");
    assert_eq!(
        week["likes"],
        json!(measured.iter().map(|(_, _, l)| l).sum::<i64>()),
        "{meta}"
    );
    assert_eq!(
        week["views"],
        json!(measured.iter().map(|(_, v, _)| v).sum::<i64>()),
        "{meta}"
    );
    let best = week["best"].as_array().unwrap();
    assert_eq!(best.len(), 2);
    assert!(
        best[0]["likes"].as_i64() >= best[1]["likes"].as_i64(),
        "{week}"
    );
    assert!(!best[0]["text"].as_str().unwrap().is_empty());
    // The memories it recalled carry how their posts landed (the latest measurement, the
    // later one included: a memory's engagement is whatever was last measured).
    let memories = meta["memories"].as_array().unwrap();
    assert_eq!(memories.len(), 2, "{meta}");
    let mut likes: Vec<i64> = memories
        .iter()
        .map(|m| m["likes"].as_i64().unwrap())
        .collect();
    let mut latest: Vec<i64> = after.iter().map(|(_, _, l)| *l).collect();
    likes.sort();
    latest.sort();
    assert_eq!(likes, latest, "{meta}");
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_bluesky_likes_and_reposts_of_other_accounts_come_back_as_engagement() {
    use chimera_worker::accounts::{Reader, StrongRef};
    let mut swarm = Swarm::new(SwarmOptions {
        bluesky: true,
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    let pds = chimera_tests::stack_env("CHIMERA_BSKY_PDS_URL");
    let http = reqwest::Client::new();
    let handle = |name: &str| {
        format!(
            "{name}{}.test",
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        )
    };
    let reader = Reader::create(&http, &pds, &handle("reader"))
        .await
        .unwrap();
    let question = reader
        .post("Are the lantern workshops open on Sundays?")
        .await
        .unwrap();
    let goal = swarm
        .submit(
            0,
            "reply",
            "answer the question about opening hours",
            json!({"platforms": ["bluesky"], "in_reply_to": question.uri, "simulated_quality": 0.95}),
        )
        .await;
    assert_eq!(
        swarm.settle(&[goal], Duration::from_secs(120)).await,
        ["completed"]
    );
    // The agent's reply is a record of its own account, answering the reader's post.
    let (uri, receipt): (String, Value) = sqlx::query_as(
        "select platform_ref, receipt from effects where state = 'confirmed' and platform = 'bluesky'",
    )
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    assert!(
        uri.starts_with(&format!("at://{}/", swarm.accounts[0].did)),
        "{uri}"
    );
    // A figure for docs/bench.md: from the goal's submission to the record, and the effect.
    let (through, effect): (f64, f64) = sqlx::query_as(
        "select extract(epoch from f.settled_at - g.created_at)::float8,
                extract(epoch from f.settled_at - f.intended_at)::float8
         from effects f join tasks t on t.approval_id = f.approval_id join goals g on g.id = t.goal_id",
    )
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    eprintln!("[bluesky] goal to record {through:.2} s, of which the effect {effect:.2} s");
    let reply = StrongRef {
        uri: uri.clone(),
        cid: receipt["cid"].as_str().unwrap().to_owned(),
    };
    // Other accounts engage with it, on the network only: two likes and a repost.
    let other = Reader::create(&http, &pds, &handle("other")).await.unwrap();
    reader.like(&reply).await.unwrap();
    other.like(&reply).await.unwrap();
    other.repost(&reply).await.unwrap();

    // The collector reads them back through the Bluesky server (`get_posts`), once the AppView
    // has indexed them.
    let now = Utc::now();
    let mut at = now;
    eventually(
        Duration::from_secs(30),
        "the likes and the repost measured",
        || {
            at += chrono::Duration::milliseconds(1);
            let at = at;
            let swarm = &swarm;
            async move {
                let collected = swarm.collect_engagement(at).await;
                let rows: Vec<(Value,)> = sqlx::query_as(
                    "select payload from asset_events where event_type = 'engagement' and occurred_at = $1",
                )
                .bind(at)
                .fetch_all(&swarm.db.pool)
                .await
                .unwrap();
                match rows.as_slice() {
                    [(payload,)] if payload["likes"] == 2 && payload["shares"] == 1 => Ok(()),
                    _ => Err(format!("{collected:?}: {rows:?}")),
                }
            }
        },
    )
    .await;
    let measured: Value = sqlx::query_scalar(
        "select payload from asset_events where event_type = 'engagement' order by occurred_at desc limit 1",
    )
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    assert_eq!(measured["post_id"], json!(uri));
    assert_eq!(measured["views"], json!(0), "Bluesky counts no views");
    swarm.stop().await;
}
