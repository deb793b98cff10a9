//! Bulk approval: up to [`MAX_BULK_ITEMS`] approvals in one request, each checked
//! (`preflight`) and taken one after another like a single approval, or only checked
//! (`dry_run`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use chimera_core::auth::Permission;
use chimera_core::domain::ReviewId;
use chimera_core::effect;
use chimera_store::reviews::{self as store, Card};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::card::expected_proposal;
use super::decide::{Action, ApproveRequest, preflight, read_proposal, take};
use crate::auth::{Caller, RequestId};
use crate::{ApiError, AppState, json_body};

/// Most items per bulk approval: they are decided one after another, and the whole request
/// must fit API Gateway's 30 s (a retry shows the ones already approved as `already_decided`).
pub const MAX_BULK_ITEMS: usize = 50;

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
    #[schema(min_items = 1, max_items = 50)]
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
            .map_err(ApiError::dependency)?
        {
            None => Err(ApiError::NotFound),
            Some(card) if request.dry_run => match preflight(&card, &seen) {
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
            Err(e @ (ApiError::Stale(_) | ApiError::PolicyMoved(_))) => {
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
