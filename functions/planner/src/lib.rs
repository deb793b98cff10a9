//! The planner Lambda: goal queue -> a DAG of atomic tasks on the task queue.
//!
//! [`PlannerService::handle`] takes one SQS batch and returns the ids of the messages that
//! failed (`ReportBatchItemFailures`). The same function runs under `lambda_runtime`
//! (`main.rs`) and under the local event-source runner.
//!
//! - A goal message: the goal is decomposed by the [`plan::Planner`] (the template planner by
//!   default) and the plan stored once (a redelivered goal message plans nothing twice); then
//!   the tasks whose dependencies are met are released.
//! - A replan message (from the judge): the task's next attempt, with the feedback and the
//!   current state versions, goes back on the task queue.
//!
//! [`PlannerService::release`] is also what the judge calls after a commit: it takes the
//! goal's blocked tasks whose dependencies are all committed (each claimed by one releaser),
//! fills their inputs from what the dependencies produced, reads the current versions of the
//! state they read, and marks them queued.
//!
//! Every task message is written to the outbox in the transaction that marks its task queued,
//! and derived from the row it wrote; at the end of the batch the relay sends the rows of the
//! goals it touched. While the batch is handled its messages stay invisible in short steps
//! ([`chimera_aws::visibility`]).

pub mod llm;
pub mod plan;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chimera_aws::Clients;
use chimera_aws::batch::{MessageError, decode_body, report, run_batch};
use chimera_aws::handler::QueueHandler;
use chimera_aws::memory::Memory;
use chimera_aws::queues::Queues;
use chimera_aws::relay::Relay;
use chimera_aws::telemetry::{self, Emf};
use chimera_aws::visibility::Lease;
use chimera_core::domain::{Goal, GoalId, GoalStatus, ReadSet, StateKey, Task, TaskId, TaskKind};
use chimera_core::envelope::PlannerMessage;
use chimera_core::names::{Queue, ResourceNames};
use chimera_store::{PgPool, dag, engagement, occ};
use futures::future::BoxFuture;
use plan::{
    AgentContext, MEDIA_FROM, PlanError, Planner, RESEARCH_FROM, Recalled, TEXT_FROM,
    TemplatePlanner, UsedMemory, fill_inputs,
};

/// Messages of one batch handled at once.
const CONCURRENCY: usize = 8;

pub struct PlannerService {
    pool: PgPool,
    relay: Relay,
    planner: Box<dyn Planner>,
    /// The agent's memories nearest to a goal, when an embedder is configured.
    memory: Option<Memory>,
    /// How long a goal waits for a busy model before the templates plan it.
    model_wait: Duration,
}

/// [`PlannerService`]'s `model_wait` unless `CHIMERA_PLAN_MODEL_WAIT_SECS` says otherwise.
pub const MODEL_WAIT: Duration = Duration::from_secs(600);

/// Memories recalled for a goal.
const RECALLED: i64 = 3;

impl PlannerService {
    /// From the environment (`DATABASE_URL`, the stage or `TASK_QUEUE_URL`), with the model's
    /// planner when a model is configured (`CHIMERA_LLM`), the template planner otherwise. Opens
    /// no connection.
    pub async fn from_env() -> anyhow::Result<Self> {
        let clients = Clients::from_env().await;
        let names = ResourceNames::from_env()?;
        let url = chimera_aws::database::url_from_env(&clients).await?;
        let pool = chimera_store::connect_lazy_as(
            &url,
            CONCURRENCY as u32,
            chimera_store::DbRole::Planner,
        )?;
        let planner: Box<dyn Planner> = match chimera_aws::mind::from_env(&clients, &pool).await? {
            Some(mind) => Box::new(llm::LlmPlanner::new(mind)),
            None => Box::new(TemplatePlanner),
        };
        let memory = Memory::from_env(&clients, &pool)?;
        let model_wait = match std::env::var("CHIMERA_PLAN_MODEL_WAIT_SECS") {
            Ok(secs) if !secs.is_empty() => Duration::from_secs(secs.parse().map_err(|_| {
                anyhow::anyhow!("CHIMERA_PLAN_MODEL_WAIT_SECS={secs} is not a number of seconds")
            })?),
            _ => MODEL_WAIT,
        };
        Ok(Self::new(clients, pool, names, planner)
            .with_memory(memory)
            .with_model_wait(model_wait))
    }

    /// Lets a goal wait `wait` for a busy model before the templates plan it.
    pub fn with_model_wait(mut self, wait: Duration) -> Self {
        self.model_wait = wait;
        self
    }

    /// Recalls the agent's nearest memories for each goal from `memory` (none when `None`).
    pub fn with_memory(mut self, memory: Option<Memory>) -> Self {
        self.memory = memory;
        self
    }

