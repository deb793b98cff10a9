//! Sending to the stage's queues.
//!
//! A queue's URL is the one it was deployed with ([`ResourceNames::queue_url`], from its
//! `*_QUEUE_URL` variable), else it is looked up by the stage's queue name on first use and kept
//! for the life of the process. Nothing here sends: decisions write to the outbox, and the
//! [`crate::relay`] alone sends, to the URLs this gives.

use std::collections::HashMap;

use anyhow::Context;
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

    /// The SQS client, for this crate's relay and leases.
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

    /// The messages `queue` holds now: waiting, taken by a consumer and not yet deleted, or
    /// delayed (SQS's approximate counts). Zero means everything sent to it was received and
    /// finished with; the reconciler re-sends work only then.
    pub async fn backlog(&self, queue: Queue) -> anyhow::Result<u64> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let url = self.url(queue).await?;
        let answer = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))
            .with_context(|| format!("reading the depth of {url}"))?;
        let attributes = answer.attributes.unwrap_or_default();
        [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
            A::ApproximateNumberOfMessagesDelayed,
        ]
        .iter()
        .map(|name| {
            attributes
                .get(name)
                .map_or(Ok(0), |v| v.parse::<u64>())
                .with_context(|| format!("{name} of {url} is not a count"))
        })
        .sum()
    }
}
