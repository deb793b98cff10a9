//! The worker Lambda: task queue -> a result on the review queue, through MCP tools.
//!
//! [`Worker::handle`] takes one SQS batch and returns the ids of the messages that failed
//! (`ReportBatchItemFailures`). The same function runs under `lambda_runtime` (`main.rs`)
//! and under the local event-source runner. For each message:
//!
//! 1. read the task (a malformed or unknown-version body is a permanent failure) and check it
//!    against the database ([`dag::admit`]): a task the database does not know, or knows
//!    otherwise than the message says, and an `execute` task whose approval does not release
//!    exactly its arguments, are refused (permanent: dead-lettered) before any tool is called;
//!    a copy of an attempt that was superseded or already decided is acknowledged and dropped;
//! 2. claim the task attempt in DynamoDB (conditional put), for a short lease the worker renews
//!    while it works. A completed claim answers with the result it recorded, sent again, with
//!    no tool called; a live claim of another worker means this copy is a duplicate of a message
//!    that worker holds: it is dropped; the same key with a different task is refused;
//! 3. run the task's steps through MCP ([`execute`]), within its kind's tool allowlist;
//! 4. store every artifact in S3 under its content hash, build the result (its id derives from
//!    the task attempt, so a re-run makes the same result) and its review message, then record
//!    provenance (one `assets` row per artifact, with the tool, server version and parameters)
//!    and the review message in the outbox, in one PostgreSQL transaction;
//! 5. mark the claim complete with the review message. At the end of the batch the relay sends
//!    the outbox rows of the goals it touched; a completed claim met again re-arms its row.
//!
//! A failure before step 5 releases the claim so a retry need not wait for it to expire;
//! nothing is referenced that was not stored first.

pub mod accounts;
pub mod draft;
pub mod effect;
pub mod engagement;
pub mod execute;
pub mod secrets;

use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chimera_aws::Clients;
use chimera_aws::artifacts::ArtifactStore;
use chimera_aws::batch::{MessageError, decode_body, report, run_batch};
use chimera_aws::handler::QueueHandler;
use chimera_aws::idempotency::{Claim, IdempotencyError, IdempotencyStore};
use chimera_aws::queues::Queues;
use chimera_aws::relay::Relay;
use chimera_aws::telemetry::{self, Emf};
use chimera_aws::visibility::Lease;
use chimera_core::domain::{CommitHash, GoalId, ResultId, Task, TaskResult, derived_uuid};
use chimera_core::envelope::TaskMessage;
use chimera_core::names::{Queue, ResourceNames};
use chimera_llm::mind::{Mind, MindError};
use chimera_mcp::{McpClient, McpConfig};
use chimera_store::PgPool;
use chimera_store::dag::{self, Admission};
use chimera_store::outbox;
use chimera_store::provenance::{self, NewAsset};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

/// Messages of one batch handled at once.
const CONCURRENCY: usize = 8;

/// Kept back from the function's remaining time when deriving a claim's expiry: the claim
/// outlives the invocation slightly, never the other way round.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);

/// A claim's lease: renewed every [`CLAIM_RENEWAL`] while the worker lives, so the claim of a
/// worker that died expires before its message returns to the queue (one visibility step).
const CLAIM_LEASE: Duration = Duration::from_secs(20);
const CLAIM_RENEWAL: Duration = Duration::from_secs(5);

/// Everything the worker keeps for the life of an execution environment: AWS clients, the
/// database pool and the MCP sessions.
pub struct Worker {
    artifacts: ArtifactStore,
    idempotency: IdempotencyStore,
    pool: PgPool,
    mcp: McpClient,
    relay: Relay,
    /// The language model that drafts, when one is configured.
    mind: Option<std::sync::Arc<Mind>>,
}

impl Worker {
    /// From the environment: AWS configuration, `DATABASE_URL`, the MCP servers
    /// (`CHIMERA_MCP_SERVERS` / `CHIMERA_MCP_CONFIG`), and the resource names (the stage, or
    /// `REVIEW_QUEUE_URL`, `ARTIFACT_BUCKET`, `IDEMPOTENCY_TABLE` as deployed). Opens no
    /// database connection; lists the MCP servers and checks the profile against them.
    pub async fn from_env() -> anyhow::Result<Self> {
        let clients = Clients::from_env().await;
        let names = ResourceNames::from_env()?;
        let database_url = chimera_aws::database::url_from_env(&clients).await?;
        let pool = chimera_store::connect_lazy_as(
            &database_url,
            CONCURRENCY as u32,
            chimera_store::DbRole::Worker,
        )?;
        let mcp = secrets::mcp_client(McpConfig::from_env()?, &clients);
        // Every server listed and every binding checked against its tool before any work: a
        // profile that does not fit its server stops the start, naming server, tool and field.
        mcp.connect().await?;
        let mind = chimera_aws::mind::from_env(&clients, &pool).await?;
        Ok(Self::new(clients, pool, mcp, names).with_mind(mind))
    }

