//! What reviewers read: the pending queue, a review card, the audit trail, the notifications.
//!
//! Every read is scoped to the caller's tenant: another tenant's review or goal reads exactly
//! like one that does not exist.
//!
//! The sweep that makes sure nothing waits forever (escalation, the default decision) writes:
//! it lives in [`crate::sweep`], and [`sweep`] and [`Swept`] are re-exported here.

use chimera_core::domain::{
    DecisionKind, DisclosureLevel, GoalId, ReviewId, ReviewStatus, TaskId, TaskKind, TaskStatus,
    TenantId,
};
use chimera_core::effect::Proposal;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

pub use crate::sweep::{Swept, sweep};

/// Filters of the pending queue.
#[derive(Debug, Clone, Default)]
pub struct QueueFilter {
    /// One of the risk types (`sensitive`, `medium_confidence`, `missing_disclosure`,
    /// `financial`, `failed_after_retries`).
    pub risk_type: Option<String>,
    pub agent: Option<uuid::Uuid>,
    /// Part of the agent's handle or display name (case-insensitive).
    pub agent_name: Option<String>,
    pub goal: Option<uuid::Uuid>,
}

/// The queue's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Oldest first.
    #[default]
    Age,
    /// Least confident first.
    Confidence,
    /// Riskiest first: priority (escalations), then the number of risk types, then money.
    Risk,
}

impl Sort {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "age" => Some(Self::Age),
            "confidence" => Some(Self::Confidence),
            "risk" => Some(Self::Risk),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Age => "age",
            Self::Confidence => "confidence",
            Self::Risk => "risk",
        }
    }
}

/// One pending item of the queue.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueItem {
    pub id: uuid::Uuid,
    pub goal_id: uuid::Uuid,
    pub task_id: uuid::Uuid,
    pub agent_id: uuid::Uuid,
    /// The agent's handle and the name people see, so a queue reads by name, not id.
    pub agent_handle: String,
    pub agent_name: Option<String>,
    #[schema(value_type = String, example = "reply")]
    pub task_kind: TaskKind,
    pub risk_types: Vec<String>,
    pub risk_tags: Vec<String>,
    pub confidence: f64,
    pub financial: bool,
    pub priority: i32,
    pub escalated: bool,
    pub policy_version: i32,
    pub artifact_hash: String,
    pub created_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub final_deadline: DateTime<Utc>,
    /// One line: the judge's summary (a post's text, what a transfer moves to whom), else the
    /// start of the first artifact's text, else its media type.
    pub preview: String,
}

/// The queue's preview of an item: the judge's summary, else what the first artifact reference
/// shows without a read from the bucket.
fn preview(summary: Option<String>, artifact: Option<&serde_json::Value>) -> String {
    const CHARS: usize = 160;
    let inline = artifact
        .and_then(|a| a.get("inline"))
        .and_then(|v| v.as_str());
    let text = match (summary, inline) {
        (Some(summary), _) => summary,
        (None, Some(text)) => match Proposal::from_slice(text.as_bytes()) {
            Ok(p) => p.summary(),
            Err(_) => text.to_owned(),
        },
        (None, None) => format!(
            "[{}]",
            artifact
                .and_then(|a| a.get("media_type"))
                .and_then(|v| v.as_str())
                .unwrap_or("artifact")
        ),
    };
    text.chars().take(CHARS).collect()
}

/// A page of the queue.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<QueueItem>,
    pub total: i64,
}

