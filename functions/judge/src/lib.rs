//! The judge Lambda: review queue -> commit, hold for a human, or replan.
//!
//! [`Judge::handle`] takes one SQS batch and returns the ids of the messages that failed
//! (`ReportBatchItemFailures`). The same function runs under `lambda_runtime` (`main.rs`)
//! and under the local event-source runner. For each result:
//!
//! 1. read it (inline, or from the artifact bucket when it was offloaded) and check its commit
//!    hash and that it belongs to its task (goal, agent, kind, read and write sets). A result
//!    that fails these checks is permanent: it goes to the DLQ, nothing is written;
//! 2. a result of an older attempt is dropped (logged); the result is recorded (once per
//!    content);
//! 3. the checks ([`checks`]): artifacts present, a proposal that names the right action with
//!    usable arguments, and for a financial action the CFO's check against the agent's budget
//!    and the goal's;
//! 4. the agent's policy routes it ([`chimera_core::routing::route`]):
//!    - auto-approve: committed through OCC; an effect (publish, reply, transfer) also gets an
//!      approval, its spend and an `execute` task, in the same transaction; then the goal's
//!      tasks that were waiting for it are released;
//!    - human review: a pending review with the policy's deadlines;
//!    - retry: a replan with the feedback goes to the planner;
//!    - fail: the task fails and is surfaced to humans.
//!
//!    An OCC conflict replans the task with the fresh versions (a conflict does not use up the
//!    policy's attempts).
//!
//! Each decision is one transaction on the task's current attempt that also writes the messages
//! it causes (the `execute` task, the replan) to the outbox; at the end of the batch the relay
//! sends the rows of the goals the batch touched. A redelivered result decides nothing twice: it
//! only releases the goal's ready tasks again and settles the goal, both idempotent.

pub mod checks;
mod rejudge;
pub mod rubric;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use checks::Findings;
use chimera_aws::Clients;
use chimera_aws::artifacts::ArtifactStore;
use chimera_aws::batch::{MessageError, decode_body, report, run_batch};
use chimera_aws::handler::QueueHandler;
use chimera_aws::memory::{Memory, Said};
use chimera_aws::telemetry::{self, Emf, Unit};
use chimera_aws::visibility::Lease;
use chimera_core::domain::{
    GoalId, ReadSet, ReviewId, RiskTag, TaskId, TaskKind, TaskResult, TaskStatus, derived_uuid,
};
use chimera_core::effect::{Origin, Proposal, execute_task, expected_action};
use chimera_core::envelope::ResultMessage;
use chimera_core::gate::{self, Signals, Similar};
use chimera_core::names::{Queue, ResourceNames};
use chimera_core::routing::{self, Assessment, Policy, ReviewReason, Route};
use chimera_llm::embed::Embedder;
use chimera_llm::mind::{Charge, Mind};
use chimera_planner::PlannerService;
use chimera_planner::plan::TemplatePlanner;
use chimera_store::PgPool;
use chimera_store::budget::BudgetError;
use chimera_store::judging::{
    self, CommitRefused, Decided, Effect, NewReview, RetryCause, TaskState,
};
use chimera_store::memories::Kind;
use chimera_store::occ::{self, CommitOutcome};
use chimera_store::records::{self, RecordError, Recorded};
use futures::future::BoxFuture;

/// Messages of one batch handled at once.
const CONCURRENCY: usize = 8;

pub struct Judge {
    pool: PgPool,
    artifacts: ArtifactStore,
    planner: PlannerService,
    /// The model that scores texts and classifies their topics, when one is configured.
    mind: Option<Arc<Mind>>,
    /// Where committed posts and replies are remembered, when an embedder is configured.
    memory: Option<Memory>,
    /// The embedding model the judge scores similarity with (to the brief, to the persona).
    embedder: Option<Arc<dyn Embedder>>,
}

