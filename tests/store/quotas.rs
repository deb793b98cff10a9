use std::collections::BTreeMap;

use chimera_core::domain::{ReviewId, Task};
use chimera_store::quotas::{self, Counted, window_start};
use chimera_tests::TestDb;
use chimera_tests::seed::{Seeded, execute_task, seed_agent};
use chrono::{DateTime, Utc};
use serde_json::json;

/// An approved effect of `action` on Bluesky for the seeded agent (not stored yet).
fn execute(seed: &Seeded, action: &str) -> Task {
    let mut inputs = serde_json::Map::new();
    inputs.insert("action".into(), json!(action));
    inputs.insert(
        "arguments".into(),
        json!({"platform": "bluesky", "text": "hello", "in_reply_to": "at://x/app.bsky.feed.post/1"}),
    );
    execute_task(seed, ReviewId::random(), inputs)
}

async fn used(db: &TestDb, kind: Counted, start: DateTime<Utc>) -> i32 {
    sqlx::query_scalar(
        "select coalesce((select used from quota_windows
                          where platform = 'bluesky' and kind = $1 and window_start = $2), 0)",
    )
    .bind(kind.as_str())
    .bind(start)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn preload(db: &TestDb, seed: &Seeded, kind: Counted, start: DateTime<Utc>, used: i32) {
    sqlx::query(
        "insert into quota_windows (agent_id, platform, kind, window_start, used)
         values ($1, 'bluesky', $2, $3, $4)",
    )
    .bind(seed.agent.0)
    .bind(kind.as_str())
    .bind(start)
    .bind(used)
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn on_bluesky_posts_and_replies_share_the_pds_write_points() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let policy = BTreeMap::new();
    let now = Utc::now();
    let hour = window_start(Counted::PointsHour, now);
    // 1,665 records created this hour: 4,995 of the PDS's 5,000 points.
    preload(&db, &seed, Counted::PointsHour, hour, 4_995).await;

    let post = quotas::limits_of(&execute(&seed, "social.publish"), &policy);
    let kinds: Vec<(Counted, u32, u32)> = post
        .iter()
        .map(|l| (l.counted, l.per_window, l.units))
        .collect();
    assert_eq!(
        kinds,
        [
            (Counted::Post, 11_666, 1),
            (Counted::PointsHour, 5_000, 3),
            (Counted::PointsDay, 35_000, 3)
        ]
    );
    let mut tx = db.pool.begin().await.unwrap();
    // A post still fits (4,998 points); a reply after it does not, and waits for the next hour.
    let first = quotas::reserve(&mut tx, seed.agent, &post, now)
        .await
        .unwrap();
    assert_eq!(first, now);
    let reply = quotas::limits_of(&execute(&seed, "social.reply"), &policy);
    let second = quotas::reserve(&mut tx, seed.agent, &reply, now)
        .await
        .unwrap();
    let next_hour = hour + chrono::Duration::hours(1);
    assert_eq!(second, next_hour);
    tx.commit().await.unwrap();
    assert_eq!(used(&db, Counted::PointsHour, hour).await, 4_998);
    assert_eq!(used(&db, Counted::PointsHour, next_hour).await, 3);
    let today = window_start(Counted::PointsDay, now);
    let day_of_reply = window_start(Counted::PointsDay, next_hour);
    if day_of_reply == today {
        assert_eq!(used(&db, Counted::PointsDay, today).await, 6);
    } else {
        assert_eq!(used(&db, Counted::PointsDay, today).await, 3);
        assert_eq!(used(&db, Counted::PointsDay, day_of_reply).await, 3);
    }
    assert_eq!(
        used(&db, Counted::Reply, window_start(Counted::Reply, next_hour)).await,
        1,
        "the reply's own quota counts it in the hour it goes"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_full_day_of_points_waits_for_the_next_day_and_a_failed_effect_gives_its_points_back() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let policy = BTreeMap::new();
    let now = Utc::now();
    let today = window_start(Counted::PointsDay, now);
    // 11,666 records today: 34,998 of 35,000 points; the hour has room.
    preload(&db, &seed, Counted::PointsDay, today, 34_998).await;
    let effect = execute(&seed, "social.publish");
    let mut tx = db.pool.begin().await.unwrap();
    let waits = quotas::schedule_effect(&mut tx, &effect, &policy)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tomorrow = today + chrono::Duration::days(1);
    assert_eq!(waits, Some(tomorrow));
    assert_eq!(used(&db, Counted::PointsDay, tomorrow).await, 3);
    assert_eq!(used(&db, Counted::PointsHour, tomorrow).await, 3);
    let reservations: i64 =
        sqlx::query_scalar("select count(*) from quota_reservations where task_id = $1")
            .bind(effect.id.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(reservations, 3, "its kind's window and both points windows");
    // The effect fails for good: every window gets its units back.
    sqlx::query("update tasks set status = 'failed' where id = $1")
        .bind(effect.id.0)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(used(&db, Counted::PointsDay, tomorrow).await, 0);
    assert_eq!(used(&db, Counted::PointsHour, tomorrow).await, 0);
    assert_eq!(used(&db, Counted::Post, tomorrow).await, 0);
    db.drop_db().await;
}
