//! A host for the Lambda Runtime API (`/2018-06-01/runtime/...`), enough to run a real
//! function binary as the Lambda service does: the binary long-polls `invocation/next`, gets
//! an event, and posts its response or error. Used to prove each function binary starts under
//! its runtime and to measure its init time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Notify, mpsc};

/// What the function answered for one invocation.
#[derive(Debug, Clone)]
pub enum Outcome {
    Response(serde_json::Value),
    Error(serde_json::Value),
}

struct Host {
    events: Mutex<VecDeque<(String, serde_json::Value)>>,
    event_ready: Notify,
    first_poll: Mutex<Option<Instant>>,
    outcomes: mpsc::UnboundedSender<(String, Outcome)>,
}

/// A running function binary attached to its own Runtime API host.
pub struct RunningFunction {
    host: Arc<Host>,
    outcomes: mpsc::UnboundedReceiver<(String, Outcome)>,
    child: tokio::process::Child,
    started: Instant,
    server: tokio::task::JoinHandle<()>,
}

impl RunningFunction {
    /// Starts `binary` with the environment Lambda gives a function, plus `env`.
    pub async fn start(
        binary: &std::path::Path,
        name: &str,
        env: &[(&str, String)],
    ) -> RunningFunction {
        let (tx, rx) = mpsc::unbounded_channel();
        let host = Arc::new(Host {
            events: Mutex::new(VecDeque::new()),
            event_ready: Notify::new(),
            first_poll: Mutex::new(None),
            outcomes: tx,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(host.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding port 0");
        let addr: SocketAddr = listener.local_addr().expect("bound address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let started = Instant::now();
        let mut command = tokio::process::Command::new(binary);
        command
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test-stream")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("starting the function binary");
        RunningFunction {
            host,
            outcomes: rx,
            child,
            started,
            server,
        }
    }

    /// Sends one event and waits (with a deadline) for the function's answer.
    pub async fn invoke(&mut self, event: serde_json::Value) -> Outcome {
        let id = uuid::Uuid::new_v4().to_string();
        self.host
            .events
            .lock()
            .unwrap()
            .push_back((id.clone(), event));
        self.host.event_ready.notify_one();
        let deadline = Duration::from_secs(30);
        loop {
            let (got, outcome) = tokio::time::timeout(deadline, self.outcomes.recv())
                .await
                .expect("the function answered within 30 s")
                .expect("the runtime host is alive");
            if got == id {
                return outcome;
            }
        }
    }

    /// Time from process start to its first poll for an event: the function's init.
    pub fn init_duration(&self) -> Option<Duration> {
        self.host
            .first_poll
            .lock()
            .unwrap()
            .map(|t| t - self.started)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        self.server.abort();
    }
}

async fn next(State(host): State<Arc<Host>>) -> Response {
    host.first_poll
        .lock()
        .unwrap()
        .get_or_insert_with(Instant::now);
    loop {
        let notified = host.event_ready.notified();
        if let Some((id, event)) = host.events.lock().unwrap().pop_front() {
            let mut headers = HeaderMap::new();
            let deadline = (std::time::SystemTime::now() + Duration::from_secs(60))
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            headers.insert(
                "lambda-runtime-aws-request-id",
                HeaderValue::from_str(&id).unwrap(),
            );
            headers.insert(
                "lambda-runtime-deadline-ms",
                HeaderValue::from_str(&deadline.to_string()).unwrap(),
            );
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:test"),
            );
            headers.insert(
                "lambda-runtime-trace-id",
                HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
            );
            return (StatusCode::OK, headers, event.to_string()).into_response();
        }
        notified.await;
    }
}

async fn response(
    State(host): State<Arc<Host>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    let _ = host.outcomes.send((id, Outcome::Response(value)));
    StatusCode::ACCEPTED
}

async fn error(State(host): State<Arc<Host>>, Path(id): Path<String>, body: String) -> StatusCode {
    let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    let _ = host.outcomes.send((id, Outcome::Error(value)));
    StatusCode::ACCEPTED
}

async fn init_error(State(host): State<Arc<Host>>, body: String) -> StatusCode {
    let _ = host.outcomes.send((
        "init".into(),
        Outcome::Error(serde_json::Value::String(body)),
    ));
    StatusCode::ACCEPTED
}
