//! Partial batch failures for SQS-triggered handlers.
//!
//! Lambda's SQS event source hands a function a batch of messages. With
//! `ReportBatchItemFailures` the function returns the ids of the messages that failed; only
//! those become visible again (and, after `maxReceiveCount` receives, move to the DLQ). One bad
//! message never fails or re-runs its whole batch.

use std::future::Future;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use tracing::Instrument;

/// Why one message was not processed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Worth another delivery (a dependency was unavailable, a conflict to replan...).
    #[error("retryable: {0:#}")]
    Retryable(anyhow::Error),
    /// Will never succeed (malformed body, unknown schema version...): it is reported as failed
    /// so that the queue's redrive policy dead-letters it; never acknowledged and lost.
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

impl MessageError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }

    /// A failure another delivery can cure.
    pub fn retryable(err: impl Into<anyhow::Error>) -> Self {
        Self::Retryable(err.into())
    }

    /// A failure no delivery can cure: the message goes to its dead-letter queue.
    pub fn permanent(err: impl Into<anyhow::Error>) -> Self {
        Self::Permanent(err.into())
    }

    /// A failed read or write of an artifact: retryable or not as the storage says.
    pub fn storage(err: crate::artifacts::StorageError) -> Self {
        if err.is_retryable() {
            Self::Retryable(err.into())
        } else {
            Self::Permanent(err.into())
        }
    }

    /// A failed call to a dependency: permanent when the database says the message holds a
    /// value it can never store (a NUL character in a text), retryable otherwise (unavailable,
    /// or a fault of ours that a fix can cure before the message is dead-lettered).
    pub fn dependency(err: impl Into<anyhow::Error>) -> Self {
        let err = err.into();
        let bad_input = err.chain().any(|cause| {
            cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(|db| chimera_store::fault(db) == chimera_store::Fault::BadInput)
        });
        if bad_input {
            Self::Permanent(err)
        } else {
            Self::Retryable(err)
        }
    }
}

/// Runs `handle` over every message of `event`, up to `concurrency` at once, and reports the
/// ids of the messages whose handling failed.
pub async fn process_batch<'a, F, Fut>(
    function: &'static str,
    event: &'a SqsEvent,
    concurrency: usize,
    handle: F,
) -> Report
where
    F: Fn(&'a SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), MessageError>> + 'a,
{
    report(run_batch(function, event, concurrency, handle).await)
}

/// One message's outcome: its id and what its handler returned.
pub type Outcome<T> = (Option<String>, Result<T, MessageError>);

/// Runs `handle` over every message of `event`, up to `concurrency` at once, and returns each
/// message's outcome (for a caller that finishes the batch's work together, then [`report`]s).
/// Each message is handled in its own span ([`crate::telemetry::message_span`]), named after
/// `function`.
pub async fn run_batch<'a, T, F, Fut>(
    function: &'static str,
    event: &'a SqsEvent,
    concurrency: usize,
    handle: F,
) -> Vec<Outcome<T>>
where
    F: Fn(&'a SqsMessage) -> Fut,
    Fut: Future<Output = Result<T, MessageError>> + 'a,
{
    // The futures are built eagerly: a lazily mapped stream would keep the mapping closure in
    // the future's type, and the compiler could then no longer prove the future `Send`.
    let handled: Vec<_> = event
        .records
        .iter()
        .map(|message| {
            let id = message.message_id.clone();
            let span = crate::telemetry::message_span(function, message);
            let fut = handle(message);
            async move { (id, fut.await) }.instrument(span)
        })
        .collect();
    futures::stream::iter(handled)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// What a batch came to: the response for the event source (the failed message ids), and
/// which of the failures are permanent (they should reach the DLQ without waiting).
#[derive(Debug, Default)]
pub struct Report {
    pub response: SqsBatchResponse,
    pub permanent: Vec<String>,
}

/// The report of `outcomes`, each failure logged.
pub fn report<T>(outcomes: Vec<Outcome<T>>) -> Report {
    let mut report = Report::default();
    for (id, outcome) in outcomes {
        let Err(err) = outcome else { continue };
        match &id {
            Some(id) => {
                if err.is_retryable() {
                    tracing::warn!(message_id = %id, retryable = true, error = %err, "message failed");
                } else {
                    tracing::error!(message_id = %id, retryable = false, error = %err,
                                    "message refused: it goes to the dead-letter queue");
                    report.permanent.push(id.clone());
                }
                report.response.add_failure(id.clone());
            }
            // A record without an id cannot be reported; Lambda would treat the whole batch as
            // failed if we returned an empty id, so it is logged and left to the visibility
            // timeout. SQS always sets the id, so this is defensive only.
            None => tracing::error!(error = %err, "message without an id failed"),
        }
    }
    report
}

/// Reads a message body as the envelope of `T`; a missing, malformed or unknown-version body is
/// a permanent failure.
pub fn decode_body<T: serde::de::DeserializeOwned>(
    message: &SqsMessage,
) -> Result<T, MessageError> {
    let body = message.body.as_deref().unwrap_or_default();
    chimera_core::envelope::decode(body).map_err(|err| MessageError::Permanent(err.into()))
}
