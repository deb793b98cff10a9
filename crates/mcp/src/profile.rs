//! Server profiles: which tool of which server does each of Chimera's operations, with which
//! arguments, and how its answer reads back. A platform is connected by configuration: no Rust
//! changes per platform.
//!
//! Chimera's own tool contract (the one `chimera-world` serves) is the *native* binding of each
//! operation: the tool named as [`Op::native_tool`], called with Chimera's values as they are,
//! its structured answer read whole. A profile binds operations to other tools:
//!
//! ```json
//! "operations": {"research": {"server": "search", "tool": "web_search",
//!                             "arguments": {"q": "{{query}}"}, "result": {"items": "/hits"}}},
//! "platforms": {"bluesky": {"publish": {"server": "bluesky", "tool": "send_post",
//!     "arguments": {"text": "{{text}}"},
//!     "result": {"post_id": "/result/post_uri"},
//!     "error": {"when": "/result/status", "equals": "error", "message": "/result/message"}}}}
//! ```
//!
//! `operations` binds an operation for every platform, `platforms.<name>` for effects and reads
//! on that platform only; an operation bound nowhere is native. At start every binding is
//! checked against its tool's `inputSchema` ([`Binding::check`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::template::{self, Mapping, Vars};

/// What Chimera asks of tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Trend items matching a query.
    Research,
    /// Text from a persona and a brief.
    Draft,
    /// An image from a prompt.
    Render,
    /// An account's balance.
    Balance,
    /// Publish a post (an effect).
    Publish,
    /// Reply to a post (an effect).
    Reply,
    /// Move money (an effect).
    Transfer,
    /// One post, with what a reply to it must reference.
    ReadPost,
    /// The account's recent posts: how an effect whose outcome is unknown is looked for.
    Lookup,
    /// Engagement counts of posts.
    Metrics,
    /// The wallet's transfers on chain: how a transfer whose outcome is unknown is looked for.
    FindTransfer,
}

/// What kind of value a placeholder takes, for the sample checked against a tool's schema.
#[derive(Debug, Clone, Copy)]
enum Sample {
    Text,
    Integer,
    Persona,
    Ids,
    /// An account on a chain (`0x` and 40 hex digits).
    ChainAddress,
    /// An amount in whole units of a currency.
    Decimal,
}

impl Sample {
    fn value(self) -> Value {
        match self {
            Self::Text => json!("sample"),
            Self::Integer => json!(1),
            Self::Persona => json!({"name": "sample", "voice": "sample"}),
            Self::Ids => json!(["00000000-0000-0000-0000-000000000001"]),
            Self::ChainAddress => json!("0x0000000000000000000000000000000000000001"),
            Self::Decimal => json!("1.00"),
        }
    }
}

