//! Optimistic concurrency control: commits that never lose an update.
//!
//! A commit checks the versions of exactly the state its task read (the read set) and bumps the
//! versions of exactly what it writes (the write set), and settles the task with the result it
//! committed and both sets of versions, in one statement: a single-key commit runs as one
//! conditional `UPDATE` chain; any other goes through `occ_commit` (see
//! `migrations/*_commit_on_task.sql`). If any key it read has moved, nothing is written and
//! the caller gets [`CommitError::Conflict`] with what moved, to replan with fresh
//! versions. Committing the same result twice (same commit hash) is a no-op success.

use std::collections::BTreeMap;

use chimera_core::domain::{AgentId, ReadSet, ResultId, StateKey, StateVersion, TaskResult};
use serde::Deserialize;
use sqlx::{PgConnection, PgExecutor, PgPool};

/// Versions by key, as recorded with a commit.
pub type Versions = BTreeMap<StateKey, StateVersion>;

/// A successful commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// This call committed: the versions it checked and the versions it wrote.
    Committed { input: Versions, output: Versions },
    /// The same commit hash was committed before (by this caller or a concurrent duplicate).
    AlreadyCommitted { input: Versions, output: Versions },
}

impl CommitOutcome {
    pub fn output(&self) -> &Versions {
        match self {
            Self::Committed { output, .. } | Self::AlreadyCommitted { output, .. } => output,
        }
    }
}

/// One key whose version moved since the task read it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Moved {
    pub key: StateKey,
    pub expected: StateVersion,
    pub actual: StateVersion,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// State advanced since the task read it; nothing was written.
    #[error("state moved since the task read it: {}", describe(.moved))]
    Conflict { moved: Vec<Moved> },
    /// No result with this id, task, agent and commit hash was recorded: record it first.
    #[error("the result to commit was not recorded")]
    NotRecorded,
    /// The task committed another result before; a task commits once.
    #[error("the task committed another result ({committed}) before")]
    TaskSettled { committed: ResultId },
    #[error("database error during commit")]
    Database(#[from] sqlx::Error),
    /// The database answered something this build cannot read (a schema mismatch).
    #[error("unreadable commit outcome: {0}")]
    Unreadable(String),
}

