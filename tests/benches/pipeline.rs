//! The swarm's end-to-end rate against what the local infrastructure allows, side by side in
//! one run (`scripts/bench pipeline`):
//!
//! - raw SQS: `BENCH_TASKS` messages through one queue of the same LocalStack, the way the
//!   pipeline moves a message (a `SendMessage` per message; `ReceiveMessage` of up to 10 and
//!   `DeleteMessageBatch`), by as many senders and receivers as the runner has pollers;
//! - raw PostgreSQL: the same number of conditional `UPDATE ... WHERE version = $n` by the same
//!   number of loops;
//! - the pipeline: `BENCH_TASKS` draft tasks (spread over goals of 20) put on the task queue,
//!   then the runner starts: the worker drafts each through the MCP server (stdio), stores the
//!   artifact in S3, claims and completes it in DynamoDB, records provenance, sends the result;
//!   the judge records, routes and commits it through OCC and settles its goal. The clock
//!   stops when every task is committed.
//!
//! It prints the three rates and the pipeline's ratio to the slower raw rate (target >= 50%).
//! Settings: BENCH_TASKS (2000), BENCH_POLLERS (pollers per function, 4).

use chimera_core::domain::TaskStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use chimera_aws::bootstrap::queue_url;
use chimera_core::domain::{Goal, GoalId, StateKey, Task, TaskId, TaskKind};
use chimera_core::envelope::{self, TaskMessage};
use chimera_core::names::Queue;
use chimera_runner::SourceSettings;
use chimera_store::{occ, records};
use chimera_tests::bench_setting;
use chimera_tests::swarm::{Swarm, SwarmOptions};
use serde_json::json;

