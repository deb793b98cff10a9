//! The one shape of an SQS-triggered function: the planner, the worker and the judge implement
//! [`QueueHandler`], and both hosts drive it the same way: each function's `main.rs` under
//! `lambda_runtime`, and the local event-source runner.

use std::time::SystemTime;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use chimera_core::names::Queue;
use futures::future::BoxFuture;

/// A function fed by one queue.
pub trait QueueHandler: Send + Sync {
    /// The queue it consumes.
    fn queue(&self) -> Queue;

    /// Handles one batch and reports the messages that failed (`ReportBatchItemFailures`);
    /// `deadline` is when the invocation must have answered.
    fn handle<'a>(
        &'a self,
        event: &'a SqsEvent,
        deadline: SystemTime,
    ) -> BoxFuture<'a, SqsBatchResponse>;
}

/// The deadline Lambda gives an invocation (`Context::deadline`, milliseconds since the epoch).
pub fn deadline_from_epoch_ms(deadline_ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(deadline_ms)
}
