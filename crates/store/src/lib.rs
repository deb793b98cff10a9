//! Chimera's PostgreSQL store (Aurora PostgreSQL in AWS), the system of record.
//!
//! - [`MIGRATOR`] / [`migrate`]: the schema, only ever changed through `migrations/`.
//! - [`connect`]: a pool built once per execution environment.
//! - [`dag`]: a goal's task graph: the plan, release of ready tasks, replans.
//! - [`goals`]: goal submission once per idempotency key, and a goal's progress.
//! - [`records`]: tenants, agents and policies, goals, tasks with dependencies, results.
//! - [`occ`]: commits that check the versions of exactly the state a task read and bump what
//!   it writes, or fail with the keys that moved.
//! - [`judging`]: the judge's decisions (commit with an approved effect, hold, retry, fail),
//!   each one transaction on the task's current attempt, and goal settlement.
//! - [`decisions`]: human decisions on held results, single-shot and bound to the artifact hash
//!   and policy version the reviewer saw.
//! - [`reviews`]: the pending queue, review cards, audit trails, and the sweep that escalates
//!   overdue reviews and rejects by default those past their final deadline.
//! - [`outbox`]: every message a decision causes, written in the decision's transaction and
//!   sent by a relay once it committed.
//! - [`reconcile`]: the sweep's pass over work that stopped moving (re-sends through the
//!   outbox, settles goals), each action audited.
//! - [`budget`]: spends that never overdraw, charged once per idempotency key.
//! - [`audit`]: the append-only audit log.
//! - [`provenance`]: artifacts with the tool calls that made them.
//!
//! Races are settled in SQL (row locks in key order, conditional updates, `ON CONFLICT`), in
//! one statement per operation where it matters, and checked by tests with many writers.

pub mod audit;
pub mod budget;
pub mod dag;
pub mod decisions;
pub mod goals;
pub mod judging;
pub mod occ;
pub mod outbox;
pub mod provenance;
pub mod reconcile;
pub mod records;
pub mod reviews;

use std::time::Duration;

pub use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

/// The migrations in the repository's `migrations/` folder, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Applies every pending migration; applying an up-to-date database is a no-op.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// A pool that connects lazily: building it does no network round trip, so a Lambda's init
/// stays short and the first query opens the first connection.
pub fn connect_lazy(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy(database_url)
}

/// A pool with one connection opened, so a wrong URL or an unreachable server fails here.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
}

/// How many migrations the database has applied successfully.
pub async fn applied_migrations(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(pool)
        .await
}
