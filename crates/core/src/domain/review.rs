//! Reviews and the audit trail: a result held for a human, the decisions taken about results,
//! and the append-only audit record.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CommitHash, Confidence, GoalId, ResultId, ReviewId, RiskTag, TaskId, TenantId};

/// Where a review stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
}

/// A decision about a result, by the judge or a human. Mirrors `decision_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    AutoApprove,
    Approve,
    EditApprove,
    Reject,
    Retry,
    Escalate,
    DefaultReject,
    Fail,
}

/// A result held for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Review {
    pub id: ReviewId,
    pub tenant_id: TenantId,
    pub result_id: ResultId,
    pub status: ReviewStatus,
    pub artifact_hash: CommitHash,
    pub policy_version: i32,
    pub judge_reasoning: String,
    pub risk_tags: BTreeSet<RiskTag>,
    pub confidence: Confidence,
    pub due_at: DateTime<Utc>,
    pub final_deadline: DateTime<Utc>,
}

/// A decision as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Decision {
    pub kind: DecisionKind,
    /// A reviewer's subject, or `judge` / `system`.
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
    /// The artifact hash the decision names: approvals are bound to what was reviewed.
    pub artifact_hash: CommitHash,
    pub policy_version: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

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
