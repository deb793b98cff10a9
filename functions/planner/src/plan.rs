//! Decomposition: a goal -> a small DAG of atomic tasks.
//!
//! [`Planner`] is the seam: [`TemplatePlanner`] is the deterministic default (works offline);
//! the model's planner ([`crate::llm::LlmPlanner`]) is a drop-in whose output passes the same
//! validation ([`validate`]) before anything is stored or enqueued, and which falls back to the
//! templates. A [`Plan`] says who made it ([`PlanMeta`]); the goal records it.
//!
//! Tasks name what they read and write as agent state keys, so tasks of one goal on different
//! platforms never conflict, while two goals publishing to the same platform's calendar do,
//! and the later one is replanned with fresh versions.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use chimera_core::content::WritingRules;
use chimera_core::domain::{Goal, StateKey, StateVersion, Task, TaskId, TaskKind};
use chimera_core::effect::wallet_of;
use chimera_core::goal::Constraints;
use chimera_core::routing::Policy;
pub use chimera_store::dag::Post;
pub use chimera_store::engagement::WeekSummary;
use chimera_store::keys;
pub use chimera_store::memories::Recalled;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Inputs filled from a dependency's committed result when the task is released: the text of
/// a draft, the hash of a rendered image.
pub const TEXT_FROM: &str = "text_from";
pub const MEDIA_FROM: &str = "media_from";
/// The research whose findings a text is written with (filled into `research` on release).
pub const RESEARCH_FROM: &str = "research_from";

/// What a planner knows about the goal's agent.
#[derive(Debug, Clone)]
pub struct AgentContext {
    pub handle: String,
    pub persona: Value,
    pub policy: Policy,
    /// What it published last, newest first.
    pub recent_posts: Vec<Post>,
    /// What it said before nearest in meaning to the goal, nearest first (semantic memory).
    pub memories: Vec<Recalled>,
    /// What worked in the last seven days (engagement of its posts).
    pub week: WeekSummary,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("goal kind {0:?} cannot be planned")]
    UnsupportedKind(String),
    #[error("invalid goal: {0}")]
    InvalidGoal(String),
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    /// The model is busy, slow or unreachable: the goal waits and is planned later.
    #[error("the model cannot plan now: {0}")]
    ModelBusy(String),
}

/// Why the templates planned where a model was configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// The model's answers were not plans, after the retries.
    Invalid,
    /// The provider refused the request.
    Refused,
    /// The agent's budget could not cover the call.
    OverBudget,
    /// The model stayed busy or unreachable past the time a goal waits for it.
    Unavailable,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Refused => "refused",
            Self::OverBudget => "over_budget",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Who made a plan, recorded on the goal.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlanMeta {
    /// `model`, `template`, or `rules` (a goal with nothing to choose).
    pub planner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The SHA-256 of the last prompt the model was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_sha256: Option<String>,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// What the model calls cost, in micros (10,000 to the cent).
    pub micros: i64,
    /// Calls made to the model.
    pub attempts: u32,
    /// Why the model's plan was not used (the templates planned instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// The kind of `fallback`, for counting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_kind: Option<Fallback>,
    /// The versions of the agent's persona and policy the plan was made under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documents: Option<chimera_store::dag::Documents>,
    /// The memories the plan was made with (and its drafts are written with), nearest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub memories: Vec<UsedMemory>,
    /// Why no memory could be recalled, when an embedder is configured but failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_error: Option<String>,
    /// The agent's week the plan was made with (engagement of its posts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub week: Option<WeekSummary>,
}

/// A memory a plan used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsedMemory {
    pub id: uuid::Uuid,
    pub kind: String,
    pub platform: Option<String>,
    /// Cosine distance to the goal (0 = the same meaning).
    pub distance: f64,
    /// Likes of the post it remembers, as last measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub likes: Option<i64>,
}

impl From<&Recalled> for UsedMemory {
    fn from(m: &Recalled) -> Self {
        Self {
            id: m.id,
            kind: m.kind.clone(),
            platform: m.platform.clone(),
            distance: m.distance,
            likes: m
                .engagement
                .as_ref()
                .and_then(|e| e.get("likes"))
                .and_then(serde_json::Value::as_i64),
        }
    }
}