/// A value an operation supplies: (name, sample, always given).
type Supplied = (&'static str, Sample, bool);

use Sample::{ChainAddress, Decimal, Ids, Integer, Persona, Text};

impl Op {
    pub const ALL: [Op; 11] = [
        Op::Research,
        Op::Draft,
        Op::Render,
        Op::Balance,
        Op::Publish,
        Op::Reply,
        Op::Transfer,
        Op::ReadPost,
        Op::Lookup,
        Op::Metrics,
        Op::FindTransfer,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Research => "research",
            Self::Draft => "draft",
            Self::Render => "render",
            Self::Balance => "balance",
            Self::Publish => "publish",
            Self::Reply => "reply",
            Self::Transfer => "transfer",
            Self::ReadPost => "read_post",
            Self::Lookup => "lookup",
            Self::Metrics => "metrics",
            Self::FindTransfer => "find_transfer",
        }
    }

    /// The tool of Chimera's own contract that does it.
    pub const fn native_tool(self) -> &'static str {
        use chimera_core::effect::{EffectAction, tools};
        match self {
            Self::Research => tools::TRENDS_SEARCH,
            Self::Draft => tools::CONTENT_DRAFT,
            Self::Render => tools::MEDIA_RENDER_IMAGE,
            Self::Balance => tools::WALLET_BALANCE,
            Self::Publish => EffectAction::Publish.as_str(),
            Self::Reply => EffectAction::Reply.as_str(),
            Self::Transfer => EffectAction::Transfer.as_str(),
            Self::ReadPost => tools::SOCIAL_READ_POST,
            Self::Lookup => tools::SOCIAL_LOOKUP,
            Self::Metrics => tools::SOCIAL_METRICS,
            Self::FindTransfer => tools::WALLET_FIND_TRANSFERS,
        }
    }

    /// Whether it changes the world (and so runs only for an approved `execute` task).
    pub fn is_effect(self) -> bool {
        matches!(self, Self::Publish | Self::Reply | Self::Transfer)
    }

    /// The values the caller supplies; `account.*` (the agent's platform account) and, for a
    /// reply, `parent.*` (the post replied to, as `read_post` maps it) come on top.
    fn supplied(self) -> &'static [Supplied] {
        match self {
            Self::Research => &[("query", Text, true), ("limit", Integer, true)],
            Self::Draft => &[
                ("persona", Persona, true),
                ("brief", Text, true),
                ("platform", Text, true),
                ("feedback", Text, false),
            ],
            Self::Render => &[
                ("prompt", Text, true),
                ("width", Integer, false),
                ("height", Integer, false),
            ],
            Self::Balance => &[("account", Text, true)],
            Self::Publish => &[
                ("platform", Text, true),
                ("text", Text, true),
                ("media_sha256", Text, false),
                ("idempotency_key", Text, true),
            ],
            Self::Reply => &[
                ("platform", Text, true),
                ("text", Text, true),
                ("in_reply_to", Text, true),
                ("media_sha256", Text, false),
                ("idempotency_key", Text, true),
            ],
            Self::Transfer => &[
                ("from", Text, true),
                ("to", ChainAddress, true),
                ("amount_cents", Integer, true),
                // The amount in whole units of the currency ("15.05").
                ("amount", Decimal, true),
                ("memo", Text, true),
                ("idempotency_key", Text, true),
                // On a chain: the token and chain the transfer was approved for.
                ("token", ChainAddress, false),
                ("chain_id", Integer, false),
            ],
            Self::ReadPost => &[("platform", Text, true), ("post_id", Text, true)],
            Self::Lookup => &[
                ("platform", Text, true),
                ("text", Text, true),
                ("in_reply_to", Text, false),
                ("idempotency_key", Text, false),
            ],
            Self::Metrics => &[("post_ids", Ids, true), ("at", Text, false)],
            Self::FindTransfer => &[
                ("to", ChainAddress, true),
                ("amount_cents", Integer, true),
                ("amount", Decimal, true),
                ("token", ChainAddress, false),
                ("chain_id", Integer, false),
                ("idempotency_key", Text, false),
            ],
        }
    }

    /// The native arguments: every supplied value under its own name.
    fn native_arguments(self) -> Value {
        let fields = self.supplied().iter().map(|(name, _, given)| {
            let placeholder = if *given {
                format!("{{{{{name}}}}}")
            } else {
                format!("{{{{{name}?}}}}")
            };
            ((*name).to_owned(), Value::String(placeholder))
        });
        Value::Object(fields.collect())
    }

    /// The names of what `read_post` maps that a reply may use as `parent.<name>`.
    pub const PARENT_FIELDS: &'static [&'static str] =
        &["post_id", "cid", "root_id", "root_cid", "text", "author"];
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When an answer that is not an MCP error still says the call failed (a server that reports
/// failures as `{"status": "error", "message": ...}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// Where to look...
    pub when: String,
    /// ...for this value.
    pub equals: Value,
    /// The failure's message.
    #[serde(default)]
    pub message: Option<String>,
}