/// The keys that moved, in words (`mentions:x 1 -> 2, ...`): the feedback of a replan.
pub fn describe(moved: &[Moved]) -> String {
    moved
        .iter()
        .map(|m| format!("{} {} -> {}", m.key, m.expected.get(), m.actual.get()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl CommitError {
    /// The fresh versions of the keys that moved, for a replan.
    pub fn fresh_versions(&self) -> ReadSet {
        match self {
            Self::Conflict { moved } => fresh_versions(moved),
            _ => ReadSet::new(),
        }
    }
}

/// The versions the keys that moved have now, for a replan.
pub fn fresh_versions(moved: &[Moved]) -> ReadSet {
    moved.iter().map(|m| (m.key.clone(), m.actual)).collect()
}

/// Commits `result` (already recorded in `results`) against the agent's state.
pub async fn commit(pool: &PgPool, result: &TaskResult) -> Result<CommitOutcome, CommitError> {
    let outcome = match single_key_commit(pool, result).await {
        Ok(Some(outcome)) => return Ok(outcome),
        Ok(None) => general_commit(pool, result).await,
        Err(err) => Err(err.into()),
    };
    match outcome {
        // The task could not be settled, so nothing was written: it committed this result
        // before, or another one, or the result is not recorded under it (an open task here
        // means the result's agent is not the task's).
        Err(CommitError::Database(err)) if is_unsettled(&err) => settlement(pool, result)
            .await?
            .ok_or(CommitError::NotRecorded),
        other => other,
    }
}

/// The common commit in one statement: one key written, read at a known version or not at
/// all. `None` when it does not apply or did not commit (the key moved, has no row yet, or the
/// result was committed before): the general commit then decides, and reports why.
async fn single_key_commit(
    pool: &PgPool,
    result: &TaskResult,
) -> Result<Option<CommitOutcome>, sqlx::Error> {
    let mut written = result.write_set.iter();
    let (Some(key), None) = (written.next(), written.next()) else {
        return Ok(None);
    };
    let expected = match result.read_set.len() {
        0 => None,
        1 => match result.read_set.get(key) {
            Some(version) => Some(*version),
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    // When the bump succeeds but the task cannot be settled, the guard raises and the whole
    // statement is undone.
    let row = sqlx::query!(
        r#"with bumped as (
               update agent_state set version = version + 1, updated_at = now()
               where agent_id = $1 and key = $5 and ($6::bigint is null or version = $6)
               returning version
           ), settled as (
               update tasks
               set status = 'committed', committed_result = $3, committed_at = now(),
                   input_state_version = case when $6::bigint is null then '{}'::jsonb
                                              else jsonb_build_object($5::text, $6::bigint) end,
                   output_state_version = jsonb_build_object($5::text, (select version from bumped)),
                   updated_at = now()
               where id = $2 and agent_id = $1 and committed_result is null
                 and exists (select 1 from bumped)
                 and exists (select 1 from results
                             where id = $3 and task_id = $2 and commit_hash = $4)
               returning id
           )
           select b.version as "version?",
                  case when b.version is null or exists (select 1 from settled) then true
                       else occ_refuse_unsettled($2, $3) end as "settled!"
           from (select 1) one left join bumped b on true"#,
        result.agent_id.0,
        result.task_id.0,
        result.id.0,
        result.commit_hash.as_str(),
        key.as_str(),
        expected.map(StateVersion::get),
    )
    .fetch_one(pool)
    .await?;
    let Some(version) = row.version else {
        return Ok(None);
    };
    let version = StateVersion::try_from(version).map_err(|e| sqlx::Error::Decode(e.into()))?;
    let input = expected.map(|v| (key.clone(), v)).into_iter().collect();
    let output = [(key.clone(), version)].into();
    Ok(Some(CommitOutcome::Committed { input, output }))
}

/// Commits `result` inside the caller's transaction (with the other writes of a decision: an
/// approval, a spend, the effect's task), so they all happen or none does. The task's row is
/// locked first: a commit of this result before answers [`CommitOutcome::AlreadyCommitted`],
/// and a conflict leaves the transaction usable (nothing was written) for the caller to roll
/// back.
pub async fn commit_in(
    conn: &mut PgConnection,
    result: &TaskResult,
) -> Result<CommitOutcome, CommitError> {
    match settlement(&mut *conn, result).await? {
        Some(outcome) => Ok(outcome),
        None => general_commit(&mut *conn, result).await,
    }
}

/// Any read and write sets, through `occ_commit`.
async fn general_commit<'e>(
    executor: impl PgExecutor<'e>,
    result: &TaskResult,
) -> Result<CommitOutcome, CommitError> {
    let read_keys: Vec<String> = result
        .read_set
        .keys()
        .map(|k| k.as_str().to_owned())
        .collect();
    let read_versions: Vec<i64> = result.read_set.values().map(|v| v.get()).collect();
    let write_keys: Vec<String> = result
        .write_set
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    let row = sqlx::query!(
        r#"select outcome as "outcome!", input_versions, output_versions, moved as "moved!"
           from occ_commit($1, $2, $3, $4, $5, $6, $7)"#,
        result.agent_id.0,
        result.task_id.0,
        result.id.0,
        result.commit_hash.as_str(),
        &read_keys,
        &read_versions,
        &write_keys,
    )
    .fetch_one(executor)
    .await?;
    match row.outcome.as_str() {
        "committed" => Ok(CommitOutcome::Committed {
            input: parse(row.input_versions.unwrap_or_default())?,
            output: parse(row.output_versions.unwrap_or_default())?,
        }),
        "duplicate" => Ok(CommitOutcome::AlreadyCommitted {
            input: parse(row.input_versions.unwrap_or_default())?,
            output: parse(row.output_versions.unwrap_or_default())?,
        }),
        "conflict" => Err(CommitError::Conflict {
            moved: parse(row.moved)?,
        }),
        other => Err(CommitError::Unreadable(format!("outcome {other:?}"))),
    }
}

/// What `result`'s task has committed, with its row locked: this result's commit
/// ([`CommitOutcome::AlreadyCommitted`]), nothing yet (`None`), or why this result cannot
/// commit (not recorded under the task and agent, or the task committed another result).
async fn settlement<'e>(
    executor: impl PgExecutor<'e>,
    result: &TaskResult,
) -> Result<Option<CommitOutcome>, CommitError> {
    let row = sqlx::query!(
        r#"select t.committed_result, t.input_state_version, t.output_state_version,
                  t.agent_id = $4 and exists (select 1 from results r
                                              where r.id = $2 and r.task_id = t.id
                                                and r.commit_hash = $3) as "recorded!"
           from tasks t
           where t.id = $1
           for update of t"#,
        result.task_id.0,
        result.id.0,
        result.commit_hash.as_str(),
        result.agent_id.0,
    )
    .fetch_optional(executor)
    .await?
    .ok_or(CommitError::NotRecorded)?;
    if !row.recorded {
        return Err(CommitError::NotRecorded);
    }
    match (
        row.committed_result,
        row.input_state_version,
        row.output_state_version,
    ) {
        (None, ..) => Ok(None),
        (Some(id), Some(input), Some(output)) if id == result.id.0 => {
            Ok(Some(CommitOutcome::AlreadyCommitted {
                input: parse(input)?,
                output: parse(output)?,
            }))
        }
        (Some(id), ..) => Err(CommitError::TaskSettled {
            committed: ResultId(id),
        }),
    }
}

/// Reads a JSON value the commit function returned (versions by key, or what moved).
fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, CommitError> {
    serde_json::from_value(value).map_err(|e| CommitError::Unreadable(e.to_string()))
}

/// `occ_refuse_unsettled`: versions could be bumped, the task could not be settled.
fn is_unsettled(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "CH001")
}

/// Reads the current versions of `keys` for a task's read set; a key never written is at
/// version 0 (its row is created, so a later commit can lock it).
pub async fn read_versions(
    pool: &PgPool,
    agent: AgentId,
    keys: &[StateKey],
) -> Result<ReadSet, sqlx::Error> {
    let keys: Vec<String> = keys.iter().map(|k| k.as_str().to_owned()).collect();
    sqlx::query!(
        "insert into agent_state (agent_id, key) select $1, k from unnest($2::text[]) as k on conflict do nothing",
        agent.0,
        &keys
    )
    .execute(pool)
    .await?;
    let rows = sqlx::query!(
        "select key, version from agent_state where agent_id = $1 and key = any ($2)",
        agent.0,
        &keys
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            let key = StateKey::parse(row.key).map_err(|e| sqlx::Error::Decode(e.into()))?;
            let version =
                StateVersion::try_from(row.version).map_err(|e| sqlx::Error::Decode(e.into()))?;
            Ok((key, version))
        })
        .collect()
}
