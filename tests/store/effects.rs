use chimera_core::domain::{EffectState, ReviewId, TaskStatus};
use chimera_store::effects::{self, Confirmation, Confirmed, Intent};
use chimera_store::records;
use chimera_tests::TestDb;
use chimera_tests::seed::{Seeded, execute_task, seed_agent};
use serde_json::json;

/// An execute task released by a new approval, as the store records one.
async fn approval(db: &TestDb, seed: &Seeded) -> ReviewId {
    let approval = ReviewId::random();
    let task = execute_task(seed, approval, Default::default());
    records::insert_task(&db.pool, &task, TaskStatus::Queued, 3)
        .await
        .unwrap();
    approval
}

fn intent(seed: &Seeded, approval: ReviewId) -> Intent<'static> {
    Intent {
        approval,
        agent: seed.agent,
        op: "publish",
        platform: "bluesky",
    }
}

#[tokio::test]
async fn of_many_workers_that_read_an_unknown_effect_one_sends_it() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let approval = approval(&db, &seed).await;
    let first = effects::intend(&db.pool, intent(&seed, approval))
        .await
        .unwrap();
    assert_eq!((first.state, first.sends), (EffectState::Intended, 0));
    // Recorded once however often it is intended.
    assert_eq!(
        effects::intend(&db.pool, intent(&seed, approval))
            .await
            .unwrap(),
        first
    );
    assert!(effects::mark_sent(&db.pool, &first).await.unwrap());
    effects::mark_unknown(&db.pool, approval, "connection reset")
        .await
        .unwrap();
    let unknown = effects::get(&db.pool, approval).await.unwrap().unwrap();
    assert_eq!((unknown.state, unknown.sends), (EffectState::Unknown, 1));

    // Twenty workers met the effect unknown and found it absent: one of them sends it.
    let senders =
        futures::future::join_all((0..20).map(|_| effects::mark_sent(&db.pool, &unknown))).await;
    let sent = senders.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(sent, 1);
    let now = effects::get(&db.pool, approval).await.unwrap().unwrap();
    assert_eq!((now.state, now.sends), (EffectState::Sent, 2));
    db.drop_db().await;
}

#[tokio::test]
async fn a_platform_object_answers_for_one_effect_only() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let (a, b) = (approval(&db, &seed).await, approval(&db, &seed).await);
    let receipt = json!({"post_id": "at://did:plc:x/app.bsky.feed.post/1"});
    let confirmation = Confirmation {
        platform_ref: Some("at://did:plc:x/app.bsky.feed.post/1"),
        receipt: &receipt,
        tool: "get_author_feed",
        server: "bluesky",
        server_version: "",
    };
    for approval in [a, b] {
        let seen = effects::intend(&db.pool, intent(&seed, approval))
            .await
            .unwrap();
        assert!(effects::mark_sent(&db.pool, &seen).await.unwrap());
    }
    // Two effects with the same words both found the one post: the first claims it.
    assert_eq!(
        effects::confirm(&db.pool, a, confirmation).await.unwrap(),
        Confirmed::Done
    );
    assert_eq!(
        effects::confirm(&db.pool, b, confirmation).await.unwrap(),
        Confirmed::Taken
    );
    assert!(
        effects::taken_by_another(&db.pool, "bluesky", confirmation.platform_ref.unwrap(), b)
            .await
            .unwrap()
    );
    // A confirmed effect stays confirmed: a late failure or send changes nothing.
    let confirmed = effects::get(&db.pool, a).await.unwrap().unwrap();
    effects::fail(&db.pool, a, "late").await.unwrap();
    assert!(!effects::mark_sent(&db.pool, &confirmed).await.unwrap());
    assert_eq!(
        effects::get(&db.pool, a).await.unwrap().unwrap().state,
        EffectState::Confirmed
    );
    let other = effects::get(&db.pool, b).await.unwrap().unwrap();
    assert_eq!(other.state, EffectState::Sent);
    db.drop_db().await;
}