impl ErrorRule {
    /// The failure's message, when `answer` is one.
    pub fn failure(&self, answer: &Value) -> Option<String> {
        if answer.pointer(&self.when) != Some(&self.equals) {
            return None;
        }
        let message = self
            .message
            .as_deref()
            .and_then(|p| answer.pointer(p))
            .map(|m| match m {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "the tool reported a failure".into());
        Some(message)
    }
}

/// When a failure is the platform's rate limit (its answer holds `contains` at `when`): the
/// effect waits and is not failed. The platform's reset time is read at `reset_at` (Unix
/// seconds) when the server passes it on, else `retry_after_ms` from now.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    pub when: String,
    pub contains: String,
    pub retry_after_ms: u64,
    #[serde(default)]
    pub reset_at: Option<String>,
}

impl RateLimitRule {
    /// How long to wait, when `answer` is a rate limit.
    pub fn wait(&self, answer: &Value) -> Option<std::time::Duration> {
        let text = answer.pointer(&self.when)?.as_str()?;
        if !text.contains(&self.contains) {
            return None;
        }
        let reset = self
            .reset_at
            .as_deref()
            .and_then(|p| answer.pointer(p))
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .and_then(|secs| {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
                at.duration_since(std::time::SystemTime::now()).ok()
            });
        // The answer is the tool's: however late it says, the effect comes back within a day.
        let wait = reset.unwrap_or(std::time::Duration::from_millis(self.retry_after_ms));
        Some(wait.min(Self::LONGEST_WAIT))
    }

    /// The longest a rate limit puts an effect off.
    pub const LONGEST_WAIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
}

/// One operation bound to one tool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub server: Option<String>,
    pub tool: String,
    pub arguments: Value,
    #[serde(default = "Mapping::whole")]
    pub result: Mapping,
    #[serde(default)]
    pub error: Option<ErrorRule>,
    /// For a read: how long something new may take to show in it (a platform's indexing
    /// lag). A look-up that finds nothing counts as absent only once this has passed since
    /// the call it looks for came back.
    #[serde(default)]
    pub visible_within_ms: Option<u64>,
    /// For `metrics`: the most posts one call may ask about (the tool's own bound).
    #[serde(default)]
    pub max_batch: Option<usize>,
    /// Which failures are the platform's rate limit.
    #[serde(default)]
    pub rate_limited: Option<RateLimitRule>,
}

/// Why a profile cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProfileError(pub String);

impl Binding {
    /// The native binding of `op`: Chimera's own tool, the values as they are, the whole answer.
    pub fn native(op: Op) -> Self {
        Self {
            server: None,
            tool: op.native_tool().to_owned(),
            arguments: op.native_arguments(),
            result: Mapping::whole(),
            error: None,
            visible_within_ms: None,
            max_batch: None,
            rate_limited: None,
        }
    }

    /// Whether the tool is given the effect's idempotency key (and so answers a repeated
    /// call with the first one's outcome).
    pub fn keyed(&self) -> bool {
        template::placeholders(&self.arguments)
            .map(|found| found.iter().any(|p| p.name == "idempotency_key"))
            .unwrap_or(false)
    }

    /// The names this binding may use: what `op` supplies, the account fields its server
    /// exposes, and `parent.*` for a reply.
    fn known(op: Op, account: &[String]) -> Vars {
        let mut vars: Vars = op
            .supplied()
            .iter()
            .map(|(name, sample, _)| ((*name).to_owned(), sample.value()))
            .collect();
        for field in account {
            vars.insert(format!("account.{field}"), Sample::Text.value());
        }
        if op == Op::Reply {
            for field in Op::PARENT_FIELDS {
                vars.insert(format!("parent.{field}"), Sample::Text.value());
            }
        }
        vars
    }

