//! Paid actions on a real chain: each agent's wallet (its key in Secrets Manager), transfers
//! through the wallet's MCP server (Coinbase AgentKit) on the stack's EVM node, behind the judge
//! and the budget; and the reconciler comparing the ledger with the chain.

use std::time::{Duration, Instant};

use chimera_chain::{Address, units};
use chimera_core::routing::{Policy, SpendLimits};
use chimera_tests::chain::{DECIMALS, LocalChain};
use chimera_tests::eventually;
use chimera_tests::swarm::{SETTLED, Swarm, SwarmOptions};
use reqwest::Method;
use serde_json::{Value, json};

use crate::hitl::{approve, call, card_of, operator, pending_of};

const SETTLE: Duration = Duration::from_secs(180);

fn payee() -> Address {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("0x{}{}", &id, &id[..8]).parse().unwrap()
}

/// The agent's wallet address, as its row holds it.
async fn wallet_of(swarm: &Swarm, agent: usize) -> Address {
    let address: String = sqlx::query_scalar("select wallet_address from agents where id = $1")
        .bind(swarm.agents[agent].0)
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap();
    address.parse().unwrap()
}

/// The audit records of `action` in the swarm's database.
async fn audited(swarm: &Swarm, action: &str) -> Vec<(Option<String>, Value)> {
    sqlx::query_as("select reasoning, details from audit_log where action = $1 order by id")
        .bind(action)
        .fetch_all(&swarm.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approved_paid_action_is_one_transaction_with_its_hash_in_the_effect_and_the_audit() {
    let mut swarm = Swarm::new(SwarmOptions {
        wallets: Some(10_000),
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    let chain = LocalChain::from_env();
    let wallet = wallet_of(&swarm, 0).await;
    let to = payee();
    let goal = swarm
        .submit(
            0,
            "paid_action",
            "pay the photo studio",
            json!({"pay_to": to.to_string(), "amount_cents": 1_500}),
        )
        .await;
    assert_eq!(swarm.settle(&[goal], SETTLE).await, ["awaiting_review"]);
    let item = pending_of(&swarm, goal).await;
    let id = item["id"].as_str().unwrap().to_owned();
    // What a person approves names the chain, the token, the payee and the amount.
    let card = card_of(&swarm, &id).await;
    let arguments = &card["proposal"]["arguments"];
    assert_eq!(arguments["to"], to.to_string(), "{card}");
    assert_eq!(arguments["amount_cents"], 1_500);
    assert_eq!(arguments["chain_id"], 31337);
    assert_eq!(arguments["token"], chain.token.to_string());
    assert!(
        chain.transfers_from(wallet).await.is_empty(),
        "nothing before approval"
    );

    let approved = Instant::now();
    let (status, body) = approve(&swarm, &item).await;
    assert!(status < 300, "{status} {body}");
    let sent = eventually(SETTLE, "the transfer mined", || async {
        let sent = chain.transfers_from(wallet).await;
        if sent.is_empty() {
            Err("no transfer yet".into())
        } else {
            Ok(sent)
        }
    })
    .await;
    println!(
        "[wallet] approval to mined transfer: {:?}",
        approved.elapsed()
    );
    assert_eq!(swarm.settle(&[goal], SETTLE).await, ["completed"]);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, to);
    assert_eq!(Some(sent[0].amount), units::cents_to_units(1_500, DECIMALS));
    let hash = &sent[0].hash;
    let recorded: (String, String) =
        sqlx::query_as("select state::text, platform_ref from effects where approval_id = $1")
            .bind(uuid::Uuid::parse_str(&id).unwrap())
            .fetch_one(&swarm.db.pool)
            .await
            .unwrap();
    assert_eq!(recorded, ("confirmed".to_owned(), hash.clone()));
    let confirmed = audited(&swarm, "effect.confirmed").await;
    assert_eq!(confirmed.len(), 1, "{confirmed:?}");
    assert_eq!(confirmed[0].1["platform_ref"], hash.as_str());
    assert_eq!(confirmed[0].1["receipt"]["block"], json!(sent[0].block));

    // The agent's wallet as the API shows it: the address, the chain's balances, no key.
    let (status, agent) = call(
        &swarm,
        Method::GET,
        &format!("/agents/{}", swarm.agents[0].0),
        Some(&operator(&swarm)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{agent}");
    assert_eq!(agent["wallet"]["address"], wallet.to_string(), "{agent}");
    assert_eq!(agent["wallet"]["chain_id"], 31337);
    assert_eq!(agent["wallet"]["token_cents"], 10_000 - 1_500);
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_paid_actions_against_a_budget_for_ten_make_ten_transactions_and_the_chain_agrees()
 {
    let policy = Policy {
        spend: SpendLimits {
            per_transfer_cents: Some(1_000),
            per_day_cents: Some(100_000),
            auto_pay_per_day_cents: Some(100_000),
        },
        ..Policy::default()
    };
    let mut swarm = Swarm::new(SwarmOptions {
        policy,
        budget_cents: 1_000,
        wallets: Some(5_000),
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    let chain = LocalChain::from_env();
    let wallet = wallet_of(&swarm, 0).await;
    let to = payee();
    let started = Instant::now();
    let mut goals = Vec::new();
    for i in 0..100 {
        goals.push(
            swarm
                .submit(
                    0,
                    "paid_action",
                    &format!("pay the studio, invoice {i}"),
                    json!({"pay_to": to.to_string(), "amount_cents": 100}),
                )
                .await,
        );
    }
    let statuses = swarm.settle(&goals, SETTLE).await;
    assert!(statuses.iter().all(|s| SETTLED.contains(&s.as_str())));
    let completed = statuses.iter().filter(|s| *s == "completed").count();
    println!(
        "[wallet] 100 paid actions settled in {:?}: {completed} completed",
        started.elapsed()
    );
    let sent = chain.transfers_from(wallet).await;
    assert_eq!(sent.len(), 10, "the budget pays for ten: {statuses:?}");
    assert_eq!(completed, 10);
    assert!(sent.iter().all(|t| t.to == to));
    assert_eq!(
        chain.balance(wallet).await,
        units::cents_to_units(5_000 - 1_000, DECIMALS).unwrap()
    );
    let spent: i64 = sqlx::query_scalar(
        "select coalesce(sum(case kind when 'spend' then amount_micros else -amount_micros end), 0)::bigint
         from ledger where category = 'transfer' and kind in ('spend', 'release')",
    )
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    assert_eq!(
        spent,
        chimera_core::money::from_cents(1_000),
        "the ledger paid ten"
    );

    // The reconciler finds ledger and chain in agreement...
    let state = swarm.app_state();
    let now = chrono::Utc::now();
    let found = state
        .wallets
        .reconcile(&swarm.db.pool, now, 100)
        .await
        .unwrap();
    assert_eq!((found.checked, found.differing), (1, 0));
    assert!(audited(&swarm, "wallet.difference").await.is_empty());

    // ...until money leaves the wallet outside Chimera: reported once, with its hash.
    let outside = chain
        .move_outside(
            wallet,
            payee(),
            units::cents_to_units(250, DECIMALS).unwrap(),
        )
        .await;
    let found = state
        .wallets
        .reconcile(&swarm.db.pool, now, 100)
        .await
        .unwrap();
    assert_eq!((found.checked, found.differing), (1, 1));
    let again = state
        .wallets
        .reconcile(&swarm.db.pool, now, 100)
        .await
        .unwrap();
    assert_eq!(again.differing, 1, "still different");
    let reported = audited(&swarm, "wallet.difference").await;
    assert_eq!(reported.len(), 1, "audited once: {reported:?}");
    let reasoning = reported[0].0.clone().unwrap_or_default();
    assert!(reasoning.contains(&outside), "{reasoning}");
    assert!(reasoning.contains("no approval"), "{reasoning}");
    swarm.stop().await;
}

/// Everything the process logs, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wallet_key_is_made_per_agent_and_never_reaches_logs_the_api_or_the_database() {
    // Each test runs in a process of its own: this one's logs, at debug, are all here.
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .try_init()
        .expect("no other subscriber in this test's process");
    let mut swarm = Swarm::new(SwarmOptions {
        wallets: Some(1),
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    let chain = LocalChain::from_env();
    let mut answers = Vec::new();
    let soul = include_str!("../../examples/agents/nova/SOUL.md");
    let agents_md = include_str!("../../examples/agents/nova/AGENTS.md");
    let onboard = json!({"handle": "nova", "display_name": "Nova", "platforms": ["x"],
                         "soul_md": soul, "agents_md": agents_md});
    let (status, created) = call(
        &swarm,
        Method::POST,
        "/agents",
        Some(&operator(&swarm)),
        Some(onboard.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    answers.push(created.to_string());
    let id = created["agent_id"].as_str().unwrap().to_owned();
    let address: Address = created["wallet_address"].as_str().unwrap().parse().unwrap();

    // Another tenant's "nova" has a wallet of its own, under its own agent id.
    let globex = chimera_store::records::create_tenant(&swarm.db.pool, "globex")
        .await
        .unwrap();
    let theirs = swarm.token_for(globex, "gina", &["operator"]);
    let (status, twin) = call(
        &swarm,
        Method::POST,
        "/agents",
        Some(&theirs),
        Some(onboard),
    )
    .await;
    assert_eq!(status, 201, "{twin}");
    answers.push(twin.to_string());
    assert_ne!(twin["wallet_address"], created["wallet_address"]);

    // The key is in the secret named by the agent id, and it controls the address shown.
    let secret = swarm
        .clients
        .secrets
        .get_secret_value()
        .secret_id(chimera_core::names::agent_secret(
            swarm.names.stage(),
            chimera_core::domain::AgentId(id.parse().unwrap()),
            "wallet",
        ))
        .send()
        .await
        .expect("the wallet's secret")
        .secret_string
        .unwrap();
    let secret: Value = serde_json::from_str(&secret).unwrap();
    let key = secret["private_key"].as_str().unwrap().to_owned();
    assert_eq!(
        chimera_chain::WalletKey::from_hex(&key).unwrap().address(),
        address
    );

    // The agent pays once, so its key is used.
    chain.fund(address, 2_000).await;
    chimera_store::budget::open_budget(
        &swarm.db.pool,
        chimera_core::domain::AgentId(id.parse().unwrap()),
        "USD",
        5_000,
    )
    .await
    .unwrap();
    let (status, goal) = call(
        &swarm,
        Method::POST,
        "/goals",
        Some(&operator(&swarm)),
        Some(
            json!({"agent_id": id, "kind": "paid_action", "text": "pay the studio",
                    "constraints": {"pay_to": payee().to_string(), "amount_cents": 700}}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{goal}");
    let goal = chimera_core::domain::GoalId(goal["goal_id"].as_str().unwrap().parse().unwrap());
    assert_eq!(swarm.settle(&[goal], SETTLE).await, ["awaiting_review"]);
    let item = pending_of(&swarm, goal).await;
    let review = item["id"].as_str().unwrap().to_owned();
    answers.push(card_of(&swarm, &review).await.to_string());
    let (status, body) = approve(&swarm, &item).await;
    assert!(status < 300, "{status} {body}");
    assert_eq!(swarm.settle(&[goal], SETTLE).await, ["completed"]);
    assert_eq!(chain.transfers_from(address).await.len(), 1);
    for path in [
        format!("/agents/{id}"),
        "/agents".to_owned(),
        "/fleet".to_owned(),
    ] {
        let (status, body) = call(&swarm, Method::GET, &path, Some(&operator(&swarm)), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        answers.push(body.to_string());
    }
    let dump = std::process::Command::new("pg_dump")
        .arg("--data-only")
        .arg(format!(
            "{}/{}",
            chimera_tests::stack_env("DATABASE_URL")
                .rsplit_once('/')
                .unwrap()
                .0,
            swarm.db.name
        ))
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(
        dump.contains(&address.to_string()),
        "the dump holds the address"
    );
    let stack_logs: String = std::fs::read_dir(chimera_tests::repo_root().join(".local/logs"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    let logged = logs.text();
    assert!(logged.contains(&id), "the logs were captured");
    let digits = key.trim_start_matches("0x").to_lowercase();
    for (place, text) in [
        ("the API's answers", answers.join("\n")),
        ("PostgreSQL", dump),
        ("this test's logs", logged),
        ("the stack's logs", stack_logs),
    ] {
        assert!(
            !text.to_lowercase().contains(&digits),
            "the wallet key appears in {place}"
        );
    }
    swarm.stop().await;
}
