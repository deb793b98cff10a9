//! Validated values: each newtype checks its invariant where it is built (including when it is
//! deserialized) and refuses a bad value with [`Invalid`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
// The field is `pub(super)` for `TaskResult::compute_commit_hash` (in `work`), which builds a
// hash from a digest; outside `domain` it stays private.
pub struct CommitHash(pub(super) String);

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
