//! The transactional outbox: messages written in the transaction of the state change that
//! causes them, and sent by a relay once that transaction committed.
//!
//! - The `enqueue_*` functions take the caller's connection (inside its transaction): a task's
//!   message ([`enqueue_task`]) is derived from the stored task alone, dependencies included,
//!   so every (re-)send of an attempt is byte-identical to the first.
//! - Each row has a message identity (its dedup key): writing the same message twice adds
//!   nothing; [`rearm`] makes a sent row go out again (the reconciler's re-send).
//! - The relay ([`claim`] then [`mark_sent`] / [`mark_failed`], in one transaction) takes unsent
//!   rows with `FOR UPDATE SKIP LOCKED`, so any number of relays share the rows without sending
//!   one twice while they run. A relay that dies after sending and before marking sends again:
//!   delivery is at least once, and every consumer is idempotent.

use chimera_core::domain::{GoalId, ReadSet, ReviewId, Task, TaskId};
use chimera_core::envelope::{self, PlannerMessage, ResultMessage, TaskMessage};
use chimera_core::names::Queue;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, Transaction};

/// One message to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub queue: Queue,
    pub body: String,
    pub dedup_key: String,
    pub goal: GoalId,
}

impl Message {
    /// The message of a task attempt, built from the task as stored.
    pub fn task(task: &Task) -> Message {
        Message {
            queue: Queue::Task,
            body: envelope::encode(&TaskMessage { task: task.clone() }),
            dedup_key: format!("task:{}:{}", task.id.0, task.attempt),
            goal: task.goal_id,
        }
    }

    /// A replan of `task` after its attempt `attempt`, with `feedback` for the next one and the
    /// versions of the keys that moved (`fresh`, after a conflict).
    pub fn replan(
        goal: GoalId,
        task: TaskId,
        attempt: u32,
        feedback: &str,
        fresh: &ReadSet,
    ) -> Message {
        Self::replanning("replan", goal, task, attempt, feedback, fresh)
    }

    /// The replan of `task` after attempt `attempt` that waited for its turn on a hot key, woken
    /// by a commit on it: its own identity, as the replan written at the conflict may still go.
    pub fn woken(goal: GoalId, task: TaskId, attempt: u32, feedback: &str) -> Message {
        Self::replanning("woken", goal, task, attempt, feedback, &ReadSet::new())
    }

    fn replanning(
        identity: &str,
        goal: GoalId,
        task: TaskId,
        attempt: u32,
        feedback: &str,
        fresh: &ReadSet,
    ) -> Message {
        Message {
            queue: Queue::Goal,
            body: envelope::encode(&PlannerMessage::Replan {
                task_id: task,
                attempt: Some(attempt),
                feedback: feedback.to_owned(),
                fresh_versions: fresh.clone(),
            }),
            dedup_key: format!("{identity}:{}:{attempt}", task.0),
            goal,
        }
    }

    /// The goal for the planner: planned if new, its ready tasks released. `cause` names what
    /// asks for it (`submit`, `approval:<review>`...), one message per cause.
    pub fn goal(goal: GoalId, cause: &str) -> Message {
        Message {
            queue: Queue::Goal,
            body: envelope::encode(&PlannerMessage::Goal { goal_id: goal }),
            dedup_key: format!("goal:{}:{cause}", goal.0),
            goal,
        }
    }

    /// A held item for the judge to judge again under its agent's policy `version`.
    pub fn rejudge(goal: GoalId, review: ReviewId, version: i32) -> Message {
        Message {
            queue: Queue::Review,
            body: envelope::encode(&ResultMessage::Rejudge {
                review_id: review,
                policy_version: version,
            }),
            dedup_key: format!("rejudge:{}:v{version}", review.0),
            goal,
        }
    }

    /// A result for the judge (sent again by the reconciler when it was never decided).
    pub fn result(goal: GoalId, result_id: uuid::Uuid, message: &ResultMessage) -> Message {
        Self::result_body(goal, result_id, envelope::encode(message))
    }

    /// A result for the judge whose envelope is `body` (as the worker made it: inline, or
    /// pointing at the bucket).
    pub fn result_body(goal: GoalId, result_id: uuid::Uuid, body: String) -> Message {
        Message {
            queue: Queue::Review,
            body,
            dedup_key: format!("result:{result_id}"),
            goal,
        }
    }
}

/// Writes `message` unless a message with its identity was written before; returns whether
/// it was new.
pub async fn enqueue(conn: &mut PgConnection, message: &Message) -> Result<bool, sqlx::Error> {
    enqueue_at(conn, message, None).await
}

