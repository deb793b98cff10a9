//! Decisions: the approve, reject and edit endpoints, their requests and response, and the
//! decide flow (check the card, read and edit the proposal, take the decision in the store,
//! then release what follows: `refusal`, `after`, `settle`). Bulk approval takes its
//! decisions through `take` (after `preflight`) too.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use chimera_aws::telemetry::{Emf, Unit};
use chimera_core::auth::{Permission, Principal};
use chimera_core::domain::{AgentId, CommitHash, DecisionKind, GoalId, ReviewId, TaskStatus};
use chimera_core::effect::{self, EffectAction, Origin, Proposal};
use chimera_core::gate;
use chimera_core::trace::TraceContext;
use chimera_store::decisions::{self, Decision, Refused, Taken, Verdict};
use chimera_store::judging;
use chimera_store::reviews::Card;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::card::{artifact_refs, expected_proposal, load};
use crate::auth::{Caller, RequestId};
use crate::{ApiError, AppState, Winner, json_body};

/// The reviewer names what they saw (every decision carries these two).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// The card's `artifact_hash`.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub artifact_hash: String,
    /// The card's `policy_version`.
    #[schema(minimum = 1, maximum = 2147483647)]
    pub policy_version: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub artifact_hash: String,
    #[schema(minimum = 1, maximum = 2147483647)]
    pub policy_version: i32,
    /// Why (1..=2000 characters, not blank): the task's feedback and the audit record keep it.
    #[schema(min_length = 1, max_length = 2000)]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub artifact_hash: String,
    #[schema(minimum = 1, maximum = 2147483647)]
    pub policy_version: i32,
    /// The proposal's arguments to change: content only (`text` of a post or reply, `memo`
    /// of a transfer); the card's `editable_fields` lists them.
    #[schema(value_type = Object)]
    pub arguments: Map<String, Value>,
}

/// A decision that was taken.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionResponse {
    pub review_id: uuid::Uuid,
    /// `approve`, `edit_approve` or `reject`.
    #[schema(value_type = String, example = "approve")]
    pub decision: DecisionKind,
    pub goal_id: uuid::Uuid,
    pub task_id: uuid::Uuid,
    /// The task that performs the approved effect, if the result proposed one.
    pub execute_task_id: Option<uuid::Uuid>,
    /// When the effect goes, if the agent's quota on the platform is used up for now: it waits
    /// for the first window with room (not failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<chrono::DateTime<Utc>>,
    /// The hash of the edited artifact (an edit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_artifact_hash: Option<String>,
}

pub(super) enum Action {
    Approve,
    Edit(Map<String, Value>),
    Reject(String),
}

#[utoipa::path(post, path = "/reviews/{id}/approve", tag = "reviews",
    params(("id" = uuid::Uuid, Path, description = "The review")),
    request_body = ApproveRequest,
    responses((status = 200, body = DecisionResponse),
              (status = 400, description = "Malformed body"),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not a reviewer"),
              (status = 404, description = "No such review for the caller's tenant"),
              (status = 409, description = "Stale (artifact or policy changed), already decided (with the winner), or the state moved"),
              (status = 413, description = "Body too large"),
              (status = 422, description = "The proposal is unusable, or the task failed after its attempts")),
    security(("bearer" = [])))]
pub async fn approve(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DecisionResponse>, ApiError> {
    let principal = caller.require(Permission::Decide)?;
    let seen: ApproveRequest = json_body(body)?;
    decide_on(&state, principal, &request_id, &id, &seen, Action::Approve).await
}

#[utoipa::path(post, path = "/reviews/{id}/reject", tag = "reviews",
    params(("id" = uuid::Uuid, Path, description = "The review")),
    request_body = RejectRequest,
    responses((status = 200, body = DecisionResponse),
              (status = 400, description = "Malformed body"),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not a reviewer"),
              (status = 404, description = "No such review for the caller's tenant"),
              (status = 409, description = "Stale or already decided"),
              (status = 413, description = "Body too large")),
    security(("bearer" = [])))]
