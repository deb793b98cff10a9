//! OCC commit rate against the raw conditional-UPDATE rate, side by side, on the local
//! PostgreSQL (`scripts/bench occ_commit`).
//!
//! Every phase runs `COMMITTERS` concurrent loops, each on its own state key of one agent, in a
//! fresh database:
//! - raw: `update agent_state set version = version + 1 where ... and version = $n`, autocommit;
//! - a commit's writes, raw: the rows a commit must write (bump the key, insert the commit
//!   record with the result and the versions) in one hand-written statement without any check:
//!   the floor under the commit path;
//! - commit path: `chimera_store::occ::commit` of a recorded result (version check, bump, the
//!   commit record, a second record of the task refused), one statement;
//! - and, for reference: a decision's commit (`judging::commit`: the transaction that locks the
//!   task, commits, marks the task committed and appends to the audit log; what the judge does
//!   for an auto-approved result), and record + commit.
//!
//! The machine's speed drifts on the scale of seconds (other tenants, the disk's flush
//! latency), as long as one phase takes. So the phases are interleaved finely: each round
//! prepares every phase's keys, tasks and results (untimed), vacuums and checkpoints, then runs
//! BENCH_SLICES slices; in a slice every phase runs its next share of operations, the order
//! rotating from slice to slice. A phase's rate is its operations over the sum of its slices'
//! times, so a slow spell costs every phase alike. The rates printed are each phase's median
//! over BENCH_ROUNDS rounds; the ratios are the medians of each round's ratio (a round's phases
//! ran side by side, rounds apart may not), with their lowest and highest. Target: the commit
//! path at 80% of the raw rate or more.
//! Settings: BENCH_COMMITTERS (8), BENCH_OPS (operations per committer and round, 1500),
//! BENCH_SLICES (10; a multiple of the 5 phases, so each leads a slice as often), BENCH_ROUNDS
//! (3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chimera_core::domain::{AgentId, StateKey, TaskResult};
use chimera_store::judging::{self, Decided};
use chimera_store::occ;
use chimera_store::records::{self, Recorded};
use chimera_tests::seed::{Seeded, another_task, result, seed_agent};
use chimera_tests::{TestDb, bench_setting};
use sqlx::PgPool;

const PHASES: usize = 5;

/// What one committer of one phase works through, slice by slice.
enum Work {
    /// The raw loop on `key`, from version 0.
    Raw { agent: AgentId, key: StateKey },
    /// The commit's writes, unchecked, for these recorded results.
    Writes(Vec<Recorded>),
    /// `occ::commit` of these recorded results.
    Commit(Vec<Recorded>),
    /// `judging::commit` of these recorded results.
    Decide(Vec<Recorded>),
    /// Records each of these results, then commits it.
    RecordAndCommit(Vec<TaskResult>),
}

