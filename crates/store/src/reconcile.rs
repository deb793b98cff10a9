//! The reconciler: work that stopped moving is moved again, by the sweep, without waiting for a
//! human to notice. Messages are at least once and the outbox makes every state change carry
//! its message, but a message can still be lost after it was sent (dead-lettered while the
//! database was down, deleted by hand...). [`reconcile`] looks at the state alone:
//!
//! - a goal still `received` (never planned): its message to the planner goes out again;
//! - a task `queued` with no result for its attempt, unchanged for longer than its kind's
//!   budget ([`progress_budget`]): its message (derived from the stored task, so byte-identical
//!   to the first) goes out again; after [`MAX_REDRIVES`] re-sends of one attempt the task is
//!   failed, and its goal with it, instead of being re-sent for ever;
//! - a result recorded for a task's current attempt and never decided: sent to the judge again;
//! - a task `retrying` whose replan never arrived: the replan goes out again;
//! - blocked tasks whose dependencies are all committed: their goal goes to the planner again,
//!   which releases them;
//! - (the goals and tasks of a paused agent wait: resuming it sends its goals again);
//! - goals whose status no longer matches their tasks, none of which moved within the budget
//!   (a judge settles the goal a moment after it commits its last task): settled;
//! - held items judged under an older policy than their agent's: judged again
//!   ([`crate::rejudge`]).
//!
//! Every action is one transaction with its audit record (`system.redrive`, or
//! `system.give_up`), and the messages go through the outbox.
//!
//! Work that waits in a backlog is not lost: a queue that holds messages (waiting, taken and
//! not finished, or delayed: the [`Backlog`] the sweep reads) is draining, and a message sent
//! to it that no consumer has taken up yet may be among them. So a goal, a result or a replan
//! older than its budget is sent again only when its queue holds nothing; a task only when it
//! was taken up (`received_at`, stamped by the worker on admission) and not finished within
//! its budget since, or, never taken up since it was sent, when the task queue holds nothing.
//! Under a deep backlog nothing is sent again, and nothing healthy runs out of re-sends; a
//! message truly lost meanwhile is sent again at the first sweep after the queue drained.

use chimera_core::domain::{
    AuditRecord, GoalId, GoalStatus, ResultId, ReviewId, TaskId, TaskKind, TenantId,
};
use chimera_core::envelope::ResultMessage;
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::outbox::{self, Message};
use crate::{audit, dag, judging, records};

/// How long a queued task may go without a result before its message is sent again: the
/// worker's timeout (120 s) with a margin, more for rendering.
pub fn progress_budget(kind: TaskKind) -> Duration {
    match kind {
        TaskKind::RenderMedia => Duration::seconds(300),
        _ => Duration::seconds(180),
    }
}

/// How long a decision (a recorded result, a replan, a release, a goal's settlement) may wait:
/// the planner's and judge's timeout (30 s) with a margin.
pub fn decision_budget() -> Duration {
    Duration::seconds(90)
}

/// Re-sends of one task attempt before the task is failed.
pub const MAX_REDRIVES: i32 = 3;

/// The messages each queue holds as the sweep read them (waiting, in flight or delayed), and
/// when it read them: a message sent since may be waiting in a queue read empty, so it is not
/// sent again on that reading. `None` when a queue could not be read: then the budgets alone
/// decide, as if the queue were empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub goal: Option<u64>,
    pub task: Option<u64>,
    pub review: Option<u64>,
    pub read_at: Option<DateTime<Utc>>,
}

