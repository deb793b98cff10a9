//! OCC commit rate against the raw conditional-UPDATE rate, side by side, on the local
//! PostgreSQL (`scripts/bench occ_commit`).
//!
//! Both phases run `COMMITTERS` concurrent loops, each on its own state key of one agent, in a
//! fresh database:
//! - raw: `update agent_state set version = version + 1 where ... and version = $n`, autocommit;
//! - a commit's writes, raw: the rows a commit must change (bump the key, mark the result
//!   committed, settle the task) in one hand-written statement without any check: the floor
//!   under the commit path;
//! - commit path: `chimera_store::occ::commit` of a recorded result (version check, bump,
//!   result marked committed, task status), one statement;
//! - and, for reference, record + commit (what the judge does for an auto-approved result).
//!
//! Target: commit path >= 80% of the raw rate. Settings: BENCH_COMMITTERS (8), BENCH_OPS
//! (operations per committer, 1500).

use std::time::Instant;

use chimera_core::domain::{StateKey, TaskResult};
use chimera_store::{occ, records};
use chimera_tests::TestDb;
use chimera_tests::seed::{Seeded, another_task, result, seed_agent};

fn setting(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let committers = setting("BENCH_COMMITTERS", 8);
    let ops = setting("BENCH_OPS", 1500);
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    println!(
        "occ_commit: {committers} concurrent committers x {ops} operations each, PostgreSQL {}",
        server_version(&db).await
    );

    let raw = run(committers, |i| {
        let (pool, seed) = (db.pool.clone(), seed.clone());
        async move {
            let key = format!("raw:{i}");
            occ::read_versions(&pool, seed.agent, &[StateKey::parse(key.clone()).unwrap()])
                .await
                .unwrap();
            let start = Instant::now();
            for version in 0..ops as i64 {
                let done = sqlx::query(
                    "update agent_state set version = version + 1, updated_at = now()
                     where agent_id = $1 and key = $2 and version = $3",
                )
                .bind(seed.agent.0)
                .bind(&key)
                .bind(version)
                .execute(&pool)
                .await
                .unwrap();
                assert_eq!(done.rows_affected(), 1);
            }
            start.elapsed()
        }
    })
    .await;

    // The writes a commit has to make (bump the key, mark the result, settle the task), as one
    // hand-written statement without the checks: what the commit path cannot go below.
    let prepared = prepare(&db, &seed, committers, ops, "writes").await;
    let writes = run(committers, |i| {
        let (pool, mine) = (db.pool.clone(), prepared[i].clone());
        async move {
            let start = Instant::now();
            for r in &mine {
                let (key, version) = r.read_set.first_key_value().unwrap();
                sqlx::query(
                    "with bumped as (
                         update agent_state set version = version + 1, updated_at = now()
                         where agent_id = $1 and key = $2 and version = $3 returning version),
                     claimed as (
                         update results set committed_at = now(),
                             input_state_version = jsonb_build_object($2::text, $3::bigint),
                             output_state_version = jsonb_build_object($2::text, $3::bigint + 1)
                         where id = $4 returning id)
                     update tasks set status = 'committed', updated_at = now() where id = $5",
                )
                .bind(r.agent_id.0)
                .bind(key.as_str())
                .bind(version.get())
                .bind(r.id.0)
                .bind(r.task_id.0)
                .execute(&pool)
                .await
                .unwrap();
            }
            start.elapsed()
        }
    })
    .await;
    let prepared = prepare(&db, &seed, committers, ops, "commit").await;
    let commit = commit_all(&db, committers, prepared, false).await;
    let fresh = build(&db, &seed, committers, ops, "record").await;
    let record_and_commit = commit_all(&db, committers, fresh, true).await;

    let total = (committers * ops) as f64;
    let rate = |secs: f64| total / secs;
    let (raw_rate, commit_rate, full_rate) = (rate(raw), rate(commit), rate(record_and_commit));
    let writes_rate = rate(writes);
    println!("raw conditional UPDATE      {raw_rate:>9.0} ops/s");
    println!("a commit's writes, raw      {writes_rate:>9.0} ops/s  (same rows, no checks)");
    println!("OCC commit path             {commit_rate:>9.0} commits/s");
    println!("record result + OCC commit  {full_rate:>9.0} commits/s");
    println!(
        "ratio commit/raw            {:>9.1}%  (target >= 80%)",
        100.0 * commit_rate / raw_rate
    );
    println!(
        "ratio commit/its raw writes {:>9.1}%",
        100.0 * commit_rate / writes_rate
    );
    db.drop_db().await;
}

/// Commits every committer's results in order, recording each first when `record` is set.
async fn commit_all(
    db: &TestDb,
    committers: usize,
    results: Vec<Vec<TaskResult>>,
    record: bool,
) -> f64 {
    run(committers, |i| {
        let (pool, mine) = (db.pool.clone(), results[i].clone());
        async move {
            let start = Instant::now();
            for r in &mine {
                if record {
                    records::record_result(&pool, r).await.unwrap();
                }
                occ::commit(&pool, r).await.unwrap();
            }
            start.elapsed()
        }
    })
    .await
}

/// Runs one loop per committer at once; returns the wall time of the slowest.
async fn run<F, Fut>(committers: usize, make: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = std::time::Duration> + Send + 'static,
{
    let started = Instant::now();
    let handles: Vec<_> = (0..committers).map(|i| tokio::spawn(make(i))).collect();
    for h in handles {
        h.await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// `ops` chained results per committer on its own key (version n reads n, writes n+1), each
/// of its own task, as in the pipeline where a commit settles one task.
async fn build(
    db: &TestDb,
    seed: &Seeded,
    committers: usize,
    ops: usize,
    prefix: &str,
) -> Vec<Vec<TaskResult>> {
    let mut all = Vec::new();
    for i in 0..committers {
        let key = StateKey::parse(format!("{prefix}:{i}")).unwrap();
        let mut mine = Vec::new();
        for v in 0..ops as i64 {
            let task = another_task(&db.pool, seed).await;
            let read = [(key.clone(), v.try_into().unwrap())].into();
            mine.push(result(
                &task,
                read,
                [key.clone()].into(),
                &format!("{prefix} {i} {v}"),
            ));
        }
        all.push(mine);
    }
    all
}

/// Like [`build`], with every result already recorded (untimed).
async fn prepare(
    db: &TestDb,
    seed: &Seeded,
    committers: usize,
    ops: usize,
    prefix: &str,
) -> Vec<Vec<TaskResult>> {
    let all = build(db, seed, committers, ops, prefix).await;
    for mine in &all {
        for r in mine {
            records::record_result(&db.pool, r).await.unwrap();
        }
    }
    all
}

async fn server_version(db: &TestDb) -> String {
    sqlx::query_scalar("show server_version")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}
