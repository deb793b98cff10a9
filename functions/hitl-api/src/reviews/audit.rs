//! The audit trail: the append-only record of a goal or a review, oldest first.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chimera_core::auth::Permission;
use chimera_core::domain::{GoalId, ReviewId};
use chimera_store::reviews::{self as store, AuditEntry, Subject};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The goal whose trail to read (exactly one of `goal` and `review`).
    pub goal: Option<uuid::Uuid>,
    /// The review whose trail to read (exactly one of `goal` and `review`).
    pub review: Option<uuid::Uuid>,
    /// 1..=1000, default 500.
    #[param(minimum = 1, maximum = 1000)]
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
        .map_err(ApiError::dependency)?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(AuditTrail { items: entries }))
}
