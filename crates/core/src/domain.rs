//! The types that flow between planner, worker and judge.
//!
//! Parse, don't validate: every newtype checks its invariant where it is built (including
//! when it is deserialized), so past the edge an invalid confidence, version or key cannot
//! exist.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn random() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

id_type!(TenantId, AgentId, GoalId, TaskId, ResultId, ReviewId,);

/// A name-based id: the same name always gives the same id (a v8 UUID over SHA-256), so work
/// that runs again derives the ids it derived the first time.
pub fn derived_uuid(name: &str) -> Uuid {
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// A value refused at the edge, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct Invalid {
    pub what: &'static str,
    pub reason: String,
}

impl Invalid {
    fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self {
            what,
            reason: reason.into(),
        }
    }
}

/// How sure a worker is of its result: a finite number in `0..=1`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "f64", into = "f64")]
pub struct Confidence(f64);

impl Confidence {
    pub fn value(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Confidence {
    type Error = Invalid;
    fn try_from(value: f64) -> Result<Self, Invalid> {
        if value.is_finite() && (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(Invalid::new(
                "confidence",
                format!("{value} is not a number from 0 to 1"),
            ))
        }
    }
}

impl From<Confidence> for f64 {
    fn from(c: Confidence) -> f64 {
        c.0
    }
}

/// The version of one piece of agent state; starts at 0, bumped by every commit that writes it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct StateVersion(i64);

impl StateVersion {
    pub const INITIAL: StateVersion = StateVersion(0);

    pub fn get(self) -> i64 {
        self.0
    }

    pub fn next(self) -> StateVersion {
        StateVersion(self.0 + 1)
    }
}

impl TryFrom<i64> for StateVersion {
    type Error = Invalid;
    fn try_from(value: i64) -> Result<Self, Invalid> {
        if value >= 0 {
            Ok(Self(value))
        } else {
            Err(Invalid::new(
                "state version",
                format!("{value} is negative"),
            ))
        }
    }
}

impl From<StateVersion> for i64 {
    fn from(v: StateVersion) -> i64 {
        v.0
    }
}

/// The name of one piece of an agent's state (`persona`, `calendar:instagram`, `wallet`...):
/// 1-128 characters of `a-z 0-9 _ . : -`, starting with a letter (the schema checks the same).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct StateKey(String);

impl StateKey {
    pub fn parse(raw: impl Into<String>) -> Result<Self, Invalid> {
        let raw = raw.into();
        let ok = (1..=128).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.:-".contains(c));
        if ok {
            Ok(Self(raw))
        } else {
            Err(Invalid::new(
                "state key",
                format!(
                    "{raw:?} is not 1-128 characters of a-z 0-9 _ . : - starting with a letter"
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StateKey {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        Self::parse(raw)
    }
}

impl From<StateKey> for String {
    fn from(k: StateKey) -> String {
        k.0
    }
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The state a task read, with the version of each key at the time: what OCC checks.
pub type ReadSet = BTreeMap<StateKey, StateVersion>;
/// The state a task's commit writes: what OCC bumps.
pub type WriteSet = BTreeSet<StateKey>;

/// A risk tag a worker or the judge attached to a result (`politics`, `health`, `finance`...):
/// lowercase, 1-64 characters of `a-z 0-9 _ -`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct RiskTag(String);

impl RiskTag {
    pub fn parse(raw: impl Into<String>) -> Result<Self, Invalid> {
        let raw = raw.into();
        let ok = (1..=64).contains(&raw.len())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(Self(raw))
        } else {
            Err(Invalid::new(
                "risk tag",
                format!("{raw:?} is not 1-64 characters of a-z 0-9 _ -"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RiskTag {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        Self::parse(raw)
    }
}

impl From<RiskTag> for String {
    fn from(t: RiskTag) -> String {
        t.0
    }
}

/// A hex SHA-256 over a result's artifact and metadata.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct CommitHash(String);

impl CommitHash {
    pub fn parse(raw: impl Into<String>) -> Result<Self, Invalid> {
        let raw = raw.into();
        if raw.len() == 64
            && raw
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            Ok(Self(raw))
        } else {
            Err(Invalid::new(
                "commit hash",
                "expected 64 lowercase hex digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CommitHash {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        Self::parse(raw)
    }
}

impl From<CommitHash> for String {
    fn from(h: CommitHash) -> String {
        h.0
    }
}

impl fmt::Display for CommitHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a task does. Mirrors the `task_kind` enum of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Research,
    Draft,
    RenderMedia,
    /// Prepares a post; publishing itself is an `Execute` task released by an approval.
    Publish,
    /// Prepares a reply; sending it is an `Execute` task.
    Reply,
    /// Prepares a payment or transfer; moving money is an `Execute` task.
    Transact,
    /// Performs an approved external effect, with the approval as idempotency key.
    Execute,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Research => "research",
            Self::Draft => "draft",
            Self::RenderMedia => "render_media",
            Self::Publish => "publish",
            Self::Reply => "reply",
            Self::Transact => "transact",
            Self::Execute => "execute",
        }
    }

    /// Actions that put content in front of an audience: they need a disclosure level.
    /// The kind named `name` (as [`TaskKind::as_str`] writes it).
    pub fn parse(name: &str) -> Option<TaskKind> {
        [
            Self::Research,
            Self::Draft,
            Self::RenderMedia,
            Self::Publish,
            Self::Reply,
            Self::Transact,
            Self::Execute,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }

    pub fn is_publishing(self) -> bool {
        matches!(self, Self::Publish | Self::Reply)
    }

    /// Actions that move money: the CFO judge checks them against the budget.
    pub fn is_financial(self) -> bool {
        matches!(self, Self::Transact)
    }
}

/// How a publishing action discloses automation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisclosureLevel {
    Automated,
    Assisted,
    None,
}

impl DisclosureLevel {
    /// The level named `name` (as [`DisclosureLevel::as_str`] writes it).
    pub fn parse(name: &str) -> Option<DisclosureLevel> {
        [Self::Automated, Self::Assisted, Self::None]
            .into_iter()
            .find(|l| l.as_str() == name)
    }

    /// The schema's `disclosure_level` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Automated => "automated",
            Self::Assisted => "assisted",
            Self::None => "none",
        }
    }
}

/// One artifact of a result: inline text, or a blob in S3 under a content-addressed key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactRef {
    pub media_type: String,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    pub size_bytes: u64,
    /// The S3 key when the bytes are in the artifact bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_key: Option<String>,
    /// The text itself, for small text artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

/// A goal as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Goal {
    pub id: GoalId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub kind: String,
    pub body: String,
    #[serde(default)]
    pub constraints: serde_json::Map<String, serde_json::Value>,
}

/// An atomic unit of work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    pub id: TaskId,
    pub goal_id: GoalId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub kind: TaskKind,
    /// 1 for the first try; a replan increments it.
    pub attempt: u32,
    #[serde(default)]
    pub inputs: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub depends_on: Vec<TaskId>,
    /// The state the planner read for this task, with versions.
    #[serde(default)]
    pub read_set: ReadSet,
    /// The state a commit of this task's result writes.
    #[serde(default)]
    pub write_set: WriteSet,
    /// The judge's feedback from the previous attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// For `Execute` tasks: the approval that released the effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<ReviewId>,
}

/// What a worker produced for one task attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskResult {
    pub id: ResultId,
    pub task_id: TaskId,
    pub goal_id: GoalId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub task_kind: TaskKind,
    pub attempt: u32,
    pub artifacts: Vec<ArtifactRef>,
    pub confidence_score: Confidence,
    #[serde(default)]
    pub risk_tags: BTreeSet<RiskTag>,
    /// Required for publishing actions to ever auto-approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disclosure_level: Option<DisclosureLevel>,
    pub read_set: ReadSet,
    #[serde(default)]
    pub write_set: WriteSet,
    pub commit_hash: CommitHash,
}

/// The part of a result the commit hash covers: the artifact and its metadata, not the ids of
/// the message that carried it.
#[derive(Serialize)]
struct HashedContent<'a> {
    task_id: TaskId,
    attempt: u32,
    task_kind: TaskKind,
    artifacts: &'a [ArtifactRef],
    confidence_score: f64,
    risk_tags: &'a BTreeSet<RiskTag>,
    disclosure_level: Option<DisclosureLevel>,
    read_set: &'a ReadSet,
    write_set: &'a WriteSet,
}

impl TaskResult {
    /// SHA-256 over the canonical JSON of the artifact and metadata (struct fields in a fixed
    /// order, maps and sets sorted), so equal content always hashes equal.
    pub fn compute_commit_hash(&self) -> CommitHash {
        let content = HashedContent {
            task_id: self.task_id,
            attempt: self.attempt,
            task_kind: self.task_kind,
            artifacts: &self.artifacts,
            confidence_score: self.confidence_score.value(),
            risk_tags: &self.risk_tags,
            disclosure_level: self.disclosure_level,
            read_set: &self.read_set,
            write_set: &self.write_set,
        };
        // Serializing plain data to a Vec cannot fail.
        let bytes = serde_json::to_vec(&content).unwrap_or_default();
        CommitHash(hex::encode(Sha256::digest(bytes)))
    }

    /// True when the carried hash matches the content: a result altered in flight is refused.
    pub fn commit_hash_matches(&self) -> bool {
        self.compute_commit_hash() == self.commit_hash
    }
}

/// Where a review stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
}

/// A decision about a result, by the judge or a human. Mirrors `decision_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    AutoApprove,
    Approve,
    EditApprove,
    Reject,
    Retry,
    Escalate,
    DefaultReject,
    Fail,
}

/// A result held for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Review {
    pub id: ReviewId,
    pub tenant_id: TenantId,
    pub result_id: ResultId,
    pub status: ReviewStatus,
    pub artifact_hash: CommitHash,
    pub policy_version: i32,
    pub judge_reasoning: String,
    pub risk_tags: BTreeSet<RiskTag>,
    pub confidence: Confidence,
    pub due_at: DateTime<Utc>,
    pub final_deadline: DateTime<Utc>,
}

/// A decision as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Decision {
    pub kind: DecisionKind,
    /// A reviewer's subject, or `judge` / `system`.
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
    /// The artifact hash the decision names: approvals are bound to what was reviewed.
    pub artifact_hash: CommitHash,
    pub policy_version: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One append-only audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditRecord {
    pub tenant_id: TenantId,
    pub actor: String,
    pub action: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal_id: Option<GoalId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_id: Option<ReviewId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_hash: Option<CommitHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_artifact_hash: Option<CommitHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> TaskResult {
        let mut r = TaskResult {
            id: ResultId::random(),
            task_id: TaskId::random(),
            goal_id: GoalId::random(),
            tenant_id: TenantId::random(),
            agent_id: AgentId::random(),
            task_kind: TaskKind::Draft,
            attempt: 1,
            artifacts: vec![ArtifactRef {
                media_type: "text/plain".into(),
                sha256: hex::encode(Sha256::digest(b"hello")),
                size_bytes: 5,
                s3_key: None,
                inline: Some("hello".into()),
            }],
            confidence_score: Confidence::try_from(0.95).unwrap(),
            risk_tags: BTreeSet::new(),
            disclosure_level: None,
            read_set: [(StateKey::parse("persona").unwrap(), StateVersion::INITIAL)].into(),
            write_set: [StateKey::parse("calendar:instagram").unwrap()].into(),
            commit_hash: CommitHash::parse("0".repeat(64)).unwrap(),
        };
        r.commit_hash = r.compute_commit_hash();
        r
    }

    #[test]
    fn out_of_range_values_are_refused_when_deserialized() {
        assert!(serde_json::from_str::<Confidence>("1.5").is_err());
        assert!(serde_json::from_str::<Confidence>("-0.1").is_err());
        assert!(serde_json::from_str::<Confidence>("0.7").is_ok());
        assert!(Confidence::try_from(f64::NAN).is_err());
        assert!(serde_json::from_str::<StateVersion>("-1").is_err());
        assert!(serde_json::from_str::<StateKey>("\"Persona\"").is_err());
        assert!(serde_json::from_str::<StateKey>("\"calendar:x\"").is_ok());
        assert!(serde_json::from_str::<CommitHash>("\"abc\"").is_err());
        assert!(serde_json::from_str::<RiskTag>("\"Politics\"").is_err());
    }

    #[test]
    fn the_commit_hash_covers_artifact_and_metadata_but_not_message_ids() {
        let r = result();
        assert!(r.commit_hash_matches());
        let mut same_content = r.clone();
        same_content.id = ResultId::random();
        assert_eq!(same_content.compute_commit_hash(), r.commit_hash);
        let mut changed = r.clone();
        changed.artifacts[0].inline = Some("hellO".into());
        assert_ne!(changed.compute_commit_hash(), r.commit_hash);
        let mut rescored = r.clone();
        rescored.confidence_score = Confidence::try_from(0.5).unwrap();
        assert!(!rescored.commit_hash_matches());
    }

    #[test]
    fn a_result_round_trips_through_json() {
        let r = result();
        let json = serde_json::to_string(&r).unwrap();
        let back: TaskResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert!(back.commit_hash_matches());
    }
}