pub async fn reject(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DecisionResponse>, ApiError> {
    let principal = caller.require(Permission::Decide)?;
    let request: RejectRequest = json_body(body)?;
    let reason = request.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(ApiError::BadRequest(
            "reason must be 1..=2000 characters".into(),
        ));
    }
    let seen = ApproveRequest {
        artifact_hash: request.artifact_hash,
        policy_version: request.policy_version,
    };
    decide_on(
        &state,
        principal,
        &request_id,
        &id,
        &seen,
        Action::Reject(reason),
    )
    .await
}

#[utoipa::path(post, path = "/reviews/{id}/edit", tag = "reviews",
    params(("id" = uuid::Uuid, Path, description = "The review")),
    request_body = EditRequest,
    responses((status = 200, body = DecisionResponse, description = "Edited (a new artifact version) and approved"),
              (status = 400, description = "Malformed body or invalid content"),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not a reviewer, or the edit touches an amount, a recipient or a target"),
              (status = 404, description = "No such review for the caller's tenant"),
              (status = 409, description = "Stale, already decided, or the state moved"),
              (status = 413, description = "Body too large"),
              (status = 422, description = "The result proposes nothing to edit")),
    security(("bearer" = [])))]
pub async fn edit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DecisionResponse>, ApiError> {
    let principal = caller.require(Permission::Decide)?;
    let request: EditRequest = json_body(body)?;
    let seen = ApproveRequest {
        artifact_hash: request.artifact_hash,
        policy_version: request.policy_version,
    };
    let action = Action::Edit(request.arguments);
    decide_on(&state, principal, &request_id, &id, &seen, action).await
}

/// One decision on the review `id` of the caller's tenant.
async fn decide_on(
    state: &AppState,
    principal: &Principal,
    request_id: &str,
    id: &str,
    seen: &ApproveRequest,
    action: Action,
) -> Result<Json<DecisionResponse>, ApiError> {
    let hex = |h: &str| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(&seen.artifact_hash) {
        return Err(ApiError::BadRequest(
            "artifact_hash must be the card's: 64 lowercase hex characters".into(),
        ));
    }
    if seen.policy_version < 1 {
        return Err(ApiError::BadRequest("policy_version must be >= 1".into()));
    }
    let card = load(state, principal, id).await?;
    take(state, principal, request_id, card, seen, action)
        .await
        .map(Json)
}

/// Why a decision on `card` cannot be taken, as far as the card (read without a lock) tells;
/// the store checks again under the lock. An item judged under an older policy than its
/// agent's is being judged again: refused with the current version.
pub(super) fn preflight(card: &Card, seen: &ApproveRequest) -> Result<(), ApiError> {
    // A decided review has its decision (the schema's check), a pending one none.
    if let Some(decision) = card.decision {
        return Err(ApiError::AlreadyDecided(Winner {
            decision,
            decided_by: card.decided_by.clone().unwrap_or_default(),
            decided_at: card.decided_at.unwrap_or_else(Utc::now),
        }));
    }
    if card.artifact_hash != seen.artifact_hash {
        return Err(ApiError::Stale(
            "the artifact changed since it was reviewed".into(),
        ));
    }
    if card.current_policy_version != card.policy_version {
        return Err(ApiError::PolicyMoved(card.current_policy_version));
    }
    if card.policy_version != seen.policy_version {
        return Err(ApiError::PolicyMoved(card.policy_version));
    }
    Ok(())
}

