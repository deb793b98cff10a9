//! The HITL API: goals in, reviews out, behind API Gateway (HTTP API).
//!
//! [`router`] is one axum router; `main.rs` serves it under `lambda_http` and the local runner
//! serves it on a local port. Errors are JSON: `{"error": {"code": "...", "message": "..."}}`;
//! a 5xx never carries internals (the cause chain goes to the log).
//!
//! - [`tenants`]: tenants created and listed (`admin`);
//! - [`agents`]: agents onboarded from their documents, new versions of them, pause and
//!   resume (`operator`);
//! - [`budgets`]: an agent's budget opened, topped up once per key, and its ledger
//!   (`operator`);
//! - [`goals`]: goal intake and progress (`operator`);
//! - [`reviews`]: the pending queue, review cards, decisions bound to the artifact hash and
//!   policy version the reviewer saw (`reviewer`), bulk approval, the audit trail;
//! - [`auth`]: who is calling (JWT claims from API Gateway, or HS256 tokens checked here);
//! - [`sweep`]: escalation and default decisions for reviews nobody decided in time;
//! - [`openapi`]: the OpenAPI document at `/openapi.json`;
//! - [`ui`]: Mission Control, the review page, at `/`.

pub mod agents;
pub mod auth;
pub mod budgets;
pub mod cache;
pub mod goals;
pub mod openapi;
pub mod published;
pub mod reviews;
pub mod sweep;
pub mod tenants;
pub mod ui;
pub mod wallets;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chimera_aws::Clients;
use chimera_aws::artifacts::ArtifactStore;
use chimera_aws::queues::Queues;
use chimera_aws::relay::Relay;
use chimera_core::names::ResourceNames;
use chimera_store::PgPool;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::json;

pub use auth::Auth;

/// Largest request body accepted; a larger one answers 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest request URI accepted (path and query); a longer one answers 414 with a JSON body.
/// (The runner's guard answers one too long for the HTTP parser, over 60 KiB, the same way; API
/// Gateway refuses a request line over 10 KiB before it reaches the function.)
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// What every request handler shares: built once per execution environment.
pub struct AppState {
    pub pool: PgPool,
    pub clients: Clients,
    /// Sends what requests and the sweep wrote to the outbox (to the goal and task queues:
    /// URLs from `GOAL_QUEUE_URL`/`TASK_QUEUE_URL` when deployed, else looked up by the stage's
    /// name on first use).
    pub relay: Relay,
    /// Artifacts: review cards read them, edits write new versions.
    pub artifacts: ArtifactStore,
    pub auth: Auth,
    /// The console's reads, kept for a moment ([`cache`]).
    pub reads: cache::ReadCache,
    /// Agents' wallet keys and the chain their balances are read from ([`wallets`]).
    pub wallets: wallets::Wallets,
    /// How many goal event streams one caller may hold open at once
    /// (`CHIMERA_STREAMS_PER_CALLER`, [`goals::STREAMS_PER_CALLER`] by default).
    pub streams_per_caller: u32,
    /// How Mission Control signs people in (`GET /auth/config`).
    pub sign_in: auth::SignIn,
}

