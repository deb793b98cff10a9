use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chimera_aws::bootstrap::{BootstrapOptions, bootstrap};
use chimera_aws::queues::Queues;
use chimera_aws::relay::Relay;
use chimera_core::domain::GoalId;
use chimera_core::names::Queue;
use chimera_store::outbox::{self, Message};
use chimera_tests::seed::seed_agent;
use chimera_tests::{TestDb, clients, drain, unique_stage};
use tokio::sync::Barrier;

fn message(goal: GoalId, i: usize) -> Message {
    Message {
        queue: Queue::Goal,
        body: format!(r#"{{"schema_version": 1, "message": {{"n": {i}}}}}"#),
        dedup_key: format!("test:{i}"),
        goal,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_relays_send_each_committed_message_once() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let names = unique_stage();
    let c = clients().await;
    bootstrap(
        &c,
        &names,
        BootstrapOptions {
            max_receive_count: 3,
        },
    )
    .await
    .unwrap();
    const N: usize = 300;
    let mut tx = db.pool.begin().await.unwrap();
    for i in 0..N {
        assert!(
            outbox::enqueue(&mut tx, &message(seed.goal, i))
                .await
                .unwrap()
        );
        // The same message again adds nothing.
        assert!(
            !outbox::enqueue(&mut tx, &message(seed.goal, i))
                .await
                .unwrap()
        );
    }
    // A message whose transaction rolls back is never sent.
    let mut lost = db.pool.begin().await.unwrap();
    outbox::enqueue(&mut lost, &message(seed.goal, N))
        .await
        .unwrap();
    lost.rollback().await.unwrap();
    tx.commit().await.unwrap();

    // Committed rows: these and the seeded goal's own message.
    let base: i64 = sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let total = base as usize;
    let barrier = Arc::new(Barrier::new(6));
    let relays: Vec<_> = (0..6)
        .map(|i| {
            let relay = Relay::new(db.pool.clone(), Queues::new(c.clone(), names.clone()));
            let (barrier, goal) = (barrier.clone(), seed.goal);
            tokio::spawn(async move {
                barrier.wait().await;
                if i % 2 == 0 {
                    relay.flush(&[goal]).await
                } else {
                    relay.drain(chrono::Utc::now()).await.unwrap()
                }
            })
        })
        .collect();
    let mut sent = 0;
    for relay in relays {
        sent += relay.await.unwrap();
    }
    assert_eq!(sent, total, "each row sent by one relay");
    let mut bodies = drain(&names, Queue::Goal, total, Duration::from_secs(60)).await;
    bodies.extend(drain(&names, Queue::Goal, 1, Duration::from_secs(2)).await);
    assert_eq!(
        bodies.len(),
        total,
        "every committed message arrived once, the rolled back one never"
    );
    assert_eq!(bodies.iter().collect::<HashSet<_>>().len(), total);
    let unsent: i64 = sqlx::query_scalar("select count(*) from outbox where sent_at is null")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(unsent, 0);

    // Re-arming a sent message sends it again, with the same identity.
    let mut conn = db.pool.acquire().await.unwrap();
    outbox::rearm(&mut conn, &message(seed.goal, 7))
        .await
        .unwrap();
    drop(conn);
    let relay = Relay::new(db.pool.clone(), Queues::new(c.clone(), names.clone()));
    assert_eq!(relay.flush(&[seed.goal]).await, 1);
    let again = drain(&names, Queue::Goal, 1, Duration::from_secs(30)).await;
    assert_eq!(again, vec![message(seed.goal, 7).body]);
    db.drop_db().await;
}
