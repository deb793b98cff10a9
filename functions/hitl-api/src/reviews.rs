//! Reviews: the pending queue, the review card, decisions, bulk approval and the audit trail.
//!
//! A decision names the artifact hash and policy version of the card the reviewer saw; the
//! store takes it under the review row's lock, once ([`chimera_store::decisions`]). What
//! happens after a decision is taken:
//!
//! - approve (or edit, then approve): the `execute` task is sent to the task queue, the
//!   planner is told to release what waited for the approved task, the goal is settled;
//! - reject: the goal is settled (the task failed, its dependents were cancelled);
//! - the state moved while the item waited: the store closed the review and set the task to
//!   retry; the planner gets the replan, and the caller a 409.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use chimera_core::auth::{Permission, Principal};
use chimera_core::domain::{
    AgentId, ArtifactRef, CommitHash, DisclosureLevel, GoalId, ReviewId, TaskKind,
};
use chimera_core::effect::{self, Origin, Proposal};
use chimera_store::decisions::{self, Decision, Refused, Taken, Verdict};
use chimera_store::judging;
use chimera_store::reviews::{
    self as store, AuditEntry, Card, QueueFilter, QueueItem, Sort, Subject,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, RequestId};
use crate::{ApiError, AppState, Winner, json_body};

/// Risk types a reviewer filters by.
pub const RISK_TYPES: [&str; 5] = [
    "sensitive",
    "medium_confidence",
    "missing_disclosure",
    "financial",
    "failed_after_retries",
];

/// Text artifacts up to this size are shown inline on the card; larger ones and media get a
/// presigned URL.
const INLINE_CARD_BYTES: u64 = 256 * 1024;
/// How long a presigned artifact URL stays valid.
const PRESIGNED_SECS: u64 = 15 * 60;
/// Most items per bulk approval: they are decided one after another, and the whole request
/// must fit API Gateway's 30 s (a retry shows the ones already approved as `already_decided`).
pub const MAX_BULK_ITEMS: usize = 50;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `sensitive`, `medium_confidence`, `missing_disclosure`, `financial` or
    /// `failed_after_retries`.
    pub risk: Option<String>,
    pub agent: Option<uuid::Uuid>,
    pub goal: Option<uuid::Uuid>,
    /// `age` (oldest first), `confidence` (least confident first) or `risk` (riskiest first).
    pub sort: Option<String>,
    /// `asc` or `desc`: reverses the sort's natural order when it is the other one.
    pub order: Option<String>,
    /// 1..=100, default 25.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewPage {
    pub items: Vec<QueueItem>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[utoipa::path(get, path = "/reviews", tag = "reviews", params(ListQuery),
    responses((status = 200, body = ReviewPage), (status = 400, description = "Bad filter"),
              (status = 401, description = "No valid token")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ReviewPage>, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(risk) = &query.risk
        && !RISK_TYPES.contains(&risk.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "risk must be one of {}",
            RISK_TYPES.join(", ")
        )));
    }
    let sort = match query.sort.as_deref() {
        None => Sort::Age,
        Some(name) => Sort::parse(name)
            .ok_or_else(|| ApiError::BadRequest("sort must be age, confidence or risk".into()))?,
    };
    // Each sort has a natural order; `order` names the direction explicitly.
    let natural_desc = sort == Sort::Risk;
    let descending = match query.order.as_deref() {
        None => natural_desc,
        Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(ApiError::BadRequest("order must be asc or desc".into())),
    };
    let limit = query.limit.unwrap_or(25);
    let offset = query.offset.unwrap_or(0);
    if !(1..=100).contains(&limit) || offset < 0 {
        return Err(ApiError::BadRequest(
            "limit must be 1..=100 and offset >= 0".into(),
        ));
    }
    let filter = QueueFilter {
        risk_type: query.risk,
        agent: query.agent,
        goal: query.goal,
    };
    let page = store::queue(
        &state.pool,
        principal.tenant,
        &filter,
        sort,
        descending,
        limit,
        offset,
    )
    .await
    .map_err(ApiError::unavailable)?;
    Ok(Json(ReviewPage {
        items: page.items,
        total: page.total,
        limit,
        offset,
    }))
}