impl Judge {
    /// From the environment (`DATABASE_URL`, the stage or the queue URLs and `ARTIFACT_BUCKET`).
    /// Opens no connection.
    pub async fn from_env() -> anyhow::Result<Self> {
        let clients = Clients::from_env().await;
        let names = ResourceNames::from_env()?;
        let url = chimera_aws::database::url_from_env(&clients).await?;
        let pool =
            chimera_store::connect_lazy_as(&url, CONCURRENCY as u32, chimera_store::DbRole::Judge)?;
        let mind = chimera_aws::mind::from_env(&clients, &pool).await?;
        let memory = Memory::from_env(&clients, &pool)?;
        Ok(Self::new(clients, pool, names)
            .with_mind(mind)
            .with_memory(memory))
    }

    /// Scores similarity with `embedder` (with no embedder and no model, nothing independent
    /// scores an effect: a person decides each one).
    pub fn with_embedder(mut self, embedder: Option<Arc<dyn Embedder>>) -> Self {
        self.embedder = embedder;
        self
    }

    /// Remembers each committed post and reply in `memory` (nothing is remembered when `None`),
    /// and scores similarity with its embedder ([`Judge::with_embedder`] sets another).
    pub fn with_memory(mut self, memory: Option<Memory>) -> Self {
        if let Some(memory) = &memory {
            self.embedder = Some(memory.embedder());
        }
        self.memory = memory;
        self
    }

    /// Scores and classifies texts with `mind` too (deterministic checks only when `None`).
    pub fn with_mind(mut self, mind: Option<Arc<Mind>>) -> Self {
        self.mind = mind;
        self
    }

    pub fn new(clients: Clients, pool: PgPool, names: ResourceNames) -> Self {
        let bucket = names.artifact_bucket();
        Self {
            artifacts: ArtifactStore::new(clients.s3.clone(), bucket),
            planner: PlannerService::new(clients, pool.clone(), names, Box::new(TemplatePlanner)),
            pool,
            mind: None,
            memory: None,
            embedder: None,
        }
    }

    /// Handles one batch; the model's reading must come in time for the invocation's
    /// `deadline` (else the card says there is none).
    async fn handle_batch(&self, event: &SqsEvent, deadline: SystemTime) -> SqsBatchResponse {
        let relay = self.planner.relay();
        let lease = Lease::start(relay.queues(), Queue::Review, event).await;
        let by = chimera_llm::mind::answer_by(deadline);
        let outcomes = run_batch("judge", event, CONCURRENCY, |m| self.handle_message(m, by)).await;
        let goals: Vec<GoalId> = outcomes
            .iter()
            .filter_map(|(_, outcome)| outcome.as_ref().ok().copied().flatten())
            .collect();
        relay.flush(&goals).await;
        let outcomes = outcomes
            .into_iter()
            .map(|(id, outcome)| (id, outcome.map(|_| ())))
            .collect();
        lease.finish(report(outcomes)).await
    }

    /// Judges one result, or a held one again; returns the goal whose outbox rows the batch
    /// then sends.
    async fn handle_message(
        &self,
        message: &SqsMessage,
        by: Instant,
    ) -> Result<Option<GoalId>, MessageError> {
        let msg: ResultMessage = decode_body(message)?;
        if let ResultMessage::Rejudge {
            review_id,
            policy_version,
        } = msg
        {
            return self.rejudge(review_id, policy_version).await;
        }
        let result = self
            .artifacts
            .load_result(msg)
            .await
            .map_err(MessageError::storage)?;
        let goal = result.goal_id;
        telemetry::identify(
            message,
            goal.0,
            Some(result.task_id.0),
            Some(result.agent_id.0),
        );
        let (kind, task, agent) = (result.task_kind, result.task_id.0, result.agent_id.0);
        let started = std::time::Instant::now();
        let judged = self.judge(result, by).await;
        Emf::new("judge")
            .dimension("TaskKind", kind.as_str())
            .millis("JudgeDuration", started.elapsed())
            .queue_age(message)
            .ids(goal.0, Some(task), Some(agent))
            .emit();
        judged.map(|()| Some(goal))
    }