    /// Drafts with `mind` (the MCP drafting tool when `None`).
    pub fn with_mind(mut self, mind: Option<std::sync::Arc<Mind>>) -> Self {
        self.mind = mind;
        self
    }

    pub fn new(clients: Clients, pool: PgPool, mcp: McpClient, names: ResourceNames) -> Self {
        let bucket = names.artifact_bucket();
        let table = names.idempotency_table();
        Self {
            artifacts: ArtifactStore::new(clients.s3.clone(), bucket),
            idempotency: IdempotencyStore::new(clients.dynamodb.clone(), table),
            relay: Relay::new(pool.clone(), Queues::new(clients, names)),
            pool,
            mcp,
            mind: None,
        }
    }

    pub fn mcp(&self) -> &McpClient {
        &self.mcp
    }

    /// The database the worker records in (the engagement collector's too).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Handles one batch; `deadline` is when the invocation must have answered. The results
    /// of the batch, in the outbox, go to the review queue together (`SendMessageBatch`); what
    /// could not be sent the relay's next pass sends.
    async fn handle_batch(&self, event: &SqsEvent, deadline: SystemTime) -> SqsBatchResponse {
        let lease = Lease::start(self.relay.queues(), Queue::Task, event).await;
        let outcomes = run_batch("worker", event, CONCURRENCY, |message| {
            self.handle_message(message, deadline)
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

    /// Runs one task message; returns the goal whose result message it wrote to the outbox, if
    /// any (a stale or duplicate copy writes nothing). What came of it is counted in metrics.
    async fn handle_message(
        &self,
        message: &SqsMessage,
        deadline: SystemTime,
    ) -> Result<Option<GoalId>, MessageError> {
        let TaskMessage { task } = decode_body(message)?;
        let trace = telemetry::identify(
            message,
            task.goal_id.0,
            Some(task.id.0),
            Some(task.agent_id.0),
        );
        tracing::info!(
            kind = task.kind.as_str(),
            attempt = task.attempt,
            "task received"
        );
        let started = std::time::Instant::now();
        let context = chimera_mcp::CallContext {
            traceparent: trace.traceparent(),
            goal_id: task.goal_id.0.to_string(),
            task_id: task.id.0.to_string(),
            agent_id: task.agent_id.0.to_string(),
        };
        let worked = chimera_mcp::within(context, self.work(&task, deadline)).await;
        let outcome = match &worked {
            Ok(Worked::Produced) => "produced",
            Ok(Worked::SentAgain) => "sent_again",
            Ok(Worked::Dropped) => "dropped",
            Ok(Worked::Refused) => "refused",
            Ok(Worked::Deferred) => "deferred",
            Err(err) if err.is_retryable() => "error",
            Err(_) => "rejected",
        };
        Emf::new("worker")
            .dimension("TaskKind", task.kind.as_str())
            .dimension("Outcome", outcome)
            .count("Tasks", 1)
            .millis("TaskDuration", started.elapsed())
            .ids(task.goal_id.0, Some(task.id.0), Some(task.agent_id.0))
            .property("attempt", task.attempt)
            .queue_age(message)
            .emit();
        worked.map(|w| (w != Worked::Dropped).then_some(task.goal_id))
    }

    /// Runs `task` (once per attempt, whatever the copies of its message).
    async fn work(&self, task: &Task, deadline: SystemTime) -> Result<Worked, MessageError> {
        let task = task.clone();
        match dag::admit(&self.pool, &task).await.map_err(|e| {
            MessageError::Retryable(anyhow::Error::new(e).context("checking the task"))
        })? {
            Admission::Run => {}
            Admission::Stale(reason) => {
                tracing::info!(task_id = %task.id.0, reason, "stale task message: dropped");
                return Ok(Worked::Dropped);
            }
            Admission::Refused(reason) => {
                return Err(MessageError::Permanent(anyhow::anyhow!(
                    "task message refused before any tool call: {reason}"
                )));
            }
        }
        let key = idempotency_key(&task);
        let payload_hash = payload_hash(&task)?;
        let token = match self
            .idempotency
            .claim(&key, &payload_hash, lease_until(deadline))
            .await
            .map_err(MessageError::retryable)?
        {
            Claim::Acquired { token } => token,
            Claim::Completed { outcome } => {
                tracing::info!(task_id = %task.id.0, "already done: sending its result again");
                let again = outbox::Message::result_body(task.goal_id, result_id(&task).0, outcome);
                let mut conn = self
                    .pool
                    .acquire()
                    .await
                    .map_err(MessageError::dependency)?;
                outbox::rearm(&mut conn, &again)
                    .await
                    .map_err(MessageError::dependency)?;
                return Ok(Worked::SentAgain);
            }
            Claim::InProgress { until_ms } => {
                // The worker holding the claim holds a copy of this message too, and renews
                // both while it lives; if it dies, its copy returns after the claim expired.
                tracing::info!(task_id = %task.id.0, until_ms, "another worker is on this attempt: duplicate dropped");
                return Ok(Worked::Dropped);
            }
            Claim::PayloadMismatch => {
                return Err(MessageError::Permanent(anyhow::anyhow!(
                    "idempotency key {key} was claimed for a different task payload"
                )));
            }
        };
        let renewal = self.renew_claim(key.clone(), token.clone(), deadline);
        let produced = self
            .produce(&task, chimera_llm::mind::answer_by(deadline))
            .await;
        renewal.abort();
        match produced {
            Ok(body) => {
                self.idempotency
                    .complete(&key, &token, &body)
                    .await
                    .map_err(MessageError::retryable)?;
                Ok(Worked::Produced)
            }
            Err(err) => {
                if let Err(release) = self.idempotency.release(&key, &token).await {
                    tracing::warn!(error = %release, key, "could not release the claim; it expires on its own");
                }
                if let Some(deferral) = deferral(&err) {
                    return self.defer(&task, deferral).await;
                }
                match refusal(&err) {
                    Some(reason) => self.refuse(&task, &reason).await.map(|_| Worked::Refused),
                    None => Err(err),
                }
            }
        }
    }

    /// Renews the claim on `key` in the background until aborted (or the invocation's deadline).
    fn renew_claim(
        &self,
        key: String,
        token: String,
        deadline: SystemTime,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.idempotency.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CLAIM_RENEWAL).await;
                if let Err(err) = store.extend(&key, &token, lease_until(deadline)).await {
                    tracing::warn!(key, error = %err, "renewing the claim failed");
                    if matches!(err, IdempotencyError::ClaimLost { .. }) {
                        return;
                    }
                }
            }
        })
    }

    /// Puts the task attempt off until its platform lets it go (the message is done; the
    /// outbox delivers it again then).
    async fn defer(&self, task: &Task, deferral: Deferral) -> Result<Worked, MessageError> {
        let deferred = dag::defer_attempt(&self.pool, task, deferral.until, &deferral.reason)
            .await
            .map_err(MessageError::dependency)?;
        tracing::warn!(task_id = %task.id.0, until = %deferral.until, deferred, reason = deferral.reason, "task deferred by its platform");
        Ok(Worked::Deferred)
    }

    /// Fails the task attempt for a reason no retry changes, visibly (audited, the goal
    /// settled); the message is done.
    async fn refuse(&self, task: &Task, reason: &str) -> Result<GoalId, MessageError> {
        let failed = dag::refuse_attempt(&self.pool, task, reason)
            .await
            .map_err(MessageError::dependency)?;
        if failed {
            tracing::warn!(task_id = %task.id.0, reason, "task failed: surfaced to humans");
            chimera_store::judging::settle_goal(&self.pool, task.goal_id)
                .await
                .map_err(MessageError::dependency)?;
        }
        Ok(task.goal_id)
    }

    /// Runs the task (a model drafting must answer `by` then), stores its artifacts and
    /// provenance, and returns the review message.
    async fn produce(&self, task: &Task, by: Instant) -> Result<String, MessageError> {
        let outcome = execute::run(&self.pool, &self.mcp, self.mind.as_deref(), task, by)
            .await
            .map_err(|err| {
                if let execute::ExecError::Model(MindError::OverBudget { .. })
                | execute::ExecError::EffectRefused(_) = &err
                {
                    return MessageError::Permanent(anyhow::Error::new(Refusal(err.to_string())));
                }
                if let execute::ExecError::Deferred { until, reason } = &err {
                    return MessageError::Permanent(anyhow::Error::new(Deferral {
                        until: *until,
                        reason: reason.clone(),
                    }));
                }
                if err.is_retryable() {
                    MessageError::Retryable(err.into())
                } else {
                    MessageError::Permanent(err.into())
                }
            })?;
        let result_id = result_id(task);
        let mut refs = Vec::with_capacity(outcome.artifacts.len());
        let mut assets = Vec::with_capacity(outcome.artifacts.len());
        for (index, produced) in outcome.artifacts.iter().enumerate() {
            let stored = self
                .artifacts
                .put(&produced.bytes, &produced.media_type)
                .await
                .map_err(MessageError::storage)?;
            assets.push(NewAsset {
                id: derived_uuid(&format!("asset:{}:{index}", result_id.0)),
                tenant_id: task.tenant_id.0,
                agent_id: task.agent_id.0,
                task_id: task.id.0,
                result_id: result_id.0,
                kind: produced.kind,
                s3_key: stored.s3_key.clone().unwrap_or_default(),
                sha256: stored.sha256.clone(),
                size_bytes: stored.size_bytes,
                media_type: produced
                    .media_type
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                tool_name: produced.call.tool.clone(),
                tool_version: Some(produced.call.server_version.clone()),
                platform: produced.call.platform.clone(),
                provenance: serde_json::json!({
                    "server": produced.call.server,
                    "server_version": produced.call.server_version,
                    "tool": produced.call.tool,
                    "arguments": produced.call.arguments,
                    "task_kind": task.kind.as_str(),
                    "attempt": task.attempt,
                }),
            });
            refs.push(stored);
        }
        let mut result = TaskResult {
            id: result_id,
            task_id: task.id,
            goal_id: task.goal_id,
            tenant_id: task.tenant_id,
            agent_id: task.agent_id,
            task_kind: task.kind,
            attempt: task.attempt,
            artifacts: refs,
            confidence_score: outcome.confidence,
            risk_tags: outcome.risk_tags,
            disclosure_level: outcome.disclosure_level,
            read_set: task.read_set.clone(),
            write_set: task.write_set.clone(),
            commit_hash: CommitHash::parse("0".repeat(64)).map_err(MessageError::permanent)?,
        };
        result.commit_hash = result.compute_commit_hash();
        let body = self
            .artifacts
            .result_message(&result)
            .await
            .map_err(MessageError::storage)?;
        // The provenance and the message that takes the result to the judge commit together.
        let message = outbox::Message::result_body(task.goal_id, result_id.0, body.clone());
        provenance::record_assets(&self.pool, &assets, &message)
            .await
            .map_err(|e| {
                // A row the schema refuses (a foreign key naming nothing) is refused again.
                let permanent = e
                    .as_database_error()
                    .is_some_and(|d| d.is_foreign_key_violation() || d.is_check_violation());
                let err = anyhow::Error::new(e).context("recording provenance");
                if permanent {
                    MessageError::Permanent(err)
                } else {
                    MessageError::Retryable(err)
                }
            })?;
        Ok(body)
    }
}