/// One artifact on a card: text inline, anything else (or a large text) as a presigned URL.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactView {
    pub media_type: String,
    pub sha256: String,
    pub size_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A presigned GET URL, valid for 15 minutes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    pub decision: String,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProposalView {
    pub action: String,
    #[schema(value_type = Object)]
    pub arguments: Map<String, Value>,
}

/// What a reviewer sees, and must name back in a decision (`artifact_hash`,
/// `policy_version`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewCard {
    pub id: uuid::Uuid,
    /// `pending`, `approved`, `rejected` or `expired`.
    pub status: String,
    pub goal_id: uuid::Uuid,
    pub task_id: uuid::Uuid,
    pub agent_id: uuid::Uuid,
    pub task_kind: String,
    pub attempt: i32,
    pub confidence: f64,
    pub risk_tags: Vec<String>,
    pub risk_types: Vec<String>,
    /// The judge's reasons, as the routing policy gave them.
    #[schema(value_type = Vec<Object>)]
    pub reasons: Value,
    pub disclosure_level: Option<String>,
    pub judge_reasoning: String,
    pub policy_version: i32,
    pub artifact_hash: String,
    pub financial: bool,
    pub priority: i32,
    pub escalated: bool,
    pub created_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub final_deadline: DateTime<Utc>,
    pub decision: Option<DecisionView>,
    pub artifacts: Vec<ArtifactView>,
    /// The effect the result proposes, if any.
    pub proposal: Option<ProposalView>,
    /// The proposal's arguments an edit may change.
    pub editable_fields: Vec<String>,
}

#[utoipa::path(get, path = "/reviews/{id}", tag = "reviews",
    params(("id" = uuid::Uuid, Path, description = "The review")),
    responses((status = 200, body = ReviewCard),
              (status = 401, description = "No valid token"),
              (status = 404, description = "No such review for the caller's tenant")),
    security(("bearer" = [])))]