    pub fn new(
        clients: Clients,
        pool: PgPool,
        names: ResourceNames,
        planner: Box<dyn Planner>,
    ) -> Self {
        Self {
            relay: Relay::new(pool.clone(), Queues::new(clients, names)),
            pool,
            planner,
            memory: None,
            model_wait: MODEL_WAIT,
        }
    }

    /// The relay that sends what this planner's decisions wrote (the judge shares it).
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Handles one batch; a model that plans must answer in time for the invocation's
    /// `deadline` (then the templates plan).
    async fn handle_batch(&self, event: &SqsEvent, deadline: SystemTime) -> SqsBatchResponse {
        let lease = Lease::start(self.relay.queues(), Queue::Goal, event).await;
        let by = chimera_llm::mind::answer_by(deadline);
        let outcomes = run_batch("planner", event, CONCURRENCY, |m| {
            self.handle_message(m, by)
        })
        .await;
        let goals: Vec<GoalId> = outcomes
            .iter()
            .filter_map(|(_, outcome)| outcome.as_ref().ok().copied().flatten())
            .collect();
        self.relay.flush(&goals).await;
        let outcomes = outcomes
            .into_iter()
            .map(|(id, outcome)| (id, outcome.map(|_| ())))
            .collect();
        lease.finish(report(outcomes)).await
    }

    /// Handles one message; returns the goal it wrote messages for, if any.
    async fn handle_message(
        &self,
        message: &SqsMessage,
        by: Instant,
    ) -> Result<Option<GoalId>, MessageError> {
        match decode_body::<PlannerMessage>(message)? {
            PlannerMessage::Goal { goal_id } => {
                telemetry::identify(message, goal_id.0, None, None);
                Emf::new("planner")
                    .queue_age(message)
                    .ids(goal_id.0, None, None)
                    .emit();
                self.plan_goal(goal_id, by).await.map(|()| Some(goal_id))
            }
            PlannerMessage::Replan {
                task_id,
                attempt,
                feedback,
                fresh_versions,
            } => {
                let goal = self
                    .replan(task_id, attempt, &feedback, &fresh_versions)
                    .await?;
                if let Some(goal) = goal {
                    telemetry::identify(message, goal.0, Some(task_id.0), None);
                    Emf::new("planner")
                        .dimension("Outcome", "replanned")
                        .count("Replans", 1)
                        .queue_age(message)
                        .ids(goal.0, Some(task_id.0), None)
                        .emit();
                }
                Ok(goal)
            }
        }
    }

    async fn plan_goal(&self, goal_id: GoalId, by: Instant) -> Result<(), MessageError> {
        let ctx = dag::planning_context(&self.pool, goal_id)
            .await
            .map_err(MessageError::dependency)?
            .ok_or_else(|| {
                MessageError::Permanent(anyhow::anyhow!("goal {} does not exist", goal_id.0))
            })?;
        if !ctx.agent_active {
            // Resuming the agent sends its goals here again.
            tracing::info!(goal_id = %goal_id.0, handle = %ctx.handle, "the agent is paused: the goal waits");
            return Ok(());
        }
        if ctx.status == GoalStatus::Received {
            let (memories, memory_error) = self.recall(&ctx.goal, by).await;
            let week = engagement::week_summary(&self.pool, ctx.goal.agent_id, chrono::Utc::now())
                .await
                .map_err(MessageError::dependency)?;
            let agent = AgentContext {
                handle: ctx.handle.clone(),
                persona: ctx.persona.clone(),
                policy: ctx.policy.clone(),
                recent_posts: ctx.recent_posts.clone(),
                memories,
                week,
            };
            let started = std::time::Instant::now();
            let planned = match self.planner.plan(&ctx.goal, &agent, by).await {
                Err(PlanError::ModelBusy(why)) => {
                    let waited = (chrono::Utc::now() - ctx.submitted_at)
                        .to_std()
                        .unwrap_or_default();
                    if waited < self.model_wait {
                        return self.defer(goal_id, waited, &why).await;
                    }
                    tracing::warn!(goal_id = %goal_id.0, reason = %why, waited_secs = waited.as_secs(),
                                   "the model stayed unavailable: the templates plan");
                    TemplatePlanner.fallback(
                        &ctx.goal,
                        &agent,
                        plan::Fallback::Unavailable,
                        format!(
                            "the model stayed unavailable for {} s: {why}",
                            waited.as_secs()
                        ),
                        plan::PlanMeta::default(),
                    )
                }
                other => other,
            };
            match planned {
                Ok(mut plan) => {
                    plan.meta.documents = Some(ctx.documents.clone());
                    plan.meta.memories = agent.memories.iter().map(UsedMemory::from).collect();
                    plan.meta.memory_error = memory_error;
                    plan.meta.week = Some(agent.week.clone());
                    with_memories(&mut plan.tasks, &agent.memories);
                    let meta =
                        serde_json::to_value(&plan.meta).map_err(MessageError::dependency)?;
                    let stored = dag::save_plan(
                        &self.pool,
                        goal_id,
                        &plan.tasks,
                        ctx.policy.max_attempts,
                        &meta,
                    )
                    .await
                    .map_err(MessageError::dependency)?;
                    tracing::info!(goal_id = %goal_id.0, tasks = plan.tasks.len(), stored,
                                   planner = plan.meta.planner, fallback = ?plan.meta.fallback, "goal planned");
                    if stored {
                        // The model's tokens and cents are counted by its meter.
                        Emf::new("planner")
                            .dimension("Planner", plan.meta.planner.clone())
                            .dimension(
                                "Fallback",
                                plan.meta
                                    .fallback_kind
                                    .map_or("none", plan::Fallback::as_str),
                            )
                            .count("GoalsPlanned", 1)
                            .count("PlannedTasks", plan.tasks.len() as u64)
                            .millis("PlanDuration", started.elapsed())
                            .ids(goal_id.0, None, Some(ctx.goal.agent_id.0))
                            .emit();
                    }
                }
                Err(err) => {
                    // A goal that cannot be planned is failed, visibly, and the message is done.
                    tracing::warn!(goal_id = %goal_id.0, error = %err, "goal cannot be planned");
                    dag::fail_goal(&self.pool, goal_id)
                        .await
                        .map_err(MessageError::dependency)?;
                    return Ok(());
                }
            }
        }
        // Also after a redelivery: release whatever is ready and not yet released.
        self.release(goal_id).await.map(|_| ())
    }

