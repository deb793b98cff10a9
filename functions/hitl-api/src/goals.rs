//! Goal intake: `POST /goals` stores a goal and announces it on the goal queue; `GET
//! /goals/{id}` reports it with its tasks, results and decisions, and `GET /goals/{id}/events`
//! streams that report as it changes (server-sent events); `GET /goals` lists them; `POST
//! /goals/{id}/cancel` stops one.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use chimera_core::auth::Permission;
use chimera_core::domain::{AgentId, Goal, GoalId, GoalStatus};
use chimera_core::goal::Constraints;
use chimera_store::goals::{self, Cancelled, GoalSummary, GoalView, SubmitError, Submitted};
use chimera_store::streams;
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::{ApiError, AppState, idempotency_key, json_body};

/// The body of `POST /goals`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GoalRequest {
    /// The caller's tenant (optional: the token names it; another tenant is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<uuid::Uuid>,
    pub agent_id: uuid::Uuid,
    /// `campaign`, `reply` or `paid_action`.
    #[schema(pattern = "^(campaign|reply|paid_action)$")]
    pub kind: String,
    /// What the agent should achieve, in words (1..=4000 characters, not blank).
    #[schema(min_length = 1, max_length = 4000)]
    pub text: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub constraints: Constraints,
}

#[utoipa::path(post, path = "/goals", tag = "goals", request_body = GoalRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the same goal (1..=200 visible ASCII characters)",
            min_length = 1, max_length = 200, pattern = "^[!-~]{1,200}$")),
    responses((status = 202, description = "Accepted: `{goal_id, status}`"),
              (status = 400, description = "Malformed goal"),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not an operator, or another tenant"),
              (status = 409, description = "Idempotency key reused for another body, or the agent is paused"),
              (status = 413, description = "Body too large"),
              (status = 422, description = "Unknown agent")),
    security(("bearer" = [])))]
pub async fn submit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let principal = caller.require(Permission::Submit)?;
    let mut request: GoalRequest = json_body(body)?;
    match request.tenant_id {
        Some(tenant) if tenant != principal.tenant.0 => {
            return Err(ApiError::Forbidden(
                "the goal names another tenant than the token".into(),
            ));
        }
        _ => request.tenant_id = Some(principal.tenant.0),
    }
    if request.text.trim().is_empty() || request.text.chars().count() > 4000 {
        return Err(ApiError::BadRequest(
            "text must be 1..=4000 characters".into(),
        ));
    }
    request
        .constraints
        .validate(&request.kind)
        .map_err(ApiError::BadRequest)?;
    let key = idempotency_key(&headers)?;
    let hash = hex::encode(Sha256::digest(
        serde_json::to_vec(&request).map_err(ApiError::internal)?,
    ));
    let constraints = match serde_json::to_value(&request.constraints) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => Default::default(),
    };
    let goal = Goal {
        id: GoalId::random(),
        tenant_id: principal.tenant,
        agent_id: AgentId(request.agent_id),
        kind: request.kind,
        body: request.text,
        constraints,
    };
    let submitted = goals::submit(
        &state.pool,
        &goal,
        key.as_deref().map(|k| (k, hash.as_str())),
        &principal.subject,
    )
    .await
    .map_err(|err| match err {
        SubmitError::KeyReused | SubmitError::AgentNotActive(_) => {
            ApiError::Conflict(err.to_string())
        }
        SubmitError::UnknownAgent => ApiError::UnprocessableEntity(err.to_string()),
        SubmitError::Database(e) => ApiError::dependency(e),
    })?;
    let (id, status) = match &submitted {
        Submitted::Created(id) => (*id, GoalStatus::Received),
        Submitted::Existing { id, status } => (*id, *status),
    };
    // The goal's message to the planner was written with it; it goes out now, or with the
    // relay's next pass if the queue does not answer (the goal is accepted either way).
    state.relay.flush(&[id]).await;
    tracing::info!(goal_id = %id.0, trace_id = chimera_core::trace::TraceContext::trace_id_of(id.0),
                   replay = matches!(submitted, Submitted::Existing { .. }), "goal accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"goal_id": id.0, "status": status})),
    ))
}

#[utoipa::path(get, path = "/goals/{id}", tag = "goals",
    params(("id" = uuid::Uuid, Path, description = "The goal")),
    responses((status = 200, description = "The goal with its tasks, results and decisions"),
              (status = 401, description = "No valid token"),
              (status = 404, description = "No such goal for the caller's tenant")),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<GoalView>, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let id = crate::path_id(&id)?;
    goals::view(&state.pool, Some(principal.tenant), GoalId(id))
        .await
        .map_err(ApiError::dependency)?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// How often the event stream looks at the goal again.