    async fn judge(&self, result: TaskResult, by: Instant) -> Result<(), MessageError> {
        if !result.commit_hash_matches() {
            return Err(MessageError::permanent(anyhow::anyhow!(
                "result {}: the commit hash does not match its content",
                result.id
            )));
        }
        let state = judging::task_state(&self.pool, result.task_id)
            .await
            .map_err(MessageError::dependency)?
            .ok_or_else(|| {
                MessageError::permanent(anyhow::anyhow!(
                    "result {} is for task {}, which does not exist",
                    result.id,
                    result.task_id
                ))
            })?;
        checks::belongs_to(&result, &state).map_err(MessageError::permanent)?;
        if result.attempt < state.attempt {
            tracing::info!(result_id = %result.id, attempt = result.attempt, current = state.attempt,
                           "result of an earlier attempt: dropped");
            return Ok(());
        }
        let result =
            records::record_result(&self.pool, &result)
                .await
                .map_err(|err| match err {
                    RecordError::Database(err) => MessageError::dependency(err),
                    refused => MessageError::permanent(refused),
                })?;
        if !state.is_open_for(result.attempt) {
            return self.resume(&result, &state).await;
        }
        if result.task_kind == TaskKind::Execute {
            let reasoning = "the approved effect was performed".to_owned();
            return self
                .approve(&result, &state, &reasoning, Findings::default())
                .await;
        }
        let findings = checks::inspect(&self.pool, &self.artifacts, &result, &state)
            .await
            .map_err(|e| match e {
                checks::InspectError::Storage(err) => MessageError::storage(err),
                checks::InspectError::Database(err) => MessageError::dependency(err),
            })?;
        let Assessed {
            result: judged,
            scored,
            signals,
            mut failed,
            notes: model_note,
        } = self.assess(&result, &state, &findings, by).await?;
        let auto_pay = findings.auto_pay;
        failed.splice(0..0, findings.failed.iter().cloned());
        // A payment is money by nature: within the admin's auto-pay limit, that decision was
        // taken; any other topic still counts.
        let mut tags = judged.risk_tags.clone();
        if auto_pay {
            tags.retain(|t| t.as_str() != "finance");
        }
        let route = match &findings.cfo_refusal {
            Some(refusal) => Route::Fail {
                feedback: refusal.clone(),
            },
            None => routing::route(
                &state.policy,
                &Assessment {
                    task_kind: judged.task_kind,
                    confidence: judged.confidence_score,
                    scored: scored || auto_pay,
                    suspicious: &findings.suspicious,
                    auto_pay,
                    risk_tags: &tags,
                    disclosure_level: judged.disclosure_level,
                    attempt: state.counted(judged.attempt),
                    failed_checks: &failed,
                },
            ),
        };
        tracing::info!(result_id = %result.id, task_id = %result.task_id, kind = result.task_kind.as_str(),
                       claim = result.confidence_score.value(), score = judged.confidence_score.value(),
                       scored, route = ?route, "result judged");
        let mut notes = judge_notes(&result, &judged, &findings, &failed);
        notes.push_str("; ");
        notes.push_str(&signals.describe(&state.policy));
        for note in model_note {
            notes.push_str("; ");
            notes.push_str(&note);
        }
        match route {
            Route::AutoApprove => {
                let reasoning = format!("{}; {notes}", approval_reasoning(&judged, &state.policy));
                self.approve(&result, &state, &reasoning, findings).await
            }
            Route::HumanReview { reasons } => {
                let summary = findings.proposal.as_ref().map(Proposal::summary);
                self.hold(&judged, &state, reasons, summary, &notes).await
            }
            Route::Retry { feedback } => {
                self.retry(
                    &result,
                    &state,
                    &feedback,
                    RetryCause::Feedback,
                    ReadSet::new(),
                )
                .await
            }
            Route::Fail { feedback } => self.fail(&judged, &state, &feedback).await,
        }
    }