#[tokio::main]
async fn main() {
    let committers = bench_setting("BENCH_COMMITTERS", 8);
    let ops = bench_setting("BENCH_OPS", 1500);
    let slices = bench_setting("BENCH_SLICES", 10).clamp(1, ops.max(1));
    let rounds = bench_setting("BENCH_ROUNDS", 3).max(1);
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    println!(
        "occ_commit: {committers} concurrent committers x {ops} operations each, {slices} \
         interleaved slices, {rounds} rounds, PostgreSQL {}",
        server_version(&db).await
    );
    let mut rounds_rates = Vec::new();
    for round in 0..rounds {
        let recorded = |phase: &str| {
            let prefix = format!("{phase}:{round}");
            let (db, seed) = (&db, &seed);
            async move { record(db, prepare(db, seed, committers, ops, &prefix).await).await }
        };
        let phases: [Vec<Arc<Work>>; PHASES] = [
            (0..committers)
                .map(|i| {
                    Arc::new(Work::Raw {
                        agent: seed.agent,
                        key: StateKey::parse(format!("raw:{round}:{i}")).unwrap(),
                    })
                })
                .collect(),
            recorded("writes")
                .await
                .into_iter()
                .map(|results| Arc::new(Work::Writes(results)))
                .collect(),
            recorded("commit")
                .await
                .into_iter()
                .map(|results| Arc::new(Work::Commit(results)))
                .collect(),
            recorded("decide")
                .await
                .into_iter()
                .map(|results| Arc::new(Work::Decide(results)))
                .collect(),
            prepare(&db, &seed, committers, ops, &format!("record:{round}"))
                .await
                .into_iter()
                .map(|results| Arc::new(Work::RecordAndCommit(results)))
                .collect(),
        ];
        for work in phases.iter().flatten() {
            if let Work::Raw { agent, key } = work.as_ref() {
                occ::read_versions(&db.pool, *agent, std::slice::from_ref(key))
                    .await
                    .unwrap();
            }
        }
        vacuum(&db).await;
        let mut spent = [Duration::ZERO; PHASES];
        for slice in 0..slices {
            let range = slice * ops / slices..(slice + 1) * ops / slices;
            for turn in 0..PHASES {
                let phase = (slice + turn) % PHASES;
                spent[phase] += run(&db.pool, &phases[phase], range.clone()).await;
            }
        }
        let total = (committers * ops) as f64;
        let rates = spent.map(|d| total / d.as_secs_f64());
        println!(
            "round {}: raw {:.0}/s, writes {:.0}/s, commit {:.0}/s, decision {:.0}/s, \
             record+commit {:.0}/s, commit/raw {:.1}%",
            round + 1,
            rates[0],
            rates[1],
            rates[2],
            rates[3],
            rates[4],
            100.0 * rates[2] / rates[0]
        );
        rounds_rates.push(rates);
    }

    let [raw_rate, writes_rate, commit_rate, decision_rate, full_rate] = medians(&rounds_rates);
    println!("medians over {rounds} rounds:");
    println!("raw conditional UPDATE      {raw_rate:>9.0} ops/s");
    println!("a commit's writes, raw      {writes_rate:>9.0} ops/s  (same rows, no checks)");
    println!("OCC commit path             {commit_rate:>9.0} commits/s");
    println!("a decision's commit         {decision_rate:>9.0} commits/s  (judging::commit)");
    println!("record result + OCC commit  {full_rate:>9.0} commits/s");
    let ratio = |phase: usize, base: usize| {
        let mut ratios: Vec<f64> = rounds_rates
            .iter()
            .map(|round| 100.0 * round[phase] / round[base])
            .collect();
        ratios.sort_by(f64::total_cmp);
        let (low, high) = (ratios[0], ratios[ratios.len() - 1]);
        format!(
            "{:>9.1}%  (rounds {low:.1}-{high:.1}%)",
            median(&mut ratios)
        )
    };
    println!("ratio commit/raw            {}  target >= 80%", ratio(2, 0));
    println!("ratio commit/its raw writes {}", ratio(2, 1));
    db.drop_db().await;
}

