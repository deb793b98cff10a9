//! A fleet through the local pipeline (`scripts/bench fleet`): `BENCH_AGENTS` agents (1,000)
//! onboarded through the API from SOUL.md and AGENTS.md documents, each with a budget, then
//! `BENCH_GOALS_PER_AGENT` goals each (10): campaigns over two platforms, replies to distinct
//! posts across five platforms, small paid actions, submitted through the API by
//! `BENCH_CLIENTS` concurrent clients (32), run by the runner with `BENCH_POLLERS` pollers per
//! function (4). It prints the submit rate, the time until every goal is settled, goals/s and
//! tasks/s, task attempts, conflicts and wasted work (conflicted attempts / attempts), the
//! requests counted by service per task (what `docs/capacity.md` prices), and the queue and
//! DLQ depths at the end. Targets: every goal settled, wasted work < 5%, nothing healthy in a
//! DLQ.

use std::time::{Duration, Instant};

use chimera_core::names::Queue;
use chimera_runner::SourceSettings;
use chimera_tests::bench_setting;
use chimera_tests::swarm::{SETTLED, Swarm, SwarmOptions};
use futures::StreamExt;
use serde_json::{Value, json};

const SOUL: &str = "---
name: Fleet agent
voice: warm and brief
topics: [gaming, tea]
---
## Bio
One of many agents of a fleet: short posts about what the brand does.
";

/// Finance is not sensitive for this fleet: its small payments are within the spend limits
/// and go without a person; replies and posts stay within the platforms' default quotas.
const AGENTS: &str = "---
auto_approve_above: 0.9
review_at_or_above: 0.7
sensitive_topics: [politics, health]
max_attempts: 3
spend:
  per_transfer_cents: 1000
  per_day_cents: 5000
---
# Fleet rules
Small payments to vendors go without a person, within the limits above.
";

const CAMPAIGN: &str = "retro gaming night";
const REPLY: &str = "thanks for the kind words";
const PAY: &str = "pay the vendor for the stream overlay";
const REPLY_PLATFORMS: [&str; 5] = ["x", "threads", "bluesky", "linkedin", "instagram"];

/// The `i`th goal of agent number `agent`: (kind, text, constraints).
fn goal(agent: usize, i: usize) -> (&'static str, &'static str, Value) {
    match i % 10 {
        0..=2 => (
            "campaign",
            CAMPAIGN,
            json!({"platforms": if i.is_multiple_of(2) { ["x", "instagram"] } else { ["threads", "bluesky"] }}),
        ),
        3..=7 => (
            "reply",
            REPLY,
            json!({"platforms": [REPLY_PLATFORMS[i % 5]], "in_reply_to": format!("post-{agent}-{i}")}),
        ),
        _ => (
            "paid_action",
            PAY,
            json!({"pay_to": format!("vendor-{}", i % 3), "amount_cents": 100 + 50 * (i % 4)}),
        ),
    }
}

async fn scalar(swarm: &Swarm, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&swarm.db.pool)
        .await
        .expect(sql)
}