    /// The result as the judge sees it: the risk tags the worker claimed and those the judge
    /// found in the text itself (by the lexicon and, when configured, the model); the topics
    /// of the committed work it builds on are context on the card, not a verdict. The score
    /// that routes is the judge's own ([`Signals`]): similarity to the brief and to the
    /// persona's examples, the model's rubric; the worker's claim can only lower it, and is
    /// the score only where nothing independent scored (the routing then sends an effect to a
    /// person).
    async fn assess(
        &self,
        result: &TaskResult,
        state: &TaskState,
        findings: &Findings,
        by: Instant,
    ) -> Result<Assessed, MessageError> {
        let mut judged = result.clone();
        let mut found: Vec<String> = findings.topics.iter().cloned().collect();
        let mut signals = Signals {
            claim: Some(result.confidence_score),
            ..Signals::default()
        };
        let mut notes = Vec::new();
        if let Some(text) = &findings.text {
            self.similarity(text, state, &mut signals, by).await;
        }
        if let (Some(mind), Some(text)) = (&self.mind, &findings.text) {
            let voice = state
                .inputs
                .pointer("/persona/voice")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("the agent's own");
            let charge = Charge {
                agent_id: result.agent_id.0,
                task_id: Some(result.task_id.0),
                key: format!("llm:{}:{}:judge", result.task_id, result.attempt),
                purpose: "judge",
                memo: format!("judging a {}", result.task_kind.as_str()),
            };
            match rubric::read(mind, &state.policy, voice, text, &charge, by).await {
                Ok(reading) => {
                    signals.rubric = Some(reading.score);
                    notes.push(format!(
                        "model {} scored {:.2} ({}); model topics: {}",
                        reading.model,
                        reading.score,
                        list(
                            &reading
                                .reasons
                                .iter()
                                .map(String::as_str)
                                .collect::<Vec<_>>()
                        ),
                        list(
                            &reading
                                .topics
                                .iter()
                                .map(String::as_str)
                                .collect::<Vec<_>>()
                        )
                    ));
                    found.extend(reading.topics);
                }
                Err(why) => {
                    tracing::warn!(result_id = %result.id, why, "no model reading");
                    signals.missing.push(format!("no model reading: {why}"));
                }
            }
        }
        if expected_action(result.task_kind).is_some() {
            let inherited = judging::inherited_risk_tags(&self.pool, result.task_id)
                .await
                .map_err(MessageError::dependency)?;
            if !inherited.is_empty() {
                notes.push(format!(
                    "topics of the work it builds on (context, not a verdict): {}",
                    inherited.join(", ")
                ));
            }
        }
        judged
            .risk_tags
            .extend(found.iter().filter_map(|t| RiskTag::parse(t.as_str()).ok()));
        let score = signals.score(&state.policy);
        judged.confidence_score = score.unwrap_or(result.confidence_score);
        let failed = signals.failed();
        Ok(Assessed {
            result: judged,
            scored: score.is_some(),
            signals,
            failed,
            notes,
        })
    }

    /// Similarity of `text` to its brief and to the persona's examples, through the embedder;
    /// what failed goes to `signals.missing`.
    async fn similarity(&self, text: &str, state: &TaskState, signals: &mut Signals, by: Instant) {
        let Some(embedder) = &self.embedder else {
            return;
        };
        let brief = checks::brief(state).trim().to_owned();
        let examples: Vec<String> = gate::examples(&state.persona)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut texts = vec![text.to_owned()];
        if !brief.is_empty() {
            texts.push(brief.clone());
        }
        texts.extend(examples.iter().cloned());
        if texts.len() < 2 {
            return;
        }
        let within = by
            .saturating_duration_since(Instant::now())
            .min(chimera_aws::memory::EMBED_WITHIN);
        let embedded = tokio::time::timeout(within, embedder.embed(&texts)).await;
        let vectors = match embedded {
            Ok(Ok(embedded)) => embedded.vectors,
            Ok(Err(err)) => {
                signals.missing.push(format!("no similarity: {err}"));
                return;
            }
            Err(_) => {
                signals
                    .missing
                    .push(format!("no similarity: the embedder took over {within:?}"));
                return;
            }
        };
        let policy = &state.policy.similarity;
        let mut rest = vectors[1..].iter();
        if !brief.is_empty()
            && let Some(b) = rest.next()
        {
            signals.on_topic = Some(Similar {
                value: gate::cosine(&vectors[0], b),
                threshold: policy.on_topic,
            });
        }
        let voice = rest
            .map(|e| gate::cosine(&vectors[0], e))
            .fold(None, |best: Option<f64>, v| {
                Some(best.map_or(v, |b| b.max(v)))
            });
        signals.on_voice = voice.map(|value| Similar {
            value,
            threshold: policy.on_voice,
        });
    }