    /// Sends the goal back to the planner later: its model is busy. The wait grows with how long
    /// the goal has waited (a quarter of it, 5 s to 60 s, jittered) so a backlog drains at the
    /// model's pace instead of polling it.
    async fn defer(&self, goal: GoalId, waited: Duration, why: &str) -> Result<(), MessageError> {
        let wait = (waited / 4).clamp(Duration::from_secs(5), Duration::from_secs(60));
        // Jitter from the clock's nanoseconds: goals deferred together come back apart.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let wait = wait + wait.mul_f64(f64::from(nanos % 1000) / 2000.0);
        let at = chrono::Utc::now() + wait;
        let cause = format!("model-busy:{}", at.timestamp_millis());
        let deferred = dag::defer_goal(&self.pool, goal, &cause, at)
            .await
            .map_err(MessageError::dependency)?;
        if deferred {
            tracing::info!(goal_id = %goal.0, reason = why, waited_secs = waited.as_secs(),
                           again_in_secs = wait.as_secs(), "the model is busy: the goal waits");
            Emf::new("planner")
                .count("GoalsDeferred", 1)
                .ids(goal.0, None, None)
                .emit();
        }
        Ok(())
    }

    /// The agent's memories nearest to the goal's text. An embedder that fails does not stop the
    /// plan: the goal is planned without memories and its plan says why.
    async fn recall(&self, goal: &Goal, by: Instant) -> (Vec<Recalled>, Option<String>) {
        let Some(memory) = &self.memory else {
            return (Vec::new(), None);
        };
        let within = by.saturating_duration_since(Instant::now());
        match memory
            .recall(goal.tenant_id, goal.agent_id, &goal.body, RECALLED, within)
            .await
        {
            // A memory that reads as instructions or spam is data no plan needs.
            Ok(found) => (
                found
                    .into_iter()
                    .filter(|m| {
                        let flagged = chimera_core::gate::suspicious(&[("memory", &m.text)], "");
                        if !flagged.is_empty() {
                            tracing::warn!(goal_id = %goal.id.0, memory = %m.id, found = flagged.join("; "),
                                           "a memory is not recalled: it reads as instructions or spam");
                        }
                        flagged.is_empty()
                    })
                    .collect(),
                None,
            ),
            Err(err) => {
                tracing::warn!(goal_id = %goal.id.0, error = format!("{err:#}"), "memories not recalled");
                (Vec::new(), Some(format!("{err:#}")))
            }
        }
    }