/// Reads the proposal of `card`'s result (its first artifact).
pub(super) async fn read_proposal(state: &AppState, card: &Card) -> Result<Proposal, ApiError> {
    let refs = artifact_refs(card)?;
    let first = refs.first().ok_or_else(|| {
        ApiError::UnprocessableEntity("the result has no artifact to approve".into())
    })?;
    let bytes = match (&first.inline, &first.s3_key) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(key)) => state
            .artifacts
            .get(key, &first.sha256)
            .await
            .map_err(ApiError::dependency)?,
        (None, None) => Vec::new(),
    };
    let proposal = Proposal::from_slice(&bytes)
        .map_err(|e| ApiError::UnprocessableEntity(format!("the proposal is unreadable: {e}")))?;
    // What the judge checks before it holds an item is checked again before an approval
    // releases it: the one action the task kind may propose, and a positive amount.
    let expected = expected_proposal(card);
    if expected.is_none() || expected.map(EffectAction::as_str) != Some(proposal.action.as_str()) {
        return Err(ApiError::UnprocessableEntity(format!(
            "a {} task may only propose {}, not {}",
            card.task_kind,
            expected.map_or("nothing", EffectAction::as_str),
            proposal.action
        )));
    }
    if expected.is_some_and(EffectAction::is_financial)
        && effect::amount_cents(&proposal).is_none_or(|a| a <= 0)
    {
        return Err(ApiError::UnprocessableEntity(
            "the transfer has no positive amount_cents".into(),
        ));
    }
    Ok(proposal)
}

/// A decision ready to be taken, with what its response names.
pub(super) struct Prepared {
    pub decision: Decision,
    /// The edited artifact, stored once the decision is won.
    edited_bytes: Option<Vec<u8>>,
}

impl Prepared {
    /// The money the decision spends, in cents (an approved transfer).
    pub fn spend_cents(&self) -> i64 {
        match &self.decision.verdict {
            Verdict::Approve { spend_cents, .. } => spend_cents.unwrap_or(0),
            Verdict::Reject { .. } => 0,
        }
    }

    /// The response to the decision, once `taken`.
    pub fn response(&self, taken: &Taken) -> DecisionResponse {
        let (execute, edited_hash) = match &self.decision.verdict {
            Verdict::Approve {
                execute,
                edited_hash,
                ..
            } => (execute.as_deref(), edited_hash.as_ref()),
            Verdict::Reject { .. } => (None, None),
        };
        DecisionResponse {
            review_id: self.decision.review.0,
            decision: taken.decision,
            goal_id: taken.goal.0,
            task_id: taken.task.0,
            execute_task_id: execute.map(|t| t.id.0),
            deferred_until: taken.deferred_until,
            edited_artifact_hash: edited_hash.map(|h| h.as_str().to_owned()),
        }
    }
}

/// Takes one decision on `card` and, once it is taken, releases what follows from it.
pub(super) async fn take(
    state: &AppState,
    principal: &Principal,
    request_id: &str,
    card: Card,
    seen: &ApproveRequest,
    action: Action,
) -> Result<DecisionResponse, ApiError> {
    let prepared = prepare(state, principal, request_id, card, seen, action).await?;
    decide_prepared(state, &prepared).await
}

/// Takes a prepared decision and, once it is taken, releases what follows from it.
pub(super) async fn decide_prepared(
    state: &AppState,
    prepared: &Prepared,
) -> Result<DecisionResponse, ApiError> {
    let taken = match decisions::decide(&state.pool, &prepared.decision).await {
        Ok(taken) => taken,
        Err(refused) => return Err(refusal(state, refused).await),
    };
    if let Some(bytes) = &prepared.edited_bytes {
        store_edit(state, prepared.decision.review, bytes).await;
    }
    tracing::info!(review_id = %prepared.decision.review, decision = %taken.decision,
                   reviewer = prepared.decision.reviewer, request_id = prepared.decision.request_id,
                   goal_id = %taken.goal.0, task_id = %taken.task.0,
                   trace_id = TraceContext::trace_id_of(taken.goal.0),
                   deferred_until = ?taken.deferred_until, "review decided");
    let mut line = Emf::new("hitl-api")
        .dimension("Decision", taken.decision.to_string())
        .count("Decisions", 1)
        .ids(taken.goal.0, Some(taken.task.0), None);
    if taken.deferred_until.is_some() {
        line = line.count("QuotaDeferrals", 1);
    }
    line.emit();
    // A rejection spends nothing.
    if prepared.spend_cents() > 0 {
        Emf::new("hitl-api")
            .dimension("SpendKind", "transfer")
            .metric("SpendCents", prepared.spend_cents() as f64, Unit::None)
            .ids(taken.goal.0, Some(taken.task.0), None)
            .emit();
    }
    after(state, &taken).await;
    Ok(prepared.response(&taken))
}