pub async fn card(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReviewCard>, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let card = load(&state, principal, &id).await?;
    let refs = artifact_refs(&card)?;
    let mut artifacts = Vec::with_capacity(refs.len());
    for r in &refs {
        artifacts.push(view(&state, r).await?);
    }
    let proposal = match expected_proposal(&card) {
        Some(_) => artifacts
            .first()
            .and_then(|a| a.text.as_deref())
            .and_then(|t| Proposal::from_slice(t.as_bytes()).ok()),
        None => None,
    };
    // A post with media: the reviewer sees the image the post would carry.
    if let Some(sha256) = proposal
        .as_ref()
        .and_then(|p| p.arguments.get("media_sha256"))
        .and_then(Value::as_str)
        && let Some(media) = media_view(&state, sha256).await?
    {
        artifacts.push(media);
    }
    Ok(Json(ReviewCard {
        id: card.id.0,
        status: card.status,
        goal_id: card.goal_id.0,
        task_id: card.task_id.0,
        agent_id: card.agent_id,
        task_kind: card.task_kind,
        attempt: card.attempt,
        confidence: card.confidence,
        risk_tags: card.risk_tags,
        risk_types: card.risk_types,
        reasons: card.reasons,
        disclosure_level: card.disclosure_level,
        judge_reasoning: card.judge_reasoning,
        policy_version: card.policy_version,
        artifact_hash: card.artifact_hash,
        financial: card.financial,
        priority: card.priority,
        escalated: card.escalated,
        created_at: card.created_at,
        due_at: card.due_at,
        final_deadline: card.final_deadline,
        decision: match (card.decision, card.decided_by, card.decided_at) {
            (Some(decision), Some(decided_by), Some(decided_at)) => Some(DecisionView {
                decision,
                decided_by,
                decided_at,
            }),
            _ => None,
        },
        artifacts,
        editable_fields: proposal
            .as_ref()
            .map(|p| {
                effect::editable_fields(&p.action)
                    .iter()
                    .map(|f| (*f).to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        proposal: proposal.map(|p| ProposalView {
            action: p.action,
            arguments: p.arguments,
        }),
    }))
}

/// The review `id` of the caller's tenant; a malformed, unknown or foreign id is 404.
async fn load(state: &AppState, principal: &Principal, id: &str) -> Result<Card, ApiError> {
    let id = uuid::Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    store::card(&state.pool, principal.tenant, ReviewId(id))
        .await
        .map_err(ApiError::unavailable)?
        .ok_or(ApiError::NotFound)
}

fn artifact_refs(card: &Card) -> Result<Vec<ArtifactRef>, ApiError> {
    serde_json::from_value(card.artifacts.clone()).map_err(|e| {
        ApiError::unavailable(anyhow::anyhow!(
            "review {}: unreadable artifacts: {e}",
            card.id
        ))
    })
}

/// The action the card's task kind proposes, if it proposes one.
fn expected_proposal(card: &Card) -> Option<&'static str> {
    TaskKind::parse(&card.task_kind).and_then(effect::expected_action)
}

fn is_text(media_type: &str) -> bool {
    media_type.starts_with("text/") || media_type.starts_with("application/json")
}

async fn view(state: &AppState, artifact: &ArtifactRef) -> Result<ArtifactView, ApiError> {
    let mut out = ArtifactView {
        media_type: artifact.media_type.clone(),
        sha256: artifact.sha256.clone(),
        size_bytes: artifact.size_bytes,
        text: artifact.inline.clone(),
        url: None,
    };
    let Some(key) = artifact.s3_key.as_deref() else {
        return Ok(out);
    };
    if out.text.is_none()
        && is_text(&artifact.media_type)
        && artifact.size_bytes <= INLINE_CARD_BYTES
    {
        let bytes = state
            .artifacts
            .get(key, &artifact.sha256)
            .await
            .map_err(ApiError::unavailable)?;
        out.text = Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    if out.text.is_none() {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(
            std::time::Duration::from_secs(PRESIGNED_SECS),
        )
        .map_err(ApiError::unavailable)?;
        let request = state
            .clients
            .s3
            .get_object()
            .bucket(state.artifacts.bucket())
            .key(key)
            .presigned(config)
            .await
            .map_err(ApiError::unavailable)?;
        out.url = Some(request.uri().to_owned());
    }
    Ok(out)
}

/// The stored media object `sha256` (content-addressed), with a presigned URL; `None` if it is
/// not in the bucket.
async fn media_view(state: &AppState, sha256: &str) -> Result<Option<ArtifactView>, ApiError> {
    let key = chimera_aws::artifacts::ArtifactStore::key_for(sha256);
    let head = match state
        .clients
        .s3
        .head_object()
        .bucket(state.artifacts.bucket())
        .key(&key)
        .send()
        .await
    {
        Ok(head) => head,
        Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => {
            tracing::warn!(sha256, "a proposal names media that is not in the bucket");
            return Ok(None);
        }
        Err(err) => return Err(ApiError::unavailable(err)),
    };
    let media = ArtifactRef {
        media_type: head
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_owned(),
        sha256: sha256.to_owned(),
        size_bytes: head
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        s3_key: Some(key),
        inline: None,
    };
    view(state, &media).await.map(Some)
}

/// The reviewer names what they saw (every decision carries these two).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// The card's `artifact_hash`.
    pub artifact_hash: String,
    /// The card's `policy_version`.
    pub policy_version: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    pub artifact_hash: String,
    pub policy_version: i32,
    /// Why (1..=2000 characters): the task's feedback and the audit record keep it.
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    pub artifact_hash: String,
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
    pub decision: String,
    pub goal_id: uuid::Uuid,
    pub task_id: uuid::Uuid,
    /// The task that performs the approved effect, if the result proposed one.
    pub execute_task_id: Option<uuid::Uuid>,
    /// The hash of the edited artifact (an edit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_artifact_hash: Option<String>,
}

enum Action {
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
    let card = load(state, principal, id).await?;
    take(state, principal, request_id, card, seen, action)
        .await
        .map(Json)
}

/// Why a decision on `card` cannot be taken, as far as the card (read without a lock) tells;
/// the store checks again under the lock. A policy that moved on since the review was opened
/// is left to the store, which requeues the item under the new version, unless this is only
/// a check (`dry_run`).
fn preflight(card: &Card, seen: &ApproveRequest, dry_run: bool) -> Result<(), ApiError> {
    if card.status != "pending" {
        return Err(ApiError::AlreadyDecided(Winner {
            decision: card.decision.clone().unwrap_or_else(|| card.status.clone()),
            decided_by: card.decided_by.clone().unwrap_or_default(),
            decided_at: card.decided_at.unwrap_or_else(Utc::now),
        }));
    }
    if card.artifact_hash != seen.artifact_hash {
        return Err(ApiError::Stale(
            "the artifact changed since it was reviewed".into(),
        ));
    }
    if card.policy_version != seen.policy_version {
        return Err(ApiError::Stale(format!(
            "the item is judged under policy v{}, not v{}",
            card.policy_version, seen.policy_version
        )));
    }
    if dry_run && card.current_policy_version != card.policy_version {
        return Err(ApiError::Stale(format!(
            "the agent's policy is now v{}; review the item again",
            card.current_policy_version
        )));
    }
    Ok(())
}

/// Reads the proposal of `card`'s result (its first artifact).
async fn read_proposal(state: &AppState, card: &Card) -> Result<Proposal, ApiError> {
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
            .map_err(ApiError::unavailable)?,
        (None, None) => Vec::new(),
    };
    let proposal = Proposal::from_slice(&bytes)
        .map_err(|e| ApiError::UnprocessableEntity(format!("the proposal is unreadable: {e}")))?;
    // What the judge checks before it holds an item is checked again before an approval
    // releases it: the one action the task kind may propose, and a positive amount.
    let expected = expected_proposal(card).unwrap_or_default();
    if proposal.action != expected {
        return Err(ApiError::UnprocessableEntity(format!(
            "a {} task may only propose {expected}, not {}",
            card.task_kind, proposal.action
        )));
    }
    if expected == "wallet.transfer" && effect::amount_cents(&proposal).is_none_or(|a| a <= 0) {
        return Err(ApiError::UnprocessableEntity(
            "the transfer has no positive amount_cents".into(),
        ));
    }
    Ok(proposal)
}

/// Takes one decision on `card` and, once it is taken, releases what follows from it.
async fn take(
    state: &AppState,
    principal: &Principal,
    request_id: &str,
    card: Card,
    seen: &ApproveRequest,
    action: Action,
) -> Result<DecisionResponse, ApiError> {
    preflight(&card, seen, false)?;
    if card.task_status == "failed" && !matches!(action, Action::Reject(_)) {
        return Err(ApiError::UnprocessableEntity(
            "the task failed after its attempts and its dependents were cancelled: reject (acknowledge) this item, or submit the goal again".into(),
        ));
    }
    let kind = TaskKind::parse(&card.task_kind).ok_or_else(|| {
        ApiError::unavailable(anyhow::anyhow!("unknown task kind {}", card.task_kind))
    })?;
    let mut edited_hash = None;
    let mut execute = None;
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
                // The edited artifact is a new, content-addressed version beside the original.
                let stored = state
                    .artifacts
                    .put(&edited.to_bytes(), "application/json")
                    .await
                    .map_err(ApiError::unavailable)?;
                edited_hash = Some(CommitHash::parse(stored.sha256).map_err(|e| {
                    ApiError::unavailable(anyhow::anyhow!("edited artifact hash: {e}"))
                })?);
                proposal = Some(edited);
            }
            let spend_cents = proposal
                .as_ref()
                .filter(|_| kind.is_financial())
                .and_then(effect::amount_cents);
            execute = proposal.map(|p| {
                let origin = Origin {
                    task_id: card.task_id,
                    goal_id: card.goal_id,
                    tenant_id: principal.tenant,
                    agent_id: AgentId(card.agent_id),
                    disclosure_level: card
                        .disclosure_level
                        .as_deref()
                        .and_then(DisclosureLevel::parse),
                };
                effect::execute_task(&origin, card.id, &p)
            });
            Verdict::Approve {
                execute: execute.clone().map(Box::new),
                spend_cents,
                edited_hash: edited_hash.clone(),
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
    };
    let taken = match decisions::decide(&state.pool, &decision).await {
        Ok(taken) => taken,
        Err(refused) => return Err(refusal(state, refused).await),
    };
    tracing::info!(review_id = %card.id, decision = taken.decision, reviewer = principal.subject,
                   request_id, "review decided");
    after(state, &taken).await;
    Ok(DecisionResponse {
        review_id: card.id.0,
        decision: taken.decision,
        goal_id: taken.goal.0,
        task_id: taken.task.0,
        execute_task_id: execute.map(|t| t.id.0),
        edited_artifact_hash: edited_hash.map(|h| h.as_str().to_owned()),
    })
}