    /// Checks what can be checked without the server: placeholders name known values, values
    /// a caller may omit are marked optional, pointers are pointers.
    pub fn check_shape(&self, op: Op, account: &[String]) -> Result<(), ProfileError> {
        let known = Self::known(op, account);
        let always: Vec<&str> = op
            .supplied()
            .iter()
            .filter(|(_, _, given)| *given)
            .map(|(name, _, _)| *name)
            .collect();
        let placeholders = template::placeholders(&self.arguments)
            .map_err(|e| ProfileError(format!("{op}: {e}")))?;
        for p in placeholders {
            if !known.contains_key(&p.name) {
                let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(ProfileError(format!(
                    "{op}: unknown placeholder {{{{{}}}}} (known: {})",
                    p.name,
                    names.join(", ")
                )));
            }
            let may_be_absent = !always.contains(&p.name.as_str())
                && !p.name.starts_with("account.")
                && !p.name.starts_with("parent.");
            if may_be_absent && !p.optional {
                return Err(ProfileError(format!(
                    "{op}: {{{{{0}}}}} may be absent; write it {{{{{0}?}}}}",
                    p.name
                )));
            }
        }
        if self.visible_within_ms.is_some()
            && !matches!(op, Op::Lookup | Op::ReadPost | Op::FindTransfer)
        {
            return Err(ProfileError(format!(
                "{op}: visible_within_ms is for reads (lookup, read_post, find_transfer)"
            )));
        }
        if self.max_batch.is_some() && op != Op::Metrics {
            return Err(ProfileError(format!("{op}: max_batch is for metrics")));
        }
        if self.max_batch == Some(0) {
            return Err(ProfileError(format!("{op}: max_batch must be at least 1")));
        }
        if let Some(rule) = &self.rate_limited {
            let pointers = std::iter::once(&rule.when).chain(rule.reset_at.as_ref());
            if pointers.into_iter().any(|p| !p.starts_with('/')) || rule.contains.is_empty() {
                return Err(ProfileError(format!(
                    "{op}: rate_limited needs pointers (when, reset_at) and a text to look for"
                )));
            }
        }
        let bad = self.result.bad_pointers();
        if !bad.is_empty() {
            return Err(ProfileError(format!(
                "{op}: result pointers must start with '/': {bad:?}"
            )));
        }
        Ok(())
    }

    /// Checks the arguments this binding would send against the tool's `inputSchema`: once with
    /// every value present, once with only those always given.
    pub fn check(
        &self,
        op: Op,
        account: &[String],
        server: &str,
        input_schema: &Value,
    ) -> Result<(), ProfileError> {
        let validator = jsonschema::validator_for(input_schema).map_err(|e| {
            ProfileError(format!(
                "server {server}, tool {}: its inputSchema is not a JSON Schema: {e}",
                self.tool
            ))
        })?;
        let full = Self::known(op, account);
        let mut minimal = full.clone();
        for (name, _, given) in op.supplied() {
            if !given {
                minimal.remove(*name);
            }
        }
        for vars in [full, minimal] {
            let arguments = template::fill(&self.arguments, &vars)
                .map_err(|e| ProfileError(format!("{op}: {e}")))?;
            if let Some(error) = validator.iter_errors(&arguments).next() {
                let path = error.instance_path().to_string();
                let field = if path.is_empty() {
                    "(the arguments object)".to_owned()
                } else {
                    path
                };
                return Err(ProfileError(format!(
                    "server {server}, tool {}, field {field}: {error} (operation {op})",
                    self.tool
                )));
            }
        }
        Ok(())
    }
}

/// The bindings of a configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub operations: BTreeMap<Op, Binding>,
    #[serde(default)]
    pub platforms: BTreeMap<String, BTreeMap<Op, Binding>>,
}

impl Profile {
    /// The binding of `op` on `platform` (effects and reads name one), else for every
    /// platform, else native.
    pub fn binding(&self, op: Op, platform: Option<&str>) -> Binding {
        platform
            .and_then(|p| self.platforms.get(p))
            .and_then(|ops| ops.get(&op))
            .or_else(|| self.operations.get(&op))
            .cloned()
            .unwrap_or_else(|| Binding::native(op))
    }

