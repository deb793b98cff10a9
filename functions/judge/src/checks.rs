//! What the judge checks before the routing policy decides.
//!
//! - [`belongs_to`]: the result is for its task as stored (goal, agent, tenant, kind, and for
//!   the current attempt the same read and write sets): anything else is a forged or corrupted
//!   message, refused outright.
//! - [`inspect`]: the artifacts are there; a proposal (publish, reply, transfer) names the
//!   action its task kind allows, with usable arguments; and for a financial action the CFO
//!   checks the amount against the goal's budget and the agent's budget ledger. The CFO's
//!   refusal is final (a re-run cannot make money appear); other failures are feedback for a
//!   retry.
//! - the text of a draft or a post, whatever the worker claimed about it: the deterministic
//!   checks of [`chimera_core::gate::check_text`] (length, banned phrases, links in every form,
//!   disclosure, internal text, degenerate text, echoed feedback, instructions and spam), and
//!   the sensitive topics the text itself touches, by the policy's lexicon;
//! - the untrusted inputs that shaped it (the goal's text, recalled memories): instruction-like
//!   text or spam there sends the effect to a person ([`chimera_core::gate::suspicious`]).

use std::collections::BTreeSet;

use chimera_aws::artifacts::{ArtifactStore, StorageError};
use chimera_core::domain::{ArtifactRef, TaskKind, TaskResult};
use chimera_core::effect::{MAX_POST_CHARS, Proposal, expected_action};
use chimera_core::gate::{self, Context};
use chimera_core::money;
use chimera_store::PgPool;
use chimera_store::budget;
use chimera_store::judging::TaskState;
use serde_json::Value;

/// What the checks found.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// Failed checks, in words: feedback for a retry.
    pub failed: Vec<String>,
    /// The CFO refused the financial action.
    pub cfo_refusal: Option<String>,
    /// The effect the result proposes, if it is a proposal and readable.
    pub proposal: Option<Proposal>,
    /// The amount of a financial proposal.
    pub amount_cents: Option<i64>,
    /// The payment fits the agent's auto-pay limit for today (an admin's setting; none:
    /// every payment waits for a person) and its other limits. The commit checks them again
    /// under the budget's lock.
    pub auto_pay: bool,
    /// The text the result says (a draft's, a post's).
    pub text: Option<String>,
    /// Sensitive topics the judge found in the text itself (the policy's lexicon).
    pub topics: BTreeSet<String>,
    /// Instruction-like text or spam in the inputs that shaped the result.
    pub suspicious: Vec<String>,
    /// The content checks that ran and passed, in words, for the review card.
    pub passed: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("database error during the checks")]
    Database(#[from] sqlx::Error),
}

/// Whether `result` is a result of its task as stored.
pub fn belongs_to(result: &TaskResult, task: &TaskState) -> Result<(), anyhow::Error> {
    let mut wrong = Vec::new();
    if result.goal_id != task.goal_id {
        wrong.push("goal");
    }
    if result.agent_id != task.agent_id {
        wrong.push("agent");
    }
    if result.tenant_id != task.tenant_id {
        wrong.push("tenant");
    }
    if result.task_kind != task.kind {
        wrong.push("kind");
    }
    if result.attempt > task.attempt {
        wrong.push("attempt");
    }
    if result.attempt == task.attempt {
        if serde_json::to_value(&result.read_set).ok().as_ref() != Some(&task.read_set) {
            wrong.push("read set");
        }
        let written: BTreeSet<&str> = result.write_set.iter().map(|k| k.as_str()).collect();
        let stored: BTreeSet<&str> = task.write_set.iter().map(String::as_str).collect();
        if written != stored {
            wrong.push("write set");
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "result {} does not match its task {} ({})",
            result.id,
            result.task_id,
            wrong.join(", ")
        ))
    }
}