/// The API's answer to a refused decision (a conflict's replan was written to the outbox: it is
/// sent now).
async fn refusal(state: &AppState, refused: Refused) -> ApiError {
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
        Refused::Conflict { feedback, goal, .. } => {
            state.relay.flush(&[goal]).await;
            ApiError::Conflict(format!("{feedback}; the task is replanned"))
        }
        Refused::Budget(err) => ApiError::Conflict(format!("budget refused: {err}")),
        Refused::TaskMoved => ApiError::Conflict(Refused::TaskMoved.to_string()),
        Refused::Commit(err) => ApiError::unavailable(err),
    }
}

/// After a decision: the messages it wrote (the effect's task, the release of the goal's
/// waiting tasks) go out, and the goal's status follows. The decision stands whatever happens
/// here: what the relay could not send now it sends on its next pass.
async fn after(state: &AppState, taken: &Taken) {
    state.relay.flush(&[taken.goal]).await;
    settle(state, taken.goal).await;
}

pub(crate) async fn settle(state: &AppState, goal: GoalId) {
    match judging::settle_goal(&state.pool, goal).await {
        Ok(Some(status)) => tracing::info!(goal_id = %goal.0, status, "goal settled"),
        Ok(None) => {}
        Err(err) => tracing::error!(goal_id = %goal.0, error = %err, "goal not settled"),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkItem {
    pub id: uuid::Uuid,
    pub artifact_hash: String,
    pub policy_version: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// Only check: what would be approved, and what would not, with no decision taken.
    #[serde(default)]
    pub dry_run: bool,
    /// 1..=50 items, each with the hash and policy version the reviewer saw.
    pub items: Vec<BulkItem>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct BulkSummary {
    pub approved: usize,
    pub would_approve: usize,
    pub already_decided: usize,
    pub stale: usize,
    pub forbidden: usize,
    pub conflict: usize,
    /// Effects the approvals release (or would release).
    pub effects: usize,
    /// Money the approvals spend (or would spend), in cents.
    pub spend_cents: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    pub id: uuid::Uuid,
    /// `approved`, `would_approve`, `already_decided`, `stale`, `forbidden` (not the
    /// caller's tenant's, or no such review) or `conflict`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResponse {
    pub dry_run: bool,
    pub summary: BulkSummary,
    pub items: Vec<BulkResult>,
}

#[utoipa::path(post, path = "/reviews/bulk-approve", tag = "reviews",
    request_body = BulkRequest,
    responses((status = 200, body = BulkResponse, description = "Per-item results"),
              (status = 400, description = "Malformed body, no items or more than 50"),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not a reviewer"),
              (status = 413, description = "Body too large")),
    security(("bearer" = [])))]
pub async fn bulk_approve(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RequestId(request_id): RequestId,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BulkResponse>, ApiError> {
    let principal = caller.require(Permission::Decide)?;
    let request: BulkRequest = json_body(body)?;
    if request.items.is_empty() || request.items.len() > MAX_BULK_ITEMS {
        return Err(ApiError::BadRequest(format!(
            "items must hold 1..={MAX_BULK_ITEMS} reviews"
        )));
    }
    let mut summary = BulkSummary::default();
    let mut items = Vec::with_capacity(request.items.len());
    for item in request.items {
        let seen = ApproveRequest {
            artifact_hash: item.artifact_hash,
            policy_version: item.policy_version,
        };
        let outcome = match store::card(&state.pool, principal.tenant, ReviewId(item.id))
            .await
            .map_err(ApiError::unavailable)?
        {
            None => Err(ApiError::NotFound),
            Some(card) if request.dry_run => match preflight(&card, &seen, true) {
                Ok(()) => match planned_effect(&state, &card).await {
                    Ok((effects, spend)) => {
                        summary.effects += effects;
                        summary.spend_cents += spend;
                        Ok(None)
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Some(card) => {
                let item_request = format!("{request_id}:{}", item.id);
                take(
                    &state,
                    principal,
                    &item_request,
                    card,
                    &seen,
                    Action::Approve,
                )
                .await
                .map(Some)
            }
        };
        let (result, message) = match outcome {
            Ok(None) => {
                summary.would_approve += 1;
                ("would_approve", None)
            }
            Ok(Some(taken)) => {
                summary.approved += 1;
                if taken.execute_task_id.is_some() {
                    summary.effects += 1;
                }
                ("approved", None)
            }
            Err(ApiError::NotFound) => {
                summary.forbidden += 1;
                (
                    "forbidden",
                    Some("no such review for your tenant".to_owned()),
                )
            }
            Err(e @ ApiError::AlreadyDecided(_)) => {
                summary.already_decided += 1;
                ("already_decided", Some(e.to_string()))
            }
            Err(e @ ApiError::Stale(_)) => {
                summary.stale += 1;
                ("stale", Some(e.to_string()))
            }
            Err(e @ (ApiError::Conflict(_) | ApiError::UnprocessableEntity(_))) => {
                summary.conflict += 1;
                ("conflict", Some(e.to_string()))
            }
            // Anything else (a dependency down) fails the request; what was approved stays.
            Err(e) => return Err(e),
        };
        items.push(BulkResult {
            id: item.id,
            result: result.to_owned(),
            message,
        });
    }
    if !request.dry_run {
        summary.spend_cents = 0;
    }
    Ok(Json(BulkResponse {
        dry_run: request.dry_run,
        summary,
        items,
    }))
}

/// The effect approving `card` would release: (count, cents).
async fn planned_effect(state: &AppState, card: &Card) -> Result<(usize, i64), ApiError> {
    if expected_proposal(card).is_none() {
        return Ok((0, 0));
    }
    let proposal = read_proposal(state, card).await?;
    let spend = if card.financial {
        effect::amount_cents(&proposal).unwrap_or(0)
    } else {
        0
    };
    Ok((1, spend))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The goal whose trail to read (give this or `review`).
    pub goal: Option<uuid::Uuid>,
    /// The review whose trail to read.
    pub review: Option<uuid::Uuid>,
    /// 1..=1000, default 500.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditTrail {
    pub items: Vec<AuditEntry>,
}

#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditTrail, description = "Oldest first"),
              (status = 400, description = "Neither or both of goal and review"),
              (status = 401, description = "No valid token"),
              (status = 404, description = "No such goal or review for the caller's tenant")),
    security(("bearer" = [])))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditTrail>, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let subject = match (query.goal, query.review) {
        (Some(goal), None) => Subject::Goal(GoalId(goal)),
        (None, Some(review)) => Subject::Review(ReviewId(review)),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of goal and review".into(),
            ));
        }
    };
    let limit = query.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1..=1000".into()));
    }
    let entries = store::audit_trail(&state.pool, principal.tenant, subject, limit)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(AuditTrail { items: entries }))
}
