//! Proposed effects: what a publish, reply or transfer result asks to do, the `execute` task
//! that does it once approved, and what a reviewer may change before approving.
//!
//! A proposal is the artifact a human approves: `{"action": "social.publish", "arguments":
//! {...}}`. Its approval (a review, decided by the judge or a human) is the effect's identity:
//! the `execute` task's id derives from the approval's id, and the worker passes
//! `approval:<id>` to the tool as its idempotency key.
//!
//! An edit changes content only: the text of a post or reply and the memo of a transfer. The
//! platform, the post replied to, the media, and a transfer's amount, payer and payee are the
//! effect's targets; an edit naming any of them is refused ([`EditRefused::Forbidden`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::domain::{
    AgentId, DisclosureLevel, GoalId, ReadSet, ReviewId, Task, TaskId, TaskKind, TenantId,
    derived_uuid,
};

/// A proposed effect, as the worker wrote it for a reviewer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub action: String,
    pub arguments: Map<String, Value>,
}

/// Longest post or reply text that goes to a reviewer or a platform.
pub const MAX_POST_CHARS: usize = 5000;
/// Longest transfer memo.
pub const MAX_MEMO_CHARS: usize = 500;

/// An external effect: the MCP tool that performs it, which only an approved `execute` task may
/// call. The one place the effects' names are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EffectAction {
    #[serde(rename = "social.publish")]
    Publish,
    #[serde(rename = "social.reply")]
    Reply,
    #[serde(rename = "wallet.transfer")]
    Transfer,
}

impl EffectAction {
    pub const ALL: [EffectAction; 3] = [Self::Publish, Self::Reply, Self::Transfer];

    /// The action's name: the tool that performs it, and what a proposal names.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "social.publish",
            Self::Reply => "social.reply",
            Self::Transfer => "wallet.transfer",
        }
    }

    /// The action named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The action a proposal of `kind` must name; `None` for kinds that propose nothing.
    pub fn proposed_by(kind: TaskKind) -> Option<Self> {
        match kind {
            TaskKind::Publish => Some(Self::Publish),
            TaskKind::Reply => Some(Self::Reply),
            TaskKind::Transact => Some(Self::Transfer),
            _ => None,
        }
    }

    /// Whether it moves money.
    pub fn is_financial(self) -> bool {
        self == Self::Transfer
    }

    /// The arguments a reviewer may edit: content only.
    pub fn editable_fields(self) -> &'static [&'static str] {
        match self {
            Self::Publish | Self::Reply => &["text"],
            Self::Transfer => &["memo"],
        }
    }
}

impl std::fmt::Display for EffectAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tools generation tasks call (effects are [`EffectAction`]s): the one place their names
/// are written.
pub mod tools {
    /// Trend items matching a query (research).
    pub const TRENDS_SEARCH: &str = "trends.search";
    /// Text from a persona and a brief (draft, and the proposals of publish and reply).
    pub const CONTENT_DRAFT: &str = "content.draft";
    /// An image from a prompt (render_media).
    pub const MEDIA_RENDER_IMAGE: &str = "media.render_image";
    /// An account's balance (the proposal of a transfer).
    pub const WALLET_BALANCE: &str = "wallet.balance";
    /// One post, with the thread it belongs to (what a reply references).
    pub const SOCIAL_READ_POST: &str = "social.read_post";
    /// An account's recent posts on a platform (how an effect whose outcome was lost is found).
    pub const SOCIAL_LOOKUP: &str = "social.lookup";
    /// Engagement counts of posts.
    pub const SOCIAL_METRICS: &str = "social.metrics";
    /// A wallet's transfers (how a transfer whose outcome was lost is found).
    pub const WALLET_FIND_TRANSFERS: &str = "wallet.find_transfers";
}

/// The action a proposal of `kind` must name; `None` for kinds that propose nothing.
pub fn expected_action(kind: TaskKind) -> Option<EffectAction> {
    EffectAction::proposed_by(kind)
}

