//! The judge's writes: each decision about a result is one transaction that first locks the
//! task row and checks the result is for the task's current, undecided attempt. A redelivered
//! or superseded result therefore decides nothing twice: the call answers
//! [`Decided::Superseded`] and the caller only re-sends what the first decision sent.
//!
//! - [`commit`]: an approved result is committed through OCC; an approved effect also gets its
//!   approval (a decided review, whose id is the effect's idempotency key), its spend for a
//!   financial action (the CFO's budget ledger) and its `execute` task, all or nothing;
//! - [`hold`]: a pending review, with the deadline from the agent's policy;
//! - [`retry`]: the task waits for a replan (the judge's feedback, or fresh versions after a
//!   conflict), whose message is written to the outbox with it;
//! - [`fail`]: attempts are spent; the task fails, its dependents are cancelled and the result is
//!   surfaced to humans.
//!
//! Every decision appends an audit record in the same transaction, and writes the messages it
//! causes (the `execute` task, the replan) to the [`outbox`] in it too.

use std::collections::BTreeMap;

use chimera_core::domain::{
    AgentId, AuditRecord, DecisionKind, GoalId, GoalStatus, ReadSet, ReviewId, Task, TaskId,
    TaskKind, TaskResult, TaskStatus, TenantId,
};
use chimera_core::effect;
use chimera_core::routing::{Policy, Quota, ReviewReason};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::budget::{self, BudgetError, SpendOutcome};
use crate::occ::{self, CommitError, CommitOutcome, Moved};
use crate::quotas::{self, QuotaError};
use crate::records::Recorded;
use crate::{audit, outbox};

/// A task as the judge needs it, with its agent's current policy.
#[derive(Debug, Clone)]
pub struct TaskState {
    pub goal_id: GoalId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub kind: TaskKind,
    pub status: TaskStatus,
    pub attempt: u32,
    /// Attempts that followed a conflict: not the policy's to count.
    pub conflicts: u32,
    /// The judge's feedback on the previous attempt.
    pub feedback: Option<String>,
    pub read_set: serde_json::Value,
    pub write_set: Vec<String>,
    pub policy: Policy,
    /// The goal's constraints (budget, amounts...).
    pub constraints: serde_json::Value,
    /// The task's inputs (its platform, brief...).
    pub inputs: serde_json::Value,
    /// The goal's text: what every task of the goal is about.
    pub goal_text: String,
    /// The agent's persona (name, voice, and from SOUL.md its bio and examples).
    pub persona: serde_json::Value,
}

impl TaskState {
    /// Whether a result of `attempt` is still to be decided.
    pub fn is_open_for(&self, attempt: u32) -> bool {
        self.attempt == attempt && self.status.is_undecided()
    }

    /// The policy's count of `attempt`: the attempts that did not follow a conflict.
    pub fn counted(&self, attempt: u32) -> u32 {
        attempt.saturating_sub(self.conflicts).max(1)
    }
}

