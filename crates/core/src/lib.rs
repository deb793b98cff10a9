//! Chimera's domain core: the pure part of the swarm, with no I/O.
//!
//! - [`names`]: the one source of resource names (queues, DLQs, bucket, table) and the queue
//!   settings derived from function timeouts.
//! - [`domain`]: validated newtypes (`Confidence`, `StateVersion`, `StateKey`, `CommitHash`...)
//!   the schema's enums (statuses, decisions, task kinds), and the records that flow through the
//!   swarm: `Goal`, `Task`, `TaskResult`, `AuditRecord`.
//! - [`goal`]: goal kinds and constraints, validated at intake.
//! - [`envelope`]: versioned message envelopes for the goal, task and review queues.
//! - [`effect`]: proposed effects, the `execute` task an approval releases, and what an edit
//!   may change.
//! - [`auth`]: JWT claims, roles and permissions.
//! - [`money`]: the ledger's unit (micros, 10,000 to the cent) and how people see it.
//! - [`gate`]: the judge's own signals: deterministic text checks, suspicious inputs, and
//!   the independent score the worker's claim can only lower.
//! - [`routing`]: the judge's routing policy, a pure function of a result and the agent's
//!   versioned policy.
//!
//! Data moves planner -> task queue (`TaskMessage`) -> worker -> review queue
//! (`ResultMessage`) -> judge, which routes by [`routing::route`] and commits through the
//! store's OCC check, or replans through the goal queue (`PlannerMessage::Replan`).
//! The adapters (`chimera-store` for PostgreSQL, `chimera-aws` for SQS, S3 and DynamoDB)
//! translate between these types and the outside world.

pub mod auth;
pub mod content;
pub mod documents;
pub mod domain;
pub mod effect;
pub mod envelope;
pub mod gate;
pub mod goal;
#[cfg(feature = "logs")]
pub mod logs;
pub mod money;
pub mod names;
pub mod routing;
pub mod schedule;
pub mod trace;