#[tokio::main]
async fn main() {
    let tasks = bench_setting("BENCH_TASKS", 2000);
    let pollers = bench_setting("BENCH_POLLERS", 4);
    let mut swarm = Swarm::new(SwarmOptions {
        settings: SourceSettings {
            concurrency: pollers,
            wait: Duration::from_secs(1),
            retry_after: Some(Duration::from_secs(1)),
            ..SourceSettings::default()
        },
        ..SwarmOptions::default()
    })
    .await;
    println!("pipeline: {tasks} tasks, {pollers} pollers per function");

    let sqs = raw_sqs(&swarm, tasks, pollers).await;
    println!("raw SQS send/receive/delete:     {sqs:>8.1} messages/s");
    let pg = raw_pg(&swarm, tasks, pollers).await;
    println!("raw PostgreSQL conditional UPDATE:{pg:>8.1} updates/s");

    enqueue(&swarm, tasks).await;
    let start = Instant::now();
    swarm.run().await;
    let mut last = 0;
    loop {
        let committed: i64 = sqlx::query_scalar(
            "select count(*) from tasks where kind = 'draft' and status = 'committed'",
        )
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap();
        let failed: i64 = sqlx::query_scalar(
            "select count(*) from tasks where status in ('failed', 'awaiting_review')",
        )
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap();
        assert_eq!(failed, 0, "a bench task did not auto-approve");
        if committed as usize >= tasks {
            break;
        }
        if committed as usize / 500 > last / 500 {
            eprintln!(
                "  {committed} committed after {:.1} s",
                start.elapsed().as_secs_f64()
            );
        }
        last = committed as usize;
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "stuck at {committed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = start.elapsed().as_secs_f64();
    let rate = tasks as f64 / took;
    println!("pipeline end to end:             {rate:>8.1} tasks/s ({took:.1} s)");
    let slower = sqs.min(pg);
    println!(
        "ratio to the slower raw rate ({}): {:.1}% (target >= 50%)",
        if sqs <= pg { "SQS" } else { "PostgreSQL" },
        100.0 * rate / slower
    );
    let hops = 2.0;
    println!(
        "(each task makes {hops} queue round trips: task queue and review queue; per round trip the pipeline runs at {:.1}% of raw SQS)",
        100.0 * rate * hops / sqs
    );
    swarm.stop().await;
}

/// Messages per second through one queue: `pollers` senders and `pollers` receivers at once.
async fn raw_sqs(swarm: &Swarm, n: usize, pollers: usize) -> f64 {
    let url = queue_url(&swarm.clients, &swarm.names.dead_letter_queue(Queue::Goal))
        .await
        .unwrap();
    let sqs = swarm.clients.sqs.clone();
    let sent = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut jobs = Vec::new();
    for _ in 0..pollers {
        let (tx, tx_url, sent) = (sqs.clone(), url.clone(), sent.clone());
        jobs.push(tokio::spawn(async move {
            while sent.fetch_add(1, Ordering::Relaxed) < n {
                tx.send_message()
                    .queue_url(&tx_url)
                    .message_body(r#"{"schema_version":1,"message":{}}"#)
                    .send()
                    .await
                    .unwrap();
            }
        }));
        let (sqs, url, received) = (sqs.clone(), url.clone(), received.clone());
        jobs.push(tokio::spawn(async move {
            while received.load(Ordering::Relaxed) < n {
                let got = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .unwrap();
                let messages = got.messages();
                if messages.is_empty() {
                    continue;
                }
                let entries: Vec<_> = messages
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle().unwrap_or_default())
                            .build()
                            .unwrap()
                    })
                    .collect();
                sqs.delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .unwrap();
                received.fetch_add(messages.len(), Ordering::Relaxed);
            }
        }));
    }
    for job in jobs {
        job.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Conditional updates per second: `loops` loops, each on its own key.
async fn raw_pg(swarm: &Swarm, n: usize, loops: usize) -> f64 {
    let agent = swarm.agents[0];
    let per_loop = n.div_ceil(loops);
    let start = Instant::now();
    let mut jobs = Vec::new();
    for i in 0..loops {
        let pool = swarm.db.pool.clone();
        jobs.push(tokio::spawn(async move {
            let key = StateKey::parse(format!("raw:{i}")).unwrap();
            occ::read_versions(&pool, agent, std::slice::from_ref(&key))
                .await
                .unwrap();
            for version in 0..per_loop as i64 {
                let done = sqlx::query(
                    "update agent_state set version = version + 1, updated_at = now()
                     where agent_id = $1 and key = $2 and version = $3",
                )
                .bind(agent.0)
                .bind(key.as_str())
                .bind(version)
                .execute(&pool)
                .await
                .unwrap();
                assert_eq!(done.rows_affected(), 1);
            }
        }));
    }
    for job in jobs {
        job.await.unwrap();
    }
    (per_loop * loops) as f64 / start.elapsed().as_secs_f64()
}

/// `n` draft tasks, 20 per goal, each writing its own key, stored and put on the task queue.
async fn enqueue(swarm: &Swarm, n: usize) {
    let pool = &swarm.db.pool;
    let mut bodies = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(20) {
        let goal = Goal {
            id: GoalId::random(),
            tenant_id: swarm.tenant,
            agent_id: swarm.agents[0],
            kind: "campaign".into(),
            body: "retro gaming night".into(),
            constraints: Default::default(),
        };
        chimera_store::goals::submit(pool, &goal, None, "bench")
            .await
            .unwrap();
        sqlx::query("update goals set status = 'in_progress' where id = $1")
            .bind(goal.id.0)
            .execute(pool)
            .await
            .unwrap();
        for i in chunk * 20..((chunk + 1) * 20).min(n) {
            let task = Task {
                id: TaskId::random(),
                goal_id: goal.id,
                tenant_id: swarm.tenant,
                agent_id: swarm.agents[0],
                kind: TaskKind::Draft,
                attempt: 1,
                inputs: json!({"brief": format!("retro gaming night, teaser {i}"), "platform": "instagram",
                               "persona": {"name": "Nova", "voice": "warm"}})
                .as_object()
                .cloned()
                .unwrap(),
                depends_on: vec![],
                read_set: Default::default(),
                write_set: [StateKey::parse(format!("drafts:bench-{i}")).unwrap()].into(),
                feedback: None,
                approval_id: None,
            };
            records::insert_task(pool, &task, TaskStatus::Queued, 3)
                .await
                .unwrap();
            bodies.push(envelope::encode(&TaskMessage { task }));
        }
    }
    let url = queue_url(&swarm.clients, &swarm.names.queue(Queue::Task))
        .await
        .unwrap();
    for chunk in bodies.chunks(10) {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .unwrap()
            })
            .collect();
        swarm
            .clients
            .sqs
            .send_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
    }
}