/// The arguments of the action named `action` a reviewer may edit (none for an unknown one).
pub fn editable_fields(action: &str) -> &'static [&'static str] {
    EffectAction::parse(action).map_or(&[], EffectAction::editable_fields)
}

/// An edit that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditRefused {
    /// The edit names a field that is not content (an amount, a recipient, a target...).
    #[error("{action} allows edits of {allowed} only; {field} cannot be changed")]
    Forbidden {
        action: String,
        field: String,
        allowed: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Proposal {
    /// Parses a proposal artifact's bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// The artifact bytes of this proposal, as the worker writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&json!({"action": self.action, "arguments": self.arguments}))
            .unwrap_or_default()
    }

    /// The SHA-256 (hex) of [`Proposal::to_bytes`]: what an approval records as the effect it
    /// released, and what a worker checks an `execute` task's arguments against.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.to_bytes()))
    }

    /// One line for a queue: the text of a post, or what a transfer moves to whom.
    pub fn summary(&self) -> String {
        let arg = |name: &str| self.arguments.get(name).and_then(Value::as_str);
        match (arg("text"), self.arguments.get("amount_cents")) {
            (Some(text), _) => text.to_owned(),
            (None, Some(amount)) => format!(
                "{} {amount} cents to {}",
                self.action,
                arg("to").unwrap_or("?")
            ),
            _ => self.action.clone(),
        }
    }

    /// The proposal with `edits` applied: content fields only, each a non-empty string within
    /// its length limit.
    pub fn edited(&self, edits: &Map<String, Value>) -> Result<Proposal, EditRefused> {
        let allowed = editable_fields(&self.action);
        if edits.is_empty() {
            return Err(EditRefused::Invalid("the edit changes nothing".into()));
        }
        let mut arguments = self.arguments.clone();
        for (field, value) in edits {
            if !allowed.contains(&field.as_str()) {
                return Err(EditRefused::Forbidden {
                    action: self.action.clone(),
                    field: field.clone(),
                    allowed: if allowed.is_empty() {
                        "nothing".into()
                    } else {
                        allowed.join(", ")
                    },
                });
            }
            let limit = if field == "memo" {
                MAX_MEMO_CHARS
            } else {
                MAX_POST_CHARS
            };
            let text = value
                .as_str()
                .ok_or_else(|| EditRefused::Invalid(format!("{field} must be a string")))?;
            let length = text.chars().count();
            if (field != "memo" && text.trim().is_empty()) || length > limit {
                return Err(EditRefused::Invalid(format!(
                    "{field} must be 1..={limit} characters"
                )));
            }
            arguments.insert(field.clone(), Value::String(text.to_owned()));
        }
        Ok(Proposal {
            action: self.action.clone(),
            arguments,
        })
    }
}

/// What an approved effect is about: the held task's identity.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub task_id: TaskId,
    pub goal_id: GoalId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub disclosure_level: Option<DisclosureLevel>,
}

/// The `execute` task that performs `proposal` under `approval`. Its id derives from the
/// approval's, so an approval yields one task however often it is built.
pub fn execute_task(origin: &Origin, approval: ReviewId, proposal: &Proposal) -> Task {
    let mut inputs = Map::new();
    inputs.insert("action".into(), json!(proposal.action));
    inputs.insert(
        "arguments".into(),
        Value::Object(proposal.arguments.clone()),
    );
    if let Some(level) = origin.disclosure_level {
        inputs.insert("disclosure_level".into(), json!(level.as_str()));
    }
    Task {
        id: TaskId(derived_uuid(&format!("execute:{approval}"))),
        goal_id: origin.goal_id,
        tenant_id: origin.tenant_id,
        agent_id: origin.agent_id,
        kind: TaskKind::Execute,
        attempt: 1,
        inputs,
        depends_on: vec![origin.task_id],
        read_set: ReadSet::new(),
        write_set: Default::default(),
        feedback: None,
        approval_id: Some(approval),
    }
}