pub async fn task_state(pool: &PgPool, task: TaskId) -> Result<Option<TaskState>, sqlx::Error> {
    let Some(row) = sqlx::query!(
        r#"select t.goal_id, g.tenant_id, t.agent_id, t.kind as "kind: TaskKind", t.status as "status: TaskStatus",
                  t.attempt, t.conflicts, t.feedback, t.read_set, t.write_set, p.document as policy, g.constraints,
                  t.inputs, g.body as goal_text, a.persona
           from tasks t
           join goals g on g.id = t.goal_id
           join agents a on a.id = t.agent_id
           join policies p on p.agent_id = a.id and p.version = a.policy_version
           where t.id = $1"#,
        task.0
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let decode = |e: String| sqlx::Error::Decode(e.into());
    Ok(Some(TaskState {
        goal_id: GoalId(row.goal_id),
        tenant_id: TenantId(row.tenant_id),
        agent_id: AgentId(row.agent_id),
        kind: row.kind,
        status: row.status,
        attempt: u32::try_from(row.attempt).map_err(|e| decode(e.to_string()))?,
        conflicts: u32::try_from(row.conflicts).map_err(|e| decode(e.to_string()))?,
        feedback: row.feedback,
        read_set: row.read_set,
        write_set: row.write_set,
        policy: serde_json::from_value(row.policy).map_err(|e| decode(e.to_string()))?,
        constraints: row.constraints,
        inputs: row.inputs,
        goal_text: row.goal_text,
        persona: row.persona,
    }))
}

/// The risk tags of the committed work `task` builds on (its dependencies, transitively): the
/// findings of research and drafts travel with the work to the effect it proposes.
pub async fn inherited_risk_tags(pool: &PgPool, task: TaskId) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"with recursive upstream (id) as (
               select depends_on from task_dependencies where task_id = $1
               union
               select d.depends_on from task_dependencies d join upstream u on d.task_id = u.id
           )
           select distinct tag as "tag!"
           from upstream u
           join tasks t on t.id = u.id and t.status = 'committed'
           join results r on r.task_id = t.id and r.attempt = t.attempt
           cross join lateral unnest(r.risk_tags) as tag
           order by 1"#,
        task.0
    )
    .fetch_all(pool)
    .await
}

/// A review the judge opens (pending) or records already decided (an automatic approval).
#[derive(Debug, Clone)]
pub struct NewReview {
    pub id: ReviewId,
    pub policy_version: i32,
    pub reasoning: String,
    pub reasons: Vec<ReviewReason>,
    /// `sensitive`, `medium_confidence`, `missing_disclosure`, `financial`,
    /// `failed_after_retries`.
    pub risk_types: Vec<&'static str>,
    pub financial: bool,
    pub due_at: DateTime<Utc>,
    pub final_deadline: DateTime<Utc>,
    /// One line for the queue (at most 300 characters are kept).
    pub summary: Option<String>,
}

impl NewReview {
    /// Deadlines from `policy`, counted from now.
    pub fn deadlines(policy: &Policy) -> (DateTime<Utc>, DateTime<Utc>) {
        let now = Utc::now();
        (
            now + chrono::Duration::seconds(i64::from(policy.review_due_secs)),
            now + chrono::Duration::seconds(i64::from(policy.review_final_secs)),
        )
    }
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided<T> {
    /// This call decided.
    Done(T),
    /// The result is not for the task's current, undecided attempt (a redelivery, or an older
    /// attempt): nothing was written.
    Superseded { status: TaskStatus, attempt: u32 },
}

/// An approved effect: the approval, the spend (financial actions) and the task that performs it.
#[derive(Debug, Clone)]
pub struct Effect {
    pub approval: NewReview,
    /// The amount the CFO charges to the agent's budget, under the approval's key, within the
    /// policy's spend limits.
    pub spend_cents: Option<i64>,
    pub limits: chimera_core::routing::SpendLimits,
    /// The payment goes without a person: the policy's auto-pay limit applies too.
    pub auto_pay: bool,
    /// The policy's platform quotas the effect reserves from ([`crate::quotas`]).
    pub quotas: BTreeMap<String, Quota>,
    /// The `execute` task (status `queued`); its message is written to the outbox with it, both
    /// due when the effect's quota window starts.
    pub execute: Task,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitRefused {
    /// State moved since the task read it; nothing was written.
    #[error("conflict: state moved since the task read it")]
    Conflict { moved: Vec<Moved> },
    /// The CFO refused the spend; nothing was written.
    #[error("budget refused: {0}")]
    Budget(BudgetError),
    /// No quota window within reach has room for the effect; nothing was written.
    #[error("quota: {0}")]
    Quota(QuotaError),
    #[error(transparent)]
    Commit(CommitError),
}

impl From<sqlx::Error> for CommitRefused {
    fn from(err: sqlx::Error) -> Self {
        Self::Commit(CommitError::Database(err))
    }
}

/// Begins a decision on `result`'s attempt: the transaction, with the task row locked, when the
/// attempt is the task's current one and still undecided (`queued` or `running`); otherwise
/// what the task is at, as [`Decided::Superseded`].
async fn begin_decision<T>(
    pool: &PgPool,
    result: &TaskResult,
) -> Result<Result<Transaction<'static, Postgres>, Decided<T>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        r#"select status as "status: TaskStatus", attempt from tasks where id = $1 for update"#,
        result.task_id.0
    )
    .fetch_one(&mut *tx)
    .await?;
    let attempt = u32::try_from(row.attempt).unwrap_or_default();
    if attempt == result.attempt && row.status.is_undecided() {
        Ok(Ok(tx))
    } else {
        Ok(Err(Decided::Superseded {
            status: row.status,
            attempt,
        }))
    }
}

