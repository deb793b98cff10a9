//! Optimistic concurrency control: commits that never lose an update.
//!
//! A commit checks the versions of exactly the state its task read (the read set) and bumps the
//! versions of exactly what it writes (the write set), in one statement (`occ_commit`, see
//! `migrations/*_occ_commit_and_budget_spend.sql`). If any key it read has moved, nothing is
//! written and the caller gets [`CommitError::Conflict`] with what moved, to replan with fresh
//! versions. Committing the same result twice (same commit hash) is a no-op success.

use std::collections::BTreeMap;

use chimera_core::domain::{AgentId, ReadSet, StateKey, StateVersion, TaskResult};
use serde::Deserialize;
use sqlx::PgPool;

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
    #[error("database error during commit")]
    Database(#[from] sqlx::Error),
    /// The database answered something this build cannot read (a schema mismatch).
    #[error("unreadable commit outcome: {0}")]
    Unreadable(String),
}

fn describe(moved: &[Moved]) -> String {
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
            Self::Conflict { moved } => moved.iter().map(|m| (m.key.clone(), m.actual)).collect(),
            _ => ReadSet::new(),
        }
    }
}

/// Commits `result` (already recorded in `results`) against the agent's state.
pub async fn commit(pool: &PgPool, result: &TaskResult) -> Result<CommitOutcome, CommitError> {
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
    .fetch_one(pool)
    .await;
    let row = match row {
        Ok(row) => row,
        // Two duplicates with nothing to lock can race to the commits row's primary key.
        Err(err) if is_unique_violation(&err) => return already_committed(pool, result).await,
        Err(err) => return Err(err.into()),
    };
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

async fn already_committed(
    pool: &PgPool,
    result: &TaskResult,
) -> Result<CommitOutcome, CommitError> {
    let row = sqlx::query!(
        "select input_state_version, output_state_version from commits where commit_hash = $1",
        result.commit_hash.as_str()
    )
    .fetch_one(pool)
    .await?;
    Ok(CommitOutcome::AlreadyCommitted {
        input: parse(row.input_state_version)?,
        output: parse(row.output_state_version)?,
    })
}

/// Reads a JSON value the commit function returned (versions by key, or what moved).
fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, CommitError> {
    serde_json::from_value(value).map_err(|e| CommitError::Unreadable(e.to_string()))
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "23505")
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