const EVENTS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// How long one event stream lasts at most (a client reconnects for more): 15 minutes on a
/// port of its own. Behind API Gateway, which buffers a Lambda's answer, a stream would hold
/// an execution environment (of the API's few reserved ones) only to arrive as one late
/// answer: there it answers at once with the goal as it is and a `retry` hint, and the
/// client's reconnection is the poll.
fn events_for(auth: &crate::Auth) -> std::time::Duration {
    match auth {
        crate::Auth::Gateway => std::time::Duration::ZERO,
        _ => std::time::Duration::from_secs(15 * 60),
    }
}

/// When a client reconnects after a stream's `timeout` (an `EventSource` waits this long).
const RECONNECT_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Open goal event streams one caller may hold by default: each holds a connection to the
/// API and reads the database every half second.
pub const STREAMS_PER_CALLER: u32 = 20;

/// `CHIMERA_STREAMS_PER_CALLER`, or [`STREAMS_PER_CALLER`] (a value that does not read is
/// said and ignored).
pub fn streams_per_caller_from_env() -> u32 {
    match std::env::var("CHIMERA_STREAMS_PER_CALLER") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            tracing::error!(value = %text, "CHIMERA_STREAMS_PER_CALLER is not a count; using {STREAMS_PER_CALLER}");
            STREAMS_PER_CALLER
        }),
        Err(_) => STREAMS_PER_CALLER,
    }
}

/// An open stream's lease, given back when the stream is dropped (ended or disconnected); a
/// lease whose process died lapses on its own.
struct StreamLease {
    pool: sqlx::PgPool,
    lease: streams::Lease,
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        let (pool, lease) = (self.pool.clone(), self.lease);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = streams::release(&pool, lease).await {
                    tracing::warn!(error = %err, "an event stream's lease was not given back; it lapses");
                }
            });
        }
    }
}

/// A lease on one more stream of the caller for `lasts` (and a minute should its process
/// die), or 429 when the caller holds its share already.
async fn take_lease(
    state: &AppState,
    tenant: chimera_core::domain::TenantId,
    subject: &str,
    goal: GoalId,
    lasts: std::time::Duration,
) -> Result<StreamLease, ApiError> {
    let lease = streams::take(
        &state.pool,
        tenant,
        subject,
        goal,
        state.streams_per_caller,
        lasts + std::time::Duration::from_secs(60),
    )
    .await
    .map_err(ApiError::dependency)?
    .ok_or_else(|| {
        ApiError::TooManyRequests(format!(
            "{} goal event streams are open for this caller already; close one (or wait for one to end) first",
            state.streams_per_caller
        ))
    })?;
    Ok(StreamLease {
        pool: state.pool.clone(),
        lease,
    })
}

