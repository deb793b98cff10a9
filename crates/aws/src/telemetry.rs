//! What a process tells its operators: JSON logs, CloudWatch metrics and the trace context.
//!
//! - **Logs**: one JSON object per line, with the fields of every span the event is in
//!   flattened beside the event's own. A message's span carries the function, the message id,
//!   the goal, task and agent ids and the trace id, so every line written while a message is
//!   handled names them. `CHIMERA_LOG_FORMAT=text` writes lines for people instead; `RUST_LOG`
//!   filters (default `info`).
//! - **Metrics**: CloudWatch Embedded Metric Format lines ([`Emf`]) on standard output, which
//!   CloudWatch Logs turns into metrics in AWS (namespace `Chimera`, or `CHIMERA_METRICS_NAMESPACE`).
//!   The ids of what was measured ride along as properties, searchable but not dimensions.
//! - **Traces**: [`chimera_core::trace`]; [`incoming`] reads a message's context and
//!   [`outgoing`] writes a goal's onto a message being sent.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use aws_lambda_events::sqs::SqsMessage;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeValue};
use chimera_core::trace::{AWS_TRACE_HEADER, TRACEPARENT, TraceContext};
use serde_json::{Map, Value, json};

// ---- logs -----------------------------------------------------------------------------------

pub use chimera_core::logs::{LogTo, init_logs, json_layer};

// ---- trace context --------------------------------------------------------------------------

/// The trace context `message` carries: its `traceparent` attribute, else its X-Ray header.
pub fn incoming(message: &SqsMessage) -> Option<TraceContext> {
    message
        .message_attributes
        .get(TRACEPARENT)
        .and_then(|a| a.string_value.as_deref())
        .and_then(TraceContext::parse_traceparent)
        .or_else(|| {
            message
                .attributes
                .get(AWS_TRACE_HEADER)
                .and_then(|h| TraceContext::parse_xray(h))
        })
}

/// The span a message is handled in: its function, id and trace (from the message, or from
/// the goal once [`identify`] names it), and the goal, task and agent it is about.
pub fn message_span(function: &'static str, message: &SqsMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "sqs_message",
        function,
        message_id = message.message_id.as_deref().unwrap_or("-"),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
        goal_id = tracing::field::Empty,
        task_id = tracing::field::Empty,
        agent_id = tracing::field::Empty,
    );
    if let Some(parent) = incoming(message) {
        span.record("trace_id", parent.trace_id());
        span.record("parent_span_id", parent.span_id());
        span.record("span_id", handled_under(&parent, message).span_id());
    }
    span
}

/// The span a message is handled under: named after the message, so it is found again.
fn handled_under(trace: &TraceContext, message: &SqsMessage) -> TraceContext {
    trace.with_span_of(&format!(
        "sqs:{}",
        message.message_id.as_deref().unwrap_or("-")
    ))
}

/// Names what the message being handled is about on its span (the current one), and returns
/// the handler's trace context (the span its own calls continue); a message that came without
/// a trace context joins its goal's trace.
pub fn identify(
    message: &SqsMessage,
    goal: uuid::Uuid,
    task: Option<uuid::Uuid>,
    agent: Option<uuid::Uuid>,
) -> TraceContext {
    let span = tracing::Span::current();
    span.record("goal_id", goal.to_string());
    if let Some(task) = task {
        span.record("task_id", task.to_string());
    }
    if let Some(agent) = agent {
        span.record("agent_id", agent.to_string());
    }
    match incoming(message) {
        Some(parent) => handled_under(&parent, message),
        None => {
            let ours = handled_under(&TraceContext::for_goal(goal), message);
            span.record("trace_id", ours.trace_id());
            span.record("span_id", ours.span_id());
            ours
        }
    }
}

/// The attributes that carry `goal`'s trace on a message being sent under the span named
/// `sent_as` (W3C, and X-Ray's system attribute), and that span.
pub fn outgoing(
    goal: uuid::Uuid,
    sent_as: &str,
) -> (
    TraceContext,
    HashMap<String, MessageAttributeValue>,
    HashMap<aws_sdk_sqs::types::MessageSystemAttributeNameForSends, MessageSystemAttributeValue>,
) {
    let ctx = TraceContext::for_goal(goal).with_span_of(sent_as);
    let mut attributes = HashMap::new();
    if let Ok(value) = MessageAttributeValue::builder()
        .data_type("String")
        .string_value(ctx.traceparent())
        .build()
    {
        attributes.insert(TRACEPARENT.to_owned(), value);
    }
    let mut system = HashMap::new();
    if let Ok(value) = MessageSystemAttributeValue::builder()
        .data_type("String")
        .string_value(ctx.xray_header())
        .build()
    {
        system.insert(
            aws_sdk_sqs::types::MessageSystemAttributeNameForSends::AwsTraceHeader,
            value,
        );
    }
    (ctx, attributes, system)
}

// ---- metrics --------------------------------------------------------------------------------

/// A metric's unit, as CloudWatch names it.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Milliseconds,
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
            Self::None => "None",
        }
    }
}

