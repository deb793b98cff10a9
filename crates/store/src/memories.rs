//! Semantic memory (pgvector): what each agent said, as text and as an embedding, found again by
//! meaning.
//!
//! - A memory belongs to one agent of one tenant; every read names both, so another tenant's or
//!   another agent's memories are never returned.
//! - Vectors are one of [`DIMENSIONS`] long (the configured embedders' lengths) and name the
//!   model that made them: only memories of the query's model are compared (two models'
//!   vectors do not share a space).
//! - The table is partitioned by agent (32 hash partitions): a read names one agent and reads
//!   one partition.
//! - Nearest neighbours by cosine distance, through the HNSW index of the query's length
//!   (`memories_embedding_<n>`). The index is searched with pgvector's iterative scan, so a
//!   query scoped to one agent among many still finds that agent's nearest memories instead
//!   of the whole table's nearest, filtered down to none.
//!
//! Vectors travel as pgvector's text form (`[0.1,0.2,...]`), so no driver type is needed.

use chimera_core::domain::{AgentId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// The embedding lengths the table stores, each with its index: all-MiniLM-L6-v2's 384 and
/// Titan Text Embeddings V2's 256, 512 and 1,024.
pub const DIMENSIONS: [usize; 4] = [256, 384, 512, 1024];

/// What a memory is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A committed post.
    Post,
    /// A committed reply.
    Reply,
    /// What came back about a post (views, likes, replies).
    Engagement,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Reply => "reply",
            Self::Engagement => "engagement",
        }
    }
}

/// A memory to write.
#[derive(Debug, Clone)]
pub struct NewMemory<'a> {
    /// Derived from what it remembers, so writing it again adds nothing.
    pub id: uuid::Uuid,
    pub tenant: TenantId,
    pub agent: AgentId,
    pub kind: Kind,
    pub text: &'a str,
    pub embedding: &'a [f32],
    pub model: &'a str,
    pub platform: Option<&'a str>,
    pub source_asset: Option<uuid::Uuid>,
}

/// A memory found again, with its cosine distance to the query (0 = the same direction).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Recalled {
    pub id: uuid::Uuid,
    pub kind: String,
    pub text: String,
    pub platform: Option<String>,
    pub created_at: DateTime<Utc>,
    pub distance: f64,
    /// How the post it remembers landed, as last measured (`views`, `likes`, `replies`,
    /// `shares`), when the engagement collector has measured it.
    pub engagement: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("an embedding has {got} dimensions, not one of {DIMENSIONS:?}")]
    Dimensions { got: usize },
    #[error("an embedding holds a value that is not a finite number")]
    NotFinite,
    #[error("an embedding of only zeros has no direction")]
    Zero,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// pgvector's text form of `v`, checked: one of [`DIMENSIONS`] finite values, not all zero.
fn literal(v: &[f32]) -> Result<String, MemoryError> {
    if !DIMENSIONS.contains(&v.len()) {
        return Err(MemoryError::Dimensions { got: v.len() });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(MemoryError::NotFinite);
    }
    if v.iter().all(|x| *x == 0.0) {
        return Err(MemoryError::Zero);
    }
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    Ok(format!("[{}]", parts.join(",")))
}

/// The asset of a committed task's committed result (an effect's receipt), if any: the one the
/// engagement collector records events about.
pub async fn asset_of_task(
    pool: &PgPool,
    task: uuid::Uuid,
) -> Result<Option<uuid::Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select a.id from assets a
         join commits c on c.task_id = a.task_id
         join results r on r.id = c.result_id
         where a.task_id = $1 and a.sha256 = r.artifact -> 'artifacts' -> 0 ->> 'sha256'
         order by a.created_at, a.id limit 1",
        task
    )
    .fetch_optional(pool)
    .await
}

/// Writes `memory` once (its id is its identity); returns whether this call wrote it.
pub async fn remember(pool: &PgPool, memory: &NewMemory<'_>) -> Result<bool, MemoryError> {
    let vector = literal(memory.embedding)?;
    let written = sqlx::query!(
        "insert into memories (id, tenant_id, agent_id, kind, text, embedding, model, platform, source_asset)
         values ($1, $2, $3, $4, $5, $6::text::vector, $7, $8, $9)
         on conflict (agent_id, id) do nothing",
        memory.id,
        memory.tenant.0,
        memory.agent.0,
        memory.kind.as_str(),
        memory.text,
        vector,
        memory.model,
        memory.platform,
        memory.source_asset,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(written == 1)
}

/// The nearest-memories query for vectors of `dims` (one of [`DIMENSIONS`], never caller text):
/// naming the length in the SQL is what lets the planner use that length's partial index.
/// Binds: tenant, agent, model, the query vector's text form, k.
pub fn nearest_sql(dims: usize) -> String {
    debug_assert!(DIMENSIONS.contains(&dims));
    format!(
        "select n.id, n.kind, n.text, n.platform, n.created_at, n.distance, e.payload as engagement
         from (
             select id, kind, text, platform, created_at, source_asset,
                    (embedding::vector({dims}) <=> $4::text::vector({dims}))::float8 as distance
             from memories
             where tenant_id = $1 and agent_id = $2 and model = $3 and dims = {dims}
             order by embedding::vector({dims}) <=> $4::text::vector({dims})
             limit $5
         ) n
         left join lateral (
             select payload from asset_events
             where asset_id = n.source_asset and event_type = 'engagement'
             order by occurred_at desc limit 1
         ) e on true
         order by n.distance"
    )
}

/// The `k` memories of `agent` (of `tenant`) nearest to `query`, among those `model` made,
/// nearest first.
pub async fn nearest(
    pool: &PgPool,
    tenant: TenantId,
    agent: AgentId,
    model: &str,
    query: &[f32],
    k: i64,
) -> Result<Vec<Recalled>, MemoryError> {
    let vector = literal(query)?;
    let sql = nearest_sql(query.len());
    let mut tx = pool.begin().await?;
    // Keep searching the graph until enough of this agent's memories are found (pgvector 0.8),
    // in order: one agent's rows are a small part of a fleet's.
    sqlx::query("set local hnsw.iterative_scan = strict_order")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query_as::<_, Recalled>(sqlx::AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(agent.0)
        .bind(model)
        .bind(vector)
        .bind(k.clamp(1, 100))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_finite_directions_are_stored() {
        assert!(matches!(
            literal(&[1.0; 3]),
            Err(MemoryError::Dimensions { got: 3 })
        ));
        let mut v = vec![0.0f32; 384];
        assert!(matches!(literal(&v), Err(MemoryError::Zero)));
        v[0] = f32::NAN;
        assert!(matches!(literal(&v), Err(MemoryError::NotFinite)));
        v[0] = 0.5;
        let text = literal(&v).unwrap();
        assert!(text.starts_with("[0.5,0,") && text.ends_with(']'));
    }
}
