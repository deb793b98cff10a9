//! What each task kind does, through MCP tools only.
//!
//! Generation kinds (research, draft, render_media, and the proposals of publish, reply and
//! transact) make artifacts and never perform an external effect: a publish task proposes a
//! post, a transact task proposes a transfer. Text is drafted by the language model when one is
//! configured ([`crate::draft`]), by the MCP `content.draft` tool otherwise; the judge's
//! feedback reaches either as an instruction and is never part of the text. Effects run only in `execute` tasks, which carry
//! the approval that released them; the approval id is the effect's idempotency key, so a
//! redelivered execute task cannot publish or pay twice.

use std::collections::BTreeSet;
use std::time::Instant;

use chimera_core::content::{self, WritingRules};
use chimera_core::domain::{Confidence, DisclosureLevel, RiskTag, Task, TaskKind};
use chimera_core::effect::{EffectAction, wallet_of};
use chimera_llm::mind::{Mind, MindError};
use chimera_mcp::{Invoked, McpClient, Op, ToolError, Vars, allowed_ops};

use crate::draft;
use crate::effect::Effector;
use chimera_store::PgPool;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// One artifact a task produced, with the call that made it.
#[derive(Debug, Clone)]
pub struct Produced {
    pub bytes: Vec<u8>,
    pub media_type: String,
    /// `text`, `image` or `json` (the asset kind).
    pub kind: &'static str,
    pub call: Call,
}

/// A tool call, for provenance.
#[derive(Debug, Clone)]
pub struct Call {
    pub tool: String,
    pub server: String,
    pub server_version: String,
    pub arguments: Value,
    pub platform: Option<String>,
}

/// Everything a task produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub artifacts: Vec<Produced>,
    pub confidence: Confidence,
    pub risk_tags: BTreeSet<RiskTag>,
    pub disclosure_level: Option<DisclosureLevel>,
}

/// Why a task could not be executed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The task's inputs do not describe work this kind can do.
    #[error("invalid task inputs: {0}")]
    InvalidInputs(String),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Model(#[from] MindError),
    /// The platform refused the effect, and it is not there.
    #[error("the effect was refused: {0}")]
    EffectRefused(String),
    /// The effect may or may not have happened, and a look-up has not told yet: it is not
    /// sent again until it does.
    #[error("effect outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("the effect ledger is unavailable")]
    Ledger(#[from] sqlx::Error),
    /// The platform asked the effect to wait (its rate limit): nothing was done; the task is
    /// due again at `until`.
    #[error("the platform asked to wait until {until}: {reason}")]
    Deferred {
        until: chrono::DateTime<chrono::Utc>,
        reason: String,
    },
}

impl ExecError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidInputs(_) => false,
            Self::Tool(err) => err.is_retryable(),
            Self::Model(err) => err.is_retryable(),
            Self::EffectRefused(_) => false,
            Self::OutcomeUnknown(_) | Self::Ledger(_) | Self::Deferred { .. } => true,
        }
    }
}

fn inputs<T: serde::de::DeserializeOwned>(task: &Task) -> Result<T, ExecError> {
    serde_json::from_value(Value::Object(task.inputs.clone()))
        .map_err(|e| ExecError::InvalidInputs(format!("{} task: {e}", task.kind.as_str())))
}

fn confidence(value: f64) -> Result<Confidence, ExecError> {
    Confidence::try_from(value).map_err(|e| ExecError::InvalidInputs(e.to_string()))
}

fn tags<'a>(topics: impl IntoIterator<Item = &'a str>) -> BTreeSet<RiskTag> {
    topics
        .into_iter()
        .filter_map(|t| RiskTag::parse(t).ok())
        .collect()
}

struct Runner<'a> {
    pool: &'a PgPool,
    mcp: &'a McpClient,
    mind: Option<&'a Mind>,
    /// When the model must have answered.
    answer_by: Instant,
    allowed: &'static [Op],
    task: &'a Task,
}

impl Runner<'_> {
    /// Does `op` (on `platform`, for the task's agent) with the fields of `values`.
    async fn invoke(
        &self,
        op: Op,
        platform: Option<&str>,
        values: Value,
    ) -> Result<Invoked, ExecError> {
        let vars: Vars = match values {
            Value::Object(fields) => fields.into_iter().collect(),
            _ => Vars::new(),
        };
        let agent = Some(self.task.agent_id);
        Ok(self
            .mcp
            .invoke(self.allowed, op, platform, agent, vars)
            .await?)
    }
}

