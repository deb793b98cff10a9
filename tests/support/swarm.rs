//! The whole swarm on the local stack, as tests and the pipeline bench drive it: a fresh
//! database and stage, a tenant with agents (each with a budget), the project's MCP server
//! (stdio child of the worker), and the local event-source runner feeding the three handlers,
//! with the HITL API on port 0. Goals go in over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chimera_aws::Clients;
use chimera_aws::bootstrap::{BootstrapOptions, bootstrap, queue_url};
use chimera_aws::queues::Queues;
use chimera_aws::relay::Relay;
use chimera_core::auth::{Claims, Hs256};
use chimera_core::domain::{AgentId, GoalId, TenantId};
use chimera_core::names::{Queue, ResourceNames};
use chimera_core::routing::Policy;
use chimera_judge::Judge;
use chimera_llm::LanguageModel;
use chimera_llm::embed::{Embedder, OpenAiEmbedder};
use chimera_llm::mind::{Mind, Prices};
use chimera_llm::openai::{OpenAiCompatible, OpenAiConfig};
use chimera_mcp::McpClient;
use chimera_planner::PlannerService;
use chimera_planner::llm::LlmPlanner;
use chimera_planner::plan::{Planner, TemplatePlanner};
use chimera_runner::{RunnerConfig, Running, SourceSettings};
use chimera_store::{budget, records};
use chimera_worker::Worker;
use serde_json::{Value, json};

use crate::world::stdio_config;
use crate::{TestDb, clients, unique_stage};

/// Goal statuses nothing automatic will change any more.
pub const SETTLED: [&str; 4] = ["completed", "failed", "cancelled", "awaiting_review"];

pub struct SwarmOptions {
    pub agents: usize,
    pub max_receive_count: u32,
    pub settings: SourceSettings,
    /// Starting balance of each agent's budget, in cents.
    pub budget_cents: i64,
    /// Every agent's policy.
    pub policy: Policy,
    /// How often the runner sweeps reviews (never when `None`).
    pub sweep_every: Option<Duration>,
    /// The model that plans, drafts and judges (metered on the test's ledger, [`metered`]), e.g.
    /// [`local_model`]; templates and deterministic checks only when `None`.
    pub model: Option<Arc<dyn LanguageModel>>,
    /// The embedder of semantic memory (e.g. [`local_embedder`]): the judge remembers committed
    /// posts and the planner recalls them; nothing is remembered when `None`.
    pub embedder: Option<Arc<dyn Embedder>>,
    /// The embedder the judge scores similarity with (default: [`local_embedder`]); with
    /// `None` and no model, nothing independent scores an effect and each goes to a person.
    pub scorer: Option<Arc<dyn Embedder>>,
    /// The agents publish on the local Bluesky network: each gets an account on its PDS, and
    /// the worker has the shipped Bluesky profile beside the world.
    pub bluesky: bool,
    /// How long a goal waits for a busy model before the templates plan it.
    pub model_wait: Duration,
    /// Calls to the model in flight at once across the three functions, as in one runner
    /// process (the local server answers one at a time: 1); unbounded when `None`.
    pub model_slots: Option<usize>,
    /// The agents pay on the local chain: each gets a wallet (its key in the stage's secrets)
    /// holding this many cents of the stablecoin, and the worker has the shipped wallet
    /// profile beside the world.
    pub wallets: Option<i64>,
}

/// The local stack's embedding model (`CHIMERA_EMBED_BASE_URL`, all-MiniLM-L6-v2).
pub fn local_embedder() -> Arc<dyn Embedder> {
    Arc::new(OpenAiEmbedder::new(
        OpenAiConfig::new(
            crate::stack_env("CHIMERA_EMBED_BASE_URL"),
            crate::stack_env("CHIMERA_EMBED_MODEL"),
        ),
        384,
    ))
}

/// The local stack's model (`CHIMERA_LLM_BASE_URL`).
pub fn local_model() -> Arc<dyn LanguageModel> {
    Arc::new(OpenAiCompatible::new(OpenAiConfig::new(
        crate::stack_env("CHIMERA_LLM_BASE_URL"),
        crate::stack_env("CHIMERA_LLM_MODEL"),
    )))
}

