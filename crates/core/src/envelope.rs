//! Message envelopes for the three queues.
//!
//! Every message body is `{"schema_version": N, "message": {...}}`. The version is read first,
//! so a message from a newer producer is refused as `UnsupportedVersion` rather than
//! misread. Both failures are permanent: a redelivery cannot fix them, so the queue handler
//! reports them failed and the redrive policy dead-letters them.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::{GoalId, ReadSet, ResultId, ReviewId, Task, TaskId, TaskResult};

/// The envelope version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// SQS refuses bodies over 256 KiB; larger payloads are offloaded to S3 and referenced.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<T> {
    pub schema_version: u32,
    pub message: T,
}

/// The goal queue: new goals, and replans from the judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PlannerMessage {
    Goal {
        goal_id: GoalId,
    },
    Replan {
        task_id: TaskId,
        /// The attempt this replan follows: a replan that arrives after its task moved on to
        /// another attempt does nothing (absent in messages written before it was added).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
        feedback: String,
        /// The state versions the judge saw when it refused the commit (a conflict), if any.
        #[serde(default)]
        fresh_versions: ReadSet,
    },
}

/// The task queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskMessage {
    pub task: Task,
}

/// The review queue: a result, where to find one too large for a message, or a held result to
/// judge again under its agent's new policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResultMessage {
    Inline {
        result: TaskResult,
    },
    /// The result's JSON is in the artifact bucket under `s3_key`, with this hash and size.
    Offloaded {
        result_id: ResultId,
        s3_key: String,
        sha256: String,
        size_bytes: u64,
    },
    /// The agent's policy is now `policy_version`: the pending review is judged again under
    /// it (released, held with the new reasons, or rejected by the policy).
    Rejudge {
        review_id: ReviewId,
        policy_version: i32,
    },
}

/// Why a message body could not be read. Never retryable.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message body is not a valid envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("unsupported schema_version {found} (this build reads {SCHEMA_VERSION})")]
    UnsupportedVersion { found: u32 },
    #[error("message body of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
}

/// Wraps a message in the current envelope.
pub fn encode<T: Serialize>(message: &T) -> String {
    #[derive(Serialize)]
    struct Out<'a, T> {
        schema_version: u32,
        message: &'a T,
    }
    // Our message types are plain data with string keys: serializing cannot fail.
    serde_json::to_string(&Out {
        schema_version: SCHEMA_VERSION,
        message,
    })
    .unwrap_or_default()
}

/// Reads an envelope: the version first, then the message.
pub fn decode<T: DeserializeOwned>(body: &str) -> Result<T, EnvelopeError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(EnvelopeError::TooLarge(body.len()));
    }
    #[derive(Deserialize)]
    struct Version {
        schema_version: u32,
    }
    let Version { schema_version } =
        serde_json::from_str(body).map_err(EnvelopeError::Malformed)?;
    if schema_version != SCHEMA_VERSION {
        return Err(EnvelopeError::UnsupportedVersion {
            found: schema_version,
        });
    }
    let envelope: Envelope<T> = serde_json::from_str(body).map_err(EnvelopeError::Malformed)?;
    Ok(envelope.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_through_its_envelope() {
        let msg = PlannerMessage::Goal {
            goal_id: GoalId::random(),
        };
        assert_eq!(decode::<PlannerMessage>(&encode(&msg)).unwrap(), msg);
    }

    #[test]
    fn an_unknown_version_is_refused_before_the_body_is_read() {
        let body = r#"{"schema_version": 2, "message": {"anything": "else"}}"#;
        assert!(matches!(
            decode::<PlannerMessage>(body),
            Err(EnvelopeError::UnsupportedVersion { found: 2 })
        ));
    }

    #[test]
    fn malformed_and_oversized_bodies_are_typed_errors() {
        for body in [
            "",
            "not json",
            "{}",
            r#"{"schema_version": 1}"#,
            r#"{"schema_version": 1, "message": {"type": "goal"}}"#,
        ] {
            assert!(
                matches!(
                    decode::<PlannerMessage>(body),
                    Err(EnvelopeError::Malformed(_))
                ),
                "{body:?}"
            );
        }
        let huge = "x".repeat(MAX_MESSAGE_BYTES + 1);
        assert!(matches!(
            decode::<PlannerMessage>(&huge),
            Err(EnvelopeError::TooLarge(_))
        ));
    }
}
