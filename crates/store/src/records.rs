//! Writing the swarm's records: tenants, agents with their policies, goals, tasks, results.

use chimera_core::domain::{
    AgentId, ArtifactRef, CommitHash, Confidence, DisclosureLevel, GoalId, ResultId, RiskTag,
    StateKey, Task, TaskId, TaskKind, TaskResult, TaskStatus, TenantId, derived_uuid,
};
use chimera_core::routing::Policy;
use sqlx::PgPool;

/// Creates a tenant.
pub async fn create_tenant(pool: &PgPool, name: &str) -> Result<TenantId, sqlx::Error> {
    let id = TenantId::random();
    sqlx::query!("insert into tenants (id, name) values ($1, $2)", id.0, name)
        .execute(pool)
        .await?;
    Ok(id)
}

/// Creates an agent and its first policy, in one transaction.
pub async fn create_agent(
    pool: &PgPool,
    tenant: TenantId,
    handle: &str,
    persona: &serde_json::Value,
    policy: &Policy,
) -> Result<AgentId, sqlx::Error> {
    let id = AgentId::random();
    let document = serde_json::to_value(policy).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "insert into agents (id, tenant_id, handle, persona, policy_version) values ($1, $2, $3, $4, $5)",
        id.0,
        tenant.0,
        handle,
        persona,
        policy.version
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into policies (agent_id, version, document) values ($1, $2, $3)",
        id.0,
        policy.version,
        document
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into personas (agent_id, version, persona) values ($1, 1, $2)",
        id.0,
        persona
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Stores a task with its dependencies, in `status` (`blocked`, `ready`, `queued`...).
pub async fn insert_task(
    pool: &PgPool,
    task: &Task,
    status: TaskStatus,
    max_attempts: u32,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    insert_task_in(&mut tx, task, status, max_attempts).await?;
    tx.commit().await
}

/// [`insert_task`] inside the caller's transaction.
pub async fn insert_task_in(
    conn: &mut sqlx::PgConnection,
    task: &Task,
    status: TaskStatus,
    max_attempts: u32,
) -> Result<(), sqlx::Error> {
    let read_set =
        serde_json::to_value(&task.read_set).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let write_set: Vec<String> = task
        .write_set
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    let depends_on: Vec<uuid::Uuid> = task.depends_on.iter().map(|t| t.0).collect();
    sqlx::query!(
        "insert into tasks (id, goal_id, agent_id, kind, status, attempt, max_attempts, inputs, read_set, write_set,
                            feedback, approval_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        task.id.0,
        task.goal_id.0,
        task.agent_id.0,
        task.kind as TaskKind,
        status as TaskStatus,
        task.attempt as i32,
        max_attempts as i32,
        serde_json::Value::Object(task.inputs.clone()),
        read_set,
        &write_set,
        task.feedback,
        task.approval_id.map(|r| r.0),
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "insert into task_dependencies (task_id, depends_on) select $1, d from unnest($2::uuid[]) as d",
        task.id.0,
        &depends_on
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A result as stored: recorded under its task, and naming the task's agent. Only the store
/// makes one (by recording a result, or by loading a stored one), so what holds a `Recorded`
/// can commit it without looking the result up again. Derefs to the [`TaskResult`].
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded(TaskResult);

impl std::ops::Deref for Recorded {
    type Target = TaskResult;

    fn deref(&self) -> &TaskResult {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The commit hash is not the hash of the result's content: it would store one content
    /// under another's name.
    #[error("result {result}: the commit hash does not match its content")]
    HashMismatch { result: ResultId },
    /// The result's task does not exist, or belongs to another agent than the result names.
    #[error("result {result}: task {task} does not exist or is not agent {agent}'s")]
    NotTheTasks {
        result: ResultId,
        task: TaskId,
        agent: AgentId,
    },
    #[error("database error while recording a result")]
    Database(#[from] sqlx::Error),
}

/// Records a result; recording the same content again (same task, same commit hash) returns the
/// id stored the first time. Concurrent recorders of one result race safely: `on conflict do
/// nothing` covers both the id and the content. A different content under an id already taken
/// (a task attempt that ran twice and produced something else) is stored under an id derived
/// from its content. A result naming another agent than its task's, or whose commit hash is not
/// its content's, is refused, and not stored.
pub async fn record_result(pool: &PgPool, result: &TaskResult) -> Result<Recorded, RecordError> {
    if !result.commit_hash_matches() {
        return Err(RecordError::HashMismatch { result: result.id });
    }
    let fallback = ResultId(derived_uuid(&format!(
        "result:{}:{}",
        result.task_id, result.commit_hash
    )));
    for id in [result.id, fallback] {
        insert_result(pool, id, result).await?;
        let stored = sqlx::query_scalar!(
            "select r.id from results r join tasks t on t.id = r.task_id
             where r.task_id = $1 and r.commit_hash = $2 and t.agent_id = $3",
            result.task_id.0,
            result.commit_hash.as_str(),
            result.agent_id.0
        )
        .fetch_optional(pool)
        .await?;
        if let Some(id) = stored {
            return Ok(Recorded(TaskResult {
                id: ResultId(id),
                ..result.clone()
            }));
        }
    }
    Err(RecordError::NotTheTasks {
        result: result.id,
        task: result.task_id,
        agent: result.agent_id,
    })
}

async fn insert_result(
    pool: &PgPool,
    id: ResultId,
    result: &TaskResult,
) -> Result<(), sqlx::Error> {
    let artifact = serde_json::json!({ "artifacts": result.artifacts });
    let read_set =
        serde_json::to_value(&result.read_set).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let risk_tags: Vec<String> = result
        .risk_tags
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    sqlx::query!(
        "insert into results (id, task_id, attempt, commit_hash, artifact, confidence, risk_tags, disclosure_level, read_set)
         select $1, t.id, $3, $4, $5, $6, $7, $8, $9
         from tasks t where t.id = $2 and t.agent_id = $10
         on conflict do nothing",
        id.0,
        result.task_id.0,
        result.attempt as i32,
        result.commit_hash.as_str(),
        artifact,
        result.confidence_score.value(),
        &risk_tags,
        result.disclosure_level as Option<DisclosureLevel>,
        read_set,
        result.agent_id.0,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The stored result `id` (its write set is its task's), read on the caller's connection.
pub async fn load_result_in(
    conn: &mut sqlx::PgConnection,
    id: ResultId,
) -> Result<Option<Recorded>, sqlx::Error> {
    let Some(row) = sqlx::query!(
        r#"select r.id, r.task_id, t.goal_id, g.tenant_id, t.agent_id, t.kind as "kind: TaskKind",
                  r.attempt, r.artifact, r.confidence, r.risk_tags,
                  r.disclosure_level as "disclosure: DisclosureLevel", r.read_set, t.write_set, r.commit_hash
           from results r join tasks t on t.id = r.task_id join goals g on g.id = t.goal_id
           where r.id = $1"#,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let decode = |e: String| sqlx::Error::Decode(e.into());
    let result = TaskResult {
        id: ResultId(row.id),
        task_id: TaskId(row.task_id),
        goal_id: GoalId(row.goal_id),
        tenant_id: TenantId(row.tenant_id),
        agent_id: AgentId(row.agent_id),
        task_kind: row.kind,
        attempt: u32::try_from(row.attempt).map_err(|e| decode(e.to_string()))?,
        artifacts: serde_json::from_value::<Vec<ArtifactRef>>(
            row.artifact.get("artifacts").cloned().unwrap_or_default(),
        )
        .map_err(|e| decode(e.to_string()))?,
        confidence_score: Confidence::try_from(row.confidence)
            .map_err(|e| decode(e.to_string()))?,
        risk_tags: row
            .risk_tags
            .into_iter()
            .filter_map(|t| RiskTag::parse(t).ok())
            .collect(),
        disclosure_level: row.disclosure,
        read_set: serde_json::from_value(row.read_set).map_err(|e| decode(e.to_string()))?,
        write_set: row
            .write_set
            .into_iter()
            .filter_map(|k| StateKey::parse(k).ok())
            .collect(),
        commit_hash: CommitHash::parse(row.commit_hash).map_err(|e| decode(e.to_string()))?,
    };
    Ok(Some(Recorded(result)))
}
