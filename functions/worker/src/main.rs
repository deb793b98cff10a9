//! Lambda entry point of the worker: tracing, the execution environment's state (AWS clients,
//! database pool, MCP sessions, all opened lazily and kept across invocations), then the
//! handler under `lambda_runtime`.
//!
//! Two events arrive: SQS batches of tasks, and the engagement collector's schedule (an
//! EventBridge schedule whose input is `{"collect_engagement": {}}`).

// The handler's future (MCP, S3, DynamoDB, SQS and PostgreSQL calls, one batch at once) is deep
// enough for clippy's layout pass to need more than the default limit.
#![recursion_limit = "256"]

use aws_lambda_events::sqs::SqsEvent;
use chimera_aws::handler::QueueHandler;
use chimera_worker::Worker;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::Deserialize;
use serde_json::{Value, json};

/// What invokes the worker. The schedule's shape is tried first: an SQS event has no
/// `collect_engagement` field.
#[derive(Deserialize)]
#[serde(untagged)]
enum Event {
    Collect {
        #[allow(dead_code)]
        collect_engagement: Value,
    },
    Tasks(SqsEvent),
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    chimera_aws::telemetry::init_logs(chimera_aws::telemetry::LogTo::Stdout);
    let worker = Worker::from_env().await?;
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let deadline = event.context.deadline();
        match event.payload {
            Event::Tasks(batch) => Ok::<_, Error>(json!(worker.handle(&batch, deadline).await)),
            Event::Collect { .. } => {
                let collected = chimera_worker::engagement::collect(
                    worker.pool(),
                    worker.mcp(),
                    chrono::Utc::now(),
                )
                .await?;
                Ok(json!({
                    "posts": collected.posts,
                    "measured": collected.measured,
                    "rows": collected.rows,
                    "partitions_created": collected.partitions_created,
                    "failed_batches": collected.failed_batches,
                }))
            }
        }
    }))
    .await
}
