//! What the fleet did out in the world: every effect an agent performed (posts, replies,
//! transfers), newest first, with the approval it came from, for the console's "Published"
//! view (`GET /published`).
//!
//! An effect is an `execute` task that committed: the worker ran the tool and the judge
//! recorded its receipt. What it sent is the task's arguments, exactly as approved (the
//! approval's digest covers them), so the view shows those, not a copy.

use chimera_core::domain::{DecisionKind, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::agents::like_pattern;

/// One performed effect.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Published {
    /// The `execute` task that performed it.
    pub task_id: uuid::Uuid,
    pub goal_id: uuid::Uuid,
    pub agent_id: uuid::Uuid,
    pub agent_handle: String,
    pub agent_name: Option<String>,
    /// `social.publish`, `social.reply` or `wallet.transfer`.
    pub action: String,
    pub platform: Option<String>,
    /// What was posted (posts and replies).
    pub text: Option<String>,
    /// The post replied to.
    pub in_reply_to: Option<String>,
    /// The media the post carried (its SHA-256 in the artifact bucket).
    pub media_sha256: Option<String>,
    /// Every argument as approved (a transfer's amount and payee, a post's text).
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
    pub published_at: DateTime<Utc>,
    /// The approval it came from: a person's decision, or the judge's automatic one.
    pub approval: Approval,
}

/// The decision that released an effect.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Approval {
    pub review_id: uuid::Uuid,
    #[schema(value_type = Option<String>, example = "approve")]
    pub decision: Option<DecisionKind>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// Which effects to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub agent: Option<uuid::Uuid>,
    /// Part of the agent's handle or display name (case-insensitive).
    pub agent_name: Option<String>,
    pub goal: Option<uuid::Uuid>,
    pub limit: i64,
    pub offset: i64,
}

/// The effects `tenant`'s agents performed, newest first.
pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    filter: &Filter,
) -> Result<Vec<Published>, sqlx::Error> {
    let pattern = filter.agent_name.as_deref().map(like_pattern);
    let rows = sqlx::query!(
        r#"select e.id as task_id, e.goal_id, e.agent_id, a.handle, a.display_name,
                  e.inputs ->> 'action' as "action!", e.inputs -> 'arguments' as "arguments!",
                  c.committed_at, v.id as review_id, v.decision as "decision: DecisionKind",
                  v.decided_by, v.decided_at
           from tasks e
           join agents a on a.id = e.agent_id
           join commits c on c.task_id = e.id
           join reviews v on v.id = e.approval_id
           where a.tenant_id = $1 and e.kind = 'execute' and e.status = 'committed'
             and ($2::uuid is null or e.agent_id = $2)
             and ($3::uuid is null or e.goal_id = $3)
             and ($4::text is null or a.handle ilike $4 or a.display_name ilike $4)
           order by c.committed_at desc, e.id
           limit $5 offset $6"#,
        tenant.0,
        filter.agent,
        filter.goal,
        pattern,
        filter.limit,
        filter.offset,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let arg = |name: &str| {
                r.arguments
                    .get(name)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            };
            Published {
                task_id: r.task_id,
                goal_id: r.goal_id,
                agent_id: r.agent_id,
                platform: arg("platform"),
                text: arg("text"),
                in_reply_to: arg("in_reply_to"),
                media_sha256: arg("media_sha256"),
                agent_handle: r.handle,
                agent_name: r.display_name,
                action: r.action,
                published_at: r.committed_at,
                approval: Approval {
                    review_id: r.review_id,
                    decision: r.decision,
                    decided_by: r.decided_by,
                    decided_at: r.decided_at,
                },
                arguments: r.arguments,
            }
        })
        .collect())
}
