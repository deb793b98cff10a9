//! Transfers on a real chain through the wallet's MCP server (Coinbase AgentKit over stdio,
//! `scripts/agentkit-mcp`, one process per agent with the agent's key from Secrets Manager),
//! on the local EVM node the stack runs: what an approval releases reaches the chain once, as
//! approved, whatever happens to the answer.

use std::time::Duration;

use chimera_aws::handler::QueueHandler;
use chimera_chain::{Address, units};
use chimera_core::domain::{ReviewId, Task, TaskId};
use chimera_core::effect::wallet_of;
use chimera_store::budget;
use chimera_tests::chain::{DECIMALS, LocalChain, wallet_client, wallet_config, wallet_for};
use chimera_tests::rpc_proxy::RpcProxy;
use chimera_tests::world::HttpWorld;
use chimera_worker::Worker;
use serde_json::{Value, json};

use crate::handler::{Setup, deadline, event_of, failed};

/// A payee nobody controls in these tests.
fn payee() -> Address {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("0x{}{}", &id, &id[..8]).parse().unwrap()
}

/// A worker for `s`'s agent whose wallet (made here, funded with `cents`) is served by the
/// shipped wallet profile, the chain reached at `rpc_url`.
async fn wallet_worker(
    s: &Setup,
    world: &HttpWorld,
    chain: &LocalChain,
    rpc_url: &str,
    cents: i64,
) -> (Worker, Address) {
    let wallet = wallet_for(
        &s.db.pool,
        &s.clients.secrets,
        s.names.stage(),
        s.seed.agent,
    )
    .await;
    chain.fund(wallet, cents).await;
    let config = wallet_config(
        s.names.stage(),
        json!({"transport": "http", "url": world.url}),
        rpc_url,
        Duration::from_millis(1500),
    );
    let mcp = wallet_client(config, &s.clients.secrets);
    mcp.connect()
        .await
        .expect("the wallet profile fits the server");
    let worker = Worker::new(s.clients.clone(), s.db.pool.clone(), mcp, s.names.clone());
    (worker, wallet)
}

/// An approved execute task paying `cents` to `to` on the stack's chain, its spend charged to
/// the agent's budget as an approval charges it.
async fn approved_transfer(s: &Setup, chain: &LocalChain, to: Address, cents: i64) -> Task {
    let task = s
        .approved_execute(json!({"action": "wallet.transfer", "arguments": {
            "from": wallet_of(s.seed.agent), "to": to.to_string(), "amount_cents": cents,
            "memo": "studio time", "chain_id": 31337, "token": chain.token.to_string()}}))
        .await;
    budget::open_budget(&s.db.pool, s.seed.agent, "USD", 100_000)
        .await
        .ok();
    budget::spend(
        &s.db.pool,
        s.seed.agent,
        &format!("approval:{}", task.approval_id.unwrap().0),
        chimera_core::money::from_cents(cents),
        None,
        Some("approved action"),
    )
    .await
    .unwrap();
    task
}

