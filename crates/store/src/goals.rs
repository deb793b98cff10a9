//! Goals as the API takes them in and reports them: submission once per idempotency key, a
//! goal's progress (its tasks, results and decisions), lists, and cancellation.

use chimera_core::domain::{
    AgentId, AuditRecord, DecisionKind, DisclosureLevel, Goal, GoalId, GoalStatus, ReviewStatus,
    TaskKind, TaskStatus, TenantId,
};
use serde::Serialize;
use sqlx::PgPool;

use crate::outbox;

/// What a submission did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// A new goal.
    Created(GoalId),
    /// The same request was submitted before under this idempotency key: its goal.
    Existing { id: GoalId, status: GoalStatus },
}

impl Submitted {
    pub fn id(&self) -> GoalId {
        match self {
            Self::Created(id) | Self::Existing { id, .. } => *id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the idempotency key was used before for a different request")]
    KeyReused,
    #[error("no such agent in this tenant")]
    UnknownAgent,
    #[error("the agent is {0}: it takes no new goals until it is resumed")]
    AgentNotActive(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Stores `goal` as received, with its message to the planner in the outbox and its audit
/// record naming who submitted it (`by`), in one transaction. With an idempotency key (and the
/// hash of the request it came with), a repeated request returns the goal stored the first
/// time.
pub async fn submit(
    pool: &PgPool,
    goal: &Goal,
    idempotency: Option<(&str, &str)>,
    by: &str,
) -> Result<Submitted, SubmitError> {
    let (key, hash) = idempotency.unzip();
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query_scalar!(
        "insert into goals (id, tenant_id, agent_id, kind, body, constraints, idempotency_key, request_hash)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (tenant_id, idempotency_key) do nothing
         returning id",
        goal.id.0,
        goal.tenant_id.0,
        goal.agent_id.0,
        goal.kind,
        goal.body,
        serde_json::Value::Object(goal.constraints.clone()),
        key,
        hash,
    )
    .fetch_optional(&mut *tx)
    .await;
    match inserted {
        Ok(Some(id)) => {
            // A new goal needs an active agent (a replayed one is answered as before). A pause
            // that commits after this read lets the goal in; it then waits unplanned.
            let status = sqlx::query_scalar!(
                r#"select status::text as "status!" from agents where id = $1"#,
                goal.agent_id.0
            )
            .fetch_one(&mut *tx)
            .await?;
            if status != "active" {
                return Err(SubmitError::AgentNotActive(status));
            }
            outbox::enqueue(&mut tx, &outbox::Message::goal(GoalId(id), "submit")).await?;
            let entry = AuditRecord {
                goal_id: Some(GoalId(id)),
                reasoning: Some(format!(
                    "a {} goal for agent {}",
                    goal.kind, goal.agent_id.0
                )),
                ..AuditRecord::new(goal.tenant_id, by, "goal.submitted", chrono::Utc::now())
            };
            crate::audit::append(&mut *tx, &entry).await?;
            tx.commit().await?;
            return Ok(Submitted::Created(GoalId(id)));
        }
        Ok(None) => {}
        Err(err) if is_foreign_key_violation(&err) => return Err(SubmitError::UnknownAgent),
        Err(err) => return Err(err.into()),
    }
    let prior = sqlx::query!(
        r#"select id, request_hash, status as "status: GoalStatus" from goals
           where tenant_id = $1 and idempotency_key = $2"#,
        goal.tenant_id.0,
        key,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if prior.request_hash.as_deref() != hash {
        return Err(SubmitError::KeyReused);
    }
    Ok(Submitted::Existing {
        id: GoalId(prior.id),
        status: prior.status,
    })
}

fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "23503")
}

/// A goal with everything that happened to it so far.
#[derive(Debug, Clone, Serialize)]
pub struct GoalView {
    pub id: uuid::Uuid,
    pub tenant_id: uuid::Uuid,
    pub agent_id: uuid::Uuid,
    /// The agent's handle and the name people see.
    pub agent_handle: String,
    pub agent_name: Option<String>,
    /// The goal's trace (W3C form; X-Ray shows it as `1-<first 8>-<other 24>`): every log line
    /// and metric of its work names it.
    pub trace_id: String,
    pub kind: String,
    pub body: String,
    pub constraints: serde_json::Value,
    pub status: GoalStatus,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Who made the plan (planner, model, prompt hash, tokens) and under which versions of the
    /// agent's persona and policy; absent until it is planned.
    pub plan: Option<serde_json::Value>,
    pub tasks: Vec<TaskView>,
    pub results: Vec<ResultView>,
    pub decisions: Vec<DecisionView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: uuid::Uuid,
    pub kind: TaskKind,
    pub status: TaskStatus,
    pub attempt: i32,
    pub max_attempts: i32,
    /// Attempts that followed a conflict (the state it read moved): not counted against
    /// `max_attempts`.
    pub conflicts: i32,
    /// When a task that waits goes: an effect deferred to its platform quota's next window, or
    /// a replan backing off after a conflict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<chrono::DateTime<chrono::Utc>>,
    pub depends_on: Vec<uuid::Uuid>,
    pub feedback: Option<String>,
    /// The judge's last routing of the task's result, with its reasons; absent until judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
}

/// How the judge routed a task's result: `commit` or `auto_approve` (went on), `hold` (waits for
/// a person), `retry` (sent back with feedback), `conflict` (the state it read moved: replanned),
/// `fail`; and why, in the judge's words (its checks, tags, score and reasons).
#[derive(Debug, Clone, Serialize)]
pub struct Routing {
    pub outcome: String,
    pub reasons: Option<String>,
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultView {
    pub id: uuid::Uuid,
    pub task_id: uuid::Uuid,
    pub attempt: i32,
    pub confidence: f64,
    pub risk_tags: Vec<String>,
    pub disclosure_level: Option<DisclosureLevel>,
    pub commit_hash: String,
    pub committed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub output_state_version: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    pub review_id: uuid::Uuid,
    pub result_id: uuid::Uuid,
    pub status: ReviewStatus,
    pub decision: Option<DecisionKind>,
    pub decided_by: Option<String>,
    pub decided_at: Option<chrono::DateTime<chrono::Utc>>,
    pub judge_reasoning: String,
}

/// The goal `id` of `tenant`, or `None` (another tenant's goal is as absent as a missing one).
pub async fn view(
    pool: &PgPool,
    tenant: Option<TenantId>,
    id: GoalId,
) -> Result<Option<GoalView>, sqlx::Error> {
    let Some(goal) = sqlx::query!(
        r#"select g.id, g.tenant_id, g.agent_id, a.handle as agent_handle, a.display_name as agent_name,
                  g.kind, g.body, g.constraints, g.status as "status: GoalStatus",
                  g.created_at, g.updated_at, g.plan_meta
           from goals g join agents a on a.id = g.agent_id
           where g.id = $1 and ($2::uuid is null or g.tenant_id = $2)"#,
        id.0,
        tenant.map(|t| t.0),
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let tasks = sqlx::query!(
        r#"select t.id, t.kind as "kind: TaskKind", t.status as "status: TaskStatus", t.attempt, t.max_attempts,
                  t.conflicts, t.feedback,
                  case when t.status in ('queued', 'retrying') and t.not_before > now() then t.not_before end
                      as deferred_until,
                  array(select d.depends_on from task_dependencies d where d.task_id = t.id
                        order by d.depends_on) as "depends_on!",
                  j.action as "routed?", j.reasoning as "routing_reasons?", j.at as "routed_at?"
           from tasks t
           left join lateral (
               select substr(a.action, 7) as action, a.reasoning, a.at from audit_log a
               where a.goal_id = t.goal_id and a.task_id = t.id and a.action like 'judge.%'
               order by a.id desc limit 1
           ) j on true
           where t.goal_id = $1
           order by t.created_at, t.id"#,
        id.0
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|t| TaskView {
        id: t.id,
        kind: t.kind,
        status: t.status,
        attempt: t.attempt,
        max_attempts: t.max_attempts,
        conflicts: t.conflicts,
        deferred_until: t.deferred_until,
        depends_on: t.depends_on,
        feedback: t.feedback,
        routing: match (t.routed, t.routed_at) {
            (Some(outcome), Some(at)) => Some(Routing {
                outcome,
                reasons: t.routing_reasons,
                at,
            }),
            _ => None,
        },
    })
    .collect();
    let results = sqlx::query!(
        r#"select r.id, r.task_id, r.attempt, r.confidence, r.risk_tags,
                  r.disclosure_level as "disclosure_level: DisclosureLevel", r.commit_hash,
                  c.committed_at as "committed_at?",
                  c.output_state_version as "output_state_version?"
           from results r join tasks t on t.id = r.task_id
           left join commits c on c.result_id = r.id and c.task_id = r.task_id
           where t.goal_id = $1
           order by r.created_at, r.id"#,
        id.0
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| ResultView {
        id: r.id,
        task_id: r.task_id,
        attempt: r.attempt,
        confidence: r.confidence,
        risk_tags: r.risk_tags,
        disclosure_level: r.disclosure_level,
        commit_hash: r.commit_hash,
        committed_at: r.committed_at,
        output_state_version: r.output_state_version,
    })
    .collect();
    let decisions = sqlx::query!(
        r#"select v.id, v.result_id, v.status as "status: ReviewStatus", v.decision as "decision: DecisionKind",
                  v.decided_by, v.decided_at, v.judge_reasoning
           from reviews v join results r on r.id = v.result_id join tasks t on t.id = r.task_id
           where t.goal_id = $1
           order by v.created_at, v.id"#,
        id.0
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|v| DecisionView {
        review_id: v.id,
        result_id: v.result_id,
        status: v.status,
        decision: v.decision,
        decided_by: v.decided_by,
        decided_at: v.decided_at,
        judge_reasoning: v.judge_reasoning,
    })
    .collect();
    Ok(Some(GoalView {
        id: goal.id,
        tenant_id: goal.tenant_id,
        agent_id: goal.agent_id,
        agent_handle: goal.agent_handle,
        agent_name: goal.agent_name,
        trace_id: chimera_core::trace::TraceContext::trace_id_of(goal.id),
        kind: goal.kind,
        body: goal.body,
        constraints: goal.constraints,
        status: goal.status,
        created_at: goal.created_at,
        updated_at: goal.updated_at,
        plan: goal.plan_meta,
        tasks,
        results,
        decisions,
    }))
}

/// A goal in a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GoalSummary {
    pub id: uuid::Uuid,
    pub agent_id: uuid::Uuid,
    pub agent_handle: String,
    pub kind: String,
    #[schema(value_type = String, example = "in_progress")]
    pub status: GoalStatus,
    /// The goal's text, at most 160 characters of it.
    pub text: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Which goals of a tenant to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    pub agent: Option<AgentId>,
    pub status: Option<GoalStatus>,
    pub kind: Option<&'a str>,
    /// Created at or after / before.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    pub limit: i64,
    pub offset: i64,
}

pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    filter: &Filter<'_>,
) -> Result<Vec<GoalSummary>, sqlx::Error> {
    sqlx::query_as!(
        GoalSummary,
        r#"select g.id, g.agent_id, a.handle as agent_handle, g.kind,
                  g.status as "status: GoalStatus", left(g.body, 160) as "text!",
                  g.created_at, g.updated_at
           from goals g join agents a on a.id = g.agent_id
           where g.tenant_id = $1
             and ($2::uuid is null or g.agent_id = $2)
             and ($3::goal_status is null or g.status = $3)
             and ($4::text is null or g.kind = $4)
             and ($5::timestamptz is null or g.created_at >= $5)
             and ($6::timestamptz is null or g.created_at < $6)
           order by g.created_at desc, g.id
           limit $7 offset $8"#,
        tenant.0,
        filter.agent.map(|a| a.0),
        filter.status as Option<GoalStatus>,
        filter.kind,
        filter.since,
        filter.until,
        filter.limit,
        filter.offset
    )
    .fetch_all(pool)
    .await
}

/// What cancelling a goal did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Cancelled {
    pub goal_id: uuid::Uuid,
    #[schema(value_type = String, example = "cancelled")]
    pub status: GoalStatus,
    /// `false` when the goal was settled before (nothing changed).
    pub changed: bool,
    /// Tasks cancelled (not started, waiting, or in a worker's hands).
    pub cancelled_tasks: i64,
    /// Held items closed (rejected) with the goal.
    pub closed_reviews: i64,
    /// Effects approved before and already released: they are not revoked.
    pub effects_not_revoked: Vec<Released>,
}

/// An approved effect already handed to a worker.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Released {
    pub task_id: uuid::Uuid,
    pub action: String,
    #[schema(value_type = String, example = "committed")]
    pub status: TaskStatus,
}

/// Cancels the goal `id` of `tenant`: its tasks are cancelled (work a worker holds finishes and
/// its result is not used) and its held items rejected; approved effects already released are
/// not revoked and are named. Audited as `goal.cancelled`. `None`: no such goal.
pub async fn cancel(
    pool: &PgPool,
    tenant: TenantId,
    id: GoalId,
    by: &str,
) -> Result<Option<Cancelled>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(status) = sqlx::query_scalar!(
        r#"select status as "status: GoalStatus" from goals
           where id = $1 and tenant_id = $2 for no key update"#,
        id.0,
        tenant.0
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    if matches!(
        status,
        GoalStatus::Completed | GoalStatus::Failed | GoalStatus::Cancelled
    ) {
        let effects_not_revoked = released(&mut tx, id).await?;
        return Ok(Some(Cancelled {
            goal_id: id.0,
            status,
            changed: false,
            cancelled_tasks: 0,
            closed_reviews: 0,
            effects_not_revoked,
        }));
    }
    let closed_reviews = sqlx::query!(
        "update reviews v set status = 'rejected', decision = 'reject', decided_by = $2,
                              decided_at = now()
         from tasks t where t.id = v.task_id and t.goal_id = $1 and v.status = 'pending'",
        id.0,
        format!("{by} (goal cancelled)")
    )
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;
    // An effect waiting for its quota window is not performed yet: it is cancelled too (its
    // reservation goes back to the window); one due within 30 s may be with a worker already,
    // and is named as released instead.
    let cancelled_tasks = sqlx::query!(
        "update tasks set status = 'cancelled', updated_at = now()
         where goal_id = $1
           and ((kind <> 'execute'
                 and status in ('blocked', 'ready', 'queued', 'running', 'retrying', 'awaiting_review'))
                or (kind = 'execute' and status = 'queued'
                    and not_before > clock_timestamp() + interval '30 seconds'))",
        id.0
    )
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;
    sqlx::query!(
        "update goals set status = 'cancelled', updated_at = now() where id = $1",
        id.0
    )
    .execute(&mut *tx)
    .await?;
    // Read last: an approval that won its review while this waited for it has released its
    // effect, and the answer names it.
    let effects_not_revoked = released(&mut tx, id).await?;
    let entry = AuditRecord {
        goal_id: Some(id),
        reasoning: Some(format!(
            "{cancelled_tasks} tasks cancelled, {closed_reviews} held items closed, {} released effects not revoked",
            effects_not_revoked.len()
        )),
        ..AuditRecord::new(tenant, by, "goal.cancelled", chrono::Utc::now())
    };
    crate::audit::append(&mut *tx, &entry).await?;
    tx.commit().await?;
    Ok(Some(Cancelled {
        goal_id: id.0,
        status: GoalStatus::Cancelled,
        changed: true,
        cancelled_tasks,
        closed_reviews,
        effects_not_revoked,
    }))
}

/// The goal's approved effects already handed to a worker (or performed).
async fn released(conn: &mut sqlx::PgConnection, id: GoalId) -> Result<Vec<Released>, sqlx::Error> {
    sqlx::query_as!(
        Released,
        r#"select id as task_id, coalesce(inputs ->> 'action', '') as "action!",
                  status as "status: TaskStatus"
           from tasks where goal_id = $1 and kind = 'execute'
             and status in ('queued', 'running', 'committed')
           order by created_at"#,
        id.0
    )
    .fetch_all(&mut *conn)
    .await
}
