//! Messages stay invisible only while their handler is alive.
//!
//! A queue's visibility timeout is six times its consumer's timeout (the AWS rule for event
//! sources), so a message is never handed to a second consumer while a slow invocation still
//! works on it. But a consumer that crashes would then hold its messages for that long (12
//! minutes for the task queue). So while a batch is handled, a [`Lease`] keeps its messages
//! invisible in short steps ([`STEP`], renewed every [`BEAT`]); a crashed handler stops
//! renewing, and its messages return after one step. When the batch is done, failed messages
//! are made visible again after a backoff that grows with their receive count (a retryable
//! failure, such as a database restarting, is retried in 1, 2, 4, 8... seconds), and at once
//! when the failure is permanent (they reach the dead-letter queue after `maxReceiveCount`
//! receives without waiting).
//!
//! The same code runs under Lambda (the handler renews the receipt handles of its event) and
//! under the local runner, which also receives with a visibility timeout of one step.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use chimera_core::names::Queue;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::batch::Report;
use crate::queues::Queues;

/// How long a message stays invisible past the last sign of life of its handler.
pub const STEP: Duration = Duration::from_secs(30);
/// How often a live handler renews its messages' invisibility.
pub const BEAT: Duration = Duration::from_secs(10);

/// The visibility a failed message gets after its `receive_count`-th receive: 1, 2, 4... s, at
/// most one [`STEP`].
pub fn backoff(receive_count: u32) -> Duration {
    let exponent = receive_count.saturating_sub(1).min(10);
    Duration::from_secs(1u64 << exponent).min(STEP)
}

/// One message of the batch.
struct Held {
    id: String,
    receipt: String,
    receive_count: u32,
}

/// The batch's messages, kept invisible while the handler lives.
pub struct Lease {
    sqs: aws_sdk_sqs::Client,
    url: Option<String>,
    held: Vec<Held>,
    beat: Option<JoinHandle<()>>,
    stopped: Arc<Mutex<bool>>,
}

impl Lease {
    /// Starts renewing the invisibility of `event`'s messages (in the background: the first
    /// renewal does not delay the handler), on the queue they came from (`queue`'s URL when the
    /// event does not say).
    pub async fn start(queues: &Queues, queue: Queue, event: &SqsEvent) -> Lease {
        let held: Vec<Held> = event
            .records
            .iter()
            .filter_map(|m| {
                Some(Held {
                    id: m.message_id.clone()?,
                    receipt: m.receipt_handle.clone()?,
                    receive_count: m
                        .attributes
                        .get("ApproximateReceiveCount")
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(1),
                })
            })
            .collect();
        // The queue the messages came from (a process may send elsewhere than it consumes).
        let source = event
            .records
            .iter()
            .find_map(|m| m.event_source_arn.clone());
        let url = match source {
            Some(arn) => queues.source_url(&arn).await,
            None => queues.url(queue).await.map(str::to_owned),
        };
        let url = match url {
            Ok(url) => Some(url),
            Err(err) => {
                tracing::warn!(%queue, error = format!("{err:#}"), "queue URL unknown: messages keep the queue's visibility timeout");
                None
            }
        };
        let sqs = queues.sqs().clone();
        // Held by a renewal while its request is out, and by `finish` once and for good: a
        // renewal never lands after the final visibility was set.
        let stopped = Arc::new(Mutex::new(false));
        let beat = url.clone().filter(|_| !held.is_empty()).map(|url| {
            let sqs = sqs.clone();
            let stopped = stopped.clone();
            let receipts: Vec<String> = held.iter().map(|h| h.receipt.clone()).collect();
            tokio::spawn(async move {
                loop {
                    {
                        let stopped = stopped.lock().await;
                        if *stopped {
                            return;
                        }
                        let all: Vec<(&str, Duration)> =
                            receipts.iter().map(|r| (r.as_str(), STEP)).collect();
                        if let Err(err) = change(&sqs, &url, &all).await {
                            tracing::warn!(
                                error = format!("{err:#}"),
                                "renewing the batch's invisibility failed"
                            );
                        }
                    }
                    tokio::time::sleep(BEAT).await;
                }
            })
        });
        Lease {
            sqs,
            url,
            held,
            beat,
            stopped,
        }
    }

    /// Stops renewing; failed messages become visible after their backoff (retryable) or at
    /// once (permanent). Returns the batch response.
    pub async fn finish(mut self, report: Report) -> SqsBatchResponse {
        // Waits for a renewal in flight, and stops the next one.
        let mut stopped = self.stopped.lock().await;
        *stopped = true;
        if let Some(beat) = self.beat.take() {
            beat.abort();
        }
        let failed: HashSet<&str> = report
            .response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let permanent: HashSet<&str> = report.permanent.iter().map(String::as_str).collect();
        let retries: Vec<(&str, Duration)> = self
            .held
            .iter()
            .filter(|h| failed.contains(h.id.as_str()))
            .map(|h| {
                let after = if permanent.contains(h.id.as_str()) {
                    Duration::ZERO
                } else {
                    backoff(h.receive_count)
                };
                (h.receipt.as_str(), after)
            })
            .collect();
        if let Some(url) = &self.url
            && !retries.is_empty()
            && let Err(err) = change(&self.sqs, url, &retries).await
        {
            tracing::warn!(
                error = format!("{err:#}"),
                "setting the failed messages' visibility failed; they return after the last step"
            );
        }
        report.response
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(beat) = self.beat.take() {
            beat.abort();
        }
    }
}

async fn change(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[(&str, Duration)],
) -> anyhow::Result<()> {
    for chunk in messages.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, (receipt, after))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*receipt)
                    .visibility_timeout(after.as_secs() as i32)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        sqs.change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_receive_up_to_one_step() {
        let secs: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(u32::MAX), STEP);
    }
}
