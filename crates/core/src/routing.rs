//! The judge's routing policy: a pure function of a result and the agent's policy.
//!
//! | condition (checked in this order)                                   | route             |
//! |---------------------------------------------------------------------|-------------------|
//! | a failed policy/quality check, or score < review threshold          | retry, or fail and surface to humans once attempts are spent |
//! | intermediate work (research, draft, render)                         | auto-approve      |
//! | any risk tag among the policy's sensitive topics                    | human review      |
//! | no independent score (no embedder, no model, or their reading failed) | human review    |
//! | score <= auto-approve threshold (0.70..=0.90 by default)            | human review      |
//! | a publishing action without a disclosure level                      | human review      |
//! | untrusted inputs that read as instructions or spam                  | human review      |
//! | a payment beyond the admin's auto-pay limit (none by default)       | human review      |
//! | otherwise (score > 0.90, not sensitive, disclosed)                  | auto-approve      |
//!
//! The score is the judge's own ([`crate::gate::Signals`]): similarity to the brief and the
//! persona, and the model's rubric where one is configured; the worker's claim can only lower
//! it.
//! Humans approve effects, not intermediate work: research, drafts and renders are never held;
//! their risk tags travel with the work to the effect proposal (publish, reply, transfer),
//! which is routed here. A low-scoring result is retried before anyone sees it, even when it
//! is also sensitive: a human reviews the best attempt, not the first. When attempts run out
//! it is surfaced to humans as failed.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::content::Lexicon;
use crate::domain::{Confidence, DisclosureLevel, Invalid, RiskTag, TaskKind};
use crate::effect::expected_action;

/// A similarity threshold: below `min` a text fails; at `sure` and above it scores 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Similarity {
    pub min: f64,
    pub sure: f64,
}

/// The similarity thresholds the judge's embeddings are held to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarityPolicy {
    /// The text against its brief. all-MiniLM-L6-v2 puts a post on its brief's subject at
    /// about 0.3-0.8 and an unrelated one below 0.15.
    #[serde(default = "default_on_topic")]
    pub on_topic: Similarity,
    /// The text against the persona's examples (when it has some). Topic dominates these
    /// models' similarity, so the default minimum only catches a text in no way like them.
    #[serde(default = "default_on_voice")]
    pub on_voice: Similarity,
}

fn default_on_topic() -> Similarity {
    Similarity {
        min: 0.20,
        sure: 0.45,
    }
}

fn default_on_voice() -> Similarity {
    Similarity {
        min: 0.0,
        sure: 0.25,
    }
}

impl Default for SimilarityPolicy {
    fn default() -> Self {
        Self {
            on_topic: default_on_topic(),
            on_voice: default_on_voice(),
        }
    }
}

/// The lowest `similarity.on_topic.min` a policy may set: below it, any text would pass as on
/// its brief and the similarity would score on the worker's claim alone.
pub const MIN_ON_TOPIC: f64 = 0.1;

impl Similarity {
    /// `floor`: the lowest `min` allowed.
    fn validate(&self, what: &str, floor: f64) -> Result<(), String> {
        let ok = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        if !ok(self.min) || !ok(self.sure) {
            return Err(format!("{what}: min and sure are similarities from 0 to 1"));
        }
        if self.min < floor {
            return Err(format!("{what}.min must be at least {floor}"));
        }
        if self.sure < self.min + 0.1 {
            return Err(format!("{what}.sure must be at least min + 0.1"));
        }
        Ok(())
    }
}

