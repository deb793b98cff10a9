//! Operator work over the HITL API: agents, budgets, goals and reviews. Human output by default,
//! the API's JSON with `--json`; exit codes in [`crate::client::exit`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Api, Exit, exit};

#[derive(Debug, Subcommand)]
pub enum Agents {
    /// Onboard an agent from its SOUL.md and AGENTS.md.
    Create {
        #[arg(long)]
        handle: String,
        #[arg(long)]
        display_name: String,
        /// A platform it posts on (repeat for more).
        #[arg(long = "platform", required = true)]
        platforms: Vec<String>,
        /// The persona document.
        #[arg(long, value_name = "FILE")]
        soul: PathBuf,
        /// The policy document.
        #[arg(long, value_name = "FILE")]
        agents: PathBuf,
    },
    /// List agents, by handle.
    List {
        /// active, paused or retired.
        #[arg(long)]
        status: Option<String>,
        /// Handles or display names containing this.
        #[arg(long)]
        search: Option<String>,
    },
    /// An agent's documents, versions, budget and work.
    Show { agent: String },
    /// A new version of the agent's persona or policy (a policy change re-judges its held items).
    Update {
        agent: String,
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "agents",
            required_unless_present = "agents"
        )]
        soul: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        agents: Option<PathBuf>,
        /// The version the edit was made from (refused if another is current).
        #[arg(long)]
        base_version: Option<i32>,
    },
    /// Stop the agent's new work (new goals are refused; its goals wait).
    Pause { agent: String },
    /// Restart it: its waiting goals go on.
    Resume { agent: String },
}

