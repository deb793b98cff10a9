//! Human decisions on held results: approvals bound to what was reviewed, each a single-shot
//! claim.
//!
//! A decision names the artifact hash and the policy version the reviewer saw. In one
//! transaction, under the review row's lock:
//!
//! - an unknown review, or another tenant's, is [`Refused::NotFound`];
//! - a review decided before answers [`Refused::AlreadyDecided`] with the winner's decision, so
//!   a double click, a replay or a second reviewer never releases an effect twice;
//! - a hash other than the review's is [`Refused::Stale`]; a policy version other than the
//!   review's, or a review judged under an older policy than the agent's (it is being judged
//!   again), is [`Refused::PolicyMoved`] naming the current version; only the re-judging
//!   itself (`by_policy`) decides an item whose policy moved;
//! - an approval commits the result through OCC with its effect (the spend of a financial
//!   action under `approval:<review id>`, the `execute` task and the digest of the effect it
//!   releases) and the messages it causes (the `execute` task, the release of the goal's
//!   waiting tasks) in the outbox; or, if the state moved while the item waited, rolls
//!   everything back ([`Refused::Conflict`]: the task is replanned, its message in the outbox);
//! - a rejection fails the task and cancels what depends on it.
//!
//! Every decision appends its audit record in the same transaction.

use chimera_core::domain::{
    AuditRecord, CommitHash, DecisionKind, GoalId, ResultId, ReviewId, ReviewStatus, Task, TaskId,
    TaskStatus, TenantId,
};
use chimera_core::effect;
use chrono::{DateTime, Utc};
use sqlx::{Acquire, PgPool, Postgres, Transaction};

use crate::budget::{self, BudgetError};
use crate::judging;
use crate::occ::{self, CommitError, Moved};
use crate::quotas::{self, QuotaError};
use crate::records;
use crate::{audit, outbox};

/// What a reviewer decided.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Approve; `execute` performs the effect (absent for a result that proposes none),
    /// `spend_cents` is charged first (financial actions).
    Approve {
        execute: Option<Box<Task>>,
        spend_cents: Option<i64>,
        /// The hash of the edited artifact, when the reviewer edited before approving.
        edited_hash: Option<CommitHash>,
    },
    Reject {
        reason: String,
    },
}

/// One decision request.
#[derive(Debug, Clone)]
pub struct Decision {
    pub tenant: TenantId,
    pub review: ReviewId,
    /// The reviewer's subject claim.
    pub reviewer: String,
    /// The artifact hash and policy version on the card the reviewer saw.
    pub artifact_hash: String,
    pub policy_version: i32,
    pub verdict: Verdict,
    pub request_id: Option<String>,
    /// Taken by the agent's policy itself (a re-judging under a new version), not a person: it
    /// moves a review judged under an older version to `policy_version`, the current one.
    pub by_policy: bool,
}

/// A decision that was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub goal: GoalId,
    pub task: TaskId,
    /// `approve`, `edit_approve` or `reject`.
    pub decision: DecisionKind,
    /// When the released effect goes, if its platform quota defers it to a later window.
    pub deferred_until: Option<DateTime<Utc>>,
    /// The goal of a task the commit woke (it waited for its turn on the keys committed): its
    /// replan is in the outbox.
    pub woken: Option<GoalId>,
}

/// A decision that was not taken; nothing was written (but a stale policy requeues the item).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no such review")]
    NotFound,
    #[error("already decided: {decision} by {decided_by}")]
    AlreadyDecided {
        decision: DecisionKind,
        decided_by: String,
        decided_at: DateTime<Utc>,
    },
    #[error("stale: {0}")]
    Stale(String),
    /// The decision named another policy version than the one the item is judged under now
    /// (`current`); one re-judged under a newer policy is being judged again.
    #[error("stale: the item is judged under policy v{current}; review it again")]
    PolicyMoved { current: i32 },
    /// The state the result read moved while it waited. Nothing was committed; the review is
    /// closed (`expired`, decision `retry`) and the task waits for its replan, whose message
    /// (with the versions in `moved`) was written to the outbox.
    #[error("{feedback}; the task is replanned")]
    Conflict {
        moved: Vec<Moved>,
        /// The task's feedback for its replan (the keys that moved, in words).
        feedback: String,
        task: TaskId,
        goal: GoalId,
    },
    #[error("budget refused: {0}")]
    Budget(BudgetError),
    /// No quota window within reach has room for the effect.
    #[error("{0}")]
    Quota(QuotaError),
    #[error("the held task is no longer waiting for this review")]
    TaskMoved,
    #[error(transparent)]
    Commit(CommitError),
}

