//! The outbox relay: sends the messages decisions wrote to the outbox once their transaction
//! committed, and marks them sent.
//!
//! - [`Relay::flush`] runs at the end of each handler invocation (and API request) for the goals
//!   it touched, so a message goes out as soon as its state is committed;
//! - [`Relay::drain`] sends whatever is older (a flush that failed, a process that died between
//!   commit and flush): the runner calls it continuously, in AWS the scheduled sweep does;
//! - a message to be delivered later (a replan backing off after a conflict, an effect waiting
//!   for its quota window) goes out with SQS's delivery delay once it is due within 15 minutes,
//!   at the flush of the handler that wrote it or at a later sweep.
//!
//! Each round locks its rows (`FOR UPDATE SKIP LOCKED`) for the time of the send, sends them
//! with `SendMessageBatch` (in row order, per queue), then marks what was sent and backs off
//! what was not. A relay that dies between the send and the mark leaves the rows unsent: they go
//! out again, and every consumer is idempotent (at least once).

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use chimera_core::domain::GoalId;
use chimera_core::names::Queue;
use chimera_store::PgPool;
use chimera_store::outbox::{self, Pending, Selection};
use chrono::{DateTime, Utc};

use crate::queues::Queues;

/// Rows sent per round (ten `SendMessageBatch` calls at most).
const ROUND: i64 = 100;

pub struct Relay {
    pool: PgPool,
    queues: Queues,
}

impl Relay {
    pub fn new(pool: PgPool, queues: Queues) -> Self {
        Self { pool, queues }
    }

    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// Sends the unsent rows of `goals`; returns how many were sent. A failure is logged and
    /// the rows stay for [`Relay::drain`]: the caller's decision stands either way.
    pub async fn flush(&self, goals: &[GoalId]) -> usize {
        if goals.is_empty() {
            return 0;
        }
        let mut sent = 0;
        loop {
            match self.round(Selection::Goals(goals)).await {
                Ok((0, _)) => return sent,
                Ok((n, taken)) => {
                    sent += n;
                    if taken < ROUND as usize || n == 0 {
                        return sent;
                    }
                }
                Err(err) => {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "outbox flush failed; the sweep sends the rows"
                    );
                    return sent;
                }
            }
        }
    }

    /// Sends every due row created before `before`, round after round until none is left;
    /// returns how many were sent.
    pub async fn drain(&self, before: DateTime<Utc>) -> anyhow::Result<usize> {
        let mut sent = 0;
        loop {
            let (n, taken) = self.round(Selection::CreatedBefore(before)).await?;
            sent += n;
            // Rows that failed are backed off (not due): a round that sent nothing ends it.
            if taken < ROUND as usize || n == 0 {
                return Ok(sent);
            }
        }
    }

    /// One round: (rows sent, rows taken).
    async fn round(&self, selection: Selection<'_>) -> anyhow::Result<(usize, usize)> {
        let mut tx = self.pool.begin().await?;
        let rows = outbox::claim(&mut tx, selection, ROUND).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok((0, 0));
        }
        let mut sent = Vec::with_capacity(rows.len());
        for queue in Queue::ALL {
            let batch: Vec<&Pending> = rows.iter().filter(|r| r.queue == queue).collect();
            if batch.is_empty() {
                continue;
            }
            let outcomes = send_batch(&self.queues, queue, &batch).await;
            for (row, outcome) in batch.into_iter().zip(outcomes) {
                match outcome {
                    Ok(()) => sent.push(row.id),
                    Err(err) => {
                        let error = format!("{err:#}");
                        tracing::warn!(outbox_id = row.id, %queue, attempts = row.attempts + 1, error, "outbox message not sent; backing off");
                        outbox::mark_failed(&mut tx, row.id, &error).await?;
                    }
                }
            }
        }
        outbox::mark_sent(&mut tx, &sent).await?;
        tx.commit().await?;
        Ok((sent.len(), rows.len()))
    }
}

/// Sends `rows` to `queue` (each with its delivery delay) with as few `SendMessageBatch` calls
/// as SQS allows (10 messages and 256 KiB per call); returns each row's outcome, in order.
async fn send_batch(queues: &Queues, queue: Queue, rows: &[&Pending]) -> Vec<anyhow::Result<()>> {
    let mut outcomes: Vec<anyhow::Result<()>> = Vec::with_capacity(rows.len());
    let url = match queues.url(queue).await {
        Ok(url) => url.to_owned(),
        Err(err) => {
            let reason = format!("{err:#}");
            return rows
                .iter()
                .map(|_| Err(anyhow::anyhow!("{reason}")))
                .collect();
        }
    };
    let mut start = 0;
    while start < rows.len() {
        let mut end = start;
        let mut size = 0;
        while end < rows.len()
            && end - start < 10
            && (end == start || size + rows[end].body.len() + TRACE_BYTES <= MAX_BATCH_BYTES)
        {
            size += rows[end].body.len() + TRACE_BYTES;
            end += 1;
        }
        outcomes.extend(send_chunk(queues, queue, &url, &rows[start..end]).await);
        start = end;
    }
    outcomes
}

async fn send_chunk(
    queues: &Queues,
    queue: Queue,
    url: &str,
    rows: &[&Pending],
) -> Vec<anyhow::Result<()>> {
    let entries: Result<Vec<_>, _> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            // The goal's trace goes with its messages (W3C and X-Ray).
            // A body at SQS's size limit goes without: the receiver derives the trace from the
            // goal the body names.
            let traced = row
                .goal_id
                .filter(|_| row.body.len() + TRACE_BYTES <= MAX_BATCH_BYTES)
                .map(|goal| crate::telemetry::outgoing(goal, &format!("outbox:{}", row.id)));
            if let Some((ctx, _, _)) = &traced {
                tracing::debug!(goal_id = ?row.goal_id, trace_id = ctx.trace_id(), span_id = ctx.span_id(),
                                queue = %queue, outbox_id = row.id, "sending a message");
            }
            let (attributes, system) = traced.map(|(_, a, s)| (a, s)).unzip();
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&row.body)
                .set_delay_seconds((row.delay_secs > 0).then_some(row.delay_secs))
                .set_message_attributes(attributes)
                .set_message_system_attributes(system)
                .build()
        })
        .collect();
    let sent = match entries {
        Ok(entries) => queues
            .sqs()
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e))),
        Err(e) => Err(anyhow::Error::new(e)),
    };
    match sent {
        Ok(out) => (0..rows.len())
            .map(
                |i| match out.failed.iter().find(|f| f.id == i.to_string()) {
                    Some(f) => Err(anyhow::anyhow!(
                        "sending to the {queue} queue: {} {}",
                        f.code,
                        f.message.as_deref().unwrap_or_default()
                    )),
                    None => Ok(()),
                },
            )
            .collect(),
        Err(err) => {
            let reason = format!("sending to the {queue} queue: {err:#}");
            rows.iter()
                .map(|_| Err(anyhow::anyhow!("{reason}")))
                .collect()
        }
    }
}

/// What one `SendMessageBatch` call may carry in total.
const MAX_BATCH_BYTES: usize = chimera_core::envelope::MAX_MESSAGE_BYTES;
/// What a message's trace attributes add to its size, at most (names, types and values of
/// `traceparent` and `AWSTraceHeader`).
const TRACE_BYTES: usize = 256;