/// The local stack's model, metered on `pool`'s budget ledger at the local price table.
pub fn local_mind(pool: &sqlx::PgPool) -> Arc<Mind> {
    metered(pool, local_model())
}

/// `model` metered on `pool`'s budget ledger at the local price table.
pub fn metered(pool: &sqlx::PgPool, model: Arc<dyn LanguageModel>) -> Arc<Mind> {
    Arc::new(
        Mind::new(model, &Prices::local(), chimera_aws::mind::meter(pool))
            .expect("the local model has a price"),
    )
}

impl Default for SwarmOptions {
    fn default() -> Self {
        Self {
            agents: 1,
            max_receive_count: 3,
            settings: SourceSettings {
                wait: Duration::from_secs(1),
                retry_after: Some(Duration::ZERO),
                ..SourceSettings::default()
            },
            budget_cents: 10_000,
            policy: Policy::default(),
            sweep_every: None,
            model: None,
            embedder: None,
            scorer: Some(local_embedder()),
            bluesky: false,
            wallets: None,
            model_wait: chimera_planner::MODEL_WAIT,
            model_slots: None,
        }
    }
}

/// The key the tests' API checks tokens with.
pub const TEST_JWT_KEY: &[u8] = b"chimera-tests-hs256-key-of-32-bytes-or-more";

/// The tests' API authentication: HS256 with [`TEST_JWT_KEY`].
pub fn test_auth() -> chimera_hitl_api::Auth {
    chimera_hitl_api::Auth::Local(Hs256::new(TEST_JWT_KEY.to_vec()).unwrap())
}