    /// Commits an approved result (and its effect); a conflict replans the task.
    async fn approve(
        &self,
        result: &Recorded,
        state: &TaskState,
        reasoning: &str,
        findings: Findings,
    ) -> Result<(), MessageError> {
        let amount = findings.amount_cents;
        let summary = findings.proposal.as_ref().map(Proposal::summary);
        let effect = findings
            .proposal
            .map(|p| effect(result, state, reasoning, p, amount));
        match judging::commit(
            &self.pool,
            result,
            state.policy.version,
            reasoning,
            effect.as_ref(),
        )
        .await
        {
            Ok(Decided::Done(committed)) => {
                if let CommitOutcome::Committed { output, .. } = &committed.outcome {
                    tracing::info!(result_id = %result.id, versions = ?output, "result committed");
                }
                let mut line = routed(
                    result,
                    if effect.is_some() {
                        "auto_approve"
                    } else {
                        "commit"
                    },
                );
                if committed.deferred_until.is_some() {
                    line = line.count("QuotaDeferrals", 1);
                }
                line.emit();
                if let Some(cents) = amount.filter(|_| effect.is_some()) {
                    Emf::new("judge")
                        .dimension("SpendKind", "transfer")
                        .metric("SpendCents", cents as f64, Unit::None)
                        .ids(
                            result.goal_id.0,
                            Some(result.task_id.0),
                            Some(result.agent_id.0),
                        )
                        .emit();
                }
                if let Some(goal) = committed.woken {
                    // A task that waited for its turn on these keys: its replan goes now.
                    self.planner.relay().flush(&[goal]).await;
                }
                self.after_commit(result.task_id, state).await
            }
            Ok(Decided::Superseded { status, .. }) => self.resume_at(result, state, status).await,
            Err(CommitRefused::Conflict { moved }) => {
                let fresh = occ::fresh_versions(&moved);
                let feedback = format!(
                    "state moved since the task read it: {}",
                    occ::describe(&moved)
                );
                tracing::info!(result_id = %result.id, %feedback, "commit conflict: replanning");
                self.retry(result, state, &feedback, RetryCause::Conflict, fresh)
                    .await
            }
            Err(CommitRefused::Budget(BudgetError::Database(err))) => {
                Err(MessageError::dependency(err))
            }
            // Other payments took the day's auto-pay meanwhile: a person decides this one.
            Err(CommitRefused::Budget(BudgetError::OverLimit(why)))
                if result.task_kind.is_financial()
                    && state.policy.spend.auto_pay_per_day_cents.is_some() =>
            {
                let notes = format!("the auto-pay limit was reached meanwhile: {why}");
                self.hold(result, state, vec![ReviewReason::Payment], summary, &notes)
                    .await
            }
            Err(CommitRefused::Budget(err)) => {
                self.fail(result, state, &format!("CFO: {err}")).await
            }
            Err(CommitRefused::Quota(err)) => self.fail(result, state, &err.to_string()).await,
            Err(CommitRefused::Commit(err)) => Err(MessageError::dependency(err)),
        }
    }

    /// Releases the goal's tasks that waited for the commit, settles the goal, and remembers
    /// what a committed post or reply said. All three are idempotent: a redelivered result does
    /// them again, so a memory whose embedding failed is written then.
    async fn after_commit(&self, task: TaskId, state: &TaskState) -> Result<(), MessageError> {
        self.planner.release(state.goal_id).await?;
        self.settle(state).await?;
        self.remember(task, state).await
    }