impl Backlog {
    fn holds(depth: Option<u64>) -> bool {
        depth.is_some_and(|d| d > 0)
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Goals never planned, sent to the planner again.
    pub unplanned: Vec<GoalId>,
    /// Tasks whose message was sent again.
    pub redriven: Vec<TaskId>,
    /// Tasks failed after [`MAX_REDRIVES`] re-sends.
    pub given_up: Vec<TaskId>,
    /// Results sent to the judge again.
    pub rejudged: Vec<ResultId>,
    /// Tasks whose replan was sent again.
    pub replanned: Vec<TaskId>,
    /// Goals sent to the planner again to release their ready tasks.
    pub released: Vec<GoalId>,
    /// Goals whose status was brought in line with their tasks.
    pub settled: Vec<GoalId>,
    /// Held items judged under an older policy than their agent's, sent to be judged again.
    pub outdated: Vec<ReviewId>,
    /// The queues' depths the pass went by (not part of what it did).
    pub backlog: Backlog,
}

impl Reconciled {
    pub fn is_empty(&self) -> bool {
        *self
            == Self {
                backlog: self.backlog,
                ..Self::default()
            }
    }
}

/// One pass at time `now`, at most `limit` items of each kind, with the queues holding
/// `backlog`.
pub async fn reconcile(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
    backlog: Backlog,
) -> Result<Reconciled, sqlx::Error> {
    let mut done = Reconciled {
        backlog,
        ..Reconciled::default()
    };
    let goals_wait = Backlog::holds(backlog.goal);
    let read = backlog.read_at.unwrap_or(now);
    if !goals_wait {
        unplanned(pool, now, read, limit, &mut done).await?;
    }
    stalled_tasks(
        pool,
        now,
        read,
        limit,
        Backlog::holds(backlog.task),
        &mut done,
    )
    .await?;
    if !Backlog::holds(backlog.review) {
        undecided_results(pool, now, read, limit, &mut done).await?;
    }
    if !goals_wait {
        lost_replans(pool, now, read, limit, &mut done).await?;
        unreleased(pool, now, limit, &mut done).await?;
    }
    unsettled(pool, now, limit, &mut done).await?;
    done.outdated = crate::rejudge::outdated(pool, now, limit).await?;
    Ok(done)
}

/// Appends the audit record of a redrive.
async fn redriven(
    tx: &mut Transaction<'_, Postgres>,
    tenant: uuid::Uuid,
    now: DateTime<Utc>,
    goal: GoalId,
    task: Option<TaskId>,
    reasoning: String,
) -> Result<(), sqlx::Error> {
    let entry = record(tenant, "system.redrive", now, goal, task, reasoning);
    audit::append(&mut **tx, &entry).await?;
    Ok(())
}

fn record(
    tenant: uuid::Uuid,
    action: &str,
    now: DateTime<Utc>,
    goal: GoalId,
    task: Option<TaskId>,
    reasoning: String,
) -> AuditRecord {
    AuditRecord {
        goal_id: Some(goal),
        task_id: task,
        reasoning: Some(reasoning),
        ..AuditRecord::new(TenantId(tenant), "system", action, now)
    }
}

async fn unplanned(
    pool: &PgPool,
    now: DateTime<Utc>,
    read: DateTime<Utc>,
    limit: i64,
    done: &mut Reconciled,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let goals = sqlx::query!(
        r#"select g.id, g.tenant_id from goals g
           where g.status = 'received' and g.updated_at < $1
             and not exists (select 1 from outbox o where o.goal_id = g.id
                             and (o.sent_at is null or (o.dedup_key like 'goal:%' and o.sent_at >= $3)))
             and exists (select 1 from agents a where a.id = g.agent_id and a.status = 'active')
           order by g.updated_at
           limit $2
           for update skip locked"#,
        now - decision_budget(),
        limit,
        read,
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in goals {
        let goal = GoalId(row.id);
        outbox::rearm(&mut tx, &Message::goal(goal, "submit")).await?;
        sqlx::query!("update goals set updated_at = now() where id = $1", goal.0)
            .execute(&mut *tx)
            .await?;
        redriven(
            &mut tx,
            row.tenant_id,
            now,
            goal,
            None,
            "the goal was never planned: it goes to the planner again".into(),
        )
        .await?;
        done.unplanned.push(goal);
    }
    tx.commit().await
}

/// Tasks with no result for their attempt past their budget: taken up by a worker and not
/// finished since, or never taken up since they were sent while the task queue holds nothing
/// (`queue_holds`: it does, so they may be waiting in it).
async fn stalled_tasks(
    pool: &PgPool,
    now: DateTime<Utc>,
    read: DateTime<Utc>,
    limit: i64,
    queue_holds: bool,
    done: &mut Reconciled,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let stalled = sqlx::query!(
        r#"with budget as (
               select t.id, case when t.kind = 'render_media' then $1::timestamptz else $2::timestamptz end as cutoff,
                      t.received_at is not null and t.received_at >= t.updated_at as taken_up
               from tasks t
               where t.status in ('queued', 'running')
           )
           select t.id, t.goal_id, g.tenant_id, t.kind as "kind: TaskKind", t.attempt, t.redrives, t.updated_at,
                  b.taken_up as "taken_up!"
           from tasks t join budget b on b.id = t.id join goals g on g.id = t.goal_id
           where t.status in ('queued', 'running')
             and case when b.taken_up then t.received_at < b.cutoff
                      else t.updated_at < b.cutoff and not $4 end
             and coalesce(t.not_before, '-infinity') < b.cutoff
             and not exists (select 1 from results r where r.task_id = t.id and r.attempt = t.attempt)
             and not exists (select 1 from outbox o
                             where o.dedup_key = 'task:' || t.id || ':' || t.attempt
                               and (o.sent_at is null or o.sent_at >= $5))
           order by t.updated_at
           limit $3
           for update of t skip locked"#,
        now - progress_budget(TaskKind::RenderMedia),
        now - progress_budget(TaskKind::Research),
        limit,
        queue_holds,
        read,
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in stalled {
        let task = TaskId(row.id);
        let goal = GoalId(row.goal_id);
        let idle = now.signed_duration_since(row.updated_at).num_seconds();
        if row.redrives >= MAX_REDRIVES {
            let reason = format!(
                "no worker completed attempt {} in {MAX_REDRIVES} re-sends; failed by the reconciler",
                row.attempt
            );
            sqlx::query!(
                "update tasks set status = 'failed', feedback = $2, updated_at = now() where id = $1",
                task.0,
                reason
            )
            .execute(&mut *tx)
            .await?;
            judging::cancel_dependents(&mut tx, task).await?;
            audit::append(
                &mut *tx,
                &record(
                    row.tenant_id,
                    "system.give_up",
                    now,
                    goal,
                    Some(task),
                    reason,
                ),
            )
            .await?;
            tracing::warn!(task_id = %task.0, goal_id = %goal.0, attempt = row.attempt, "task given up after re-sends");
            done.given_up.push(task);
            continue;
        }
        let Some(stored) = dag::task_in(&mut tx, task).await? else {
            continue;
        };
        outbox::rearm(&mut tx, &Message::task(&stored)).await?;
        sqlx::query!(
            "update tasks set redrives = redrives + 1, updated_at = now() where id = $1",
            task.0
        )
        .execute(&mut *tx)
        .await?;
        let how = if row.taken_up {
            "was taken up by a worker and not finished"
        } else {
            "was never taken up while its queue held nothing"
        };
        redriven(&mut tx, row.tenant_id, now, goal, Some(task), format!(
                    "{} task attempt {} {how} ({idle} s since it was sent): its message is sent again (re-send {})",
                    row.kind,
                    row.attempt,
                    row.redrives + 1
                ))
        .await?;
        tracing::info!(task_id = %task.0, goal_id = %goal.0, attempt = row.attempt, idle_secs = idle, taken_up = row.taken_up, "task message sent again");
        done.redriven.push(task);
    }
    tx.commit().await
}

async fn undecided_results(
    pool: &PgPool,
    now: DateTime<Utc>,
    read: DateTime<Utc>,
    limit: i64,
    done: &mut Reconciled,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let undecided = sqlx::query!(
        r#"select r.id, t.id as task_id, t.goal_id, g.tenant_id, r.attempt
           from results r
           join tasks t on t.id = r.task_id and t.attempt = r.attempt
           join goals g on g.id = t.goal_id
           where t.status in ('queued', 'running') and r.created_at < $1 and t.updated_at < $1
             and not exists (select 1 from outbox o where o.dedup_key = 'result:' || r.id
                             and (o.sent_at is null or o.sent_at >= $3))
           order by r.created_at
           limit $2
           for update of t skip locked"#,
        now - decision_budget(),
        limit,
        read,
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in undecided {
        let Some(result) = records::load_result_in(&mut tx, ResultId(row.id)).await? else {
            continue;
        };
        let message = Message::result(
            GoalId(row.goal_id),
            row.id,
            &ResultMessage::Inline {
                result: (*result).clone(),
            },
        );
        if message.body.len() > chimera_core::envelope::MAX_MESSAGE_BYTES {
            tracing::warn!(result_id = %row.id, bytes = message.body.len(), "an undecided result is too large to send inline; left to its own message");
            continue;
        }
        outbox::rearm(&mut tx, &message).await?;
        sqlx::query!(
            "update tasks set updated_at = now() where id = $1",
            row.task_id
        )
        .execute(&mut *tx)
        .await?;
        redriven(
            &mut tx,
            row.tenant_id,
            now,
            GoalId(row.goal_id),
            Some(TaskId(row.task_id)),
            format!(
                "the result of attempt {} was recorded and never decided: sent to the judge again",
                row.attempt
            ),
        )
        .await?;
        done.rejudged.push(ResultId(row.id));
    }
    tx.commit().await
}

async fn lost_replans(
    pool: &PgPool,
    now: DateTime<Utc>,
    read: DateTime<Utc>,
    limit: i64,
    done: &mut Reconciled,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let waiting = sqlx::query!(
        r#"select t.id, t.goal_id, g.tenant_id, t.attempt, t.feedback
           from tasks t join goals g on g.id = t.goal_id
           where t.status = 'retrying' and t.updated_at < $1 and coalesce(t.not_before, '-infinity') < $1
             and not exists (select 1 from outbox o
                             where o.dedup_key = 'replan:' || t.id || ':' || t.attempt
                               and (o.sent_at is null or o.sent_at >= $3))
           order by t.updated_at
           limit $2
           for update of t skip locked"#,
        now - decision_budget(),
        limit,
        read,
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in waiting {
        let task = TaskId(row.id);
        let goal = GoalId(row.goal_id);
        let attempt = u32::try_from(row.attempt).unwrap_or_default();
        let feedback = row.feedback.as_deref().unwrap_or_default();
        let replan = Message::replan(goal, task, attempt, feedback, &Default::default());
        outbox::rearm(&mut tx, &replan).await?;
        sqlx::query!("update tasks set updated_at = now() where id = $1", task.0)
            .execute(&mut *tx)
            .await?;
        redriven(
            &mut tx,
            row.tenant_id,
            now,
            goal,
            Some(task),
            format!(
                "attempt {} waits for a replan that never arrived: the replan is sent again",
                row.attempt
            ),
        )
        .await?;
        done.replanned.push(task);
    }
    tx.commit().await
}

async fn unreleased(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
    done: &mut Reconciled,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let goals = sqlx::query!(
        r#"with ready as (
               select t.id, t.goal_id from tasks t
               where t.status = 'blocked' and t.updated_at < $1
                 and not exists (select 1 from task_dependencies d join tasks dep on dep.id = d.depends_on
                                 where d.task_id = t.id and dep.status <> 'committed')
                 and exists (select 1 from agents a where a.id = t.agent_id and a.status = 'active')
               order by t.updated_at
               limit $2
               for update of t skip locked
           ), touched as (
               update tasks set updated_at = now() where id in (select id from ready)
           )
           select g.id, g.tenant_id, count(*) as "tasks!"
           from ready r join goals g on g.id = r.goal_id
           where g.status in ('in_progress', 'awaiting_review')
           group by g.id, g.tenant_id"#,
        now - decision_budget(),
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in goals {
        let goal = GoalId(row.id);
        outbox::rearm(&mut tx, &Message::goal(goal, "reconcile")).await?;
        redriven(&mut tx, row.tenant_id, now, goal, None, format!(
                    "{} task(s) had every dependency committed and were never released: the goal goes to the planner again",
                    row.tasks
                ))
        .await?;
        done.released.push(goal);
    }
    tx.commit().await
}

async fn unsettled(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
    done: &mut Reconciled,
) -> Result<(), sqlx::Error> {
    let goals = sqlx::query!(
        r#"select g.id, g.tenant_id, g.status as "status: GoalStatus" from goals g
           where g.status in ('in_progress', 'awaiting_review') and g.updated_at < $1
             and not exists (select 1 from tasks t where t.goal_id = g.id
                             and (t.status in ('ready', 'queued', 'running', 'retrying')
                                  or t.updated_at >= $1))
             and not (g.status = 'awaiting_review'
                      and (exists (select 1 from tasks t where t.goal_id = g.id and t.status = 'awaiting_review')
                           or exists (select 1 from reviews v join tasks x on x.id = v.task_id
                                      where x.goal_id = g.id and v.status = 'pending')))
           order by g.updated_at
           limit $2"#,
        now - decision_budget(),
        limit,
    )
    .fetch_all(pool)
    .await?;
    for row in goals {
        let goal = GoalId(row.id);
        let Some(status) = judging::settle_goal(pool, goal).await? else {
            continue;
        };
        audit::append(
            pool,
            &record(
                row.tenant_id,
                "system.redrive",
                now,
                goal,
                None,
                format!(
                    "the goal was {} while its tasks say {status}: settled",
                    row.status
                ),
            ),
        )
        .await?;
        done.settled.push(goal);
    }
    Ok(())
}