/// The effect ledger's row for `task`'s approval: (state, sends, platform_ref, receipt).
async fn effect_of(s: &Setup, task: &Task) -> (String, i32, Option<String>, Option<Value>) {
    sqlx::query_as(
        "select state::text, sends, platform_ref, receipt from effects where approval_id = $1",
    )
    .bind(task.approval_id.unwrap().0)
    .fetch_one(&s.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_approved_transfer_is_one_transaction_of_the_approved_amount_to_the_approved_payee() {
    let s = Setup::new().await;
    let world = HttpWorld::start(&s.db.url(), false).await;
    let chain = LocalChain::from_env();
    let (worker, wallet) = wallet_worker(&s, &world, &chain, &chain.rpc_url, 10_000).await;
    let to = payee();
    let task = approved_transfer(&s, &chain, to, 1_505).await;

    let started = std::time::Instant::now();
    let handled = worker
        .handle(&event_of(std::slice::from_ref(&task)), deadline())
        .await;
    let took = started.elapsed();
    assert_eq!(failed(&handled), Vec::<String>::new());
    let sent = chain.transfers_from(wallet).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, to);
    assert_eq!(
        Some(sent[0].amount),
        units::cents_to_units(1_505, DECIMALS),
        "15.05 test dollars"
    );
    let (state, sends, hash, receipt) = effect_of(&s, &task).await;
    assert_eq!((state.as_str(), sends), ("confirmed", 1));
    assert_eq!(hash.as_deref(), Some(sent[0].hash.as_str()));
    let receipt = receipt.unwrap();
    assert_eq!(receipt["status"], "confirmed");
    assert_eq!(receipt["block"], json!(sent[0].block));
    assert_eq!(receipt["amount_cents"], 1_505);
    println!("[wallet] execute task to mined transfer: {took:?}");

    // Delivered again with its idempotency record gone: the ledger answers, no transaction.
    s.forget_claim(&task).await;
    let again = worker
        .handle(&event_of(std::slice::from_ref(&task)), deadline())
        .await;
    assert_eq!(failed(&again), Vec::<String>::new());
    assert_eq!(chain.transfers_from(wallet).await.len(), 1);
    assert_eq!(
        chain.balance(wallet).await,
        units::cents_to_units(10_000 - 1_505, DECIMALS).unwrap()
    );
    worker.mcp().shutdown().await;
    s.db.drop_db().await;
}

#[tokio::test]
async fn a_transfer_whose_answer_was_lost_is_found_on_chain_not_sent_again() {
    let s = Setup::new().await;
    let world = HttpWorld::start(&s.db.url(), false).await;
    let chain = LocalChain::from_env();
    let proxy = RpcProxy::start(&chain.rpc_url).await;
    let (worker, wallet) = wallet_worker(&s, &world, &chain, &proxy.url, 10_000).await;
    let task = approved_transfer(&s, &chain, payee(), 700).await;

    // The node takes the transaction and the answer breaks; its receipt cannot be read
    // either: the wallet's server cannot tell, the worker looks the transfer up by its payee
    // and amount in the wallet's transfers on chain before anything is sent again.
    proxy.drop_next_sends(1);
    proxy.hide_receipts(true);
    let first = worker
        .handle(&event_of(std::slice::from_ref(&task)), deadline())
        .await;
    assert_eq!(failed(&first), Vec::<String>::new());
    let sent = chain.transfers_from(wallet).await;
    assert_eq!(sent.len(), 1, "one transaction on chain: {sent:?}");
    let (state, sends, hash, _) = effect_of(&s, &task).await;
    assert_eq!((state.as_str(), sends), ("confirmed", 1));
    assert_eq!(
        hash.as_deref(),
        Some(sent[0].hash.as_str()),
        "found by its hash"
    );

    proxy.hide_receipts(false);
    s.forget_claim(&task).await;
    let again = worker
        .handle(&event_of(std::slice::from_ref(&task)), deadline())
        .await;
    assert_eq!(failed(&again), Vec::<String>::new());
    assert_eq!(chain.transfers_from(wallet).await.len(), 1);
    worker.mcp().shutdown().await;
    s.db.drop_db().await;
}

#[tokio::test]
async fn forged_execute_messages_for_a_transfer_move_no_money() {
    let s = Setup::new().await;
    let world = HttpWorld::start(&s.db.url(), false).await;
    let chain = LocalChain::from_env();
    let (worker, wallet) = wallet_worker(&s, &world, &chain, &chain.rpc_url, 10_000).await;
    let task = approved_transfer(&s, &chain, payee(), 500).await;
    let mut more = task.clone();
    more.inputs["arguments"]["amount_cents"] = json!(5_000);
    let mut elsewhere = task.clone();
    elsewhere.inputs["arguments"]["to"] = json!(payee().to_string());
    let mut other_chain = task.clone();
    other_chain.inputs["arguments"]["chain_id"] = json!(1);
    let mut no_approval = task.clone();
    no_approval.id = TaskId::random();
    no_approval.approval_id = Some(ReviewId::random());
    let forged = [more, elsewhere, other_chain, no_approval];
    let handled = worker.handle(&event_of(&forged), deadline()).await;
    assert_eq!(
        failed(&handled).len(),
        forged.len(),
        "every forged message refused"
    );
    assert!(
        chain.transfers_from(wallet).await.is_empty(),
        "no transaction"
    );

    // The approved one goes, as approved.
    let genuine = worker
        .handle(&event_of(std::slice::from_ref(&task)), deadline())
        .await;
    assert_eq!(failed(&genuine), Vec::<String>::new());
    let sent = chain.transfers_from(wallet).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(Some(sent[0].amount), units::cents_to_units(500, DECIMALS));
    worker.mcp().shutdown().await;
    s.db.drop_db().await;
}

#[tokio::test]
async fn a_transfer_the_wallet_cannot_cover_fails_visibly_and_gives_its_spend_back() {
    let s = Setup::new().await;
    let world = HttpWorld::start(&s.db.url(), false).await;
    let chain = LocalChain::from_env();
    let (worker, wallet) = wallet_worker(&s, &world, &chain, &chain.rpc_url, 100).await;
    let task = approved_transfer(&s, &chain, payee(), 2_500).await;
    let before = budget::balance(&s.db.pool, s.seed.agent)
        .await
        .unwrap()
        .unwrap();

    let handled = worker
        .handle(&event_of(std::slice::from_ref(&task)), deadline())
        .await;
    assert_eq!(
        failed(&handled),
        Vec::<String>::new(),
        "failed visibly, not redelivered"
    );
    assert!(chain.transfers_from(wallet).await.is_empty());
    let (state, sends, _, _) = effect_of(&s, &task).await;
    assert_eq!((state.as_str(), sends), ("failed", 1));
    let status: String = sqlx::query_scalar("select status::text from tasks where id = $1")
        .bind(task.id.0)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "failed");
    let after = budget::balance(&s.db.pool, s.seed.agent)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after - before,
        chimera_core::money::from_cents(2_500),
        "the spend is released"
    );
    let released: i64 = sqlx::query_scalar(
        "select count(*) from ledger where idempotency_key = $1 and kind = 'release'",
    )
    .bind(format!("approval:{}:release", task.approval_id.unwrap().0))
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(released, 1);
    worker.mcp().shutdown().await;
    s.db.drop_db().await;
}