    async fn remember(&self, task: TaskId, state: &TaskState) -> Result<(), MessageError> {
        let (Some(memory), TaskKind::Execute) = (&self.memory, state.kind) else {
            return Ok(());
        };
        let kind = match state.inputs.get("action").and_then(|a| a.as_str()) {
            Some("social.publish") => Kind::Post,
            Some("social.reply") => Kind::Reply,
            _ => return Ok(()),
        };
        let argument = |name: &str| state.inputs["arguments"].get(name).and_then(|v| v.as_str());
        let Some(text) = argument("text") else {
            return Ok(());
        };
        // What reads as an instruction or spam is not kept to be recalled into later plans, even
        // when a person let it out.
        let suspicious = gate::suspicious(&[("post", text)], &gate::persona_words(&state.persona));
        if !suspicious.is_empty() {
            tracing::warn!(task_id = %task.0, found = suspicious.join("; "), "not remembered: it reads as instructions or spam");
            return Ok(());
        }
        let said = Said {
            tenant: state.tenant_id,
            agent: state.agent_id,
            task,
            kind,
            text,
            platform: argument("platform"),
        };
        if memory
            .remember(&said)
            .await
            .map_err(MessageError::dependency)?
        {
            tracing::info!(task_id = %task.0, kind = kind.as_str(), "remembered what was said");
        }
        Ok(())
    }

    async fn settle(&self, state: &TaskState) -> Result<(), MessageError> {
        if let Some(status) = judging::settle_goal(&self.pool, state.goal_id)
            .await
            .map_err(MessageError::dependency)?
        {
            tracing::info!(goal_id = %state.goal_id, %status, "goal settled");
        }
        Ok(())
    }

    async fn hold(
        &self,
        result: &TaskResult,
        state: &TaskState,
        reasons: Vec<ReviewReason>,
        summary: Option<String>,
        notes: &str,
    ) -> Result<(), MessageError> {
        let mut risk_types: Vec<&'static str> = reasons.iter().map(risk_type).collect();
        if result.task_kind.is_financial() && !risk_types.contains(&"financial") {
            risk_types.push("financial");
        }
        let review = NewReview {
            summary,
            ..new_review(
                review_id("review", result),
                &state.policy,
                format!(
                    "{}; {notes}",
                    hold_reasoning(result, &state.policy, &reasons)
                ),
                reasons,
                risk_types,
                result.task_kind.is_financial(),
            )
        };
        match judging::hold(&self.pool, result, &review)
            .await
            .map_err(MessageError::dependency)?
        {
            Decided::Done(()) => {
                tracing::info!(result_id = %result.id, review_id = %review.id, "held for a human");
                routed(result, "hold").emit();
                self.settle(state).await
            }
            Decided::Superseded { status, .. } => self.resume_at(result, state, status).await,
        }
    }

    async fn retry(
        &self,
        result: &TaskResult,
        state: &TaskState,
        feedback: &str,
        cause: RetryCause,
        fresh_versions: ReadSet,
    ) -> Result<(), MessageError> {
        match judging::retry(&self.pool, result, feedback, cause, &fresh_versions)
            .await
            .map_err(MessageError::dependency)?
        {
            Decided::Done(true) => {
                match cause {
                    RetryCause::Feedback => routed(result, "retry").emit(),
                    RetryCause::Conflict => routed(result, "conflict").count("Conflicts", 1).emit(),
                }
                Ok(())
            }
            Decided::Done(false) => self.fail(result, state, feedback).await,
            Decided::Superseded { status, .. } => self.resume_at(result, state, status).await,
        }
    }

    async fn fail(
        &self,
        result: &TaskResult,
        state: &TaskState,
        feedback: &str,
    ) -> Result<(), MessageError> {
        let mut risk_types = vec!["failed_after_retries"];
        if result.task_kind.is_financial() {
            risk_types.push("financial");
        }
        let review = new_review(
            review_id("failed", result),
            &state.policy,
            format!("failed after attempt {}: {feedback}", result.attempt),
            Vec::new(),
            risk_types,
            result.task_kind.is_financial(),
        );
        match judging::fail(&self.pool, result, feedback, &review)
            .await
            .map_err(MessageError::dependency)?
        {
            Decided::Done(()) => {
                tracing::warn!(result_id = %result.id, task_id = %result.task_id, feedback, "task failed: surfaced to humans");
                routed(result, "fail").emit();
                self.settle(state).await
            }
            Decided::Superseded { status, .. } => self.resume_at(result, state, status).await,
        }
    }

