//! `chimera demo --api URL`: seeds a tenant with three agents, submits a mix of goals to a
//! running runner's HITL API over HTTP, shows progress while they run, and ends with a summary
//! of what the swarm did and where to look next.
//!
//! The goals are chosen to exercise every path of the judge: campaigns that auto-approve and
//! publish (two for one agent and platform, so the later one meets a commit conflict and is
//! replanned), a reply that auto-approves, a medium-confidence and a sensitive reply held for
//! review, a low-confidence reply retried until it fails, and payments (one held for a human by
//! the CFO's default policy, one refused by the CFO as over budget).
//!
//! `--platform bluesky` runs the same goals on the local Bluesky network: each agent gets an
//! account on the PDS (its handle from its name, its app password in Secrets Manager where the
//! server profile reads it), a reader account posts what the agents answer, and the agents'
//! posts and replies are real records, counted on the PDS at the end.

use chimera_core::domain::{GoalStatus, TaskStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chimera_core::auth::{Claims, Hs256};
use chimera_core::domain::{AgentId, TenantId};
use chimera_store::PgPool;
use chimera_worker::accounts::{self, Reader};
use serde_json::{Value, json};

/// How long the demo waits for its goals to settle.
const WAIT: Duration = Duration::from_secs(600);

struct Agent {
    id: AgentId,
    handle: &'static str,
    /// Its account on the demo's Bluesky network, when it runs there.
    did: Option<String>,
}

/// Where the demo's agents publish.
pub enum Platform {
    /// `chimera-world`, the project's simulator (the default: fastest).
    World,
    /// The local Bluesky network.
    Bluesky(Box<Bluesky>),
}

/// The local Bluesky network and where the agents' accounts go.
pub struct Bluesky {
    /// The PDS (`CHIMERA_BSKY_PDS_URL`).
    pub pds: String,
    /// The stage whose secrets the server profile reads (`CHIMERA_STAGE`).
    pub stage: String,
    pub clients: chimera_aws::Clients,
}

impl Platform {
    fn name(&self) -> Option<&'static str> {
        match self {
            Self::World => None,
            Self::Bluesky(_) => Some("bluesky"),
        }
    }
}