pub async fn inspect(
    pool: &PgPool,
    artifacts: &ArtifactStore,
    result: &TaskResult,
    task: &TaskState,
) -> Result<Findings, InspectError> {
    let mut findings = Findings::default();
    if result.artifacts.is_empty() {
        findings.failed.push("the result has no artifact".into());
    }
    for (i, a) in result.artifacts.iter().enumerate() {
        if a.s3_key.is_none() && a.inline.is_none() {
            findings
                .failed
                .push(format!("artifact {i} is neither stored nor inline"));
        }
        if a.media_type.starts_with("text/")
            && a.inline.as_deref().is_some_and(|t| t.trim().is_empty())
        {
            findings.failed.push(format!("artifact {i} is empty text"));
        }
    }
    if result.task_kind == TaskKind::Draft
        && let Some(artifact) = result
            .artifacts
            .iter()
            .find(|a| a.media_type.starts_with("text/"))
    {
        match read_bytes(artifacts, artifact).await? {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => {
                    let platform = task.inputs.get("platform").and_then(Value::as_str);
                    check_text(task, &text, platform, &mut findings);
                    findings.text = Some(text);
                }
                Err(_) => findings.failed.push("the draft is not UTF-8 text".into()),
            },
            Err(reason) => findings
                .failed
                .push(format!("the draft is unreadable: {reason}")),
        }
    }
    findings.suspicious = suspicious_inputs(task);
    let Some(action) = expected_action(result.task_kind) else {
        return Ok(findings);
    };
    let proposal = match result.artifacts.first() {
        Some(artifact) => read_proposal(artifacts, artifact).await?,
        None => return Ok(findings),
    };
    let proposal = match proposal {
        Ok(p) => p,
        Err(reason) => {
            findings
                .failed
                .push(format!("the proposal is unreadable: {reason}"));
            return Ok(findings);
        }
    };
    if proposal.action != action.as_str() {
        findings.failed.push(format!(
            "a {} task may only propose {action}, not {}",
            result.task_kind.as_str(),
            proposal.action
        ));
        return Ok(findings);
    }
    let text = |name: &str| proposal.arguments.get(name).and_then(Value::as_str);
    if result.task_kind.is_publishing() {
        match text("text") {
            Some(t) if !t.trim().is_empty() && t.chars().count() <= MAX_POST_CHARS => {}
            _ => findings.failed.push(format!(
                "the post text must be 1..={MAX_POST_CHARS} characters"
            )),
        }
        if text("platform").is_none_or(str::is_empty) {
            findings.failed.push("the post names no platform".into());
        }
        if let Some(post) = text("text") {
            check_text(task, post, text("platform"), &mut findings);
            findings.text = Some(post.to_owned());
        }
    }
    if result.task_kind.is_financial() {
        let amount = proposal
            .arguments
            .get("amount_cents")
            .and_then(Value::as_i64);
        match amount {
            Some(a) if a > 0 => {
                findings.amount_cents = Some(a);
                (findings.cfo_refusal, findings.auto_pay) = cfo(pool, task, a).await?;
            }
            _ => findings
                .failed
                .push("the transfer has no positive amount_cents".into()),
        }
        if text("to").is_none_or(str::is_empty) {
            findings
                .failed
                .push("the transfer names no recipient".into());
        }
        // The memo travels with the money: what the checks find in it is for a person to see
        // (it comes from the goal, so a new attempt would not change it).
        if let Some(memo) = text("memo").filter(|m| !m.trim().is_empty()) {
            let persona = gate::persona_words(&task.persona);
            let checks = gate::check_text(
                &task.policy,
                memo,
                &Context {
                    persona: &persona,
                    ..Context::default()
                },
            );
            findings.suspicious.extend(
                checks
                    .failed
                    .into_iter()
                    .map(|why| format!("the transfer's memo: {why}")),
            );
        }
    }
    findings.proposal = Some(proposal);
    Ok(findings)
}