/// The tasks of a goal and who made them.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tasks: Vec<Task>,
    pub meta: PlanMeta,
}

pub trait Planner: Send + Sync {
    /// The tasks for `goal`, with dependencies, read and write sets (versions are read when
    /// each task is released), and inputs; a planner that waits on something stops waiting
    /// `by` then.
    fn plan<'a>(
        &'a self,
        goal: &'a Goal,
        agent: &'a AgentContext,
        by: Instant,
    ) -> BoxFuture<'a, Result<Plan, PlanError>>;
}

/// Rule/template decomposition by goal kind:
/// - `campaign`: research -> a draft per platform, and one image -> a post per platform;
/// - `reply`: a reply to the mentioned post;
/// - `paid_action`: a transfer proposal (held for a human and checked against the budget).
#[derive(Debug, Default, Clone)]
pub struct TemplatePlanner;

pub(crate) struct Builder<'a> {
    pub goal: &'a Goal,
    pub tasks: Vec<Task>,
}

impl Builder<'_> {
    pub(crate) fn add(
        &mut self,
        kind: TaskKind,
        inputs: Value,
        depends_on: &[TaskId],
        read: &[StateKey],
        write: &[StateKey],
    ) -> TaskId {
        let id = TaskId::random();
        self.tasks.push(Task {
            id,
            goal_id: self.goal.id,
            tenant_id: self.goal.tenant_id,
            agent_id: self.goal.agent_id,
            kind,
            attempt: 1,
            inputs: inputs.as_object().cloned().unwrap_or_default(),
            depends_on: depends_on.to_vec(),
            // Versions 0 for now: the planner reads the current ones when it releases the task.
            read_set: read
                .iter()
                .map(|k| (k.clone(), StateVersion::INITIAL))
                .collect(),
            write_set: write.iter().cloned().collect::<BTreeSet<_>>(),
            feedback: None,
            approval_id: None,
        });
        id
    }
}

impl Planner for TemplatePlanner {
    fn plan<'a>(
        &'a self,
        goal: &'a Goal,
        agent: &'a AgentContext,
        _by: Instant,
    ) -> BoxFuture<'a, Result<Plan, PlanError>> {
        Box::pin(async move {
            Ok(Plan {
                tasks: self.tasks(goal, agent)?,
                meta: PlanMeta {
                    planner: "template".into(),
                    ..PlanMeta::default()
                },
            })
        })
    }
}

/// The goal's constraints, checked against its kind.
pub fn constraints(goal: &Goal) -> Result<Constraints, PlanError> {
    let constraints: Constraints = serde_json::from_value(Value::Object(goal.constraints.clone()))
        .map_err(|e| PlanError::InvalidGoal(e.to_string()))?;
    constraints
        .validate(&goal.kind)
        .map_err(PlanError::InvalidGoal)?;
    Ok(constraints)
}

impl TemplatePlanner {
    /// The template plan of `goal`: the templates' [`Choices`].
    pub fn tasks(&self, goal: &Goal, agent: &AgentContext) -> Result<Vec<Task>, PlanError> {
        Choices::template(&goal.kind).tasks(goal, agent)
    }

    /// The template plan of `goal` where a model was asked and is not used: `meta` (what the
    /// model's calls cost) with why, and of which `kind`.
    pub fn fallback(
        &self,
        goal: &Goal,
        agent: &AgentContext,
        kind: Fallback,
        why: String,
        meta: PlanMeta,
    ) -> Result<Plan, PlanError> {
        Ok(Plan {
            tasks: self.tasks(goal, agent)?,
            meta: PlanMeta {
                planner: "template".into(),
                fallback: Some(why),
                fallback_kind: Some(kind),
                ..meta
            },
        })
    }
}

