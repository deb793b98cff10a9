//! How the agents sound (`scripts/bench voice`): 30 fixed goals over the three example agents
//! (their SOUL.md and AGENTS.md), through the whole swarm with the local stack's model (one
//! call at a time, as the runner has it) and its embedder. The campaigns go first; the replies
//! follow once they settled, so their plans recall what the campaigns published.
//!
//! Per goal it prints who planned (the model, a template and why, or the rules), the text the
//! writer produced (its last attempt), and the judge's signals on it: similarity to the brief
//! (on-topic) and to the persona's examples (on-voice), the model's rubric, the checks that
//! failed. Then the aggregates: the fallback rate (plans the templates made where the model
//! was asked), the schema-invalid rate (model answers that were not a plan), the degenerate
//! rate (texts the gate's degenerate check flags), mean on-topic and on-voice, tokens and cost
//! per goal, recalls. The same table goes to `BENCH_VOICE_OUT` (default `docs/voice-results.md`), so a
//! regression shows in review.
//!
//! A hosted model runs the same goals when `BENCH_VOICE_BASE_URL`, `BENCH_VOICE_MODEL` and
//! `BENCH_VOICE_API_KEY` name an OpenAI-compatible endpoint (its price from
//! `CHIMERA_LLM_PRICES`); it is skipped otherwise, and the output says so.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chimera_core::documents::{Soul, parse_policy};
use chimera_core::gate;
use chimera_llm::LanguageModel;
use chimera_llm::openai::{OpenAiCompatible, OpenAiConfig};
use chimera_tests::swarm::{Swarm, SwarmOptions, local_embedder, local_model};
use serde_json::{Value, json};

/// The example agents: SOUL.md, AGENTS.md.
const AGENTS: [(&str, &str, &str); 3] = [
    (
        "nova",
        include_str!("../../examples/agents/nova/SOUL.md"),
        include_str!("../../examples/agents/nova/AGENTS.md"),
    ),
    (
        "rex",
        include_str!("../../examples/agents/rex/SOUL.md"),
        include_str!("../../examples/agents/rex/AGENTS.md"),
    ),
    (
        "ivy",
        include_str!("../../examples/agents/ivy/SOUL.md"),
        include_str!("../../examples/agents/ivy/AGENTS.md"),
    ),
];

/// The goals: agent, kind, text, the platform of a campaign or the post a reply answers (the
/// world's readers' posts).
const GOALS: [(usize, &str, &str, &str); 30] = [
    (
        0,
        "campaign",
        "spring lanterns are back in the shop",
        "instagram",
    ),
    (0, "campaign", "how we fold a lantern in twelve hours", "x"),
    (0, "campaign", "lanterns for a garden party", "instagram"),
    (0, "campaign", "a workshop evening open to visitors", "x"),
    (
        0,
        "campaign",
        "the paper colours we tried this year",
        "instagram",
    ),
    (
        1,
        "campaign",
        "a first oolong for people new to tea",
        "threads",
    ),
    (1, "campaign", "why the new harvest tastes brighter", "x"),
    (1, "campaign", "three ways to steep green tea", "threads"),
    (1, "campaign", "our stall at the night market", "x"),
    (
        1,
        "campaign",
        "slow mornings with a pot of black tea",
        "threads",
    ),
    (2, "campaign", "a budget for a first apartment", "x"),
    (2, "campaign", "saving a little every week", "linkedin"),
    (2, "campaign", "what a rainy day fund is for", "x"),
    (
        2,
        "campaign",
        "tracking what you spend for one month",
        "linkedin",
    ),
    (2, "campaign", "the bills that come every month", "x"),
    (
        0,
        "reply",
        "thank the reader for the kind words about our lanterns",
        "post-107",
    ),
    (
        0,
        "reply",
        "answer whether we ship our lanterns abroad",
        "post-105",
    ),
    (
        0,
        "reply",
        "thank the reader for the kind words",
        "post-101",
    ),
    (
        0,
        "reply",
        "thank them for the feedback on the series",
        "post-102",
    ),
    (
        0,
        "reply",
        "suggest a lantern for a night outdoors",
        "post-106",
    ),
    (
        1,
        "reply",
        "thank the reader for the tea tasting notes",
        "post-101",
    ),
    (
        1,
        "reply",
        "thank them and say the next videos are longer",
        "post-102",
    ),
    (
        1,
        "reply",
        "stay out of the election debate, politely",
        "post-103",
    ),
    (1, "reply", "say we only know about tea, kindly", "post-104"),
    (
        1,
        "reply",
        "recommend a tea for a first overnight hike",
        "post-106",
    ),
    (
        2,
        "reply",
        "explain how to start saving with a small income",
        "post-104",
    ),
    (
        2,
        "reply",
        "thank the reader for the kind words",
        "post-101",
    ),
    (
        2,
        "reply",
        "decline to comment on the election debate",
        "post-103",
    ),
    (
        2,
        "reply",
        "thank them for the feedback on the series",
        "post-102",
    ),
    (
        2,
        "reply",
        "say we only write about household budgeting",
        "post-105",
    ),
];

