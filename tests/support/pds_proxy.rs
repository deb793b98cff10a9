//! A man in the middle for the local PDS: it forwards every XRPC call to the real PDS, and can
//! drop the connection of the next record writes *after* the PDS committed them, the failure
//! a platform without idempotent writes turns into a double post when the caller retries.
//!
//! A client that logs in learns its PDS from the DID document in the session; the proxy
//! leaves that document out of the session answers so the client keeps talking through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::Value;

/// The write that can be dropped: every post and reply is one.
const CREATE_RECORD: &str = "/xrpc/com.atproto.repo.createRecord";

struct Shared {
    pds: String,
    http: reqwest::Client,
    /// Writes still to drop after they committed.
    drops: AtomicUsize,
    /// Writes still to turn away with 429, as the PDS's rate limiter does.
    limited: AtomicUsize,
    /// Writes forwarded to the PDS.
    writes: AtomicUsize,
}

/// A running proxy; stops when dropped.
pub struct PdsProxy {
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl PdsProxy {
    /// Listens on a port of its own on 127.0.0.1, forwarding to `pds`.
    pub async fn start(pds: &str) -> PdsProxy {
        let shared = Arc::new(Shared {
            pds: pds.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            drops: AtomicUsize::new(0),
            limited: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        });
        let (url, server) = crate::serve_local(
            axum::Router::new()
                .fallback(forward)
                .with_state(shared.clone()),
        )
        .await;
        PdsProxy {
            url,
            shared,
            server,
        }
    }

    /// The next `n` record writes reach the PDS, and their callers get a dropped connection.
    pub fn drop_next_writes(&self, n: usize) {
        self.shared.drops.store(n, Ordering::SeqCst);
    }

    /// The next `n` record writes are turned away with 429 (`RateLimitExceeded`) before they
    /// reach the PDS, as its write-points limiter answers.
    pub fn rate_limit_next_writes(&self, n: usize) {
        self.shared.limited.store(n, Ordering::SeqCst);
    }

    /// Record writes forwarded so far.
    pub fn writes(&self) -> usize {
        self.shared.writes.load(Ordering::SeqCst)
    }
}

impl Drop for PdsProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return status(StatusCode::PAYLOAD_TOO_LARGE);
    };
    let path = parts.uri.path().to_owned();
    if path == CREATE_RECORD
        && shared
            .limited
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() + 3600)
            .unwrap_or_default();
        return Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header(header::CONTENT_TYPE, "application/json")
            .header("ratelimit-limit", "5000")
            .header("ratelimit-remaining", "0")
            .header("ratelimit-reset", reset.to_string())
            .header("ratelimit-policy", "5000;w=3600")
            .body(Body::from(
                r#"{"error":"RateLimitExceeded","message":"Rate Limit Exceeded"}"#,
            ))
            .unwrap_or_else(|_| status(StatusCode::BAD_GATEWAY));
    }
    let target = format!(
        "{}{}",
        shared.pds,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut call = shared.http.request(parts.method.clone(), target).body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            call = call.header(name, value);
        }
    }
    let Ok(answer) = call.send().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let code = answer.status();
    let headers = answer.headers().clone();
    let Ok(mut bytes) = answer.bytes().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    if path == CREATE_RECORD {
        shared.writes.fetch_add(1, Ordering::SeqCst);
        let dropped = shared
            .drops
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if dropped && code.is_success() {
            // Committed on the PDS; the caller sees the connection break mid-answer.
            let broken = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped"))
            });
            return Response::builder()
                .status(code)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(broken))
                .unwrap_or_else(|_| status(StatusCode::BAD_GATEWAY));
        }
    }
    if path.ends_with("server.createSession") || path.ends_with("server.refreshSession") {
        bytes = without_did_doc(bytes);
    }
    let mut out = Response::builder().status(code);
    for (name, value) in &headers {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            out = out.header(name, value);
        }
    }
    out.body(Body::from(bytes))
        .unwrap_or_else(|_| status(StatusCode::BAD_GATEWAY))
}

fn without_did_doc(bytes: Bytes) -> Bytes {
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut session)) => {
            session.remove("didDoc");
            Bytes::from(serde_json::to_vec(&session).unwrap_or_default())
        }
        _ => bytes,
    }
}

fn status(code: StatusCode) -> Response {
    Response::builder()
        .status(code)
        .body(Body::empty())
        .unwrap_or_default()
}
