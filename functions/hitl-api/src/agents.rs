//! Agents as documents: `POST /agents` onboards an agent from its SOUL.md and AGENTS.md;
//! `GET /agents/{id}` reads it back with its current documents and their versions; `PUT
//! /agents/{id}/persona` and `/policy` store a new version of one; `POST /agents/{id}/pause`
//! and `/resume` stop and restart its new work; `GET /agents` lists them.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chimera_core::auth::Permission;
use chimera_core::documents::{self, Soul};
use chimera_core::domain::AgentId;
use chimera_core::routing::Policy;
use chimera_store::agents::{
    self, AgentSummary, AgentView, CreateError, Filter, NewAgent, UpdateError,
};
use chimera_store::fleet::{FleetAgent, Sort};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::cache::Shows;
use crate::{ApiError, AppState, json_body};

/// The body of `POST /agents`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRequest {
    /// Unique in the tenant: 1-64 characters of `a-z 0-9 _`.
    #[schema(pattern = "^[a-z0-9_]{1,64}$", min_length = 1, max_length = 64)]
    pub handle: String,
    /// The name people see (1..=80 characters).
    #[schema(min_length = 1, max_length = 80)]
    pub display_name: String,
    /// The platforms it posts on (1..=10 of x, threads, bluesky, instagram, tiktok, linkedin).
    #[schema(min_items = 1, max_items = 10)]
    pub platforms: Vec<String>,
    /// SOUL.md: the persona (YAML front matter `name`, `voice`, `topics`; `Bio` and
    /// `Examples` sections).
    #[schema(min_length = 1, max_length = 24576)]
    pub soul_md: String,
    /// AGENTS.md: the policy (YAML front matter with the typed rules; the body in words).
    #[schema(min_length = 1, max_length = 24576)]
    pub agents_md: String,
}

/// The answer to `POST /agents`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub agent_id: uuid::Uuid,
    pub handle: String,
    pub persona_version: i32,
    pub policy_version: i32,
    /// SHA-256 of SOUL.md and of AGENTS.md as received.
    pub persona_sha256: String,
    pub policy_sha256: String,
    /// Its wallet's address (the key stays in the secret store).
    pub wallet_address: String,
}

const PLATFORMS: [&str; 6] = ["x", "threads", "bluesky", "instagram", "tiktok", "linkedin"];

#[utoipa::path(post, path = "/agents", tag = "agents", request_body = AgentRequest,
    responses((status = 201, description = "Onboarded", body = Created),
              (status = 400, description = "Malformed request: handle, display name or platforms"),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not an operator"),
              (status = 409, description = "The tenant has an agent with this handle"),
              (status = 413, description = "Body too large"),
              (status = 422, description = "A document does not read: `error.document`, `error.line` and `error.field` say where")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let principal = caller.require(Permission::Submit)?;
    let request: AgentRequest = json_body(body)?;
    let handle_ok = (1..=64).contains(&request.handle.len())
        && request
            .handle
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !handle_ok {
        return Err(ApiError::BadRequest(
            "handle must be 1-64 characters of a-z 0-9 _".into(),
        ));
    }
    let name_len = request.display_name.trim().chars().count();
    if name_len == 0 || request.display_name.chars().count() > 80 {
        return Err(ApiError::BadRequest(
            "display_name must be 1..=80 characters".into(),
        ));
    }
    let distinct: BTreeSet<&str> = request.platforms.iter().map(String::as_str).collect();
    if request.platforms.is_empty()
        || request.platforms.len() > 10
        || distinct.len() != request.platforms.len()
        || !distinct.iter().all(|p| PLATFORMS.contains(p))
    {
        return Err(ApiError::BadRequest(format!(
            "platforms must list 1..=10 distinct platforms of {}",
            PLATFORMS.join(", ")
        )));
    }
    let soul = Soul::parse(&request.soul_md).map_err(ApiError::InvalidDocument)?;
    let policy =
        documents::parse_policy(&request.agents_md, 1).map_err(ApiError::InvalidDocument)?;
    offered(&policy)?;
    if policy.spend.auto_pay_per_day_cents.is_some() && !principal.may(Permission::Administer) {
        return Err(ApiError::Forbidden(
            "spend.auto_pay_per_day_cents (payments without a person) needs the admin role".into(),
        ));
    }
    let persona = soul.persona();
    // The wallet's key is stored first, under the new id: an agent is never written without
    // one, and a key whose agent could not be written is deleted.
    let id = AgentId::random();
    let wallet = state
        .wallets
        .create(id)
        .await
        .map_err(ApiError::dependency)?;
    let wallet_address = wallet.to_string();
    let created = agents::create(
        &state.pool,
        &NewAgent {
            id,
            tenant: principal.tenant,
            handle: &request.handle,
            display_name: request.display_name.trim(),
            platforms: &request.platforms,
            soul: &request.soul_md,
            persona: &persona,
            agents: &request.agents_md,
            policy: &policy,
            created_by: &principal.subject,
            wallet_address: Some(&wallet_address),
        },
    )
    .await;
    if created.is_err() {
        state.wallets.forget(id).await;
    }
    let id = created.map_err(|err| match err {
        CreateError::HandleTaken => ApiError::Conflict(err.to_string()),
        CreateError::Database(e) => ApiError::dependency(e),
    })?;
    tracing::info!(agent_id = %id.0, handle = %request.handle, wallet = %wallet_address, "agent onboarded");
    Ok((
        StatusCode::CREATED,
        Json(Created {
            agent_id: id.0,
            handle: request.handle,
            persona_version: 1,
            policy_version: policy.version,
            persona_sha256: documents::content_hash(&request.soul_md),
            policy_sha256: documents::content_hash(&request.agents_md),
            wallet_address,
        }),
    ))
}