/// What a plan chooses: whether the goal's optional steps run, and the angle of each text
/// (what it should say). The rules of each kind make the tasks from them ([`Choices::tasks`]),
/// so any choices make a valid plan: a model that chooses cannot break the graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choices {
    /// Research before writing (its findings reach the texts written after it).
    pub research: bool,
    /// A campaign's image, attached to each post.
    pub render_media: bool,
    /// The angle of the text for each platform (none: the brief alone).
    pub angles: BTreeMap<String, String>,
}

impl Choices {
    /// The templates' choices: a campaign researches and renders an image, a reply answers at
    /// once.
    pub fn template(kind: &str) -> Self {
        Self {
            research: kind == "campaign",
            render_media: kind == "campaign",
            angles: BTreeMap::new(),
        }
    }

    /// The tasks of the goal by its kind's rules:
    /// - `campaign`: [research ->] [an image ->] per platform a draft -> a post;
    /// - `reply`: [research ->] a reply to the mentioned post;
    /// - `paid_action`: a transfer proposal (held for a human and checked against the budget).
    pub fn tasks(&self, goal: &Goal, agent: &AgentContext) -> Result<Vec<Task>, PlanError> {
        let constraints = constraints(goal)?;
        let platforms = platforms(goal, &constraints);
        let mut b = Builder {
            goal,
            tasks: Vec::new(),
        };
        let research = (self.research && goal.kind != "paid_action").then(|| {
            b.add(
                TaskKind::Research,
                json!({"query": goal.body}),
                &[],
                &[],
                &[],
            )
        });
        let after_research: Vec<TaskId> = research.into_iter().collect();
        let text_inputs = |platform: &str| {
            let mut inputs = writing(goal, platform, agent);
            if let Some(angle) = self.angles.get(platform).filter(|a| !a.is_empty()) {
                inputs["angle"] = json!(angle);
            }
            if let Some(research) = research {
                inputs[RESEARCH_FROM] = json!(research.0);
            }
            if let Some(engagement) = engagement(agent) {
                inputs["engagement"] = json!(engagement);
            }
            inputs
        };
        match goal.kind.as_str() {
            "campaign" => {
                let render = self.render_media.then(|| {
                    b.add(
                        TaskKind::RenderMedia,
                        json!({"prompt": goal.body}),
                        &after_research,
                        &[],
                        &[],
                    )
                });
                for platform in &platforms {
                    let draft = b.add(
                        TaskKind::Draft,
                        text_inputs(platform),
                        &after_research,
                        &[],
                        &[],
                    );
                    let slot = state_keys(TaskKind::Publish, goal, &constraints, platform)?;
                    let mut inputs = json!({"platform": platform, TEXT_FROM: draft.0,
                                            "disclosure_level": agent.policy.disclosure.as_str()});
                    let mut deps = vec![draft];
                    if let Some(render) = render {
                        inputs[MEDIA_FROM] = json!(render.0);
                        deps.push(render);
                    }
                    b.add(TaskKind::Publish, inputs, &deps, &slot, &slot);
                }
            }
            "reply" => {
                let platform = &platforms[0];
                let mut inputs = text_inputs(platform);
                inputs["in_reply_to"] = json!(constraints.in_reply_to);
                inputs["disclosure_level"] = json!(agent.policy.disclosure.as_str());
                let thread = state_keys(TaskKind::Reply, goal, &constraints, platform)?;
                b.add(TaskKind::Reply, inputs, &after_research, &thread, &thread);
            }
            "paid_action" => {
                b.add(
                    TaskKind::Transact,
                    json!({"from": wallet_of(goal.agent_id), "to": constraints.pay_to,
                           "amount_cents": constraints.amount_cents, "memo": goal.body}),
                    &[],
                    &[],
                    &[],
                );
            }
            other => return Err(PlanError::UnsupportedKind(other.to_owned())),
        }
        validate(&b.tasks)?;
        Ok(b.tasks)
    }
}