    /// Checks that every effect's outcome can be found out when its answer is lost: the tool
    /// takes the idempotency key (sending again is safe), or the platform has a `lookup` (a
    /// transfer: `find_transfer`).
    pub fn check_recoverable(&self) -> Result<(), ProfileError> {
        for (platform, op, binding) in self.explicit() {
            if !op.is_effect() || binding.keyed() {
                continue;
            }
            let on = platform.map(|p| format!(" on {p}")).unwrap_or_default();
            if op == Op::Transfer {
                if self.operations.contains_key(&Op::FindTransfer) {
                    continue;
                }
                return Err(ProfileError(format!(
                    "transfer{on}: tool {} takes no {{{{idempotency_key}}}} and no find_transfer \
                     is bound: a transfer whose answer is lost could not be found, and sending \
                     it again could pay twice",
                    binding.tool
                )));
            }
            if self.lookup_of(platform).is_none() {
                return Err(ProfileError(format!(
                    "{op}{on}: tool {} takes no {{{{idempotency_key}}}} and no lookup is bound: \
                     an effect whose answer is lost could not be found, and sending it again \
                     could post twice",
                    binding.tool
                )));
            }
        }
        Ok(())
    }

    /// The explicit `lookup` binding for `platform` (or for every platform).
    fn lookup_of(&self, platform: Option<&str>) -> Option<&Binding> {
        platform
            .and_then(|p| self.platforms.get(p))
            .and_then(|ops| ops.get(&Op::Lookup))
            .or_else(|| self.operations.get(&Op::Lookup))
    }

