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
use chimera_store::decisions::{self, Decision};
use chimera_store::reviews as store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::decide::{
    Action, ApproveRequest, DecisionResponse, decide_prepared, prepare, refused_error,
};
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
    /// Approvals whose effect waits (or would wait) for a later quota window.
    pub deferred: usize,
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
    /// When the approved effect goes, if the agent's platform quota defers it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<chrono::DateTime<chrono::Utc>>,
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
    // Each item checked and its decision built, in order.
    let mut prepared = Vec::with_capacity(request.items.len());
    for item in &request.items {
        let seen = ApproveRequest {
            artifact_hash: item.artifact_hash.clone(),
            policy_version: item.policy_version,
        };
        let item_request = format!("{request_id}:{}", item.id);
        let ready = match store::card(&state.pool, principal.tenant, ReviewId(item.id))
            .await
            .map_err(ApiError::dependency)?
        {
            None => Err(ApiError::NotFound),
            Some(card) => {
                prepare(
                    &state,
                    principal,
                    &item_request,
                    card,
                    &seen,
                    Action::Approve,
                )
                .await
            }
        };
        prepared.push(ready);
    }
    // Then taken one after another; a dry run takes them all in one transaction it rolls back,
    // each seeing what the earlier ones did (versions, quotas, spend), so it predicts the real
    // run's conflicts and deferrals.
    // Each outcome with the money its approval spends.
    let mut outcomes: Vec<(Result<DecisionResponse, ApiError>, i64)> =
        Vec::with_capacity(prepared.len());
    if request.dry_run {
        let decisions: Vec<Decision> = prepared
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|p| p.decision.clone()))
            .collect();
        let mut rehearsed = decisions::rehearse(&state.pool, &decisions)
            .await
            .map_err(ApiError::dependency)?
            .into_iter();
        for ready in prepared {
            outcomes.push(match ready {
                Ok(p) => match rehearsed.next() {
                    Some(Ok(taken)) => (Ok(p.response(&taken)), p.spend_cents()),
                    Some(Err(refused)) => (Err(refused_error(refused)), 0),
                    None => (
                        Err(ApiError::internal(anyhow::anyhow!(
                            "a decision was not rehearsed"
                        ))),
                        0,
                    ),
                },
                Err(e) => (Err(e), 0),
            });
        }
    } else {
        for ready in prepared {
            outcomes.push(match ready {
                Ok(p) => (decide_prepared(&state, &p).await, p.spend_cents()),
                Err(e) => (Err(e), 0),
            });
        }
    }
    let mut summary = BulkSummary::default();
    let mut items = Vec::with_capacity(outcomes.len());
    for (item, (outcome, spend)) in request.items.iter().zip(outcomes) {
        let mut deferred_until = None;
        let (result, message) = match outcome {
            Ok(response) => {
                if response.execute_task_id.is_some() {
                    summary.effects += 1;
                }
                summary.spend_cents += spend;
                if response.deferred_until.is_some() {
                    summary.deferred += 1;
                    deferred_until = response.deferred_until;
                }
                if request.dry_run {
                    summary.would_approve += 1;
                    ("would_approve", None)
                } else {
                    summary.approved += 1;
                    ("approved", None)
                }
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
            deferred_until,
        });
    }
    Ok(Json(BulkResponse {
        dry_run: request.dry_run,
        summary,
        items,
    }))
}