impl From<sqlx::Error> for Refused {
    fn from(err: sqlx::Error) -> Self {
        Self::Commit(CommitError::Database(err))
    }
}

/// Takes `decision`: one transaction under the review row's lock.
pub async fn decide(pool: &PgPool, decision: &Decision) -> Result<Taken, Refused> {
    let mut tx = pool.begin().await?;
    match decide_in(&mut tx, decision).await {
        Ok(taken) => {
            tx.commit().await?;
            Ok(taken)
        }
        Err(Refused::Conflict {
            moved, task, goal, ..
        }) => {
            tx.rollback().await?;
            let feedback = format!(
                "state moved while the item waited for review: {}",
                occ::describe(&moved)
            );
            replan_after_conflict(pool, decision, &feedback, &moved).await?;
            Err(Refused::Conflict {
                moved,
                feedback,
                task,
                goal,
            })
        }
        Err(refused) => {
            tx.rollback().await?;
            Err(refused)
        }
    }
}

/// What `decisions`, taken one after another, would do now, with nothing written: each is
/// taken in one transaction as [`decide`] takes it (each seeing what the earlier ones did:
/// the versions they bumped, the quota they reserved, the money they spent), which is then
/// rolled back. A conflict is reported, not replanned. Taken in the same order with nothing
/// else changing in between, the real decisions have the same outcomes.
pub async fn rehearse(
    pool: &PgPool,
    decisions: &[Decision],
) -> Result<Vec<Result<Taken, Refused>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The rehearsal holds what each step locked until its end: it waits for no lock long, so
    // it never stalls real decisions for long (a wait beyond this fails the dry run).
    sqlx::query!("set local lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    let mut outcomes = Vec::with_capacity(decisions.len());
    for decision in decisions {
        // Each in a savepoint: a refused one leaves nothing behind for the next.
        let mut step = (&mut tx).begin().await?;
        match decide_in(&mut step, decision).await {
            Ok(taken) => {
                step.commit().await?;
                outcomes.push(Ok(taken));
            }
            Err(refused) => {
                step.rollback().await?;
                outcomes.push(Err(refused));
            }
        }
    }
    tx.rollback().await?;
    Ok(outcomes)
}

/// Takes `decision` in `tx`; on any error the caller rolls back (a conflict is reported with
/// what moved and no feedback: [`decide`] replans).
async fn decide_in(
    tx: &mut Transaction<'_, Postgres>,
    decision: &Decision,
) -> Result<Taken, Refused> {
    let mut held = lock_pending(tx, decision).await?;
    if held.current_policy != held.policy_version {
        // Judged under an older policy: only the re-judging under the current one decides it
        // (a person's decision waits until the item shows the current policy's reasons).
        if !(decision.by_policy && decision.policy_version == held.current_policy) {
            return Err(Refused::PolicyMoved {
                current: held.current_policy,
            });
        }
        sqlx::query!(
            "update reviews set policy_version = $2 where id = $1",
            decision.review.0,
            held.current_policy
        )
        .execute(&mut **tx)
        .await?;
        held.policy_version = held.current_policy;
    }
    if held.policy_version != decision.policy_version {
        return Err(Refused::PolicyMoved {
            current: held.policy_version,
        });
    }
    let kind = mark_decided(tx, decision).await?;
    let mut entry = AuditRecord {
        goal_id: Some(held.goal),
        task_id: Some(held.task),
        artifact_hash: CommitHash::parse(held.artifact_hash.clone()).ok(),
        policy_version: Some(held.policy_version),
        reasoning: Some(held.judge_reasoning.clone()),
        ..reviewer_record(decision, &format!("review.{kind}"))
    };
    let (mut deferred_until, mut woken) = (None, None);
    match &decision.verdict {
        Verdict::Reject { reason } => {
            reject_in(tx, decision, &held, reason).await?;
            entry.reasoning = Some(format!("{}; rejected: {reason}", held.judge_reasoning));
        }
        Verdict::Approve {
            execute,
            spend_cents,
            edited_hash,
        } => {
            (deferred_until, woken) =
                approve_in(tx, decision, &held, execute.as_deref(), *spend_cents).await?;
            entry.edited_artifact_hash = edited_hash.clone();
            if let Some(at) = deferred_until {
                entry.reasoning = Some(format!(
                    "{}; over the platform's quota now: the effect goes at {}",
                    held.judge_reasoning,
                    at.to_rfc3339()
                ));
            }
        }
    }
    audit::append(&mut **tx, &entry).await?;
    Ok(Taken {
        goal: held.goal,
        task: held.task,
        decision: kind,
        deferred_until,
        woken,
    })
}

