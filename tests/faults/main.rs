//! The fault suite: the real runner binary killed with SIGKILL mid-run, PostgreSQL restarted
//! mid-run, every task and review message delivered three times, forged and altered messages
//! injected, messages lost. After each fault, every goal settles, every approved effect happens
//! once and nothing else does, commits match committed tasks, the ledger matches the approved
//! spend, and no healthy message is dead-lettered. One case runs on the local Bluesky network
//! (the records on its PDS are the approvals, each once).
//!
//! These tests restart the shared PostgreSQL: `scripts/test` runs this binary on its own, one
//! test at a time, after the other suites.

mod fleet;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chimera_core::domain::{GoalId, TaskId, TaskResult};
use chimera_core::envelope::{self, PlannerMessage, ResultMessage, TaskMessage};
use chimera_core::names::Queue;
use chimera_store::reconcile;
use chimera_tests::repo_root;
use fleet::{Fleet, tail};
use serde_json::json;
use tokio::sync::Mutex;

/// The tests restart the shared database: one at a time, also under `cargo test` (one process,
/// many threads; nextest runs each test in its own process, and `scripts/test` runs them one by
/// one).
static SERIAL: Mutex<()> = Mutex::const_new(());

/// From a fault to every goal settled.
const SETTLE: Duration = Duration::from_secs(300);
/// The bound on recovery the suite asserts.
const RESUME_WITHIN: Duration = Duration::from_secs(60);

fn print_figures(test: &str, figures: &fleet::Figures) {
    eprintln!("[faults] {test}: {figures:?}");
}

/// Committed tasks so far.
async fn committed(fleet: &Fleet) -> i64 {
    sqlx::query_scalar("select count(*) from tasks where status = 'committed'")
        .fetch_one(&fleet.db.pool)
        .await
        .unwrap()
}

