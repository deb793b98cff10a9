//! The swarm with the local model (`scripts/bench mind`): `BENCH_GOALS` reply goals (12), one
//! at a time through the whole pipeline (the model plans, the worker drafts with it, the judge
//! checks and scores with it, the effect is performed or held). For each goal the clock runs
//! from the goal's creation until its last change (the database's clock); the model's own time is the sum of its calls'
//! latencies, measured around the model port; the handlers' time is what the runner measured
//! around each invocation (what Lambda would bill); the CPU time is this process's (the runner
//! and the handlers), less what it burns idle. It prints, per goal and per task: the
//! model's time, Chimera's time beyond it (target <= 10 ms median per task), split into the
//! time in Chimera's handlers beyond the model and the time between handlers (queue hops: the
//! relay's send, the long poll's receive, the delete), Chimera's CPU time, and the tokens.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chimera_core::domain::GoalId;
use chimera_core::names::Queue;
use chimera_llm::{ChatRequest, ChatResponse, LanguageModel, LlmError};
use chimera_tests::bench_setting;
use chimera_tests::swarm::{SETTLED, Swarm, SwarmOptions, local_model};
use futures::future::BoxFuture;
use serde_json::json;

/// The model, with each call's latency and tokens recorded.
struct Timed {
    inner: Arc<dyn LanguageModel>,
    calls: Mutex<Vec<(Duration, u32)>>,
}