fn json_artifact(value: &Value, invoked: &Invoked, platform: Option<String>) -> Produced {
    Produced {
        bytes: serde_json::to_vec_pretty(value).unwrap_or_default(),
        media_type: "application/json".into(),
        kind: "json",
        call: call(invoked, platform),
    }
}

fn call(invoked: &Invoked, platform: Option<String>) -> Call {
    Call {
        tool: invoked.output.tool.clone(),
        server: invoked.output.server.clone(),
        server_version: invoked.output.server_version.clone(),
        arguments: invoked.arguments.clone(),
        platform,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResearchInputs {
    query: String,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Deserialize)]
struct Hits {
    items: Vec<Hit>,
}

#[derive(Deserialize)]
struct Hit {
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftInputs {
    brief: String,
    platform: String,
    persona: Value,
    /// What the agent said before on the subject (recalled by the planner).
    #[serde(default)]
    memories: Vec<String>,
    /// The plan's angle: what the text should say.
    #[serde(default)]
    angle: Option<String>,
    /// What the plan's research found (filled in when the task is released).
    #[serde(default)]
    research: Option<String>,
    /// The policy's rules for the text.
    #[serde(default)]
    rules: WritingRules,
    /// What worked for the agent this week (its most liked posts).
    #[serde(default)]
    engagement: Option<String>,
    /// The model the policy chose, read by the drafter from the task's inputs.
    #[serde(default)]
    #[allow(dead_code)]
    model: Option<Value>,
}

#[derive(Deserialize)]
struct Draft {
    text: String,
    #[serde(default)]
    topics: Vec<String>,
    quality: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenderInputs {
    prompt: String,
    #[serde(default)]
    width: Option<u32>,
    #[serde(default)]
    height: Option<u32>,
}

#[derive(Deserialize)]
struct Rendered {
    sha256: String,
    media_type: String,
}

/// A publish or reply proposal: the text is given, or drafted from a brief.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostInputs {
    platform: String,
    #[serde(default)]
    in_reply_to: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    brief: Option<String>,
    #[serde(default)]
    persona: Option<Value>,
    #[serde(default)]
    media_sha256: Option<String>,
    #[serde(default)]
    disclosure_level: Option<DisclosureLevel>,
    #[serde(default)]
    confidence: Option<f64>,
    #[serde(default)]
    memories: Vec<String>,
    /// The plan's angle: what the text should say.
    #[serde(default)]
    angle: Option<String>,
    /// What the plan's research found (filled in when the task is released).
    #[serde(default)]
    research: Option<String>,
    /// The policy's rules for the text.
    #[serde(default)]
    rules: WritingRules,
    /// What worked for the agent this week (its most liked posts).
    #[serde(default)]
    engagement: Option<String>,
    /// The model the policy chose, read by the drafter from the task's inputs.
    #[serde(default)]
    #[allow(dead_code)]
    model: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransactInputs {
    from: String,
    to: String,
    amount_cents: i64,
    #[serde(default)]
    memo: String,
}

/// An approved effect: which tool, with which arguments (the idempotency key is added here).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteInputs {
    action: String,
    arguments: Map<String, Value>,
    #[serde(default)]
    disclosure_level: Option<DisclosureLevel>,
}

/// Runs `task` through the MCP tools its kind allows, drafting with `mind` when given (its
/// answer due `answer_by`); an effect goes through the effect ledger in `pool`.
pub async fn run(
    pool: &PgPool,
    mcp: &McpClient,
    mind: Option<&Mind>,
    task: &Task,
    answer_by: Instant,
) -> Result<Outcome, ExecError> {
    let runner = Runner {
        pool,
        mcp,
        mind,
        answer_by,
        allowed: allowed_ops(task.kind),
        task,
    };
    match task.kind {
        TaskKind::Research => research(&runner, task).await,
        TaskKind::Draft => draft(&runner, task).await,
        TaskKind::RenderMedia => render(&runner, task).await,
        TaskKind::Publish | TaskKind::Reply => propose_post(&runner, task).await,
        TaskKind::Transact => propose_transfer(&runner, task).await,
        TaskKind::Execute => execute(&runner, task).await,
    }
}

async fn research(runner: &Runner<'_>, task: &Task) -> Result<Outcome, ExecError> {
    let i: ResearchInputs = inputs(task)?;
    let invoked = runner
        .invoke(
            Op::Research,
            None,
            json!({"query": i.query, "limit": i.limit.unwrap_or(5)}),
        )
        .await?;
    let value: Value = invoked.parse()?;
    let hits: Hits = invoked.parse()?;
    let topics: Vec<String> = hits.items.iter().flat_map(|h| h.tags.clone()).collect();
    Ok(Outcome {
        confidence: confidence(if hits.items.is_empty() { 0.5 } else { 0.95 })?,
        risk_tags: tags(
            topics
                .iter()
                .map(String::as_str)
                .filter(|t| SENSITIVE.contains(t)),
        ),
        disclosure_level: None,
        artifacts: vec![json_artifact(&value, &invoked, None)],
    })
}

/// Topics always flagged for the judge (the agent's policy decides what they mean).
const SENSITIVE: &[&str] = &["politics", "health", "finance", "crypto"];

async fn draft(runner: &Runner<'_>, task: &Task) -> Result<Outcome, ExecError> {
    let i: DraftInputs = inputs(task)?;
    let what = draft::Brief {
        brief: &i.brief,
        platform: &i.platform,
        persona: &i.persona,
        memories: &i.memories,
        angle: i.angle.as_deref(),
        research: i.research.as_deref(),
        engagement: i.engagement.as_deref(),
        rules: &i.rules,
        parent: None,
    };
    let (text, draft, call) = draft_text(runner, task, &what).await?;
    Ok(Outcome {
        confidence: confidence(draft.quality)?,
        risk_tags: tags(draft.topics.iter().map(String::as_str)),
        disclosure_level: None,
        artifacts: vec![Produced {
            bytes: text.into_bytes(),
            media_type: "text/plain; charset=utf-8".into(),
            kind: "text",
            call,
        }],
    })
}

async fn draft_text(
    runner: &Runner<'_>,
    task: &Task,
    what: &draft::Brief<'_>,
) -> Result<(String, Draft, Call), ExecError> {
    let platform = what.platform;
    if let Some(mind) = runner.mind
        && let Some(drafted) = draft::with_model(mind, task, what, runner.answer_by).await?
    {
        let call = Call {
            tool: "llm.chat".into(),
            server: "model".into(),
            server_version: drafted.model.clone(),
            arguments: drafted.provenance.clone(),
            platform: Some(platform.to_owned()),
        };
        let draft = Draft {
            topics: drafted.topics,
            quality: drafted.confidence,
            text: drafted.text.clone(),
        };
        return Ok((drafted.text, draft, call));
    }
    let mut values = json!({"persona": what.persona, "brief": what.brief, "platform": platform});
    if let Some(feedback) = task.feedback.as_deref().and_then(draft::instruction) {
        values["feedback"] = json!(feedback);
    }
    let invoked = runner.invoke(Op::Draft, Some(platform), values).await?;
    let draft: Draft = invoked.parse()?;
    if draft.text.trim().is_empty() || !(0.0..=1.0).contains(&draft.quality) {
        return Err(ToolError::InvalidOutput {
            tool: invoked.output.tool.clone(),
            reason: "empty text or quality outside 0..1".into(),
        }
        .into());
    }
    let call = call(&invoked, Some(platform.to_owned()));
    Ok((draft.text.clone(), draft, call))
}

/// The text of the post a reply answers, read through the platform's MCP server: `None` when
/// the platform does not know it (the reply is written from its brief alone, and the log says
/// so); a read that can succeed later fails the attempt.
async fn parent_text(
    runner: &Runner<'_>,
    platform: &str,
    post_id: &str,
) -> Result<Option<String>, ExecError> {
    #[derive(Deserialize)]
    struct Parent {
        #[serde(default)]
        text: Option<String>,
    }
    let read = runner
        .invoke(
            Op::ReadPost,
            Some(platform),
            json!({"platform": platform, "post_id": post_id}),
        )
        .await
        .and_then(|invoked| Ok(invoked.parse::<Parent>()?));
    match read {
        Ok(parent) => Ok(parent.text.filter(|t| !t.trim().is_empty())),
        Err(err) if err.is_retryable() => Err(err),
        Err(err) => {
            tracing::warn!(task_id = %runner.task.id.0, post_id, error = %err,
                           "the post replied to could not be read: the reply is written from its brief");
            Ok(None)
        }
    }
}

async fn render(runner: &Runner<'_>, task: &Task) -> Result<Outcome, ExecError> {
    let i: RenderInputs = inputs(task)?;
    let mut values = json!({"prompt": i.prompt});
    if let Some(w) = i.width {
        values["width"] = json!(w);
    }
    if let Some(h) = i.height {
        values["height"] = json!(h);
    }
    let invoked = runner.invoke(Op::Render, None, values).await?;
    let meta: Rendered = invoked.parse()?;
    let (bytes, media_type) = invoked.output.image()?;
    // The bytes must be what the tool said they are, and a PNG when it says PNG.
    if chimera_aws::artifacts::sha256_hex(&bytes) != meta.sha256
        || media_type != meta.media_type
        || (media_type == "image/png" && !bytes.starts_with(b"\x89PNG\r\n\x1a\n"))
    {
        return Err(ToolError::InvalidOutput {
            tool: invoked.output.tool.clone(),
            reason: "image bytes do not match the reported hash or type".into(),
        }
        .into());
    }
    Ok(Outcome {
        confidence: confidence(0.95)?,
        risk_tags: BTreeSet::new(),
        disclosure_level: None,
        artifacts: vec![Produced {
            bytes,
            media_type,
            kind: "image",
            call: call(&invoked, None),
        }],
    })
}

async fn propose_post(runner: &Runner<'_>, task: &Task) -> Result<Outcome, ExecError> {
    let i: PostInputs = inputs(task)?;
    let action = if task.kind == TaskKind::Reply {
        if i.in_reply_to.is_none() {
            return Err(ExecError::InvalidInputs("a reply needs in_reply_to".into()));
        }
        EffectAction::Reply
    } else {
        EffectAction::Publish
    };
    let (text, quality, topics, drafted) = match (i.text, i.brief) {
        (Some(text), _) if !text.trim().is_empty() => (text, None, Vec::new(), None),
        (_, Some(brief)) => {
            let persona = i
                .persona
                .ok_or_else(|| ExecError::InvalidInputs("drafting needs a persona".into()))?;
            let parent = match &i.in_reply_to {
                Some(post) => parent_text(runner, &i.platform, post).await?,
                None => None,
            };
            let what = draft::Brief {
                brief: &brief,
                platform: &i.platform,
                persona: &persona,
                memories: &i.memories,
                angle: i.angle.as_deref(),
                research: i.research.as_deref(),
                engagement: i.engagement.as_deref(),
                rules: &i.rules,
                parent: parent.as_deref(),
            };
            let (text, draft, call) = draft_text(runner, task, &what).await?;
            (text, Some(draft.quality), draft.topics, Some(call))
        }
        _ => {
            return Err(ExecError::InvalidInputs(
                "a post needs text or a brief".into(),
            ));
        }
    };
    // The disclosure the policy requires is part of the published text, whoever wrote it.
    let text = match i.rules.disclosure_text.as_deref() {
        Some(disclosure) => content::with_disclosure(
            &text,
            disclosure,
            content::platform_limit(&i.platform).unwrap_or(draft::DEFAULT_LIMIT),
            |t, room| draft::clean(t, room, true),
        ),
        None => text,
    };
    let mut arguments = json!({"platform": i.platform, "text": text});
    if let Some(to) = &i.in_reply_to {
        arguments["in_reply_to"] = json!(to);
    }
    if let Some(media) = &i.media_sha256 {
        arguments["media_sha256"] = json!(media);
    }
    let proposal = json!({"action": action, "arguments": arguments});
    // The proposal is the artifact a reviewer approves; the call that drafted its text (if
    // any) is its provenance.
    let call = drafted.unwrap_or_else(|| Call {
        tool: "proposal".into(),
        server: "worker".into(),
        server_version: env!("CARGO_PKG_VERSION").into(),
        arguments: Value::Object(task.inputs.clone()),
        platform: Some(i.platform.clone()),
    });
    Ok(Outcome {
        confidence: confidence(i.confidence.or(quality).unwrap_or(0.95))?,
        risk_tags: tags(topics.iter().map(String::as_str)),
        disclosure_level: Some(i.disclosure_level.unwrap_or(DisclosureLevel::Automated)),
        artifacts: vec![Produced {
            bytes: serde_json::to_vec_pretty(&proposal).unwrap_or_default(),
            media_type: "application/json".into(),
            kind: "json",
            call,
        }],
    })
}

async fn propose_transfer(runner: &Runner<'_>, task: &Task) -> Result<Outcome, ExecError> {
    let i: TransactInputs = inputs(task)?;
    if i.amount_cents <= 0 {
        return Err(ExecError::InvalidInputs(
            "amount_cents must be positive".into(),
        ));
    }
    // Wallets are per agent id (handles repeat across tenants): a plan pays from its own
    // agent's wallet or not at all.
    if i.from != wallet_of(task.agent_id) {
        return Err(ExecError::InvalidInputs(format!(
            "a transfer pays from its own agent's wallet ({}), not {:?}",
            wallet_of(task.agent_id),
            i.from
        )));
    }
    let invoked = runner
        .invoke(Op::Balance, None, json!({"account": i.from}))
        .await?;
    /// A wallet on a chain also says which chain and token it holds: the approval binds them.
    #[derive(Deserialize)]
    struct Balance {
        balance_cents: i64,
        #[serde(default)]
        chain_id: Option<u64>,
        #[serde(default)]
        token: Option<String>,
    }
    let balance: Balance = invoked.parse()?;
    let covered = balance.balance_cents >= i.amount_cents;
    let mut arguments =
        json!({"from": i.from, "to": i.to, "amount_cents": i.amount_cents, "memo": i.memo});
    if let (Some(chain_id), Some(token)) = (balance.chain_id, &balance.token) {
        if i.to.parse::<chimera_chain::Address>().is_err() {
            return Err(ExecError::EffectRefused(format!(
                "the wallet pays on chain {chain_id}, where {:?} is not an address (0x and 40 hex digits)",
                i.to
            )));
        }
        arguments["chain_id"] = json!(chain_id);
        arguments["token"] = json!(token.to_lowercase());
        arguments["to"] = json!(i.to.to_lowercase());
    }
    let proposal = json!({
        "action": EffectAction::Transfer,
        "arguments": arguments,
        "balance_cents": balance.balance_cents,
    });
    let mut risk = vec!["finance"];
    if !covered {
        risk.push("insufficient_funds");
    }
    Ok(Outcome {
        confidence: confidence(if covered { 0.95 } else { 0.3 })?,
        risk_tags: tags(risk),
        disclosure_level: None,
        artifacts: vec![json_artifact(&proposal, &invoked, None)],
    })
}

async fn execute(runner: &Runner<'_>, task: &Task) -> Result<Outcome, ExecError> {
    let approval = task
        .approval_id
        .ok_or_else(|| ExecError::InvalidInputs("an execute task needs its approval id".into()))?;
    let i: ExecuteInputs = inputs(task)?;
    let Some(action) = EffectAction::parse(&i.action) else {
        return Err(ExecError::InvalidInputs(format!(
            "{} is not an effect",
            i.action
        )));
    };
    let mut arguments = i.arguments;
    // The approval is the effect's identity: however often this task runs, one effect.
    arguments.insert(
        "idempotency_key".into(),
        json!(format!("approval:{}", approval.0)),
    );
    let platform = arguments
        .get("platform")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let op = match action {
        EffectAction::Publish => Op::Publish,
        EffectAction::Reply => Op::Reply,
        EffectAction::Transfer => Op::Transfer,
    };
    if action == EffectAction::Transfer
        && let Some(cents) = arguments.get("amount_cents").and_then(Value::as_i64)
    {
        // What a wallet tool takes: whole units of the currency.
        arguments.insert(
            "amount".into(),
            json!(chimera_chain::units::cents_as_decimal(cents)),
        );
    }
    let values = arguments.clone();
    let mut vars: Vars = arguments.into_iter().collect();
    let agent = Some(task.agent_id);
    // Credentials read, the parent read, arguments filled: nothing has reached the platform.
    let prepared = runner
        .mcp
        .prepare(
            runner.allowed,
            op,
            platform.as_deref(),
            agent,
            std::mem::take(&mut vars),
        )
        .await?;
    let performed = Effector {
        pool: runner.pool,
        mcp: runner.mcp,
        agent: task.agent_id,
        approval,
        platform: platform.as_deref(),
        values: &values,
        answer_by: runner.answer_by,
    }
    .perform(&prepared)
    .await?;
    let mut risk = Vec::new();
    if action.is_financial() {
        risk.push("finance");
    }
    Ok(Outcome {
        confidence: confidence(1.0)?,
        risk_tags: tags(risk),
        disclosure_level: i.disclosure_level,
        artifacts: vec![Produced {
            bytes: serde_json::to_vec_pretty(&performed.value).unwrap_or_default(),
            media_type: "application/json".into(),
            kind: "json",
            call: performed.call,
        }],
    })
}
