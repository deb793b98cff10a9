//! The append-only audit log. Rows are only ever inserted: the schema's triggers refuse
//! UPDATE, DELETE and TRUNCATE for every role.

use chimera_core::domain::AuditRecord;
use sqlx::PgExecutor;

/// Appends one record; returns its id.
pub async fn append<'e>(
    executor: impl PgExecutor<'e>,
    record: &AuditRecord,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "insert into audit_log (tenant_id, at, actor, action, goal_id, task_id, review_id, artifact_hash,
                                edited_artifact_hash, policy_version, reasoning, request_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         returning id",
        record.tenant_id.0,
        record.at,
        record.actor,
        record.action,
        record.goal_id.map(|g| g.0),
        record.task_id.map(|t| t.0),
        record.review_id.map(|r| r.0),
        record.artifact_hash.as_ref().map(|h| h.as_str()),
        record.edited_artifact_hash.as_ref().map(|h| h.as_str()),
        record.policy_version,
        record.reasoning,
        record.request_id,
    )
    .fetch_one(executor)
    .await
}
