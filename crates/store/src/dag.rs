//! A goal's task graph: the plan stored once, tasks released when their dependencies are
//! committed (each by exactly one releaser), replans.

use chimera_core::domain::{
    AgentId, AuditRecord, DecisionKind, Goal, GoalId, GoalStatus, ReviewId, ReviewStatus, StateKey,
    Task, TaskId, TaskKind, TaskStatus, TenantId,
};
use chimera_core::effect;
use chimera_core::routing::Policy;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::records;

/// A goal with what the planner needs of its agent.
#[derive(Debug, Clone)]
pub struct PlanningContext {
    pub goal: Goal,
    pub status: GoalStatus,
    /// When the goal was submitted.
    pub submitted_at: DateTime<Utc>,
    pub handle: String,
    pub persona: serde_json::Value,
    pub policy: Policy,
    /// `false` while the agent is paused (or retired): its goals wait unplanned.
    pub agent_active: bool,
    /// The documents the persona and policy come from.
    pub documents: Documents,
    /// What the agent published last (at most [`RECENT_POSTS`], by approval time), newest
    /// first.
    pub recent_posts: Vec<Post>,
}

/// The versions (and SHA-256, when they were written as documents) of an agent's persona and
/// policy: what a plan names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Documents {
    pub persona_version: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persona_sha256: Option<String>,
    pub policy_version: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_sha256: Option<String>,
}

/// A post the agent published: an effect performed after its approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub platform: String,
    pub text: String,
}

/// How many of its latest posts a planner sees.
pub const RECENT_POSTS: i64 = 3;