impl QueueHandler for Worker {
    fn queue(&self) -> Queue {
        Queue::Task
    }

    fn handle<'a>(
        &'a self,
        event: &'a SqsEvent,
        deadline: SystemTime,
    ) -> BoxFuture<'a, SqsBatchResponse> {
        Box::pin(self.handle_batch(event, deadline))
    }
}

/// What came of a task message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Worked {
    /// The attempt ran; its result went to the outbox.
    Produced,
    /// The attempt had run before: its result was written to the outbox again.
    SentAgain,
    /// A stale copy, or one another worker is running.
    Dropped,
    /// The task cannot run (its budget cannot pay for the model): failed, visibly.
    Refused,
    /// Its platform asked it to wait: due again later.
    Deferred,
}

/// A task that cannot run for a reason no retry changes (its budget cannot pay for a model
/// call): the task fails, surfaced to humans, instead of the message being dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refusal(String);

/// A task whose platform asked it to wait until `until` (a rate limit): put off, not failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("deferred until {until}: {reason}")]
struct Deferral {
    until: chrono::DateTime<chrono::Utc>,
    reason: String,
}

fn deferral(err: &MessageError) -> Option<Deferral> {
    match err {
        MessageError::Permanent(err) => err.downcast_ref::<Deferral>().cloned(),
        MessageError::Retryable(_) => None,
    }
}

fn refusal(err: &MessageError) -> Option<String> {
    match err {
        MessageError::Permanent(err) => err.downcast_ref::<Refusal>().map(|r| r.0.clone()),
        MessageError::Retryable(_) => None,
    }
}

/// One claim per task attempt: a replan (attempt + 1) is new work.
pub fn idempotency_key(task: &Task) -> String {
    format!("task#{}#{}", task.id.0, task.attempt)
}

fn payload_hash(task: &Task) -> Result<String, MessageError> {
    let bytes = serde_json::to_vec(task).map_err(MessageError::permanent)?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// The result of a task attempt has one id, however often the attempt runs.
pub fn result_id(task: &Task) -> ResultId {
    ResultId(derived_uuid(&idempotency_key(task)))
}

/// When a claim taken or renewed now expires: one lease from now, but never past the
/// invocation's deadline (less a margin), and at least a margin from now.
fn lease_until(deadline: SystemTime) -> SystemTime {
    let now = SystemTime::now();
    let lease = now + CLAIM_LEASE;
    deadline
        .checked_sub(CLAIM_MARGIN)
        .filter(|t| *t > now)
        .map_or(now + CLAIM_MARGIN, |limit| limit.min(lease))
}
