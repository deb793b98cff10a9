//! The local EVM chain the stack runs (`scripts/stack up --evm`), as tests use it: agents'
//! wallets made and funded, transfers read back from the chain's logs, and money moved the way
//! no approval of Chimera's would (the development node lets a test send from any account).

use std::sync::Arc;
use std::time::Duration;

use chimera_chain::{Address, Chain, TokenTransfer, units};
use chimera_core::domain::AgentId;
use serde_json::{Value, json};

use crate::stack_env;

/// The first development account: it holds the stablecoin the deployment minted.
pub const FUNDER: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
/// Decimals of the deployed stablecoin.
pub const DECIMALS: u8 = 6;

/// The stack's chain and its stablecoin.
#[derive(Clone)]
pub struct LocalChain {
    pub chain: Chain,
    pub token: Address,
    pub rpc_url: String,
    http: reqwest::Client,
}

impl LocalChain {
    pub fn from_env() -> Self {
        let rpc_url = stack_env("CHIMERA_EVM_RPC_URL");
        Self {
            chain: Chain::new(rpc_url.clone(), Duration::from_secs(10)),
            token: stack_env("CHIMERA_EVM_TOKEN")
                .parse()
                .expect("CHIMERA_EVM_TOKEN is an address"),
            http: reqwest::Client::new(),
            rpc_url,
        }
    }

    /// One JSON-RPC call to the node; its result (an error answer fails the test).
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        let answer: Value = self
            .http
            .post(&self.rpc_url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send()
            .await
            .expect("the local chain answers")
            .json()
            .await
            .expect("a JSON-RPC answer");
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Sends `data` to the token from `from` (an unlocked or impersonated account), mined at
    /// once; the transaction's hash.
    async fn token_call(&self, from: &str, data: String) -> String {
        let hash = self
            .rpc(
                "eth_sendTransaction",
                json!([{"from": from, "to": self.token, "data": data}]),
            )
            .await;
        let hash = hash.as_str().expect("a transaction hash").to_owned();
        let receipt = self
            .chain
            .receipt(&hash)
            .await
            .unwrap()
            .expect("mined at once");
        assert!(receipt.success, "{hash} reverted");
        hash
    }

    /// Gives `wallet` gas and `cents` of the stablecoin.
    pub async fn fund(&self, wallet: Address, cents: i64) {
        self.rpc(
            "hardhat_setBalance",
            json!([wallet, "0xde0b6b3a7640000"]), // one ether
        )
        .await;
        let units = units::cents_to_units(cents, DECIMALS).expect("a positive amount");
        self.token_call(FUNDER, transfer_data(wallet, units)).await;
    }

    /// Moves `units` of the stablecoin from `wallet` to `to` without Chimera: the node sends
    /// as the wallet's account (what anyone holding the key could do).
    pub async fn move_outside(&self, wallet: Address, to: Address, units: u128) -> String {
        self.rpc("hardhat_impersonateAccount", json!([wallet]))
            .await;
        let hash = self
            .token_call(&wallet.to_string(), transfer_data(to, units))
            .await;
        self.rpc("hardhat_stopImpersonatingAccount", json!([wallet]))
            .await;
        hash
    }

    /// The stablecoin's transfers out of `wallet`.
    pub async fn transfers_from(&self, wallet: Address) -> Vec<TokenTransfer> {
        self.chain
            .token_transfers(self.token, Some(wallet), None, 0)
            .await
            .unwrap()
    }

    pub async fn balance(&self, wallet: Address) -> u128 {
        self.chain.token_balance(self.token, wallet).await.unwrap()
    }
}

/// `transfer(to, units)`'s call data.
fn transfer_data(to: Address, units: u128) -> String {
    format!("0xa9059cbb{}{:064x}", &to.word()[2..], units)
}

/// A new wallet for `agent` in `stage`: its key stored where the wallet's MCP server reads it
/// (as onboarding does), its address written on the agent's row in `pool`.
pub async fn wallet_for(
    pool: &sqlx::PgPool,
    secrets: &aws_sdk_secretsmanager::Client,
    stage: &str,
    agent: AgentId,
) -> Address {
    let wallets = chimera_hitl_api::wallets::Wallets::new(secrets.clone(), stage, None);
    let address = wallets
        .create(agent)
        .await
        .expect("the wallet's key stored");
    sqlx::query("update agents set wallet_address = $2 where id = $1")
        .bind(agent.0)
        .bind(address.to_string())
        .execute(pool)
        .await
        .unwrap();
    address
}

/// The shipped wallet profile (`infra/mcp/wallet.json`) for `stage`, the world at `world`
/// (a server spec), the chain at `rpc_url` (the stack's, or a proxy in front of it), receipts
/// awaited `receipt_timeout` at most.
pub fn wallet_config(
    stage: &str,
    world: Value,
    rpc_url: &str,
    receipt_timeout: Duration,
) -> chimera_mcp::McpConfig {
    let shipped = std::fs::read_to_string(crate::repo_root().join("infra/mcp/wallet.json"))
        .expect("infra/mcp/wallet.json");
    let mut profile: Value = serde_json::from_str(&shipped).expect("the profile is JSON");
    profile["servers"]["world"] = world;
    let stage = stage.to_owned();
    let rpc_url = rpc_url.to_owned();
    let timeout = receipt_timeout.as_millis().to_string();
    chimera_mcp::McpConfig::parse_with(&profile.to_string(), &move |name| match name {
        "CHIMERA_STAGE" => Some(stage.clone()),
        "CHIMERA_EVM_RPC_URL" => Some(rpc_url.clone()),
        "CHIMERA_WALLET_RECEIPT_TIMEOUT_MS" => Some(timeout.clone()),
        other => std::env::var(other).ok(),
    })
    .expect("the wallet profile parses")
}

/// An MCP client of `config` reading agents' secrets from `secrets`.
pub fn wallet_client(
    config: chimera_mcp::McpConfig,
    secrets: &aws_sdk_secretsmanager::Client,
) -> chimera_mcp::McpClient {
    chimera_mcp::McpClient::new(config).with_secrets(Arc::new(
        chimera_worker::secrets::SecretsManager::new(secrets.clone()),
    ))
}
