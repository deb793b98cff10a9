//! What a goal may ask for: its kind and its constraints, validated where goals come in.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Goal kinds the default planner knows how to decompose.
pub const GOAL_KINDS: [&str; 3] = ["campaign", "reply", "paid_action"];

/// Platforms a post can go to.
pub const PLATFORMS: [&str; 6] = ["x", "threads", "bluesky", "instagram", "tiktok", "linkedin"];

/// The limits and targets of a goal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Where to publish (campaign: one draft and one post per platform; reply: the first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// The most the goal may spend, in cents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_cents: Option<i64>,
    /// paid_action: who is paid and how much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_cents: Option<i64>,
    /// reply: the post being answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// campaign: the content slot its posts fill (`2026-12-01-morning`); campaigns naming the
    /// same slot on a platform compete for it, and the later one is replanned. Absent: the
    /// goal's own slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

impl Constraints {
    /// Whether these constraints make sense for a goal of `kind`; the reason if not.
    pub fn validate(&self, kind: &str) -> Result<(), String> {
        if !GOAL_KINDS.contains(&kind) {
            return Err(format!("kind must be one of {GOAL_KINDS:?}"));
        }
        if self.platforms.len() > PLATFORMS.len() {
            return Err("too many platforms".into());
        }
        for p in &self.platforms {
            if !PLATFORMS.contains(&p.as_str()) {
                return Err(format!("unknown platform {p:?} (known: {PLATFORMS:?})"));
            }
        }
        if self.budget_cents.is_some_and(|b| b < 0) {
            return Err("budget_cents must not be negative".into());
        }
        if self.amount_cents.is_some_and(|a| a <= 0) {
            return Err("amount_cents must be positive".into());
        }
        let short = |v: &Option<String>| v.as_ref().is_some_and(|s| s.is_empty() || s.len() > 200);
        if short(&self.pay_to) || short(&self.in_reply_to) {
            return Err("pay_to and in_reply_to must be 1..=200 characters".into());
        }
        if let Some(slot) = &self.slot {
            let ok = (1..=48).contains(&slot.len())
                && slot.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && slot
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
            if !ok {
                return Err(
                    "slot must be 1..=48 characters of a-z 0-9 _ . - starting with a letter or digit"
                        .into(),
                );
            }
            if kind != "campaign" {
                return Err("only a campaign fills a slot".into());
            }
        }
        match kind {
            "paid_action" if self.pay_to.is_none() || self.amount_cents.is_none() => {
                Err("a paid_action needs pay_to and amount_cents".into())
            }
            "reply" if self.in_reply_to.is_none() => Err("a reply needs in_reply_to".into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_are_checked_against_the_goal_kind() {
        let ok = Constraints {
            platforms: vec!["x".into(), "instagram".into()],
            ..Default::default()
        };
        assert!(ok.validate("campaign").is_ok());
        assert!(ok.validate("party").is_err());
        assert!(ok.validate("reply").is_err(), "a reply needs in_reply_to");
        let bad_platform = Constraints {
            platforms: vec!["myspace".into()],
            ..Default::default()
        };
        assert!(bad_platform.validate("campaign").is_err());
        let pay = Constraints {
            pay_to: Some("studio".into()),
            amount_cents: Some(0),
            ..Default::default()
        };
        assert!(pay.validate("paid_action").is_err());
        // Simulation knobs are not part of the goal API.
        let knob: Result<Constraints, _> =
            serde_json::from_value(serde_json::json!({"simulated_quality": 0.9}));
        assert!(knob.is_err());
    }
}
