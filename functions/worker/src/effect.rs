//! An approved effect performed through the effect ledger ([`chimera_store::effects`]), so a
//! lost answer never makes it happen twice.
//!
//! 1. The effect is recorded `intended` (once per approval). Confirmed already: its recorded
//!    receipt is the answer, no tool is called. Failed already: the refusal stands.
//! 2. Before the call it becomes `sent`; the tool's answer makes it `confirmed` with the
//!    platform's id. A call that comes back without a usable answer (an error, a timeout, a
//!    dropped connection) makes it `unknown`: the platform may hold it.
//! 3. An effect met in `sent` or `unknown` is resolved before anything is sent again. A tool
//!    given the idempotency key (`chimera-world`) answers a repeat with the first outcome, so
//!    sending again *is* the look-up. Otherwise the profile's `lookup` lists the account's
//!    recent posts and the effect is the one with its text (and parent) that no other effect
//!    claims (a transfer: `find_transfer` lists the wallet's transfers on chain, and it is the
//!    one to its payee of its amount that no other effect claims, by transaction hash); nothing
//!    found counts as absent only once the platform's indexing lag (`visible_within_ms`) has
//!    passed since the call came back, and never while the wallet has transactions pending. Found: `confirmed`. Absent:
//!    sent once more (or `failed`, when the platform's answer was a refusal).
//!
//! Each move is a conditional update on the state read, so two workers never both send.

use std::time::{Duration, Instant};

use chimera_core::domain::{AgentId, EffectState, ReviewId};
use chimera_mcp::{Invoked, McpClient, Op, Prepared, ToolError, Vars};
use chimera_store::PgPool;
use chimera_store::effects::{self, Confirmation, Confirmed, Effect, Intent};
use serde_json::{Map, Value};

use crate::execute::{Call, ExecError};

/// Looked up at most this often while waiting out a platform's indexing lag.
const LOOKUP_EVERY: Duration = Duration::from_millis(500);

/// Kept back from the task's deadline: a look-up that would end later is left to the next
/// delivery.
const LOOKUP_MARGIN: Duration = Duration::from_secs(2);

/// What an effect did on its platform: the mapped answer (or the post a look-up found) and the
/// call that did it.
pub struct Performed {
    pub value: Value,
    pub call: Call,
}

/// Everything performing one effect needs.
pub struct Effector<'a> {
    pub pool: &'a PgPool,
    pub mcp: &'a McpClient,
    pub agent: AgentId,
    pub approval: ReviewId,
    /// The platform (`None` for a transfer).
    pub platform: Option<&'a str>,
    /// The effect's own values (text, parent...), what a look-up matches on.
    pub values: &'a Map<String, Value>,
    /// When the task must have answered.
    pub answer_by: Instant,
}

/// What a look-up concluded.
enum Found {
    There(Value),
    Absent,
    /// Not found yet, and the platform's lag has not passed: try again on the next delivery.
    NotYet,
}

