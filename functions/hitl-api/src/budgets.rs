//! An agent's budget: `PUT /agents/{id}/budget` opens it, `POST /agents/{id}/budget/top-ups`
//! adds money once per `Idempotency-Key`, `GET /agents/{id}/ledger` reads what it paid for
//! (model calls, paid tools, transfers) and what was added, newest first.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chimera_core::auth::Permission;
use chimera_core::domain::{AgentId, TenantId};
use chimera_core::money;
use chimera_store::agents;
use chimera_store::budget::{self, BudgetError, Entry};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::{ApiError, AppState, idempotency_key, json_body};

/// The most one budget operation moves: 1,000,000.00.
const MAX_CENTS: i64 = 100_000_000;

/// The agent `raw` of `tenant`, or 404.
async fn agent_of(state: &AppState, tenant: TenantId, raw: &str) -> Result<AgentId, ApiError> {
    let id = AgentId(crate::path_id(raw)?);
    if agents::belongs(&state.pool, tenant, id)
        .await
        .map_err(ApiError::dependency)?
    {
        Ok(id)
    } else {
        Err(ApiError::NotFound)
    }
}

fn budget_error(err: BudgetError) -> ApiError {
    match err {
        BudgetError::NoBudget => {
            ApiError::Conflict("the agent has no budget yet: open it with PUT first".into())
        }
        BudgetError::KeyReused(_) | BudgetError::OverLimit(_) => {
            ApiError::Conflict(err.to_string())
        }
        BudgetError::InvalidAmount(_) | BudgetError::Insufficient { .. } => {
            ApiError::BadRequest(err.to_string())
        }
        BudgetError::Database(e) => ApiError::dependency(e),
        BudgetError::Unreadable(_) => ApiError::internal(err),
    }
}

/// The ledger's key for a top-up's `Idempotency-Key` (at most 200 characters, like the
/// ledger's keys: a long key is taken by its SHA-256).
fn ledger_key(key: &str) -> String {
    let direct = format!("top-up:{key}");
    if direct.len() <= 200 {
        direct
    } else {
        format!(
            "top-up:sha256:{}",
            chimera_aws::artifacts::sha256_hex(key.as_bytes())
        )
    }
}

/// The body of `PUT /agents/{id}/budget`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetRequest {
    /// ISO 4217-like code, 3-5 capital letters.
    #[schema(pattern = "^[A-Z]{3,5}$")]
    pub currency: String,
    /// The opening balance, in cents (0..=100000000), recorded as a top-up.
    #[schema(minimum = 0, maximum = 100_000_000)]
    pub balance_cents: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetAnswer {
    pub agent_id: uuid::Uuid,
    pub balance_cents: i64,
    /// The same balance in micros (10,000 to the cent), as the ledger keeps it.
    pub balance_micros: i64,
}

#[utoipa::path(put, path = "/agents/{id}/budget", tag = "budgets", request_body = BudgetRequest,
    params(("id" = uuid::Uuid, Path, description = "The agent")),
    responses((status = 201, description = "Opened", body = BudgetAnswer),
              (status = 400, description = "Malformed request"),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not an operator"),
              (status = 404, description = "No such agent for the caller's tenant"),
              (status = 409, description = "The agent has a budget: top it up")),
    security(("bearer" = [])))]
pub async fn open(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BudgetAnswer>), ApiError> {
    let principal = caller.require(Permission::Administer)?;
    let agent = agent_of(&state, principal.tenant, &id).await?;
    let request: BudgetRequest = json_body(body)?;
    let currency_ok = (3..=5).contains(&request.currency.len())
        && request.currency.bytes().all(|b| b.is_ascii_uppercase());
    if !currency_ok {
        return Err(ApiError::BadRequest(
            "currency must be 3-5 capital letters".into(),
        ));
    }
    if !(0..=MAX_CENTS).contains(&request.balance_cents) {
        return Err(ApiError::BadRequest(format!(
            "balance_cents must be 0..={MAX_CENTS}"
        )));
    }
    if budget::balance(&state.pool, agent)
        .await
        .map_err(ApiError::dependency)?
        .is_some()
    {
        return Err(ApiError::Conflict(
            "the agent has a budget: top it up".into(),
        ));
    }
    budget::open_budget(&state.pool, agent, &request.currency, request.balance_cents)
        .await
        .map_err(|e| match &e {
            // Opened by a concurrent request since the check above.
            BudgetError::Database(db)
                if db
                    .as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                ApiError::Conflict("the agent has a budget: top it up".into())
            }
            _ => budget_error(e),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(BudgetAnswer {
            agent_id: agent.0,
            balance_cents: request.balance_cents,
            balance_micros: money::from_cents(request.balance_cents),
        }),
    ))
}

