//! Agents' wallets: one per agent id, made at onboarding. The key is generated here and
//! stored in Secrets Manager (`<stage>/agents/<agent id>/wallet`) before the agent's row is
//! written; PostgreSQL and the API know the address only. `GET /agents/{id}` shows the
//! wallet's balances as the chain holds them now, read over JSON-RPC when the stage has a
//! chain (`CHIMERA_EVM_RPC_URL`, `CHIMERA_EVM_TOKEN`).

use std::time::Duration;

use anyhow::Context;
use chimera_chain::{Address, Chain, WalletKey, units};
use chimera_core::domain::AgentId;
use chimera_core::names::agent_secret;
use chimera_store::agents::WalletView;

/// How long a read of the chain may take before the API answers without it.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The stage's chain: its JSON-RPC endpoint and the stablecoin agents pay in.
#[derive(Clone, Debug)]
pub struct WalletChain {
    pub chain: Chain,
    pub token: Address,
}

impl WalletChain {
    /// From `CHIMERA_EVM_RPC_URL` and `CHIMERA_EVM_TOKEN`; `None` when the first is unset or
    /// empty (a stage without a chain).
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        let url = std::env::var("CHIMERA_EVM_RPC_URL").unwrap_or_default();
        if url.trim().is_empty() {
            return Ok(None);
        }
        let token = std::env::var("CHIMERA_EVM_TOKEN")
            .context("CHIMERA_EVM_RPC_URL is set, so CHIMERA_EVM_TOKEN must name the stablecoin")?
            .parse()
            .context("CHIMERA_EVM_TOKEN")?;
        Ok(Some(Self {
            chain: Chain::new(url, CHAIN_TIMEOUT),
            token,
        }))
    }
}

/// Where agents' wallet keys go, and the chain their balances are read from.
#[derive(Clone)]
pub struct Wallets {
    secrets: aws_sdk_secretsmanager::Client,
    stage: String,
    pub chain: Option<WalletChain>,
}

impl Wallets {
    pub fn new(
        secrets: aws_sdk_secretsmanager::Client,
        stage: &str,
        chain: Option<WalletChain>,
    ) -> Self {
        Self {
            secrets,
            stage: stage.to_owned(),
            chain,
        }
    }

    /// A new key for `agent`, stored as its wallet secret; returns the address.
    pub async fn create(&self, agent: AgentId) -> anyhow::Result<Address> {
        let key = WalletKey::generate()?;
        self.secrets
            .create_secret()
            .name(agent_secret(&self.stage, agent, "wallet"))
            .description("A Chimera agent's wallet key (the wallet's MCP server signs with it)")
            .secret_string(key.secret_json())
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "storing the wallet key: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                )
            })?;
        Ok(key.address())
    }

    /// Deletes `agent`'s wallet secret at once (its agent was never written); logged, not
    /// returned, when it fails: the secret then names an agent that does not exist.
    pub async fn forget(&self, agent: AgentId) {
        let deleted = self
            .secrets
            .delete_secret()
            .secret_id(agent_secret(&self.stage, agent, "wallet"))
            .force_delete_without_recovery(true)
            .send()
            .await;
        if let Err(err) = deleted {
            tracing::warn!(agent_id = %agent.0, error = %aws_sdk_secretsmanager::error::DisplayErrorContext(err), "an unused wallet secret was left behind");
        }
    }

    /// `wallet` with its balances on the stage's chain, or why they could not be read.
    pub async fn read(&self, mut wallet: WalletView) -> WalletView {
        let Some(on) = &self.chain else {
            return wallet;
        };
        let read = async {
            let address: Address = wallet.address.parse()?;
            let (chain_id, native, units, decimals) = tokio::try_join!(
                on.chain.chain_id(),
                on.chain.native_balance(address),
                on.chain.token_balance(on.token, address),
                on.chain.token_decimals(on.token),
            )?;
            anyhow::Ok((chain_id, native, units, decimals))
        };
        match read.await {
            Ok((chain_id, native, token_units, decimals)) => {
                wallet.chain_id = Some(chain_id);
                wallet.token = Some(on.token.to_string());
                wallet.token_units = Some(token_units.to_string());
                wallet.token_cents = units::units_to_cents(token_units, decimals).map(|(c, _)| c);
                wallet.native_wei = Some(native.to_string());
            }
            Err(err) => {
                tracing::warn!(address = %wallet.address, error = format!("{err:#}"), "a wallet's balances could not be read");
                wallet.chain_error = Some("the chain could not be read just now".into());
            }
        }
        wallet
    }
}