#[utoipa::path(get, path = "/goals/{id}/events", tag = "goals",
    params(("id" = uuid::Uuid, Path, description = "The goal")),
    responses((status = 200, content_type = "text/event-stream",
               description = "Server-sent events: `goal` with the goal as `GET /goals/{id}` reports it, first at once and again whenever it changes (its tasks' status, attempts and conflicts, results, decisions); `settled` with the goal once it is completed, failed or cancelled, then the stream ends; `timeout` after 15 minutes, with a `retry` of 2 s, to reconnect for more. Behind API Gateway, which delivers a Lambda's answer as one, the stream answers at once (the goal, then `timeout`): there the client's reconnection is a poll every 2 s. A comment line every 15 s keeps idle connections open. One caller holds at most 20 streams at once (CHIMERA_STREAMS_PER_CALLER)."),
              (status = 401, description = "No valid token"),
              (status = 404, description = "No such goal for the caller's tenant"),
              (status = 429, description = "The caller holds as many open event streams as it may (20 by default); one must end first")),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let id = GoalId(crate::path_id(&id)?);
    let tenant = principal.tenant;
    let first = goals::view(&state.pool, Some(tenant), id)
        .await
        .map_err(ApiError::dependency)?
        .ok_or(ApiError::NotFound)?;
    let lasts = events_for(&state.auth);
    // A stream that lasts takes a lease, which outlives it by a minute at most should its
    // process die; one that answers at once (behind API Gateway) holds nothing.
    let lease = if lasts.is_zero() {
        None
    } else {
        Some(take_lease(&state, tenant, &principal.subject, id, lasts).await?)
    };
    let until = tokio::time::Instant::now() + lasts;
    // (the view to send, the last one sent, whether the stream is over)
    let start = (Some(first), String::new(), false);
    let stream = futures::stream::unfold(start, move |(next, last, over)| {
        let state = state.clone();
        // Held by the stream: given back when the stream is dropped.
        let _lease = &lease;
        async move {
            if over {
                return None;
            }
            let mut next = next;
            loop {
                if let Some(view) = next.take() {
                    let json = serde_json::to_string(&view).unwrap_or_default();
                    let settled = matches!(
                        view.status,
                        GoalStatus::Completed | GoalStatus::Failed | GoalStatus::Cancelled
                    );
                    if settled {
                        let event = Event::default().event("settled").data(json);
                        return Some((Ok(event), (None, String::new(), true)));
                    }
                    if json != last {
                        let event = Event::default().event("goal").data(json.clone());
                        return Some((Ok(event), (None, json, false)));
                    }
                }
                if tokio::time::Instant::now() >= until {
                    let event = Event::default()
                        .event("timeout")
                        .retry(RECONNECT_AFTER)
                        .data("{}");
                    return Some((Ok(event), (None, last, true)));
                }
                tokio::time::sleep(EVENTS_EVERY).await;
                match goals::view(&state.pool, Some(tenant), id).await {
                    Ok(view) => next = view,
                    // A database that does not answer: the stream waits and looks again.
                    Err(err) => {
                        tracing::warn!(goal_id = %id.0, error = %err, "goal events: the goal could not be read");
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub agent: Option<uuid::Uuid>,
    /// `received`, `planning`, `in_progress`, `awaiting_review`, `completed`, `failed` or
    /// `cancelled`.
    #[param(
        pattern = "^(received|planning|in_progress|awaiting_review|completed|failed|cancelled)$"
    )]
    pub status: Option<String>,
    /// `campaign`, `reply` or `paid_action`.
    #[param(pattern = "^(campaign|reply|paid_action)$")]
    pub kind: Option<String>,
    /// Created at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GoalPage {
    pub items: Vec<GoalSummary>,
    pub limit: i64,
    pub offset: i64,
}

#[utoipa::path(get, path = "/goals", tag = "goals", params(ListQuery),
    responses((status = 200, description = "The tenant's goals, newest first", body = GoalPage),
              (status = 400, description = "Bad filter"),
              (status = 401, description = "No valid token")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<GoalPage>, ApiError> {
    let principal = caller.require(Permission::Read)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let status = match query.status.as_deref() {
        None => None,
        Some(name) => Some(GoalStatus::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status must be one of {}",
                GoalStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
    };
    if let Some(kind) = &query.kind
        && !["campaign", "reply", "paid_action"].contains(&kind.as_str())
    {
        return Err(ApiError::BadRequest(
            "kind must be campaign, reply or paid_action".into(),
        ));
    }
    let (limit, offset) = crate::page(query.limit, query.offset, 50, 200)?;
    let items = goals::list(
        &state.pool,
        principal.tenant,
        &goals::Filter {
            agent: query.agent.map(AgentId),
            status,
            kind: query.kind.as_deref(),
            since: query.since,
            until: query.until,
            limit,
            offset,
        },
    )
    .await
    .map_err(ApiError::dependency)?;
    Ok(Json(GoalPage {
        items,
        limit,
        offset,
    }))
}

#[utoipa::path(post, path = "/goals/{id}/cancel", tag = "goals",
    params(("id" = uuid::Uuid, Path, description = "The goal")),
    responses((status = 200, description = "Cancelled (or settled before: `changed` is false); approved effects already released are listed, not revoked", body = Cancelled),
              (status = 401, description = "No valid token"),
              (status = 403, description = "Not an operator"),
              (status = 404, description = "No such goal for the caller's tenant")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Cancelled>, ApiError> {
    let principal = caller.require(Permission::Submit)?;
    let id = crate::path_id(&id)?;
    let cancelled = goals::cancel(
        &state.pool,
        principal.tenant,
        GoalId(id),
        &principal.subject,
    )
    .await
    .map_err(ApiError::dependency)?
    .ok_or(ApiError::NotFound)?;
    tracing::info!(goal_id = %id, changed = cancelled.changed, tasks = cancelled.cancelled_tasks,
                   not_revoked = cancelled.effects_not_revoked.len(), "goal cancelled");
    Ok(Json(cancelled))
}
