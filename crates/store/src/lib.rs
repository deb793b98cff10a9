//! Chimera's PostgreSQL store (Aurora PostgreSQL in AWS), the system of record.
//!
//! - [`MIGRATOR`] / [`migrate`]: the schema, only ever changed through `migrations/`.
//! - [`connect`]: a pool built once per execution environment.
//! - [`agents`]: agents onboarded from their documents (SOUL.md, AGENTS.md), and read back
//!   with their versions.
//! - [`fleet`]: every agent of a tenant with what it is doing and what needs a person.
//! - [`dag`]: a goal's task graph: the plan, release of ready tasks, replans.
//! - [`engagement`]: what came back about published posts, in `asset_events` partitions, and
//!   each agent's week for the planner.
//! - [`goals`]: goal submission once per idempotency key, and a goal's progress.
//! - [`schedules`]: recurring goals, one per occurrence of each schedule an agent declares.
//! - [`records`]: tenants, agents and policies, goals, tasks with dependencies, results.
//! - [`occ`]: commits that check the versions of exactly the state a task read and bump what
//!   it writes, or fail with the keys that moved.
//! - [`keys`]: the state keys tasks read and write (a reply its thread, a post its slot), and
//!   the conflicts the scheme intends and those it must not cause.
//! - [`quotas`]: platform quotas reserved at approval as atomic counters; an effect over quota
//!   waits for the next window with room.
//! - [`judging`]: the judge's decisions (commit with an approved effect, hold, retry, fail),
//!   each one transaction on the task's current attempt, and goal settlement.
//! - [`decisions`]: human decisions on held results, single-shot and bound to the artifact hash
//!   and policy version the reviewer saw.
//! - [`reviews`]: what reviewers read: the pending queue, review cards, audit trails,
//!   notifications.
//! - [`sweep`]: the sweep that escalates overdue reviews and rejects by default those past
//!   their final deadline (also re-exported from [`reviews`]).
//! - [`rejudge`]: held items judged again when their agent's policy changes.
//! - [`tenants`]: tenants created and listed.
//! - [`streams`]: leases on open goal event streams, a capped number per caller.
//! - [`outbox`]: every message a decision causes, written in the decision's transaction and
//!   sent by a relay once it committed.
//! - [`reconcile`]: the sweep's pass over work that stopped moving (re-sends through the
//!   outbox, settles goals), each action audited.
//! - [`effects`]: the effect ledger: each approved effect from before it reaches its platform
//!   to the platform's id for it; an outcome the platform left unknown is looked up, never
//!   blindly sent again.
//! - [`wallets`]: agents' wallets against the chain: settled transfers as approved, and what
//!   the reconciler last found (a difference audited once).
//! - [`budget`]: spends that never overdraw, charged once per idempotency key.
//! - [`audit`]: the append-only audit log.
//! - [`provenance`]: artifacts with the tool calls that made them.
//!
//! Races are settled in SQL (row locks in key order, conditional updates, `ON CONFLICT`), in
//! one statement per operation where it matters, and checked by tests with many writers.

pub mod agents;
pub mod audit;
pub mod budget;
pub mod dag;
pub mod decisions;
pub mod effects;
pub mod engagement;
pub mod fleet;
pub mod goals;
pub mod judging;
pub mod keys;
pub mod memories;
pub mod meter;
pub mod occ;
pub mod outbox;
pub mod provenance;
pub mod published;
pub mod quotas;
pub mod reconcile;
pub mod records;
pub mod rejudge;
pub mod reviews;
pub mod schedules;
pub mod streams;
pub mod sweep;
pub mod tenants;
pub mod wallets;

use std::time::Duration;

pub use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The migrations in the repository's `migrations/` folder, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Applies every pending migration; applying an up-to-date database is a no-op.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// What to do about a migration error a developer can meet with an old local database, if
/// anything: the migrations were squashed into one baseline on 2026-11-28 (nothing was
/// deployed), so a database made before has versions this build does not know.
pub fn migration_hint(err: &sqlx::migrate::MigrateError) -> Option<&'static str> {
    use sqlx::migrate::MigrateError;
    match err {
        MigrateError::VersionMissing(_) | MigrateError::VersionMismatch(_) => Some(
            "this database was migrated by another version of migrations/ (before the \
             2026-11-28 baseline, or with a migration edited since); a local database is \
             recreated with: scripts/stack down && rm -rf .local/pg && scripts/stack up",
        ),
        _ => None,
    }
}

/// A connection idle at least this long is pinged before it is handed out; one used more
/// recently, as the statements of one handler use theirs, is not (a round trip per acquire
/// was a third of a task's own time). A restart of the database takes longer than this (0.6 s
/// or more), so every connection it broke is pinged, found dead and replaced.
pub const PING_IDLE_AFTER: Duration = Duration::from_millis(100);

/// The pool's options: at most `max_connections`, 10 s to get one, and a connection idle
/// [`PING_IDLE_AFTER`] or more pinged before use. A connection that dies between two uses
/// closer together than that fails its statement, which callers treat as the database being
/// unavailable (retried or redelivered).
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// A pool that connects lazily: building it does no network round trip, so a Lambda's init
/// stays short and the first query opens the first connection.
pub fn connect_lazy(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    pool_options(max_connections).connect_lazy(database_url)
}

/// A pool with one connection opened, so a wrong URL or an unreachable server fails here.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    pool_options(max_connections).connect(database_url).await
}

