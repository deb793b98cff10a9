//! The swarm with the local model (`scripts/bench mind`): `BENCH_GOALS` reply goals (12), one
//! at a time through the whole pipeline (the model plans, the worker drafts with it, the judge
//! checks and scores with it, the effect is performed or held). For each goal the clock runs
//! from `POST /goals` until the goal is settled; the model's own time is the sum of its calls'
//! latencies, measured around the model port. It prints, per goal and per task: the model's
//! time, Chimera's time beyond it (target <= 10 ms median per task), and the tokens.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chimera_core::domain::GoalId;
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

#[tokio::main]
async fn main() {
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
    println!("mind: {goals} reply goals, one at a time, through the swarm with the local model");
    let (mut model_ms, mut beyond_ms, mut beyond_per_task_ms, mut tokens_per_task) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut calls_total, mut tasks_total) = (0, 0);
    for i in 0..goals {
        timed.calls.lock().unwrap().clear();
        let started = Instant::now();
        let goal = swarm
            .submit(
                0,
                "reply",
                &format!("thank reader {i} for the kind words about our lanterns"),
                json!({"platforms": ["x"], "in_reply_to": format!("post-{i}")}),
            )
            .await;
        let tasks = settled(&swarm, goal).await;
        let elapsed = started.elapsed();
        let calls = std::mem::take(&mut *timed.calls.lock().unwrap());
        let model: Duration = calls.iter().map(|(d, _)| *d).sum();
        let tokens: u32 = calls.iter().map(|(_, t)| *t).sum();
        let beyond = elapsed.saturating_sub(model).as_secs_f64() * 1000.0;
        model_ms.push(model.as_secs_f64() * 1000.0);
        beyond_ms.push(beyond);
        beyond_per_task_ms.push(beyond / tasks as f64);
        tokens_per_task.push(f64::from(tokens) / tasks as f64);
        calls_total += calls.len();
        tasks_total += tasks;
        println!(
            "  goal {i:>2}: {tasks} tasks, {} model calls, {:>7.0} ms in the model, {beyond:>6.0} ms beyond it, {tokens} tokens",
            calls.len(),
            model.as_secs_f64() * 1000.0
        );
    }
    println!("model calls:                     {calls_total} for {tasks_total} tasks");
    println!(
        "model time per goal (median):    {:>8.0} ms",
        median(model_ms)
    );
    println!(
        "Chimera beyond the model, goal:  {:>8.0} ms median",
        median(beyond_ms)
    );
    println!(
        "Chimera beyond the model, task:  {:>8.1} ms median (target <= 10 ms)",
        median(beyond_per_task_ms)
    );
    println!(
        "tokens per task (median):        {:>8.0}",
        median(tokens_per_task)
    );
    swarm.stop().await;
}

/// Waits (polling every 2 ms) until `goal` is settled and none of its tasks moves; returns how
/// many tasks it ran (the effect's `execute` task included).
async fn settled(swarm: &Swarm, goal: GoalId) -> usize {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, moving, tasks): (String, i64, i64) = sqlx::query_as(
            "select g.status::text,
                    count(t.id) filter (where t.status in ('ready', 'queued', 'running', 'retrying')),
                    count(t.id)
             from goals g left join tasks t on t.goal_id = g.id where g.id = $1 group by g.status",
        )
        .bind(goal.0)
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap();
        if SETTLED.contains(&status.as_str()) && moving == 0 {
            return tasks as usize;
        }
        assert!(Instant::now() < deadline, "goal {} did not settle", goal.0);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