#[tokio::main]
async fn main() {
    let agents = bench_setting("BENCH_AGENTS", 1000);
    let per_agent = bench_setting("BENCH_GOALS_PER_AGENT", 10);
    let clients = bench_setting("BENCH_CLIENTS", 32);
    let pollers = bench_setting("BENCH_POLLERS", 4);
    let mut swarm = Swarm::new(SwarmOptions {
        agents: 0,
        settings: SourceSettings {
            concurrency: pollers,
            wait: Duration::from_secs(1),
            retry_after: Some(Duration::ZERO),
            ..SourceSettings::default()
        },
        // The sweep runs as the runner runs it: the reconciler must wait out the backlog.
        sweep_every: Some(Duration::from_secs(5)),
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    for text in [CAMPAIGN, REPLY, PAY] {
        swarm.script_quality(text, 0.95).await;
    }
    let http = reqwest::Client::new();
    let api = swarm.api().to_owned();
    let operator = swarm.token("fleet-operator", &["operator", "admin"]);
    println!(
        "fleet: {agents} agents x {per_agent} goals, {clients} clients, {pollers} pollers per function"
    );

    // Onboarding through the API: documents, then a budget.
    let started = Instant::now();
    let ids: Vec<String> = futures::stream::iter(0..agents)
        .map(|a| {
            let (http, api, operator) = (http.clone(), api.clone(), operator.clone());
            async move {
                let created: Value = http
                    .post(format!("{api}/agents"))
                    .bearer_auth(&operator)
                    .json(&json!({"handle": format!("fleet_{a}"), "display_name": format!("Fleet {a}"),
                                  "platforms": ["x", "threads", "bluesky", "instagram", "linkedin"],
                                  "soul_md": SOUL, "agents_md": AGENTS}))
                    .send()
                    .await
                    .expect("POST /agents")
                    .json()
                    .await
                    .expect("a JSON answer");
                let id = created["agent_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("onboarded: {created}"))
                    .to_owned();
                let budget = http
                    .put(format!("{api}/agents/{id}/budget"))
                    .bearer_auth(&operator)
                    .json(&json!({"currency": "USD", "balance_cents": 5_000}))
                    .send()
                    .await
                    .expect("PUT budget");
                assert!(budget.status().is_success(), "budget: {}", budget.status());
                id
            }
        })
        .buffered(clients)
        .collect()
        .await;
    let onboard = started.elapsed();
    println!(
        "onboarded {agents} agents in {onboard:.1?} ({:.0}/s)",
        agents as f64 / onboard.as_secs_f64()
    );

    // The goals, interleaved across agents.
    let before_db = db_counters(&swarm).await;
    let started = Instant::now();
    let submitted: Vec<String> = futures::stream::iter(
        (0..per_agent).flat_map(|i| ids.iter().enumerate().map(move |(a, id)| (a, id.clone(), i))),
    )
    .map(|(a, id, i)| {
        let (http, api, operator) = (http.clone(), api.clone(), operator.clone());
        async move {
            let (kind, text, constraints) = goal(a, i);
            let answer: Value = http
                .post(format!("{api}/goals"))
                .bearer_auth(&operator)
                .header("Idempotency-Key", format!("fleet-{a}-{i}"))
                .json(&json!({"agent_id": id, "kind": kind, "text": text, "constraints": constraints}))
                .send()
                .await
                .expect("POST /goals")
                .json()
                .await
                .expect("a JSON answer");
            answer["goal_id"]
                .as_str()
                .unwrap_or_else(|| panic!("submitted: {answer}"))
                .to_owned()
        }
    })
    .buffer_unordered(clients)
    .collect()
    .await;
    let submit = started.elapsed();
    println!(
        "submitted {} goals in {submit:.1?} ({:.0} goals/s)",
        submitted.len(),
        submitted.len() as f64 / submit.as_secs_f64()
    );

    // Until every goal is settled, with progress every 10 s.
    let mut last_report = Instant::now();
    let settled_in = loop {
        let unsettled: i64 = sqlx::query_scalar(
            "select count(*) from goals g where not (g.status::text = any ($1)) or exists
               (select 1 from tasks t where t.goal_id = g.id
                 and t.status in ('ready', 'queued', 'running', 'retrying')
                 and coalesce(t.not_before, now()) <= now() + interval '15 minutes')",
        )
        .bind(SETTLED.map(str::to_owned).to_vec())
        .fetch_one(&swarm.db.pool)
        .await
        .expect("counting goals");
        if unsettled == 0 {
            break started.elapsed();
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            let committed = scalar(
                &swarm,
                "select count(*) from tasks where status = 'committed'",
            )
            .await;
            println!(
                "  {:>6.0} s: {unsettled} goals unsettled, {committed} tasks committed",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let after_db = db_counters(&swarm).await;

    let goals = submitted.len() as f64;
    let tasks = scalar(&swarm, "select count(*) from tasks").await;
    let attempts = scalar(
        &swarm,
        "select coalesce(sum(attempt), 0)::bigint from tasks",
    )
    .await;
    let conflicts = scalar(
        &swarm,
        "select coalesce(sum(conflicts), 0)::bigint from tasks",
    )
    .await;
    let deferred = scalar(
        &swarm,
        "select count(*) from tasks where status = 'queued' and not_before > now()",
    )
    .await;
    println!(
        "settled in {settled_in:.1?} after the first submission: {:.1} goals/s, {:.1} tasks/s",
        goals / settled_in.as_secs_f64(),
        tasks as f64 / settled_in.as_secs_f64()
    );
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("select status::text, count(*) from goals group by 1 order by 1")
            .fetch_all(&swarm.db.pool)
            .await
            .expect("statuses");
    println!("goals by status: {statuses:?}");
    let held: Vec<(String, String, i64)> = sqlx::query_as(
        "select t.kind::text, array_to_string(v.risk_types, ','), count(*) from reviews v
         join tasks t on t.id = v.task_id where v.status = 'pending' group by 1, 2 order by 1, 2",
    )
    .fetch_all(&swarm.db.pool)
    .await
    .expect("held items");
    println!("held for a person (kind, why, count): {held:?}");
    let retried: Vec<(String, i64)> = sqlx::query_as(
        "select kind::text, sum(attempt - 1 - conflicts)::bigint from tasks
         where attempt - 1 - conflicts > 0 group by 1 order by 1",
    )
    .fetch_all(&swarm.db.pool)
    .await
    .expect("retries");
    println!("attempts retried on the judge's feedback, by kind: {retried:?}");
    println!(
        "tasks: {tasks}, attempts: {attempts}, conflicts: {conflicts}, wasted work: {:.2}% (target < 5%), effects deferred by quotas: {deferred}",
        100.0 * conflicts as f64 / attempts.max(1) as f64
    );

    // Requests by service, per task (the capacity model's inputs).
    let messages = scalar(
        &swarm,
        "select count(*) from outbox where sent_at is not null",
    )
    .await;
    let objects = scalar(&swarm, "select count(*) from assets").await;
    let invocations: u64 = Queue::ALL
        .iter()
        .map(|q| swarm.running().counts(*q).batches)
        .sum();
    let handled: u64 = Queue::ALL
        .iter()
        .map(|q| swarm.running().counts(*q).received)
        .sum();
    let per_task = |n: f64| n / tasks.max(1) as f64;
    println!(
        "per task: {:.2} SQS messages sent, {:.2} handler invocations ({:.2} messages handled), {:.2} S3 objects written, {:.2} DynamoDB claims, {:.1} PostgreSQL transactions",
        per_task(messages as f64),
        per_task(invocations as f64),
        per_task(handled as f64),
        per_task(objects as f64),
        per_task(attempts as f64),
        per_task((after_db - before_db) as f64)
    );
    // The recovery path under load: re-sends by the reconciler, and task messages handled
    // beyond one per attempt (stale copies dropped, results sent again), all 0 when healthy.
    let resent: Vec<(String, i64)> = sqlx::query_as(
        "select case when action = 'system.give_up' then 'tasks given up'
                     when reasoning like '%was never planned%' then 'goals sent again'
                     when reasoning like '%its message is sent again%' then 'tasks sent again'
                     when reasoning like '%sent to the judge again%' then 'results sent again'
                     when reasoning like '%replan is sent again%' then 'replans sent again'
                     when reasoning like '%were never released%' then 'releases sent again'
                     else 'goals settled (not a re-send)' end, count(*)
         from audit_log where action in ('system.redrive', 'system.give_up') group by 1 order by 1",
    )
    .fetch_all(&swarm.db.pool)
    .await
    .expect("re-sends");
    let task_messages = swarm.running().counts(Queue::Task).received;
    println!(
        "reconciler re-sends: {resent:?}; task messages handled beyond one per attempt: {}",
        task_messages.saturating_sub(attempts as u64)
    );
    for queue in Queue::ALL {
        println!(
            "  {queue}: {} left in the queue, {} in its DLQ",
            swarm.depth(queue, false).await,
            swarm.depth(queue, true).await
        );
    }
    swarm.stop().await;
}

/// Transactions committed and rolled back in the bench's database so far.
async fn db_counters(swarm: &Swarm) -> i64 {
    sqlx::query_scalar(
        "select (xact_commit + xact_rollback)::bigint from pg_stat_database where datname = current_database()",
    )
    .fetch_one(&swarm.db.pool)
    .await
    .expect("pg_stat_database")
}
