//! Semantic memory (pgvector): what each agent said, as text and as an embedding, found again by
//! meaning.
//!
//! - A memory belongs to one agent of one tenant; every read names both, so another tenant's or
//!   another agent's memories are never returned.
//! - Vectors are [`DIMENSIONS`] long and name the model that made them: only memories of the
//!   query's model are compared (two models' vectors do not share a space).
//! - Nearest neighbours by cosine distance, through the HNSW index (`memories_embedding`).
//!
//! Vectors travel as pgvector's text form (`[0.1,0.2,...]`), so no driver type is needed.

use chimera_core::domain::{AgentId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// The embedding length the table stores (all-MiniLM-L6-v2's, and the configured embedders').
pub const DIMENSIONS: usize = 384;

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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recalled {
    pub id: uuid::Uuid,
    pub kind: String,
    pub text: String,
    pub platform: Option<String>,
    pub created_at: DateTime<Utc>,
    pub distance: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("an embedding has {got} dimensions, not {DIMENSIONS}")]
    Dimensions { got: usize },
    #[error("an embedding holds a value that is not a finite number")]
    NotFinite,
    #[error("an embedding of only zeros has no direction")]
    Zero,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// pgvector's text form of `v`, checked: [`DIMENSIONS`] finite values, not all zero.
fn literal(v: &[f32]) -> Result<String, MemoryError> {
    if v.len() != DIMENSIONS {
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

/// Writes `memory` once (its id is its identity); returns whether this call wrote it.
pub async fn remember(pool: &PgPool, memory: &NewMemory<'_>) -> Result<bool, MemoryError> {
    let vector = literal(memory.embedding)?;
    let written = sqlx::query!(
        "insert into memories (id, tenant_id, agent_id, kind, text, embedding, model, platform, source_asset)
         values ($1, $2, $3, $4, $5, $6::text::vector, $7, $8, $9)
         on conflict (id) do nothing",
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
    let rows = sqlx::query_as!(
        Recalled,
        r#"select id, kind, text, platform, created_at,
                  (embedding <=> $4::text::vector)::float8 as "distance!"
           from memories
           where tenant_id = $1 and agent_id = $2 and model = $3
           order by embedding <=> $4::text::vector
           limit $5"#,
        tenant.0,
        agent.0,
        model,
        vector,
        k.clamp(1, 100),
    )
    .fetch_all(pool)
    .await?;
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
        let mut v = vec![0.0f32; DIMENSIONS];
        assert!(matches!(literal(&v), Err(MemoryError::Zero)));
        v[0] = f32::NAN;
        assert!(matches!(literal(&v), Err(MemoryError::NotFinite)));
        v[0] = 0.5;
        let text = literal(&v).unwrap();
        assert!(text.starts_with("[0.5,0,") && text.ends_with(']'));
    }
}