/// The audit record of the reviewer's `action` on the review `decision` is about.
fn reviewer_record(decision: &Decision, action: &str) -> AuditRecord {
    AuditRecord {
        review_id: Some(decision.review),
        request_id: decision.request_id.clone(),
        ..AuditRecord::new(
            decision.tenant,
            decision.reviewer.clone(),
            action,
            Utc::now(),
        )
    }
}

/// A pending review, locked, with what a decision about it needs.
struct Held {
    artifact_hash: String,
    policy_version: i32,
    /// The agent's policy version now.
    current_policy: i32,
    judge_reasoning: String,
    task: TaskId,
    goal: GoalId,
    task_status: TaskStatus,
    result: ResultId,
}

/// Locks the review `decision` is about: refused when it is another tenant's or missing,
/// decided before, or not about the artifact the reviewer saw.
async fn lock_pending(
    tx: &mut Transaction<'_, Postgres>,
    decision: &Decision,
) -> Result<Held, Refused> {
    let Some(row) = sqlx::query!(
        r#"select v.decision as "decision: DecisionKind", v.decided_by, v.decided_at,
                  v.artifact_hash, v.policy_version, v.judge_reasoning, a.policy_version as current_policy,
                  t.id as task_id, t.goal_id, t.status as "task_status: TaskStatus", r.id as result_id
           from reviews v
           join results r on r.id = v.result_id
           join tasks t on t.id = r.task_id
           join agents a on a.id = t.agent_id
           where v.id = $1 and v.tenant_id = $2
           for update of v"#,
        decision.review.0,
        decision.tenant.0,
    )
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Err(Refused::NotFound);
    };
    // A decided review has its decision (the schema's check), a pending one none.
    if let Some(decided) = row.decision {
        return Err(Refused::AlreadyDecided {
            decision: decided,
            decided_by: row.decided_by.unwrap_or_default(),
            decided_at: row.decided_at.unwrap_or_else(Utc::now),
        });
    }
    if row.artifact_hash != decision.artifact_hash {
        return Err(Refused::Stale(
            "the artifact changed since it was reviewed".into(),
        ));
    }
    Ok(Held {
        artifact_hash: row.artifact_hash,
        policy_version: row.policy_version,
        current_policy: row.current_policy,
        judge_reasoning: row.judge_reasoning,
        task: TaskId(row.task_id),
        goal: GoalId(row.goal_id),
        task_status: row.task_status,
        result: ResultId(row.result_id),
    })
}

/// Records the verdict on the review; returns the decision it is.
async fn mark_decided(
    tx: &mut Transaction<'_, Postgres>,
    decision: &Decision,
) -> Result<DecisionKind, sqlx::Error> {
    let (kind, status) = match &decision.verdict {
        Verdict::Approve {
            edited_hash: Some(_),
            ..
        } => (DecisionKind::EditApprove, ReviewStatus::Approved),
        Verdict::Approve { .. } => (DecisionKind::Approve, ReviewStatus::Approved),
        Verdict::Reject { .. } => (DecisionKind::Reject, ReviewStatus::Rejected),
    };
    sqlx::query!(
        "update reviews set status = $2, decision = $3, decided_by = $4, decided_at = now()
         where id = $1",
        decision.review.0,
        status as ReviewStatus,
        kind as DecisionKind,
        decision.reviewer,
    )
    .execute(&mut **tx)
    .await?;
    Ok(kind)
}

/// A rejection: the held task fails and what depends on it is cancelled.
async fn reject_in(
    tx: &mut Transaction<'_, Postgres>,
    decision: &Decision,
    held: &Held,
    reason: &str,
) -> Result<(), sqlx::Error> {
    if held.task_status == TaskStatus::AwaitingReview {
        sqlx::query!(
            "update tasks set status = 'failed', feedback = $2, updated_at = now() where id = $1",
            held.task.0,
            format!("rejected by {}: {reason}", decision.reviewer)
        )
        .execute(&mut **tx)
        .await?;
    }
    judging::cancel_dependents(tx, held.task).await?;
    Ok(())
}

