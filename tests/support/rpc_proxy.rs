//! A man in the middle for the local chain's JSON-RPC: it forwards every call to the node, and
//! can break the answer of the next raw transactions *after* the node took them, and hide
//! receipts for a while: a wallet that sent a transfer and cannot tell whether it went.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::Value;

struct Shared {
    node: String,
    http: reqwest::Client,
    /// Raw transactions still to take and then answer with a broken connection.
    drops: AtomicUsize,
    /// Receipt reads answered with a broken connection, not forwarded.
    hide_receipts: AtomicBool,
    /// Raw transactions forwarded to the node.
    sends: AtomicUsize,
}

/// A running proxy; stops when dropped.
pub struct RpcProxy {
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl RpcProxy {
    /// Listens on a port of its own on 127.0.0.1, forwarding to `node`.
    pub async fn start(node: &str) -> RpcProxy {
        let shared = Arc::new(Shared {
            node: node.to_owned(),
            http: reqwest::Client::new(),
            drops: AtomicUsize::new(0),
            hide_receipts: AtomicBool::new(false),
            sends: AtomicUsize::new(0),
        });
        let (url, server) = crate::serve_local(
            axum::Router::new()
                .fallback(forward)
                .with_state(shared.clone()),
        )
        .await;
        RpcProxy {
            url,
            shared,
            server,
        }
    }

    /// The next `n` raw transactions reach the node, and their senders get a broken answer.
    pub fn drop_next_sends(&self, n: usize) {
        self.shared.drops.store(n, Ordering::SeqCst);
    }

    /// While `hidden`, every receipt read gets a broken answer.
    pub fn hide_receipts(&self, hidden: bool) {
        self.shared.hide_receipts.store(hidden, Ordering::SeqCst);
    }

    /// Raw transactions forwarded so far (a client's retry of one counts again).
    pub fn sends(&self) -> usize {
        self.shared.sends.load(Ordering::SeqCst)
    }
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn broken() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped"))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

async fn forward(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let method = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("method").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    if method == "eth_getTransactionReceipt" && shared.hide_receipts.load(Ordering::SeqCst) {
        return broken();
    }
    let answer = shared
        .http
        .post(&shared.node)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let Ok(answer) = answer else {
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .unwrap_or_default();
    };
    let code = answer.status();
    let bytes = answer.bytes().await.unwrap_or_default();
    if method == "eth_sendRawTransaction" {
        shared.sends.fetch_add(1, Ordering::SeqCst);
        let dropped = shared
            .drops
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if dropped {
            return broken();
        }
    }
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .unwrap_or_default()
}
