//! Held items judged again when their agent's policy changes.
//!
//! A new policy version writes, in its own transaction, one [`Message::rejudge`] per pending
//! review of the agent ([`enqueue_for_agent`]); the reconciler writes them again for reviews
//! still judged under an older version than their agent's ([`outdated`]). The judge reads the
//! item ([`pending`]) and either decides it by the policy (through [`crate::decisions`], as
//! `policy vN`) or holds it again with the new version's reasons ([`rehold`]). Until then a
//! person's decision on it is refused with the current version: the card never shows an old
//! version's reasons as current.

use chimera_core::domain::{
    AgentId, AuditRecord, Confidence, GoalId, ResultId, ReviewId, TaskId, TenantId,
};
use chimera_core::routing::ReviewReason;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::audit;
use crate::outbox::{self, Message};
use crate::reconcile::decision_budget;

/// A pending review and what judging it again needs.
#[derive(Debug, Clone)]
pub struct Pending {
    pub review: ReviewId,
    pub result: ResultId,
    pub task: TaskId,
    pub goal: GoalId,
    pub tenant: TenantId,
    pub agent: AgentId,
    /// The version it was judged under, and the agent's now.
    pub policy_version: i32,
    pub current_policy: i32,
    pub artifact_hash: String,
    /// The score and topics the judge found when it held the item.
    pub confidence: Confidence,
    pub risk_tags: Vec<String>,
    /// `false` while the agent is paused: the policy releases nothing then.
    pub agent_active: bool,
    pub financial: bool,
}

/// The review `id` while it is pending, or `None`.
pub async fn pending(pool: &PgPool, id: ReviewId) -> Result<Option<Pending>, sqlx::Error> {
    let Some(row) = sqlx::query!(
        r#"select v.id, v.result_id, t.id as task_id, t.goal_id, v.tenant_id, t.agent_id,
                  v.policy_version, a.policy_version as current_policy, v.artifact_hash,
                  v.confidence, v.risk_tags, a.status = 'active' as "agent_active!", v.financial
           from reviews v
           join tasks t on t.id = v.task_id
           join agents a on a.id = t.agent_id
           where v.id = $1 and v.status = 'pending'"#,
        id.0
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(Pending {
        review: ReviewId(row.id),
        result: ResultId(row.result_id),
        task: TaskId(row.task_id),
        goal: GoalId(row.goal_id),
        tenant: TenantId(row.tenant_id),
        agent: AgentId(row.agent_id),
        policy_version: row.policy_version,
        current_policy: row.current_policy,
        artifact_hash: row.artifact_hash,
        confidence: Confidence::try_from(row.confidence)
            .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
        risk_tags: row.risk_tags,
        agent_active: row.agent_active,
        financial: row.financial,
    }))
}

/// Review `id`'s status and its agent's current policy version, or `None` when there is no
/// such review: what tells a late re-judging message from a forged one.
pub async fn standing(pool: &PgPool, id: ReviewId) -> Result<Option<(String, i32)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select v.status::text as "status!", a.policy_version
           from reviews v join tasks t on t.id = v.task_id join agents a on a.id = t.agent_id
           where v.id = $1"#,
        id.0
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.status, r.policy_version)))
}

/// Writes a re-judging message for every pending review of `agent` under `version`, in the
/// caller's transaction (the one that stores the version); returns their goals.
pub async fn enqueue_for_agent(
    conn: &mut PgConnection,
    agent: AgentId,
    version: i32,
) -> Result<Vec<GoalId>, sqlx::Error> {
    let rows = sqlx::query!(
        "select v.id, t.goal_id from reviews v join tasks t on t.id = v.task_id
         where t.agent_id = $1 and v.status = 'pending'",
        agent.0
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut goals = Vec::new();
    for row in rows {
        let goal = GoalId(row.goal_id);
        outbox::enqueue(
            &mut *conn,
            &Message::rejudge(goal, ReviewId(row.id), version),
        )
        .await?;
        goals.push(goal);
    }
    Ok(goals)
}

/// What the new version says about a held item that still needs a person.
#[derive(Debug, Clone)]
pub struct Rehold<'a> {
    pub version: i32,
    pub reasoning: &'a str,
    pub reasons: &'a [ReviewReason],
    pub risk_types: &'a [&'a str],
    pub risk_tags: &'a [String],
}

/// Holds the item again under `rehold.version` with its reasons, audited as
/// `review.rejudged`; `false` (nothing written) when it was decided meanwhile or its agent's
/// policy is no longer that version.
pub async fn rehold(
    pool: &PgPool,
    item: &Pending,
    rehold: &Rehold<'_>,
) -> Result<bool, sqlx::Error> {
    let reasons =
        serde_json::to_value(rehold.reasons).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let risk_types: Vec<String> = rehold.risk_types.iter().map(|t| (*t).to_owned()).collect();
    let mut tx = pool.begin().await?;
    let updated = sqlx::query!(
        "update reviews v set policy_version = $2, judge_reasoning = $3, reasons = $4,
                              risk_types = $5, risk_tags = $6
         from tasks t join agents a on a.id = t.agent_id
         where v.id = $1 and v.status = 'pending' and t.id = v.task_id and a.policy_version = $2",
        item.review.0,
        rehold.version,
        rehold.reasoning,
        reasons,
        &risk_types,
        rehold.risk_tags,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    let entry = AuditRecord {
        goal_id: Some(item.goal),
        task_id: Some(item.task),
        review_id: Some(item.review),
        policy_version: Some(rehold.version),
        reasoning: Some(rehold.reasoning.to_owned()),
        ..AuditRecord::new(
            item.tenant,
            format!("policy v{}", rehold.version),
            "review.rejudged",
            Utc::now(),
        )
    };
    audit::append(&mut *tx, &entry).await?;
    tx.commit().await?;
    Ok(true)
}

/// The reconciler's pass: pending reviews judged under an older policy than their agent's,
/// whose policy changed more than [`decision_budget`] ago, get their re-judging message again.
pub async fn outdated(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ReviewId>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query!(
        "select v.id, t.goal_id, a.policy_version, v.tenant_id
         from reviews v
         join tasks t on t.id = v.task_id
         join agents a on a.id = t.agent_id
         join policies p on p.agent_id = a.id and p.version = a.policy_version
         where v.status = 'pending' and v.policy_version < a.policy_version and p.created_at < $1
         order by p.created_at
         limit $2
         for update of v skip locked",
        now - decision_budget(),
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut reviews = Vec::new();
    for row in rows {
        let (review, goal) = (ReviewId(row.id), GoalId(row.goal_id));
        if !outbox::rearm(&mut tx, &Message::rejudge(goal, review, row.policy_version)).await? {
            // Its message is still waiting to be sent.
            continue;
        }
        let entry = AuditRecord {
            goal_id: Some(goal),
            review_id: Some(review),
            reasoning: Some(format!(
                "held under an older policy than v{}: judged again",
                row.policy_version
            )),
            ..AuditRecord::new(TenantId(row.tenant_id), "system", "system.redrive", now)
        };
        audit::append(&mut *tx, &entry).await?;
        reviews.push(review);
    }
    tx.commit().await?;
    Ok(reviews)
}