#[utoipa::path(get, path = "/agents/{id}", tag = "agents",
    params(("id" = uuid::Uuid, Path, description = "The agent")),
    responses((status = 200, description = "The agent, its current documents and their versions, its wallet's address and balances on chain", body = AgentView),
              (status = 401, description = "No valid token"),
              (status = 404, description = "No such agent for the caller's tenant")),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let mut view = agents::view(&state.pool, principal.tenant, agent_id(&id)?)
        .await
        .map_err(ApiError::dependency)?
        .ok_or(ApiError::NotFound)?;
    if let Some(wallet) = view.wallet.take() {
        view.wallet = Some(state.wallets.read(wallet).await);
    }
    Ok(Json(view))
}

fn agent_id(raw: &str) -> Result<AgentId, ApiError> {
    crate::path_id(raw).map(AgentId)
}

/// A policy may choose only a model the stage offers (and prices): its allowlist.
fn offered(policy: &Policy) -> Result<(), ApiError> {
    let Some(model) = &policy.model else {
        return Ok(());
    };
    let models = chimera_aws::mind::stage_models()
        .map_err(|why| ApiError::internal(anyhow::anyhow!("the stage's price table: {why}")))?;
    if models.contains(&model.id) {
        return Ok(());
    }
    Err(ApiError::InvalidDocument(documents::DocError {
        document: "AGENTS.md",
        line: None,
        field: Some("model.id".into()),
        message: format!(
            "{:?} is not one of the stage's models ({})",
            model.id,
            models.join(", ")
        ),
    }))
}

