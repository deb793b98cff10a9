//! The swarm with the local model (`scripts/bench mind`): `BENCH_GOALS` reply goals (12), one
//! at a time through the whole pipeline after one that warms it up (the model plans, the
//! worker drafts with it, the judge checks and scores with it, the effect is performed or
//! held). For each goal the clock runs from the goal's creation until its last change (the
//! database's clock). It prints, per goal and per task:
//! - the model's time: its calls' latencies, measured around the model port;
//! - the wall time beyond it, split into the time in the functions' invocations (the runner's
//!   `invocation` span: the batch's lease, each message's handler, the relay's flush, the
//!   report; what Lambda would bill) and the time between them (queue hops: the SQS delivery
//!   and long poll, the delete);
//! - in each invocation, what it waited on, from tracing: PostgreSQL (sqlx's statements), SQS,
//!   DynamoDB and S3 (the SDK's operation spans), the MCP tools and the embedding model (their
//!   spans), each moment counted once however many were outstanding;
//! - Chimera's own time: in an invocation with none of its calls outstanding. That is its code
//!   and the runtime scheduling it, and the round trips sqlx does not log (a pool's acquire and
//!   its ping, `BEGIN`), so it errs high; the SDK's signing and the JSON of the calls count as
//!   waiting, tens to hundreds of microseconds a call. It is the overhead the target (<= 10 ms
//!   median per task) is about; the services' times are the local stack's (LocalStack,
//!   DynamoDB Local, PostgreSQL on two shared cores), not Chimera's;
//! - the process's CPU time less what it burns idle, and the tokens.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chimera_core::domain::GoalId;
use chimera_core::names::Queue;
use chimera_llm::{ChatRequest, ChatResponse, LanguageModel, LlmError};
use chimera_tests::bench_setting;
use chimera_tests::swarm::{SETTLED, Swarm, SwarmOptions, local_model};
use futures::future::BoxFuture;
use serde_json::json;
use tracing::Instrument;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

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
            let answer = self
                .inner
                .chat(request)
                .instrument(tracing::info_span!("model_call"))
                .await;
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

/// What a handler waited on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Postgres,
    Sqs,
    DynamoDb,
    S3,
    OtherAws,
    Tool,
    Embedding,
    Model,
}

const SERVICES: [(Wait, &str); 7] = [
    (Wait::Postgres, "PostgreSQL"),
    (Wait::Sqs, "SQS"),
    (Wait::DynamoDb, "DynamoDB"),
    (Wait::S3, "S3"),
    (Wait::OtherAws, "other AWS"),
    (Wait::Tool, "MCP tools"),
    (Wait::Embedding, "embeddings"),
];

type Interval = (Instant, Instant);

/// The invocations (numbered) and what each waited on, as they happened.
#[derive(Default)]
struct Timeline {
    invocations: Vec<(u64, Interval)>,
    waits: Vec<(Wait, u64, Interval)>,
}

/// A tracing layer filling a [`Timeline`]: the runner's `invocation` spans are the functions'
/// runs (the batch's lease, its messages' handlers, the relay's flush, the report); SDK
/// operation spans, `tool_call`, `embed` and `model_call` spans and sqlx's statement events
/// are waits, each counted for the invocation it happened in, and only there (the relay's
/// tick and this bench's polls are not a task's).
struct Recorder(Arc<Mutex<Timeline>>);

/// When a recorded span opened, what it is (`None`: an invocation) and its invocation.
struct Opened(Option<Wait>, Instant, u64);

/// Numbers the invocations (span ids are reused once closed).
static INVOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The number of the invocation the spans of `scope` (innermost first) belong to, if any.
fn invocation_of<'a, R: LookupSpan<'a> + 'a>(
    mut scope: impl Iterator<Item = tracing_subscriber::registry::SpanRef<'a, R>>,
) -> Option<u64> {
    scope.find_map(|s| {
        s.extensions()
            .get::<Opened>()
            .filter(|o| o.0.is_none())
            .map(|o| o.2)
    })
}

fn wait_of(name: &str, target: &str) -> Option<Wait> {
    match name {
        "tool_call" | "tool_session" => return Some(Wait::Tool),
        "embed" => return Some(Wait::Embedding),
        "model_call" => return Some(Wait::Model),
        _ => {}
    }
    if !(target.starts_with("aws_sdk_") && name.contains('.')) {
        return None;
    }
    Some(if target.starts_with("aws_sdk_sqs") {
        Wait::Sqs
    } else if target.starts_with("aws_sdk_dynamodb") {
        Wait::DynamoDb
    } else if target.starts_with("aws_sdk_s3") {
        Wait::S3
    } else {
        Wait::OtherAws
    })
}