impl AppState {
    pub fn new(pool: PgPool, clients: Clients, names: ResourceNames, auth: Auth) -> Self {
        let bucket = names.artifact_bucket();
        // A chain named wrongly is a deployment mistake: said at start, then run without it.
        let chain = wallets::WalletChain::from_env().unwrap_or_else(|err| {
            tracing::error!(
                error = format!("{err:#}"),
                "no chain: wallets' balances are not shown"
            );
            None
        });
        Self {
            wallets: wallets::Wallets::new(clients.secrets.clone(), names.stage(), chain),
            relay: Relay::new(pool.clone(), Queues::new(clients.clone(), names)),
            reads: cache::ReadCache::new(pool.clone(), cache::READ_TTL),
            pool,
            artifacts: ArtifactStore::new(clients.s3.clone(), bucket),
            clients,
            sign_in: auth::SignIn::from_env(&auth),
            auth,
            streams_per_caller: goals::streams_per_caller_from_env(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let reads = state.reads.clone();
    Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi::document))
        .route("/auth/config", get(sign_in_config))
        .route("/tenants", post(tenants::create).get(tenants::list))
        .route("/agents", post(agents::create).get(agents::list))
        .route("/agents/{id}", get(agents::get))
        .route("/fleet", get(agents::fleet))
        .route("/agents/{id}/persona", put(agents::put_persona))
        .route("/agents/{id}/policy", put(agents::put_policy))
        .route("/agents/{id}/pause", post(agents::pause))
        .route("/agents/{id}/resume", post(agents::resume))
        .route("/agents/{id}/budget", put(budgets::open))
        .route("/agents/{id}/budget/top-ups", post(budgets::top_up))
        .route("/agents/{id}/ledger", get(budgets::ledger))
        .route("/goals", post(goals::submit).get(goals::list))
        .route("/goals/{id}", get(goals::get))
        .route("/goals/{id}/events", get(goals::events))
        .route("/goals/{id}/cancel", post(goals::cancel))
        .route("/reviews", get(reviews::list))
        .route("/reviews/bulk-approve", post(reviews::bulk_approve))
        .route("/reviews/{id}", get(reviews::card))
        .route("/reviews/{id}/approve", post(reviews::approve))
        .route("/reviews/{id}/reject", post(reviews::reject))
        .route("/reviews/{id}/edit", post(reviews::edit))
        .route("/audit", get(reviews::audit))
        .route("/published", get(published::list))
        .merge(ui::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            reads,
            cache::invalidate_after_writes,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(uri_limit))
        .with_state(Arc::new(state))
}

/// The winning decision, in a 409 for a decision that came too late.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Winner {
    #[schema(value_type = String, example = "approve")]
    pub decision: chimera_core::domain::DecisionKind,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
}

/// An error at the API boundary, mapped to a status and a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// A decision on an item whose artifact changed since it was shown.
    #[error("{0}")]
    Stale(String),
    /// A decision naming another policy version than the item is judged under now (the body
    /// names it, so one retry suffices once the card shows it).
    #[error("the item is judged under policy v{0}; review it again")]
    PolicyMoved(i32),
    #[error("already decided: {} by {}", .0.decision, .0.decided_by)]
    AlreadyDecided(Winner),
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    #[error("the request URI is longer than {MAX_URI_BYTES} bytes")]
    UriTooLong,
    /// A caller over a limit of its own (open event streams): 429, nothing changed.
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    UnprocessableEntity(String),
    /// A SOUL.md or AGENTS.md that does not read: 422 naming the document, line and field.
    #[error("{0}")]
    InvalidDocument(chimera_core::documents::DocError),
    #[error("a dependency is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A fault of ours (an invariant broken, a stored row that cannot be read): the cause is
    /// logged, the caller gets an opaque 500.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Stale(_) | ApiError::PolicyMoved(_) => (StatusCode::CONFLICT, "stale"),
            ApiError::AlreadyDecided(_) => (StatusCode::CONFLICT, "already_decided"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UriTooLong => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ApiError::UnprocessableEntity(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_entity")
            }
            ApiError::InvalidDocument(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_document"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// A failed call to a dependency, sorted: unreachable or overloaded (503), a value the
    /// database cannot store (400), a fault of ours (500). An error that is not the database's
    /// nor the bucket's (the SDK's, a network error) is taken as the dependency being
    /// unavailable.
    pub fn dependency(err: impl Into<anyhow::Error>) -> Self {
        let err = err.into();
        for cause in err.chain() {
            if let Some(db) = cause.downcast_ref::<sqlx::Error>() {
                return match chimera_store::fault(db) {
                    chimera_store::Fault::Unavailable => Self::Unavailable(err),
                    chimera_store::Fault::BadInput => Self::BadRequest(
                        "the request holds text the database cannot store (a NUL character?)"
                            .into(),
                    ),
                    chimera_store::Fault::Internal => Self::Internal(err),
                };
            }
            if let Some(storage) = cause.downcast_ref::<chimera_aws::artifacts::StorageError>() {
                return if storage.is_retryable() {
                    Self::Unavailable(err)
                } else {
                    Self::Internal(err)
                };
            }
        }
        Self::Unavailable(err)
    }

    /// A fault of ours.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::Unavailable(cause) => {
                tracing::error!(error = format!("{cause:#}"), "dependency unavailable");
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
            }
            _ => {}
        }
        let mut error = json!({"code": code, "message": self.to_string()});
        match &self {
            ApiError::AlreadyDecided(winner) => error["winner"] = json!(winner),
            ApiError::PolicyMoved(current) => error["policy_version"] = json!(current),
            ApiError::InvalidDocument(doc) => {
                error["document"] = json!(doc.document);
                error["line"] = json!(doc.line);
                error["field"] = json!(doc.field);
            }
            _ => {}
        }
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Parses a JSON request body: 413 over [`MAX_BODY_BYTES`], 400 for anything but a JSON object
/// and with serde's reason otherwise, and 400 naming the field for text PostgreSQL cannot store
/// (a NUL character), wherever it is.
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
    // Serde reads a struct from an array of its fields too; a body is an object.
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "invalid body: expected a JSON object".into(),
        ));
    }
    if let Some(field) = unstorable_text(&value, "") {
        return Err(ApiError::BadRequest(format!(
            "{field} contains a NUL character, which cannot be stored"
        )));
    }
    serde_json::from_value(value).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
}