/// The median rate of each phase over the rounds.
fn medians(rounds: &[[f64; PHASES]]) -> [f64; PHASES] {
    std::array::from_fn(|phase| {
        let mut rates: Vec<f64> = rounds.iter().map(|round| round[phase]).collect();
        median(&mut rates)
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// Runs operations `range` of every committer of a phase at once; returns the wall time until
/// the slowest is done.
async fn run(pool: &PgPool, committers: &[Arc<Work>], range: std::ops::Range<usize>) -> Duration {
    let started = Instant::now();
    let handles: Vec<_> = committers
        .iter()
        .map(|work| tokio::spawn(operate(pool.clone(), work.clone(), range.clone())))
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    started.elapsed()
}

async fn operate(pool: PgPool, work: Arc<Work>, range: std::ops::Range<usize>) {
    match work.as_ref() {
        Work::Raw { agent, key } => {
            for version in range {
                let done = sqlx::query(
                    "update agent_state set version = version + 1, updated_at = now()
                     where agent_id = $1 and key = $2 and version = $3",
                )
                .bind(agent.0)
                .bind(key.as_str())
                .bind(version as i64)
                .execute(&pool)
                .await
                .unwrap();
                assert_eq!(done.rows_affected(), 1);
            }
        }
        // The writes a commit has to make (bump the key, insert the commit record), as one
        // hand-written statement without the checks: what the commit path cannot go below.
        Work::Writes(results) => {
            for r in &results[range] {
                let (key, version) = r.read_set.first_key_value().unwrap();
                let done = sqlx::query(
                    "with bumped as (
                         update agent_state set version = version + 1, updated_at = now()
                         where agent_id = $1 and key = $2 and version = $3 returning version)
                     insert into commits (task_id, result_id, agent_id, commit_hash,
                                          input_state_version, output_state_version)
                     select $5, $4, $1, $6, jsonb_build_object($2::text, $3::bigint),
                            jsonb_build_object($2::text, b.version)
                     from bumped b",
                )
                .bind(r.agent_id.0)
                .bind(key.as_str())
                .bind(version.get())
                .bind(r.id.0)
                .bind(r.task_id.0)
                .bind(r.commit_hash.as_str())
                .execute(&pool)
                .await
                .unwrap();
                assert_eq!(done.rows_affected(), 1);
            }
        }
        Work::Commit(results) => {
            for r in &results[range] {
                let outcome = occ::commit(&pool, r).await.unwrap();
                assert!(matches!(outcome, occ::CommitOutcome::Committed { .. }));
            }
        }
        Work::Decide(results) => {
            for r in &results[range] {
                let decided = judging::commit(&pool, r, 1, "auto-approved", None)
                    .await
                    .unwrap();
                assert!(matches!(
                    decided,
                    Decided::Done(judging::Committed {
                        outcome: occ::CommitOutcome::Committed { .. },
                        ..
                    })
                ));
            }
        }
        Work::RecordAndCommit(results) => {
            for r in &results[range] {
                let r = records::record_result(&pool, r).await.unwrap();
                let outcome = occ::commit(&pool, &r).await.unwrap();
                assert!(matches!(outcome, occ::CommitOutcome::Committed { .. }));
            }
        }
    }
}

/// `ops` chained results per committer on its own key (version n reads n, writes n+1), each
/// of its own task, as in the pipeline where a commit settles one task. The keys' rows exist
/// from the start, as for the raw loop.
async fn prepare(
    db: &TestDb,
    seed: &Seeded,
    committers: usize,
    ops: usize,
    prefix: &str,
) -> Vec<Vec<TaskResult>> {
    let mut all = Vec::new();
    for i in 0..committers {
        let key = StateKey::parse(format!("{prefix}:{i}")).unwrap();
        occ::read_versions(&db.pool, seed.agent, std::slice::from_ref(&key))
            .await
            .unwrap();
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

/// Records every result (untimed).
async fn record(db: &TestDb, all: Vec<Vec<TaskResult>>) -> Vec<Vec<Recorded>> {
    let mut recorded = Vec::new();
    for mine in all {
        let mut stored = Vec::new();
        for r in &mine {
            stored.push(records::record_result(&db.pool, r).await.unwrap());
        }
        recorded.push(stored);
    }
    recorded
}

/// Vacuums and analyses the tables the phases write, so no autovacuum is due when the timed
/// slices start, then checkpoints, so every round starts in the same place of the checkpoint
/// cycle (right after a checkpoint, the first write to each page logs the whole page).
async fn vacuum(db: &TestDb) {
    for statement in [
        "vacuum (analyze) agent_state, tasks, results, commits",
        "checkpoint",
    ] {
        sqlx::query(statement).execute(&db.pool).await.unwrap();
    }
}

async fn server_version(db: &TestDb) -> String {
    sqlx::query_scalar("show server_version")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}