impl<S> Layer<S> for Recorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        let Some(span) = ctx.span(id) else { return };
        let opened = if meta.name() == "invocation" {
            let number = INVOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Opened(None, Instant::now(), number)
        } else if let Some(wait) = wait_of(meta.name(), meta.target())
            && let Some(invocation) = invocation_of(span.scope().skip(1))
        {
            Opened(Some(wait), Instant::now(), invocation)
        } else {
            return;
        };
        span.extensions_mut().insert(opened);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        let Some(Opened(what, start, invocation)) = extensions.get::<Opened>() else {
            return;
        };
        let interval = (*start, Instant::now());
        let mut timeline = self.0.lock().unwrap();
        match what {
            None => timeline.invocations.push((*invocation, interval)),
            Some(wait) => timeline.waits.push((*wait, *invocation, interval)),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let Some(invocation) = ctx.event_scope(event).and_then(invocation_of) else {
            return;
        };
        struct Elapsed(Option<f64>);
        impl Visit for Elapsed {
            fn record_f64(&mut self, field: &Field, value: f64) {
                if field.name() == "elapsed_secs" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
        }
        let mut elapsed = Elapsed(None);
        event.record(&mut elapsed);
        if let Some(secs) = elapsed.0 {
            let end = Instant::now();
            let start = end - Duration::from_secs_f64(secs);
            self.0
                .lock()
                .unwrap()
                .waits
                .push((Wait::Postgres, invocation, (start, end)));
        }
    }
}

