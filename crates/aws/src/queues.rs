//! Sending to the stage's queues.
//!
//! A queue's URL comes from its `*_QUEUE_URL` variable when deployed (the template sets it),
//! else it is looked up by the stage's queue name on first use and kept for the life of the
//! process.

use anyhow::Context;
use chimera_core::names::{Queue, ResourceNames};
use tokio::sync::OnceCell;

use crate::Clients;

pub struct Outbox {
    clients: Clients,
    names: ResourceNames,
    urls: [OnceCell<String>; 3],
}

impl Outbox {
    pub fn new(clients: Clients, names: ResourceNames) -> Self {
        Self {
            urls: Queue::ALL.map(|q| OnceCell::new_with(std::env::var(q.url_env()).ok())),
            clients,
            names,
        }
    }

    pub fn names(&self) -> &ResourceNames {
        &self.names
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

    /// Sends one message body to `queue`.
    pub async fn send(&self, queue: Queue, body: String) -> anyhow::Result<()> {
        let url = self.url(queue).await?;
        self.clients
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))
            .with_context(|| format!("sending to the {queue} queue"))?;
        Ok(())
    }
}