/// The pending reviews of `tenant` matching `filter`, in `sort` order (`descending` reverses
/// it), `limit` from `offset`.
pub async fn queue(
    pool: &PgPool,
    tenant: TenantId,
    filter: &QueueFilter,
    sort: Sort,
    descending: bool,
    limit: i64,
    offset: i64,
) -> Result<Page, sqlx::Error> {
    let name_pattern = filter
        .agent_name
        .as_deref()
        .map(crate::agents::like_pattern);
    let rows = sqlx::query!(
        r#"with page as (
               -- Sorted and cut on the reviews alone; the agent and goal filters look up the
               -- task only when they are given.
               select v.id, v.result_id, v.task_id, v.risk_types, v.risk_tags, v.confidence,
                      v.financial, v.priority, v.escalated_at is not null as escalated,
                      v.policy_version, v.artifact_hash, v.created_at, v.due_at, v.final_deadline,
                      v.summary, count(*) over () as total
               from reviews v
               where v.tenant_id = $1 and v.status = 'pending'
                 and ($2::text is null or $2 = any (v.risk_types))
                 and (($3::uuid is null and $4::uuid is null and $9::text is null)
                      or exists (select 1 from tasks t join agents a on a.id = t.agent_id
                                 where t.id = v.task_id
                                   and ($3::uuid is null or t.agent_id = $3)
                                   and ($4::uuid is null or t.goal_id = $4)
                                   and ($9::text is null or a.handle ilike $9 or a.display_name ilike $9)))
               order by
                 (case $5
                    when 'confidence' then v.confidence
                    when 'risk' then (v.priority * 100 + cardinality(v.risk_types) * 10 + v.financial::int)::double precision
                    else extract(epoch from v.created_at)::double precision
                  end) * (case when $6 then -1 else 1 end),
                 v.created_at, v.id
               limit $7 offset $8
           )
           -- Only the page's tasks, agents and results are read.
           select p.id as "id!", t.goal_id, t.id as task_id, t.agent_id,
                  a.handle as agent_handle, a.display_name as agent_name, t.kind as "task_kind: TaskKind",
                  p.risk_types as "risk_types!", p.risk_tags as "risk_tags!", p.confidence as "confidence!",
                  p.financial as "financial!", p.priority as "priority!", p.escalated as "escalated!",
                  p.policy_version as "policy_version!", p.artifact_hash as "artifact_hash!",
                  p.created_at as "created_at!", p.due_at as "due_at!", p.final_deadline as "final_deadline!",
                  r.artifact -> 'artifacts' -> 0 as first_artifact, p.summary, p.total as "total!"
           from page p
           join tasks t on t.id = p.task_id
           join agents a on a.id = t.agent_id
           join results r on r.id = p.result_id
           order by
             (case $5
                when 'confidence' then p.confidence
                when 'risk' then (p.priority * 100 + cardinality(p.risk_types) * 10 + p.financial::int)::double precision
                else extract(epoch from p.created_at)::double precision
              end) * (case when $6 then -1 else 1 end),
             p.created_at, p.id"#,
        tenant.0,
        filter.risk_type,
        filter.agent,
        filter.goal,
        sort.as_str(),
        descending,
        limit,
        offset,
        name_pattern.as_deref(),
    )
    .fetch_all(pool)
    .await?;
    let total = match rows.first() {
        Some(row) => row.total,
        // Past the last page, the count comes from its own query.
        None if offset > 0 => {
            sqlx::query_scalar!(
                r#"select count(*) as "n!" from reviews v join tasks t on t.id = v.task_id
                   join agents a on a.id = t.agent_id
                   where v.tenant_id = $1 and v.status = 'pending'
                     and ($2::text is null or $2 = any (v.risk_types))
                     and ($3::uuid is null or t.agent_id = $3)
                     and ($4::uuid is null or t.goal_id = $4)
                     and ($5::text is null or a.handle ilike $5 or a.display_name ilike $5)"#,
                tenant.0,
                filter.risk_type,
                filter.agent,
                filter.goal,
                name_pattern.as_deref(),
            )
            .fetch_one(pool)
            .await?
        }
        None => 0,
    };
    let items = rows
        .into_iter()
        .map(|r| QueueItem {
            id: r.id,
            goal_id: r.goal_id,
            task_id: r.task_id,
            agent_id: r.agent_id,
            agent_handle: r.agent_handle,
            agent_name: r.agent_name,
            task_kind: r.task_kind,
            risk_types: r.risk_types,
            risk_tags: r.risk_tags,
            confidence: r.confidence,
            financial: r.financial,
            priority: r.priority,
            escalated: r.escalated,
            policy_version: r.policy_version,
            artifact_hash: r.artifact_hash,
            created_at: r.created_at,
            due_at: r.due_at,
            final_deadline: r.final_deadline,
            preview: preview(r.summary, r.first_artifact.as_ref()),
        })
        .collect();
    Ok(Page { items, total })
}

/// A review with what a reviewer must see of its result.
#[derive(Debug, Clone)]
pub struct Card {
    pub id: ReviewId,
    pub status: ReviewStatus,
    pub goal_id: GoalId,
    pub task_id: TaskId,
    pub agent_id: uuid::Uuid,
    pub agent_handle: String,
    pub agent_name: Option<String>,
    pub task_kind: TaskKind,
    pub task_status: TaskStatus,
    pub attempt: i32,
    pub confidence: f64,
    pub risk_tags: Vec<String>,
    pub risk_types: Vec<String>,
    pub reasons: serde_json::Value,
    pub disclosure_level: Option<DisclosureLevel>,
    pub judge_reasoning: String,
    pub policy_version: i32,
    /// The agent's policy version now (a decision under an older one is stale).
    pub current_policy_version: i32,
    pub artifact_hash: String,
    pub financial: bool,
    pub priority: i32,
    pub escalated: bool,
    pub created_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub final_deadline: DateTime<Utc>,
    pub decision: Option<DecisionKind>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The result's artifact references (`ArtifactRef` JSON).
    pub artifacts: serde_json::Value,
    /// When the approved effect goes, if the agent's platform quota deferred it to a later
    /// window and it has not gone yet.
    pub deferred_until: Option<DateTime<Utc>>,
}