fn update_error(err: UpdateError) -> ApiError {
    match err {
        UpdateError::NotFound => ApiError::NotFound,
        UpdateError::VersionMoved { .. } | UpdateError::Retired => {
            ApiError::Conflict(err.to_string())
        }
        UpdateError::SpendNeedsAdmin => ApiError::Forbidden(err.to_string()),
        UpdateError::Database(e) => ApiError::dependency(e),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `active`, `paused` or `retired`.
    #[param(pattern = "^(active|paused|retired)$")]
    pub status: Option<String>,
    /// Handles or display names containing this (1..=64 characters, case-insensitive).
    #[param(min_length = 1, max_length = 64)]
    pub search: Option<String>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// >= 0, default 0.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentPage {
    pub items: Vec<AgentSummary>,
    pub limit: i64,
    pub offset: i64,
}

#[utoipa::path(get, path = "/agents", tag = "agents", params(ListQuery),
    responses((status = 200, body = AgentPage), (status = 400, description = "Bad filter"),
              (status = 401, description = "No valid token")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<AgentPage>, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let filter = filter(&query)?;
    let items = agents::list(&state.pool, principal.tenant, &filter)
        .await
        .map_err(ApiError::dependency)?;
    Ok(Json(AgentPage {
        items,
        limit: filter.limit,
        offset: filter.offset,
    }))
}

/// The filter `query` asks for, checked.
fn filter(query: &ListQuery) -> Result<Filter<'_>, ApiError> {
    if let Some(status) = &query.status
        && !["active", "paused", "retired"].contains(&status.as_str())
    {
        return Err(ApiError::BadRequest(
            "status must be active, paused or retired".into(),
        ));
    }
    if let Some(search) = &query.search
        && !(1..=64).contains(&search.chars().count())
    {
        return Err(ApiError::BadRequest(
            "search must be 1..=64 characters".into(),
        ));
    }
    let (limit, offset) = crate::page(query.limit, query.offset, 50, 200)?;
    Ok(Filter {
        status: query.status.as_deref(),
        search: query.search.as_deref(),
        limit,
        offset,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FleetPage {
    pub items: Vec<FleetAgent>,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FleetQuery {
    /// `active`, `paused` or `retired`.
    #[param(pattern = "^(active|paused|retired)$")]
    pub status: Option<String>,
    /// Handles or display names containing this (1..=64 characters, case-insensitive).
    #[param(min_length = 1, max_length = 64)]
    pub search: Option<String>,
    /// `attention` (default: those needing a person first), `name`, `held`,
    /// `goals_in_flight`, `spent_today` (most first) or `balance` (least first).
    #[param(pattern = "^(attention|name|held|goals_in_flight|spent_today|balance)$")]
    pub sort: Option<String>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// >= 0, default 0.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/fleet", tag = "agents", params(FleetQuery),
    responses((status = 200, body = FleetPage,
               description = "The tenant's agents with their goals in flight, held items, failures of the last day, balance and today's spend against the daily limit, quota use in the open windows and last posts; those needing attention (`attention` not empty) first"),
              (status = 400, description = "Bad filter"),
              (status = 401, description = "No valid token")),
    security(("bearer" = [])))]
pub async fn fleet(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    uri: axum::http::Uri,
    query: Result<Query<FleetQuery>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let sort = match query.sort.as_deref() {
        None => Sort::Attention,
        Some(name) => Sort::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "sort must be one of {}",
                Sort::ALL.map(Sort::as_str).join(", ")
            ))
        })?,
    };
    let list = ListQuery {
        status: query.status,
        search: query.search,
        limit: query.limit,
        offset: query.offset,
    };
    let filter = filter(&list)?;
    state
        .reads
        .json(principal.tenant, Shows::List, &uri.to_string(), || async {
            let items = chimera_store::fleet::view(&state.pool, principal.tenant, &filter, sort)
                .await
                .map_err(ApiError::dependency)?;
            Ok(FleetPage {
                items,
                limit: filter.limit,
                offset: filter.offset,
            })
        })
        .await
}

/// The body of `PUT /agents/{id}/persona` and `/policy`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentRequest {
    /// The new SOUL.md or AGENTS.md.
    #[schema(min_length = 1, max_length = 24576)]
    pub document: String,
    /// The version this edit was made from: a newer current version answers 409.
    #[schema(minimum = 1, maximum = 2147483647)]
    pub base_version: Option<i32>,
}

impl DocumentRequest {
    fn check(&self) -> Result<(), ApiError> {
        if self.base_version.is_some_and(|v| v < 1) {
            return Err(ApiError::BadRequest("base_version must be >= 1".into()));
        }
        Ok(())
    }
}

/// The answer to a new document version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Versioned {
    pub version: i32,
    pub sha256: String,
    /// Held items sent to be judged again under a new policy (they are released, held again
    /// with the new reasons, or rejected by it, in seconds).
    pub rejudging: usize,
}

#[utoipa::path(put, path = "/agents/{id}/persona", tag = "agents", request_body = DocumentRequest,
    params(("id" = uuid::Uuid, Path, description = "The agent")),
    responses((status = 200, description = "The new persona version", body = Versioned),
              (status = 400, description = "Malformed request"),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not an operator, or a change of the spend limits by someone not an admin"),
              (status = 404, description = "No such agent for the caller's tenant"),
              (status = 409, description = "`base_version` is not the current version"),
              (status = 422, description = "SOUL.md does not read: `error.line` and `error.field` say where")),
    security(("bearer" = [])))]
