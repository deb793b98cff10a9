//! What the fleet published: `GET /published` lists the effects agents performed (posts,
//! replies, transfers), newest first, each with the approval it came from.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chimera_core::auth::Permission;
use chimera_store::published::{self, Filter, Published};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PublishedQuery {
    /// Only this agent's effects.
    pub agent: Option<uuid::Uuid>,
    /// Only agents whose handle or display name contains this (case-insensitive, 1..=64
    /// characters).
    #[param(min_length = 1, max_length = 64)]
    pub agent_name: Option<String>,
    /// Only this goal's effects.
    pub goal: Option<uuid::Uuid>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// >= 0, default 0.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublishedPage {
    pub items: Vec<Published>,
    pub limit: i64,
    pub offset: i64,
}

#[utoipa::path(get, path = "/published", tag = "published", params(PublishedQuery),
    responses((status = 200, body = PublishedPage, description = "Newest first"),
              (status = 400, description = "Bad filter"),
              (status = 401, description = "No valid token")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<PublishedQuery>, QueryRejection>,
) -> Result<Json<PublishedPage>, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let agent_name = crate::agent_name(query.agent_name.as_deref())?;
    let (limit, offset) = crate::page(query.limit, query.offset, 50, 200)?;
    let filter = Filter {
        agent: query.agent,
        agent_name,
        goal: query.goal,
        limit,
        offset,
    };
    let items = published::list(&state.pool, principal.tenant, &filter)
        .await
        .map_err(ApiError::dependency)?;
    Ok(Json(PublishedPage {
        items,
        limit,
        offset,
    }))
}