/// The effect an `execute` task performs: its `action` and `arguments` inputs (empty where the
/// inputs lack them, which no approval's digest matches).
pub fn performed_by(task: &Task) -> Proposal {
    Proposal {
        action: task
            .inputs
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        arguments: task
            .inputs
            .get("arguments")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    }
}

/// The amount a financial proposal moves.
pub fn amount_cents(proposal: &Proposal) -> Option<i64> {
    proposal
        .arguments
        .get("amount_cents")
        .and_then(Value::as_i64)
}

/// The wallet an agent pays from: one per agent id (a handle is unique only within its tenant,
/// so two tenants' "nova" never share one).
pub fn wallet_of(agent: crate::domain::AgentId) -> String {
    format!("agent-{}", agent.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(value: Value) -> Proposal {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_post_edit_changes_the_text_only() {
        let p = proposal(json!({"action": "social.publish",
                                "arguments": {"platform": "instagram", "text": "old"}}));
        let mut edit = Map::new();
        edit.insert("text".into(), json!("new words"));
        let edited = p.edited(&edit).unwrap();
        assert_eq!(edited.arguments["text"], "new words");
        assert_eq!(edited.arguments["platform"], "instagram");
        assert_ne!(edited.to_bytes(), p.to_bytes());
    }

    #[test]
    fn amounts_recipients_and_targets_are_not_editable() {
        let transfer = proposal(json!({"action": "wallet.transfer", "arguments":
            {"from": "nova", "to": "vendor", "amount_cents": 500, "memo": "ads"}}));
        for field in ["amount_cents", "to", "from"] {
            let mut edit = Map::new();
            edit.insert(field.into(), json!("x"));
            assert!(matches!(
                transfer.edited(&edit),
                Err(EditRefused::Forbidden { .. })
            ));
        }
        let mut memo = Map::new();
        memo.insert("memo".into(), json!("spring ads"));
        assert_eq!(
            transfer.edited(&memo).unwrap().arguments["amount_cents"],
            500
        );
        let reply = proposal(json!({"action": "social.reply", "arguments":
            {"platform": "x", "text": "hi", "in_reply_to": "m1"}}));
        for field in ["platform", "in_reply_to", "media_sha256"] {
            let mut edit = Map::new();
            edit.insert(field.into(), json!("other"));
            assert!(matches!(
                reply.edited(&edit),
                Err(EditRefused::Forbidden { .. })
            ));
        }
    }

    #[test]
    fn empty_or_oversized_text_is_refused() {
        let p = proposal(json!({"action": "social.reply", "arguments": {"text": "hi"}}));
        for bad in [
            json!(""),
            json!("  "),
            json!(7),
            json!("x".repeat(MAX_POST_CHARS + 1)),
        ] {
            let mut edit = Map::new();
            edit.insert("text".into(), bad);
            assert!(matches!(p.edited(&edit), Err(EditRefused::Invalid(_))));
        }
        assert!(matches!(
            p.edited(&Map::new()),
            Err(EditRefused::Invalid(_))
        ));
    }

    #[test]
    fn the_execute_task_derives_from_the_approval() {
        let origin = Origin {
            task_id: TaskId(uuid::Uuid::from_u128(1)),
            goal_id: GoalId(uuid::Uuid::from_u128(2)),
            tenant_id: TenantId(uuid::Uuid::from_u128(3)),
            agent_id: AgentId(uuid::Uuid::from_u128(4)),
            disclosure_level: Some(DisclosureLevel::Automated),
        };
        let p = proposal(json!({"action": "social.reply", "arguments": {"text": "hi"}}));
        let approval = ReviewId(uuid::Uuid::from_u128(5));
        let a = execute_task(&origin, approval, &p);
        assert_eq!(a.id, execute_task(&origin, approval, &p).id);
        assert_eq!(a.approval_id, Some(approval));
        assert_eq!(a.depends_on, vec![origin.task_id]);
        assert_eq!(a.inputs["disclosure_level"], "automated");
    }
}
