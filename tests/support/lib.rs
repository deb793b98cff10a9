//! Test support: connections to the local stack that `scripts/stack up` starts, one fresh
//! database and one fresh stage (queue, bucket and table names) per test, and a small host
//! for the Lambda Runtime API so the real function binaries can be driven as Lambda would.
//!
//! Tests need `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB` and `DATABASE_URL`; `scripts/test`
//! exports them. Without them a test fails, saying so: it never passes by skipping.

pub mod chain;
pub mod hot;
pub mod lambda;
pub mod pds_proxy;
pub mod rpc_proxy;
pub mod scripted;
pub mod seed;
pub mod swarm;
pub mod webdriver;
pub mod world;

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chimera_aws::Clients;
use chimera_core::names::ResourceNames;
use sqlx::postgres::PgConnectOptions;
// Database names are generated here (`t_` + a UUID), never taken from input.
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgPool};

/// A benchmark's setting from the environment (`BENCH_*`), or its default when unset or not a
/// number.
pub fn bench_setting(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Serves `app` on a port of its own on 127.0.0.1: its base URL, and the task serving it
/// (abort it to stop).
pub async fn serve_local(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port on 127.0.0.1");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, server)
}

/// An environment variable the local stack provides.
pub fn stack_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with scripts/test, which starts the local stack and exports it")
    })
}

/// AWS clients pointed at LocalStack and DynamoDB Local.
pub async fn clients() -> Clients {
    stack_env("AWS_ENDPOINT_URL");
    stack_env("AWS_ENDPOINT_URL_DYNAMODB");
    Clients::from_env().await
}

/// A stage of its own, so no two tests share a queue, bucket or table.
pub fn unique_stage() -> ResourceNames {
    let id = uuid::Uuid::new_v4().simple().to_string();
    ResourceNames::new(format!("t{}", &id[..12])).expect("generated stage names are valid")
}

/// A database of its own, created empty on the local PostgreSQL.
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    pub options: PgConnectOptions,
    admin: PgConnectOptions,
}

impl TestDb {
    /// A new, empty database.
    pub async fn empty() -> TestDb {
        let admin = PgConnectOptions::from_str(&stack_env("DATABASE_URL"))
            .expect("DATABASE_URL is a PostgreSQL URL");
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin
            .connect()
            .await
            .expect("connecting to the local PostgreSQL");
        sqlx::query(AssertSqlSafe(format!("create database {name}")))
            .execute(&mut conn)
            .await
            .expect("creating a test database");
        conn.close().await.ok();
        let options = admin.clone().database(&name);
        let pool = chimera_store::pool_options(80)
            .connect_with(options.clone())
            .await
            .expect("connecting to the test database");
        TestDb {
            pool,
            name,
            options,
            admin,
        }
    }

    /// A new database with every migration applied.
    pub async fn migrated() -> TestDb {
        let db = Self::empty().await;
        chimera_store::migrate(&db.pool)
            .await
            .expect("applying migrations");
        db
    }

    /// A pool of this database working as a function's role (what the function may do, as
    /// the migrations grant it), connecting lazily.
    pub fn pool_as(&self, role: chimera_store::DbRole) -> PgPool {
        chimera_store::pool_options(16)
            .connect_lazy_with(self.options.clone().options([("role", role.name())]))
    }

    /// The database's URL, for a child process.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// Closes the pool and drops the database.
    pub async fn drop_db(self) {
        self.pool.close().await;
        if let Ok(mut conn) = self.admin.connect().await {
            let _ = sqlx::query(AssertSqlSafe(format!(
                "drop database if exists {} with (force)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// Bodies received (and deleted) from `queue` of `names`, until `expected` arrived or `wait`
/// passed (a long poll of 1 s at a time: no sleeps).
pub async fn drain(
    names: &ResourceNames,
    queue: chimera_core::names::Queue,
    expected: usize,
    wait: std::time::Duration,
) -> Vec<String> {
    let c = clients().await;
    let url = chimera_aws::bootstrap::queue_url(&c, &names.queue(queue))
        .await
        .expect("the queue exists");
    let deadline = std::time::Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < expected && std::time::Instant::now() < deadline {
        let got = c
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receiving from the queue");
        for m in got.messages() {
            out.push(m.body().unwrap_or_default().to_owned());
            c.sqs
                .delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("deleting a received message");
        }
    }
    out
}

/// Messages in the queue named `name`: visible plus in flight.
pub async fn queue_depth(clients: &Clients, name: &str) -> i64 {
    let url = chimera_aws::bootstrap::queue_url(clients, name)
        .await
        .expect("the queue exists");
    let attrs = clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(
            aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        )
        .send()
        .await
        .expect("reading the queue's attributes");
    attrs
        .attributes()
        .map(|a| {
            a.values()
                .filter_map(|v| v.parse::<i64>().ok())
                .sum::<i64>()
        })
        .unwrap_or_default()
}

/// The path of a workspace binary, built beside the test binary (`scripts/test` builds them
/// first with `cargo build --workspace --bins`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Polls `probe` every 50 ms until it answers `Ok`; after `wait`, panics with `what` and the
/// last `Err` (the state it was waiting out). A deadline, never a guess at timing.
pub async fn eventually<T, F, Fut>(wait: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + wait;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(state) if Instant::now() > deadline => {
                panic!("{what}: not the case after {wait:?}; last seen: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
