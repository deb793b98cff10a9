//! The review sweep, which makes sure nothing waits forever; unlike the reads in
//! [`crate::reviews`], it writes.
//!
//! The [`sweep`] escalates pending reviews past their `due_at` once (priority up, a
//! notification, an audit record) and applies the default decision to those past their
//! `final_deadline`: `default_reject`, the review `expired`, the task failed and its dependents
//! cancelled. It takes rows with `FOR UPDATE SKIP LOCKED`, so sweeps may overlap and a
//! reviewer deciding at the same moment either wins (the sweep skips the row) or loses with
//! `AlreadyDecided`.
//!
//! The notifications it writes (once per review and kind) are read through
//! [`crate::reviews::notifications`]. [`sweep`] and [`Swept`] are also re-exported from
//! [`crate::reviews`], where callers know them.

use chimera_core::domain::{
    AuditRecord, CommitHash, GoalId, ReviewId, TaskId, TaskStatus, TenantId,
};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::audit;
use crate::judging;

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    pub escalated: Vec<ReviewId>,
    pub defaulted: Vec<ReviewId>,
    /// The goals of defaulted reviews, to settle.
    pub goals: Vec<GoalId>,
}

/// Escalates overdue reviews and applies the default to those past their final deadline, as of
/// `now`, at most `limit` of each.
pub async fn sweep(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> Result<Swept, sqlx::Error> {
    let mut swept = Swept::default();
    let mut tx = pool.begin().await?;
    let due = sqlx::query!(
        r#"select v.id, v.tenant_id, v.task_id, t.goal_id, v.artifact_hash, v.policy_version,
                  v.judge_reasoning, v.due_at, v.priority
           from reviews v join tasks t on t.id = v.task_id
           where v.status = 'pending' and v.escalated_at is null and v.due_at <= $1
           order by v.due_at
           limit $2
           for update of v skip locked"#,
        now,
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in due {
        sqlx::query!(
            "update reviews set priority = priority + 1, escalated_at = $2 where id = $1",
            row.id,
            now
        )
        .execute(&mut *tx)
        .await?;
        let message = format!(
            "review {} is overdue since {} and was escalated to priority {}",
            row.id,
            row.due_at.to_rfc3339(),
            row.priority + 1
        );
        notify(&mut tx, row.tenant_id, row.id, "review_escalated", &message).await?;
        audit::append(
            &mut *tx,
            &system_record(
                row.tenant_id,
                "review.escalate",
                now,
                (row.goal_id, row.task_id, row.id),
                &row.artifact_hash,
                row.policy_version,
                format!(
                    "{}; overdue since {}",
                    row.judge_reasoning,
                    row.due_at.to_rfc3339()
                ),
            ),
        )
        .await?;
        swept.escalated.push(ReviewId(row.id));
    }
    tx.commit().await?;

    let mut tx = pool.begin().await?;
    let expired = sqlx::query!(
        r#"select v.id, v.tenant_id, v.task_id, t.goal_id, t.status as "task_status: TaskStatus",
                  v.artifact_hash, v.policy_version, v.judge_reasoning, v.final_deadline
           from reviews v join tasks t on t.id = v.task_id
           where v.status = 'pending' and v.final_deadline <= $1
           order by v.final_deadline
           limit $2
           for update of v skip locked"#,
        now,
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in expired {
        sqlx::query!(
            "update reviews set status = 'expired', decision = 'default_reject', decided_by = 'system',
                                decided_at = $2
             where id = $1",
            row.id,
            now
        )
        .execute(&mut *tx)
        .await?;
        let task = TaskId(row.task_id.unwrap_or_default());
        if row.task_status == TaskStatus::AwaitingReview {
            sqlx::query!(
                "update tasks set status = 'failed', feedback = $2, updated_at = now() where id = $1",
                task.0,
                "no reviewer decided before the final deadline: rejected by default"
            )
            .execute(&mut *tx)
            .await?;
            judging::cancel_dependents(&mut tx, task).await?;
        }
        let message = format!(
            "review {} passed its final deadline ({}) undecided and was rejected by default",
            row.id,
            row.final_deadline.to_rfc3339()
        );
        notify(&mut tx, row.tenant_id, row.id, "review_defaulted", &message).await?;
        audit::append(
            &mut *tx,
            &system_record(
                row.tenant_id,
                "review.default_reject",
                now,
                (row.goal_id, row.task_id, row.id),
                &row.artifact_hash,
                row.policy_version,
                format!(
                    "{}; undecided at the final deadline {}",
                    row.judge_reasoning,
                    row.final_deadline.to_rfc3339()
                ),
            ),
        )
        .await?;
        swept.defaulted.push(ReviewId(row.id));
        if !swept.goals.contains(&GoalId(row.goal_id)) {
            swept.goals.push(GoalId(row.goal_id));
        }
    }
    tx.commit().await?;
    Ok(swept)
}

async fn notify(
    conn: &mut sqlx::PgConnection,
    tenant: uuid::Uuid,
    review: uuid::Uuid,
    kind: &str,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into notifications (tenant_id, review_id, kind, message) values ($1, $2, $3, $4)
         on conflict (review_id, kind) do nothing",
        tenant,
        review,
        kind,
        message
    )
    .execute(conn)
    .await?;
    Ok(())
}

fn system_record(
    tenant: uuid::Uuid,
    action: &str,
    at: DateTime<Utc>,
    (goal, task, review): (uuid::Uuid, Option<uuid::Uuid>, uuid::Uuid),
    artifact_hash: &str,
    policy_version: i32,
    reasoning: String,
) -> AuditRecord {
    AuditRecord {
        goal_id: Some(GoalId(goal)),
        task_id: task.map(TaskId),
        review_id: Some(ReviewId(review)),
        artifact_hash: CommitHash::parse(artifact_hash.to_owned()).ok(),
        policy_version: Some(policy_version),
        reasoning: Some(reasoning),
        ..AuditRecord::new(TenantId(tenant), "system", action, at)
    }
}