/// A handle on the local network for `name`, unique to this run.
fn handle_for(name: &str) -> String {
    format!(
        "{name}{}.test",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// A token for the local HITL API, signed with `CHIMERA_JWT_SECRET` (as the runner checks it).
pub fn mint(sub: &str, tenant: uuid::Uuid, roles: &[&str], ttl_secs: i64) -> Result<String> {
    let secret = std::env::var("CHIMERA_JWT_SECRET")
        .context("CHIMERA_JWT_SECRET is not set (scripts/demo sets one for the runner)")?;
    let key = Hs256::new(secret.into_bytes()).map_err(anyhow::Error::msg)?;
    let now = chrono::Utc::now().timestamp();
    Ok(key.sign(&Claims {
        sub: sub.to_owned(),
        tenant: tenant.to_string(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        exp: now + ttl_secs,
        iat: Some(now),
        iss: std::env::var("CHIMERA_JWT_ISSUER")
            .ok()
            .filter(|s| !s.is_empty()),
        aud: std::env::var("CHIMERA_JWT_AUDIENCE")
            .ok()
            .filter(|s| !s.is_empty()),
    }))
}

/// The example agents: handle, display name, platforms, SOUL.md, AGENTS.md. Their policies
/// route on the worker's claim: the local stack's model (SmolLM2-135M) drafts and reads every
/// text, but its rubric scores are noise (0 for a good post, 2 on a 0..1 scale); its reading is
/// on each card.
const EXAMPLES: [(&str, &str, &[&str], &str, &str); 3] = [
    (
        "nova",
        "Nova of the lantern workshop",
        &["instagram", "x"],
        include_str!("../../../examples/agents/nova/SOUL.md"),
        include_str!("../../../examples/agents/nova/AGENTS.md"),
    ),
    (
        "rex",
        "Rex, tea importer",
        &["threads", "x"],
        include_str!("../../../examples/agents/rex/SOUL.md"),
        include_str!("../../../examples/agents/rex/AGENTS.md"),
    ),
    (
        "ivy",
        "Ivy from the bank's education team",
        &["x", "linkedin"],
        include_str!("../../../examples/agents/ivy/SOUL.md"),
        include_str!("../../../examples/agents/ivy/AGENTS.md"),
    ),
];

/// One call the demo makes; the answer's JSON, or an error naming the call and the answer.
async fn call(
    http: &reqwest::Client,
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<Value> {
    let response = http
        .execute(request.build()?)
        .await
        .with_context(|| what.to_owned())?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{what}: reading the answer"))?;
    if !status.is_success() {
        bail!("{what} answered {status}: {body}");
    }
    Ok(body)
}

/// A new tenant (as the platform's admin) with the example agents (as its operator) and their
/// budgets (as its admin), all through the API.
async fn onboard(
    http: &reqwest::Client,
    api: &str,
    on: &Platform,
) -> Result<(TenantId, Vec<Agent>)> {
    let platform = mint("demo-platform", uuid::Uuid::nil(), &["platform_admin"], 600)?;
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let created = call(
        http,
        http.post(format!("{api}/tenants"))
            .bearer_auth(&platform)
            .json(&json!({"name": format!("demo-{stamp}")})),
        "POST /tenants",
    )
    .await?;
    let tenant: uuid::Uuid = created["tenant_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("the answer has no tenant_id")?;
    let operator = mint("demo-operator", tenant, &["operator"], 600)?;
    let admin = mint("demo-admin", tenant, &["admin"], 600)?;
    let mut agents = Vec::new();
    for (handle, display_name, platforms, soul, policy) in EXAMPLES {
        let bluesky = ["bluesky"];
        let platforms: &[&str] = if on.name().is_some() {
            &bluesky
        } else {
            platforms
        };
        let created = call(
            http,
            http.post(format!("{api}/agents"))
                .bearer_auth(&operator)
                .json(&json!({
                    "handle": handle, "display_name": display_name, "platforms": platforms,
                    "soul_md": soul, "agents_md": policy,
                })),
            "POST /agents",
        )
        .await?;
        let id: uuid::Uuid = created["agent_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("the answer has no agent_id")?;
        call(
            http,
            http.put(format!("{api}/agents/{id}/budget"))
                .bearer_auth(&admin)
                .json(&json!({"currency": "USD", "balance_cents": 5_000})),
            "PUT /agents/{id}/budget",
        )
        .await?;
        let did = match on {
            Platform::World => None,
            Platform::Bluesky(network) => {
                let account =
                    accounts::create_on_pds(http, &network.pds, &handle_for(handle)).await?;
                accounts::store(
                    &network.clients.secrets,
                    &accounts::secret_name(&network.stage, AgentId(id), "bluesky"),
                    account.secret(),
                )
                .await?;
                println!(
                    "  {handle} is @{} ({}) on the local PDS; its app password is in Secrets Manager",
                    account.handle, account.did
                );
                Some(account.did)
            }
        };
        agents.push(Agent {
            id: AgentId(id),
            handle,
            did,
        });
    }
    Ok((TenantId(tenant), agents))
}

pub async fn run(pool: &PgPool, api: &str, on: Platform) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let health = http
        .get(format!("{api}/health"))
        .send()
        .await
        .with_context(|| format!("the runner's API at {api} does not answer"))?;
    if !health.status().is_success() {
        bail!("{api}/health answered {}", health.status());
    }

    let (tenant, agents) = onboard(&http, api, &on).await?;
    println!(
        "onboarded tenant {} with agents {} from examples/agents (SOUL.md and AGENTS.md, over the API; budget 50.00 USD each)",
        tenant.0,
        agents
            .iter()
            .map(|a| a.handle)
            .collect::<Vec<_>>()
            .join(", ")
    );

    // What the agents answer: a reader's posts on Bluesky, made-up ids in the world.
    let parents: Vec<String> = match &on {
        Platform::World => (101..=104).map(|n| format!("post-{n}")).collect(),
        Platform::Bluesky(network) => {
            let reader = Reader::create(&http, &network.pds, &handle_for("reader")).await?;
            let mut uris = Vec::new();
            for text in [
                "Your tea tasting notes are the kindest thing on my feed.",
                "The new series is great, but the videos are too short!",
                "Who do you think won the city election debate last night?",
                "How do I start saving with a small income?",
            ] {
                uris.push(reader.post(text).await?.uri);
            }
            println!(
                "  a reader (@{}) posted the {} posts the agents answer",
                reader.handle,
                uris.len()
            );
            uris
        }
    };
    let (campaign_platforms, reply_platform): (Value, &str) = match on.name() {
        Some(name) => (json!([name]), name),
        None => (json!(["instagram", "x"]), "x"),
    };
    let only = |default: &str| match on.name() {
        Some(name) => json!([name]),
        None => json!([default]),
    };
    let reply = |to: &str| json!({"platforms": [reply_platform], "in_reply_to": to});
    let goals: Vec<(usize, &str, &str, Value)> = vec![
        (
            0,
            "campaign",
            "retro gaming night",
            json!({"platforms": campaign_platforms}),
        ),
        (
            0,
            "campaign",
            "board game cafe weekend",
            json!({"platforms": only("instagram")}),
        ),
        (
            1,
            "campaign",
            "night trains and lightweight hiking gear",
            json!({"platforms": only("threads")}),
        ),
        (1, "reply", "thanks for the kind words", reply(&parents[0])),
        (
            1,
            "reply",
            "thanks for the feedback on the new series",
            reply(&parents[1]),
        ),
        (
            2,
            "reply",
            "our view on the city election debate",
            reply(&parents[2]),
        ),
        (2, "reply", "thanks for asking", reply(&parents[3])),
        (
            2,
            "paid_action",
            "pay the photographer for the shoot",
            json!({"pay_to": "photo-studio", "amount_cents": 1_500}),
        ),
        (
            0,
            "paid_action",
            "sponsor the whole festival",
            json!({"pay_to": "festival", "amount_cents": 900_000}),
        ),
    ];
    let operator = mint("demo-operator", tenant.0, &["operator"], 3600)?;
    // Two waves: what the campaigns publish is remembered, and the replies and payments that
    // follow are planned with those memories recalled.
    let (first, second): (Vec<_>, Vec<_>) = goals
        .into_iter()
        .partition(|(_, kind, _, _)| *kind == "campaign");
    let started = Instant::now();
    println!("first wave: the campaigns (what gets published is remembered)");
    let mut ids = submit_goals(&http, api, &operator, &agents, &first).await?;
    wait_settled(pool, &ids, started).await?;
    // A person lets a held post out: it is published, and remembered.
    reviewer_at_work(&http, api, pool, tenant.0, &ids).await?;
    println!("\nsecond wave: replies and payments (their plans recall what the agents posted)");
    let later = submit_goals(&http, api, &operator, &agents, &second).await?;
    ids.extend(&later);
    wait_settled(pool, &ids, started).await?;
    let took = started.elapsed();
    reviewer_at_work(&http, api, pool, tenant.0, &later).await?;
    summary(pool, tenant.0, &ids, took, api).await?;
    if let Platform::Bluesky(network) = &on {
        on_the_network(&http, pool, network, &agents, &ids).await?;
    }
    Ok(())
}

/// Submits `goals` (agent index, kind, text, constraints) over the API; returns their ids.
async fn submit_goals(
    http: &reqwest::Client,
    api: &str,
    operator: &str,
    agents: &[Agent],
    goals: &[(usize, &str, &str, Value)],
) -> Result<Vec<uuid::Uuid>> {
    let mut ids = Vec::new();
    for (agent, kind, text, constraints) in goals {
        let response = http
            .post(format!("{api}/goals"))
            .bearer_auth(operator)
            .json(&json!({
                "agent_id": agents[*agent].id.0,
                "kind": kind,
                "text": text,
                "constraints": constraints,
            }))
            .send()
            .await
            .context("POST /goals")?;
        let status = response.status();
        let body: Value = response.json().await.context("reading the answer")?;
        if status.as_u16() != 202 {
            bail!("POST /goals answered {status}: {body}");
        }
        let id: uuid::Uuid = body["goal_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("the answer has no goal_id")?;
        println!(
            "submitted {kind:<11} for {:<4} {id}  {text:?}",
            agents[*agent].handle
        );
        ids.push(id);
    }
    Ok(ids)
}

/// Prints the goals' progress as it changes until every one is settled; fails past [`WAIT`]
/// from `started`.
async fn wait_settled(pool: &PgPool, ids: &[uuid::Uuid], started: Instant) -> Result<()> {
    println!("progress (goals by status; tasks by status):");
    let mut last = String::new();
    loop {
        let (goals_line, settled) = progress(pool, ids).await?;
        if goals_line != last {
            println!("  {:>5.1}s  {goals_line}", started.elapsed().as_secs_f64());
            last = goals_line;
        }
        if settled {
            return Ok(());
        }
        if started.elapsed() > WAIT {
            bail!(
                "the goals did not settle within {WAIT:?}: is the runner running? (see .local/logs/runner.log)"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the Bluesky network holds of the run: each agent's records on the PDS, against the
/// effects the ledger confirmed.
async fn on_the_network(
    http: &reqwest::Client,
    pool: &PgPool,
    network: &Bluesky,
    agents: &[Agent],
    ids: &[uuid::Uuid],
) -> Result<()> {
    println!(
        "
on the local Bluesky network (the PDS's own listing):"
    );
    let mut records = 0;
    for agent in agents {
        let Some(did) = &agent.did else { continue };
        let posts = accounts::records_of(http, &network.pds, did, "app.bsky.feed.post").await?;
        records += posts.len();
        println!("  {:<4} {} post(s) and replies", agent.handle, posts.len());
        for post in posts.iter().take(3) {
            println!("         {}", post.uri);
        }
    }
    let confirmed = count(
        pool,
        "select count(*) from effects f join tasks t on t.approval_id = f.approval_id
         where t.goal_id = any($1) and f.state = 'confirmed' and f.platform = 'bluesky'",
        ids,
    )
    .await?;
    println!(
        "  {records} record(s) for {confirmed} confirmed effect(s) in the ledger{}",
        if records as i64 == confirmed {
            ""
        } else {
            "  (they differ: see .local/logs/runner.log)"
        }
    );
    Ok(())
}

/// Takes `decision` (approve or reject) on review `id` as the card shows it; `Some(message)`
/// when the approval found the state moved (a 409 conflict), any other refusal is an error.
async fn decide(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    id: uuid::Uuid,
    decision: &str,
) -> Result<Option<String>> {
    let card: Value = http
        .get(format!("{api}/reviews/{id}"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut body =
        json!({"artifact_hash": card["artifact_hash"], "policy_version": card["policy_version"]});
    if decision == "reject" {
        body["reason"] = json!("we stay out of elections");
    }
    let response = http
        .post(format!("{api}/reviews/{id}/{decision}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await?;
    println!(
        "  {decision:<7} review {id}  {:?}",
        card["proposal"]["arguments"]["text"]
            .as_str()
            .unwrap_or_default()
    );
    if status.as_u16() == 409 && answer["error"]["code"] == "conflict" {
        return Ok(answer["error"]["message"].as_str().map(str::to_owned));
    }
    if !status.is_success() {
        bail!("{decision} review {id}: {status} {answer}");
    }
    Ok(None)
}

/// A reviewer decides held items of `ids` through the HITL API, as Mission Control does:
/// approves the medium-confidence post (or another clean one; its effect is released once)
/// and rejects a political one.
async fn reviewer_at_work(
    http: &reqwest::Client,
    api: &str,
    pool: &PgPool,
    tenant: uuid::Uuid,
    ids: &[uuid::Uuid],
) -> Result<()> {
    let token = mint("demo-reviewer", tenant, &["reviewer"], 3600)?;
    let pending: Vec<(uuid::Uuid, Vec<String>)> = sqlx::query_as(
        "select v.id, v.risk_types from reviews v join tasks t on t.id = v.task_id
         where t.goal_id = any($1) and v.status = 'pending' order by v.created_at",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let pick = |kind: &str| {
        pending
            .iter()
            .find(|(_, types)| types == &[kind])
            .map(|(id, _)| *id)
    };
    println!("\na reviewer at work (the HITL API, as Mission Control calls it):");
    // The medium-confidence item if there is one, or else any held post that passed the
    // judge's checks (a failed one is surfaced as failed), names no sensitive topic, was not
    // shaped by suspicious inputs and moves no money.
    let mut approved = pick("medium_confidence").or_else(|| {
        pending
            .iter()
            .find(|(_, types)| {
                !types.iter().any(|t| {
                    matches!(
                        t.as_str(),
                        "sensitive" | "financial" | "failed_after_retries" | "suspicious_input"
                    )
                })
            })
            .map(|(id, _)| *id)
    });
    if let Some(id) = pick("sensitive") {
        decide(http, api, &token, id, "reject").await?;
    }
    // An approval finds the state moved if another result of the agent was committed in the
    // meantime: the task is replanned and comes back for review; the reviewer approves again.
    for _ in 0..3 {
        let Some(id) = approved else { break };
        let Some(conflict) = decide(http, api, &token, id, "approve").await? else {
            break;
        };
        println!("    409: {conflict}");
        approved = None;
        let started = Instant::now();
        while approved.is_none() && started.elapsed() < WAIT {
            tokio::time::sleep(Duration::from_millis(200)).await;
            approved = sqlx::query_scalar(
                "select v.id from reviews v join tasks t on t.id = v.task_id
                 where t.id = (select task_id from reviews where id = $1) and v.status = 'pending'",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?;
        }
    }
    let Some(id) = approved else {
        return Ok(());
    };
    // The approved reply is performed by an `execute` task through the swarm.
    let started = Instant::now();
    loop {
        // The effect ledger holds one confirmed effect per approval, whatever the platform.
        let posts: i64 = sqlx::query_scalar(
            "select count(*) from effects where approval_id = $1 and state = 'confirmed'",
        )
        .bind(id)
        .fetch_one(pool)
        .await?;
        let (_, settled) = progress(pool, ids).await?;
        if posts == 1 && settled {
            println!(
                "  the approved post was published once ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > WAIT {
            bail!("the approved post was not published within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One progress line, and whether every goal is settled.
async fn progress(pool: &PgPool, ids: &[uuid::Uuid]) -> Result<(String, bool)> {
    let goals: Vec<(GoalStatus, i64)> = sqlx::query_as(
        "select status, count(*) from goals where id = any($1) group by 1 order by 1",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let tasks: Vec<(TaskStatus, i64)> = sqlx::query_as(
        "select status, count(*) from tasks where goal_id = any($1) group by 1 order by 1",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let moving = tasks
        .iter()
        .filter(|(s, _)| {
            matches!(
                s,
                TaskStatus::Ready | TaskStatus::Queued | TaskStatus::Running | TaskStatus::Retrying
            )
        })
        .map(|(_, n)| n)
        .sum::<i64>();
    let settled = moving == 0
        && goals.iter().all(|(s, _)| {
            matches!(
                s,
                GoalStatus::Completed
                    | GoalStatus::Failed
                    | GoalStatus::Cancelled
                    | GoalStatus::AwaitingReview
            )
        });
    Ok((
        format!("goals: {} | tasks: {}", counts(&goals), counts(&tasks)),
        settled,
    ))
}

/// `3 completed, 1 failed`.
fn counts<S: std::fmt::Display>(rows: &[(S, i64)]) -> String {
    rows.iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn count(pool: &PgPool, sql: &'static str, ids: &[uuid::Uuid]) -> Result<i64> {
    Ok(sqlx::query_scalar(sql).bind(ids).fetch_one(pool).await?)
}

async fn summary(
    pool: &PgPool,
    tenant: uuid::Uuid,
    ids: &[uuid::Uuid],
    took: Duration,
    api: &str,
) -> Result<()> {
    let planned = count(
        pool,
        "select count(*) from tasks where goal_id = any($1) and kind <> 'execute'",
        ids,
    )
    .await?;
    let executed = count(
        pool,
        "select count(*) from results r join tasks t on t.id = r.task_id where t.goal_id = any($1)",
        ids,
    )
    .await?;
    let audit = |action: &'static str| async move {
        let sql: &'static str = match action {
            "commit" => {
                "select count(*) from audit_log where goal_id = any($1) and action in ('judge.commit', 'judge.auto_approve')"
            }
            "hold" => {
                "select count(*) from audit_log where goal_id = any($1) and action = 'judge.hold'"
            }
            "retry" => {
                "select count(*) from audit_log where goal_id = any($1) and action = 'judge.retry'"
            }
            "conflict" => {
                "select count(*) from audit_log where goal_id = any($1) and action in ('judge.conflict', 'review.conflict')"
            }
            _ => "select count(*) from audit_log where goal_id = any($1) and action = 'judge.fail'",
        };
        count(pool, sql, ids).await
    };
    let published = count(
        pool,
        "select count(*) from tasks where goal_id = any($1) and kind = 'execute' and status = 'committed'",
        ids,
    )
    .await?;
    let pending: Vec<(uuid::Uuid, Vec<String>, String)> = sqlx::query_as(
        "select v.id, v.risk_types, v.judge_reasoning from reviews v join tasks t on t.id = v.task_id
         where t.goal_id = any($1) and v.status = 'pending' order by v.created_at",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let goals: Vec<(GoalStatus, i64)> = sqlx::query_as(
        "select status, count(*) from goals where id = any($1) group by 1 order by 1",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;

    println!("\nsummary ({:.1} s)", took.as_secs_f64());
    println!("  goals                 {}", counts(&goals));
    println!("  tasks planned         {planned}");
    println!(
        "  task attempts run     {executed} (each once, through MCP tools; execute tasks included)"
    );
    println!(
        "  auto-approved         {} committed by the judge",
        audit("commit").await?
    );
    println!("  held for review       {}", audit("hold").await?);
    println!("  retried with feedback {}", audit("retry").await?);
    println!("  failed, surfaced      {}", audit("fail").await?);
    println!("  conflicts replanned   {}", audit("conflict").await?);
    println!(
        "  effects performed     {published} (posts, replies and transfers, once per approval)"
    );
    let planners: Vec<(String, i64)> = sqlx::query_as(
        "select coalesce(plan_meta->>'planner', 'none') ||
                case when plan_meta ? 'fallback' then ' (model fell back)' else '' end, count(*)
         from goals where id = any($1) group by 1 order by 1",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let planners: Vec<String> = planners.iter().map(|(p, n)| format!("{p}: {n}")).collect();
    println!("  plans made by         {}", planners.join(", "));
    let (calls, micros): (i64, Option<i64>) = sqlx::query_as(
        "select count(*) filter (where l.kind = 'spend' and l.idempotency_key not like '%:over'),
                sum(case l.kind when 'release' then -l.amount_micros else l.amount_micros end)::bigint
         from ledger l join agents a on a.id = l.agent_id
         where a.tenant_id = $1 and l.category = 'inference'",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await?;
    println!(
        "  model calls charged   {calls} ({} in the agents' ledgers, reservations settled)",
        chimera_core::money::show(micros.unwrap_or(0))
    );
    let (memories, recalled): (i64, i64) = sqlx::query_as(
        "select (select count(*) from memories m join agents a on a.id = m.agent_id
                 where a.tenant_id = $1),
                (select count(*) from goals
                 where id = any($2) and jsonb_array_length(coalesce(plan_meta -> 'memories', '[]')) > 0)",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_one(pool)
    .await?;
    println!(
        "  memories              {memories} written (committed posts and replies), recalled by {recalled} plans"
    );
    if !pending.is_empty() {
        println!("\nwaiting for a human ({}):", pending.len());
        for (id, types, reasoning) in &pending {
            println!("  review {id}  [{}]  {reasoning}", types.join(", "));
        }
    }
    let reviewer = mint("demo-reviewer", tenant, &["reviewer", "operator"], 8 * 3600)?;
    println!("\nwhere to look next:");
    println!("  Mission Control (review, approve, reject, edit): open {api}/ and sign in with");
    println!("    {reviewer}");
    println!(
        "    (a reviewer of this demo's tenant; `chimera token --tenant {tenant} --roles reviewer` mints another)"
    );
    if let Some(first) = ids.first() {
        println!(
            "  curl -s -H \"Authorization: Bearer $TOKEN\" {api}/goals/{first}   a goal with its tasks, results and decisions"
        );
    }
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" {api}/reviews          the pending queue (API: {api}/openapi.json)"
    );
    println!(
        "  logs: .local/logs/runner.log and .local/logs/world.log; stop with: scripts/demo stop"
    );
    Ok(())
}