    /// Takes the task into its next attempt and queues it, in one transaction; returns its goal.
    async fn replan(
        &self,
        task: TaskId,
        after: Option<u32>,
        feedback: &str,
        fresh: &ReadSet,
    ) -> Result<Option<GoalId>, MessageError> {
        let mut tx = self.pool.begin().await.map_err(MessageError::dependency)?;
        let Some(mut next) = dag::next_attempt(&mut tx, task, after, feedback)
            .await
            .map_err(MessageError::dependency)?
        else {
            drop(tx);
            return late_or_forged(&self.pool, task, after).await.map(|()| None);
        };
        // The versions the judge saw moved are at least this new; the attempt reads the current
        // ones of its whole read set, and the task row records what the message carries.
        let keys: Vec<StateKey> = next.read_set.keys().cloned().collect();
        next.read_set = occ::read_versions(&self.pool, next.agent_id, &keys)
            .await
            .map_err(MessageError::dependency)?;
        dag::mark_queued(&mut tx, &next)
            .await
            .map_err(MessageError::dependency)?;
        tx.commit().await.map_err(MessageError::dependency)?;
        tracing::info!(task_id = %task.0, attempt = next.attempt, judge_saw = ?fresh, "task replanned");
        Ok(Some(next.goal_id))
    }

    /// Releases the goal's tasks whose dependencies are committed (marked queued, their messages
    /// in the outbox, one transaction); returns how many. The caller flushes the goal's rows.
    pub async fn release(&self, goal: GoalId) -> Result<usize, MessageError> {
        let mut tx = self.pool.begin().await.map_err(MessageError::dependency)?;
        let ready = dag::lock_ready(&mut tx, goal)
            .await
            .map_err(MessageError::dependency)?;
        let mut released = 0;
        for mut task in ready {
            let mut produced = HashMap::new();
            for from in [TEXT_FROM, MEDIA_FROM, RESEARCH_FROM] {
                let Some(dep) = task
                    .inputs
                    .get(from)
                    .and_then(|v| v.as_str())
                    .and_then(|s| uuid::Uuid::parse_str(s).ok())
                else {
                    continue;
                };
                if let Some(artifact) = dag::committed_artifact(&mut tx, TaskId(dep))
                    .await
                    .map_err(MessageError::dependency)?
                {
                    produced.insert(TaskId(dep), artifact);
                }
            }
            if let Err(reason) = fill_inputs(&mut task.inputs, &|id| produced.get(&id).cloned()) {
                tracing::warn!(task_id = %task.id.0, reason, "task cannot be released");
                dag::fail_task(&mut tx, task.id, &reason)
                    .await
                    .map_err(MessageError::dependency)?;
                continue;
            }
            let keys: Vec<StateKey> = task.read_set.keys().cloned().collect();
            task.read_set = occ::read_versions(&self.pool, task.agent_id, &keys)
                .await
                .map_err(MessageError::dependency)?;
            dag::mark_queued(&mut tx, &task)
                .await
                .map_err(MessageError::dependency)?;
            released += 1;
        }
        tx.commit().await.map_err(MessageError::dependency)?;
        if released > 0 {
            tracing::info!(goal_id = %goal.0, released, "tasks released");
        }
        Ok(released)
    }
}

impl QueueHandler for PlannerService {
    fn queue(&self) -> Queue {
        Queue::Goal
    }

    fn handle<'a>(
        &'a self,
        event: &'a SqsEvent,
        deadline: SystemTime,
    ) -> BoxFuture<'a, SqsBatchResponse> {
        Box::pin(self.handle_batch(event, deadline))
    }
}

/// A replan that changed nothing: late (its task moved on to another attempt, was decided, or
/// used its attempts) is acknowledged, and the log says so; one naming a task that does not
/// exist, or an attempt it never reached, was never sent by the judge: refused, so it is
/// dead-lettered with the reason.
async fn late_or_forged(
    pool: &PgPool,
    task: TaskId,
    after: Option<u32>,
) -> Result<(), MessageError> {
    let Some((status, attempt)) = dag::standing(pool, task)
        .await
        .map_err(MessageError::dependency)?
    else {
        return Err(MessageError::Permanent(anyhow::anyhow!(
            "a replan for task {}, which does not exist",
            task.0
        )));
    };
    if let Some(after) = after
        && i64::from(after) > i64::from(attempt)
    {
        return Err(MessageError::Permanent(anyhow::anyhow!(
            "a replan after attempt {after} of task {}, which is at attempt {attempt}",
            task.0
        )));
    }
    tracing::info!(task_id = %task.0, %status, attempt, replan_after = after, "late replan: the task moved on meanwhile, nothing to do");
    Ok(())
}

/// The recalled memories' texts, as data for the tasks that write text (drafts and replies).
fn with_memories(tasks: &mut [Task], memories: &[Recalled]) {
    if memories.is_empty() {
        return;
    }
    let texts: Vec<&str> = memories.iter().map(|m| m.text.as_str()).collect();
    for task in tasks
        .iter_mut()
        .filter(|t| matches!(t.kind, TaskKind::Draft | TaskKind::Reply))
    {
        task.inputs
            .insert("memories".into(), serde_json::json!(texts));
    }
}