/// `intervals` merged, sorted, each moment once.
fn union(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.sort();
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for (start, end) in intervals {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn length(intervals: &[Interval]) -> Duration {
    intervals
        .iter()
        .map(|(s, e)| e.saturating_duration_since(*s))
        .sum()
}

/// How long two merged lists overlap.
fn overlap(a: &[Interval], b: &[Interval]) -> Duration {
    let (mut i, mut j, mut total) = (0, 0, Duration::ZERO);
    while i < a.len() && j < b.len() {
        let (start, end) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        total += end.saturating_duration_since(start);
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    total
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
    own_ms: f64,
    waiting_ms: f64,
    /// Per entry of [`SERVICES`].
    services_ms: Vec<f64>,
    hops_ms: f64,
    cpu_ms: f64,
}

#[tokio::main]
async fn main() {
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    // What the recorder needs, at the levels the spans and events are made at.
    let recorded = tracing_subscriber::filter::Targets::new()
        .with_target("chimera_runner", tracing::Level::INFO)
        .with_target("chimera_aws", tracing::Level::DEBUG)
        .with_target("chimera_mcp", tracing::Level::DEBUG)
        .with_target("aws_sdk_sqs", tracing::Level::DEBUG)
        .with_target("aws_sdk_dynamodb", tracing::Level::DEBUG)
        .with_target("aws_sdk_s3", tracing::Level::DEBUG)
        .with_target("aws_sdk_secretsmanager", tracing::Level::DEBUG)
        .with_target("aws_sdk_bedrockruntime", tracing::Level::DEBUG)
        .with_target("sqlx::query", tracing::Level::DEBUG)
        .with_target("mind", tracing::Level::INFO);
    // RUST_LOG=sqlx::query=debug (for one goal) also prints where a task's time goes.
    let printed = tracing_subscriber::EnvFilter::try_from_default_env()
        .ok()
        .map(|filter| tracing_subscriber::fmt::layer().with_filter(filter));
    tracing_subscriber::registry()
        .with(Recorder(timeline.clone()).with_filter(recorded))
        .with(printed)
        .try_init()
        .expect("the bench's tracing subscriber");
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
    // One goal first, not measured: the first connections, the MCP server's start, the
    // model server's first prompt.
    let warm_up = one_goal(&swarm, &timed, &timeline, goals, idle_rate).await;
    println!(
        "  warm-up goal: {} tasks, Chimera's own {:.1} ms per task (not counted)",
        warm_up.tasks, warm_up.own_ms
    );
    let mut figures = Vec::new();
    for i in 0..goals {
        let f = one_goal(&swarm, &timed, &timeline, i, idle_rate).await;
        println!(
            "  goal {i:>2}: {} tasks, {} model calls, {} tokens; per task: {:>6.0} ms in the model, {:>5.0} ms beyond it: {:>5.1} Chimera's own, {:>5.1} waiting on services, {:>4.0} between invocations; {:>5.1} ms of CPU",
            f.tasks,
            f.calls,
            f.tokens,
            f.model_ms,
            f.beyond_ms,
            f.own_ms,
            f.waiting_ms,
            f.hops_ms,
            f.cpu_ms
        );
        figures.push(f);
    }
    let column = |pick: &dyn Fn(&Figures) -> f64| median(figures.iter().map(pick).collect());
    let calls: usize = figures.iter().map(|f| f.calls).sum();
    let tasks: usize = figures.iter().map(|f| f.tasks).sum();
    println!("model calls: {calls} for {tasks} tasks; medians per task:");
    println!(
        "  the model's time:                 {:>8.1} ms",
        column(&|f| f.model_ms)
    );
    println!(
        "  wall time beyond the model:       {:>8.1} ms",
        column(&|f| f.beyond_ms)
    );
    println!(
        "    in the functions' invocations:  {:>8.1} ms",
        column(&|f| f.handlers_ms)
    );
    println!(
        "      Chimera's own time:           {:>8.1} ms (target <= 10 ms: no call outstanding)",
        column(&|f| f.own_ms)
    );
    println!(
        "      waiting on services:          {:>8.1} ms, of which (each counted once, they overlap):",
        column(&|f| f.waiting_ms)
    );
    for (i, (_, name)) in SERVICES.iter().enumerate() {
        println!(
            "        {name:<28} {:>8.1} ms",
            column(&|f| f.services_ms[i])
        );
    }
    println!(
        "    between invocations:            {:>8.1} ms (SQS delivery, the long poll)",
        column(&|f| f.hops_ms)
    );
    println!(
        "  Chimera's CPU beyond idle:        {:>8.1} ms",
        column(&|f| f.cpu_ms)
    );
    println!(
        "  tokens:                           {:>8.0}",
        column(&|f| f64::from(f.tokens) / f.tasks as f64)
    );
    swarm.stop().await;
}

/// Submits reply goal `i`, waits until it is settled and every invocation it caused returned,
/// and measures it.
async fn one_goal(
    swarm: &Swarm,
    timed: &Timed,
    timeline: &Mutex<Timeline>,
    i: usize,
    idle_rate: f64,
) -> Figures {
    timed.calls.lock().unwrap().clear();
    *timeline.lock().unwrap() = Timeline::default();
    let (started, cpu_before) = (Instant::now(), cpu_time());
    let goal = swarm
        .submit(
            0,
            "reply",
            &format!("thank reader {i} for the kind words about our lanterns"),
            json!({"platforms": ["x"], "in_reply_to": format!("post-{i}")}),
        )
        .await;
    let (tasks, elapsed) = settled(swarm, goal).await;
    // An invocation's span closes when it returns, before the runner deletes the messages.
    for queue in [Queue::Goal, Queue::Task, Queue::Review] {
        swarm
            .wait_depth(queue, false, 0, Duration::from_secs(60))
            .await;
    }
    let cpu = (cpu_time() - cpu_before).as_secs_f64() - idle_rate * started.elapsed().as_secs_f64();
    let calls = std::mem::take(&mut *timed.calls.lock().unwrap());
    let Timeline { invocations, waits } = std::mem::take(&mut *timeline.lock().unwrap());
    // Per invocation: its time, and its waits' (each moment once) within it.
    let (mut in_invocations, mut waiting, mut model_in_invocations) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut services = vec![Duration::ZERO; SERVICES.len()];
    for (number, interval) in &invocations {
        let run = [*interval];
        let waited = |kind: Option<Wait>| {
            let mine = waits
                .iter()
                .filter(|(w, n, _)| n == number && kind.is_none_or(|k| k == *w))
                .map(|(_, _, i)| *i)
                .collect();
            overlap(&run, &union(mine))
        };
        in_invocations += length(&run);
        waiting += waited(None);
        model_in_invocations += waited(Some(Wait::Model));
        for (total, (kind, _)) in services.iter_mut().zip(SERVICES) {
            *total += waited(Some(kind));
        }
    }
    let model = length(&union(
        waits
            .iter()
            .filter(|(w, _, _)| *w == Wait::Model)
            .map(|(_, _, i)| *i)
            .collect(),
    ));
    let running = length(&union(invocations.iter().map(|(_, i)| *i).collect()));
    let per_task = |d: Duration| d.as_secs_f64() * 1000.0 / tasks as f64;
    Figures {
        tasks,
        calls: calls.len(),
        tokens: calls.iter().map(|(_, t)| *t).sum(),
        model_ms: per_task(model),
        beyond_ms: per_task(elapsed.saturating_sub(model)),
        handlers_ms: per_task(in_invocations.saturating_sub(model_in_invocations)),
        own_ms: per_task(in_invocations.saturating_sub(waiting)),
        waiting_ms: per_task(waiting.saturating_sub(model_in_invocations)),
        services_ms: services.into_iter().map(per_task).collect(),
        hops_ms: per_task(elapsed.saturating_sub(running)),
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