/// One Embedded Metric Format line: metrics sharing a set of dimensions, with properties.
///
/// ```text
/// {"_aws":{"Timestamp":…,"CloudWatchMetrics":[{"Namespace":"Chimera",
///   "Dimensions":[["Function","TaskKind","Outcome"]],"Metrics":[{"Name":"Tasks","Unit":"Count"}]}]},
///  "Function":"worker","TaskKind":"draft","Outcome":"produced","Tasks":1,"goal_id":"…"}
/// ```
#[derive(Debug, Clone)]
pub struct Emf {
    dimensions: Vec<(&'static str, String)>,
    metrics: Vec<(&'static str, f64, Unit)>,
    properties: Map<String, Value>,
}

impl Emf {
    /// Metrics of `function` (the first dimension).
    pub fn new(function: &str) -> Self {
        Self {
            dimensions: vec![("Function", function.to_owned())],
            metrics: Vec::new(),
            properties: Map::new(),
        }
    }

    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimensions.push((name, value.into()));
        self
    }

    pub fn metric(mut self, name: &'static str, value: f64, unit: Unit) -> Self {
        self.metrics.push((name, value, unit));
        self
    }

    pub fn count(self, name: &'static str, n: u64) -> Self {
        self.metric(name, n as f64, Unit::Count)
    }

    pub fn millis(self, name: &'static str, elapsed: std::time::Duration) -> Self {
        self.metric(name, elapsed.as_secs_f64() * 1000.0, Unit::Milliseconds)
    }

    /// `QueueAge`: how long `message` waited in its queue, if it says when it was sent.
    pub fn queue_age(self, message: &SqsMessage) -> Self {
        match queue_age(message) {
            Some(age) => self.millis("QueueAge", age),
            None => self,
        }
    }

    /// A searchable value that is not a dimension (an id).
    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.properties.insert(name.to_owned(), value.into());
        self
    }

    /// The goal, task and agent measured, and the goal's trace.
    pub fn ids(
        self,
        goal: uuid::Uuid,
        task: Option<uuid::Uuid>,
        agent: Option<uuid::Uuid>,
    ) -> Self {
        let mut out = self
            .property("goal_id", goal.to_string())
            .property("trace_id", TraceContext::trace_id_of(goal));
        if let Some(task) = task {
            out = out.property("task_id", task.to_string());
        }
        if let Some(agent) = agent {
            out = out.property("agent_id", agent.to_string());
        }
        out
    }

    /// The line, as it is written.
    pub fn to_json(&self) -> Value {
        let mut line = self.properties.clone();
        for (name, value) in &self.dimensions {
            line.insert((*name).to_owned(), json!(value));
        }
        for (name, value, _) in &self.metrics {
            line.insert((*name).to_owned(), json!(value));
        }
        let names: Vec<&str> = self.dimensions.iter().map(|(n, _)| *n).collect();
        let metrics: Vec<Value> = self
            .metrics
            .iter()
            .map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        line.insert(
            "_aws".into(),
            json!({
                "Timestamp": chrono::Utc::now().timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": namespace(),
                    "Dimensions": [names],
                    "Metrics": metrics,
                }],
            }),
        );
        Value::Object(line)
    }

    /// Writes the line to the metrics sink (standard output unless [`set_metrics_sink`]).
    pub fn emit(self) {
        if self.metrics.is_empty() {
            return;
        }
        let mut line = self.to_json().to_string();
        line.push('\n');
        let written = match SINK.get() {
            Some(sink) => match sink.lock() {
                Ok(mut sink) => sink.write_all(line.as_bytes()).and_then(|()| sink.flush()),
                Err(poisoned) => poisoned.into_inner().write_all(line.as_bytes()),
            },
            None => std::io::stdout().lock().write_all(line.as_bytes()),
        };
        if let Err(err) = written {
            tracing::warn!(error = %err, "a metrics line could not be written");
        }
    }
}

fn namespace() -> &'static str {
    static NAMESPACE: OnceLock<String> = OnceLock::new();
    NAMESPACE.get_or_init(|| {
        std::env::var("CHIMERA_METRICS_NAMESPACE")
            .ok()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "Chimera".into())
    })
}

type Sink = Mutex<Box<dyn Write + Send>>;
static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends this process's metrics lines to `sink` instead of standard output (the runner writes
/// them to a file beside its logs; a test reads them back). Only the first call counts; it
/// says whether it did.
pub fn set_metrics_sink(sink: Box<dyn Write + Send>) -> bool {
    SINK.set(Mutex::new(sink)).is_ok()
}

/// How long `message` waited in its queue: now less its `SentTimestamp` attribute.
fn queue_age(message: &SqsMessage) -> Option<std::time::Duration> {
    let sent: i64 = message.attributes.get("SentTimestamp")?.parse().ok()?;
    let now = chrono::Utc::now().timestamp_millis();
    u64::try_from(now - sent)
        .ok()
        .map(std::time::Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_declares_its_dimensions_and_metrics() {
        let goal = uuid::Uuid::now_v7();
        let line = Emf::new("worker")
            .dimension("TaskKind", "draft")
            .count("Tasks", 1)
            .millis("TaskDuration", std::time::Duration::from_millis(1500))
            .ids(goal, None, None)
            .to_json();
        let aws = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(aws["Namespace"], "Chimera");
        assert_eq!(aws["Dimensions"], json!([["Function", "TaskKind"]]));
        assert_eq!(
            aws["Metrics"][1],
            json!({"Name": "TaskDuration", "Unit": "Milliseconds"})
        );
        assert_eq!(line["Function"], "worker");
        assert_eq!(line["Tasks"], 1.0);
        assert_eq!(line["TaskDuration"], 1500.0);
        assert_eq!(line["goal_id"], goal.to_string());
        assert_eq!(line["trace_id"], TraceContext::for_goal(goal).trace_id());
        assert!(line["_aws"]["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    }
}
