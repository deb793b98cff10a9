//! OCC commit rate against the raw conditional-UPDATE rate, side by side, on the local
//! PostgreSQL (`scripts/bench occ_commit`).
//!
//! Both phases run `COMMITTERS` concurrent loops, each on its own state key of one agent, in a
//! fresh database:
//! - raw: `update agent_state set version = version + 1 where ... and version = $n`, autocommit;
//! - a commit's writes, raw: the rows a commit must change (bump the key, settle the task with
//!   the result and the versions) in one hand-written statement without any check: the floor
//!   under the commit path;
//! - commit path: `chimera_store::occ::commit` of a recorded result (version check, bump, task
//!   settled with the result and the versions), one statement;
//! - and, for reference, record + commit (what the judge does for an auto-approved result).
//!
//! The phases run in that order, BENCH_ROUNDS times (5), on fresh keys and tasks each round;
//! the figures are each phase's median. Before each phase, untimed, the tables are vacuumed and
//! analysed, as pgbench does before a run: otherwise autovacuum, woken by the rows the last
//! setup inserted, runs on one of the machine's cores during whichever phase comes next. Target: commit path >= 80% of the raw rate.
//! Settings: BENCH_COMMITTERS (8), BENCH_OPS (operations per committer, 1500), BENCH_ROUNDS.

use std::time::Instant;

use chimera_core::domain::{StateKey, TaskResult};
use chimera_store::{occ, records};
use chimera_tests::seed::{Seeded, another_task, result, seed_agent};
use chimera_tests::{TestDb, bench_setting};

#[tokio::main]
async fn main() {
    let committers = bench_setting("BENCH_COMMITTERS", 8);
    let ops = bench_setting("BENCH_OPS", 1500);
    let rounds = bench_setting("BENCH_ROUNDS", 5).max(1);
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    println!(
        "occ_commit: {committers} concurrent committers x {ops} operations each, {rounds} \
         interleaved rounds, PostgreSQL {}",
        server_version(&db).await
    );
    let total = (committers * ops) as f64;
    let mut rounds_rates = Vec::new();
    for round in 0..rounds {
        vacuum(&db).await;
        let raw = run(committers, |i| {
            let (pool, seed) = (db.pool.clone(), seed.clone());
            async move {
                let key = format!("raw:{round}:{i}");
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

        // The writes a commit has to make (bump the key, settle the task with the result), as one
        // hand-written statement without the checks: what the commit path cannot go below.
        let prepared = prepare(&db, &seed, committers, ops, &format!("writes:{round}")).await;
        vacuum(&db).await;
        let writes = run(committers, |i| {
            let (pool, mine) = (db.pool.clone(), prepared[i].clone());
            async move {
                let start = Instant::now();
                for r in &mine {
                    let (key, version) = r.read_set.first_key_value().unwrap();
                    sqlx::query(
                        "with bumped as (
                             update agent_state set version = version + 1, updated_at = now()
                             where agent_id = $1 and key = $2 and version = $3 returning version)
                         update tasks set status = 'committed', committed_result = $4,
                             committed_at = now(),
                             input_state_version = jsonb_build_object($2::text, $3::bigint),
                             output_state_version = jsonb_build_object($2::text, $3::bigint + 1),
                             updated_at = now()
                         where id = $5",
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
        let prepared = prepare(&db, &seed, committers, ops, &format!("commit:{round}")).await;
        vacuum(&db).await;
        let commit = commit_all(&db, committers, prepared, false).await;
        let fresh = build(&db, &seed, committers, ops, &format!("record:{round}")).await;
        vacuum(&db).await;
        let record_and_commit = commit_all(&db, committers, fresh, true).await;
        let round_rates = [raw, writes, commit, record_and_commit].map(|secs| total / secs);
        println!(
            "round {}: raw {:.0}/s, writes {:.0}/s, commit {:.0}/s, record+commit {:.0}/s, \
             commit/raw {:.1}%",
            round + 1,
            round_rates[0],
            round_rates[1],
            round_rates[2],
            round_rates[3],
            100.0 * round_rates[2] / round_rates[0]
        );
        rounds_rates.push(round_rates);
    }

    let [raw_rate, writes_rate, commit_rate, full_rate] = medians(&rounds_rates);
    println!("medians over {rounds} rounds:");
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

/// The median rate of each phase over the rounds (rounds interleave the phases, so a slow
/// spell of the machine hits all of them alike, and one outlier round does not decide).
fn medians(rounds: &[[f64; 4]]) -> [f64; 4] {
    std::array::from_fn(|phase| {
        let mut rates: Vec<f64> = rounds.iter().map(|round| round[phase]).collect();
        rates.sort_by(f64::total_cmp);
        let mid = rates.len() / 2;
        if rates.len().is_multiple_of(2) {
            (rates[mid - 1] + rates[mid]) / 2.0
        } else {
            rates[mid]
        }
    })
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

/// Vacuums and analyses the tables the phases write, so no autovacuum is due during a phase.
async fn vacuum(db: &TestDb) {
    sqlx::query("vacuum (analyze) agent_state, tasks, results")
        .execute(&db.pool)
        .await
        .unwrap();
}

async fn server_version(db: &TestDb) -> String {
    sqlx::query_scalar("show server_version")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}
