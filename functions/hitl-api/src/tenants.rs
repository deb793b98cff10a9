//! Tenants: the platform's admin creates them (`POST /tenants`) and lists them all
//! (`GET /tenants`); a tenant's admin lists only its own.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use chimera_core::auth::Permission;
use chimera_store::tenants::{self, Tenant};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::{ApiError, AppState, json_body};

/// The body of `POST /tenants`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantRequest {
    /// Unique, 1..=200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantCreated {
    pub tenant_id: uuid::Uuid,
    pub name: String,
}

#[utoipa::path(post, path = "/tenants", tag = "tenants", request_body = TenantRequest,
    responses((status = 201, description = "Created", body = TenantCreated),
              (status = 400, description = "Malformed request"),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not the platform's admin"),
              (status = 409, description = "The name is taken")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TenantCreated>), ApiError> {
    let principal = caller.require(Permission::ManageTenants)?;
    let request: TenantRequest = json_body(body)?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::BadRequest(
            "name must be 1..=200 characters".into(),
        ));
    }
    let id = tenants::create(&state.pool, name)
        .await
        .map_err(ApiError::dependency)?
        .ok_or_else(|| ApiError::Conflict(format!("a tenant is named {name:?}")))?;
    tracing::info!(tenant_id = %id.0, name, by = principal.subject, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(TenantCreated {
            tenant_id: id.0,
            name: name.to_owned(),
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/tenants", tag = "tenants", params(ListQuery),
    responses((status = 200, description = "Tenants by name: all for the platform's admin, its own for a tenant's admin", body = [Tenant]),
              (status = 400, description = "Bad paging"),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not an admin")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<Tenant>>, ApiError> {
    let only = match caller.require(Permission::ManageTenants) {
        Ok(_) => None,
        Err(_) => Some(caller.require(Permission::Administer)?.tenant),
    };
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (limit, offset) = crate::page(query.limit, query.offset, 50, 200)?;
    tenants::list(&state.pool, only, limit, offset)
        .await
        .map(Json)
        .map_err(ApiError::dependency)
}
