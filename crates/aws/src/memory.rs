//! Semantic memory as the functions use it: the configured embedder
//! ([`chimera_llm::embed::from_env`]) in front of the store's memories
//! ([`chimera_store::memories`]).
//!
//! - The judge remembers what each committed post or reply said ([`Memory::remember`]): one
//!   memory per effect, its id derived from the effect's task, so a redelivered result adds
//!   nothing.
//! - The planner recalls an agent's memories nearest to a goal ([`Memory::recall`]) and hands
//!   them to the drafter.
//!
//! Memories are scoped to one agent of one tenant, and to the embedder's model.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chimera_core::domain::{AgentId, TaskId, TenantId, derived_uuid};
use chimera_llm::LlmError;
use chimera_llm::embed::{Embedder, Embeddings, MAX_CHARS};
use chimera_store::PgPool;
use chimera_store::memories::{self, Kind, NewMemory, Recalled};

use crate::Clients;
use crate::telemetry::Emf;

/// The longest an embedding may take inside a function (its retries included): memory must
/// not cost a Lambda invocation its deadline.
pub const EMBED_WITHIN: Duration = Duration::from_secs(5);

/// The embedder and the store, together.
#[derive(Clone)]
pub struct Memory {
    pool: PgPool,
    embedder: Arc<dyn Embedder>,
}

/// What a committed effect said, to remember.
#[derive(Debug, Clone)]
pub struct Said<'a> {
    pub tenant: TenantId,
    pub agent: AgentId,
    /// The `execute` task that performed it.
    pub task: TaskId,
    pub kind: Kind,
    pub text: &'a str,
    pub platform: Option<&'a str>,
}

impl Memory {
    pub fn new(pool: PgPool, embedder: Arc<dyn Embedder>) -> Self {
        Self { pool, embedder }
    }

    /// The embedder behind it (the judge scores similarity with the same model).
    pub fn embedder(&self) -> Arc<dyn Embedder> {
        self.embedder.clone()
    }

    /// The memory of the configured embedder (`CHIMERA_EMBED`), or `None` when there is none.
    pub fn from_env(clients: &Clients, pool: &PgPool) -> anyhow::Result<Option<Self>> {
        let embedder = chimera_llm::embed::from_env(&clients.config, None)
            .map_err(anyhow::Error::msg)
            .context("configuring the embedding model")?;
        if let Some(embedder) = &embedder {
            anyhow::ensure!(
                memories::DIMENSIONS.contains(&embedder.dimensions()),
                "the embedder gives {} dimensions; memories are stored at {:?}",
                embedder.dimensions(),
                memories::DIMENSIONS
            );
            tracing::info!(
                model = embedder.model_id(),
                dimensions = embedder.dimensions(),
                "embedding model configured"
            );
        }
        Ok(embedder.map(|e| Self::new(pool.clone(), e)))
    }

    /// The vector of `text`, within `within` and at most [`EMBED_WITHIN`].
    async fn embed(&self, text: &str, within: Duration) -> Result<Embeddings, LlmError> {
        let texts = [text.to_owned()];
        // The embedding model's own time, as a span of its own (what a trace shows of it).
        let span = tracing::debug_span!("embed", model = self.embedder.model_id());
        let embedded = tracing::Instrument::instrument(self.embedder.embed(&texts), span);
        match tokio::time::timeout(within.min(EMBED_WITHIN), embedded).await {
            Ok(answer) => answer,
            Err(_) => Err(LlmError::Timeout(within.min(EMBED_WITHIN))),
        }
    }

    /// Remembers `said` once; returns whether this call wrote it. An embedder that is
    /// unavailable or slow is an error (try again later); one that refuses the text or answers
    /// nonsense will do so again, so the memory is skipped with a warning.
    pub async fn remember(&self, said: &Said<'_>) -> anyhow::Result<bool> {
        let text = said.text.trim();
        if text.is_empty() {
            return Ok(false);
        }
        let embedded = match self.embed(text, EMBED_WITHIN).await {
            Ok(embedded) => embedded,
            Err(err) if err.is_retryable() => {
                return Err(anyhow::Error::new(err).context("embedding a memory"));
            }
            Err(err) => {
                tracing::warn!(task_id = %said.task.0, error = %err, "memory skipped: the embedder refused it");
                Emf::new("memory").count("MemoriesSkipped", 1).emit();
                return Ok(false);
            }
        };
        let written = memories::remember(
            &self.pool,
            &NewMemory {
                id: derived_uuid(&format!("memory:{}", said.task.0)),
                tenant: said.tenant,
                agent: said.agent,
                kind: said.kind,
                text: &text.chars().take(MAX_CHARS).collect::<String>(),
                embedding: &embedded.vectors[0],
                model: self.embedder.model_id(),
                platform: said.platform,
                source_asset: memories::asset_of_task(&self.pool, said.task.0)
                    .await
                    .context("finding the effect's receipt")?,
            },
        )
        .await
        .context("writing a memory")?;
        Emf::new("memory")
            .count("MemoriesWritten", u64::from(written))
            .millis("EmbedLatency", embedded.latency)
            .property("agent_id", said.agent.0.to_string())
            .emit();
        Ok(written)
    }

    /// The `k` memories of `agent` nearest in meaning to `query`, nearest first, embedded
    /// `within` the time the caller has.
    pub async fn recall(
        &self,
        tenant: TenantId,
        agent: AgentId,
        query: &str,
        k: i64,
        within: Duration,
    ) -> anyhow::Result<Vec<Recalled>> {
        if query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let embedded = self
            .embed(query, within)
            .await
            .context("embedding a query")?;
        memories::nearest(
            &self.pool,
            tenant,
            agent,
            self.embedder.model_id(),
            &embedded.vectors[0],
            k,
        )
        .await
        .context("recalling memories")
    }
}