/// What one pass over the wallets found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalletsReconciled {
    pub checked: usize,
    /// Wallets where the chain and the ledger differ now.
    pub differing: usize,
}

impl Wallets {
    /// Compares up to `limit` wallets (those checked longest ago first) with the chain, records
    /// what it found and audits a difference when it appears or changes; the `WalletsChecked`
    /// and `WalletDifferences` metrics count them. Nothing when the stage has no chain.
    pub async fn reconcile(
        &self,
        pool: &chimera_store::PgPool,
        now: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> anyhow::Result<WalletsReconciled> {
        let Some(on) = &self.chain else {
            return Ok(WalletsReconciled::default());
        };
        let wallets = chimera_store::wallets::due(pool, limit).await?;
        if wallets.is_empty() {
            return Ok(WalletsReconciled::default());
        }
        let (block, decimals) =
            tokio::try_join!(on.chain.block_number(), on.chain.token_decimals(on.token))?;
        let mut done = WalletsReconciled::default();
        for wallet in &wallets {
            let address: Address = wallet
                .address
                .parse()
                .with_context(|| format!("agent {}'s wallet address", wallet.agent_id.0))?;
            let (sent, received, balance) = tokio::try_join!(
                on.chain.token_transfers(on.token, Some(address), None, 0),
                on.chain.token_transfers(on.token, None, Some(address), 0),
                on.chain.token_balance(on.token, address),
            )?;
            let check = compare(
                wallet,
                &Onchain {
                    token: on.token,
                    decimals,
                    block,
                    sent: &sent,
                    received: &received,
                    balance,
                },
            );
            let recorded = chimera_store::wallets::record(pool, wallet, &check, now).await?;
            done.checked += 1;
            if !check.differences.is_empty() {
                done.differing += 1;
                if recorded == chimera_store::wallets::Recorded::Differs {
                    tracing::warn!(agent_id = %wallet.agent_id.0, wallet = %wallet.address, differences = ?check.differences, "a wallet and the ledger differ");
                }
            }
        }
        chimera_aws::telemetry::Emf::new("sweep")
            .count("WalletsChecked", done.checked as u64)
            .count("WalletDifferences", done.differing as u64)
            .emit();
        Ok(done)
    }
}

/// What the chain shows of one wallet.
struct Onchain<'a> {
    token: Address,
    decimals: u8,
    block: u64,
    sent: &'a [chimera_chain::TokenTransfer],
    received: &'a [chimera_chain::TokenTransfer],
    balance: u128,
}

