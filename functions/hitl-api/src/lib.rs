//! The HITL API: goals in, reviews out, behind API Gateway (HTTP API).
//!
//! [`router`] is one axum router; `main.rs` serves it under `lambda_http` and the local runner
//! serves it on a local port. Errors are JSON: `{"error": {"code": "...", "message": "..."}}`;
//! a 5xx never carries internals (the cause chain goes to the log).

pub mod goals;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chimera_aws::Clients;
use chimera_aws::queues::Outbox;
use chimera_core::names::ResourceNames;
use chimera_store::PgPool;
use serde_json::json;

/// What every request handler shares: built once per execution environment.
pub struct AppState {
    pub pool: PgPool,
    pub clients: Clients,
    /// The goal queue (its URL from `GOAL_QUEUE_URL` when deployed, else looked up by the
    /// stage's name on first use).
    pub outbox: Outbox,
}

impl AppState {
    pub fn new(pool: PgPool, clients: Clients, names: ResourceNames) -> Self {
        Self {
            pool,
            outbox: Outbox::new(clients.clone(), names),
            clients,
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/goals", post(goals::submit))
        .route("/goals/{id}", get(goals::get))
        .fallback(not_found)
        .with_state(Arc::new(state))
}

/// An error at the API boundary, mapped to a status and a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnprocessableEntity(String),
    #[error("a dependency is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::UnprocessableEntity(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_entity")
            }
            ApiError::Unavailable(cause) => {
                tracing::error!(error = format!("{cause:#}"), "dependency unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        (
            status,
            Json(json!({"error": {"code": code, "message": self.to_string()}})),
        )
            .into_response()
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    sqlx::query("select 1")
        .execute(&state.pool)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    Ok(Json(json!({"status": "ok", "database": "ok"})))
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}