/// The body of `POST /agents/{id}/budget/top-ups`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    /// 1..=100000000 cents.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub amount_cents: i64,
    /// Why (at most 200 characters).
    #[schema(max_length = 200)]
    pub memo: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TopUpAnswer {
    /// The balance after it, in whole cents rounded down.
    pub balance_cents: i64,
    /// The same balance exactly, in micros (10,000 to the cent).
    pub balance_micros: i64,
    /// `true` when this key topped the budget up before: nothing was added now.
    pub duplicate: bool,
}

#[utoipa::path(post, path = "/agents/{id}/budget/top-ups", tag = "budgets", request_body = TopUpRequest,
    params(("id" = uuid::Uuid, Path, description = "The agent"),
           ("Idempotency-Key" = String, Header, description = "Required: a repeated top-up with the same key adds nothing (1..=200 visible ASCII characters)",
            min_length = 1, max_length = 200, pattern = "^[!-~]{1,200}$")),
    responses((status = 200, description = "Added, or added before under this key", body = TopUpAnswer),
              (status = 400, description = "Malformed request, or no Idempotency-Key"),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not an operator"),
              (status = 404, description = "No such agent for the caller's tenant"),
              (status = 409, description = "No budget yet, or the key was used for another amount")),
    security(("bearer" = [])))]
pub async fn top_up(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TopUpAnswer>, ApiError> {
    let principal = caller.require(Permission::Administer)?;
    let agent = agent_of(&state, principal.tenant, &id).await?;
    let key = idempotency_key(&headers)?
        .ok_or_else(|| ApiError::BadRequest("a top-up needs an Idempotency-Key header".into()))?;
    let request: TopUpRequest = json_body(body)?;
    if !(1..=MAX_CENTS).contains(&request.amount_cents) {
        return Err(ApiError::BadRequest(format!(
            "amount_cents must be 1..={MAX_CENTS}"
        )));
    }
    if request
        .memo
        .as_ref()
        .is_some_and(|m| m.chars().count() > 200)
    {
        return Err(ApiError::BadRequest(
            "memo must be at most 200 characters".into(),
        ));
    }
    let done = budget::top_up(
        &state.pool,
        agent,
        &ledger_key(&key),
        request.amount_cents,
        request.memo.as_deref(),
        &principal.subject,
    )
    .await
    .map_err(budget_error)?;
    tracing::info!(agent_id = %agent.0, amount_cents = request.amount_cents, duplicate = done.duplicate, by = principal.subject, "budget topped up");
    Ok(Json(TopUpAnswer {
        balance_cents: done.balance_micros.div_euclid(money::MICROS_PER_CENT),
        balance_micros: done.balance_micros,
        duplicate: done.duplicate,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    /// `inference`, `tool`, `transfer` or `top_up`.
    #[param(pattern = "^(inference|tool|transfer|top_up)$")]
    pub category: Option<String>,
    /// Rows older than this row id (the previous page's `next_before`).
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LedgerPage {
    pub items: Vec<Entry>,
    /// Pass as `before` for the next page; absent on the last one.
    pub next_before: Option<i64>,
}

const CATEGORIES: [&str; 4] = ["inference", "tool", "transfer", "top_up"];

#[utoipa::path(get, path = "/agents/{id}/ledger", tag = "budgets", params(("id" = uuid::Uuid, Path, description = "The agent"), LedgerQuery),
    responses((status = 200, description = "The ledger, newest first", body = LedgerPage),
              (status = 400, description = "Bad filter"),
              (status = 401, description = "No valid token"),
              (status = 404, description = "No such agent for the caller's tenant")),
    security(("bearer" = [])))]
pub async fn ledger(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<LedgerQuery>, QueryRejection>,
) -> Result<Json<LedgerPage>, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let agent = agent_of(&state, principal.tenant, &id).await?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(category) = &query.category
        && !CATEGORIES.contains(&category.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "category must be one of {}",
            CATEGORIES.join(", ")
        )));
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) || query.before.is_some_and(|b| b < 1) {
        return Err(ApiError::BadRequest(
            "limit must be 1..=200 and before >= 1".into(),
        ));
    }
    let items = budget::ledger(
        &state.pool,
        agent,
        query.category.as_deref(),
        query.before,
        limit,
    )
    .await
    .map_err(ApiError::dependency)?;
    let next_before = (items.len() as i64 == limit)
        .then(|| items.last().map(|e| e.id))
        .flatten();
    Ok(Json(LedgerPage { items, next_before }))
}