fn record(result: &TaskResult, action: &str, reasoning: String) -> AuditRecord {
    AuditRecord {
        goal_id: Some(result.goal_id),
        task_id: Some(result.task_id),
        artifact_hash: Some(result.commit_hash.clone()),
        reasoning: Some(reasoning),
        ..AuditRecord::new(result.tenant_id, "judge", action, Utc::now())
    }
}

/// Commits an approved `result` (recorded before), with its `effect` if it proposes one.
pub async fn commit(
    pool: &PgPool,
    result: &Recorded,
    policy_version: i32,
    reasoning: &str,
    effect: Option<&Effect>,
) -> Result<Decided<Committed>, CommitRefused> {
    let mut tx = match begin_decision(pool, result).await? {
        Ok(tx) => tx,
        Err(superseded) => return Ok(superseded),
    };
    let outcome = match occ::commit_in(&mut tx, result).await {
        Ok(outcome) => outcome,
        Err(CommitError::Conflict { moved }) => {
            tx.rollback().await?;
            return Err(CommitRefused::Conflict { moved });
        }
        Err(other) => return Err(CommitRefused::Commit(other)),
    };
    let woken = wake_after(&mut tx, result, &outcome).await?;
    let mut entry = record(result, "judge.commit", reasoning.to_owned());
    entry.policy_version = Some(policy_version);
    let mut deferred_until = None;
    if let Some(effect) = effect {
        let released = effect::performed_by(&effect.execute).digest();
        insert_review(
            &mut tx,
            result,
            &effect.approval,
            Some((DecisionKind::AutoApprove, released.as_str())),
        )
        .await?;
        if let Some(amount) = effect.spend_cents {
            let key = format!("approval:{}", effect.approval.id.0);
            match budget::spend_transfer(
                &mut tx,
                result.agent_id,
                &key,
                amount,
                Some(result.task_id),
                Some("approved action"),
                &effect.limits,
                effect.auto_pay,
            )
            .await
            {
                Ok(SpendOutcome::Spent { .. } | SpendOutcome::Duplicate { .. }) => {}
                Err(err) => {
                    tx.rollback().await?;
                    return Err(CommitRefused::Budget(err));
                }
            }
        }
        match quotas::schedule_effect(&mut tx, &effect.execute, &effect.quotas).await {
            Ok(Some(at)) => {
                deferred_until = Some(at);
                entry.reasoning = Some(format!(
                    "{reasoning}; over the platform's quota now: the effect goes at {}",
                    at.to_rfc3339()
                ));
            }
            Ok(None) => {}
            Err(QuotaError::Database(err)) => return Err(err.into()),
            Err(err) => {
                tx.rollback().await?;
                return Err(CommitRefused::Quota(err));
            }
        }
        entry.action = "judge.auto_approve".into();
        entry.review_id = Some(effect.approval.id);
    }
    audit::append(&mut *tx, &entry).await?;
    tx.commit().await?;
    Ok(Decided::Done(Committed {
        outcome,
        woken,
        deferred_until,
    }))
}