/// The review `id` of `tenant`, or `None` (also for another tenant's).
pub async fn card(
    pool: &PgPool,
    tenant: TenantId,
    id: ReviewId,
) -> Result<Option<Card>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select v.id, v.status as "status: ReviewStatus", t.goal_id, t.id as task_id, t.agent_id,
                  a.handle as agent_handle, a.display_name as agent_name, t.kind as "task_kind: TaskKind", t.status as "task_status: TaskStatus", r.attempt,
                  v.confidence, v.risk_tags, v.risk_types, v.reasons,
                  r.disclosure_level as "disclosure_level: DisclosureLevel", v.judge_reasoning, v.policy_version,
                  a.policy_version as current_policy_version, v.artifact_hash, v.financial, v.priority, v.escalated_at is not null as "escalated!",
                  v.created_at, v.due_at, v.final_deadline, v.decision as "decision: DecisionKind",
                  v.decided_by, v.decided_at, coalesce(r.artifact -> 'artifacts', '[]'::jsonb) as "artifacts!",
                  (select e.not_before from tasks e
                   where e.approval_id = v.id and e.status = 'queued' and e.not_before > now()) as deferred_until
           from reviews v
           join results r on r.id = v.result_id
           join tasks t on t.id = r.task_id
           join agents a on a.id = t.agent_id
           where v.id = $1 and v.tenant_id = $2"#,
        id.0,
        tenant.0,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Card {
        id: ReviewId(r.id),
        status: r.status,
        goal_id: GoalId(r.goal_id),
        task_id: TaskId(r.task_id),
        agent_id: r.agent_id,
        agent_handle: r.agent_handle,
        agent_name: r.agent_name,
        task_kind: r.task_kind,
        task_status: r.task_status,
        attempt: r.attempt,
        confidence: r.confidence,
        risk_tags: r.risk_tags,
        risk_types: r.risk_types,
        reasons: r.reasons,
        disclosure_level: r.disclosure_level,
        judge_reasoning: r.judge_reasoning,
        policy_version: r.policy_version,
        current_policy_version: r.current_policy_version,
        artifact_hash: r.artifact_hash,
        financial: r.financial,
        priority: r.priority,
        escalated: r.escalated,
        created_at: r.created_at,
        due_at: r.due_at,
        final_deadline: r.final_deadline,
        decision: r.decision,
        decided_by: r.decided_by,
        decided_at: r.decided_at,
        artifacts: r.artifacts,
        deferred_until: r.deferred_until,
    }))
}

/// One audit record as the trail shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub goal_id: Option<uuid::Uuid>,
    pub task_id: Option<uuid::Uuid>,
    pub review_id: Option<uuid::Uuid>,
    pub artifact_hash: Option<String>,
    pub edited_artifact_hash: Option<String>,
    pub policy_version: Option<i32>,
    pub reasoning: Option<String>,
    pub request_id: Option<String>,
}

/// What an audit trail is about.
#[derive(Debug, Clone, Copy)]
pub enum Subject {
    Goal(GoalId),
    Review(ReviewId),
}

/// The audit trail of a goal or a review of `tenant`, oldest first (at most `limit` records);
/// `None` when the goal or review is not the tenant's.
pub async fn audit_trail(
    pool: &PgPool,
    tenant: TenantId,
    subject: Subject,
    limit: i64,
) -> Result<Option<Vec<AuditEntry>>, sqlx::Error> {
    let (goal, review) = match subject {
        Subject::Goal(g) => (Some(g.0), None),
        Subject::Review(r) => (None, Some(r.0)),
    };
    let known = sqlx::query_scalar!(
        r#"select exists (select 1 from goals where id = $2 and tenant_id = $1)
                  or exists (select 1 from reviews where id = $3 and tenant_id = $1) as "known!""#,
        tenant.0,
        goal,
        review,
    )
    .fetch_one(pool)
    .await?;
    if !known {
        return Ok(None);
    }
    let entries = sqlx::query_as!(
        AuditEntry,
        r#"select id, at, actor, action, goal_id, task_id, review_id, artifact_hash,
                  edited_artifact_hash, policy_version, reasoning, request_id
           from audit_log
           where tenant_id = $1
             and (($2::uuid is not null and goal_id = $2) or ($3::uuid is not null and review_id = $3))
           order by id
           limit $4"#,
        tenant.0,
        goal,
        review,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(Some(entries))
}

/// A notification for a tenant's reviewers.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub id: i64,
    pub review_id: Option<uuid::Uuid>,
    pub kind: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

/// The newest notifications of `tenant`, newest first.
pub async fn notifications(
    pool: &PgPool,
    tenant: TenantId,
    limit: i64,
) -> Result<Vec<Notification>, sqlx::Error> {
    sqlx::query_as!(
        Notification,
        "select id, review_id, kind, message, created_at from notifications
         where tenant_id = $1 order by id desc limit $2",
        tenant.0,
        limit
    )
    .fetch_all(pool)
    .await
}