/// [`enqueue`], for delivery at `deliver_at` (`None`: as soon as it is sent).
pub async fn enqueue_at(
    conn: &mut PgConnection,
    message: &Message,
    deliver_at: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        "insert into outbox (queue, body, dedup_key, goal_id, deliver_at) values ($1, $2, $3, $4, $5)
         on conflict (dedup_key) do nothing",
        message.queue.as_str(),
        message.body,
        message.dedup_key,
        message.goal.0,
        deliver_at,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Writes `message`, or, if it was written and sent before, makes it go out again (the same
/// identity; the body is what it is now). A row still waiting to be sent is left alone:
/// `false`.
pub async fn rearm(conn: &mut PgConnection, message: &Message) -> Result<bool, sqlx::Error> {
    let written = sqlx::query!(
        "insert into outbox (queue, body, dedup_key, goal_id) values ($1, $2, $3, $4)
         on conflict (dedup_key) do update
             set body = excluded.body, sent_at = null, available_at = now(), attempts = 0, last_error = null
             where outbox.sent_at is not null",
        message.queue.as_str(),
        message.body,
        message.dedup_key,
        message.goal.0,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(written == 1)
}

/// Makes the message of `task`'s current attempt go out again at `deliver_at` (written, or its
/// sent row re-armed): a task that has to wait for its platform is delivered when it may go.
pub async fn rearm_task_at(
    conn: &mut PgConnection,
    task: TaskId,
    deliver_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let stored = crate::dag::task_in(&mut *conn, task)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let message = Message::task(&stored);
    sqlx::query!(
        "insert into outbox (queue, body, dedup_key, goal_id, deliver_at) values ($1, $2, $3, $4, $5)
         on conflict (dedup_key) do update
             set body = excluded.body, deliver_at = excluded.deliver_at, sent_at = null,
                 available_at = now(), attempts = 0, last_error = null",
        message.queue.as_str(),
        message.body,
        message.dedup_key,
        message.goal.0,
        deliver_at,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes the message of `task`'s current attempt, from the task as stored in `conn`'s view
/// (so the caller writes the task first, in the same transaction).
pub async fn enqueue_task(conn: &mut PgConnection, task: TaskId) -> Result<(), sqlx::Error> {
    enqueue_task_at(conn, task, None).await
}

/// [`enqueue_task`], for delivery at `deliver_at` (`None`: as soon as it is sent).
pub async fn enqueue_task_at(
    conn: &mut PgConnection,
    task: TaskId,
    deliver_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    let stored = crate::dag::task_in(&mut *conn, task)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    enqueue_at(conn, &Message::task(&stored), deliver_at).await?;
    Ok(())
}

/// An unsent row, as the relay takes it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub queue: Queue,
    pub body: String,
    /// The goal it is about: its trace goes with the message.
    pub goal_id: Option<uuid::Uuid>,
    pub attempts: i32,
    /// Whole seconds the queue is to hold the message before delivering it.
    pub delay_secs: i32,
}

/// The longest a queue holds a message before delivering it (SQS's `DelaySeconds`): a message
/// due later waits in the outbox until it is due within this.
pub const MAX_DELAY_SECS: i32 = 900;

/// Which unsent rows a relay takes.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// The rows of these goals (what a handler wrote), whenever they are due.
    Goals(&'a [GoalId]),
    /// Every row due and created before this time (the scheduled sweep).
    CreatedBefore(DateTime<Utc>),
}

/// Locks up to `limit` unsent, due rows of `selection` for the caller's transaction, oldest
/// first; rows another relay holds are skipped.
pub async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    selection: Selection<'_>,
    limit: i64,
) -> Result<Vec<Pending>, sqlx::Error> {
    // A row to be delivered later is due for sending once its delivery is within the queue's
    // longest delay; the sweep takes such rows however recently they were written (no handler
    // flushes them later).
    let horizon = f64::from(MAX_DELAY_SECS);
    type Row = (i64, String, String, Option<uuid::Uuid>, i32, i32);
    let rows: Vec<Row> = match selection {
        Selection::Goals(goals) => {
            let goals: Vec<uuid::Uuid> = goals.iter().map(|g| g.0).collect();
            sqlx::query!(
                r#"select id, queue, body, goal_id, attempts,
                          greatest(0, ceil(extract(epoch from deliver_at - now())))::int as "delay!"
                   from outbox
                   where sent_at is null and goal_id = any ($1) and available_at <= now()
                     and (deliver_at is null or deliver_at <= now() + make_interval(secs => $2))
                   order by id
                   limit $3
                   for update skip locked"#,
                &goals,
                horizon,
                limit,
            )
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|r| (r.id, r.queue, r.body, r.goal_id, r.attempts, r.delay))
            .collect()
        }
        Selection::CreatedBefore(before) => sqlx::query!(
            r#"select id, queue, body, goal_id, attempts,
                      greatest(0, ceil(extract(epoch from deliver_at - now())))::int as "delay!"
               from outbox
               where sent_at is null and available_at <= now()
                 and (created_at < $1 or deliver_at is not null)
                 and (deliver_at is null or deliver_at <= now() + make_interval(secs => $2))
               order by available_at, id
               limit $3
               for update skip locked"#,
            before,
            horizon,
            limit,
        )
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| (r.id, r.queue, r.body, r.goal_id, r.attempts, r.delay))
        .collect(),
    };
    rows.into_iter()
        .map(|(id, queue, body, goal_id, attempts, delay)| {
            let queue = Queue::parse(&queue)
                .ok_or_else(|| sqlx::Error::Decode(format!("outbox queue {queue}").into()))?;
            Ok(Pending {
                id,
                queue,
                body,
                goal_id,
                attempts,
                delay_secs: delay.min(MAX_DELAY_SECS),
            })
        })
        .collect()
}

/// Marks rows sent.
pub async fn mark_sent(tx: &mut Transaction<'_, Postgres>, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update outbox set sent_at = now(), attempts = attempts + 1, last_error = null where id = any ($1)",
        ids
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a failed send of `id`: it is due again after a backoff that doubles with each
/// attempt (1 s, 2 s, 4 s... at most 5 minutes).
pub async fn mark_failed(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update outbox set attempts = attempts + 1, last_error = left($2, 2000),
                           available_at = now() + least(interval '1 second' * power(2, least(attempts, 9)), interval '5 minutes')
         where id = $1",
        id,
        error
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes rows sent before `before`; returns how many.
pub async fn prune(conn: &mut PgConnection, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query!("delete from outbox where sent_at < $1", before)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
    )
}

/// How many rows due now wait to be sent, and since when the oldest waits (a message to be
/// delivered later is not late).
pub async fn backlog(conn: &mut PgConnection) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    let row = sqlx::query!(
        r#"select count(*) as "count!", min(created_at) as oldest from outbox
           where sent_at is null and (deliver_at is null or deliver_at <= now())"#
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.count, row.oldest))
}