/// Waits until `more` tasks were committed beyond `from`.
async fn until_committed(fleet: &Fleet, from: i64, more: i64) {
    let pool = &fleet.db.pool;
    chimera_tests::eventually(Duration::from_secs(120), "work under way", || async move {
        let now: i64 = sqlx::query_scalar("select count(*) from tasks where status = 'committed'")
            .fetch_one(pool)
            .await
            .map_err(|e| e.to_string())?;
        if now >= from + more {
            Ok(())
        } else {
            Err(format!("{now} committed"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_runner_killed_three_times_mid_run_loses_no_goal() {
    let _serial = SERIAL.lock().await;
    let mut fleet = Fleet::new(3).await;
    fleet.start_runner().await;
    let mut goals = Vec::new();
    let mut resumes = Vec::new();
    for _ in 0..3 {
        let before = committed(&fleet).await;
        goals.extend(fleet.submit_mix(9).await);
        until_committed(&fleet, before, 3).await;
        // Held payments approved: their effects are in flight when the runner dies.
        fleet.approve_held().await;
        let in_flight = fleet.in_flight().await;
        let killed = Instant::now();
        fleet.kill_runner().await;
        fleet.start_runner().await;
        let took = fleet
            .resumed(&in_flight, killed, Duration::from_secs(120))
            .await;
        eprintln!(
            "[faults] SIGKILL: {} tasks and {} goals in flight resumed {:.1} s after the kill",
            in_flight.0.len(),
            in_flight.1.len(),
            took.as_secs_f64()
        );
        resumes.push(took);
    }
    let statuses = fleet.run_to_the_end(&goals, SETTLE).await;
    assert!(
        statuses.iter().all(|s| s == "completed"),
        "every goal completes: {statuses:?}"
    );
    let figures = fleet.invariants(&goals).await;
    print_figures("runner killed 3 times", &figures);
    assert_eq!(
        figures.dead_letters,
        [0, 0, 0],
        "no healthy message dead-lettered"
    );
    let slowest = resumes.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < RESUME_WITHIN,
        "in-flight work resumed within {RESUME_WITHIN:?} of each kill: {resumes:?}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_bluesky_duplicated_messages_and_a_killed_runner_post_each_approval_once() {
    let _serial = SERIAL.lock().await;
    let mut fleet = Fleet::new(3).await;
    fleet.on_bluesky().await;
    // Every task and review message delivered three times (through taps, as in the duplicate
    // case), and the runner killed with SIGKILL while approved effects are in flight.
    let taps = taps(&mut fleet).await;
    let duplicator = duplicate(&fleet, taps.clone(), Seen::default());
    fleet.start_runner().await;
    let mut goals = fleet.submit_mix(9).await;
    until_committed(&fleet, 0, 3).await;
    fleet.approve_held().await;
    let in_flight = fleet.in_flight().await;
    let killed = Instant::now();
    fleet.kill_runner().await;
    fleet.start_runner().await;
    let took = fleet
        .resumed(&in_flight, killed, Duration::from_secs(120))
        .await;
    goals.extend(fleet.submit_mix(6).await);
    let statuses = fleet.run_to_the_end(&goals, SETTLE).await;
    assert!(
        statuses.iter().all(|s| s == "completed"),
        "every goal completes: {statuses:?}"
    );
    // The records on the PDS are the approvals, each once (`invariants` counts them).
    let figures = fleet.invariants(&goals).await;
    print_figures("on Bluesky, duplicated and killed", &figures);
    // 15 goals: 5 campaigns and 5 replies on Bluesky, 5 payments in the world.
    assert_eq!(
        figures.on_bluesky, 10,
        "posts and replies are records: {figures:?}"
    );
    eprintln!(
        "[faults] on Bluesky: in-flight work resumed {:.1} s after the kill",
        took.as_secs_f64()
    );
    assert_eq!(
        figures.dead_letters,
        [0, 0, 0],
        "no healthy message dead-lettered"
    );
    duplicator.abort();
    fleet.stop().await;
}

fn restart_postgres() {
    let status = Command::new(repo_root().join("scripts/stack"))
        .args(["restart", "postgres"])
        .status()
        .expect("running scripts/stack restart postgres");
    assert!(status.success(), "scripts/stack restart postgres failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restarted_mid_run_loses_no_goal() {
    let _serial = SERIAL.lock().await;
    let mut fleet = Fleet::new(3).await;
    fleet.start_runner().await;
    let mut goals = Vec::new();
    for _ in 0..2 {
        let before = committed(&fleet).await;
        goals.extend(fleet.submit_mix(12).await);
        until_committed(&fleet, before, 3).await;
        fleet.approve_held().await;
        let restarted = Instant::now();
        restart_postgres();
        eprintln!(
            "[faults] PostgreSQL restarted in {:.1} s with work in flight",
            restarted.elapsed().as_secs_f64()
        );
    }
    let statuses = fleet.run_to_the_end(&goals, SETTLE).await;
    assert!(
        statuses.iter().all(|s| s == "completed"),
        "every goal completes: {statuses:?}"
    );
    let figures = fleet.invariants(&goals).await;
    print_figures("database restarted twice", &figures);
    assert_eq!(
        figures.dead_letters,
        [0, 0, 0],
        "no healthy message dead-lettered"
    );
    fleet.stop().await;
}

/// What went through the taps, by queue.
type Seen = Arc<Mutex<HashMap<&'static str, Vec<String>>>>;

/// Tap queues for the task and review queues: the runners of `fleet` send there (the queue
/// URLs are configuration) and consume the real queues.
async fn taps(fleet: &mut Fleet) -> [(Queue, String); 2] {
    let mut taps = Vec::new();
    for queue in [Queue::Task, Queue::Review] {
        let name = format!("{}-tap-{}", fleet.names.stage(), queue.as_str());
        let url = fleet
            .clients
            .sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        fleet
            .runner_env
            .push((queue.url_env().to_owned(), url.clone()));
        taps.push((queue, url));
    }
    taps.try_into().expect("two taps")
}

/// Moves every message of the tap queues into the real ones, three copies each; records the
/// bodies.
fn duplicate(fleet: &Fleet, taps: [(Queue, String); 2], seen: Seen) -> tokio::task::JoinHandle<()> {
    let sqs = fleet.clients.sqs.clone();
    let names = fleet.names.clone();
    let clients = fleet.clients.clone();
    tokio::spawn(async move {
        let mut targets = Vec::new();
        for (queue, tap) in &taps {
            let real = chimera_aws::bootstrap::queue_url(&clients, &names.queue(*queue))
                .await
                .unwrap();
            targets.push((*queue, tap.clone(), real));
        }
        loop {
            for (queue, tap, real) in &targets {
                let Ok(got) = sqs
                    .receive_message()
                    .queue_url(tap)
                    .max_number_of_messages(10)
                    .wait_time_seconds(0)
                    .send()
                    .await
                else {
                    continue;
                };
                for m in got.messages() {
                    let body = m.body().unwrap_or_default().to_owned();
                    for _ in 0..3 {
                        sqs.send_message()
                            .queue_url(real)
                            .message_body(&body)
                            .send()
                            .await
                            .expect("sending a copy");
                    }
                    sqs.delete_message()
                        .queue_url(tap)
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .send()
                        .await
                        .expect("deleting from the tap");
                    seen.lock()
                        .await
                        .entry(queue.as_str())
                        .or_default()
                        .push(body);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn send(fleet: &Fleet, queue: Queue, body: &str) {
    let url = chimera_aws::bootstrap::queue_url(&fleet.clients, &fleet.names.queue(queue))
        .await
        .unwrap();
    fleet
        .clients
        .sqs
        .send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .unwrap();
}

/// The first task message seen at the tap that `pick` accepts.
async fn seen_task(seen: &Seen, pick: impl Fn(&chimera_core::domain::Task) -> bool) -> TaskMessage {
    chimera_tests::eventually(
        Duration::from_secs(120),
        "a task message at the tap",
        || async {
            let seen = seen.lock().await;
            seen.get("task")
                .into_iter()
                .flatten()
                .filter_map(|b| envelope::decode::<TaskMessage>(b).ok())
                .find(|m| pick(&m.task))
                .ok_or_else(|| "not yet".to_owned())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicated_forged_and_altered_messages_change_nothing() {
    let _serial = SERIAL.lock().await;
    const MARK: &str = "FORGED-7c1d";
    let mut fleet = Fleet::new(3).await;
    // Producers send to taps (the queue URLs are configuration); the runner consumes the real
    // queues; the test moves each message from tap to queue three times.
    let taps = taps(&mut fleet).await;
    let seen: Seen = Arc::default();
    let duplicator = duplicate(&fleet, taps.clone(), seen.clone());
    fleet.start_runner().await;
    let goals = fleet.submit_mix(12).await;
    fleet.run_to_the_end(&goals[..3], SETTLE).await;

    // Forgeries and alterations, each naming MARK somewhere a tool would see it.
    let research = seen_task(&seen, |t| t.kind.as_str() == "research").await;
    let mut altered_research = research.task.clone();
    altered_research
        .inputs
        .insert("query".into(), json!(format!("{MARK} research")));
    let execute = seen_task(&seen, |t| {
        t.kind.as_str() == "execute" && t.inputs["action"] == "social.reply"
    })
    .await;
    let mut altered_execute = execute.task.clone();
    altered_execute.inputs["arguments"]["text"] = json!(format!("{MARK} altered reply"));
    let mut forged_execute = execute.task.clone();
    forged_execute.id = TaskId(uuid::Uuid::new_v4());
    forged_execute.approval_id = Some(chimera_core::domain::ReviewId(uuid::Uuid::new_v4()));
    forged_execute.inputs["arguments"]["text"] = json!(format!("{MARK} forged reply"));
    let mut unknown = research.task.clone();
    unknown.id = TaskId(uuid::Uuid::new_v4());
    unknown
        .inputs
        .insert("query".into(), json!(format!("{MARK} unknown")));
    let forged_tasks: Vec<String> = [altered_research, altered_execute, forged_execute, unknown]
        .into_iter()
        .map(|task| envelope::encode(&TaskMessage { task }))
        .collect();
    for body in &forged_tasks {
        send(&fleet, Queue::Task, body).await;
    }
    // A result altered after hashing, and one re-hashed for a task that does not exist.
    let result: TaskResult =
        chimera_tests::eventually(Duration::from_secs(60), "a result at the tap", || async {
            let seen = seen.lock().await;
            seen.get("review")
                .into_iter()
                .flatten()
                .filter_map(|b| match envelope::decode::<ResultMessage>(b) {
                    Ok(ResultMessage::Inline { result }) => Some(result),
                    _ => None,
                })
                .next()
                .ok_or_else(|| "not yet".to_owned())
        })
        .await;
    let mut tampered = result.clone();
    tampered.confidence_score = chimera_core::domain::Confidence::try_from(0.99).unwrap();
    tampered.attempt += 7;
    let mut orphan = result.clone();
    orphan.task_id = TaskId(uuid::Uuid::new_v4());
    orphan.commit_hash = orphan.compute_commit_hash();
    let mut forged_results: Vec<String> = [tampered, orphan]
        .into_iter()
        .map(|result| envelope::encode(&ResultMessage::Inline { result }))
        .collect();
    // A re-judging of a held item that does not exist.
    forged_results.push(envelope::encode(&ResultMessage::Rejudge {
        review_id: chimera_core::domain::ReviewId(uuid::Uuid::new_v4()),
        policy_version: 2,
    }));
    for body in &forged_results {
        send(&fleet, Queue::Review, body).await;
    }
    let replan = |task_id, attempt| {
        envelope::encode(&PlannerMessage::Replan {
            task_id,
            attempt: Some(attempt),
            feedback: format!("{MARK} forged replan"),
            fresh_versions: Default::default(),
        })
    };
    let forged_goals = vec![
        envelope::encode(&PlannerMessage::Goal {
            goal_id: GoalId(uuid::Uuid::new_v4()),
        }),
        // A replan of a task that does not exist, and one after an attempt a task never made.
        replan(TaskId(uuid::Uuid::new_v4()), 1),
        replan(execute.task.id, 9),
    ];
    for body in &forged_goals {
        send(&fleet, Queue::Goal, body).await;
    }

    let statuses = fleet.run_to_the_end(&goals, SETTLE).await;
    assert!(
        statuses.iter().all(|s| s == "completed"),
        "every goal completes: {statuses:?}"
    );
    // The forgeries, and only they, end in the dead-letter queues.
    for (queue, expected) in [
        (Queue::Task, &forged_tasks),
        (Queue::Review, &forged_results),
        (Queue::Goal, &forged_goals),
    ] {
        let fleet = &fleet;
        let want = expected.len() as i64;
        chimera_tests::eventually(
            Duration::from_secs(120),
            "forgeries dead-lettered",
            || async move {
                let depth = fleet.depth(queue, true).await;
                if depth == want {
                    Ok(())
                } else {
                    Err(format!("{queue} DLQ holds {depth}, expected {want}"))
                }
            },
        )
        .await;
        let mut got = fleet.dead_letters(queue).await;
        let mut want = expected.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{queue} DLQ holds exactly the forged messages");
    }
    let touched: i64 = sqlx::query_scalar(
        "select count(*) from world.calls where arguments::text like '%' || $1 || '%'",
    )
    .bind(MARK)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    assert_eq!(
        touched, 0,
        "no tool was called for a forged or altered message"
    );
    let logs = fleet.logs();
    for reason in [
        "a replan for task",
        "which does not exist",
        "a replan after attempt 9",
        "a re-judging of review",
    ] {
        assert!(
            logs.contains(reason),
            "the refusal says why ({reason}):\n{}",
            tail(&logs, 40)
        );
    }
    assert!(
        logs.matches("task message refused before any tool call")
            .count()
            >= forged_tasks.len(),
        "each refusal is logged with its reason:\n{}",
        tail(&logs, 40)
    );
    let figures = fleet.invariants(&goals).await;
    print_figures("every message three times, forgeries injected", &figures);
    assert_eq!(
        figures.dead_letters,
        [
            forged_goals.len() as i64,
            forged_tasks.len() as i64,
            forged_results.len() as i64
        ],
        "only the forgeries are dead-lettered"
    );
    duplicator.abort();
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_lost_while_the_runner_was_down_are_sent_again_by_the_reconciler() {
    let _serial = SERIAL.lock().await;
    let mut fleet = Fleet::new(3).await;
    fleet.start_runner().await;
    let goals = fleet.submit_mix(12).await;
    until_committed(&fleet, 0, 3).await;
    fleet.approve_held().await;
    fleet.kill_runner().await;
    // Every message in the queues is lost: received and deleted as they come, those the killed
    // runner held included (they return within one lease step). (PurgeQueue would also take
    // messages sent up to a minute after it.)
    for queue in Queue::ALL {
        let fleet = &fleet;
        let url = chimera_aws::bootstrap::queue_url(&fleet.clients, &fleet.names.queue(queue))
            .await
            .unwrap();
        let url = &url;
        chimera_tests::eventually(Duration::from_secs(90), "queues emptied", || async move {
            let got = fleet
                .clients
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            for m in got.messages() {
                fleet
                    .clients
                    .sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let depth = fleet.depth(queue, false).await;
            if depth == 0 {
                Ok(())
            } else {
                Err(format!("{queue} holds {depth}"))
            }
        })
        .await;
    }
    // The reconciler, run as if its budgets had passed, finds the work that stopped moving.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let backlog = fleet.backlog().await;
    assert_eq!(
        (backlog.goal, backlog.task, backlog.review),
        (Some(0), Some(0), Some(0))
    );
    let reconciled = reconcile::reconcile(&fleet.db.pool, later, 1000, backlog)
        .await
        .unwrap();
    eprintln!("[faults] reconciler after the loss: {reconciled:?}");
    assert!(!reconciled.is_empty(), "the lost work was found");
    assert!(
        reconciled.given_up.is_empty(),
        "nothing given up: {reconciled:?}"
    );
    fleet.start_runner().await;
    let statuses = fleet.run_to_the_end(&goals, SETTLE).await;
    assert!(
        statuses.iter().all(|s| s == "completed"),
        "every goal completes: {statuses:?}"
    );
    let redrives: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'system.redrive' and actor = 'system'",
    )
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    assert!(redrives > 0, "each redrive is audited");
    let figures = fleet.invariants(&goals).await;
    print_figures("queues emptied, reconciled", &figures);
    assert_eq!(
        figures.dead_letters,
        [0, 0, 0],
        "no healthy message dead-lettered"
    );
    fleet.stop().await;
}

/// Ages the work that waits in the queues past the reconciler's budgets, as a backlog of hours
/// would: goals not planned, task attempts no worker took up since they were sent, and results
/// not judged. What a worker took up keeps its time.
const AGE: [&str; 4] = [
    "update goals set updated_at = updated_at - interval '1 hour'
         where status = 'received' and updated_at > now() - interval '30 minutes'",
    "update tasks set updated_at = updated_at - interval '1 hour'
         where status = 'queued' and (received_at is null or received_at < updated_at)
           and updated_at > now() - interval '30 minutes'",
    "update results r set created_at = created_at - interval '1 hour'
         from tasks t
         where t.id = r.task_id and t.attempt = r.attempt and t.status = 'queued'
           and r.created_at > now() - interval '30 minutes'",
    "update tasks t set updated_at = t.updated_at - interval '1 hour'
         from results r
         where r.task_id = t.id and r.attempt = t.attempt and t.status = 'queued'
           and t.updated_at > now() - interval '30 minutes'",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_older_than_the_redrive_threshold_is_waited_out_and_only_a_lost_message_is_sent_again()
 {
    let _serial = SERIAL.lock().await;
    let mut fleet = Fleet::new(6).await;
    // One poller per queue, sweeping every 5 s: a few hundred goals make a backlog.
    fleet.concurrency = "planner=1,worker=1,judge=1".into();
    fleet.start_runner().await;
    let goals = fleet.submit_mix(240).await;
    // One task message is lost from the middle of the backlog: received and deleted.
    let url = chimera_aws::bootstrap::queue_url(&fleet.clients, &fleet.names.queue(Queue::Task))
        .await
        .unwrap();
    let lost: TaskId = {
        let (fleet, url) = (&fleet, &url);
        chimera_tests::eventually(
            Duration::from_secs(60),
            "a task message taken",
            || async move {
                let got = fleet
                    .clients
                    .sqs
                    .receive_message()
                    .queue_url(url)
                    .max_number_of_messages(1)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(message) = got.messages().first() else {
                    return Err("the task queue is empty".into());
                };
                fleet
                    .clients
                    .sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let sent: TaskMessage = envelope::decode(message.body().unwrap_or_default())
                    .map_err(|e| e.to_string())?;
                Ok(sent.task.id)
            },
        )
        .await
    };
    // While the runner works through the backlog, everything waiting is older than the budgets.
    let ager = {
        let pool = fleet.db.pool.clone();
        tokio::spawn(async move {
            loop {
                for sql in AGE {
                    sqlx::query(sql).execute(&pool).await.ok();
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let deepest = fleet.depth(Queue::Task, false).await;
    let statuses = fleet.run_to_the_end(&goals, SETTLE).await;
    ager.abort();
    assert!(
        statuses.iter().all(|s| s == "completed"),
        "every goal completes: {statuses:?}"
    );
    let redrives: Vec<(Option<uuid::Uuid>, String)> = sqlx::query_as(
        "select task_id, reasoning from audit_log where action = 'system.redrive' order by id",
    )
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    eprintln!(
        "[faults] backlog: {} goals, task queue {deepest} deep after submission; re-sends: {redrives:?}",
        goals.len()
    );
    assert_eq!(
        redrives.iter().map(|r| r.0).collect::<Vec<_>>(),
        [Some(lost.0)],
        "only the lost message was sent again: {redrives:?}"
    );
    assert!(
        redrives[0]
            .1
            .contains("never taken up while its queue held nothing"),
        "{redrives:?}"
    );
    let logs = fleet.logs();
    for noise in [
        "stale task message: dropped",
        "already done: sending its result again",
    ] {
        assert_eq!(logs.matches(noise).count(), 0, "{noise}");
    }
    let figures = fleet.invariants(&goals).await;
    print_figures("a backlog past the budgets, one message lost", &figures);
    assert_eq!(figures.dead_letters, [0, 0, 0], "nothing dead-lettered");
    fleet.stop().await;
}