/// One goal's outcome.
struct Row {
    agent: &'static str,
    kind: &'static str,
    brief: &'static str,
    status: String,
    planner: String,
    attempts: u64,
    recalled: usize,
    tokens: u64,
    text: String,
    decision: String,
    on_topic: Option<f64>,
    on_voice: Option<f64>,
    rubric: Option<f64>,
    failed: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let mut report = String::new();
    let local = run("local model", local_model()).await;
    report.push_str(&local);
    match hosted() {
        Some(model) => report.push_str(&run("hosted model", model).await),
        None => {
            let skipped = "\n## Hosted model\n\nSkipped: set BENCH_VOICE_BASE_URL, \
                           BENCH_VOICE_MODEL and BENCH_VOICE_API_KEY (an OpenAI-compatible \
                           endpoint, priced in CHIMERA_LLM_PRICES) to run the same goals on it.\n";
            print!("{skipped}");
            report.push_str(skipped);
        }
    }
    let out = std::env::var("BENCH_VOICE_OUT").unwrap_or_else(|_| {
        chimera_tests::repo_root()
            .join("docs/voice-results.md")
            .display()
            .to_string()
    });
    let header = "# Voice: 30 goals through the swarm\n\nWritten by `scripts/bench voice` \
                  (tests/benches/voice.rs); the figures of the last run on this machine.\n";
    std::fs::write(&out, format!("{header}{report}")).expect("writing the results file");
    println!("\nwritten to {out}");
}

/// The hosted model the environment names, if any.
fn hosted() -> Option<Arc<dyn LanguageModel>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (base, model, key) = (
        var("BENCH_VOICE_BASE_URL")?,
        var("BENCH_VOICE_MODEL")?,
        var("BENCH_VOICE_API_KEY")?,
    );
    let mut config = OpenAiConfig::new(base, model);
    config.api_key = Some(key);
    Some(Arc::new(OpenAiCompatible::new(config)))
}

