//! What operators see of a goal's run: its metrics (CloudWatch Embedded Metric Format) count
//! its tasks as they ran, and its logs, from the planner, the workers and the judge, name one
//! trace, carried between them in the SQS messages' attributes.
//!
//! The process's log and metrics output is captured as written (the same JSON layer and EMF
//! writer the functions use), while a goal runs through the swarm on the local stack.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chimera_aws::telemetry;
use chimera_core::trace::TraceContext;
use chimera_tests::eventually;
use chimera_tests::swarm::{Swarm, SwarmOptions};
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Lines written to it, kept.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_goal_is_one_trace_and_its_metrics_count_its_tasks() {
    let logs = Capture::default();
    let metrics = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(telemetry::json_layer(logs.clone()));
    subscriber
        .try_init()
        .expect("this test's process has no other subscriber (nextest runs it alone)");
    assert!(telemetry::set_metrics_sink(Box::new(metrics.clone())));

    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    // A reply good enough to go out without a person: research, draft, reply, execute.
    let goal = swarm
        .submit(
            0,
            "reply",
            "thanks for the kind words",
            json!({"platforms": ["x"], "in_reply_to": "post-obs", "simulated_quality": 0.95}),
        )
        .await;
    assert_eq!(
        swarm.settle(&[goal], Duration::from_secs(120)).await,
        ["completed"]
    );
    let view = swarm.view(goal).await;
    let tasks = view["tasks"].as_array().unwrap().clone();
    let expected_trace = TraceContext::for_goal(goal.0).trace_id();
    assert_eq!(view["trace_id"], expected_trace.as_str());
    let goal_id = goal.0.to_string();

    // Metrics: every task ran once in a worker and was routed once by the judge, as its
    // routing on the goal says; the plan counted the planned tasks.
    let routing: BTreeMap<String, String> = tasks
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["routing"]["outcome"]
                    .as_str()
                    .unwrap_or("none")
                    .to_owned(),
            )
        })
        .collect();
    let planned = tasks.iter().filter(|t| t["kind"] != "execute").count();
    let lines = eventually(
        Duration::from_secs(30),
        "a routing line and a worker line for each task",
        || {
            let metrics = metrics.clone();
            let goal_id = goal_id.clone();
            let want = tasks.len();
            async move {
                let lines: Vec<Value> = metrics
                    .lines()
                    .into_iter()
                    .filter(|l| l["goal_id"] == goal_id.as_str())
                    .collect();
                let routed = lines.iter().filter(|l| l.get("Routed").is_some()).count();
                let judged = lines
                    .iter()
                    .filter(|l| l.get("JudgeDuration").is_some())
                    .count();
                if routed >= want && judged >= want {
                    Ok(lines)
                } else {
                    Err(format!("{routed} routed, {judged} judged of {want}"))
                }
            }
        },
    )
    .await;
    for line in &lines {
        let aws = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(aws["Namespace"], "Chimera", "{line}");
        for dimension in aws["Dimensions"][0].as_array().unwrap() {
            let name = dimension.as_str().unwrap();
            assert!(line[name].is_string(), "dimension {name} is set: {line}");
        }
        for metric in aws["Metrics"].as_array().unwrap() {
            assert!(line[metric["Name"].as_str().unwrap()].is_number(), "{line}");
        }
        assert_eq!(line["trace_id"], expected_trace.as_str(), "{line}");
    }
    let count = |function: &str, metric: &str, task: &str| -> f64 {
        lines
            .iter()
            .filter(|l| l["Function"] == function && l["task_id"] == task)
            .filter_map(|l| l[metric].as_f64())
            .sum()
    };
    for task in &tasks {
        let id = task["id"].as_str().unwrap();
        let produced: Vec<&Value> = lines
            .iter()
            .filter(|l| l["Function"] == "worker" && l["task_id"] == id)
            .filter(|l| l["Outcome"] == "produced")
            .collect();
        assert_eq!(produced.len(), 1, "task {id} ran once: {produced:?}");
        assert_eq!(produced[0]["TaskKind"], task["kind"]);
        assert_eq!(count("judge", "Routed", id), 1.0, "task {id} routed once");
        let outcome = lines
            .iter()
            .find(|l| l["Function"] == "judge" && l["task_id"] == id && l.get("Routed").is_some())
            .map(|l| l["Outcome"].as_str().unwrap().to_owned());
        assert_eq!(
            outcome.as_deref(),
            routing.get(id).map(String::as_str),
            "task {id}: the metric's routing is the goal's"
        );
    }
    let planner: Vec<&Value> = lines
        .iter()
        .filter(|l| l["Function"] == "planner" && l.get("GoalsPlanned").is_some())
        .collect();
    assert_eq!(planner.len(), 1, "{planner:?}");
    assert_eq!(planner[0]["PlannedTasks"], planned as f64);

    // Logs: the planner's, the workers' and the judge's lines about the goal all name its
    // trace, and the workers' came with it in the task messages' attributes (a parent span).
    let logs = logs.lines();
    let about: Vec<&Value> = logs
        .iter()
        .filter(|l| l["goal_id"] == goal_id.as_str())
        .collect();
    let functions: BTreeSet<&str> = about
        .iter()
        .filter_map(|l| l["function"].as_str())
        .collect();
    for function in ["planner", "worker", "judge"] {
        assert!(
            functions.contains(function),
            "{function} logged about the goal: {functions:?}"
        );
    }
    let traces: BTreeSet<&str> = about
        .iter()
        .filter(|l| l.get("function").is_some())
        .map(|l| l["trace_id"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(traces, BTreeSet::from([expected_trace.as_str()]));
    // The trace came in each message's attributes: every handler's line names the span the
    // relay sent the message under (`outbox:<row>`), and its own (`sqs:<message id>`).
    let sent_under: BTreeSet<String> =
        sqlx::query_scalar::<_, i64>("select id from outbox where goal_id = $1")
            .bind(goal.0)
            .fetch_all(&swarm.db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|row| {
                TraceContext::for_goal(goal.0)
                    .with_span_of(&format!("outbox:{row}"))
                    .span_id()
            })
            .collect();
    for line in about.iter().filter(|l| l.get("function").is_some()) {
        let parent = line["parent_span_id"].as_str().unwrap_or("none");
        assert!(
            sent_under.contains(parent),
            "the {} line's parent span is one the relay sent under: {line}",
            line["function"]
        );
        let own = TraceContext::for_goal(goal.0)
            .with_span_of(&format!("sqs:{}", line["message_id"].as_str().unwrap()))
            .span_id();
        assert_eq!(line["span_id"], own.as_str(), "{line}");
    }
    for line in &about {
        assert!(line["timestamp"].is_string() && line["level"].is_string());
    }
    swarm.stop().await;
}