/// What worked for the agent this week, for a writer: its most liked posts, one line each
/// (`12 likes on x: ...`). `None` when nothing was measured.
fn engagement(agent: &AgentContext) -> Option<String> {
    let lines: Vec<String> = agent
        .week
        .best
        .iter()
        .map(|p| {
            format!(
                "{} likes on {}: {}",
                p.likes,
                p.platform.as_deref().unwrap_or("?"),
                chimera_llm::one_line(&p.text, 160)
            )
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// The platforms a goal's texts go to: its constraints', else a campaign's Instagram and a
/// reply's X.
pub fn platforms(goal: &Goal, constraints: &Constraints) -> Vec<String> {
    match (constraints.platforms.is_empty(), goal.kind.as_str()) {
        (false, _) => constraints.platforms.clone(),
        (true, "reply") => vec!["x".to_owned()],
        (true, "campaign") => vec!["instagram".to_owned()],
        (true, _) => Vec::new(),
    }
}

/// The state a task of `kind` on `platform` reads and writes (both the same set), by the key
/// scheme of [`chimera_store::keys`]: a reply its thread, a post the content slot it fills
/// (the goal's `slot`, else its own), every other kind nothing (a transfer's money is the
/// budget's, spent atomically by the CFO's ledger).
pub(crate) fn state_keys(
    kind: TaskKind,
    goal: &Goal,
    constraints: &Constraints,
    platform: &str,
) -> Result<Vec<StateKey>, PlanError> {
    let bad = |e: chimera_core::domain::Invalid| PlanError::InvalidPlan(e.to_string());
    Ok(match kind {
        TaskKind::Reply => {
            let post = constraints
                .in_reply_to
                .as_deref()
                .ok_or_else(|| PlanError::InvalidGoal("a reply needs in_reply_to".into()))?;
            vec![keys::thread(platform, post).map_err(bad)?]
        }
        TaskKind::Publish => {
            let slot = constraints
                .slot
                .clone()
                .unwrap_or_else(|| keys::own_slot(goal.id));
            vec![keys::slot(platform, &slot).map_err(bad)?]
        }
        _ => Vec::new(),
    })
}

/// What a task that writes needs: the brief, the platform, the persona, the policy's rules for
/// the text, and the model the agent's policy chose (when it chose one).
pub(crate) fn writing(goal: &Goal, platform: &str, agent: &AgentContext) -> Value {
    let rules = WritingRules {
        banned_phrases: agent.policy.banned_phrases.clone(),
        disclosure_text: agent.policy.disclosure_text.clone(),
    };
    let mut inputs = json!({"brief": goal.body, "platform": platform, "persona": persona(agent),
                            "rules": rules});
    if let Some(model) = &agent.policy.model {
        inputs["model"] = json!(model);
    }
    inputs
}

/// The persona as the writers take it: its name, voice, bio, per-channel style and example
/// posts (the drafting tool reads the name and the voice).
pub(crate) fn persona(agent: &AgentContext) -> Value {
    let mut persona = json!({
        "name": agent.persona.get("name").and_then(Value::as_str).unwrap_or(&agent.handle),
        "voice": agent.persona.get("voice").and_then(Value::as_str).unwrap_or_default(),
    });
    for field in ["bio", "examples", "style"] {
        if let Some(value) = agent.persona.get(field).filter(|v| !is_empty(v)) {
            persona[field] = value.clone();
        }
    }
    // Every task carries the persona: a few examples say the voice.
    if let Some(examples) = persona.get_mut("examples").and_then(Value::as_array_mut) {
        examples.truncate(3);
    }
    persona
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// What any planner's output must satisfy: 1..=50 tasks, no execute tasks (effects are only
/// ever released by an approval), dependencies inside the plan and acyclic.
pub fn validate(tasks: &[Task]) -> Result<(), PlanError> {
    if tasks.is_empty() || tasks.len() > 50 {
        return Err(PlanError::InvalidPlan(format!(
            "{} tasks (1..=50 allowed)",
            tasks.len()
        )));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        if task.kind == TaskKind::Execute {
            return Err(PlanError::InvalidPlan(
                "a plan cannot contain execute tasks".into(),
            ));
        }
        // Dependencies must come earlier in the plan: that makes the graph acyclic.
        if let Some(dep) = task.depends_on.iter().find(|d| !seen.contains(*d)) {
            return Err(PlanError::InvalidPlan(format!(
                "task {} depends on {}, which is not an earlier task of the plan",
                task.id.0, dep.0
            )));
        }
        seen.insert(task.id);
    }
    Ok(())
}

/// Fills `text_from` / `media_from` / `research_from` inputs with what the named dependencies
/// produced: the `text` of a draft, the `sha256` of an image, and a digest of what the research
/// found (`research`; none when its result was too large to travel inline). `produced` maps a
/// task id to its committed result's (inline text, first artifact hash).
pub fn fill_inputs(
    inputs: &mut Map<String, Value>,
    produced: &impl Fn(TaskId) -> Option<(Option<String>, String)>,
) -> Result<(), String> {
    for from in [TEXT_FROM, MEDIA_FROM, RESEARCH_FROM] {
        let Some(source) = inputs.remove(from) else {
            continue;
        };
        let id = source
            .as_str()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .ok_or_else(|| format!("{from} must name a task"))?;
        let (text, sha256) = produced(TaskId(id))
            .ok_or_else(|| format!("{from}: task {id} has no committed result"))?;
        match from {
            TEXT_FROM => {
                let text = text.ok_or_else(|| format!("{from}: task {id} produced no text"))?;
                inputs.insert("text".into(), json!(text));
            }
            MEDIA_FROM => {
                inputs.insert("media_sha256".into(), json!(sha256));
            }
            _ => {
                if let Some(digest) = text.as_deref().and_then(research_digest) {
                    inputs.insert("research".into(), json!(digest));
                }
            }
        }
    }
    Ok(())
}

/// What a research result found, for a writer: its first three items, `title: summary`, one
/// line each. `None` when it found nothing readable.
fn research_digest(result: &str) -> Option<String> {
    let value: Value = serde_json::from_str(result).ok()?;
    let lines: Vec<String> = value
        .get("items")?
        .as_array()?
        .iter()
        .take(3)
        .filter_map(|item| {
            let field = |name| item.get(name).and_then(Value::as_str).unwrap_or_default();
            let line = match (field("title"), field("summary")) {
                ("", "") => return None,
                (title, "") => title.to_owned(),
                ("", summary) => summary.to_owned(),
                (title, summary) => format!("{title}: {summary}"),
            };
            Some(chimera_llm::one_line(&line, 200))
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chimera_core::domain::{AgentId, GoalId, TenantId};

    fn goal(kind: &str, constraints: Value) -> Goal {
        Goal {
            id: GoalId::random(),
            tenant_id: TenantId::random(),
            agent_id: AgentId::random(),
            kind: kind.into(),
            body: "launch the spring collection".into(),
            constraints: constraints.as_object().cloned().unwrap_or_default(),
        }
    }

    fn agent() -> AgentContext {
        AgentContext {
            handle: "nova".into(),
            persona: json!({"voice": "warm"}),
            policy: Policy::default(),
            recent_posts: Vec::new(),
            memories: Vec::new(),
            week: Default::default(),
        }
    }

    #[test]
    fn writing_tasks_carry_the_model_the_policy_chose() {
        let goal = goal("reply", json!({"platforms": ["x"], "in_reply_to": "p-1"}));
        let mut agent = agent();
        let inputs = writing(&goal, "x", &agent);
        assert!(inputs.get("model").is_none());
        agent.policy.model = Some(chimera_core::routing::ModelChoice {
            id: "bigger-model".into(),
            price: None,
        });
        let tasks = TemplatePlanner.tasks(&goal, &agent).unwrap();
        assert_eq!(tasks[0].inputs["model"]["id"], "bigger-model");
    }

    #[test]
    fn a_campaign_researches_then_drafts_renders_and_proposes_a_post_per_platform() {
        let tasks = TemplatePlanner
            .tasks(
                &goal("campaign", json!({"platforms": ["x", "instagram"]})),
                &agent(),
            )
            .unwrap();
        let kinds: Vec<TaskKind> = tasks.iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                TaskKind::Research,
                TaskKind::RenderMedia,
                TaskKind::Draft,
                TaskKind::Publish,
                TaskKind::Draft,
                TaskKind::Publish
            ]
        );
        let publish = &tasks[3];
        assert_eq!(publish.depends_on, vec![tasks[2].id, tasks[1].id]);
        assert_eq!(publish.inputs[TEXT_FROM], json!(tasks[2].id.0));
        // A post reads and writes the slot it fills: the goal's own, as it names none.
        let own = format!("slot:x:goal-{}", tasks[0].goal_id.0);
        let slot = StateKey::parse(own).unwrap();
        assert!(publish.read_set.contains_key(&slot) && publish.write_set.contains(&slot));
        // Different platforms touch different keys: they never conflict.
        assert!(
            tasks[5]
                .write_set
                .iter()
                .all(|k| k.as_str().starts_with("slot:instagram:"))
        );
        // Research, rendering and drafts make artifacts: they touch no agent state.
        for t in [&tasks[0], &tasks[1], &tasks[2]] {
            assert!(
                t.read_set.is_empty() && t.write_set.is_empty(),
                "{:?}",
                t.kind
            );
        }
        assert!(validate(&tasks).is_ok());
    }

    #[test]
    fn other_kinds_and_bad_goals() {
        let reply = TemplatePlanner
            .tasks(&goal("reply", json!({"in_reply_to": "post-1"})), &agent())
            .unwrap();
        assert_eq!(reply[0].kind, TaskKind::Reply);
        // A reply reads and writes its thread, not every mention on the platform.
        let thread = StateKey::parse("thread:x:post-1").unwrap();
        assert!(reply[0].read_set.contains_key(&thread) && reply[0].write_set.contains(&thread));
        assert_eq!(reply[0].write_set.len(), 1);
        let pay = TemplatePlanner
            .tasks(
                &goal(
                    "paid_action",
                    json!({"pay_to": "studio", "amount_cents": 500}),
                ),
                &agent(),
            )
            .unwrap();
        assert_eq!(pay[0].inputs["amount_cents"], 500);
        // A transfer's money is the budget's (the CFO's ledger): no state key.
        assert!(pay[0].read_set.is_empty() && pay[0].write_set.is_empty());
        assert!(matches!(
            TemplatePlanner.tasks(&goal("party", json!({})), &agent()),
            Err(PlanError::InvalidGoal(_))
        ));
        assert!(
            TemplatePlanner
                .tasks(&goal("reply", json!({})), &agent())
                .is_err()
        );
    }

    #[test]
    fn plans_with_effects_or_dangling_dependencies_are_refused() {
        let mut tasks = TemplatePlanner
            .tasks(&goal("campaign", json!({})), &agent())
            .unwrap();
        let later = tasks[1].id;
        tasks[0].depends_on.push(later);
        assert!(validate(&tasks).is_err(), "a dependency on a later task");
        let mut tasks = TemplatePlanner
            .tasks(&goal("campaign", json!({})), &agent())
            .unwrap();
        tasks[0].kind = TaskKind::Execute;
        assert!(validate(&tasks).is_err());
        assert!(validate(&[]).is_err());
    }

    #[test]
    fn released_inputs_take_the_text_and_image_their_dependencies_made() {
        let (draft, render) = (TaskId::random(), TaskId::random());
        let mut inputs = json!({"platform": "x", TEXT_FROM: draft.0, MEDIA_FROM: render.0})
            .as_object()
            .cloned()
            .unwrap();
        let produced = |id: TaskId| {
            if id == draft {
                Some((Some("hello".to_owned()), "a".repeat(64)))
            } else if id == render {
                Some((None, "b".repeat(64)))
            } else {
                None
            }
        };
        fill_inputs(&mut inputs, &produced).unwrap();
        assert_eq!(
            Value::Object(inputs),
            json!({"platform": "x", "text": "hello", "media_sha256": "b".repeat(64)})
        );
        let mut dangling = json!({TEXT_FROM: TaskId::random().0})
            .as_object()
            .cloned()
            .unwrap();
        assert!(fill_inputs(&mut dangling, &produced).is_err());
    }
}
