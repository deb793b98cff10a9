//! The schema's enums as Rust types: each variant's name is written once, here, and maps to the
//! PostgreSQL enum (`sqlx::Type`, with the store's `sqlx` feature) and to JSON (serde) alike.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Defines an enum mirroring the PostgreSQL enum `$pg`, each variant with its one name.
macro_rules! schema_enum {
    (
        $(#[$meta:meta])*
        $name:ident as $pg:literal {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
        #[cfg_attr(feature = "sqlx", sqlx(type_name = $pg))]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[serde(rename = $text)]
                #[cfg_attr(feature = "sqlx", sqlx(rename = $text))]
                $variant
            ),+
        }

        impl $name {
            /// Every variant, in the schema's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name the schema and JSON use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The variant named `name` ([`Self::as_str`]).
            pub fn parse(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == name)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

schema_enum! {
    /// Where a goal stands. Mirrors `goal_status`.
    GoalStatus as "goal_status" {
        Received = "received",
        Planning = "planning",
        InProgress = "in_progress",
        AwaitingReview = "awaiting_review",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

schema_enum! {
    /// Where a task stands. Mirrors `task_status`.
    TaskStatus as "task_status" {
        /// Waiting for its dependencies.
        Blocked = "blocked",
        Ready = "ready",
        /// On the task queue (its message in the outbox, then sent).
        Queued = "queued",
        Running = "running",
        /// A human holds its result.
        AwaitingReview = "awaiting_review",
        /// Waiting for its next attempt (a replan with feedback).
        Retrying = "retrying",
        Committed = "committed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl TaskStatus {
    /// Whether a result of the current attempt is still to be decided.
    pub fn is_undecided(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
    }
}

schema_enum! {
    /// Where a review stands. Mirrors `review_status`.
    ReviewStatus as "review_status" {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
        Expired = "expired",
    }
}

schema_enum! {
    /// A decision about a result, by the judge, a human or the system. Mirrors `decision_kind`.
    DecisionKind as "decision_kind" {
        AutoApprove = "auto_approve",
        Approve = "approve",
        EditApprove = "edit_approve",
        Reject = "reject",
        Retry = "retry",
        Escalate = "escalate",
        DefaultReject = "default_reject",
        Fail = "fail",
    }
}

impl DecisionKind {
    /// The decisions that release an effect.
    pub fn approves(self) -> bool {
        matches!(self, Self::AutoApprove | Self::Approve | Self::EditApprove)
    }
}

schema_enum! {
    /// What a task does. Mirrors `task_kind`.
    TaskKind as "task_kind" {
        Research = "research",
        Draft = "draft",
        RenderMedia = "render_media",
        /// Prepares a post; publishing itself is an `Execute` task released by an approval.
        Publish = "publish",
        /// Prepares a reply; sending it is an `Execute` task.
        Reply = "reply",
        /// Prepares a payment or transfer; moving money is an `Execute` task.
        Transact = "transact",
        /// Performs an approved external effect, with the approval as idempotency key.
        Execute = "execute",
    }
}

impl TaskKind {
    /// Actions that put content in front of an audience: they need a disclosure level.
    pub fn is_publishing(self) -> bool {
        matches!(self, Self::Publish | Self::Reply)
    }

    /// Actions that move money: the CFO judge checks them against the budget.
    pub fn is_financial(self) -> bool {
        matches!(self, Self::Transact)
    }
}

schema_enum! {
    /// How a publishing action discloses automation. Mirrors `disclosure_level`.
    DisclosureLevel as "disclosure_level" {
        Automated = "automated",
        Assisted = "assisted",
        None = "none",
    }
}

schema_enum! {
    /// Where an approved effect stands on its platform. Mirrors `effect_state`.
    EffectState as "effect_state" {
        /// Recorded before anything reached the platform.
        Intended = "intended",
        /// Handed to the tool: done or not, nobody knows until it answers.
        Sent = "sent",
        /// The platform holds it (its answer, or a look-up, gave its id).
        Confirmed = "confirmed",
        /// The call failed after it was handed over: the platform may hold it. It is looked
        /// up, never blindly sent again.
        Unknown = "unknown",
        /// The platform refused it, and a look-up showed it absent.
        Failed = "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + PartialEq + std::fmt::Debug + Serialize + serde::de::DeserializeOwned,
    {
        for v in all {
            let json = serde_json::to_value(v).unwrap();
            assert_eq!(serde_json::from_value::<T>(json).unwrap(), *v);
        }
    }

    #[test]
    fn every_variant_round_trips_through_json_and_its_name() {
        round_trips(GoalStatus::ALL);
        round_trips(TaskStatus::ALL);
        round_trips(ReviewStatus::ALL);
        round_trips(DecisionKind::ALL);
        round_trips(TaskKind::ALL);
        round_trips(DisclosureLevel::ALL);
        round_trips(EffectState::ALL);
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(
            GoalStatus::parse("in_progress"),
            Some(GoalStatus::InProgress)
        );
        assert_eq!(TaskKind::parse("render_media"), Some(TaskKind::RenderMedia));
        assert_eq!(TaskKind::parse("nope"), None);
    }
}