/// An agent's routing policy, versioned: results are judged under one version and a human
/// decision names the version it saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Policy {
    pub version: i32,
    /// Strictly above this, a result may auto-approve (default 0.90).
    pub auto_approve_above: Confidence,
    /// At or above this (and not above `auto_approve_above`), a human reviews (default 0.70);
    /// below it, the task is retried.
    pub review_at_or_above: Confidence,
    /// Risk tags that always need a human.
    pub sensitive_topics: BTreeSet<RiskTag>,
    /// Attempts per task, the first included.
    pub max_attempts: u32,
    /// Seconds a review may wait before it is escalated.
    pub review_due_secs: u32,
    /// Seconds after which an unreviewed item takes the policy's default decision.
    pub review_final_secs: u32,
    /// Phrases no post may contain (case-insensitive, whole words).
    #[serde(default = "default_banned_phrases")]
    pub banned_phrases: Vec<String>,
    /// The words that reveal each sensitive topic; the judge classifies every text with it.
    #[serde(default)]
    pub topic_lexicon: Lexicon,
    /// Hosts a post may link to (and their subdomains); `None`: any `https` link. A link of
    /// any other scheme always fails the check.
    #[serde(default)]
    pub link_hosts: Option<Vec<String>>,
    /// The similarity thresholds of the judge's own score.
    #[serde(default)]
    pub similarity: SimilarityPolicy,
    /// The disclosure every post the agent publishes carries.
    #[serde(default = "default_disclosure")]
    pub disclosure: DisclosureLevel,
    /// The text every post must carry to disclose automation (`#automated`, "AI-assisted"):
    /// the drafter adds it, the judge checks it is there (case-insensitive).
    #[serde(default)]
    pub disclosure_text: Option<String>,
    /// Posting limits per platform (`x`, `instagram`...); a platform not named has the
    /// platform's own defaults.
    #[serde(default)]
    pub quotas: BTreeMap<String, Quota>,
    #[serde(default)]
    pub spend: SpendLimits,
    /// The model this agent's work uses instead of the stage's, and its price.
    #[serde(default)]
    pub model: Option<ModelChoice>,
    /// Recurring goals: each occurrence of each schedule submits one goal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<crate::schedule::Schedule>,
}

fn default_disclosure() -> DisclosureLevel {
    DisclosureLevel::Automated
}

/// An agent's posting limits on one platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub posts_per_day: Option<u32>,
    pub replies_per_hour: Option<u32>,
}

/// What an agent may pay, in cents; `None`: no limit beyond its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendLimits {
    pub per_transfer_cents: Option<u64>,
    pub per_day_cents: Option<u64>,
    /// What the agent may pay in a day without a person's approval; `None` (the default):
    /// every payment waits for a person. Only a tenant's admin sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pay_per_day_cents: Option<u64>,
}

/// The most any limit may say, in cents (a million dollars): a larger one is a mistake.
pub const MAX_LIMIT_CENTS: u64 = 100_000_000;

/// A model chosen by an agent's policy, with its price when the stage's table lacks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelChoice {
    pub id: String,
    #[serde(default)]
    pub price: Option<ModelPrice>,
}

/// A model's price in cents per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_cents_per_mtok: f64,
    pub output_cents_per_mtok: f64,
}

