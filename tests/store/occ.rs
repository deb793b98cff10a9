use std::collections::BTreeSet;
use std::sync::Arc;

use chimera_core::domain::{StateKey, StateVersion};
use chimera_store::occ::{self, CommitError, CommitOutcome};
use chimera_store::records::{self, RecordError};
use chimera_tests::TestDb;
use chimera_tests::seed::{another_task, result, seed_agent};
use tokio::sync::Barrier;

const COMMITTERS: usize = 64;

fn key(k: &str) -> StateKey {
    StateKey::parse(k).unwrap()
}

fn v(n: i64) -> StateVersion {
    StateVersion::try_from(n).unwrap()
}

#[tokio::test]
async fn concurrent_committers_on_one_key_have_one_winner_per_version_step_and_lose_no_update() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let calendar = key("calendar:instagram");
    // Everyone reads version 0 before anyone commits.
    let start = Arc::new(Barrier::new(COMMITTERS));
    let mut committers = Vec::new();
    for i in 0..COMMITTERS {
        let (pool, seed, calendar, start) = (
            db.pool.clone(),
            seed.clone(),
            calendar.clone(),
            start.clone(),
        );
        committers.push(tokio::spawn(async move {
            // Each committer settles its own task (a task commits once), all on one key.
            let seed = another_task(&pool, &seed).await;
            let mut read = occ::read_versions(&pool, seed.agent, std::slice::from_ref(&calendar))
                .await
                .unwrap();
            start.wait().await;
            let mut conflicts = 0;
            let mut first_attempt_won = None;
            loop {
                let r = result(
                    &seed,
                    read.clone(),
                    [calendar.clone()].into(),
                    &format!("post {i} at {read:?}"),
                );
                let r = records::record_result(&pool, &r).await.unwrap();
                match occ::commit(&pool, &r).await {
                    Ok(CommitOutcome::Committed { input, output }) => {
                        assert_eq!(input, read, "the commit checked exactly what was read");
                        first_attempt_won.get_or_insert(true);
                        return (output[&calendar], conflicts, first_attempt_won.unwrap());
                    }
                    Ok(other) => panic!("a fresh result cannot be a duplicate: {other:?}"),
                    Err(err @ CommitError::Conflict { .. }) => {
                        let CommitError::Conflict { moved } = &err else {
                            unreachable!()
                        };
                        assert_eq!(moved.len(), 1);
                        assert_eq!(moved[0].key, calendar);
                        assert!(
                            moved[0].actual > moved[0].expected,
                            "the conflict reports what moved: {moved:?}"
                        );
                        conflicts += 1;
                        first_attempt_won.get_or_insert(false);
                        // Replan with the fresh version, as the judge does.
                        read = err.fresh_versions();
                    }
                    Err(err) => panic!("commit failed: {err:?}"),
                }
            }
        }));
    }
    let outcomes: Vec<(StateVersion, usize, bool)> = futures::future::join_all(committers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();

    let winners_at_version_0 = outcomes.iter().filter(|(_, _, first)| *first).count();
    assert_eq!(
        winners_at_version_0, 1,
        "exactly one of {COMMITTERS} readers of version 0 wins; the rest get Conflict"
    );
    let steps: BTreeSet<i64> = outcomes.iter().map(|(out, _, _)| out.get()).collect();
    assert_eq!(
        steps,
        (1..=COMMITTERS as i64).collect(),
        "one winner per version step"
    );
    let final_version: i64 =
        sqlx::query_scalar("select version from agent_state where agent_id = $1 and key = $2")
            .bind(seed.agent.0)
            .bind(calendar.as_str())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        final_version, COMMITTERS as i64,
        "final version = number of successful commits"
    );
    let commits: i64 = sqlx::query_scalar("select count(*) from commits where agent_id = $1")
        .bind(seed.agent.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(commits, COMMITTERS as i64);
    let conflicts: usize = outcomes.iter().map(|(_, c, _)| c).sum();
    assert!(
        conflicts >= COMMITTERS - 1,
        "every loser saw a Conflict ({conflicts})"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn committers_on_disjoint_keys_of_one_agent_never_conflict() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let start = Arc::new(Barrier::new(COMMITTERS));
    let mut committers = Vec::new();
    for i in 0..COMMITTERS {
        let (pool, seed, start) = (db.pool.clone(), seed.clone(), start.clone());
        committers.push(tokio::spawn(async move {
            let seed = another_task(&pool, &seed).await;
            let mine = key(&format!("slot:{i}"));
            let read = occ::read_versions(&pool, seed.agent, std::slice::from_ref(&mine))
                .await
                .unwrap();
            let r = result(&seed, read, [mine.clone()].into(), &format!("slot {i}"));
            let r = records::record_result(&pool, &r).await.unwrap();
            start.wait().await;
            occ::commit(&pool, &r).await
        }));
    }
    for outcome in futures::future::join_all(committers).await {
        match outcome.unwrap() {
            Ok(CommitOutcome::Committed { output, .. }) => {
                assert_eq!(output.values().copied().collect::<Vec<_>>(), [v(1)])
            }
            other => panic!("a disjoint commit must succeed first time: {other:?}"),
        }
    }
    db.drop_db().await;
}

#[tokio::test]
async fn a_key_that_was_only_read_is_checked_too() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let (persona, calendar) = (key("persona"), key("calendar"));
    let read = occ::read_versions(&db.pool, seed.agent, &[persona.clone(), calendar.clone()])
        .await
        .unwrap();
    let draft = result(&seed, read.clone(), [calendar.clone()].into(), "draft");
    let draft = records::record_result(&db.pool, &draft).await.unwrap();
    // Someone else changes the persona the draft was written against.
    let persona_edit = result(
        &another_task(&db.pool, &seed).await,
        [(persona.clone(), v(0))].into(),
        [persona.clone()].into(),
        "new persona",
    );
    let persona_edit = records::record_result(&db.pool, &persona_edit)
        .await
        .unwrap();
    occ::commit(&db.pool, &persona_edit).await.unwrap();

    let err = occ::commit(&db.pool, &draft)
        .await
        .expect_err("the draft read a persona that moved");
    let CommitError::Conflict { moved } = &err else {
        panic!("expected Conflict, got {err:?}")
    };
    assert_eq!(moved.len(), 1);
    assert_eq!(
        (moved[0].key.clone(), moved[0].expected, moved[0].actual),
        (persona.clone(), v(0), v(1))
    );
    let calendar_version: i64 = sqlx::query_scalar(
        "select version from agent_state where agent_id = $1 and key = 'calendar'",
    )
    .bind(seed.agent.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(calendar_version, 0, "a rejected commit writes nothing");
    db.drop_db().await;
}

#[tokio::test]
async fn a_duplicate_commit_of_the_same_result_is_one_immutable_row_and_a_no_op_success() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let calendar = key("calendar");
    let read = occ::read_versions(&db.pool, seed.agent, std::slice::from_ref(&calendar))
        .await
        .unwrap();
    let r = result(&seed, read, [calendar.clone()].into(), "the post");
    let r = records::record_result(&db.pool, &r).await.unwrap();
    // The same result recorded twice (a redelivered message) is one row.
    assert_eq!(records::record_result(&db.pool, &r).await.unwrap(), r);

    let start = Arc::new(Barrier::new(16));
    let attempts = (0..16).map(|_| {
        let (pool, r, start) = (db.pool.clone(), r.clone(), start.clone());
        tokio::spawn(async move {
            start.wait().await;
            occ::commit(&pool, &r).await
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|o| o.unwrap().unwrap())
        .collect();
    let committed = outcomes
        .iter()
        .filter(|o| matches!(o, CommitOutcome::Committed { .. }))
        .count();
    assert_eq!(
        committed, 1,
        "one commit, the rest are no-op successes: {outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| o.output() == &[(calendar.clone(), v(1))].into())
    );
    // And again, later.
    assert!(matches!(
        occ::commit(&db.pool, &r).await.unwrap(),
        CommitOutcome::AlreadyCommitted { .. }
    ));

    let (commits, results, version): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from commits), (select count(*) from results),
                (select version from agent_state where key = 'calendar')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((commits, results, version), (1, 1, 1));
    let versions: (serde_json::Value, serde_json::Value) = sqlx::query_as(
        "select input_state_version, output_state_version from commits where task_id = $1",
    )
    .bind(r.task_id.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        versions,
        (
            serde_json::json!({"calendar": 0}),
            serde_json::json!({"calendar": 1})
        )
    );
    // The commit record is never changed or removed, by anyone.
    for sql in [
        "update commits set output_state_version = '{}'",
        "delete from commits",
        "truncate commits",
    ] {
        let err = sqlx::query(sql).execute(&db.pool).await.expect_err(sql);
        let err = err.as_database_error().unwrap();
        assert_eq!(err.code().as_deref(), Some("42501"), "{sql}: {err}");
    }
    assert_eq!(
        occ::commit(&db.pool, &r).await.unwrap().output(),
        &[(calendar.clone(), v(1))].into()
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_write_only_commit_repeated_is_a_no_op_and_a_second_or_foreign_result_is_refused() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let log = key("log");
    // A result that reads nothing: no version check can catch its repetition, the claim does.
    let r = result(&seed, Default::default(), [log.clone()].into(), "entry");
    let r = records::record_result(&db.pool, &r).await.unwrap();
    let first = occ::commit(&db.pool, &r).await.unwrap();
    assert!(
        matches!(first, CommitOutcome::Committed { .. }),
        "{first:?}"
    );
    let log_version = || async {
        sqlx::query_scalar::<_, i64>(
            "select version from agent_state where key = 'log' and agent_id = $1",
        )
        .bind(seed.agent.0)
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    // Nothing was read, so no version check refuses it: the record's key (the task) does.
    let second = occ::commit(&db.pool, &r).await.unwrap();
    assert_eq!(
        second,
        CommitOutcome::AlreadyCommitted {
            input: Default::default(),
            output: [(log.clone(), v(1))].into()
        }
    );
    assert_eq!(log_version().await, 1, "the repeated commit bumped nothing");

    // (A result that was never recorded cannot be committed: `occ::commit` takes a `Recorded`,
    // which only recording or loading a stored result makes.)
    // A task commits once: another recorded result of the settled task is refused, whether it
    // read nothing, or read a version that has moved since (on either commit path).
    for (read, write_set) in [
        (vec![], vec![log.clone()]),
        (vec![], vec![log.clone(), key("other")]),
        (vec![(log.clone(), v(0))], vec![log.clone()]),
        (vec![(log.clone(), v(0))], vec![log.clone(), key("other")]),
    ] {
        let another = result(
            &seed,
            read.into_iter().collect(),
            write_set.into_iter().collect(),
            "a second answer",
        );
        let another = records::record_result(&db.pool, &another).await.unwrap();
        let err = occ::commit(&db.pool, &another).await.unwrap_err();
        assert!(
            matches!(err, CommitError::TaskSettled { committed } if committed == r.id),
            "{err:?}"
        );
    }
    // A result naming another agent than its task's is refused when it is recorded: it is not
    // stored, so it cannot be committed, and bumps nothing of either agent.
    let other_agent = seed_agent(&db.pool).await.agent;
    let fresh = another_task(&db.pool, &seed).await;
    let mut foreign = result(&fresh, Default::default(), [log.clone()].into(), "foreign");
    foreign.agent_id = other_agent;
    let err = records::record_result(&db.pool, &foreign)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RecordError::NotTheTasks { task, agent, .. }
                 if task == fresh.task && agent == other_agent),
        "{err:?}"
    );
    let stored: i64 = sqlx::query_scalar("select count(*) from results where task_id = $1")
        .bind(fresh.task.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "the foreign result is not stored");
    // So is a result whose content no longer matches its commit hash.
    let mut altered = result(&fresh, Default::default(), [log.clone()].into(), "altered");
    altered.write_set.insert(key("elsewhere"));
    let err = records::record_result(&db.pool, &altered)
        .await
        .unwrap_err();
    assert!(matches!(err, RecordError::HashMismatch { .. }), "{err:?}");
    assert_eq!(log_version().await, 1, "refused commits bump nothing");
    let other_versions: i64 = sqlx::query_scalar(
        "select coalesce(sum(version), 0)::bigint from agent_state where agent_id = $1",
    )
    .bind(other_agent.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(other_versions, 0);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_recorders_of_one_result_store_it_once() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let r = result(&seed, Default::default(), [key("drafts:x")].into(), "same");
    let start = Arc::new(Barrier::new(16));
    let recorders: Vec<_> = (0..16)
        .map(|_| {
            let (pool, r, start) = (db.pool.clone(), r.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                records::record_result(&pool, &r).await
            })
        })
        .collect();
    for recorder in recorders {
        assert_eq!(recorder.await.unwrap().unwrap().id, r.id);
    }
    // The same attempt with other content (it ran twice) is stored beside it, under its own id.
    let mut other = result(&seed, Default::default(), [key("drafts:x")].into(), "other");
    other.id = r.id;
    let stored = records::record_result(&db.pool, &other).await.unwrap();
    assert_ne!(stored.id, r.id);
    let rows: i64 = sqlx::query_scalar("select count(*) from results where task_id = $1")
        .bind(seed.task.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    db.drop_db().await;
}