    /// [`Judge::resume`] with the task's status as the losing decision found it.
    async fn resume_at(
        &self,
        result: &TaskResult,
        state: &TaskState,
        status: TaskStatus,
    ) -> Result<(), MessageError> {
        let state = TaskState {
            status,
            ..state.clone()
        };
        self.resume(result, &state).await
    }

    /// A result whose attempt was decided before (a redelivery, or a race lost): what that
    /// decision caused is in the outbox; what follows a commit (the release of waiting tasks,
    /// the goal's settlement) is done again, idempotently.
    async fn resume(&self, result: &TaskResult, state: &TaskState) -> Result<(), MessageError> {
        tracing::info!(result_id = %result.id, status = %state.status, "attempt already decided");
        match state.status {
            TaskStatus::Committed => self.after_commit(result.task_id, state).await,
            _ => self.settle(state).await,
        }
    }
}

impl QueueHandler for Judge {
    fn queue(&self) -> Queue {
        Queue::Review
    }

    fn handle<'a>(
        &'a self,
        event: &'a SqsEvent,
        deadline: SystemTime,
    ) -> BoxFuture<'a, SqsBatchResponse> {
        Box::pin(self.handle_batch(event, deadline))
    }
}

/// What the judge made of a result: the result with the judge's score and topics, the
/// signals behind the score, the checks its signals failed, and notes for the card.
struct Assessed {
    result: TaskResult,
    /// Whether an independent signal made the score (else it is the worker's claim).
    scored: bool,
    signals: Signals,
    failed: Vec<String>,
    notes: Vec<String>,
}

/// The metrics line of a routing: the judge routed `result` to `outcome` (`commit`,
/// `auto_approve`, `hold`, `retry`, `conflict` or `fail`, as its audit record names it).
fn routed(result: &TaskResult, outcome: &'static str) -> Emf {
    Emf::new("judge")
        .dimension("TaskKind", result.task_kind.as_str())
        .dimension("Outcome", outcome)
        .count("Routed", 1)
        .ids(
            result.goal_id.0,
            Some(result.task_id.0),
            Some(result.agent_id.0),
        )
}

/// Reviews the judge opens for a result have ids derived from it, so a redelivery opens none.
fn review_id(purpose: &str, result: &TaskResult) -> ReviewId {
    ReviewId(derived_uuid(&format!("{purpose}:{}", result.id)))
}

fn new_review(
    id: ReviewId,
    policy: &Policy,
    reasoning: String,
    reasons: Vec<ReviewReason>,
    risk_types: Vec<&'static str>,
    financial: bool,
) -> NewReview {
    let (due_at, final_deadline) = NewReview::deadlines(policy);
    NewReview {
        id,
        policy_version: policy.version,
        reasoning,
        reasons,
        risk_types,
        financial,
        due_at,
        final_deadline,
        summary: None,
    }
}

/// The approval of a proposed effect, with the task that performs it.
fn effect(
    result: &TaskResult,
    state: &TaskState,
    reasoning: &str,
    proposal: Proposal,
    amount_cents: Option<i64>,
) -> Effect {
    let financial = result.task_kind.is_financial();
    let approval = new_review(
        review_id("approval", result),
        &state.policy,
        reasoning.to_owned(),
        Vec::new(),
        if financial {
            vec!["financial"]
        } else {
            Vec::new()
        },
        financial,
    );
    let origin = Origin {
        task_id: result.task_id,
        goal_id: result.goal_id,
        tenant_id: result.tenant_id,
        agent_id: result.agent_id,
        disclosure_level: result.disclosure_level,
    };
    let execute = execute_task(&origin, approval.id, &proposal);
    Effect {
        spend_cents: if financial { amount_cents } else { None },
        limits: state.policy.spend,
        // Approved without a person: a payment commits under the auto-pay limit too, checked
        // again under the budget's lock.
        auto_pay: financial,
        quotas: state.policy.quotas.clone(),
        approval,
        execute,
    }
}

