//! The console's read cache (`chimera_hitl_api::cache`) against the local PostgreSQL: a kept
//! answer is served until what it shows changes in any process (a review: its card and its
//! tenant's lists; an agent: everything of its tenant), or the listener's connection is lost. The cache here keeps answers for an hour, so only a notification (or a
//! lost connection) can make it read again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chimera_core::domain::{AgentId, TenantId};
use chimera_hitl_api::ApiError;
use chimera_hitl_api::cache::{ReadCache, Shows};
use chimera_tests::seed::held;
use chimera_tests::{TestDb, eventually};

/// What the test reads: a list, or one review's card.
#[derive(Clone, Copy)]
struct Answer {
    tenant: TenantId,
    shows: Shows,
}

impl Answer {
    fn uri(&self) -> String {
        match self.shows {
            Shows::List => "/fleet".into(),
            Shows::Review(id) => format!("/reviews/{id}"),
        }
    }
}

/// Reads `answer` through `cache`; the answer is how many times the database was read for it.
async fn read(cache: &ReadCache, answer: Answer, loads: &AtomicUsize) -> usize {
    let response = cache
        .json(answer.tenant, answer.shows, &answer.uri(), || async {
            Ok::<_, ApiError>(loads.fetch_add(1, Ordering::SeqCst) + 1)
        })
        .await
        .expect("a read");
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Reads until the answer is a new read of the database, not `kept`.
async fn read_again(
    cache: &ReadCache,
    answer: Answer,
    loads: &AtomicUsize,
    kept: usize,
    why: &str,
) -> usize {
    eventually(Duration::from_secs(10), why, || async {
        let now = read(cache, answer, loads).await;
        if now > kept {
            Ok(now)
        } else {
            Err(format!("still the answer of read {now}"))
        }
    })
    .await
}

/// Waits until the cache listens, then reads each answer once more: those answers are kept.
async fn kept(cache: &ReadCache, answers: &[(Answer, &AtomicUsize)]) -> Vec<usize> {
    eventually(Duration::from_secs(10), "the cache listening", || async {
        if cache.is_listening() {
            Ok(())
        } else {
            Err("not listening yet".to_owned())
        }
    })
    .await;
    let mut kept = Vec::new();
    for &(answer, loads) in answers {
        let first = read(cache, answer, loads).await;
        assert_eq!(
            read(cache, answer, loads).await,
            first,
            "the answer is kept"
        );
        kept.push(first);
    }
    kept
}

/// Another connection sets the agent's status (a write the trigger notifies).
async fn set_status(db: &TestDb, agent: AgentId, status: &str) {
    sqlx::query("update agents set status = $2::text::agent_status where id = $1")
        .bind(agent.0)
        .bind(status)
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_answer_is_read_again_when_what_it_shows_changes_or_the_listener_is_lost() {
    let db = TestDb::migrated().await;
    let (seed, _, review) = held(&db.pool).await;
    let cache = ReadCache::new(db.pool.clone(), Duration::from_secs(3600));
    let list = Answer {
        tenant: seed.tenant,
        shows: Shows::List,
    };
    let card = Answer {
        tenant: seed.tenant,
        shows: Shows::Review(review.0),
    };
    let other_card = Answer {
        tenant: seed.tenant,
        shows: Shows::Review(uuid::Uuid::new_v4()),
    };
    let foreign_list = Answer {
        tenant: TenantId(uuid::Uuid::new_v4()),
        shows: Shows::List,
    };
    let counts: [AtomicUsize; 4] = Default::default();
    let all = [
        (list, &counts[0]),
        (card, &counts[1]),
        (other_card, &counts[2]),
        (foreign_list, &counts[3]),
    ];

    // Reads before the listener listens are not kept.
    assert_eq!(read(&cache, list, &counts[0]).await, 1);
    assert_eq!(read(&cache, list, &counts[0]).await, 2);
    let before = kept(&cache, &all).await;

    // Another connection changes the held review: its card and the tenant's lists are read
    // again; another card and another tenant's list are not.
    sqlx::query("update reviews set priority = priority + 1 where id = $1")
        .bind(review.0)
        .execute(&db.pool)
        .await
        .unwrap();
    read_again(
        &cache,
        list,
        &counts[0],
        before[0],
        "the list after the review changed",
    )
    .await;
    read_again(
        &cache,
        card,
        &counts[1],
        before[1],
        "the card after the review changed",
    )
    .await;
    assert_eq!(read(&cache, other_card, &counts[2]).await, before[2]);
    assert_eq!(read(&cache, foreign_list, &counts[3]).await, before[3]);

    // An agent changes: everything of its tenant is read again.
    let before = kept(&cache, &all).await;
    set_status(&db, seed.agent, "paused").await;
    read_again(
        &cache,
        list,
        &counts[0],
        before[0],
        "the list after the agent changed",
    )
    .await;
    read_again(
        &cache,
        other_card,
        &counts[2],
        before[2],
        "a card after the agent changed",
    )
    .await;
    assert_eq!(read(&cache, foreign_list, &counts[3]).await, before[3]);

    // A local write (a POST answered by this process) drops everything at once.
    let before = kept(&cache, &all).await;
    cache.invalidate();
    assert!(read(&cache, foreign_list, &counts[3]).await > before[3]);

    // The listener's connection is lost: answers kept before are not served.
    let before = kept(&cache, &all).await;
    let terminated: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity
          where datname = current_database() and query like 'LISTEN%'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(terminated, [true], "one listener connection");
    read_again(
        &cache,
        list,
        &counts[0],
        before[0],
        "the list after the listener was lost",
    )
    .await;

    // Listening again, it hears the next change.
    let before = kept(&cache, &all).await;
    set_status(&db, seed.agent, "active").await;
    read_again(
        &cache,
        card,
        &counts[1],
        before[1],
        "the card after the agent changed again",
    )
    .await;

    drop(cache);
    db.drop_db().await;
}