/// A judge's commit: what it committed, and the goal of a task it woke on the keys it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub outcome: CommitOutcome,
    pub woken: Option<GoalId>,
    /// When the approved effect goes, if the platform's quota deferred it to a later window.
    pub deferred_until: Option<DateTime<Utc>>,
}

/// [`wake_next`] after `result`'s commit, if this call wrote it.
pub(crate) async fn wake_after(
    conn: &mut PgConnection,
    result: &Recorded,
    outcome: &CommitOutcome,
) -> Result<Option<GoalId>, sqlx::Error> {
    if !matches!(outcome, CommitOutcome::Committed { .. }) {
        return Ok(None);
    }
    let keys: Vec<String> = result
        .write_set
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    wake_next(conn, result.agent_id, &keys).await
}

/// Inserts `review`: pending, or decided as `decided` says (the decision, and the digest of the
/// effect it released).
async fn insert_review(
    conn: &mut PgConnection,
    result: &TaskResult,
    review: &NewReview,
    decided: Option<(DecisionKind, &str)>,
) -> Result<(), sqlx::Error> {
    let (decision, effect_sha256) = decided.unzip();
    let reasons =
        serde_json::to_value(&review.reasons).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let risk_tags: Vec<String> = result
        .risk_tags
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    let risk_types: Vec<String> = review.risk_types.iter().map(|t| (*t).to_owned()).collect();
    sqlx::query!(
        r#"insert into reviews (id, tenant_id, result_id, task_id, status, artifact_hash, policy_version,
                                judge_reasoning, risk_tags, confidence, financial, due_at, final_deadline,
                                reasons, risk_types, decision, decided_by, decided_at, summary, effect_sha256)
           values ($1, $2, $3, $4, case when $15::decision_kind is null then 'pending' else 'approved' end::review_status,
                   $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                   $15, case when $15 is null then null else 'judge' end,
                   case when $15 is null then null else now() end, $16, $17)
           on conflict (id) do nothing"#,
        review.id.0,
        result.tenant_id.0,
        result.id.0,
        result.task_id.0,
        result.commit_hash.as_str(),
        review.policy_version,
        review.reasoning,
        &risk_tags,
        result.confidence_score.value(),
        review.financial,
        review.due_at,
        review.final_deadline,
        reasons,
        &risk_types,
        decision as Option<DecisionKind>,
        review
            .summary
            .as_ref()
            .map(|s| s.chars().take(300).collect::<String>()),
        effect_sha256,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Holds `result` for a human: the task waits in `awaiting_review` behind a pending review.
pub async fn hold(
    pool: &PgPool,
    result: &TaskResult,
    review: &NewReview,
) -> Result<Decided<()>, sqlx::Error> {
    let mut tx = match begin_decision(pool, result).await? {
        Ok(tx) => tx,
        Err(superseded) => return Ok(superseded),
    };
    set_status(&mut tx, result.task_id, TaskStatus::AwaitingReview, None).await?;
    insert_review(&mut tx, result, review, None).await?;
    let mut entry = record(result, "judge.hold", review.reasoning.clone());
    entry.review_id = Some(review.id);
    entry.policy_version = Some(review.policy_version);
    audit::append(&mut *tx, &entry).await?;
    tx.commit().await?;
    Ok(Decided::Done(()))
}

async fn set_status(
    conn: &mut PgConnection,
    task: TaskId,
    status: TaskStatus,
    feedback: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update tasks set status = $2, feedback = coalesce($3, feedback), updated_at = now()
         where id = $1",
        task.0,
        status as TaskStatus,
        feedback
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Why a task is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// The judge's checks or the confidence: counts against the policy's attempts.
    Feedback,
    /// State moved under the task: nothing was wrong with its work, so the replan does not use
    /// up one of the policy's attempts (it counts as a conflict), and it backs off.
    Conflict,
}

/// Conflicts after which a task fails instead of being replanned again (a key that never
/// settles); the 200-replies-in-one-thread test sees at most 6 for one reply.
pub const MAX_CONFLICTS: i32 = 50;

/// Marks the task `retrying` for a replan with `feedback`. `Done(false)` when no attempt is
/// left (the caller fails it instead); a conflict has one until [`MAX_CONFLICTS`].
pub async fn retry(
    pool: &PgPool,
    result: &TaskResult,
    feedback: &str,
    cause: RetryCause,
    fresh_versions: &ReadSet,
) -> Result<Decided<bool>, sqlx::Error> {
    let mut tx = match begin_decision(pool, result).await? {
        Ok(tx) => tx,
        Err(superseded) => return Ok(superseded),
    };
    if cause == RetryCause::Conflict {
        // A key that never settles must not loop for ever: after this many conflicts the task
        // fails and is surfaced to humans.
        let conflicts: i32 = sqlx::query_scalar!(
            "select conflicts from tasks where id = $1",
            result.task_id.0
        )
        .fetch_one(&mut *tx)
        .await?;
        if conflicts >= MAX_CONFLICTS {
            tx.rollback().await?;
            return Ok(Decided::Done(false));
        }
        replan_conflicted(
            &mut tx,
            result.goal_id,
            result.task_id,
            feedback,
            fresh_versions,
        )
        .await?;
        audit::append(
            &mut *tx,
            &record(result, "judge.conflict", feedback.to_owned()),
        )
        .await?;
        tx.commit().await?;
        return Ok(Decided::Done(true));
    }
    let updated = sqlx::query!(
        "update tasks set status = 'retrying', feedback = $2, updated_at = now()
         where id = $1 and attempt - conflicts < max_attempts",
        result.task_id.0,
        feedback,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        tx.rollback().await?;
        return Ok(Decided::Done(false));
    }
    audit::append(
        &mut *tx,
        &record(result, "judge.retry", feedback.to_owned()),
    )
    .await?;
    outbox::enqueue(
        &mut tx,
        &outbox::Message::replan(
            result.goal_id,
            result.task_id,
            result.attempt,
            feedback,
            fresh_versions,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(Decided::Done(true))
}

/// Sets `task` (queued, running or held, its row locked by the caller) waiting for a replan
/// after a conflict, and writes the replan (with the versions the keys have now) to the outbox.
/// The conflict is counted, not charged to the policy's attempts. When no other task of the
/// agent is in flight on the same keys, the replan goes after a second or so (half of it
/// random). When others are, it waits its turn: the next commit on those keys wakes the task
/// that has waited longest ([`wake_next`]), so a hot key takes its contenders one at a time
/// instead of letting them meet again; a replan nobody wakes still goes after 15-30 s.
/// Returns when the replan goes at the latest; `None` if the task was in none of those states.
pub(crate) async fn replan_conflicted(
    conn: &mut PgConnection,
    goal: GoalId,
    task: TaskId,
    feedback: &str,
    fresh_versions: &ReadSet,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let Some(row) = sqlx::query!(
        r#"update tasks t set status = 'retrying', feedback = $2, updated_at = now(),
                  conflicts = t.conflicts + 1,
                  not_before = now() + (0.5 + random() / 2) * case
                      when exists (select 1 from tasks o
                                   where o.agent_id = t.agent_id and o.id <> t.id and o.write_set && t.write_set
                                     and o.status in ('queued', 'running'))
                      then interval '30 seconds' else interval '1 second' end
           where t.id = $1 and t.status in ('queued', 'running', 'awaiting_review')
           returning t.attempt, t.not_before as "not_before!""#,
        task.0,
        feedback,
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let attempt = u32::try_from(row.attempt).unwrap_or_default();
    outbox::enqueue_at(
        conn,
        &outbox::Message::replan(goal, task, attempt, feedback, fresh_versions),
        Some(row.not_before),
    )
    .await?;
    Ok(Some(row.not_before))
}

/// After a commit that wrote `keys` for `agent` (in its transaction): the task that has waited
/// longest for its turn on any of those keys after a conflict ([`replan_conflicted`]) is
/// replanned now, its message in the outbox. Returns that task's goal, whose rows the caller
/// relays.
async fn wake_next(
    conn: &mut PgConnection,
    agent: AgentId,
    keys: &[String],
) -> Result<Option<GoalId>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(None);
    }
    let Some(row) = sqlx::query!(
        r#"update tasks t set not_before = now()
           where t.id = (select w.id from tasks w
                         where w.agent_id = $1 and w.status = 'retrying' and w.write_set && $2
                           and w.not_before > now()
                         order by w.updated_at, w.id
                         limit 1
                         for update skip locked)
           returning t.id, t.goal_id, t.attempt, t.feedback"#,
        agent.0,
        keys,
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let attempt = u32::try_from(row.attempt).unwrap_or_default();
    outbox::enqueue(
        conn,
        &outbox::Message::woken(
            GoalId(row.goal_id),
            TaskId(row.id),
            attempt,
            row.feedback.as_deref().unwrap_or_default(),
        ),
    )
    .await?;
    Ok(Some(GoalId(row.goal_id)))
}

/// Fails the task after its last attempt: its blocked dependents are cancelled, and the result
/// is surfaced to humans in a pending review.
pub async fn fail(
    pool: &PgPool,
    result: &TaskResult,
    feedback: &str,
    review: &NewReview,
) -> Result<Decided<()>, sqlx::Error> {
    let mut tx = match begin_decision(pool, result).await? {
        Ok(tx) => tx,
        Err(superseded) => return Ok(superseded),
    };
    set_status(&mut tx, result.task_id, TaskStatus::Failed, Some(feedback)).await?;
    cancel_dependents(&mut tx, result.task_id).await?;
    insert_review(&mut tx, result, review, None).await?;
    let mut entry = record(result, "judge.fail", feedback.to_owned());
    entry.review_id = Some(review.id);
    entry.policy_version = Some(review.policy_version);
    audit::append(&mut *tx, &entry).await?;
    tx.commit().await?;
    Ok(Decided::Done(()))
}

/// Cancels the blocked tasks that depend, directly or not, on `task`; returns how many.
pub async fn cancel_dependents(conn: &mut PgConnection, task: TaskId) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "with recursive dependents (id) as (
             select task_id from task_dependencies where depends_on = $1
             union
             select d.task_id from task_dependencies d join dependents x on d.depends_on = x.id
         )
         update tasks set status = 'cancelled', feedback = 'a task it depends on failed', updated_at = now()
         where id in (select id from dependents) and status = 'blocked'",
        task.0
    )
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Brings the goal's status in line with its tasks: `in_progress` while a task can still move,
/// `awaiting_review` while only humans can move it, then `completed` (every task committed) or
/// `failed`. Returns the new status when it changed.
pub async fn settle_goal(pool: &PgPool, goal: GoalId) -> Result<Option<GoalStatus>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"with counts as (
               select count(*) filter (where status in ('ready', 'queued', 'running', 'retrying')) as moving,
                      count(*) filter (where status = 'blocked') as blocked,
                      count(*) filter (where status in ('failed', 'cancelled')) as bad,
                      count(*) filter (where status = 'awaiting_review') > 0
                          or exists (select 1 from reviews v join tasks x on x.id = v.task_id
                                     where x.goal_id = $1 and v.status = 'pending') as held
               from tasks where goal_id = $1
           ), next as (
               select case when moving > 0 then 'in_progress'
                           when held then 'awaiting_review'
                           when blocked > 0 then 'in_progress'
                           when bad > 0 then 'failed'
                           else 'completed' end::goal_status as status
               from counts
           )
           update goals g set status = next.status, updated_at = now()
           from next
           where g.id = $1 and g.status in ('in_progress', 'awaiting_review') and g.status <> next.status
           returning g.status as "status: GoalStatus""#,
        goal.0
    )
    .fetch_optional(pool)
    .await
}
