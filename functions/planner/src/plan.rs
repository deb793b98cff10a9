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

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

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
}

/// Who made a plan, recorded on the goal.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlanMeta {
    /// `template` or `model`.
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
    /// The template plan of `goal`.
    pub fn tasks(&self, goal: &Goal, agent: &AgentContext) -> Result<Vec<Task>, PlanError> {
        let constraints = constraints(goal)?;
        let mut b = Builder {
            goal,
            tasks: Vec::new(),
        };
        let draft_inputs = |platform: &str| writing(goal, platform, agent);
        match goal.kind.as_str() {
            "campaign" => {
                let platforms = if constraints.platforms.is_empty() {
                    vec!["instagram".to_owned()]
                } else {
                    constraints.platforms.clone()
                };
                let research = b.add(
                    TaskKind::Research,
                    json!({"query": goal.body}),
                    &[],
                    &[],
                    &[],
                );
                let render = b.add(
                    TaskKind::RenderMedia,
                    json!({"prompt": goal.body}),
                    &[research],
                    &[],
                    &[],
                );
                for platform in &platforms {
                    let draft = b.add(
                        TaskKind::Draft,
                        draft_inputs(platform),
                        &[research],
                        &[],
                        &[],
                    );
                    let slot = state_keys(TaskKind::Publish, goal, &constraints, platform)?;
                    b.add(
                        TaskKind::Publish,
                        json!({"platform": platform, TEXT_FROM: draft.0, MEDIA_FROM: render.0,
                               "disclosure_level": agent.policy.disclosure.as_str()}),
                        &[draft, render],
                        &slot,
                        &slot,
                    );
                }
            }
            "reply" => {
                let platform = constraints
                    .platforms
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "x".into());
                let mut inputs = draft_inputs(&platform);
                inputs["in_reply_to"] = json!(constraints.in_reply_to);
                inputs["disclosure_level"] = json!(agent.policy.disclosure.as_str());
                let thread = state_keys(TaskKind::Reply, goal, &constraints, &platform)?;
                b.add(TaskKind::Reply, inputs, &[], &thread, &thread);
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

/// What a task that writes needs: the brief, the platform, the persona, and the model the
/// agent's policy chose (when it chose one).
pub(crate) fn writing(goal: &Goal, platform: &str, agent: &AgentContext) -> Value {
    let mut inputs = json!({"brief": goal.body, "platform": platform, "persona": persona(agent)});
    if let Some(model) = &agent.policy.model {
        inputs["model"] = json!(model);
    }
    inputs
}

/// The persona as the drafting tool takes it: a name and a voice.
pub(crate) fn persona(agent: &AgentContext) -> Value {
    let voice = agent
        .persona
        .get("voice")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = agent
        .persona
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&agent.handle);
    json!({"name": name, "voice": voice})
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

/// Fills `text_from` / `media_from` inputs with what the named dependencies produced: the
/// `text` of a draft and the `sha256` of an image. `produced` maps a task id to its committed
/// result's (inline text, first artifact hash).
pub fn fill_inputs(
    inputs: &mut Map<String, Value>,
    produced: &impl Fn(TaskId) -> Option<(Option<String>, String)>,
) -> Result<(), String> {
    for (from, into) in [(TEXT_FROM, "text"), (MEDIA_FROM, "media_sha256")] {
        let Some(source) = inputs.remove(from) else {
            continue;
        };
        let id = source
            .as_str()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .ok_or_else(|| format!("{from} must name a task"))?;
        let (text, sha256) = produced(TaskId(id))
            .ok_or_else(|| format!("{from}: task {id} has no committed result"))?;
        let value = if into == "text" {
            text.ok_or_else(|| format!("{from}: task {id} produced no text"))?
        } else {
            sha256
        };
        inputs.insert(into.into(), json!(value));
    }
    Ok(())
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
