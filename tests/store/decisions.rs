use std::sync::Arc;

use chimera_core::domain::{DecisionKind, ReviewId, Task, TaskId, TaskKind, TaskResult};
use chimera_core::routing::Policy;
use chimera_store::decisions::{self, Decision, Refused, Verdict};
use chimera_tests::TestDb;
use chimera_tests::seed::{Seeded, held};
use tokio::sync::Barrier;

fn approval(seed: &Seeded, r: &TaskResult, review: ReviewId, hash: &str, policy: i32) -> Decision {
    let execute = Task {
        id: TaskId(chimera_core::domain::derived_uuid(&format!(
            "execute:{review}"
        ))),
        goal_id: seed.goal,
        tenant_id: seed.tenant,
        agent_id: seed.agent,
        kind: TaskKind::Execute,
        attempt: 1,
        inputs: Default::default(),
        depends_on: vec![r.task_id],
        read_set: Default::default(),
        write_set: Default::default(),
        feedback: None,
        approval_id: Some(review),
    };
    Decision {
        tenant: seed.tenant,
        review,
        reviewer: "alice".into(),
        artifact_hash: hash.to_owned(),
        policy_version: policy,
        verdict: Verdict::Approve {
            execute: Some(Box::new(execute)),
            spend_cents: None,
            edited_hash: None,
        },
        request_id: Some("req-1".into()),
        by_policy: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_approvals_release_the_effect_once() {
    let db = TestDb::migrated().await;
    let (seed, r, review) = held(&db.pool).await;
    let start = Arc::new(Barrier::new(20));
    let reviewers: Vec<_> = (0..20)
        .map(|i| {
            let (pool, start) = (db.pool.clone(), start.clone());
            let mut decision = approval(&seed, &r, review, r.commit_hash.as_str(), 1);
            decision.reviewer = format!("reviewer-{i}");
            tokio::spawn(async move {
                start.wait().await;
                decisions::decide(&pool, &decision).await
            })
        })
        .collect();
    let mut taken = 0;
    let mut conflicts = 0;
    for reviewer in reviewers {
        match reviewer.await.unwrap() {
            Ok(_) => taken += 1,
            Err(Refused::AlreadyDecided { decision, .. }) => {
                assert_eq!(decision, DecisionKind::Approve);
                conflicts += 1;
            }
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert_eq!((taken, conflicts), (1, 19));
    let effects: i64 = sqlx::query_scalar("select count(*) from tasks where approval_id = $1")
        .bind(review.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(effects, 1);
    let status: String = sqlx::query_scalar("select status::text from tasks where id = $1")
        .bind(seed.task.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "committed");
    let audit: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where review_id = $1 and action = 'review.approve'",
    )
    .bind(review.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(audit, 1);
    db.drop_db().await;
}

#[tokio::test]
async fn a_decision_on_another_artifact_or_policy_is_stale_and_only_the_new_policy_decides_first() {
    let db = TestDb::migrated().await;
    let (seed, r, review) = held(&db.pool).await;
    // Another hash than the one held.
    let other = "f".repeat(64);
    assert!(matches!(
        decisions::decide(&db.pool, &approval(&seed, &r, review, &other, 1)).await,
        Err(Refused::Stale(_))
    ));
    // Another tenant's review is absent.
    let mut foreign = approval(&seed, &r, review, r.commit_hash.as_str(), 1);
    foreign.tenant = chimera_core::domain::TenantId::random();
    assert!(matches!(
        decisions::decide(&db.pool, &foreign).await,
        Err(Refused::NotFound)
    ));
    // The agent's policy moves to v2: a person's decision naming v1, or v2 before the item was
    // judged again, is refused naming v2; the item stays pending as it was. The re-judging
    // (by the policy) decides it under v2.
    let v2 = Policy {
        version: 2,
        ..Policy::default()
    };
    sqlx::query("insert into policies (agent_id, version, document) values ($1, 2, $2)")
        .bind(seed.agent.0)
        .bind(serde_json::to_value(&v2).unwrap())
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("update agents set policy_version = 2 where id = $1")
        .bind(seed.agent.0)
        .execute(&db.pool)
        .await
        .unwrap();
    for named in [1, 2] {
        assert!(matches!(
            decisions::decide(
                &db.pool,
                &approval(&seed, &r, review, r.commit_hash.as_str(), named)
            )
            .await,
            Err(Refused::PolicyMoved { current: 2 })
        ));
    }
    let (status, version): (String, i32) =
        sqlx::query_as("select status::text, policy_version from reviews where id = $1")
            .bind(review.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), version), ("pending", 1));
    // Its re-judging message was never written here (the policy changed by hand): the
    // reconciler writes it once the change is older than its budget.
    let soon = chrono::Utc::now();
    assert!(
        chimera_store::rejudge::outdated(&db.pool, soon, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let later = soon + chrono::Duration::minutes(5);
    assert_eq!(
        chimera_store::rejudge::outdated(&db.pool, later, 10)
            .await
            .unwrap(),
        vec![review]
    );
    let queued: (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("select queue, sent_at from outbox where dedup_key = $1")
            .bind(format!("rejudge:{}:v2", review.0))
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(queued, ("review".to_owned(), None));
    let by_policy = Decision {
        reviewer: "policy v2".into(),
        by_policy: true,
        ..approval(&seed, &r, review, r.commit_hash.as_str(), 2)
    };
    let taken = decisions::decide(&db.pool, &by_policy).await.unwrap();
    assert_eq!(taken.decision, DecisionKind::Approve);
    let (status, version, by): (String, i32, String) = sqlx::query_as(
        "select status::text, policy_version, decided_by from reviews where id = $1",
    )
    .bind(review.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), version, by.as_str()),
        ("approved", 2, "policy v2")
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_rejection_fails_the_task_and_releases_nothing() {
    let db = TestDb::migrated().await;
    let (seed, r, review) = held(&db.pool).await;
    let reject = Decision {
        verdict: Verdict::Reject {
            reason: "off brand".into(),
        },
        ..approval(&seed, &r, review, r.commit_hash.as_str(), 1)
    };
    decisions::decide(&db.pool, &reject).await.unwrap();
    let (status, feedback): (String, String) =
        sqlx::query_as("select status::text, feedback from tasks where id = $1")
            .bind(seed.task.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(feedback.contains("off brand"), "{feedback}");
    let effects: i64 = sqlx::query_scalar("select count(*) from tasks where approval_id = $1")
        .bind(review.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(effects, 0);
    // A replayed approval after the rejection loses, naming the winner's decision.
    match decisions::decide(
        &db.pool,
        &approval(&seed, &r, review, r.commit_hash.as_str(), 1),
    )
    .await
    {
        Err(Refused::AlreadyDecided {
            decision,
            decided_by,
            ..
        }) => {
            assert_eq!(
                (decision.as_str(), decided_by.as_str()),
                ("reject", "alice")
            );
        }
        other => panic!("expected AlreadyDecided, got {other:?}"),
    }
    db.drop_db().await;
}