/// The database role a function works as: migration 20 grants each only what its function
/// does; the migrations' runner owns the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbRole {
    Planner,
    Worker,
    Judge,
    /// The HITL API.
    Api,
    /// The scheduled sweep (review deadlines, the reconciler, recurring goals, wallets, the
    /// outbox).
    Sweep,
}

impl DbRole {
    pub const ALL: [DbRole; 5] = [
        DbRole::Planner,
        DbRole::Worker,
        DbRole::Judge,
        DbRole::Api,
        DbRole::Sweep,
    ];

    /// The role's name in PostgreSQL.
    pub fn name(self) -> &'static str {
        match self {
            DbRole::Planner => "chimera_planner",
            DbRole::Worker => "chimera_worker",
            DbRole::Judge => "chimera_judge",
            DbRole::Api => "chimera_api",
            DbRole::Sweep => "chimera_sweep",
        }
    }
}

/// Connection options for `database_url` working as `role`. A login of the role's own name
/// (as deployed: the function's secret) connects as is; any other login (the owner, locally)
/// takes the role as it connects (`role` as a startup option, as `SET ROLE` would), so its
/// statements have the role's privileges only. A login that may not take the role fails to
/// connect, saying so.
pub fn options_as(database_url: &str, role: DbRole) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = database_url.parse()?;
    if options.get_username() == role.name() {
        return Ok(options);
    }
    Ok(options.options([("role", role.name())]))
}

/// Gives each function's role the login of its secret (`LOGIN PASSWORD`), as `migrate` does
/// once the migrations ran; a name that is no function's role is refused before anything
/// changes. Returns the roles given a login.
pub async fn grant_logins(
    pool: &PgPool,
    logins: &[(String, String)],
) -> Result<Vec<DbRole>, LoginError> {
    let mut roles = Vec::new();
    for (username, _) in logins {
        let role = DbRole::ALL
            .into_iter()
            .find(|r| r.name() == username)
            .ok_or_else(|| LoginError::UnknownRole(username.clone()))?;
        roles.push(role);
    }
    let mut tx = pool.begin().await?;
    for (username, password) in logins {
        // ALTER ROLE takes no parameters: the statement is built by format() (%I, %L quote).
        let statement: String = sqlx::query_scalar!(
            r#"select format('alter role %I with login password %L', $1::text, $2::text) as "s!""#,
            username,
            password,
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(roles)
}

/// Why the functions' logins were not given.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(
        "{0} is no function's database role (chimera_planner, chimera_worker, chimera_judge, chimera_api, chimera_sweep)"
    )]
    UnknownRole(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One pool per function, each working as the function's role: the local runner and the
/// tests' swarms host every function in one process, as the deployed functions do apart.
#[derive(Debug, Clone)]
pub struct RolePools {
    pub planner: PgPool,
    pub worker: PgPool,
    pub judge: PgPool,
    pub api: PgPool,
    pub sweep: PgPool,
}

impl RolePools {
    /// Each role's pool, made by `pool`.
    pub fn try_new<E>(mut pool: impl FnMut(DbRole) -> Result<PgPool, E>) -> Result<Self, E> {
        Ok(RolePools {
            planner: pool(DbRole::Planner)?,
            worker: pool(DbRole::Worker)?,
            judge: pool(DbRole::Judge)?,
            api: pool(DbRole::Api)?,
            sweep: pool(DbRole::Sweep)?,
        })
    }

    /// The pool working as `role`.
    pub fn get(&self, role: DbRole) -> &PgPool {
        match role {
            DbRole::Planner => &self.planner,
            DbRole::Worker => &self.worker,
            DbRole::Judge => &self.judge,
            DbRole::Api => &self.api,
            DbRole::Sweep => &self.sweep,
        }
    }
}

/// [`connect_lazy`] working as `role` ([`options_as`]).
pub fn connect_lazy_as(
    database_url: &str,
    max_connections: u32,
    role: DbRole,
) -> Result<PgPool, sqlx::Error> {
    Ok(pool_options(max_connections).connect_lazy_with(options_as(database_url, role)?))
}

/// [`connect`] working as `role` ([`options_as`]).
pub async fn connect_as(
    database_url: &str,
    max_connections: u32,
    role: DbRole,
) -> Result<PgPool, sqlx::Error> {
    pool_options(max_connections)
        .connect_with(options_as(database_url, role)?)
        .await
}

/// How many migrations the database has applied successfully.
pub async fn applied_migrations(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(pool)
        .await
}

/// What a database error means for whoever caused the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The database is unreachable, restarting, overloaded or asked us to retry: trying again
    /// later can succeed.
    Unavailable,
    /// The input holds a value the database cannot store (text with a NUL character, a
    /// character with no equivalent in the encoding): the same input fails again.
    BadInput,
    /// Anything else: a fault of ours (a constraint our code broke, a row it cannot decode).
    Internal,
}

/// Sorts a database error (see [`Fault`]).
pub fn fault(err: &sqlx::Error) -> Fault {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => Fault::Unavailable,
        sqlx::Error::Database(db) => match db.code().as_deref().unwrap_or_default() {
            // character_not_in_repertoire (a NUL in text), untranslatable_character
            "22021" | "22P05" => Fault::BadInput,
            // serialization_failure, deadlock_detected, lock_not_available
            "40001" | "40P01" | "55P03" => Fault::Unavailable,
            // connection exceptions, insufficient resources, operator intervention (shutdown,
            // restart), system errors
            code if ["08", "53", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class)) =>
            {
                Fault::Unavailable
            }
            _ => Fault::Internal,
        },
        _ => Fault::Internal,
    }
}
