//! The types that flow between planner, worker and judge.
//!
//! Parse, don't validate: every newtype checks its invariant where it is built (including
//! when it is deserialized), so past the edge an invalid confidence, version or key cannot
//! exist.
//!
//! The types live in files by kind, and are all re-exported here (`chimera_core::domain::X`
//! is the one path to use):
//!
//! - `ids`: the id newtypes ([`TenantId`], [`AgentId`], [`GoalId`], [`TaskId`], [`ResultId`],
//!   [`ReviewId`]) and [`derived_uuid`];
//! - `values`: validated values ([`Confidence`], [`StateVersion`], [`StateKey`], [`RiskTag`],
//!   [`CommitHash`]), the [`Invalid`] error, [`ReadSet`] and
//!   [`WriteSet`];
//! - `status`: the schema's enums ([`GoalStatus`], [`TaskStatus`], [`ReviewStatus`],
//!   [`DecisionKind`], [`TaskKind`], [`DisclosureLevel`]), each name written once and mapped to PostgreSQL and JSON;
//! - `work`: [`Goal`], [`Task`], [`ArtifactRef`] and [`TaskResult`], with the commit hash
//!   computed over a result's content;
//! - `review`: the [`AuditRecord`].

mod ids;
mod review;
mod status;
mod values;
mod work;

pub use ids::{AgentId, GoalId, ResultId, ReviewId, TaskId, TenantId, derived_uuid};
pub use review::AuditRecord;
pub use status::{
    DecisionKind, DisclosureLevel, EffectState, GoalStatus, ReviewStatus, TaskKind, TaskStatus,
};
pub use values::{
    CommitHash, Confidence, Invalid, ReadSet, RiskTag, StateKey, StateVersion, WriteSet,
};
pub use work::{ArtifactRef, Goal, Task, TaskResult};