/// The CFO: a financial action must fit the goal's budget, the policy's spend limits and the
/// agent's balance. The spend itself happens, under the approval's key and the budget's lock
/// (the limits checked again there), in the transaction that approves the action.
/// Returns the CFO's refusal, if any, and whether the payment may go without a person (within
/// the auto-pay limit, from the same reading of the day's spend).
async fn cfo(
    pool: &PgPool,
    task: &TaskState,
    amount: i64,
) -> Result<(Option<String>, bool), sqlx::Error> {
    if let Some(limit) = task.constraints.get("budget_cents").and_then(Value::as_i64)
        && amount > limit
    {
        let why = format!("CFO: {amount} cents exceeds the goal's budget of {limit} cents");
        return Ok((Some(why), false));
    }
    let mut conn = pool.acquire().await?;
    let today = budget::spent_today(&mut conn, task.agent_id, "").await?;
    drop(conn);
    let limits = &task.policy.spend;
    if let Some(why) = budget::over_limits(amount, today, limits, false) {
        return Ok((Some(format!("CFO: {why}")), false));
    }
    let refusal = match budget::balance(pool, task.agent_id).await? {
        None => Some("CFO: the agent has no budget".into()),
        Some(balance) if balance < money::from_cents(amount) => Some(format!(
            "CFO: insufficient budget: {} left, {amount} cents requested",
            money::show(balance)
        )),
        Some(_) => None,
    };
    let auto_pay = refusal.is_none() && budget::over_limits(amount, today, limits, true).is_none();
    Ok((refusal, auto_pay))
}

/// The brief a text of `task` was written from: its own, or its goal's.
pub fn brief(task: &TaskState) -> &str {
    task.inputs
        .get("brief")
        .and_then(Value::as_str)
        .unwrap_or(&task.goal_text)
}

/// Instruction-like text or spam in the untrusted inputs of `task`.
fn suspicious_inputs(task: &TaskState) -> Vec<String> {
    let mut inputs = vec![("the goal's text", task.goal_text.as_str())];
    if let Some(brief) = task.inputs.get("brief").and_then(Value::as_str)
        && brief != task.goal_text
    {
        inputs.push(("the brief", brief));
    }
    let memories: Vec<&str> = task
        .inputs
        .get("memories")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for memory in memories {
        inputs.push(("a recalled memory", memory));
    }
    gate::suspicious(&inputs, &gate::persona_words(&task.persona))
}

/// The deterministic checks on `text`, and its topics by the policy's lexicon.
fn check_text(task: &TaskState, text: &str, platform: Option<&str>, findings: &mut Findings) {
    let persona = gate::persona_words(&task.persona);
    let said_before: Vec<String> = task
        .inputs
        .get("memories")
        .and_then(serde_json::Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let field = |value: &serde_json::Value, name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let asked = [
        field(&task.inputs, "brief"),
        task.goal_text.clone(),
        field(&task.persona, "name"),
        field(&task.persona, "voice"),
    ]
    .join("\n");
    let checks = gate::check_text(
        &task.policy,
        text,
        &Context {
            platform,
            persona: &persona,
            feedback: task.feedback.as_deref(),
            said_before: &said_before,
            asked: &asked,
        },
    );
    findings.passed.extend(checks.passed);
    findings.failed.extend(checks.failed);
    findings.topics.extend(checks.topics);
}

async fn read_proposal(
    artifacts: &ArtifactStore,
    artifact: &ArtifactRef,
) -> Result<Result<Proposal, String>, StorageError> {
    Ok(read_bytes(artifacts, artifact)
        .await?
        .and_then(|bytes| Proposal::from_slice(&bytes)))
}

/// An artifact's bytes, inline or from the bucket; a reason when they are not usable.
async fn read_bytes(
    artifacts: &ArtifactStore,
    artifact: &ArtifactRef,
) -> Result<Result<Vec<u8>, String>, StorageError> {
    Ok(Ok(match (&artifact.inline, &artifact.s3_key) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(key)) => match artifacts.get(key, &artifact.sha256).await {
            Ok(bytes) => bytes,
            Err(StorageError::Corrupt { key, .. }) => {
                return Ok(Err(format!("object {key} does not match its hash")));
            }
            Err(other) => return Err(other),
        },
        (None, None) => return Ok(Err("no bytes".into())),
    }))
}
