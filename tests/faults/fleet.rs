//! The fault suite's harness: a stage and database of the test's own, seeded agents, and the
//! real `chimera-runner` binary as a child process (so it can be killed with SIGKILL), fed
//! goals over its HTTP API. [`Fleet::invariants`] checks what must hold after any fault.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chimera_aws::Clients;
use chimera_aws::bootstrap::{BootstrapOptions, bootstrap, queue_url};
use chimera_core::domain::{AgentId, GoalId, TenantId};
use chimera_core::names::{Queue, ResourceNames};
use chimera_core::routing::Policy;
use chimera_store::{budget, records};
use chimera_tests::swarm::{SETTLED, TEST_JWT_KEY, sign_token};
use chimera_tests::{
    TestDb, clients, eventually, queue_depth, repo_root, stack_env, unique_stage, workspace_bin,
};
use chimera_worker::accounts::{self, Reader};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Receives before a message is dead-lettered, as deployed.
pub const MAX_RECEIVE_COUNT: u32 = 5;

pub struct Fleet {
    pub db: TestDb,
    pub names: ResourceNames,
    pub clients: Clients,
    pub tenant: TenantId,
    pub agents: Vec<AgentId>,
    runner: Option<Runner>,
    /// Environment every runner of this fleet gets on top of the defaults.
    pub runner_env: Vec<(String, String)>,
    /// The runner's pollers per queue (`--concurrency`).
    pub concurrency: String,
    starts: usize,
    http: reqwest::Client,
    /// The agents' accounts on the local Bluesky network, when the fleet publishes there.
    pub bluesky: Option<OnBluesky>,
}

/// A fleet on the local Bluesky network: the PDS, each agent's DID (in the fleet's order),
/// and a reader's posts the agents answer.
pub struct OnBluesky {
    pub pds: String,
    pub dids: Vec<String>,
    pub parents: Vec<String>,
}

struct Runner {
    child: Child,
    api: String,
}

impl Fleet {
    /// A fresh database and stage with `agents` agents (each with a budget); no runner yet.
    pub async fn new(agents: usize) -> Fleet {
        let db = TestDb::migrated().await;
        let names = unique_stage();
        let clients = clients().await;
        bootstrap(
            &clients,
            &names,
            BootstrapOptions {
                max_receive_count: MAX_RECEIVE_COUNT,
            },
        )
        .await
        .expect("bootstrapping the stage");
        let tenant = records::create_tenant(&db.pool, "acme").await.unwrap();
        // Room for every reply the runs send: x's default (8 replies an hour) would defer the
        // ninth reply of an agent to the next hour, and these tests are about faults.
        let policy = Policy {
            quotas: [(
                "x".to_owned(),
                chimera_core::routing::Quota {
                    posts_per_day: None,
                    replies_per_hour: Some(1000),
                },
            )]
            .into(),
            ..Policy::default()
        };
        let mut ids = Vec::new();
        for i in 0..agents {
            let agent = records::create_agent(
                &db.pool,
                tenant,
                &format!("agent{i}"),
                &json!({"name": format!("Agent {i}"), "voice": "warm"}),
                &policy,
            )
            .await
            .unwrap();
            budget::open_budget(&db.pool, agent, "USD", 100_000)
                .await
                .unwrap();
            ids.push(agent);
        }
        Fleet {
            db,
            names,
            clients,
            tenant,
            agents: ids,
            runner: None,
            runner_env: Vec::new(),
            concurrency: "planner=2,worker=4,judge=2".into(),
            starts: 0,
            http: reqwest::Client::new(),
            bluesky: None,
        }
    }

    /// Moves the fleet to the local Bluesky network: an account per agent on the PDS (its app
    /// password in Secrets Manager under the fleet's stage), a reader's posts to answer, and
    /// runners that publish through the shipped Bluesky profile.
    pub async fn on_bluesky(&mut self) {
        let pds = stack_env("CHIMERA_BSKY_PDS_URL");
        let handle = |name: &str| {
            format!(
                "{name}{}.test",
                &uuid::Uuid::new_v4().simple().to_string()[..6]
            )
        };
        let mut dids = Vec::new();
        for (i, agent) in self.agents.iter().enumerate() {
            let account = accounts::create_on_pds(&self.http, &pds, &handle(&format!("agent{i}")))
                .await
                .expect("an account on the local PDS");
            accounts::store(
                &self.clients.secrets,
                &accounts::secret_name(self.names.stage(), *agent, "bluesky"),
                account.secret(),
            )
            .await
            .expect("the account's secret stored");
            dids.push(account.did);
        }
        let reader = Reader::create(&self.http, &pds, &handle("reader"))
            .await
            .expect("a reader on the local PDS");
        let mut parents = Vec::new();
        for i in 0..3 {
            let post = reader
                .post(&format!(
                    "What do you think of the spring collection, part {i}?"
                ))
                .await
                .expect("the reader's post");
            parents.push(post.uri);
        }
        self.bluesky = Some(OnBluesky { pds, dids, parents });
    }

