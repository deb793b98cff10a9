//! Agents as documents: `POST /agents` onboards an agent from its SOUL.md and AGENTS.md;
//! `GET /agents/{id}` reads it back with its current documents and their versions.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chimera_core::auth::Permission;
use chimera_core::documents::{self, Soul};
use chimera_core::domain::AgentId;
use chimera_store::agents::{self, AgentView, CreateError, NewAgent};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
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
    #[schema(max_length = 24576)]
    pub soul_md: String,
    /// AGENTS.md: the policy (YAML front matter with the typed rules; the body in words).
    #[schema(max_length = 24576)]
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
    let persona = soul.persona();
    let id = agents::create(
        &state.pool,
        &NewAgent {
            tenant: principal.tenant,
            handle: &request.handle,
            display_name: request.display_name.trim(),
            platforms: &request.platforms,
            soul: &request.soul_md,
            persona: &persona,
            agents: &request.agents_md,
            policy: &policy,
            created_by: &principal.subject,
        },
    )
    .await
    .map_err(|err| match err {
        CreateError::HandleTaken => ApiError::Conflict(err.to_string()),
        CreateError::Database(e) => ApiError::dependency(e),
    })?;
    tracing::info!(agent_id = %id.0, handle = %request.handle, "agent onboarded");
    Ok((
        StatusCode::CREATED,
        Json(Created {
            agent_id: id.0,
            handle: request.handle,
            persona_version: 1,
            policy_version: policy.version,
            persona_sha256: documents::content_hash(&request.soul_md),
            policy_sha256: documents::content_hash(&request.agents_md),
        }),
    ))
}

#[utoipa::path(get, path = "/agents/{id}", tag = "agents",
    params(("id" = uuid::Uuid, Path, description = "The agent")),
    responses((status = 200, description = "The agent, its current documents and their versions", body = AgentView),
              (status = 401, description = "No valid token"),
              (status = 404, description = "No such agent for the caller's tenant")),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    agents::view(&state.pool, principal.tenant, AgentId(id))
        .await
        .map_err(ApiError::dependency)?
        .map(Json)
        .ok_or(ApiError::NotFound)
}
