//! Optimistic concurrency control: commits that never lose an update.
//!
//! A commit checks the versions of exactly the state its task read (the read set), bumps the
//! versions of exactly what it writes (the write set), and records the result it committed
//! with both sets of versions in `commits`, in one statement: a commit of one key read and
//! written runs as one conditional `UPDATE` and an `INSERT`; any other goes through
//! `occ_commit` (see `migrations/*_baseline.sql`). If any key it read has moved, nothing
//! is written and the caller gets [`CommitError::Conflict`] with what moved, to replan with
//! fresh versions. Committing the same result twice (same commit hash) is a no-op success. A
//! task commits one result (the record's key is the task). What is committed is a
//! [`Recorded`] result, which only the store makes, so the commit trusts it without looking it
//! up again.

use std::collections::BTreeMap;

use chimera_core::domain::{AgentId, ReadSet, ResultId, StateKey, StateVersion};
use serde::Deserialize;
use sqlx::{PgConnection, PgExecutor, PgPool};

use crate::records::Recorded;

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

/// Commits a recorded result against its agent's state: the OCC commit alone. It does not
/// touch the task's workflow status (which releases dependents, `dag`); a decision commits
/// through [`commit_in`], which does.
pub async fn commit(pool: &PgPool, result: &Recorded) -> Result<CommitOutcome, CommitError> {
    let mut conn = pool.acquire().await?;
    match write(&mut conn, result).await {
        // The task's commit record is there already, so nothing was written: the task
        // committed this result before, or another one.
        Err(CommitError::Database(err)) if is_committed_before(&err) => {
            prior_commit(&mut *conn, result)
                .await?
                .ok_or(CommitError::Database(err))
        }
        other => other,
    }
}

/// The commit's statement: the one-statement commit when it applies, else `occ_commit`.
async fn write(conn: &mut PgConnection, result: &Recorded) -> Result<CommitOutcome, CommitError> {
    match single_key_commit(&mut *conn, result).await? {
        Some(outcome) => Ok(outcome),
        None => general_commit(&mut *conn, result).await,
    }
}

/// The common commit in one statement: one key, read at a known version and written. `None`
/// when it does not apply or did not commit (the key moved or has no row yet): the general
/// commit then decides, and reports why.
async fn single_key_commit<'e>(
    executor: impl PgExecutor<'e>,
    result: &Recorded,
) -> Result<Option<CommitOutcome>, sqlx::Error> {
    let mut written = result.write_set.iter();
    let (Some(key), None) = (written.next(), written.next()) else {
        return Ok(None);
    };
    let (1, Some(&expected)) = (result.read_set.len(), result.read_set.get(key)) else {
        return Ok(None);
    };
    let Some(next) = expected
        .get()
        .checked_add(1)
        .and_then(|v| StateVersion::try_from(v).ok())
    else {
        return Ok(None);
    };
    // The conditional UPDATE commits when it changed the row (`rows_affected`). The record's
    // primary key (the task) refuses a second record, which undoes the bump too.
    let done = sqlx::query!(
        "with bumped as (
             update agent_state set version = version + 1, updated_at = now()
             where agent_id = $1 and key = $5 and version = $6
             returning version
         )
         insert into commits (task_id, result_id, agent_id, commit_hash,
                              input_state_version, output_state_version)
         select $2, $3, $1, $4, jsonb_build_object($5::text, $6::bigint),
                jsonb_build_object($5::text, b.version)
         from bumped b",
        result.agent_id.0,
        result.task_id.0,
        result.id.0,
        result.commit_hash.as_str(),
        key.as_str(),
        expected.get(),
    )
    .execute(executor)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    Ok(Some(CommitOutcome::Committed {
        input: [(key.clone(), expected)].into(),
        output: [(key.clone(), next)].into(),
    }))
}

/// Commits `result` inside the caller's transaction and marks its task `committed`: the commit
/// of a decision, with the decision's other writes (an approval, a spend, the effect's task),
/// so they all happen or none does. The task's row is locked first: a commit of this result
/// before answers [`CommitOutcome::AlreadyCommitted`], and a conflict leaves the transaction
/// usable (nothing was written) for the caller to roll back.
pub async fn commit_in(
    conn: &mut PgConnection,
    result: &Recorded,
) -> Result<CommitOutcome, CommitError> {
    let outcome = match settlement(&mut *conn, result).await? {
        Some(outcome) => outcome,
        None => write(&mut *conn, result).await?,
    };
    sqlx::query!(
        "update tasks set status = 'committed', updated_at = now() where id = $1",
        result.task_id.0
    )
    .execute(&mut *conn)
    .await?;
    Ok(outcome)
}

/// Any read and write sets, through `occ_commit`.
async fn general_commit<'e>(
    executor: impl PgExecutor<'e>,
    result: &Recorded,
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
        r#"select outcome as "outcome!", input_versions, output_versions, moved as "moved!",
                  committed_result
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
        "settled" => Err(CommitError::TaskSettled {
            committed: row
                .committed_result
                .map(ResultId)
                .ok_or_else(|| CommitError::Unreadable("settled without a result".into()))?,
        }),
        other => Err(CommitError::Unreadable(format!("outcome {other:?}"))),
    }
}

/// What `result`'s task has committed, with its row locked (see [`prior_commit`]). The
/// record is read by a statement after the lock is held, so a commit that finished while this
/// waited for the lock is seen.
async fn settlement(
    conn: &mut PgConnection,
    result: &Recorded,
) -> Result<Option<CommitOutcome>, CommitError> {
    sqlx::query!(
        "select id from tasks where id = $1 for update",
        result.task_id.0
    )
    .fetch_one(&mut *conn)
    .await?;
    prior_commit(&mut *conn, result).await
}

/// What `result`'s task has committed: this result ([`CommitOutcome::AlreadyCommitted`]),
/// nothing yet (`None`), or another result ([`CommitError::TaskSettled`]).
async fn prior_commit<'e>(
    executor: impl PgExecutor<'e>,
    result: &Recorded,
) -> Result<Option<CommitOutcome>, CommitError> {
    let Some(row) = sqlx::query!(
        "select result_id, input_state_version, output_state_version from commits where task_id = $1",
        result.task_id.0,
    )
    .fetch_optional(executor)
    .await?
    else {
        return Ok(None);
    };
    if row.result_id != result.id.0 {
        return Err(CommitError::TaskSettled {
            committed: ResultId(row.result_id),
        });
    }
    Ok(Some(CommitOutcome::AlreadyCommitted {
        input: parse(row.input_state_version)?,
        output: parse(row.output_state_version)?,
    }))
}

/// Reads a JSON value the commit function returned (versions by key, or what moved).
fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, CommitError> {
    serde_json::from_value(value).map_err(|e| CommitError::Unreadable(e.to_string()))
}

/// The task's commit record was there already (its primary key refused a second one).
fn is_committed_before(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.constraint() == Some("commits_pkey"))
}

/// Reads the current versions of `keys` for a task's read set; a key never written is at
/// version 0 (its row is created, so a later commit can lock it).
pub async fn read_versions(
    pool: &PgPool,
    agent: AgentId,
    keys: &[StateKey],
) -> Result<ReadSet, sqlx::Error> {
    // Most tasks read no state (research, drafts, renders, transfers): nothing to ask.
    if keys.is_empty() {
        return Ok(ReadSet::new());
    }
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