fn default_banned_phrases() -> Vec<String> {
    [
        "guaranteed returns",
        "risk-free",
        "miracle cure",
        "get rich quick",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

impl Policy {
    /// Checks the thresholds are ordered and the limits sensible.
    pub fn validate(&self) -> Result<(), Invalid> {
        let fail = |reason: &str| {
            Err(Invalid {
                what: "policy",
                reason: reason.to_owned(),
            })
        };
        if self.version < 1 {
            return fail("version must be >= 1");
        }
        if self.review_at_or_above > self.auto_approve_above {
            return fail("review_at_or_above must not exceed auto_approve_above");
        }
        if !(1..=20).contains(&self.max_attempts) {
            return fail("max_attempts must be from 1 to 20");
        }
        if self.review_final_secs < self.review_due_secs {
            return fail("review_final_secs must be >= review_due_secs");
        }
        let limits = [
            ("spend.per_transfer_cents", self.spend.per_transfer_cents),
            ("spend.per_day_cents", self.spend.per_day_cents),
            (
                "spend.auto_pay_per_day_cents",
                self.spend.auto_pay_per_day_cents,
            ),
        ];
        for (field, limit) in limits {
            if limit.is_some_and(|c| c > MAX_LIMIT_CENTS) {
                return fail(&format!("{field} must be at most {MAX_LIMIT_CENTS}"));
            }
        }
        if let (Some(auto), Some(day)) =
            (self.spend.auto_pay_per_day_cents, self.spend.per_day_cents)
            && auto > day
        {
            return fail("spend.auto_pay_per_day_cents must not exceed spend.per_day_cents");
        }
        self.similarity
            .on_topic
            .validate("similarity.on_topic", MIN_ON_TOPIC)
            .or_else(|reason| fail(&reason))?;
        self.similarity
            .on_voice
            .validate("similarity.on_voice", 0.0)
            .or_else(|reason| fail(&reason))?;
        if self
            .disclosure_text
            .as_deref()
            .is_some_and(|t| t.trim().is_empty() || t.chars().count() > 40)
        {
            return fail("disclosure_text must be 1-40 characters");
        }
        if let Some(price) = self.model.as_ref().and_then(|m| m.price) {
            let fine = |v: f64| v.is_finite() && v >= 0.0;
            if !fine(price.input_cents_per_mtok) || !fine(price.output_cents_per_mtok) {
                return fail("model prices must be finite and not negative");
            }
        }
        if self.schedules.len() > 20 {
            return fail("at most 20 schedules");
        }
        let mut names = BTreeSet::new();
        for schedule in &self.schedules {
            schedule.validate().map_err(|reason| Invalid {
                what: "policy",
                reason,
            })?;
            if !names.insert(schedule.name.as_str()) {
                return fail(&format!("two schedules are named {:?}", schedule.name));
            }
        }
        Ok(())
    }
}

impl Default for Policy {
    fn default() -> Self {
        let tags = ["politics", "health", "finance", "religion", "minors"];
        Self {
            version: 1,
            auto_approve_above: Confidence::try_from(0.90).unwrap_or_else(|_| unreachable!()),
            review_at_or_above: Confidence::try_from(0.70).unwrap_or_else(|_| unreachable!()),
            sensitive_topics: tags
                .into_iter()
                .filter_map(|t| RiskTag::parse(t).ok())
                .collect(),
            max_attempts: 3,
            review_due_secs: 4 * 3600,
            review_final_secs: 24 * 3600,
            banned_phrases: default_banned_phrases(),
            topic_lexicon: Lexicon::default(),
            link_hosts: None,
            similarity: SimilarityPolicy::default(),
            disclosure: default_disclosure(),
            disclosure_text: None,
            quotas: BTreeMap::new(),
            spend: SpendLimits::default(),
            model: None,
            schedules: Vec::new(),
        }
    }
}

/// What the judge knows about a result when it routes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment<'a> {
    pub task_kind: TaskKind,
    /// The score that routes: the judge's own (see [`crate::gate::Signals`]), or the worker's
    /// claim where nothing independent scored (then `scored` is false).
    pub confidence: Confidence,
    /// Whether a signal the worker does not control scored the result.
    pub scored: bool,
    /// Instruction-like text or spam found in the untrusted inputs that shaped the result.
    pub suspicious: &'a [String],
    /// A payment within the admin's auto-pay limit for the day.
    pub auto_pay: bool,
    pub risk_tags: &'a BTreeSet<RiskTag>,
    pub disclosure_level: Option<DisclosureLevel>,
    /// The attempt that produced the result (1-based).
    pub attempt: u32,
    /// Failures of the schema, policy, persona or quality checks, in words.
    pub failed_checks: &'a [String],
}

/// Why a result goes to a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ReviewReason {
    Sensitive {
        tags: Vec<String>,
    },
    MediumConfidence,
    MissingDisclosure,
    /// Nothing but the worker's claim scored the effect.
    Unscored,
    /// The untrusted inputs read as instructions or spam.
    Suspicious {
        found: Vec<String>,
    },
    /// A payment: a person approves it (beyond the auto-pay limit).
    Payment,
}

/// Where the judge sends a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "route", rename_all = "snake_case")]
pub enum Route {
    AutoApprove,
    HumanReview {
        reasons: Vec<ReviewReason>,
    },
    /// Replan with this feedback; the next attempt is `attempt + 1`.
    Retry {
        feedback: String,
    },
    /// Attempts are spent: the task fails and is surfaced to humans.
    Fail {
        feedback: String,
    },
}

