//! Work: goals, the tasks a plan makes of them, and the results workers produce, with the
//! commit hash that binds a result's content.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    AgentId, CommitHash, Confidence, DisclosureLevel, GoalId, ReadSet, ResultId, ReviewId, RiskTag,
    TaskId, TaskKind, TenantId, WriteSet,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{StateKey, StateVersion};

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