/// Checks `action` on `card` against what the reviewer saw and builds the decision: the
/// proposal read (and edited), the effect's task, the spend.
pub(super) async fn prepare(
    state: &AppState,
    principal: &Principal,
    request_id: &str,
    card: Card,
    seen: &ApproveRequest,
    action: Action,
) -> Result<Prepared, ApiError> {
    preflight(&card, seen)?;
    if card.task_status == TaskStatus::Failed && !matches!(action, Action::Reject(_)) {
        return Err(ApiError::UnprocessableEntity(
            "the task failed after its attempts and its dependents were cancelled: reject (acknowledge) this item, or submit the goal again".into(),
        ));
    }
    let kind = card.task_kind;
    let mut edited_bytes = None;
    let verdict = match action {
        Action::Reject(reason) => Verdict::Reject { reason },
        Action::Approve | Action::Edit(_) => {
            let mut proposal = match expected_proposal(&card) {
                Some(_) => Some(read_proposal(state, &card).await?),
                None => None,
            };
            if let Action::Edit(edits) = action {
                let original = proposal.take().ok_or_else(|| {
                    ApiError::UnprocessableEntity(
                        "this result proposes no effect: there is nothing to edit".into(),
                    )
                })?;
                let edited = original.edited(&edits).map_err(|e| match e {
                    effect::EditRefused::Forbidden { .. } => ApiError::Forbidden(e.to_string()),
                    effect::EditRefused::Invalid(_) => ApiError::BadRequest(e.to_string()),
                })?;
                edited_text_passes(state, &card, &edited).await?;
                // The edited artifact is a new, content-addressed version beside the original,
                // stored once the decision is won (a losing racer leaves nothing behind).
                let bytes = edited.to_bytes();
                edited_bytes = Some(bytes);
                proposal = Some(edited);
            }
            let spend_cents = proposal
                .as_ref()
                .filter(|_| kind.is_financial())
                .and_then(effect::amount_cents);
            let execute = proposal.map(|p| {
                let origin = Origin {
                    task_id: card.task_id,
                    goal_id: card.goal_id,
                    tenant_id: principal.tenant,
                    agent_id: AgentId(card.agent_id),
                    disclosure_level: card.disclosure_level,
                };
                effect::execute_task(&origin, card.id, &p)
            });
            let edited_hash = edited_bytes
                .as_deref()
                .map(|bytes| CommitHash::parse(chimera_aws::artifacts::sha256_hex(bytes)))
                .transpose()
                .map_err(|e| ApiError::internal(anyhow::anyhow!("edited artifact hash: {e}")))?;
            Verdict::Approve {
                execute: execute.map(Box::new),
                spend_cents,
                edited_hash,
            }
        }
    };
    let decision = Decision {
        tenant: principal.tenant,
        review: card.id,
        reviewer: principal.subject.clone(),
        artifact_hash: seen.artifact_hash.clone(),
        policy_version: seen.policy_version,
        verdict,
        request_id: Some(request_id.to_owned()),
        by_policy: false,
    };
    Ok(Prepared {
        decision,
        edited_bytes,
    })
}

