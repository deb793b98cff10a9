//! Recurring goals against the real PostgreSQL: each occurrence of a schedule an agent's
//! policy declares submits one goal (with its message in the outbox), however often the
//! scheduler runs; ticks missed while it was not running are submitted once at the next run;
//! a paused agent gets none.

use chimera_core::goal::Constraints;
use chimera_core::routing::Policy;
use chimera_core::schedule::Schedule;
use chimera_store::{records, schedules};
use chimera_tests::TestDb;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Europe::Paris;

/// A moment on Paris's clock, in December 2026 (winter time, UTC+1).
fn paris(day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
    Paris
        .with_ymd_and_hms(2026, 12, day, hour, minute, second)
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn each_occurrence_submits_one_goal_however_often_the_scheduler_runs() {
    let db = TestDb::migrated().await;
    let tenant = records::create_tenant(&db.pool, "acme").await.unwrap();
    let policy = Policy {
        schedules: vec![Schedule {
            name: "morning-post".into(),
            cron: "0 9 * * MON-FRI".into(),
            timezone: "Europe/Paris".into(),
            kind: "campaign".into(),
            text: "good morning from the lantern shop".into(),
            constraints: Constraints {
                platforms: vec!["instagram".into()],
                ..Constraints::default()
            },
        }],
        ..Policy::default()
    };
    let agent = records::create_agent(
        &db.pool,
        tenant,
        "nova",
        &serde_json::json!({"voice": "warm"}),
        &policy,
    )
    .await
    .unwrap();
    // The schedule was declared on Monday 7 December, 08:00 in Paris.
    sqlx::query("update policies set created_at = $1 where agent_id = $2")
        .bind(paris(7, 8, 0, 0))
        .bind(agent.0)
        .execute(&db.pool)
        .await
        .unwrap();
    let goals = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (String, String, serde_json::Value, String)>(
            "select kind, body, constraints, idempotency_key from goals order by idempotency_key",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };

    // Three ticks, three goals; each tick run twice, and the second run submits nothing.
    for day in [7, 8, 9] {
        let tick = paris(day, 9, 0, 30);
        let run = schedules::run(&db.pool, tick).await.unwrap();
        assert_eq!(run.submitted.len(), 1, "{day}: {run:?}");
        let again = schedules::run(&db.pool, tick).await.unwrap();
        assert!(again.submitted.is_empty(), "{day}: {again:?}");
    }
    let submitted = goals(db.pool.clone()).await;
    assert_eq!(submitted.len(), 3);
    for (kind, body, constraints, _) in &submitted {
        assert_eq!(
            (kind.as_str(), body.as_str()),
            ("campaign", "good morning from the lantern shop")
        );
        assert_eq!(constraints["platforms"], serde_json::json!(["instagram"]));
    }
    assert_eq!(
        submitted[0].3,
        format!("schedule:{}:morning-post:2026-12-07T08:00Z", agent.0)
    );
    // Each goal's message is in the outbox, written with it.
    let messages: i64 = sqlx::query_scalar("select count(*) from outbox where queue = 'goal'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(messages, 3);

    // A run that lost its record of the last tick (it died between the goal and the tick row)
    // meets the goal's key: nothing twice.
    sqlx::query("delete from schedule_ticks")
        .execute(&db.pool)
        .await
        .unwrap();
    let redo = schedules::run(&db.pool, paris(9, 9, 0, 30)).await.unwrap();
    assert!(redo.submitted.is_empty(), "{redo:?}");
    assert_eq!(redo.already, 3);

    // Not running on Thursday: Friday's run submits Thursday's missed tick and Friday's, once.
    let friday = schedules::run(&db.pool, paris(11, 10, 0, 0)).await.unwrap();
    assert_eq!(friday.submitted.len(), 2, "{friday:?}");
    assert!(
        schedules::run(&db.pool, paris(11, 10, 0, 0))
            .await
            .unwrap()
            .submitted
            .is_empty()
    );
    // The weekend has no occurrence.
    assert!(
        schedules::run(&db.pool, paris(13, 23, 0, 0))
            .await
            .unwrap()
            .submitted
            .is_empty()
    );

    // On Sunday noon the schedule becomes daily: it starts after that policy, so Monday's
    // run submits Monday's occurrence only, not the weekend's under the old bookmark.
    sqlx::query(
        "update policies set created_at = $1,
                document = jsonb_set(document, '{schedules,0,cron}', '\"0 9 * * *\"')
         where agent_id = $2",
    )
    .bind(paris(13, 12, 0, 0))
    .bind(agent.0)
    .execute(&db.pool)
    .await
    .unwrap();
    let monday = schedules::run(&db.pool, paris(14, 9, 30, 0)).await.unwrap();
    assert_eq!(monday.submitted.len(), 1, "{monday:?}");
    let keys: Vec<String> = goals(db.pool.clone())
        .await
        .into_iter()
        .map(|g| g.3)
        .collect();
    assert!(
        keys.last()
            .unwrap()
            .ends_with("morning-post:2026-12-14T08:00Z"),
        "{keys:?}"
    );

    // A paused agent's schedules wait.
    sqlx::query("update agents set status = 'paused' where id = $1")
        .bind(agent.0)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(
        schedules::run(&db.pool, paris(15, 9, 30, 0))
            .await
            .unwrap()
            .submitted
            .is_empty()
    );
    assert_eq!(goals(db.pool.clone()).await.len(), 6);
    db.drop_db().await;
}