/// Routes one result under `policy`.
pub fn route(policy: &Policy, a: &Assessment<'_>) -> Route {
    let low_confidence = a.confidence < policy.review_at_or_above;
    if low_confidence || !a.failed_checks.is_empty() {
        let mut problems = a.failed_checks.to_vec();
        if low_confidence {
            problems.push(format!(
                "confidence {:.4} is below {:.2}",
                a.confidence.value(),
                policy.review_at_or_above.value()
            ));
        }
        let feedback = problems.join("; ");
        return if a.attempt >= policy.max_attempts {
            Route::Fail { feedback }
        } else {
            Route::Retry { feedback }
        };
    }

    if expected_action(a.task_kind).is_none() {
        return Route::AutoApprove;
    }
    let mut reasons = Vec::new();
    let sensitive: Vec<String> = a
        .risk_tags
        .intersection(&policy.sensitive_topics)
        .map(|t| t.as_str().to_owned())
        .collect();
    if !sensitive.is_empty() {
        reasons.push(ReviewReason::Sensitive { tags: sensitive });
    }
    // A payment has no text to score: beyond the auto-pay limit a person approves it anyway
    // (`Payment`, below).
    if !a.scored && !a.task_kind.is_financial() {
        reasons.push(ReviewReason::Unscored);
    } else if a.confidence <= policy.auto_approve_above {
        reasons.push(ReviewReason::MediumConfidence);
    }
    if a.task_kind.is_publishing() && a.disclosure_level.is_none() {
        reasons.push(ReviewReason::MissingDisclosure);
    }
    if !a.suspicious.is_empty() {
        reasons.push(ReviewReason::Suspicious {
            found: a.suspicious.to_vec(),
        });
    }
    if a.task_kind.is_financial() && !a.auto_pay {
        reasons.push(ReviewReason::Payment);
    }
    if reasons.is_empty() {
        Route::AutoApprove
    } else {
        Route::HumanReview { reasons }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn c(v: f64) -> Confidence {
        Confidence::try_from(v).unwrap()
    }

    fn tags(list: &[&str]) -> BTreeSet<RiskTag> {
        list.iter().map(|t| RiskTag::parse(*t).unwrap()).collect()
    }

    fn assess<'a>(
        confidence: f64,
        risk_tags: &'a BTreeSet<RiskTag>,
        failed: &'a [String],
    ) -> Assessment<'a> {
        Assessment {
            task_kind: TaskKind::Transact,
            confidence: c(confidence),
            risk_tags,
            disclosure_level: None,
            attempt: 1,
            failed_checks: failed,
            scored: true,
            suspicious: &[],
            auto_pay: true,
        }
    }

    #[test]
    fn every_confidence_boundary_routes_as_specified() {
        let policy = Policy::default();
        let none = tags(&[]);
        let route_at = |v| route(&policy, &assess(v, &none, &[]));
        assert!(matches!(route_at(0.6999), Route::Retry { .. }));
        assert_eq!(
            route_at(0.70),
            Route::HumanReview {
                reasons: vec![ReviewReason::MediumConfidence]
            }
        );
        assert_eq!(
            route_at(0.80),
            Route::HumanReview {
                reasons: vec![ReviewReason::MediumConfidence]
            }
        );
        assert_eq!(
            route_at(0.90),
            Route::HumanReview {
                reasons: vec![ReviewReason::MediumConfidence]
            }
        );
        assert_eq!(route_at(0.9001), Route::AutoApprove);
        assert_eq!(route_at(1.0), Route::AutoApprove);
        assert!(matches!(route_at(0.0), Route::Retry { .. }));
    }

    #[test]
    fn a_sensitive_topic_overrides_high_confidence() {
        let policy = Policy::default();
        let sensitive = tags(&["politics", "sports"]);
        assert_eq!(
            route(&policy, &assess(0.99, &sensitive, &[])),
            Route::HumanReview {
                reasons: vec![ReviewReason::Sensitive {
                    tags: vec!["politics".into()]
                }]
            }
        );
        let harmless = tags(&["sports"]);
        assert_eq!(
            route(&policy, &assess(0.99, &harmless, &[])),
            Route::AutoApprove
        );
    }

    #[test]
    fn publishing_without_disclosure_never_auto_approves() {
        let policy = Policy::default();
        let none = tags(&[]);
        for kind in [TaskKind::Publish, TaskKind::Reply] {
            let mut a = assess(0.99, &none, &[]);
            a.task_kind = kind;
            assert_eq!(
                route(&policy, &a),
                Route::HumanReview {
                    reasons: vec![ReviewReason::MissingDisclosure]
                }
            );
            a.disclosure_level = Some(DisclosureLevel::Automated);
            assert_eq!(route(&policy, &a), Route::AutoApprove);
        }
    }

    #[test]
    fn a_failed_check_retries_until_max_attempts_then_fails() {
        let policy = Policy::default();
        let none = tags(&[]);
        let failed = vec!["off-persona tone".to_owned()];
        let mut a = assess(0.99, &none, &failed);
        for attempt in 1..policy.max_attempts {
            a.attempt = attempt;
            assert_eq!(
                route(&policy, &a),
                Route::Retry {
                    feedback: "off-persona tone".into()
                }
            );
        }
        a.attempt = policy.max_attempts;
        assert_eq!(
            route(&policy, &a),
            Route::Fail {
                feedback: "off-persona tone".into()
            }
        );
    }

    #[test]
    fn low_confidence_at_max_attempts_fails_with_the_reason() {
        let policy = Policy::default();
        let none = tags(&[]);
        let mut a = assess(0.5, &none, &[]);
        a.attempt = 3;
        let Route::Fail { feedback } = route(&policy, &a) else {
            panic!("expected Fail")
        };
        assert!(feedback.contains("0.5000 is below 0.70"), "{feedback}");
    }

    #[test]
    fn intermediate_work_is_never_held_and_the_claim_cannot_raise_the_judges_score() {
        let policy = Policy::default();
        let sensitive = tags(&["politics"]);
        for kind in [TaskKind::Research, TaskKind::Draft, TaskKind::RenderMedia] {
            let mut a = assess(0.75, &sensitive, &[]);
            a.task_kind = kind;
            assert_eq!(route(&policy, &a), Route::AutoApprove, "{kind:?}");
            a.confidence = c(0.5);
            assert!(matches!(route(&policy, &a), Route::Retry { .. }));
        }
        // A policy stored before these fields existed reads with their defaults.
        let mut old = serde_json::to_value(Policy::default()).unwrap();
        for field in [
            "banned_phrases",
            "topic_lexicon",
            "link_hosts",
            "similarity",
            "disclosure_text",
        ] {
            old.as_object_mut().unwrap().remove(field);
        }
        let read: Policy = serde_json::from_value(old).unwrap();
        assert_eq!(read, Policy::default());
    }

    #[test]
    fn thresholds_come_from_the_policy() {
        let policy = Policy {
            auto_approve_above: c(0.5),
            review_at_or_above: c(0.2),
            ..Policy::default()
        };
        let none = tags(&[]);
        assert_eq!(route(&policy, &assess(0.6, &none, &[])), Route::AutoApprove);
        assert!(matches!(
            route(&policy, &assess(0.3, &none, &[])),
            Route::HumanReview { .. }
        ));
        assert!(matches!(
            route(&policy, &assess(0.1, &none, &[])),
            Route::Retry { .. }
        ));
        let unordered = Policy {
            auto_approve_above: c(0.5),
            review_at_or_above: c(0.6),
            ..Policy::default()
        };
        assert!(unordered.validate().is_err());
        assert!(Policy::default().validate().is_ok());
    }

    #[test]
    fn an_effect_without_an_independent_score_or_with_suspicious_inputs_goes_to_a_person() {
        let policy = Policy::default();
        let none = tags(&[]);
        let mut a = assess(1.0, &none, &[]);
        a.task_kind = TaskKind::Reply;
        a.disclosure_level = Some(DisclosureLevel::Automated);
        assert_eq!(route(&policy, &a), Route::AutoApprove);
        a.scored = false;
        assert_eq!(
            route(&policy, &a),
            Route::HumanReview {
                reasons: vec![ReviewReason::Unscored]
            }
        );
        a.scored = true;
        let found = vec!["the brief: instruction-like text".to_owned()];
        a.suspicious = &found;
        assert!(matches!(route(&policy, &a), Route::HumanReview { .. }));
        // A payment beyond the auto-pay limit waits for a person.
        let mut pay = assess(1.0, &none, &[]);
        pay.auto_pay = false;
        assert_eq!(
            route(&policy, &pay),
            Route::HumanReview {
                reasons: vec![ReviewReason::Payment]
            }
        );
    }

    #[test]
    fn limits_and_similarities_are_validated() {
        let mut policy = Policy::default();
        policy.spend.auto_pay_per_day_cents = Some(MAX_LIMIT_CENTS + 1);
        assert!(policy.validate().is_err());
        policy.spend.auto_pay_per_day_cents = Some(500);
        policy.spend.per_day_cents = Some(100);
        assert!(policy.validate().is_err());
        policy.spend.per_day_cents = Some(1000);
        assert!(policy.validate().is_ok());
        for (min, sure) in [(0.5, 0.4), (-1.0, -0.99), (0.0, 0.5), (0.3, 0.35)] {
            policy.similarity.on_topic = Similarity { min, sure };
            assert!(policy.validate().is_err(), "{min} {sure}");
        }
    }

    fn any_kind() -> impl Strategy<Value = TaskKind> {
        prop_oneof![
            Just(TaskKind::Research),
            Just(TaskKind::Draft),
            Just(TaskKind::RenderMedia),
            Just(TaskKind::Publish),
            Just(TaskKind::Reply),
            Just(TaskKind::Transact),
        ]
    }

    proptest! {
        #[test]
        fn routing_upholds_its_invariants(
            confidence in 0.0f64..=1.0,
            kind in any_kind(),
            tag_picks in proptest::collection::btree_set(
                prop_oneof![Just("politics"), Just("health"), Just("sports"), Just("music"), Just("finance")], 0..4),
            disclosed in any::<bool>(),
            attempt in 1u32..6,
            failed in any::<bool>(),
        ) {
            let policy = Policy::default();
            let risk_tags = tags(&tag_picks.iter().copied().collect::<Vec<_>>());
            let failed_checks = if failed { vec!["bad".to_owned()] } else { vec![] };
            let a = Assessment {
                task_kind: kind,
                confidence: c(confidence),
                risk_tags: &risk_tags,
                disclosure_level: disclosed.then_some(DisclosureLevel::Assisted),
                attempt,
                failed_checks: &failed_checks,
                scored: true,
                suspicious: &[],
                auto_pay: true,
            };
            let sensitive = risk_tags.iter().any(|t| policy.sensitive_topics.contains(t));
            match route(&policy, &a) {
                Route::AutoApprove if expected_action(kind).is_none() => {
                    prop_assert!(confidence >= 0.70 && !failed);
                }
                Route::AutoApprove => {
                    prop_assert!(confidence > 0.90);
                    prop_assert!(!sensitive && !failed);
                    prop_assert!(!kind.is_publishing() || disclosed);
                }
                Route::HumanReview { reasons } => {
                    prop_assert!(expected_action(kind).is_some(), "intermediate work is never held");
                    prop_assert!(!reasons.is_empty());
                    prop_assert!(confidence >= 0.70 && !failed);
                }
                Route::Retry { feedback } => {
                    prop_assert!(confidence < 0.70 || failed);
                    prop_assert!(attempt < policy.max_attempts);
                    prop_assert!(!feedback.is_empty());
                }
                Route::Fail { feedback } => {
                    prop_assert!(confidence < 0.70 || failed);
                    prop_assert!(attempt >= policy.max_attempts);
                    prop_assert!(!feedback.is_empty());
                }
            }
        }
    }
}
