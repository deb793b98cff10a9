//! The audit trail: one append-only record per decision or system action.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CommitHash, GoalId, ReviewId, TaskId, TenantId};

/// One append-only audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditRecord {
    pub tenant_id: TenantId,
    pub actor: String,
    pub action: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal_id: Option<GoalId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_id: Option<ReviewId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_hash: Option<CommitHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_artifact_hash: Option<CommitHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl AuditRecord {
    /// A record of `actor` doing `action` at `at` in `tenant`, naming nothing else yet.
    pub fn new(
        tenant: TenantId,
        actor: impl Into<String>,
        action: impl Into<String>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            tenant_id: tenant,
            actor: actor.into(),
            action: action.into(),
            at,
            goal_id: None,
            task_id: None,
            review_id: None,
            artifact_hash: None,
            edited_artifact_hash: None,
            policy_version: None,
            reasoning: None,
            request_id: None,
        }
    }
}