    /// The MCP configuration the runners get: the world over stdio, and on Bluesky the
    /// shipped profile beside it.
    fn mcp_config(&self) -> Value {
        let world = json!({
            "transport": "stdio",
            "command": workspace_bin("chimera-world"),
            "args": ["stdio"],
            "env": {"WORLD_DATABASE_URL": self.db.url(), "RUST_LOG": "warn"},
        });
        if self.bluesky.is_none() {
            return json!({"servers": {"world": world}});
        }
        let shipped = std::fs::read_to_string(repo_root().join("infra/mcp/bluesky.json"))
            .expect("infra/mcp/bluesky.json");
        let mut profile: Value = serde_json::from_str(&shipped).expect("the profile is JSON");
        profile["servers"]["world"] = world;
        profile
    }

    /// Where the runners' logs go (one file per start).
    pub fn log_path(&self, start: usize) -> PathBuf {
        std::env::temp_dir().join(format!(
            "chimera-fault-{}-runner-{start}.log",
            self.names.stage()
        ))
    }

    /// Everything the runners of this fleet logged so far.
    pub fn logs(&self) -> String {
        (0..self.starts)
            .map(|i| std::fs::read_to_string(self.log_path(i)).unwrap_or_default())
            .collect()
    }

    /// Starts `chimera-runner` on this fleet's stage and database, its API on port 0, and waits
    /// for it to listen.
    pub async fn start_runner(&mut self) {
        assert!(self.runner.is_none(), "a runner is already running");
        let mcp = self.mcp_config();
        let log = std::fs::File::create(self.log_path(self.starts)).expect("a log file");
        self.starts += 1;
        let mut cmd = Command::new(workspace_bin("chimera-runner"));
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--wait-secs",
            "1",
            "--sweep-every-secs",
            "5",
            "--concurrency",
            &self.concurrency,
        ])
        .env("DATABASE_URL", self.db.url())
        .env("CHIMERA_STAGE", self.names.stage())
        .env("CHIMERA_MCP_SERVERS", mcp.to_string())
        .env(
            "CHIMERA_JWT_SECRET",
            std::str::from_utf8(TEST_JWT_KEY).unwrap(),
        )
        .env("RUST_LOG", "info")
        // The fault suite measures the conveyor: templates draft, nothing calls a model.
        .env("CHIMERA_LLM", "none")
        .envs(
            self.runner_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true);
        let mut child = cmd.spawn().expect("starting chimera-runner");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let api = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines
                .next_line()
                .await
                .expect("reading the runner's stdout")
            {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return addr.to_owned();
                }
            }
            panic!("the runner exited before listening: {}", self.logs());
        })
        .await
        .expect("the runner listened within 60 s");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.runner = Some(Runner { child, api });
    }

    /// Kills the runner with SIGKILL: no batch finishes, nothing is flushed or released.
    pub async fn kill_runner(&mut self) {
        let mut runner = self.runner.take().expect("a runner is running");
        runner.child.start_kill().expect("sending SIGKILL");
        runner.child.wait().await.expect("the runner exits");
    }

    fn api(&self) -> &str {
        &self.runner.as_ref().expect("a runner is running").api
    }

    pub fn token(&self, roles: &[&str]) -> String {
        sign_token(self.tenant, "fault-suite", roles)
    }

    /// Submits a goal over HTTP.
    pub async fn submit(&self, agent: usize, kind: &str, text: &str, constraints: Value) -> GoalId {
        let response = self
            .http
            .post(format!("{}/goals", self.api()))
            .bearer_auth(self.token(&["operator"]))
            .json(
                &json!({"agent_id": self.agents[agent].0, "kind": kind, "text": text,
                          "constraints": constraints}),
            )
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

    /// `n` goals spread over the agents: campaigns (research, draft, media, publish), replies and
    /// paid actions (held for a human: finance is sensitive by default).
    pub async fn submit_mix(&self, n: usize) -> Vec<GoalId> {
        let mut goals = Vec::with_capacity(n);
        let (post_on, reply_on) = match &self.bluesky {
            Some(_) => ("bluesky", "bluesky"),
            None => ("instagram", "x"),
        };
        for i in 0..n {
            let agent = i % self.agents.len();
            let parent = match &self.bluesky {
                Some(network) => network.parents[i % network.parents.len()].clone(),
                None => format!("post-{i}"),
            };
            let goal = match i % 3 {
                0 => {
                    self.submit(
                        agent,
                        "campaign",
                        // Ten words: the drafting tool rates such a brief 0.97.
                        "retro gaming night with friends, snacks and classic consoles downtown",
                        json!({"platforms": [post_on]}),
                    )
                    .await
                }
                1 => {
                    self.submit(
                        agent,
                        "reply",
                        "thanks for the kind words about our new spring collection launch",
                        json!({"platforms": [reply_on], "in_reply_to": parent}),
                    )
                    .await
                }
                _ => {
                    self.submit(
                        agent,
                        "paid_action",
                        "pay the photographer",
                        json!({"pay_to": "photo-studio", "amount_cents": 100 + i as i64}),
                    )
                    .await
                }
            };
            goals.push(goal);
        }
        goals
    }

    /// Approves, over HTTP, every pending review whose task waits for it, one after the other;
    /// returns how many it found (an approval may answer 409: decided meanwhile, or the state
    /// moved and the task is replanned, to be held again).
    pub async fn approve_held(&self) -> usize {
        let held: Vec<(uuid::Uuid, String, i32)> = sqlx::query_as(
            "select v.id, v.artifact_hash, v.policy_version from reviews v join tasks t on t.id = v.task_id
             where v.status = 'pending' and t.status = 'awaiting_review'",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        for (id, hash, policy) in &held {
            let response = self
                .http
                .post(format!("{}/reviews/{id}/approve", self.api()))
                .bearer_auth(self.token(&["reviewer"]))
                .json(&json!({"artifact_hash": hash, "policy_version": policy}))
                .send()
                .await
                .expect("POST /reviews/{id}/approve");
            match response.status().as_u16() {
                200 | 409 => {}
                other => panic!(
                    "approving {id} answered {other}: {}",
                    response.text().await.unwrap_or_default()
                ),
            }
        }
        held.len()
    }

    /// Goals not settled yet, with their status.
    pub async fn unsettled(&self, goals: &[GoalId]) -> Vec<(uuid::Uuid, String)> {
        let ids: Vec<uuid::Uuid> = goals.iter().map(|g| g.0).collect();
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
        rows.into_iter()
            .filter(|(_, status, moving)| !SETTLED.contains(&status.as_str()) || *moving > 0)
            .map(|(id, status, _)| (id, status))
            .collect()
    }

    /// Waits until every goal is settled, approving what is held on the way, until nothing
    /// moves and no goal waits for a human. Returns the goals' statuses.
    pub async fn run_to_the_end(&self, goals: &[GoalId], wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        loop {
            let found = self.approve_held().await;
            let unsettled = self.unsettled(goals).await;
            if found == 0 && unsettled.is_empty() {
                // Nothing moved when it was looked at: nothing can have come to wait since.
                let held: i64 = sqlx::query_scalar(
                    "select count(*) from reviews v join tasks t on t.id = v.task_id
                     where v.status = 'pending' and t.status = 'awaiting_review'",
                )
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
                if held == 0 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "goals still moving after {wait:?}: {unsettled:?}\nrunner logs (tail):\n{}",
                tail(&self.logs(), 60)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let ids: Vec<uuid::Uuid> = goals.iter().map(|g| g.0).collect();
        let rows: Vec<(uuid::Uuid, String)> =
            sqlx::query_as("select id, status::text from goals where id = any($1)")
                .bind(&ids)
                .fetch_all(&self.db.pool)
                .await
                .unwrap();
        ids.iter()
            .map(|id| rows.iter().find(|r| r.0 == *id).unwrap().1.clone())
            .collect()
    }

    /// Work in flight: (task, attempt) of every queued or retrying task, and the goals not
    /// planned yet.
    pub async fn in_flight(&self) -> (Vec<(uuid::Uuid, i32)>, Vec<uuid::Uuid>) {
        let tasks = sqlx::query_as(
            "select id, attempt from tasks where status in ('queued', 'running', 'retrying')",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        let goals = sqlx::query_scalar("select id from goals where status = 'received'")
            .fetch_all(&self.db.pool)
            .await
            .unwrap();
        (tasks, goals)
    }

    /// How long until every piece of work that was in flight made progress: a task has a
    /// result for its attempt, or moved on; a goal was planned.
    pub async fn resumed(
        &self,
        (tasks, goals): &(Vec<(uuid::Uuid, i32)>, Vec<uuid::Uuid>),
        since: Instant,
        wait: Duration,
    ) -> Duration {
        let pool = &self.db.pool;
        let task_ids: Vec<uuid::Uuid> = tasks.iter().map(|t| t.0).collect();
        let attempts: Vec<i32> = tasks.iter().map(|t| t.1).collect();
        eventually(wait, "work in flight resumed", || {
            let (task_ids, attempts, goals) = (task_ids.clone(), attempts.clone(), goals.clone());
            async move {
                let stuck: Vec<(uuid::Uuid,)> = sqlx::query_as(
                    "select t.id from unnest($1::uuid[], $2::int[]) as w (id, attempt)
                     join tasks t on t.id = w.id
                     where t.attempt = w.attempt and t.status in ('queued', 'running', 'retrying')
                       and not exists (select 1 from results r where r.task_id = t.id and r.attempt = t.attempt)",
                )
                .bind(&task_ids)
                .bind(&attempts)
                .fetch_all(pool)
                .await
                .map_err(|e| e.to_string())?;
                let unplanned: i64 = sqlx::query_scalar(
                    "select count(*) from goals where id = any($1) and status = 'received'",
                )
                .bind(&goals)
                .fetch_one(pool)
                .await
                .map_err(|e| e.to_string())?;
                if stuck.is_empty() && unplanned == 0 {
                    Ok(())
                } else {
                    Err(format!("{} tasks and {unplanned} goals not resumed", stuck.len()))
                }
            }
        })
        .await;
        since.elapsed()
    }

    /// What the queues hold, as the sweep reads it.
    pub async fn backlog(&self) -> chimera_store::reconcile::Backlog {
        let read_at = Some(chrono::Utc::now());
        let queues = chimera_aws::queues::Queues::new(self.clients.clone(), self.names.clone());
        let depth = |queue| {
            let queues = &queues;
            async move { Some(queues.backlog(queue).await.expect("a queue's depth")) }
        };
        chimera_store::reconcile::Backlog {
            goal: depth(Queue::Goal).await,
            task: depth(Queue::Task).await,
            review: depth(Queue::Review).await,
            read_at,
        }
    }

    /// Messages in `queue` or its DLQ: visible plus in flight.
    pub async fn depth(&self, queue: Queue, dead_letter: bool) -> i64 {
        let name = if dead_letter {
            self.names.dead_letter_queue(queue)
        } else {
            self.names.queue(queue)
        };
        queue_depth(&self.clients, &name).await
    }

    /// The bodies in `queue`'s DLQ (received and left there).
    pub async fn dead_letters(&self, queue: Queue) -> Vec<String> {
        let url = queue_url(&self.clients, &self.names.dead_letter_queue(queue))
            .await
            .unwrap();
        let mut bodies = Vec::new();
        loop {
            let got = self
                .clients
                .sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .visibility_timeout(30)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            if got.messages().is_empty() {
                return bodies;
            }
            bodies.extend(
                got.messages()
                    .iter()
                    .map(|m| m.body().unwrap_or_default().to_owned()),
            );
        }
    }

    /// The invariants every fault must leave true; returns the figures.
    pub async fn invariants(&self, goals: &[GoalId]) -> Figures {
        let pool = &self.db.pool;
        let scalar = |sql: &'static str| async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        };
        let stuck = self.unsettled(goals).await;
        assert!(stuck.is_empty(), "stuck goals: {stuck:?}");
        let (records, matched) = self.on_the_network().await;
        let mut figures = Figures {
            goals: goals.len(),
            completed: scalar("select count(*) from goals where status = 'completed'").await,
            approved_effects: scalar(
                "select count(*) from reviews where decision in ('approve', 'edit_approve', 'auto_approve')
                   and effect_sha256 is not null",
            )
            .await,
            effects_performed: scalar(
                "select (select count(*) from world.posts) + (select count(*) from world.transfers)",
            )
            .await,
            effects_matched: scalar(
                "select count(*) from reviews v
                 where v.decision in ('approve', 'edit_approve', 'auto_approve') and v.effect_sha256 is not null
                   and (exists (select 1 from world.posts p where p.idempotency_key = 'approval:' || v.id)
                        or exists (select 1 from world.transfers x where x.idempotency_key = 'approval:' || v.id))",
            )
            .await,
            commits: scalar("select count(*) from commits").await,
            committed_tasks: scalar("select count(*) from tasks where status = 'committed'").await,
            ledger_spent: scalar(
                "select coalesce(sum(amount_micros) / 10000, 0)::bigint from ledger
                 where kind = 'spend' and category = 'transfer'",
            )
            .await,
            transferred: scalar(
                "select coalesce(sum(amount_cents), 0)::bigint from world.transfers",
            )
            .await,
            approved_spend: scalar(
                "select coalesce(sum((t.inputs -> 'arguments' ->> 'amount_cents')::bigint), 0)::bigint
                 from tasks t join reviews v on v.id = t.approval_id
                 where t.kind = 'execute' and t.inputs ->> 'action' = 'wallet.transfer'
                   and v.decision in ('approve', 'edit_approve', 'auto_approve')",
            )
            .await,
            dead_letters: [
                self.depth(Queue::Goal, true).await,
                self.depth(Queue::Task, true).await,
                self.depth(Queue::Review, true).await,
            ],
            unsent_outbox: scalar("select count(*) from outbox where sent_at is null").await,
            on_bluesky: 0,
        };
        figures.effects_performed += records;
        figures.effects_matched += matched;
        figures.on_bluesky = records;
        assert_eq!(
            figures.effects_performed, figures.approved_effects,
            "effects performed == approved effects: {figures:?}"
        );
        assert_eq!(
            figures.effects_matched, figures.approved_effects,
            "each approval performed once: {figures:?}"
        );
        assert_eq!(
            figures.commits, figures.committed_tasks,
            "commits == committed tasks: {figures:?}"
        );
        assert_eq!(
            figures.ledger_spent, figures.approved_spend,
            "ledger == approved spend: {figures:?}"
        );
        assert_eq!(
            figures.transferred, figures.approved_spend,
            "money moved == approved spend: {figures:?}"
        );
        figures
    }

    /// On Bluesky: the agents' records on the PDS (its own listing), and how many approvals
    /// the ledger confirmed with one of those records; (0, 0) in the world.
    async fn on_the_network(&self) -> (i64, i64) {
        let Some(network) = &self.bluesky else {
            return (0, 0);
        };
        let mut uris = std::collections::HashSet::new();
        for did in &network.dids {
            let posts = accounts::records_of(&self.http, &network.pds, did, "app.bsky.feed.post")
                .await
                .expect("the agent's records");
            uris.extend(posts.into_iter().map(|p| p.uri));
        }
        let confirmed: Vec<String> = sqlx::query_scalar(
            "select f.platform_ref from reviews v join effects f on f.approval_id = v.id
             where v.decision in ('approve', 'edit_approve', 'auto_approve')
               and f.state = 'confirmed' and f.platform = 'bluesky'",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        let matched = confirmed.iter().filter(|uri| uris.contains(*uri)).count();
        (uris.len() as i64, matched as i64)
    }

    /// Stops the runner (if any) and drops the database.
    pub async fn stop(mut self) {
        if let Some(mut runner) = self.runner.take() {
            let _ = runner.child.start_kill();
            let _ = runner.child.wait().await;
        }
        self.db.drop_db().await;
    }
}

/// What [`Fleet::invariants`] measured (the tests print it whole).
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Figures {
    pub goals: usize,
    pub completed: i64,
    pub approved_effects: i64,
    pub effects_performed: i64,
    pub effects_matched: i64,
    pub commits: i64,
    pub committed_tasks: i64,
    pub ledger_spent: i64,
    pub transferred: i64,
    pub approved_spend: i64,
    /// Goal, task and review DLQs.
    pub dead_letters: [i64; 3],
    pub unsent_outbox: i64,
    /// Of the effects performed, the records on the Bluesky network's PDS.
    pub on_bluesky: i64,
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
