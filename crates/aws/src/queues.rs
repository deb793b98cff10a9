//! Sending to the stage's queues.
//!
//! A queue's URL is the one it was deployed with ([`ResourceNames::queue_url`], from its
//! `*_QUEUE_URL` variable), else it is looked up by the stage's queue name on first use and kept
//! for the life of the process. Decisions do not send directly: they write to the outbox and the
//! [`crate::relay`] sends through this.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use chimera_core::names::{Queue, ResourceNames};
use tokio::sync::OnceCell;

use crate::Clients;

pub struct Queues {
    clients: Clients,
    names: ResourceNames,
    urls: [OnceCell<String>; 3],
    /// The URLs of the queues events came from, by ARN.
    sources: std::sync::Mutex<HashMap<String, String>>,
}

impl Queues {
    pub fn new(clients: Clients, names: ResourceNames) -> Self {
        Self {
            urls: Queue::ALL.map(|q| OnceCell::new_with(names.queue_url(q).map(str::to_owned))),
            clients,
            names,
            sources: std::sync::Mutex::default(),
        }
    }

    pub fn names(&self) -> &ResourceNames {
        &self.names
    }

    /// The SQS client, for this crate's leases and receives: only the relay sends.
    pub(crate) fn sqs(&self) -> &aws_sdk_sqs::Client {
        &self.clients.sqs
    }

    /// The URL of `queue`.
    pub async fn url(&self, queue: Queue) -> anyhow::Result<&str> {
        let index = Queue::ALL.iter().position(|q| *q == queue).unwrap_or(0);
        let url = self.urls[index]
            .get_or_try_init(|| async {
                let name = self.names.queue(queue);
                crate::bootstrap::queue_url(&self.clients, &name).await
            })
            .await?;
        Ok(url)
    }

    /// The URL of the queue an event came from (its `eventSourceArn`,
    /// `arn:aws:sqs:<region>:<account>:<name>`), looked up once per process. Messages are
    /// acknowledged or returned on the queue they came from, whatever the URL this process
    /// sends to.
    pub async fn source_url(&self, arn: &str) -> anyhow::Result<String> {
        if let Some(url) = self.sources.lock().ok().and_then(|s| s.get(arn).cloned()) {
            return Ok(url);
        }
        let mut parts = arn.split(':');
        let (account, name) = match (parts.nth(4), parts.next()) {
            (Some(account), Some(name)) if !name.is_empty() => (account, name),
            _ => anyhow::bail!("{arn:?} is not an SQS queue ARN"),
        };
        // As deployed, the function's own queue is among the configured URLs.
        let suffix = format!("/{account}/{name}");
        if let Some(url) = self
            .urls
            .iter()
            .filter_map(|u| u.get())
            .find(|u| u.ends_with(&suffix))
        {
            return Ok(url.clone());
        }
        let url = self
            .clients
            .sqs
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))
            .with_context(|| format!("looking up the URL of {arn}"))?
            .queue_url
            .with_context(|| format!("no URL for {arn}"))?;
        if let Ok(mut sources) = self.sources.lock() {
            sources.insert(arn.to_owned(), url.clone());
        }
        Ok(url)
    }

    /// Sends `bodies` to `queue` with as few `SendMessageBatch` calls as SQS allows (10
    /// messages and 256 KiB per call); returns each body's outcome, in order.
    pub(crate) async fn send_batch(
        &self,
        queue: Queue,
        bodies: &[String],
    ) -> Vec<anyhow::Result<()>> {
        let mut outcomes: Vec<anyhow::Result<()>> = Vec::with_capacity(bodies.len());
        let url = match self.url(queue).await {
            Ok(url) => url.to_owned(),
            Err(err) => {
                let reason = format!("{err:#}");
                return bodies
                    .iter()
                    .map(|_| Err(anyhow::anyhow!("{reason}")))
                    .collect();
            }
        };
        let mut start = 0;
        while start < bodies.len() {
            let mut end = start;
            let mut size = 0;
            while end < bodies.len()
                && end - start < 10
                && (end == start || size + bodies[end].len() <= MAX_BATCH_BYTES)
            {
                size += bodies[end].len();
                end += 1;
            }
            outcomes.extend(self.send_chunk(queue, &url, &bodies[start..end]).await);
            start = end;
        }
        outcomes
    }

    async fn send_chunk(
        &self,
        queue: Queue,
        url: &str,
        bodies: &[String],
    ) -> Vec<anyhow::Result<()>> {
        let entries: Result<Vec<_>, _> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
            })
            .collect();
        let sent = match entries {
            Ok(entries) => self
                .clients
                .sqs
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e))),
            Err(e) => Err(anyhow::Error::new(e)),
        };
        match sent {
            Ok(out) => (0..bodies.len())
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
                bodies
                    .iter()
                    .map(|_| Err(anyhow::anyhow!("{reason}")))
                    .collect()
            }
        }
    }
}

/// What one `SendMessageBatch` call may carry in total.
const MAX_BATCH_BYTES: usize = chimera_core::envelope::MAX_MESSAGE_BYTES;
