//! Provenance of artifacts: one `assets` row per artifact of a result, naming the bytes (S3
//! key and hash), the tool and server version that made them and the parameters it was called
//! with. Rows have deterministic ids, so recording the same result's artifacts again adds
//! nothing.

use sqlx::PgPool;

use crate::outbox::{self, Message};
use uuid::Uuid;

/// One artifact to record.
#[derive(Debug, Clone)]
pub struct NewAsset {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub agent_id: Uuid,
    pub task_id: Uuid,
    pub result_id: Uuid,
    /// `text`, `image`, `video`, `audio` or `json`.
    pub kind: &'static str,
    pub s3_key: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub media_type: String,
    pub tool_name: String,
    pub tool_version: Option<String>,
    pub platform: Option<String>,
    /// The whole call: server, tool, arguments, attempt.
    pub provenance: serde_json::Value,
}

/// Records `assets` and the message that takes their result to the judge (again, if it was
/// sent before), in one transaction; returns how many assets were new.
pub async fn record_assets(
    pool: &PgPool,
    assets: &[NewAsset],
    result: &Message,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut added = 0;
    for a in assets {
        added += sqlx::query!(
            "insert into assets (id, tenant_id, agent_id, task_id, result_id, kind, s3_key, sha256, size_bytes,
                                 media_type, tool_name, tool_version, platform, provenance)
             values ($1, $2, $3, $4, $5, $6::text::asset_kind, $7, $8, $9, $10, $11, $12, $13, $14)
             on conflict (id) do nothing",
            a.id,
            a.tenant_id,
            a.agent_id,
            a.task_id,
            a.result_id,
            a.kind,
            a.s3_key,
            a.sha256,
            a.size_bytes as i64,
            a.media_type,
            a.tool_name,
            a.tool_version,
            a.platform,
            a.provenance,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    // A re-run of the attempt (its claim lost) sends its result again, as a redelivery does.
    outbox::rearm(&mut tx, result).await?;
    tx.commit().await?;
    Ok(added)
}
