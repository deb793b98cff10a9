//! Lambda entry point of the worker: tracing, the execution environment's state (AWS clients,
//! database pool, MCP sessions, all opened lazily and kept across invocations), then the
//! handler under `lambda_runtime`.

// The handler's future (MCP, S3, DynamoDB, SQS and PostgreSQL calls, one batch at once) is deep
// enough for clippy's layout pass to need more than the default limit.
#![recursion_limit = "256"]

use aws_lambda_events::sqs::SqsEvent;
use chimera_aws::handler::QueueHandler;
use chimera_worker::Worker;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    chimera_aws::telemetry::init_logs(chimera_aws::telemetry::LogTo::Stdout);
    let worker = Worker::from_env().await?;
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = event.context.deadline();
        Ok::<_, std::convert::Infallible>(worker.handle(&event.payload, deadline).await)
    }))
    .await
}