/// An approval: the result is committed through OCC with its effect (the spend of a financial
/// action, the `execute` task and its message, the digest of the effect released) and the
/// release of the goal's waiting tasks. A conflict is [`Refused::Conflict`] with what moved (the
/// caller rolls back and replans); nothing is left half-written as long as the caller rolls
/// back on any error.
async fn approve_in(
    tx: &mut Transaction<'_, Postgres>,
    decision: &Decision,
    held: &Held,
    execute: Option<&Task>,
    spend_cents: Option<i64>,
) -> Result<(Option<DateTime<Utc>>, Option<GoalId>), Refused> {
    // A task that failed after its attempts had its dependents cancelled: its review can be
    // rejected (acknowledged), not approved.
    if held.task_status != TaskStatus::AwaitingReview {
        return Err(Refused::TaskMoved);
    }
    let result = records::load_result_in(tx, held.result)
        .await?
        .ok_or(Refused::NotFound)?;
    let woken = match occ::commit_in(tx, &result).await {
        Ok(outcome) => judging::wake_after(tx, &result, &outcome).await?,
        Err(CommitError::Conflict { moved }) => {
            return Err(Refused::Conflict {
                moved,
                feedback: String::new(),
                task: held.task,
                goal: held.goal,
            });
        }
        Err(other) => return Err(Refused::Commit(other)),
    };
    let mut deferred_until = None;
    if execute.is_some() || spend_cents.is_some() {
        let limits = sqlx::query!(
            r#"select document -> 'spend' as spend, document -> 'quotas' as quotas
               from policies where agent_id = $1 and version = $2"#,
            result.agent_id.0,
            held.policy_version
        )
        .fetch_optional(&mut **tx)
        .await?;
        let (spend, quotas) = match limits {
            Some(row) => (decode(row.spend)?, decode(row.quotas)?),
            None => (None, None),
        };
        if let Some(amount) = spend_cents {
            let key = format!("approval:{}", decision.review.0);
            budget::spend_transfer(
                tx,
                result.agent_id,
                &key,
                amount,
                Some(held.task),
                Some("approved by a reviewer"),
                &spend.unwrap_or_default(),
                false,
            )
            .await
            .map_err(Refused::Budget)?;
        }
        if let Some(execute) = execute {
            deferred_until = quotas::schedule_effect(tx, execute, &quotas.unwrap_or_default())
                .await
                .map_err(|err| match err {
                    QuotaError::Database(err) => Refused::from(err),
                    exhausted => Refused::Quota(exhausted),
                })?;
            sqlx::query!(
                "update reviews set effect_sha256 = $2 where id = $1",
                decision.review.0,
                effect::performed_by(execute).digest(),
            )
            .execute(&mut **tx)
            .await?;
        }
    }
    // The goal's tasks that waited for this one are released by the planner.
    outbox::enqueue(
        tx,
        &outbox::Message::goal(held.goal, &format!("approval:{}", decision.review.0)),
    )
    .await?;
    Ok((deferred_until, woken))
}

/// A part of a stored policy document, absent when it is not there.
fn decode<T: serde::de::DeserializeOwned>(
    value: Option<serde_json::Value>,
) -> Result<Option<T>, sqlx::Error> {
    value
        .filter(|v| !v.is_null())
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| sqlx::Error::Decode(e.into()))
}

/// Closes the review of an approval that found the state moved, and sets its task waiting for
/// a replan (a conflict does not use up the policy's attempts, as in the judge), whose message
/// (with the versions in `moved`) goes to the outbox in the same transaction, after a backoff.
async fn replan_after_conflict(
    pool: &PgPool,
    decision: &Decision,
    feedback: &str,
    moved: &[Moved],
) -> Result<(), Refused> {
    let mut tx = pool.begin().await?;
    let Some(row) = sqlx::query!(
        r#"update reviews set status = 'expired', decision = 'retry', decided_by = $3, decided_at = now()
           where id = $1 and tenant_id = $2 and status = 'pending'
           returning task_id, artifact_hash, policy_version, judge_reasoning"#,
        decision.review.0,
        decision.tenant.0,
        decision.reviewer,
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        // Someone else decided in between: their decision stands, and the caller is told.
        let winner = sqlx::query!(
            r#"select decision as "decision!: DecisionKind", decided_by, decided_at
               from reviews where id = $1"#,
            decision.review.0
        )
        .fetch_one(&mut *tx)
        .await?;
        return Err(Refused::AlreadyDecided {
            decision: winner.decision,
            decided_by: winner.decided_by.unwrap_or_default(),
            decided_at: winner.decided_at.unwrap_or_else(Utc::now),
        });
    };

    let goal = sqlx::query_scalar!(
        "select goal_id from tasks where id = $1 for update",
        row.task_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let (Some(goal), Some(task)) = (goal, row.task_id) {
        judging::replan_conflicted(
            &mut tx,
            GoalId(goal),
            TaskId(task),
            feedback,
            &occ::fresh_versions(moved),
        )
        .await?;
    }
    audit::append(
        &mut *tx,
        &AuditRecord {
            goal_id: goal.map(GoalId),
            task_id: row.task_id.map(TaskId),
            artifact_hash: CommitHash::parse(row.artifact_hash).ok(),
            policy_version: Some(row.policy_version),
            reasoning: Some(format!("{}; {feedback}", row.judge_reasoning)),
            ..reviewer_record(decision, "review.conflict")
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