    /// Every explicit binding, with the platform it is for.
    pub fn explicit(&self) -> impl Iterator<Item = (Option<&str>, Op, &Binding)> {
        self.operations
            .iter()
            .map(|(op, b)| (None, *op, b))
            .chain(self.platforms.iter().flat_map(|(platform, ops)| {
                ops.iter()
                    .map(move |(op, b)| (Some(platform.as_str()), *op, b))
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_post_schema() -> Value {
        json!({"type": "object", "required": ["text"], "properties": {
            "text": {"type": "string"},
            "reply_to": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            "langs": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]}}})
    }

    fn binding(value: Value) -> Binding {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_binding_that_fits_the_schema_passes() {
        let b = binding(json!({"server": "bluesky", "tool": "send_post",
            "arguments": {"text": "{{text}}", "reply_to": {"root": {"uri": "{{parent.root_id}}"},
                          "parent": {"uri": "{{parent.post_id}}", "cid": "{{parent.cid}}"}}},
            "result": {"post_id": "/result/post_uri"}}));
        b.check_shape(Op::Reply, &[]).unwrap();
        b.check(Op::Reply, &[], "bluesky", &send_post_schema())
            .unwrap();
    }

    #[test]
    fn a_mismatch_names_server_tool_and_field() {
        let b = binding(json!({"server": "bluesky", "tool": "send_post",
            "arguments": {"text": "{{text}}", "langs": "{{platform}}"}}));
        let err = b
            .check(Op::Publish, &[], "bluesky", &send_post_schema())
            .unwrap_err()
            .0;
        assert!(
            err.contains("server bluesky")
                && err.contains("tool send_post")
                && err.contains("/langs"),
            "{err}"
        );
        let missing = binding(json!({"tool": "send_post", "arguments": {"body": "{{text}}"}}));
        let err = missing
            .check(Op::Publish, &[], "bluesky", &send_post_schema())
            .unwrap_err()
            .0;
        assert!(err.contains("text"), "{err}");
    }

    #[test]
    fn placeholders_must_be_known_and_optional_ones_marked() {
        let unknown = binding(json!({"tool": "t", "arguments": {"x": "{{nope}}"}}));
        assert!(unknown.check_shape(Op::Publish, &[]).is_err());
        let unmarked = binding(json!({"tool": "t", "arguments": {"m": "{{media_sha256}}"}}));
        assert!(unmarked.check_shape(Op::Publish, &[]).is_err());
        let marked = binding(json!({"tool": "t", "arguments": {"m": "{{media_sha256?}}",
                                                                "a": "{{account.did}}"}}));
        marked.check_shape(Op::Publish, &["did".into()]).unwrap();
        assert!(marked.check_shape(Op::Publish, &[]).is_err());
    }

    #[test]
    fn native_bindings_pass_values_through() {
        let b = Binding::native(Op::Reply);
        assert_eq!(b.tool, "social.reply");
        let vars: Vars = [
            ("platform", "x"),
            ("text", "hi"),
            ("in_reply_to", "p1"),
            ("idempotency_key", "k"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
        assert_eq!(
            template::fill(&b.arguments, &vars).unwrap(),
            json!({"platform": "x", "text": "hi", "in_reply_to": "p1", "idempotency_key": "k"})
        );
        for op in Op::ALL {
            Binding::native(op).check_shape(op, &[]).unwrap();
        }
    }

    #[test]
    fn an_effect_whose_lost_answer_could_not_be_found_is_refused() {
        let unkeyed = json!({"tool": "send_post", "arguments": {"text": "{{text}}"}});
        let profile: Profile =
            serde_json::from_value(json!({"platforms": {"bluesky": {"publish": unkeyed}}}))
                .unwrap();
        let err = profile.check_recoverable().unwrap_err().0;
        assert!(
            err.contains("publish on bluesky") && err.contains("lookup"),
            "{err}"
        );
        let with_lookup: Profile = serde_json::from_value(json!({"platforms": {"bluesky": {
            "publish": unkeyed,
            "lookup": {"tool": "feed", "arguments": {}, "visible_within_ms": 5000}}}}))
        .unwrap();
        with_lookup.check_recoverable().unwrap();
        let keyed: Profile = serde_json::from_value(json!({"platforms": {"x": {"publish":
            {"tool": "post", "arguments": {"text": "{{text}}", "key": "{{idempotency_key}}"}}}}}))
        .unwrap();
        keyed.check_recoverable().unwrap();
        let transfer: Profile = serde_json::from_value(json!({"operations": {"transfer":
            {"tool": "pay", "arguments": {"to": "{{to}}"}}}}))
        .unwrap();
        assert!(transfer.check_recoverable().is_err());
        let findable: Profile = serde_json::from_value(json!({"operations": {
            "transfer": {"tool": "pay", "arguments": {"to": "{{to}}"}},
            "find_transfer": {"tool": "transfers", "arguments": {}, "visible_within_ms": 2000}}}))
        .unwrap();
        findable.check_recoverable().unwrap();
        // The lag belongs to reads.
        let lag_on_publish: Binding = serde_json::from_value(
            json!({"tool": "post", "arguments": {}, "visible_within_ms": 1}),
        )
        .unwrap();
        assert!(lag_on_publish.check_shape(Op::Publish, &[]).is_err());
    }

    #[test]
    fn a_rate_limit_waits_as_long_as_the_platform_says_but_never_more_than_a_day() {
        let rule: RateLimitRule = serde_json::from_value(json!({"when": "/message",
            "contains": "RateLimitExceeded", "retry_after_ms": 300000, "reset_at": "/reset"}))
        .unwrap();
        assert_eq!(rule.wait(&json!({"message": "500 oops"})), None);
        let limited = json!({"message": "429 RateLimitExceeded"});
        assert_eq!(
            rule.wait(&limited),
            Some(std::time::Duration::from_secs(300))
        );
        let far = json!({"message": "429 RateLimitExceeded", "reset": 99_999_999_999u64});
        assert_eq!(rule.wait(&far), Some(RateLimitRule::LONGEST_WAIT));
    }

    #[test]
    fn platform_bindings_win_over_general_ones() {
        let profile: Profile = serde_json::from_value(json!({
            "operations": {"publish": {"tool": "general", "arguments": {}}},
            "platforms": {"bluesky": {"publish": {"tool": "send_post", "arguments": {}}}}}))
        .unwrap();
        assert_eq!(
            profile.binding(Op::Publish, Some("bluesky")).tool,
            "send_post"
        );
        assert_eq!(profile.binding(Op::Publish, Some("x")).tool, "general");
        assert_eq!(profile.binding(Op::Reply, Some("x")).tool, "social.reply");
    }
}