/// The ledger's settled transfers of `wallet`, as approved, against the chain: each by its
/// hash (payee, amount and token as approved), every transfer out of the wallet accounted for
/// by the ledger, and the balance what everything received less what the ledger paid.
fn compare(
    wallet: &chimera_store::wallets::Wallet,
    chain: &Onchain<'_>,
) -> chimera_store::wallets::Check {
    let mut differences = Vec::new();
    let mut paid: u128 = 0;
    for settled in &wallet.transfers {
        let approved_units = settled
            .amount_cents
            .and_then(|c| units::cents_to_units(c, chain.decimals));
        let approved_to = settled
            .to
            .as_deref()
            .and_then(|t| t.parse::<Address>().ok());
        let approved_token = settled
            .token
            .as_deref()
            .and_then(|t| t.parse::<Address>().ok());
        paid = paid.saturating_add(approved_units.unwrap_or(0));
        let on_chain: Vec<_> = chain
            .sent
            .iter()
            .filter(|t| t.hash == settled.hash)
            .collect();
        match on_chain.as_slice() {
            [] => differences.push(format!(
                "transfer {} (approval {}) is settled in the ledger but moved none of the token on chain",
                settled.hash, settled.approval_id
            )),
            [t] if Some(t.to) == approved_to
                && Some(t.amount) == approved_units
                && approved_token.is_none_or(|token| token == chain.token) => {}
            [t, ..] => differences.push(format!(
                "transfer {} (approval {}) moved {} units to {} on chain; approved: {} units to {}",
                settled.hash,
                settled.approval_id,
                t.amount,
                t.to,
                approved_units.map_or("?".into(), |u| u.to_string()),
                settled.to.as_deref().unwrap_or("?")
            )),
        }
    }
    for t in chain.sent {
        if !wallet.transfers.iter().any(|s| s.hash == t.hash) {
            differences.push(format!(
                "{} units went to {} in {} (block {}), which no approval of Chimera's made",
                t.amount, t.to, t.hash, t.block
            ));
        }
    }
    let received: u128 = chain.received.iter().map(|t| t.amount).sum();
    let expected = received.saturating_sub(paid);
    if chain.balance != expected {
        differences.push(format!(
            "the balance is {} units on chain; received {} less {} paid through Chimera is {}",
            chain.balance, received, paid, expected
        ));
    }
    chimera_store::wallets::Check {
        block: chain.block,
        balance_units: chain.balance,
        expected_units: expected,
        differences,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chimera_chain::TokenTransfer;
    use chimera_store::wallets::{SettledTransfer, Wallet};

    fn addr(n: u8) -> Address {
        Address([n; 20])
    }

    fn transfer(hash: &str, from: Address, to: Address, amount: u128) -> TokenTransfer {
        TokenTransfer {
            token: addr(9),
            hash: hash.into(),
            block: 1,
            from,
            to,
            amount,
        }
    }

    #[test]
    fn a_wallet_agrees_only_when_every_transfer_is_approved_and_the_balance_adds_up() {
        let me = addr(1);
        let shop = addr(2);
        let wallet = Wallet {
            agent_id: AgentId(uuid::Uuid::from_u128(1)),
            tenant_id: chimera_core::domain::TenantId(uuid::Uuid::from_u128(2)),
            address: me.to_string(),
            transfers: vec![SettledTransfer {
                approval_id: uuid::Uuid::from_u128(3),
                hash: "0xa".into(),
                to: Some(shop.to_string()),
                amount_cents: Some(150),
                token: Some(addr(9).to_string()),
            }],
        };
        let funded = [transfer("0xf", addr(7), me, 10_000_000)];
        let paid = [transfer("0xa", me, shop, 1_500_000)];
        let chain = |sent, balance| Onchain {
            token: addr(9),
            decimals: 6,
            block: 5,
            sent,
            received: &funded,
            balance,
        };
        let clean = compare(&wallet, &chain(&paid, 8_500_000));
        assert!(clean.differences.is_empty(), "{:?}", clean.differences);

        let outside = [paid[0].clone(), transfer("0xb", me, addr(3), 1_000_000)];
        let found = compare(&wallet, &chain(&outside, 7_500_000));
        assert_eq!(found.differences.len(), 2, "{:?}", found.differences);
        assert!(found.differences[0].contains("0xb"));

        let wrong_payee = [transfer("0xa", me, addr(4), 1_500_000)];
        let found = compare(&wallet, &chain(&wrong_payee, 8_500_000));
        assert!(
            found.differences[0].contains("approved"),
            "{:?}",
            found.differences
        );

        let missing = compare(&wallet, &chain(&[], 10_000_000));
        assert_eq!(missing.differences.len(), 2, "{:?}", missing.differences);
    }
}