/// The 30 goals with `model`; the markdown report.
async fn run(name: &str, model: Arc<dyn LanguageModel>) -> String {
    let model_id = model.model_id().to_owned();
    let mut swarm = Swarm::new(SwarmOptions {
        agents: 3,
        model: Some(model),
        model_slots: Some(1),
        embedder: Some(local_embedder()),
        ..SwarmOptions::default()
    })
    .await;
    for (i, (handle, soul, agents_md)) in AGENTS.iter().enumerate() {
        let persona = Soul::parse(soul).expect("the example SOUL.md").persona();
        let policy = parse_policy(agents_md, 1).expect("the example AGENTS.md");
        sqlx::query("update agents set persona = $2, handle = $3 where id = $1")
            .bind(swarm.agents[i].0)
            .bind(&persona)
            .bind(handle)
            .execute(&swarm.db.pool)
            .await
            .unwrap();
        sqlx::query("update policies set document = $2 where agent_id = $1")
            .bind(swarm.agents[i].0)
            .bind(serde_json::to_value(&policy).unwrap())
            .execute(&swarm.db.pool)
            .await
            .unwrap();
    }
    swarm.run().await;
    let started = Instant::now();
    let mut ids = Vec::new();
    for wave in ["campaign", "reply"] {
        for (agent, kind, text, at) in GOALS.iter().filter(|g| g.1 == wave) {
            let constraints = match *kind {
                "campaign" => json!({"platforms": [at]}),
                _ => json!({"platforms": ["x"], "in_reply_to": at}),
            };
            ids.push(swarm.submit(*agent, kind, text, constraints).await);
        }
        swarm.settle(&ids, Duration::from_secs(1800)).await;
        println!(
            "{name}: the {wave} wave settled at {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    let took = started.elapsed();
    let mut rows = Vec::new();
    for (id, (agent, kind, brief, _)) in ids.iter().zip(
        GOALS
            .iter()
            .filter(|g| g.1 == "campaign")
            .chain(GOALS.iter().filter(|g| g.1 == "reply")),
    ) {
        rows.push(row(&swarm, id.0, AGENTS[*agent].0, kind, brief).await);
    }
    let (calls, micros): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where kind = 'spend'),
                coalesce(sum(case kind when 'release' then -amount_micros else amount_micros end), 0)::bigint
         from ledger where category = 'inference'",
    )
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    swarm.stop().await;
    render(name, &model_id, &rows, took, calls, micros)
}

