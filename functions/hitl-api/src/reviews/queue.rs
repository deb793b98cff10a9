//! The pending queue: the list endpoint and its query.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::Uri;
use axum::response::Response;
use chimera_core::auth::Permission;
use chimera_store::reviews::{self as store, QueueFilter, QueueItem, Sort};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::cache::Shows;
use crate::{ApiError, AppState};

/// Risk types a reviewer filters by.
pub const RISK_TYPES: [&str; 7] = [
    "sensitive",
    "medium_confidence",
    "missing_disclosure",
    "financial",
    "failed_after_retries",
    "unscored",
    "suspicious_input",
];

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `sensitive`, `medium_confidence`, `missing_disclosure`, `financial`,
    /// `failed_after_retries`, `unscored` or `suspicious_input`.
    #[param(
        pattern = "^(sensitive|medium_confidence|missing_disclosure|financial|failed_after_retries|unscored|suspicious_input)$"
    )]
    pub risk: Option<String>,
    /// The agent's id.
    pub agent: Option<uuid::Uuid>,
    /// Part of the agent's handle or display name, case-insensitive (1..=64 characters).
    #[param(min_length = 1, max_length = 64)]
    pub agent_name: Option<String>,
    pub goal: Option<uuid::Uuid>,
    /// `age` (oldest first), `confidence` (least confident first) or `risk` (riskiest first).
    #[param(pattern = "^(age|confidence|risk)$")]
    pub sort: Option<String>,
    /// `asc` or `desc`: reverses the sort's natural order when it is the other one.
    #[param(pattern = "^(asc|desc)$")]
    pub order: Option<String>,
    /// 1..=100, default 25.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// >= 0, default 0.
    #[param(minimum = 0)]
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
    uri: Uri,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
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
    let (limit, offset) = crate::page(query.limit, query.offset, 25, 100)?;
    let agent_name = crate::agent_name(query.agent_name.as_deref())?;
    let filter = QueueFilter {
        risk_type: query.risk,
        agent: query.agent,
        agent_name,
        goal: query.goal,
    };
    state
        .reads
        .json(principal.tenant, Shows::List, &uri.to_string(), || async {
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
            .map_err(ApiError::dependency)?;
            Ok(ReviewPage {
                items: page.items,
                total: page.total,
                limit,
                offset,
            })
        })
        .await
}
