//! The review card: the card endpoint, loading a card, its artifact refs, inline text and
//! presigned media. `load`, `artifact_refs` and `expected_proposal` also serve the
//! decisions and bulk approval.

use std::sync::Arc;

use axum::extract::{Path, State};
use chimera_core::auth::{Permission, Principal};
use chimera_core::domain::{
    ArtifactRef, DecisionKind, DisclosureLevel, ReviewId, ReviewStatus, TaskKind,
};
use chimera_core::effect::{self, EffectAction, Proposal};
use chimera_store::reviews::{self as store, Card};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::cache::Shows;
use crate::{ApiError, AppState};

/// Text artifacts up to this size are shown inline on the card; larger ones and media get a
/// presigned URL.
const INLINE_CARD_BYTES: u64 = 256 * 1024;
/// How long a presigned artifact URL stays valid.
const PRESIGNED_SECS: u64 = 15 * 60;

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
    #[schema(value_type = String, example = "approve")]
    pub decision: DecisionKind,
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
    #[schema(value_type = String, example = "pending")]
    pub status: ReviewStatus,
    pub goal_id: uuid::Uuid,
    pub task_id: uuid::Uuid,
    pub agent_id: uuid::Uuid,
    /// The agent's handle and the name people see.
    pub agent_handle: String,
    pub agent_name: Option<String>,
    #[schema(value_type = String, example = "reply")]
    pub task_kind: TaskKind,
    pub attempt: i32,
    pub confidence: f64,
    pub risk_tags: Vec<String>,
    pub risk_types: Vec<String>,
    /// The judge's reasons, as the routing policy gave them.
    #[schema(value_type = Vec<Object>)]
    pub reasons: Value,
    #[schema(value_type = Option<String>, example = "automated")]
    pub disclosure_level: Option<DisclosureLevel>,
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
    /// When the approved effect goes, if the agent's quota on the platform is used up for now
    /// (it waits for the first window with room; absent once it went).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<DateTime<Utc>>,
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
) -> Result<axum::response::Response, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let review = crate::path_id(&id)?;
    state
        .reads
        .json(
            principal.tenant,
            Shows::Review(review),
            &format!("/reviews/{review}"),
            || assemble(&state, principal, &id),
        )
        .await
}

/// The card of review `id`: the stored card, its artifacts (text inline, media presigned) and
/// what a decision would do.
async fn assemble(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<ReviewCard, ApiError> {
    let card = load(state, principal, id).await?;
    let refs = artifact_refs(&card)?;
    let mut artifacts = Vec::with_capacity(refs.len());
    for r in &refs {
        artifacts.push(view(state, r).await?);
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
        && let Some(media) = media_view(state, sha256).await?
    {
        artifacts.push(media);
    }
    Ok(ReviewCard {
        id: card.id.0,
        status: card.status,
        goal_id: card.goal_id.0,
        task_id: card.task_id.0,
        agent_id: card.agent_id,
        agent_handle: card.agent_handle,
        agent_name: card.agent_name,
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
        deferred_until: card.deferred_until,
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
    })
}

/// The review `id` of the caller's tenant; a malformed, unknown or foreign id is 404.
pub(super) async fn load(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Card, ApiError> {
    let id = crate::path_id(id)?;
    store::card(&state.pool, principal.tenant, ReviewId(id))
        .await
        .map_err(ApiError::dependency)?
        .ok_or(ApiError::NotFound)
}

pub(super) fn artifact_refs(card: &Card) -> Result<Vec<ArtifactRef>, ApiError> {
    serde_json::from_value(card.artifacts.clone()).map_err(|e| {
        ApiError::internal(anyhow::anyhow!(
            "review {}: unreadable artifacts: {e}",
            card.id
        ))
    })
}

/// The action the card's task kind proposes, if it proposes one.
pub(super) fn expected_proposal(card: &Card) -> Option<EffectAction> {
    effect::expected_action(card.task_kind)
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
            .map_err(ApiError::dependency)?;
        out.text = Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    if out.text.is_none() {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(
            std::time::Duration::from_secs(PRESIGNED_SECS),
        )
        .map_err(ApiError::dependency)?;
        let request = state
            .clients
            .s3
            .get_object()
            .bucket(state.artifacts.bucket())
            .key(key)
            .presigned(config)
            .await
            .map_err(ApiError::dependency)?;
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
        Err(err) => return Err(ApiError::dependency(err)),
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