#[derive(Debug, Subcommand)]
pub enum Budgets {
    /// Open the agent's budget.
    Set {
        agent: String,
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long)]
        balance_cents: i64,
    },
    /// Add money once per key (the same key again adds nothing).
    Topup {
        agent: String,
        #[arg(long)]
        amount_cents: i64,
        /// The top-up's idempotency key.
        #[arg(long)]
        key: String,
        #[arg(long)]
        memo: Option<String>,
    },
    /// The agent's ledger, newest first.
    Ledger {
        agent: String,
        /// inference, tool, transfer or top_up.
        #[arg(long)]
        category: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Rows older than this row id (the previous page's next_before).
        #[arg(long)]
        before: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Goals {
    /// Submit a goal.
    Submit {
        agent: String,
        /// campaign, reply or paid_action.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        text: String,
        #[arg(long = "platform")]
        platforms: Vec<String>,
        #[arg(long)]
        in_reply_to: Option<String>,
        #[arg(long)]
        pay_to: Option<String>,
        #[arg(long)]
        amount_cents: Option<i64>,
        /// Makes a retried submission return the same goal.
        #[arg(long)]
        key: Option<String>,
    },
    /// List goals, newest first.
    List {
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// A goal with its tasks, results and decisions.
    Show { goal: String },
    /// Follow a goal until it settles: exit 0 completed, 8 failed or cancelled, 9 timed out.
    Watch {
        goal: String,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Cancel a goal (released effects are not revoked; the answer names them).
    Cancel { goal: String },
}

#[derive(Debug, Subcommand)]
pub enum Reviews {
    /// The pending queue.
    List {
        #[arg(long)]
        agent: Option<String>,
        /// sensitive, medium_confidence, missing_disclosure, financial or failed_after_retries.
        #[arg(long)]
        risk: Option<String>,
    },
    /// A review card.
    Show { review: String },
    /// Approve what the card shows now (its artifact hash and policy version).
    Approve { review: String },
    /// Reject, with the reason.
    Reject {
        review: String,
        #[arg(long)]
        reason: String,
    },
    /// Edit the proposal's text (or a transfer's memo), then approve.
    Edit {
        review: String,
        #[arg(long, required_unless_present = "memo")]
        text: Option<String>,
        #[arg(long)]
        memo: Option<String>,
    },
}

/// Prints `value` as JSON, or as `human` says.
fn out(json_output: bool, value: &Value, human: impl FnOnce(&Value)) {
    if json_output {
        println!("{value}");
    } else {
        human(value);
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn read(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// An agent's id from an id (as the API writes ids) or a handle.
async fn agent_id(api: &Api, agent: &str) -> Result<String> {
    if uuid::Uuid::parse_str(agent).is_ok_and(|id| id.hyphenated().to_string() == agent) {
        return Ok(agent.to_owned());
    }
    // Handles containing this one, by handle, a page at a time.
    let mut offset = 0;
    loop {
        let page = api
            .get(&format!(
                "/agents?search={}&limit=200&offset={offset}",
                urlencode(agent)
            ))
            .await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if let Some(id) = items
            .iter()
            .find(|a| a["handle"] == agent)
            .and_then(|a| a["id"].as_str())
        {
            return Ok(id.to_owned());
        }
        if items.len() < 200 {
            bail!(Exit(
                exit::NOT_FOUND,
                format!("no agent with the handle {agent:?}")
            ));
        }
        offset += 200;
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

pub async fn agents(api: &Api, json_output: bool, command: Agents) -> Result<()> {
    match command {
        Agents::Create {
            handle,
            display_name,
            platforms,
            soul,
            agents,
        } => {
            let body = json!({"handle": handle, "display_name": display_name, "platforms": platforms,
                              "soul_md": read(&soul)?, "agents_md": read(&agents)?});
            let created = api.send(Method::POST, "/agents", Some(&body), None).await?;
            out(json_output, &created, |c| {
                println!(
                    "agent {} ({}) onboarded: persona v{}, policy v{}",
                    s(&c["handle"]),
                    s(&c["agent_id"]),
                    c["persona_version"],
                    c["policy_version"]
                )
            });
        }
        Agents::List { status, search } => {
            let page = api
                .get(&format!(
                    "/agents{}",
                    query(&[
                        ("status", status),
                        ("search", search),
                        ("limit", Some("200".into()))
                    ])
                ))
                .await?;
            out(json_output, &page, |p| {
                for a in p["items"].as_array().into_iter().flatten() {
                    println!(
                        "{:<20} {:<8} persona v{:<3} policy v{:<3} {}  {}",
                        s(&a["handle"]),
                        s(&a["status"]),
                        a["persona_version"],
                        a["policy_version"],
                        s(&a["id"]),
                        a["display_name"].as_str().unwrap_or("")
                    );
                }
            });
        }
        Agents::Show { agent } => {
            let id = agent_id(api, &agent).await?;
            let view = api.get(&format!("/agents/{id}")).await?;
            out(json_output, &view, |v| {
                println!("{} ({}) {}", s(&v["handle"]), s(&v["id"]), s(&v["status"]));
                println!("  display name  {}", s(&v["display_name"]));
                println!("  platforms     {}", v["platforms"]);
                println!(
                    "  persona       v{} ({})",
                    v["persona_version"],
                    s(&v["persona"]["voice"])
                );
                println!("  policy        v{}", v["policy_version"]);
                println!("  balance       {} cents", v["balance_cents"]);
                println!(
                    "  goals open    {}, held items {}",
                    v["goals_in_flight"], v["held_items"]
                );
            });
        }
        Agents::Update {
            agent,
            soul,
            agents,
            base_version,
        } => {
            let id = agent_id(api, &agent).await?;
            let (what, file) = match (soul, agents) {
                (Some(soul), _) => ("persona", soul),
                (None, Some(agents)) => ("policy", agents),
                (None, None) => bail!("give --soul or --agents"),
            };
            let body = json!({"document": read(&file)?, "base_version": base_version});
            let done = api
                .send(
                    Method::PUT,
                    &format!("/agents/{id}/{what}"),
                    Some(&body),
                    None,
                )
                .await?;
            out(json_output, &done, |d| {
                println!("{what} v{} stored ({})", d["version"], s(&d["sha256"]));
                if d["rejudging"].as_u64().unwrap_or(0) > 0 {
                    println!("{} held items are judged again under it", d["rejudging"]);
                }
            });
        }
        Agents::Pause { agent } => status(api, json_output, &agent, "pause").await?,
        Agents::Resume { agent } => status(api, json_output, &agent, "resume").await?,
    }
    Ok(())
}

async fn status(api: &Api, json_output: bool, agent: &str, action: &str) -> Result<()> {
    let id = agent_id(api, agent).await?;
    let done = api
        .send(Method::POST, &format!("/agents/{id}/{action}"), None, None)
        .await?;
    out(json_output, &done, |d| {
        println!(
            "{agent} is {}{}",
            s(&d["status"]),
            if d["changed"] == false {
                " (already)"
            } else {
                ""
            }
        )
    });
    Ok(())
}

pub async fn budgets(api: &Api, json_output: bool, command: Budgets) -> Result<()> {
    match command {
        Budgets::Set {
            agent,
            currency,
            balance_cents,
        } => {
            let id = agent_id(api, &agent).await?;
            let body = json!({"currency": currency, "balance_cents": balance_cents});
            let done = api
                .send(
                    Method::PUT,
                    &format!("/agents/{id}/budget"),
                    Some(&body),
                    None,
                )
                .await?;
            out(json_output, &done, |d| {
                println!("{agent}: budget opened with {} cents", d["balance_cents"])
            });
        }
        Budgets::Topup {
            agent,
            amount_cents,
            key,
            memo,
        } => {
            let id = agent_id(api, &agent).await?;
            let body = json!({"amount_cents": amount_cents, "memo": memo});
            let done = api
                .send(
                    Method::POST,
                    &format!("/agents/{id}/budget/top-ups"),
                    Some(&body),
                    Some(&key),
                )
                .await?;
            out(json_output, &done, |d| {
                let note = if d["duplicate"] == true {
                    " (this key was used before: nothing added)"
                } else {
                    ""
                };
                println!("{agent}: balance {} cents{note}", d["balance_cents"]);
            });
        }
        Budgets::Ledger {
            agent,
            category,
            limit,
            before,
        } => {
            let id = agent_id(api, &agent).await?;
            let page = api
                .get(&format!(
                    "/agents/{id}/ledger{}",
                    query(&[
                        ("category", category),
                        ("limit", Some(limit.to_string())),
                        ("before", before.map(|b| b.to_string())),
                    ])
                ))
                .await?;
            out(json_output, &page, |p| {
                // Amounts are micros; shown as cents with their fraction.
                let cents = |v: &Value| v.as_i64().map(chimera_core::money::show);
                for e in p["items"].as_array().into_iter().flatten() {
                    println!(
                        "{:>8} {} {:<9} {:<7} {:>16} -> {:>16}  {}",
                        e["id"],
                        s(&e["created_at"]),
                        s(&e["category"]),
                        s(&e["kind"]),
                        cents(&e["amount_micros"]).unwrap_or_default(),
                        cents(&e["balance_after_micros"]).unwrap_or_default(),
                        e["memo"].as_str().unwrap_or("")
                    );
                }
                if let Some(next) = p["next_before"].as_i64() {
                    println!("(more: --before {next})");
                }
            });
        }
    }
    Ok(())
}

pub async fn goals(api: &Api, json_output: bool, command: Goals) -> Result<()> {
    match command {
        Goals::Submit {
            agent,
            kind,
            text,
            platforms,
            in_reply_to,
            pay_to,
            amount_cents,
            key,
        } => {
            let id = agent_id(api, &agent).await?;
            let mut constraints = serde_json::Map::new();
            if !platforms.is_empty() {
                constraints.insert("platforms".into(), json!(platforms));
            }
            for (name, value) in [
                ("in_reply_to", in_reply_to.map(Value::from)),
                ("pay_to", pay_to.map(Value::from)),
                ("amount_cents", amount_cents.map(Value::from)),
            ] {
                if let Some(value) = value {
                    constraints.insert(name.into(), value);
                }
            }
            let body =
                json!({"agent_id": id, "kind": kind, "text": text, "constraints": constraints});
            let done = api
                .send(Method::POST, "/goals", Some(&body), key.as_deref())
                .await?;
            out(json_output, &done, |d| {
                println!("goal {} {}", s(&d["goal_id"]), s(&d["status"]))
            });
        }
        Goals::List {
            agent,
            status,
            kind,
            limit,
        } => {
            let agent = match agent {
                Some(a) => Some(agent_id(api, &a).await?),
                None => None,
            };
            let page = api
                .get(&format!(
                    "/goals{}",
                    query(&[
                        ("agent", agent),
                        ("status", status),
                        ("kind", kind),
                        ("limit", Some(limit.to_string())),
                    ])
                ))
                .await?;
            out(json_output, &page, |p| {
                for g in p["items"].as_array().into_iter().flatten() {
                    println!(
                        "{} {:<15} {:<11} {:<12} {}",
                        s(&g["id"]),
                        s(&g["status"]),
                        s(&g["kind"]),
                        s(&g["agent_handle"]),
                        s(&g["text"])
                    );
                }
            });
        }
        Goals::Show { goal } => {
            let view = api.get(&format!("/goals/{goal}")).await?;
            out(json_output, &view, print_goal);
        }
        Goals::Watch { goal, timeout_secs } => {
            watch(api, json_output, &goal, Duration::from_secs(timeout_secs)).await?
        }
        Goals::Cancel { goal } => {
            let done = api
                .send(Method::POST, &format!("/goals/{goal}/cancel"), None, None)
                .await?;
            out(json_output, &done, |d| {
                println!(
                    "goal {} {}: {} tasks cancelled, {} held items closed",
                    s(&d["goal_id"]),
                    s(&d["status"]),
                    d["cancelled_tasks"],
                    d["closed_reviews"]
                );
                for e in d["effects_not_revoked"].as_array().into_iter().flatten() {
                    println!("  not revoked: {} ({})", s(&e["action"]), s(&e["status"]));
                }
            });
        }
    }
    Ok(())
}

fn print_goal(g: &Value) {
    println!(
        "goal {} {} ({})",
        s(&g["id"]),
        s(&g["status"]),
        s(&g["kind"])
    );
    for t in g["tasks"].as_array().into_iter().flatten() {
        println!(
            "  {:<12} {:<15} attempt {}/{}{}",
            s(&t["kind"]),
            s(&t["status"]),
            t["attempt"],
            t["max_attempts"],
            t["feedback"]
                .as_str()
                .map(|f| format!("  ({f})"))
                .unwrap_or_default()
        );
    }
}

/// Follows the goal's events (`GET /goals/{id}/events`) until it settles, printing each
/// task's changes as they happen (with `--json`, each new state of the goal as one line).
async fn watch(api: &Api, json_output: bool, goal: &str, timeout: Duration) -> Result<()> {
    let until = tokio::time::Instant::now() + timeout;
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut settled: Option<String> = None;
    loop {
        let timed_out = api
            .events(&format!("/goals/{goal}/events"), until, |name, view| {
                if !matches!(name, "goal" | "settled") {
                    return true; // `timeout`: the server ends this stream, we open another
                }
                let states: Vec<(String, String)> = view["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        (
                            format!("{} {}", s(&t["kind"]), s(&t["id"])),
                            format!("{} attempt {}", s(&t["status"]), t["attempt"]),
                        )
                    })
                    .chain([("goal".to_owned(), s(&view["status"]).to_owned())])
                    .collect();
                if states != seen {
                    if json_output {
                        println!("{view}");
                    } else {
                        for (what, state) in &states {
                            if !seen.contains(&(what.clone(), state.clone())) {
                                println!(
                                    "{} {what}: {state}",
                                    chrono::Utc::now().format("%H:%M:%S")
                                );
                            }
                        }
                    }
                    seen = states;
                }
                if name == "settled" {
                    settled = Some(s(&view["status"]).to_owned());
                    return false;
                }
                true
            })
            .await?;
        match settled.as_deref() {
            Some("completed") => return Ok(()),
            Some(status) => bail!(Exit(exit::GOAL_FAILED, format!("goal {goal} {status}"))),
            None if timed_out || tokio::time::Instant::now() >= until => bail!(Exit(
                exit::TIMEOUT,
                format!("goal {goal} not settled after {timeout:?}")
            )),
            // The stream ended (the server's time limit): follow a new one.
            None => {}
        }
    }
}

pub async fn reviews(api: &Api, json_output: bool, command: Reviews) -> Result<()> {
    match command {
        Reviews::List { agent, risk } => {
            let agent = match agent {
                Some(a) => Some(agent_id(api, &a).await?),
                None => None,
            };
            let page = api
                .get(&format!(
                    "/reviews{}",
                    query(&[
                        ("agent", agent),
                        ("risk", risk),
                        ("limit", Some("100".into()))
                    ])
                ))
                .await?;
            out(json_output, &page, |p| {
                for r in p["items"].as_array().into_iter().flatten() {
                    println!(
                        "{} {:<8} v{} {:<30} {}",
                        s(&r["id"]),
                        s(&r["task_kind"]),
                        r["policy_version"],
                        r["risk_types"]
                            .as_array()
                            .map(|t| t.iter().map(s).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                        s(&r["preview"])
                    );
                }
            });
        }
        Reviews::Show { review } => {
            let card = api.get(&format!("/reviews/{review}")).await?;
            out(json_output, &card, |c| {
                println!(
                    "review {} ({}) policy v{}",
                    s(&c["id"]),
                    s(&c["status"]),
                    c["policy_version"]
                );
                println!("  {}", s(&c["judge_reasoning"]));
                println!("  artifact {}", s(&c["artifact_hash"]));
            });
        }
        Reviews::Approve { review } => {
            decide(api, json_output, &review, "approve", json!({})).await?
        }
        Reviews::Reject { review, reason } => {
            decide(
                api,
                json_output,
                &review,
                "reject",
                json!({"reason": reason}),
            )
            .await?
        }
        Reviews::Edit { review, text, memo } => {
            let mut arguments = serde_json::Map::new();
            if let Some(text) = text {
                arguments.insert("text".into(), json!(text));
            }
            if let Some(memo) = memo {
                arguments.insert("memo".into(), json!(memo));
            }
            decide(
                api,
                json_output,
                &review,
                "edit",
                json!({"arguments": arguments}),
            )
            .await?
        }
    }
    Ok(())
}

/// Decides on what the card shows now: its artifact hash and policy version go with the verdict.
async fn decide(
    api: &Api,
    json_output: bool,
    review: &str,
    verdict: &str,
    extra: Value,
) -> Result<()> {
    let card = api.get(&format!("/reviews/{review}")).await?;
    let mut body =
        json!({"artifact_hash": card["artifact_hash"], "policy_version": card["policy_version"]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let done = api
        .send(
            Method::POST,
            &format!("/reviews/{review}/{verdict}"),
            Some(&body),
            None,
        )
        .await?;
    out(json_output, &done, |d| {
        println!("review {} {}", s(&d["review_id"]), s(&d["decision"]))
    });
    Ok(())
}