impl Effector<'_> {
    /// Performs `prepared` (an effect) once, whatever happened to earlier attempts.
    pub async fn perform(&self, prepared: &Prepared) -> Result<Performed, ExecError> {
        let intent = Intent {
            approval: self.approval,
            agent: self.agent,
            op: prepared.op.as_str(),
            platform: self.platform.unwrap_or_default(),
        };
        let mut effect = effects::intend(self.pool, intent).await?;
        // A confirmation racing this one moves the effect at most once more.
        for _ in 0..3 {
            match effect.state {
                EffectState::Confirmed => return Ok(recorded(&effect, prepared, self.platform)),
                EffectState::Failed => {
                    return Err(ExecError::EffectRefused(
                        effect.error.clone().unwrap_or_default(),
                    ));
                }
                EffectState::Intended => return self.send(&effect, prepared).await,
                EffectState::Sent | EffectState::Unknown if prepared.keyed() => {
                    return self.send(&effect, prepared).await;
                }
                EffectState::Sent | EffectState::Unknown => {
                    match self.look_up(&effect, prepared).await? {
                        Found::There(post) => match self.found(&effect, prepared, post).await? {
                            Ok(done) => return Ok(done),
                            Err(moved) => effect = moved,
                        },
                        Found::Absent => return self.send(&effect, prepared).await,
                        Found::NotYet => return Err(not_yet(&effect)),
                    }
                }
            }
        }
        Err(ExecError::OutcomeUnknown(format!(
            "effect of approval {} keeps moving under other workers",
            self.approval.0
        )))
    }

    /// Hands the effect to its tool (after recording that it is about to).
    async fn send(&self, seen: &Effect, prepared: &Prepared) -> Result<Performed, ExecError> {
        if !effects::mark_sent(self.pool, seen).await? {
            return Err(ExecError::OutcomeUnknown(format!(
                "effect of approval {} was moved by another worker",
                self.approval.0
            )));
        }
        tracing::info!(approval = %self.approval.0, op = %prepared.op, sends = seen.sends + 1, "effect sent");
        match self.mcp.send(prepared).await {
            Ok(invoked) => self.answered(prepared, invoked).await,
            Err(err) => self.lost(prepared, err).await,
        }
    }

    /// The tool answered: the effect is confirmed with the platform's id.
    async fn answered(
        &self,
        prepared: &Prepared,
        invoked: Invoked,
    ) -> Result<Performed, ExecError> {
        let confirmation = Confirmation {
            platform_ref: platform_ref(&invoked.value),
            receipt: &invoked.value,
            tool: &invoked.output.tool,
            server: &invoked.output.server,
            server_version: &invoked.output.server_version,
        };
        match effects::confirm(self.pool, self.approval, confirmation).await? {
            Confirmed::Done => {}
            Confirmed::Moved(effect) if effect.state == EffectState::Confirmed => {
                return Ok(recorded(&effect, prepared, self.platform));
            }
            Confirmed::Moved(effect) => {
                return Err(ExecError::OutcomeUnknown(format!(
                    "the tool answered, and the ledger holds the effect as {}",
                    effect.state
                )));
            }
            Confirmed::Taken => {
                let reason = "the platform answered with the id of another effect";
                effects::mark_unknown(self.pool, self.approval, reason).await?;
                return Err(ToolError::InvalidOutput {
                    tool: invoked.output.tool.clone(),
                    reason: reason.into(),
                }
                .into());
            }
        }
        tracing::info!(approval = %self.approval.0, platform_ref = ?platform_ref(&invoked.value), "effect confirmed");
        Ok(Performed {
            call: Call {
                tool: invoked.output.tool.clone(),
                server: invoked.output.server.clone(),
                server_version: invoked.output.server_version.clone(),
                arguments: invoked.arguments.clone(),
                platform: self.platform.map(str::to_owned),
            },
            value: invoked.value,
        })
    }

    /// The call came back without a usable answer: the platform may hold the effect. A keyed
    /// tool is asked again on the next delivery; otherwise the effect is looked for now.
    async fn lost(&self, prepared: &Prepared, err: ToolError) -> Result<Performed, ExecError> {
        if let ToolError::RateLimited { retry_after, .. } = &err {
            // Turned away before anything was written: as if never sent, due when the
            // platform lets the account write again.
            tracing::warn!(approval = %self.approval.0, error = %err, "effect rate limited: it waits");
            effects::turned_away(self.pool, self.approval, &err.to_string()).await?;
            let until = chrono::Utc::now()
                + chrono::Duration::from_std(*retry_after).unwrap_or(chrono::Duration::hours(1));
            return Err(ExecError::Deferred {
                until,
                reason: err.to_string(),
            });
        }
        tracing::warn!(approval = %self.approval.0, error = %err, "effect outcome unknown");
        let effect = effects::mark_unknown(self.pool, self.approval, &err.to_string())
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        if prepared.keyed() {
            if !err.is_retryable() {
                effects::fail(self.pool, self.approval, &err.to_string()).await?;
            }
            return Err(err.into());
        }
        match self.look_up(&effect, prepared).await? {
            Found::There(post) => match self.found(&effect, prepared, post).await? {
                Ok(done) => Ok(done),
                Err(moved) if moved.state == EffectState::Confirmed => {
                    Ok(recorded(&moved, prepared, self.platform))
                }
                Err(_) => Err(err.into()),
            },
            // The platform refused, and it does not hold the effect: the task fails visibly
            // (what it reserved goes back), nothing is sent again.
            Found::Absent if !err.is_retryable() => {
                effects::fail(self.pool, self.approval, &err.to_string()).await?;
                Err(ExecError::EffectRefused(err.to_string()))
            }
            // Absent: the next delivery looks once more (the lag has passed) and sends.
            Found::Absent => Err(err.into()),
            Found::NotYet => Err(not_yet(&effect)),
        }
    }

    /// A look-up found the effect: confirmed from what the platform shows (or `Err` with the
    /// effect as another worker moved it).
    async fn found(
        &self,
        effect: &Effect,
        prepared: &Prepared,
        post: Value,
    ) -> Result<Result<Performed, Effect>, ExecError> {
        let binding = self
            .mcp
            .config()
            .profile
            .binding(lookup_op(prepared.op), self.platform);
        let confirmation = Confirmation {
            platform_ref: platform_ref(&post),
            receipt: &post,
            tool: &binding.tool,
            server: binding.server.as_deref().unwrap_or(&prepared.server),
            server_version: "",
        };
        match effects::confirm(self.pool, self.approval, confirmation).await? {
            Confirmed::Done => {
                tracing::info!(approval = %self.approval.0, sends = effect.sends, platform_ref = ?platform_ref(&post), "effect found on its platform: confirmed, not sent again");
                Ok(Ok(Performed {
                    call: Call {
                        tool: prepared.binding.tool.clone(),
                        server: prepared.server.clone(),
                        server_version: String::new(),
                        arguments: prepared.arguments.clone(),
                        platform: self.platform.map(str::to_owned),
                    },
                    value: post,
                }))
            }
            // Claimed meanwhile by another effect with the same words: not this one's.
            Confirmed::Taken => Ok(Err(effect.clone())),
            Confirmed::Moved(moved) => Ok(Err(moved)),
        }
    }

    /// Looks for the effect on its platform, polling until the platform's indexing lag has
    /// passed since the call came back (or the task's time is nearly up).
    async fn look_up(&self, effect: &Effect, prepared: &Prepared) -> Result<Found, ExecError> {
        let op = lookup_op(prepared.op);
        let binding = self.mcp.config().profile.binding(op, self.platform);
        let lag = Duration::from_millis(binding.visible_within_ms.unwrap_or(0));
        let came_back = match (effect.answered_at, effect.sent_at) {
            (Some(at), _) => at,
            // Sent and never answered (its worker died mid-call): the call may have lasted
            // up to its timeout.
            (None, Some(sent)) => sent + self.mcp.config().call_timeout,
            (None, None) => chrono::Utc::now(),
        };
        let settled_at = came_back + lag;
        let names: &[&str] = if op == Op::FindTransfer {
            &[
                "to",
                "amount_cents",
                "amount",
                "token",
                "chain_id",
                "idempotency_key",
            ]
        } else {
            &["platform", "text", "in_reply_to", "idempotency_key"]
        };
        let mut vars: Vars = names
            .iter()
            .filter_map(|k| self.values.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        if let Some(p) = self.platform {
            vars.insert("platform".into(), Value::String(p.to_owned()));
        }
        loop {
            let listed = self
                .mcp
                .invoke(
                    &[op],
                    op,
                    self.platform,
                    Some(self.agent),
                    vars.clone(),
                )
                .await
                .map_err(|e| {
                    ExecError::OutcomeUnknown(format!(
                        "looking the effect up failed ({e}); it is not sent again until found or shown absent"
                    ))
                })?;
            let matching = if op == Op::FindTransfer {
                transfers(&listed.value, self.values)
            } else {
                candidates(&listed.value, self.values, prepared.op)
            };
            let matching = matching.map_err(|e| {
                ExecError::OutcomeUnknown(format!(
                    "{e}; the effect is not sent again until found or shown absent"
                ))
            })?;
            for post in matching {
                let Some(id) = platform_ref(&post) else {
                    continue;
                };
                let platform = self.platform.unwrap_or_default();
                if !effects::taken_by_another(self.pool, platform, id, self.approval).await? {
                    return Ok(Found::There(post));
                }
            }
            let now = chrono::Utc::now();
            if now >= settled_at {
                return Ok(Found::Absent);
            }
            let wait = (settled_at - now)
                .to_std()
                .unwrap_or_default()
                .min(LOOKUP_EVERY);
            if Instant::now() + wait + LOOKUP_MARGIN > self.answer_by {
                return Ok(Found::NotYet);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// How an effect of `op` is looked for.
fn lookup_op(op: Op) -> Op {
    if op == Op::Transfer {
        Op::FindTransfer
    } else {
        Op::Lookup
    }
}

/// The transfers of a `find_transfer` answer (`{"transfers": [{transfer_id, to,
/// amount_cents, token?}], "pending": n}`) that are this effect: to its payee, of its amount
/// (and token, when both name one). While the wallet has transactions pending none counts
/// as absent: the chain has not said yet.
fn transfers(listed: &Value, values: &Map<String, Value>) -> Result<Vec<Value>, String> {
    let to = values.get("to").and_then(Value::as_str);
    let amount = values.get("amount_cents").and_then(Value::as_i64);
    let token = values.get("token").and_then(Value::as_str);
    let listed_transfers = listed
        .get("transfers")
        .and_then(Value::as_array)
        .ok_or("the look-up's answer has no list of transfers")?;
    let mut found = Vec::new();
    for transfer in listed_transfers {
        let (Some(_), Some(payee), Some(cents)) = (
            transfer.get("transfer_id").and_then(Value::as_str),
            transfer.get("to").and_then(Value::as_str),
            transfer.get("amount_cents").and_then(Value::as_i64),
        ) else {
            // A transfer of a fraction of a cent is none of Chimera's: skipped, not an error.
            if transfer
                .get("transfer_id")
                .and_then(Value::as_str)
                .is_some()
                && transfer.get("to").and_then(Value::as_str).is_some()
            {
                continue;
            }
            return Err(format!(
                "a transfer of the look-up has no transfer_id or payee: {transfer}"
            ));
        };
        let same_token = match (token, transfer.get("token").and_then(Value::as_str)) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => true,
        };
        if to.is_some_and(|to| to.eq_ignore_ascii_case(payee))
            && Some(cents) == amount
            && same_token
        {
            found.push(transfer.clone());
        }
    }
    let pending = listed.get("pending").and_then(Value::as_u64).unwrap_or(0);
    if found.is_empty() && pending > 0 {
        return Err(format!(
            "the wallet has {pending} transaction(s) pending: the transfer may be among them"
        ));
    }
    Ok(found)
}

/// The posts of a look-up's answer (`{"posts": [{post_id, text, in_reply_to}]}`) that are
/// this effect: the same text, under the same parent (a publish under none). An answer that is
/// not such a list (a broken mapping, a server that changed) is an error, never "absent": an
/// absent effect is sent again.
fn candidates(listed: &Value, values: &Map<String, Value>, op: Op) -> Result<Vec<Value>, String> {
    let text = values.get("text").and_then(Value::as_str).map(str::trim);
    let parent = match op {
        Op::Reply => values.get("in_reply_to").and_then(Value::as_str),
        _ => None,
    };
    let posts = listed
        .get("posts")
        .and_then(Value::as_array)
        .ok_or("the look-up's answer has no list of posts")?;
    let mut found = Vec::new();
    for post in posts {
        let (Some(_), Some(post_text)) = (
            post.get("post_id").and_then(Value::as_str),
            post.get("text").and_then(Value::as_str),
        ) else {
            return Err(format!(
                "a post of the look-up has no post_id or text: {post}"
            ));
        };
        if Some(post_text.trim()) == text
            && post.get("in_reply_to").and_then(Value::as_str) == parent
        {
            found.push(post.clone());
        }
    }
    Ok(found)
}

/// The platform's id in a mapped answer: a post's, or a transfer's.
fn platform_ref(value: &Value) -> Option<&str> {
    ["post_id", "transfer_id"]
        .into_iter()
        .find_map(|k| value.get(k).and_then(Value::as_str))
}

/// A confirmed effect, answered from the ledger.
fn recorded(effect: &Effect, prepared: &Prepared, platform: Option<&str>) -> Performed {
    Performed {
        value: effect.receipt.clone().unwrap_or_default(),
        call: Call {
            tool: effect
                .tool
                .clone()
                .unwrap_or_else(|| prepared.binding.tool.clone()),
            server: effect
                .server
                .clone()
                .unwrap_or_else(|| prepared.server.clone()),
            server_version: effect.server_version.clone().unwrap_or_default(),
            arguments: prepared.arguments.clone(),
            platform: platform.map(str::to_owned),
        },
    }
}

fn not_yet(effect: &Effect) -> ExecError {
    ExecError::OutcomeUnknown(format!(
        "effect of approval {} was sent {} time(s) and its outcome is unknown; not found on the \
         platform yet, looking again on the next delivery",
        effect.approval.0, effect.sends
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(text: &str) -> Map<String, Value> {
        json!({"platform": "bluesky", "text": text})
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn a_look_up_finds_the_post_with_the_effects_words_and_parent() {
        let listed = json!({"posts": [
            {"post_id": "at://a/1", "text": "Hello ", "in_reply_to": null},
            {"post_id": "at://a/2", "text": "Hello", "in_reply_to": "at://b/9"},
            {"post_id": "at://a/3", "text": "Other"}]});
        let found = candidates(&listed, &values("Hello"), Op::Publish).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["post_id"], "at://a/1");
        assert!(
            candidates(&json!({"posts": []}), &values("Hello"), Op::Publish)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_answer_that_is_not_a_list_of_posts_is_never_read_as_absent() {
        for broken in [
            json!({}),
            json!({"posts": null}),
            json!({"posts": [{"post_id": "at://a/1"}]}),
            json!({"posts": [{"text": "Hello"}]}),
        ] {
            assert!(
                candidates(&broken, &values("Hello"), Op::Publish).is_err(),
                "{broken}"
            );
        }
    }
}