impl LanguageModel for Timed {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, LlmError>> {
        Box::pin(async move {
            let started = Instant::now();
            let answer = self.inner.chat(request).await;
            let tokens = answer
                .as_ref()
                .map_or(0, |a| a.usage.input_tokens + a.usage.output_tokens);
            if let Ok(mut calls) = self.calls.lock() {
                calls.push((started.elapsed(), tokens));
            }
            answer
        })
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// CPU time of this process (every thread, the finished ones included): the runner, the
/// handlers, their SDK and database clients. The services (PostgreSQL, LocalStack, DynamoDB
/// Local, the model server, the MCP server) are other processes.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given and returns 0 on
    // success; RUSAGE_SELF cannot fail.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// One goal's figures, in milliseconds per task unless named otherwise.
struct Figures {
    tasks: usize,
    calls: usize,
    tokens: u32,
    model_ms: f64,
    beyond_ms: f64,
    handlers_ms: f64,
    hops_ms: f64,
    cpu_ms: f64,
}

#[tokio::main]
async fn main() {
    // RUST_LOG=sqlx::query=debug (for one goal) shows where a task's time goes.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let goals = bench_setting("BENCH_GOALS", 12);
    let timed = Arc::new(Timed {
        inner: local_model(),
        calls: Mutex::new(Vec::new()),
    });
    let mut swarm = Swarm::new(SwarmOptions {
        model: Some(timed.clone()),
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    // What the process burns doing nothing (long polls, the relay's tick, this bench's own
    // polling), subtracted from each goal's CPU time.
    let (idle_started, idle_cpu) = (Instant::now(), cpu_time());
    settled_for(&swarm, Duration::from_secs(3)).await;
    let idle_rate = (cpu_time() - idle_cpu).as_secs_f64() / idle_started.elapsed().as_secs_f64();
    println!("mind: {goals} reply goals, one at a time, through the swarm with the local model");
    println!(
        "idle: the process uses {:.1} ms of CPU per second waiting",
        idle_rate * 1000.0
    );
    let mut figures = Vec::new();
    for i in 0..goals {
        let f = one_goal(&swarm, &timed, i, idle_rate).await;
        println!(
            "  goal {i:>2}: {} tasks, {} model calls, {} tokens; per task: {:>6.0} ms in the model, {:>5.0} ms beyond it ({:>4.0} in handlers, {:>4.0} between them), {:>5.1} ms of CPU",
            f.tasks, f.calls, f.tokens, f.model_ms, f.beyond_ms, f.handlers_ms, f.hops_ms, f.cpu_ms
        );
        figures.push(f);
    }
    let column = |pick: fn(&Figures) -> f64| median(figures.iter().map(pick).collect());
    let calls: usize = figures.iter().map(|f| f.calls).sum();
    let tasks: usize = figures.iter().map(|f| f.tasks).sum();
    println!("model calls: {calls} for {tasks} tasks; medians per task:");
    println!(
        "  the model's time:                 {:>8.1} ms",
        column(|f| f.model_ms)
    );
    println!(
        "  wall time beyond the model:       {:>8.1} ms",
        column(|f| f.beyond_ms)
    );
    println!(
        "    in Chimera's handlers:          {:>8.1} ms (mostly awaiting SQS, DynamoDB, S3, PostgreSQL, MCP)",
        column(|f| f.handlers_ms)
    );
    println!(
        "    between handlers:               {:>8.1} ms (the relay's send, the long poll)",
        column(|f| f.hops_ms)
    );
    println!(
        "  Chimera's CPU beyond idle:        {:>8.1} ms (target <= 10 ms)",
        column(|f| f.cpu_ms)
    );
    println!(
        "  tokens:                           {:>8.0}",
        column(|f| f64::from(f.tokens) / f.tasks as f64)
    );
    swarm.stop().await;
}

/// Submits reply goal `i`, waits until it is settled and every invocation it caused returned,
/// and measures it.
async fn one_goal(swarm: &Swarm, timed: &Timed, i: usize, idle_rate: f64) -> Figures {
    let busy = || -> Duration {
        [Queue::Goal, Queue::Task, Queue::Review]
            .into_iter()
            .map(|q| swarm.running().counts(q).busy)
            .sum()
    };
    timed.calls.lock().unwrap().clear();
    let (started, busy_before, cpu_before) = (Instant::now(), busy(), cpu_time());
    let goal = swarm
        .submit(
            0,
            "reply",
            &format!("thank reader {i} for the kind words about our lanterns"),
            json!({"platforms": ["x"], "in_reply_to": format!("post-{i}")}),
        )
        .await;
    let (tasks, elapsed) = settled(swarm, goal).await;
    // The runner counts an invocation's time when it returns, before it deletes the messages.
    for queue in [Queue::Goal, Queue::Task, Queue::Review] {
        swarm
            .wait_depth(queue, false, 0, Duration::from_secs(60))
            .await;
    }
    let cpu = (cpu_time() - cpu_before).as_secs_f64() - idle_rate * started.elapsed().as_secs_f64();
    let in_handlers = busy() - busy_before;
    let calls = std::mem::take(&mut *timed.calls.lock().unwrap());
    let model: Duration = calls.iter().map(|(d, _)| *d).sum();
    let per_task = |d: Duration| d.as_secs_f64() * 1000.0 / tasks as f64;
    Figures {
        tasks,
        calls: calls.len(),
        tokens: calls.iter().map(|(_, t)| *t).sum(),
        model_ms: per_task(model),
        beyond_ms: per_task(elapsed.saturating_sub(model)),
        handlers_ms: per_task(in_handlers.saturating_sub(model)),
        hops_ms: per_task(elapsed.saturating_sub(in_handlers)),
        cpu_ms: cpu.max(0.0) * 1000.0 / tasks as f64,
    }
}

/// Polls the database as [`settled`] does for `period`, with nothing to wait for.
async fn settled_for(swarm: &Swarm, period: Duration) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        let _: i64 = sqlx::query_scalar("select count(*) from goals")
            .fetch_one(&swarm.db.pool)
            .await
            .unwrap();
        tokio::time::sleep(POLL).await;
    }
}

/// How often the bench looks at the database: seldom, so that its own work hardly shows in
/// the CPU time; the times it reports are the database's, not the polls'.
const POLL: Duration = Duration::from_millis(100);

/// Waits (polling every [`POLL`]) until `goal` is settled and none of its tasks moves; returns how
/// many tasks it ran (the effect's `execute` task included) and the time from the goal's
/// creation to its last change, by the database's clock.
async fn settled(swarm: &Swarm, goal: GoalId) -> (usize, Duration) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, moving, tasks, seconds): (String, i64, i64, f64) = sqlx::query_as(
            "select g.status::text,
                    count(t.id) filter (where t.status in ('ready', 'queued', 'running', 'retrying')),
                    count(t.id),
                    extract(epoch from greatest(g.updated_at, max(t.updated_at)) - g.created_at)::float8
             from goals g left join tasks t on t.goal_id = g.id where g.id = $1
             group by g.status, g.updated_at, g.created_at",
        )
        .bind(goal.0)
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap();
        if SETTLED.contains(&status.as_str()) && moving == 0 {
            return (tasks as usize, Duration::from_secs_f64(seconds.max(0.0)));
        }
        assert!(Instant::now() < deadline, "goal {} did not settle", goal.0);
        tokio::time::sleep(POLL).await;
    }
}
