//! Lambda entry point of the judge: tracing, the execution environment's state (AWS clients,
//! database pool, opened lazily and kept across invocations), then the handler under
//! `lambda_runtime`.

use aws_lambda_events::sqs::SqsEvent;
use chimera_aws::handler::QueueHandler;
use chimera_judge::Judge;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    chimera_aws::telemetry::init_logs(chimera_aws::telemetry::LogTo::Stdout);
    let judge = Judge::from_env().await?;
    let judge = &judge;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = event.context.deadline();
        Ok::<_, std::convert::Infallible>(judge.handle(&event.payload, deadline).await)
    }))
    .await
}