fn risk_type(reason: &ReviewReason) -> &'static str {
    match reason {
        ReviewReason::Sensitive { .. } => "sensitive",
        ReviewReason::MediumConfidence => "medium_confidence",
        ReviewReason::MissingDisclosure => "missing_disclosure",
        ReviewReason::Unscored => "unscored",
        ReviewReason::Suspicious { .. } => "suspicious_input",
        ReviewReason::Payment => "financial",
    }
}

/// What the judge found, for the review card and the audit record: the checks, the topics and
/// where they came from, the claim and the score.
fn judge_notes(
    claimed: &TaskResult,
    judged: &TaskResult,
    findings: &Findings,
    failed: &[String],
) -> String {
    let mut parts = vec![format!(
        "worker claimed {:.2}, judged {:.2}",
        claimed.confidence_score.value(),
        judged.confidence_score.value()
    )];
    if !findings.passed.is_empty() {
        parts.push(format!("checks passed: {}", findings.passed.join(", ")));
    }
    if !failed.is_empty() {
        parts.push(format!("checks failed: {}", failed.join("; ")));
    }
    if !findings.suspicious.is_empty() {
        parts.push(format!(
            "suspicious inputs: {}",
            findings.suspicious.join("; ")
        ));
    }
    let claimed_tags: Vec<&str> = claimed.risk_tags.iter().map(|t| t.as_str()).collect();
    let judged_tags: Vec<&str> = judged.risk_tags.iter().map(|t| t.as_str()).collect();
    parts.push(format!(
        "topics: {} (worker: {}; judge's lexicon: {})",
        list(&judged_tags),
        list(&claimed_tags),
        list(
            &findings
                .topics
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        )
    ));
    parts.join("; ")
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn approval_reasoning(result: &TaskResult, policy: &Policy) -> String {
    if expected_action(result.task_kind).is_none() {
        return format!(
            "intermediate work, score {:.2} (at least {:.2}): committed under policy v{}; its topics travel to the effect it feeds",
            result.confidence_score.value(),
            policy.review_at_or_above.value(),
            policy.version
        );
    }
    let mut text = format!(
        "score {:.2} is above {:.2}; no sensitive topic",
        result.confidence_score.value(),
        policy.auto_approve_above.value()
    );
    if let Some(level) = result.disclosure_level {
        text.push_str(&format!("; disclosure {}", level.as_str()));
    }
    text.push_str(&format!(
        "; approved automatically under policy v{}",
        policy.version
    ));
    text
}

fn hold_reasoning(result: &TaskResult, policy: &Policy, reasons: &[ReviewReason]) -> String {
    let parts: Vec<String> = reasons
        .iter()
        .map(|r| match r {
            ReviewReason::Sensitive { tags } => format!("sensitive topics: {}", tags.join(", ")),
            ReviewReason::MediumConfidence => format!(
                "score {:.2} is within {:.2}..={:.2}",
                result.confidence_score.value(),
                policy.review_at_or_above.value(),
                policy.auto_approve_above.value()
            ),
            ReviewReason::MissingDisclosure => {
                "a publishing action without a disclosure level".to_owned()
            }
            ReviewReason::Unscored => {
                "nothing but the worker's own claim scored it (no embedder or model reading)"
                    .to_owned()
            }
            ReviewReason::Suspicious { found } => {
                format!(
                    "its inputs read as instructions or spam: {}",
                    found.join("; ")
                )
            }
            ReviewReason::Payment => {
                "a payment: a person approves it (beyond the admin's auto-pay limit)".to_owned()
            }
        })
        .collect();
    format!(
        "held for a human under policy v{}: {}",
        policy.version,
        parts.join("; ")
    )
}