/// A reviewer's text (a post's, or a transfer's memo) is judged as a drafter's is: the same
/// deterministic checks under the agent's policy (length, banned phrases, links, disclosure, internal text, degenerate text,
/// instructions and spam). A failing edit is refused (422, the checks named) and nothing is
/// decided.
async fn edited_text_passes(
    state: &AppState,
    card: &Card,
    edited: &Proposal,
) -> Result<(), ApiError> {
    let field = |name: &str| {
        edited
            .arguments
            .get(name)
            .and_then(serde_json::Value::as_str)
    };
    // A post's text, or a transfer's memo.
    let Some(text) = field("text").or_else(|| field("memo")) else {
        return Ok(());
    };
    let is_post = field("text").is_some();
    let task = judging::task_state(&state.pool, card.task_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("review {} has no task", card.id.0)))?;
    let persona = gate::persona_words(&task.persona);
    let mut failed = Vec::new();
    if is_post && (text.trim().is_empty() || text.chars().count() > effect::MAX_POST_CHARS) {
        failed.push(format!(
            "the post text must be 1..={} characters",
            effect::MAX_POST_CHARS
        ));
    }
    let checks = gate::check_text(
        &task.policy,
        text,
        &gate::Context {
            platform: field("platform"),
            persona: &persona,
            feedback: None,
            said_before: &[],
            asked: "",
        },
    );
    failed.extend(checks.failed);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ApiError::UnprocessableEntity(format!(
            "the edited text fails the judge's checks: {}",
            failed.join("; ")
        )))
    }
}

/// Stores the edited artifact of a decision that was taken (its hash is in the decision and
/// the audit record; the effect carries the edited arguments itself). The decision stands
/// whatever happens here: a failed store is retried, then logged with the hash.
async fn store_edit(state: &AppState, review: ReviewId, bytes: &[u8]) {
    let mut last = None;
    for _ in 0..3 {
        match state.artifacts.put(bytes, "application/json").await {
            Ok(_) => return,
            Err(err) => last = Some(err),
        }
    }
    if let Some(err) = last {
        tracing::error!(review_id = %review, sha256 = chimera_aws::artifacts::sha256_hex(bytes),
                        error = %err, "the edited artifact of a decided review could not be stored");
    }
}

/// The API's answer to a refused decision (a conflict's replan was written to the outbox: it is
/// sent now).
async fn refusal(state: &AppState, refused: Refused) -> ApiError {
    if let Refused::Conflict { goal, .. } = &refused {
        state.relay.flush(&[*goal]).await;
    }
    refused_error(refused)
}

/// The API's answer to a refused decision.
pub(super) fn refused_error(refused: Refused) -> ApiError {
    match refused {
        Refused::NotFound => ApiError::NotFound,
        Refused::AlreadyDecided {
            decision,
            decided_by,
            decided_at,
        } => ApiError::AlreadyDecided(Winner {
            decision,
            decided_by,
            decided_at,
        }),
        Refused::Stale(reason) => ApiError::Stale(reason),
        Refused::PolicyMoved { current } => ApiError::PolicyMoved(current),
        Refused::Conflict { feedback, .. } if feedback.is_empty() => {
            ApiError::Conflict("the state it read has moved: the task would be replanned".into())
        }
        Refused::Conflict { feedback, .. } => {
            ApiError::Conflict(format!("{feedback}; the task is replanned"))
        }
        Refused::Budget(chimera_store::budget::BudgetError::Database(err)) => {
            ApiError::dependency(err)
        }
        Refused::Budget(err) => ApiError::Conflict(format!("budget refused: {err}")),
        Refused::TaskMoved => ApiError::Conflict(Refused::TaskMoved.to_string()),
        Refused::Quota(err) => ApiError::Conflict(err.to_string()),
        Refused::Commit(err) => ApiError::dependency(err),
    }
}

/// After a decision: the messages it wrote (the effect's task, the release of the goal's
/// waiting tasks) go out, and the goal's status follows. The decision stands whatever happens
/// here: what the relay could not send now it sends on its next pass.
async fn after(state: &AppState, taken: &Taken) {
    let goals: Vec<GoalId> = std::iter::once(taken.goal).chain(taken.woken).collect();
    state.relay.flush(&goals).await;
    settle(state, taken.goal).await;
}

pub(crate) async fn settle(state: &AppState, goal: GoalId) {
    match judging::settle_goal(&state.pool, goal).await {
        Ok(Some(status)) => tracing::info!(goal_id = %goal.0, %status, "goal settled"),
        Ok(None) => {}
        Err(err) => tracing::error!(goal_id = %goal.0, error = %err, "goal not settled"),
    }
}