pub async fn planning_context(
    pool: &PgPool,
    id: GoalId,
) -> Result<Option<PlanningContext>, sqlx::Error> {
    let Some(row) = sqlx::query!(
        r#"select g.id, g.tenant_id, g.agent_id, g.kind, g.body, g.constraints,
                  g.status as "status: GoalStatus", g.created_at, a.handle, a.persona,
                  p.document as policy,
                  a.status = 'active' as "agent_active!", a.persona_version,
                  s.sha256 as persona_sha256, p.sha256 as policy_sha256
           from goals g
           join agents a on a.id = g.agent_id
           join policies p on p.agent_id = a.id and p.version = a.policy_version
           join personas s on s.agent_id = a.id and s.version = a.persona_version
           where g.id = $1"#,
        id.0
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let policy: Policy =
        serde_json::from_value(row.policy).map_err(|e| sqlx::Error::Decode(e.into()))?;
    let recent_posts = sqlx::query!(
        r#"select coalesce(inputs #>> '{arguments,platform}', '') as "platform!",
                  coalesce(inputs #>> '{arguments,text}', '') as "text!"
           from tasks
           where agent_id = $1 and kind = 'execute' and status = 'committed'
             and inputs ->> 'action' in ('social.publish', 'social.reply')
           order by created_at desc
           limit $2"#,
        row.agent_id,
        RECENT_POSTS
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| Post {
        platform: r.platform,
        text: r.text,
    })
    .collect();
    let documents = Documents {
        persona_version: row.persona_version,
        persona_sha256: row.persona_sha256,
        policy_version: policy.version,
        policy_sha256: row.policy_sha256,
    };
    Ok(Some(PlanningContext {
        goal: Goal {
            id: GoalId(row.id),
            tenant_id: TenantId(row.tenant_id),
            agent_id: AgentId(row.agent_id),
            kind: row.kind,
            body: row.body,
            constraints: row.constraints.as_object().cloned().unwrap_or_default(),
        },
        status: row.status,
        submitted_at: row.created_at,
        handle: row.handle,
        persona: row.persona,
        policy,
        agent_active: row.agent_active,
        documents,
        recent_posts,
    }))
}

/// Stores `tasks` as the goal's plan (all `blocked`) and moves the goal from `received` to
/// `in_progress`, in one transaction. `false` when the goal was planned before: nothing is
/// stored twice.
pub async fn save_plan(
    pool: &PgPool,
    goal: GoalId,
    tasks: &[Task],
    max_attempts: u32,
    meta: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let claimed = sqlx::query!(
        "update goals set status = 'in_progress', plan_meta = $2, updated_at = now()
         where id = $1 and status = 'received'",
        goal.0,
        meta
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if claimed == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    for task in tasks {
        records::insert_task_in(&mut tx, task, TaskStatus::Blocked, max_attempts).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Marks a goal that cannot be planned as failed.
pub async fn fail_goal(pool: &PgPool, goal: GoalId) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update goals set status = 'failed', updated_at = now() where id = $1 and status in ('received', 'planning')",
        goal.0
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Sends a goal that is still `received` to the planner again at `at` (its model was busy),
/// in one transaction: its message in the outbox (a new identity per deferral, `cause`) and
/// its `updated_at`, so the reconciler counts its budget from now. `false`: the goal moved on
/// meanwhile (planned or failed) and nothing was written.
pub async fn defer_goal(
    pool: &PgPool,
    goal: GoalId,
    cause: &str,
    at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let waiting = sqlx::query!(
        "update goals set updated_at = now() where id = $1 and status = 'received'",
        goal.0
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if waiting {
        crate::outbox::enqueue_at(
            &mut tx,
            &crate::outbox::Message::goal(goal, cause),
            Some(at),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(waiting)
}

/// Blocked tasks of `goal` whose dependencies are all committed, locked for the caller inside
/// `tx` (a concurrent releaser skips them). The caller fills, enqueues and marks them
/// ([`mark_queued`]) before committing.
pub async fn lock_ready(
    tx: &mut Transaction<'_, Postgres>,
    goal: GoalId,
) -> Result<Vec<Task>, sqlx::Error> {
    let rows = sqlx::query_as!(
        TaskRow,
        r#"select t.id, t.goal_id, g.tenant_id, t.agent_id, t.kind as "kind: TaskKind", t.attempt,
                  t.inputs, t.read_set, t.write_set, t.feedback, t.approval_id, t.status as "status: TaskStatus",
                  array(select d.depends_on from task_dependencies d where d.task_id = t.id
                        order by d.depends_on) as "depends_on!"
           from tasks t join goals g on g.id = t.goal_id
           join agents a on a.id = t.agent_id and a.status = 'active'
           where t.goal_id = $1 and t.status = 'blocked'
             and not exists (select 1 from task_dependencies d join tasks dep on dep.id = d.depends_on
                             where d.task_id = t.id and dep.status <> 'committed')
           order by t.created_at, t.id
           for update of t skip locked"#,
        goal.0
    )
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter().map(TaskRow::into_task).collect()
}

/// The task `id` as stored, with its dependencies.
pub async fn task(pool: &PgPool, id: TaskId) -> Result<Option<Task>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    task_in(&mut conn, id).await
}

/// [`task`] on the caller's connection (inside its transaction: what it wrote is seen).
pub async fn task_in(conn: &mut PgConnection, id: TaskId) -> Result<Option<Task>, sqlx::Error> {
    Ok(stored_in(conn, id).await?.map(|(task, _)| task))
}

/// The task `id` with its status, in one query.
async fn stored_in(
    conn: &mut PgConnection,
    id: TaskId,
) -> Result<Option<(Task, TaskStatus)>, sqlx::Error> {
    sqlx::query_as!(
        TaskRow,
        r#"select t.id, t.goal_id, g.tenant_id, t.agent_id, t.kind as "kind: TaskKind", t.attempt,
                  t.inputs, t.read_set, t.write_set, t.feedback, t.approval_id, t.status as "status: TaskStatus",
                  array(select d.depends_on from task_dependencies d where d.task_id = t.id
                        order by d.depends_on) as "depends_on!"
           from tasks t join goals g on g.id = t.goal_id
           where t.id = $1"#,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| {
        let status = row.status;
        row.into_task().map(|task| (task, status))
    })
    .transpose()
}

/// The stored task of `message`, and its status, as [`stored_in`] reads them; in the same
/// statement, the task's current attempt is stamped as taken up (`received_at`) when the
/// message names it and it waits for a worker: what tells the reconciler that the message left
/// its queue.
async fn taken_up(
    conn: &mut PgConnection,
    message: &Task,
) -> Result<Option<(Task, TaskStatus)>, sqlx::Error> {
    sqlx::query_as!(
        TaskRow,
        r#"with stamp as (
               update tasks set received_at = now()
               where id = $1 and attempt = $2 and status in ('queued', 'running')
           )
           select t.id, t.goal_id, g.tenant_id, t.agent_id, t.kind as "kind: TaskKind", t.attempt,
                  t.inputs, t.read_set, t.write_set, t.feedback, t.approval_id, t.status as "status: TaskStatus",
                  array(select d.depends_on from task_dependencies d where d.task_id = t.id
                        order by d.depends_on) as "depends_on!"
           from tasks t join goals g on g.id = t.goal_id
           where t.id = $1"#,
        message.id.0,
        i32::try_from(message.attempt).unwrap_or(i32::MAX)
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| {
        let status = row.status;
        row.into_task().map(|task| (task, status))
    })
    .transpose()
}

/// The tasks of `ids` that exist, in the order given.
pub async fn tasks(pool: &PgPool, ids: Vec<uuid::Uuid>) -> Result<Vec<Task>, sqlx::Error> {
    sqlx::query_as!(
        TaskRow,
        r#"select t.id, t.goal_id, g.tenant_id, t.agent_id, t.kind as "kind: TaskKind", t.attempt,
                  t.inputs, t.read_set, t.write_set, t.feedback, t.approval_id, t.status as "status: TaskStatus",
                  array(select d.depends_on from task_dependencies d where d.task_id = t.id
                        order by d.depends_on) as "depends_on!"
           from tasks t join goals g on g.id = t.goal_id
           where t.id = any ($1)
           order by array_position($1, t.id)"#,
        &ids
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(TaskRow::into_task)
    .collect()
}

/// A `tasks` row as queries return it.
struct TaskRow {
    id: uuid::Uuid,
    goal_id: uuid::Uuid,
    tenant_id: uuid::Uuid,
    agent_id: uuid::Uuid,
    kind: TaskKind,
    attempt: i32,
    inputs: serde_json::Value,
    read_set: serde_json::Value,
    write_set: Vec<String>,
    feedback: Option<String>,
    approval_id: Option<uuid::Uuid>,
    depends_on: Vec<uuid::Uuid>,
    status: TaskStatus,
}

impl TaskRow {
    fn into_task(self) -> Result<Task, sqlx::Error> {
        let decode = |e: String| sqlx::Error::Decode(e.into());
        Ok(Task {
            id: TaskId(self.id),
            goal_id: GoalId(self.goal_id),
            tenant_id: TenantId(self.tenant_id),
            agent_id: AgentId(self.agent_id),
            kind: self.kind,
            attempt: u32::try_from(self.attempt).map_err(|e| decode(e.to_string()))?,
            inputs: self.inputs.as_object().cloned().unwrap_or_default(),
            depends_on: self.depends_on.into_iter().map(TaskId).collect(),
            read_set: serde_json::from_value(self.read_set).map_err(|e| decode(e.to_string()))?,
            write_set: self
                .write_set
                .into_iter()
                .map(|k| StateKey::parse(k).map_err(|e| decode(e.to_string())))
                .collect::<Result<_, _>>()?,
            feedback: self.feedback,
            approval_id: self.approval_id.map(ReviewId),
        })
    }
}

/// The first artifact of `task`'s committed result: (inline text, sha256).
pub async fn committed_artifact(
    conn: &mut PgConnection,
    task: TaskId,
) -> Result<Option<(Option<String>, String)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select artifact -> 'artifacts' -> 0 ->> 'inline' as inline,
                  artifact -> 'artifacts' -> 0 ->> 'sha256' as sha256
           from results r join commits c on c.result_id = r.id and c.task_id = r.task_id
           where c.task_id = $1"#,
        task.0
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.and_then(|r| r.sha256.map(|sha| (r.inline, sha))))
}

/// Records a released task's filled inputs and read versions, marks it `queued` and writes its
/// message to the outbox, derived from the row just written (the caller's transaction commits
/// both or neither).
pub async fn mark_queued(conn: &mut PgConnection, task: &Task) -> Result<(), sqlx::Error> {
    let read_set =
        serde_json::to_value(&task.read_set).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query!(
        "update tasks set status = 'queued', inputs = $2, read_set = $3, redrives = 0, updated_at = now() where id = $1",
        task.id.0,
        serde_json::Value::Object(task.inputs.clone()),
        read_set,
    )
    .execute(&mut *conn)
    .await?;
    crate::outbox::enqueue_task(conn, task.id).await
}

/// Fails a task that cannot be released (what it needs from a dependency is missing).
pub async fn fail_task(
    conn: &mut PgConnection,
    task: TaskId,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update tasks set status = 'failed', feedback = $2, updated_at = now() where id = $1",
        task.0,
        reason
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Fails the queued `attempt` of `task` for a reason no retry can change (a model call its
/// budget cannot pay for), audited as `worker.refused`; false when the attempt is no longer
/// queued (decided or superseded meanwhile).
pub async fn refuse_attempt(pool: &PgPool, task: &Task, reason: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let failed = sqlx::query!(
        "update tasks set status = 'failed', feedback = $3, updated_at = now()
         where id = $1 and attempt = $2 and status = 'queued'",
        task.id.0,
        task.attempt as i32,
        reason
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if failed {
        let entry = AuditRecord {
            goal_id: Some(task.goal_id),
            task_id: Some(task.id),
            reasoning: Some(reason.to_owned()),
            ..AuditRecord::new(
                task.tenant_id,
                "worker",
                "worker.refused",
                chrono::Utc::now(),
            )
        };
        crate::audit::append(&mut *tx, &entry).await?;
    }
    tx.commit().await?;
    Ok(failed)
}

/// Puts off `task`'s current attempt until `until` (its platform asked it to wait): the task
/// stays queued, due then, and its message goes out again then, with an audit record saying
/// why. `false` when the attempt is no longer queued (decided or superseded meanwhile).
pub async fn defer_attempt(
    pool: &PgPool,
    task: &Task,
    until: chrono::DateTime<chrono::Utc>,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let deferred = sqlx::query!(
        "update tasks set not_before = $3, updated_at = now()
         where id = $1 and attempt = $2 and status = 'queued'",
        task.id.0,
        task.attempt as i32,
        until
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if deferred {
        crate::outbox::rearm_task_at(&mut tx, task.id, until).await?;
        let entry = AuditRecord {
            goal_id: Some(task.goal_id),
            task_id: Some(task.id),
            reasoning: Some(format!("{reason}; due again at {until}")),
            ..AuditRecord::new(
                task.tenant_id,
                "worker",
                "worker.deferred",
                chrono::Utc::now(),
            )
        };
        crate::audit::append(&mut *tx, &entry).await?;
    }
    tx.commit().await?;
    Ok(deferred)
}

/// Takes a task marked `retrying` into its next attempt with the judge's feedback, and
/// returns it (its read versions as of the previous attempt: the caller reads the current ones
/// and records them with [`mark_queued`] in the same transaction); `None` if it is not (or no
/// longer) waiting for a replan after attempt `after` (when the message names it), so a
/// duplicate replan message, or one of an earlier attempt, does nothing.
pub async fn next_attempt(
    conn: &mut PgConnection,
    task: TaskId,
    after: Option<u32>,
    feedback: &str,
) -> Result<Option<Task>, sqlx::Error> {
    sqlx::query_as!(
        TaskRow,
        r#"update tasks t set attempt = t.attempt + 1, feedback = $2, status = 'queued', updated_at = now(),
                              not_before = null
           from goals g
           where t.id = $1 and t.status = 'retrying' and t.attempt - t.conflicts < t.max_attempts and g.id = t.goal_id
             and ($3::int is null or t.attempt = $3)
           returning t.id, t.goal_id, g.tenant_id, t.agent_id, t.kind as "kind: TaskKind", t.attempt,
                     t.inputs, t.read_set, t.write_set, t.feedback, t.approval_id, t.status as "status: TaskStatus",
                  array(select d.depends_on from task_dependencies d where d.task_id = t.id
                        order by d.depends_on) as "depends_on!""#,
        task.0,
        feedback,
        after.and_then(|a| i32::try_from(a).ok()),
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(TaskRow::into_task)
    .transpose()
}

/// Where task `id` stands (its status and current attempt), or `None` when it does not exist:
/// what tells a late message from a forged one.
pub async fn standing(pool: &PgPool, id: TaskId) -> Result<Option<(TaskStatus, i32)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select status as "status: TaskStatus", attempt from tasks where id = $1"#,
        id.0
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.status, r.attempt)))
}

/// What a worker may do with a task message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The message is the stored task's current, undecided attempt, exactly as stored: run it.
    Run,
    /// A copy of an attempt that was superseded or already decided: nothing to do.
    Stale(String),
    /// The database does not know the task as the message describes it (forged or altered), or
    /// an `execute` task whose approval does not release exactly these arguments: refused
    /// before any tool is called.
    Refused(String),
}

/// Checks a task message against the database before any tool is called.
pub async fn admit(pool: &PgPool, message: &Task) -> Result<Admission, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let Some((stored, status)) = taken_up(&mut conn, message).await? else {
        return Ok(Admission::Refused(format!(
            "task {} does not exist",
            message.id.0
        )));
    };
    if (
        stored.goal_id,
        stored.tenant_id,
        stored.agent_id,
        stored.kind,
    ) != (
        message.goal_id,
        message.tenant_id,
        message.agent_id,
        message.kind,
    ) {
        return Ok(Admission::Refused(format!(
            "the message does not describe task {} as stored (goal, tenant, agent or kind differ)",
            message.id.0
        )));
    }
    if message.attempt > stored.attempt {
        return Ok(Admission::Refused(format!(
            "attempt {} of task {} was never released (the task is at attempt {})",
            message.attempt, message.id.0, stored.attempt
        )));
    }
    if message.attempt < stored.attempt {
        return Ok(Admission::Stale(format!(
            "attempt {} was superseded by attempt {}",
            message.attempt, stored.attempt
        )));
    }
    // The row holds this attempt's inputs and versions whatever became of it: a copy that
    // differs was altered, decided or not. (Only the feedback moves on once the attempt is
    // decided: it is the judge's word on this attempt, for the next one.)
    let feedback_aside = Task {
        feedback: stored.feedback.clone(),
        ..message.clone()
    };
    if feedback_aside != stored {
        return Ok(Admission::Refused(format!(
            "the message differs from stored task {} (inputs, read or write set, dependencies or approval)",
            message.id.0
        )));
    }
    match status {
        TaskStatus::Queued | TaskStatus::Running if message.feedback == stored.feedback => {}
        TaskStatus::Queued | TaskStatus::Running => {
            return Ok(Admission::Refused(format!(
                "the message carries other feedback than stored task {}",
                message.id.0
            )));
        }
        TaskStatus::Blocked | TaskStatus::Ready => {
            return Ok(Admission::Refused(format!(
                "task {} was never released",
                message.id.0
            )));
        }
        decided => {
            return Ok(Admission::Stale(format!(
                "attempt {} is already {decided}",
                message.attempt
            )));
        }
    }
    if message.kind == TaskKind::Execute {
        return approval_releases(&mut conn, &stored).await;
    }
    Ok(Admission::Run)
}

/// Whether `task`'s approval exists, approves, belongs to the task's tenant and agent and to the
/// task it depends on, and approved exactly the effect the task's inputs describe.
async fn approval_releases(conn: &mut PgConnection, task: &Task) -> Result<Admission, sqlx::Error> {
    let refused = |reason: String| Ok(Admission::Refused(reason));
    let Some(approval) = task.approval_id else {
        return refused(format!("execute task {} names no approval", task.id.0));
    };
    let Some(row) = sqlx::query!(
        r#"select v.status as "status: ReviewStatus", v.decision as "decision: DecisionKind", v.tenant_id,
                  v.task_id, t.agent_id as "agent_id?", v.effect_sha256
           from reviews v left join tasks t on t.id = v.task_id
           where v.id = $1"#,
        approval.0
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return refused(format!("approval {} does not exist", approval.0));
    };
    if row.status != ReviewStatus::Approved || !row.decision.is_some_and(DecisionKind::approves) {
        return refused(format!(
            "review {} is {} ({}), not an approval",
            approval.0,
            row.status,
            row.decision.map_or("undecided", DecisionKind::as_str)
        ));
    }
    if row.tenant_id != task.tenant_id.0 || row.agent_id != Some(task.agent_id.0) {
        return refused(format!(
            "approval {} belongs to another tenant or agent",
            approval.0
        ));
    }
    if row.task_id.map(TaskId).into_iter().collect::<Vec<_>>() != task.depends_on {
        return refused(format!(
            "approval {} was given for another task",
            approval.0
        ));
    }
    let proposal = effect::performed_by(task);
    if row.effect_sha256.as_deref() != Some(proposal.digest().as_str()) {
        return refused(format!(
            "the arguments of execute task {} are not the effect approval {} approved",
            task.id.0, approval.0
        ));
    }
    Ok(Admission::Run)
}