/// An `agent_name` filter (part of a handle or display name), trimmed: 1..=64 characters, not
/// blank; `None` when not given.
pub fn agent_name(param: Option<&str>) -> Result<Option<String>, ApiError> {
    match param.map(str::trim) {
        None => Ok(None),
        Some(name) if !(1..=64).contains(&name.chars().count()) => Err(ApiError::BadRequest(
            "agent_name must be 1..=64 characters (not blank)".into(),
        )),
        Some(name) => Ok(Some(name.to_owned())),
    }
}

/// A page's `limit` (1..=`max`, `default` when absent) and `offset` (>= 0, default 0).
pub fn page(
    limit: Option<i64>,
    offset: Option<i64>,
    default: i64,
    max: i64,
) -> Result<(i64, i64), ApiError> {
    let (limit, offset) = (limit.unwrap_or(default), offset.unwrap_or(0));
    if !(1..=max).contains(&limit) || offset < 0 {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1..={max} and offset >= 0"
        )));
    }
    Ok((limit, offset))
}

/// An id in a path, in its one canonical form (lowercase, hyphenated, as the API writes ids);
/// any other spelling (upper case, braces, `urn:uuid:`, no hyphens) names nothing: 404.
pub fn path_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw)
        .ok()
        .filter(|id| id.hyphenated().to_string() == raw)
        .ok_or(ApiError::NotFound)
}

/// The `Idempotency-Key` header, if any: 1..=200 visible ASCII characters (no spaces or
/// control characters), else 400.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if !(1..=200).contains(&bytes.len()) || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(ApiError::BadRequest(
            "Idempotency-Key must be 1..=200 visible ASCII characters (no spaces or control characters)"
                .into(),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The path (`text`, `constraints.pay_to`, `items[2].artifact_hash`...) of the first string or
/// key of `value` holding a NUL character.
fn unstorable_text(value: &serde_json::Value, at: &str) -> Option<String> {
    let here = |name: &str| {
        if at.is_empty() {
            name.to_owned()
        } else {
            format!("{at}.{name}")
        }
    };
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(if at.is_empty() {
            "the body".into()
        } else {
            at.to_owned()
        }),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| unstorable_text(v, &format!("{at}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(here("a key"))
            } else {
                unstorable_text(v, &here(k))
            }
        }),
        _ => None,
    }
}

#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "The API and its database answer"),
              (status = 503, description = "The database does not answer")))]
pub async fn health(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    sqlx::query("select 1")
        .execute(&state.pool)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    Ok(Json(json!({"status": "ok", "database": "ok"})))
}

#[utoipa::path(get, path = "/auth/config", tag = "service",
    responses((status = 200, body = auth::SignIn,
               description = "How Mission Control signs people in: the OpenID issuer's authorization and token endpoints and the client id (the authorization code flow with PKCE), and whether a token may be pasted (local use only)")))]
pub async fn sign_in_config(State(state): State<Arc<AppState>>) -> Json<auth::SignIn> {
    Json(state.sign_in.clone())
}

async fn uri_limit(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri = request.uri();
    let length = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
    if length > MAX_URI_BYTES {
        return ApiError::UriTooLong.into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}