pub async fn put_persona(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Versioned>, ApiError> {
    let principal = caller.require(Permission::Submit)?;
    let id = agent_id(&id)?;
    let request: DocumentRequest = json_body(body)?;
    request.check()?;
    let soul = Soul::parse(&request.document).map_err(ApiError::InvalidDocument)?;
    let stored = agents::new_persona(
        &state.pool,
        principal.tenant,
        id,
        &request.document,
        &soul.persona(),
        request.base_version,
        &principal.subject,
    )
    .await
    .map_err(update_error)?;
    tracing::info!(agent_id = %id.0, version = stored.version, "persona updated");
    Ok(Json(Versioned {
        version: stored.version,
        sha256: documents::content_hash(&request.document),
        rejudging: 0,
    }))
}

#[utoipa::path(put, path = "/agents/{id}/policy", tag = "agents", request_body = DocumentRequest,
    params(("id" = uuid::Uuid, Path, description = "The agent")),
    responses((status = 200, description = "The new policy version", body = Versioned),
              (status = 400, description = "Malformed request"),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not an operator, or a change of the spend limits by someone not an admin"),
              (status = 404, description = "No such agent for the caller's tenant"),
              (status = 409, description = "`base_version` is not the current version"),
              (status = 422, description = "AGENTS.md does not read: `error.line` and `error.field` say where")),
    security(("bearer" = [])))]
pub async fn put_policy(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Versioned>, ApiError> {
    let principal = caller.require(Permission::Submit)?;
    let id = agent_id(&id)?;
    let request: DocumentRequest = json_body(body)?;
    request.check()?;
    // The version is set when it is stored.
    let policy =
        documents::parse_policy(&request.document, 1).map_err(ApiError::InvalidDocument)?;
    offered(&policy)?;
    let stored = agents::new_policy(
        &state.pool,
        principal.tenant,
        id,
        &request.document,
        &policy,
        request.base_version,
        &principal.subject,
        principal.may(Permission::Administer),
    )
    .await
    .map_err(update_error)?;
    state.relay.flush(&stored.rejudging).await;
    tracing::info!(agent_id = %id.0, version = stored.version, rejudging = stored.rejudging.len(), "policy updated");
    Ok(Json(Versioned {
        version: stored.version,
        sha256: documents::content_hash(&request.document),
        rejudging: stored.rejudging.len(),
    }))
}

/// The answer to a pause or a resume.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusAnswer {
    /// `active` or `paused`.
    pub status: &'static str,
    /// `false` when the agent already was.
    pub changed: bool,
    /// Goals sent to the planner again by a resume.
    pub goals_resumed: usize,
}

#[utoipa::path(post, path = "/agents/{id}/pause", tag = "agents",
    params(("id" = uuid::Uuid, Path, description = "The agent")),
    responses((status = 200, description = "Paused: new goals answer 409, its goals wait unplanned and its tasks unreleased; work a worker holds finishes", body = StatusAnswer),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not an operator"),
              (status = 404, description = "No such agent for the caller's tenant"),
              (status = 409, description = "The agent is retired")),
    security(("bearer" = [])))]
pub async fn pause(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<StatusAnswer>, ApiError> {
    set_status(&state, &caller, &id, false).await
}

#[utoipa::path(post, path = "/agents/{id}/resume", tag = "agents",
    params(("id" = uuid::Uuid, Path, description = "The agent")),
    responses((status = 200, description = "Active again: its unfinished goals go to the planner", body = StatusAnswer),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not an operator"),
              (status = 404, description = "No such agent for the caller's tenant"),
              (status = 409, description = "The agent is retired")),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<StatusAnswer>, ApiError> {
    set_status(&state, &caller, &id, true).await
}

async fn set_status(
    state: &AppState,
    caller: &Caller,
    id: &str,
    active: bool,
) -> Result<Json<StatusAnswer>, ApiError> {
    let principal = caller.require(Permission::Submit)?;
    let id = agent_id(id)?;
    let change = agents::set_status(
        &state.pool,
        principal.tenant,
        id,
        active,
        &principal.subject,
    )
    .await
    .map_err(update_error)?;
    state.relay.flush(&change.goals).await;
    let status = if active { "active" } else { "paused" };
    tracing::info!(agent_id = %id.0, status, changed = change.changed, "agent status");
    Ok(Json(StatusAnswer {
        status,
        changed: change.changed,
        goals_resumed: change.goals.len(),
    }))
}