async fn row(
    swarm: &Swarm,
    goal: uuid::Uuid,
    agent: &'static str,
    kind: &'static str,
    brief: &'static str,
) -> Row {
    let (status, meta): (String, Option<Value>) =
        sqlx::query_as("select status::text, plan_meta from goals where id = $1")
            .bind(goal)
            .fetch_one(&swarm.db.pool)
            .await
            .unwrap();
    let meta = meta.unwrap_or_default();
    let planner = match (meta["planner"].as_str(), meta["fallback_kind"].as_str()) {
        (Some(p), Some(why)) => format!("{p} ({why})"),
        (Some(p), None) => p.to_owned(),
        _ => "none".to_owned(),
    };
    // The writer's last text: a draft's, or a reply proposal's.
    let written: Option<(String, Option<String>, uuid::Uuid)> = sqlx::query_as(
        "select t.kind::text, r.artifact -> 'artifacts' -> 0 ->> 'inline', t.id
         from results r join tasks t on t.id = r.task_id
         where t.goal_id = $1 and t.kind in ('draft', 'reply')
         order by r.created_at desc limit 1",
    )
    .bind(goal)
    .fetch_optional(&swarm.db.pool)
    .await
    .unwrap();
    let (text, task) = match written {
        Some((kind, Some(inline), task)) if kind == "reply" => (
            serde_json::from_str::<Value>(&inline)
                .ok()
                .and_then(|p| p["arguments"]["text"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            Some(task),
        ),
        Some((_, inline, task)) => (inline.unwrap_or_default(), Some(task)),
        None => (String::new(), None),
    };
    let (decision, reasoning): (String, String) = match task {
        Some(task) => sqlx::query_as(
            "select action, coalesce(reasoning, '') from audit_log
             where task_id = $1 and action like 'judge.%' order by id desc limit 1",
        )
        .bind(task)
        .fetch_optional(&swarm.db.pool)
        .await
        .unwrap()
        .unwrap_or_default(),
        None => Default::default(),
    };
    Row {
        agent,
        kind,
        brief,
        status,
        planner,
        attempts: meta["attempts"].as_u64().unwrap_or(0),
        recalled: meta["memories"].as_array().map_or(0, Vec::len),
        tokens: meta["input_tokens"].as_u64().unwrap_or(0)
            + meta["output_tokens"].as_u64().unwrap_or(0),
        text,
        decision,
        on_topic: signal(&reasoning, "on-topic "),
        on_voice: signal(&reasoning, "on-voice "),
        rubric: signal(&reasoning, "model rubric "),
        failed: failed_checks(&reasoning),
    }
}

/// The number after `name` in the judge's reasoning (`on-topic 0.42 (min ...`).
fn signal(reasoning: &str, name: &str) -> Option<f64> {
    let at = reasoning.find(name)? + name.len();
    let value: String = reasoning[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    value.parse().ok()
}

/// The judge's failed checks, as its reasoning names them ("failed: ...;").
fn failed_checks(reasoning: &str) -> String {
    reasoning
        .split_once("failed: ")
        .map(|(_, rest)| rest.split(';').next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default()
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let all: Vec<f64> = values.collect();
    (!all.is_empty()).then(|| all.iter().sum::<f64>() / all.len() as f64)
}

fn show(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

fn render(
    name: &str,
    model: &str,
    rows: &[Row],
    took: Duration,
    calls: i64,
    micros: i64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n## {name}: {model}\n");
    let _ = writeln!(
        out,
        "| agent | goal | status | planned by | tries | recalled | on-topic | on-voice | rubric | judge | failed checks | text |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let text = chimera_llm::one_line(&r.text, 160).replace('|', "/");
        let _ = writeln!(
            out,
            "| {} | {} {:?} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.agent,
            r.kind,
            r.brief,
            r.status,
            r.planner,
            r.attempts,
            r.recalled,
            show(r.on_topic),
            show(r.on_voice),
            show(r.rubric),
            r.decision.trim_start_matches("judge."),
            r.failed.replace('|', "/"),
            text
        );
    }
    let asked: Vec<&Row> = rows.iter().filter(|r| r.planner != "rules").collect();
    let templates = asked
        .iter()
        .filter(|r| r.planner.starts_with("template"))
        .count();
    let invalid = asked.iter().filter(|r| r.attempts > 1).count();
    let written: Vec<&Row> = rows.iter().filter(|r| !r.text.is_empty()).collect();
    let degenerate = written
        .iter()
        .filter(|r| !gate::degenerate(&r.text).is_empty())
        .count();
    let rate = |n: usize, of: usize| {
        if of == 0 {
            "-".to_owned()
        } else {
            format!("{:.0}% ({n} of {of})", 100.0 * n as f64 / of as f64)
        }
    };
    let tokens: u64 = rows.iter().map(|r| r.tokens).sum();
    let _ = writeln!(out, "\n| figure | value |\n|---|---|");
    for (figure, value) in [
        ("goals settled in", format!("{:.0} s", took.as_secs_f64())),
        (
            "fallback rate (templates planned)",
            rate(templates, asked.len()),
        ),
        (
            "schema-invalid rate (answers asked again)",
            rate(invalid, asked.len()),
        ),
        ("degenerate rate (texts)", rate(degenerate, written.len())),
        (
            "mean on-topic",
            show(mean(written.iter().filter_map(|r| r.on_topic))),
        ),
        (
            "mean on-voice",
            show(mean(written.iter().filter_map(|r| r.on_voice))),
        ),
        (
            "plans that recalled memories",
            format!("{}", rows.iter().filter(|r| r.recalled > 0).count()),
        ),
        (
            "planning tokens per goal",
            format!("{:.0}", tokens as f64 / rows.len() as f64),
        ),
        ("model calls charged", calls.to_string()),
        (
            "model cost per goal",
            format!("{:.4} cents", micros as f64 / 10_000.0 / rows.len() as f64),
        ),
    ] {
        let _ = writeln!(out, "| {figure} | {value} |");
    }
    print!("{out}");
    out
}