/// A token for `sub` of `tenant` with `roles`, valid for an hour, signed with [`TEST_JWT_KEY`].
pub fn sign_token(tenant: TenantId, sub: &str, roles: &[&str]) -> String {
    let now = chrono::Utc::now().timestamp();
    Hs256::new(TEST_JWT_KEY.to_vec()).unwrap().sign(&Claims {
        sub: sub.to_owned(),
        tenant: tenant.0.to_string(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        exp: now + 3600,
        iat: Some(now),
        iss: None,
        aud: None,
    })
}

/// The functions the swarm's runner feeds, kept for tests that hand them batches directly.
struct Handlers {
    planner: Arc<PlannerService>,
    worker: Arc<Worker>,
    judge: Arc<Judge>,
    relay: Arc<Relay>,
}

pub struct Swarm {
    pub db: TestDb,
    pub names: ResourceNames,
    pub clients: Clients,
    pub tenant: TenantId,
    pub agents: Vec<AgentId>,
    handlers: Handlers,
    settings: SourceSettings,
    sweep_every: Option<Duration>,
    running: Option<Running>,
    /// The functions' pools, each working as its database role.
    pub pools: chimera_store::RolePools,
    api: String,
    http: reqwest::Client,
    /// Each agent's account on the local Bluesky network, when [`SwarmOptions::bluesky`].
    pub accounts: Vec<chimera_worker::accounts::BlueskyAccount>,
}

/// The MCP configuration of a swarm on a shipped profile (`infra/mcp/<file>`): the world (with
/// its debug tools) over stdio, and the profile's other servers reading the agents' accounts
/// from `stage`'s secrets.
fn shipped_config(file: &str, database_url: &str, stage: &str) -> chimera_mcp::McpConfig {
    let shipped = std::fs::read_to_string(crate::repo_root().join("infra/mcp").join(file))
        .unwrap_or_else(|e| panic!("infra/mcp/{file}: {e}"));
    let mut profile: Value = serde_json::from_str(&shipped).expect("the profile is JSON");
    profile["servers"]["world"] = json!({
        "transport": "stdio",
        "command": crate::workspace_bin("chimera-world"),
        "args": ["stdio", "--debug-tools"],
        "env": {"WORLD_DATABASE_URL": database_url, "RUST_LOG": "warn"},
    });
    let stage = stage.to_owned();
    chimera_mcp::McpConfig::parse_with(&profile.to_string(), &move |name| match name {
        "CHIMERA_STAGE" => Some(stage.clone()),
        other => std::env::var(other).ok(),
    })
    .unwrap_or_else(|e| panic!("infra/mcp/{file} parses: {e}"))
}

impl Swarm {
    /// Everything set up and seeded; the runner is not started yet ([`Swarm::run`]).
    pub async fn new(options: SwarmOptions) -> Swarm {
        // The functions' metrics lines would fill a failing test's captured output; a test that
        // reads them sets its own sink first (the first one set wins).
        chimera_aws::telemetry::set_metrics_sink(Box::new(std::io::sink()));
        let db = TestDb::migrated().await;
        let names = unique_stage();
        let clients = clients().await;
        bootstrap(
            &clients,
            &names,
            BootstrapOptions {
                max_receive_count: options.max_receive_count,
            },
        )
        .await
        .expect("bootstrapping the stage");
        let tenant = records::create_tenant(&db.pool, "acme").await.unwrap();
        let mut agents = Vec::new();
        for i in 0..options.agents {
            let agent = records::create_agent(
                &db.pool,
                tenant,
                &format!("agent{i}"),
                &json!({"name": format!("Agent {i}"), "voice": "warm"}),
                &options.policy,
            )
            .await
            .unwrap();
            budget::open_budget(&db.pool, agent, "USD", options.budget_cents)
                .await
                .unwrap();
            agents.push(agent);
        }
        // Debug tools: tests script the drafting tool's self-assessed quality.
        let mut accounts = Vec::new();
        let mcp = if options.bluesky {
            let pds = crate::stack_env("CHIMERA_BSKY_PDS_URL");
            let http = reqwest::Client::new();
            for (i, agent) in agents.iter().enumerate() {
                let handle = format!(
                    "agent{i}{}.test",
                    &uuid::Uuid::new_v4().simple().to_string()[..6]
                );
                let account = chimera_worker::accounts::create_on_pds(&http, &pds, &handle)
                    .await
                    .expect("an account on the local PDS");
                chimera_worker::accounts::store(
                    &clients.secrets,
                    &chimera_worker::accounts::secret_name(names.stage(), *agent, "bluesky"),
                    account.secret(),
                )
                .await
                .expect("the account's secret stored");
                accounts.push(account);
            }
            McpClient::new(shipped_config("bluesky.json", &db.url(), names.stage())).with_secrets(
                Arc::new(chimera_worker::secrets::SecretsManager::new(
                    clients.secrets.clone(),
                )),
            )
        } else if let Some(cents) = options.wallets {
            let chain = crate::chain::LocalChain::from_env();
            for agent in &agents {
                let wallet =
                    crate::chain::wallet_for(&db.pool, &clients.secrets, names.stage(), *agent)
                        .await;
                chain.fund(wallet, cents).await;
            }
            crate::chain::wallet_client(
                shipped_config("wallet.json", &db.url(), names.stage()),
                &clients.secrets,
            )
        } else {
            McpClient::new(stdio_config(&db.url(), true, ""))
        };
        // Each function works as its own database role, as deployed.
        let Ok(pools) = chimera_store::RolePools::try_new(|role| {
            Ok::<_, std::convert::Infallible>(db.pool_as(role))
        });
        // The three functions share the model's call slots, as in one runner process.
        let slots = options
            .model
            .as_ref()
            .zip(options.model_slots)
            .map(|(model, n)| {
                chimera_llm::limit::shared(&format!("swarm|{}|{}", db.url(), model.model_id()), n)
            });
        let mind = |pool: &sqlx::PgPool| {
            options.model.clone().map(|model| {
                let mind = Mind::new(model, &Prices::local(), chimera_aws::mind::meter(pool))
                    .expect("the local model has a price");
                Arc::new(match &slots {
                    Some(slots) => mind.with_slots(slots.clone()),
                    None => mind,
                })
            })
        };
        let planner: Box<dyn Planner> = match mind(&pools.planner) {
            Some(mind) => Box::new(LlmPlanner::new(mind)),
            None => Box::new(TemplatePlanner),
        };
        let memory = |pool: &sqlx::PgPool| {
            options
                .embedder
                .clone()
                .map(|e| chimera_aws::memory::Memory::new(pool.clone(), e))
        };
        let handlers = Handlers {
            planner: Arc::new(
                PlannerService::new(
                    clients.clone(),
                    pools.planner.clone(),
                    names.clone(),
                    planner,
                )
                .with_memory(memory(&pools.planner))
                .with_model_wait(options.model_wait),
            ),
            worker: Arc::new(
                Worker::new(clients.clone(), pools.worker.clone(), mcp, names.clone())
                    .with_mind(mind(&pools.worker)),
            ),
            judge: Arc::new(
                Judge::new(clients.clone(), pools.judge.clone(), names.clone())
                    .with_mind(mind(&pools.judge))
                    .with_memory(memory(&pools.judge))
                    .with_embedder(options.scorer),
            ),
            relay: Arc::new(Relay::new(
                pools.sweep.clone(),
                Queues::new(clients.clone(), names.clone()),
            )),
        };
        Swarm {
            db,
            names,
            clients,
            tenant,
            agents,
            handlers,
            settings: options.settings,
            sweep_every: options.sweep_every,
            running: None,
            pools,
            api: String::new(),
            http: reqwest::Client::new(),
            accounts,
        }
    }

    /// The HITL API's state, as the runner's API uses it (working as the API's role).
    pub fn app_state(&self) -> chimera_hitl_api::AppState {
        self.state_as(&self.pools.api)
    }

    fn state_as(&self, pool: &sqlx::PgPool) -> chimera_hitl_api::AppState {
        chimera_hitl_api::AppState::new(
            pool.clone(),
            self.clients.clone(),
            self.names.clone(),
            test_auth(),
        )
    }

    /// A token of the swarm's tenant with `roles`, for `sub`.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.token_for(self.tenant, sub, roles)
    }

    /// A token of any tenant, signed with the API's key.
    pub fn token_for(&self, tenant: TenantId, sub: &str, roles: &[&str]) -> String {
        sign_token(tenant, sub, roles)
    }

    /// The API's base URL (once running).
    pub fn api(&self) -> &str {
        &self.api
    }

    /// Starts the runner (pollers and the API on port 0).
    pub async fn run(&mut self) {
        // Mission Control signs in through the runner's local issuer, as `chimera-runner` serves it.
        let mut state = self.app_state();
        state.sign_in = chimera_runner::issuer::sign_in();
        let chimera_hitl_api::Auth::Local(key) = test_auth() else {
            unreachable!("the tests check tokens locally")
        };
        let sweep = self
            .sweep_every
            .map(|every| (every, std::sync::Arc::new(self.state_as(&self.pools.sweep))));
        let handlers: Vec<chimera_runner::Handler> = vec![
            self.handlers.planner.clone(),
            self.handlers.worker.clone(),
            self.handlers.judge.clone(),
        ];
        let running = chimera_runner::start(
            &self.clients,
            handlers,
            RunnerConfig {
                names: self.names.clone(),
                planner: self.settings.clone(),
                worker: self.settings.clone(),
                judge: self.settings.clone(),
                relay: self.handlers.relay.clone(),
                api: Some((
                    "127.0.0.1:0".parse().unwrap(),
                    chimera_hitl_api::router(state).merge(chimera_runner::issuer::router(key)),
                )),
                sweep,
            },
        )
        .await
        .expect("starting the runner");
        self.api = format!("http://{}", running.api_addr.expect("the API listens"));
        self.running = Some(running);
    }

    /// The judge the runner feeds, to hand it batches directly.
    pub fn judge(&self) -> &Judge {
        &self.handlers.judge
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("the runner was started")
    }

    /// Test aid: the quality the world's drafting tool reports for `brief`, through its
    /// `debug.script_quality` tool (simulation knobs are not part of the goal API).
    pub async fn script_quality(&self, brief: &str, quality: f64) {
        self.handlers
            .worker
            .mcp()
            .call(
                &["debug.script_quality"],
                "debug.script_quality",
                json!({"brief": brief, "quality": quality}),
            )
            .await
            .expect("scripting the drafting tool's quality");
    }

    /// One run of the engagement collector at `at`, with the worker's MCP client.
    pub async fn collect_engagement(
        &self,
        at: chrono::DateTime<chrono::Utc>,
    ) -> chimera_worker::engagement::Collected {
        chimera_worker::engagement::collect(&self.pools.worker, self.handlers.worker.mcp(), at)
            .await
            .expect("collecting engagement")
    }

    /// Submits a goal over HTTP (`POST /goals`) for agent number `agent`. A test-only
    /// `simulated_quality` in `constraints` is taken out and scripted for the goal's text
    /// ([`Swarm::script_quality`]) before the goal is sent.
    pub async fn submit(&self, agent: usize, kind: &str, text: &str, constraints: Value) -> GoalId {
        let mut constraints = constraints;
        if let Some(quality) = constraints
            .as_object_mut()
            .and_then(|c| c.remove("simulated_quality"))
            .and_then(|q| q.as_f64())
        {
            self.script_quality(text, quality).await;
        }
        let response = self
            .http
            .post(format!("{}/goals", self.api))
            .bearer_auth(self.token("operator", &["operator"]))
            .json(&json!({
                "agent_id": self.agents[agent].0,
                "kind": kind,
                "text": text,
                "constraints": constraints,
            }))
            .send()
            .await
            .expect("POST /goals");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        assert_eq!(
            status.as_u16(),
            202,
            "POST /goals answered {status}: {body}"
        );
        GoalId(body["goal_id"].as_str().unwrap().parse().unwrap())
    }

    /// `GET /goals/{id}`.
    pub async fn view(&self, goal: GoalId) -> Value {
        self.http
            .get(format!("{}/goals/{}", self.api, goal.0))
            .bearer_auth(self.token("operator", &["operator"]))
            .send()
            .await
            .expect("GET /goals/{id}")
            .json()
            .await
            .expect("a JSON answer")
    }

    /// Waits until every goal is settled and no task is still moving; returns the statuses in
    /// order. Panics with the unsettled ones after `wait`.
    pub async fn settle(&self, goals: &[GoalId], wait: Duration) -> Vec<String> {
        let ids: Vec<uuid::Uuid> = goals.iter().map(|g| g.0).collect();
        let deadline = Instant::now() + wait;
        loop {
            let rows: Vec<(uuid::Uuid, String, i64)> = sqlx::query_as(
                "select g.id, g.status::text,
                        (select count(*) from tasks t where t.goal_id = g.id
                          and t.status in ('ready', 'queued', 'running', 'retrying'))
                 from goals g where g.id = any($1)",
            )
            .bind(&ids)
            .fetch_all(&self.db.pool)
            .await
            .unwrap();
            let settled = rows.len() == ids.len()
                && rows
                    .iter()
                    .all(|(_, s, moving)| SETTLED.contains(&s.as_str()) && *moving == 0);
            if settled {
                return ids
                    .iter()
                    .map(|id| rows.iter().find(|r| r.0 == *id).unwrap().1.clone())
                    .collect();
            }
            if Instant::now() > deadline {
                panic!("goals not settled after {wait:?}: {rows:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Messages in `queue` (or its DLQ): visible plus in flight.
    pub async fn depth(&self, queue: Queue, dead_letter: bool) -> i64 {
        let name = if dead_letter {
            self.names.dead_letter_queue(queue)
        } else {
            self.names.queue(queue)
        };
        crate::queue_depth(&self.clients, &name).await
    }

    /// Polls until `queue` (or its DLQ) holds `n` messages; panics after `wait`.
    pub async fn wait_depth(&self, queue: Queue, dead_letter: bool, n: i64, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let depth = self.depth(queue, dead_letter).await;
            if depth == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{queue} (dead letter: {dead_letter}) holds {depth} messages, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends a raw body to `queue`.
    pub async fn send_raw(&self, queue: Queue, body: &str) {
        let url = queue_url(&self.clients, &self.names.queue(queue))
            .await
            .unwrap();
        self.clients
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// Stops the runner and the MCP server, and drops the database.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        self.handlers.worker.mcp().shutdown().await;
        drop(self.handlers);
        self.db.drop_db().await;
    }
}
