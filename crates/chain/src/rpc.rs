//! The chain's JSON-RPC, read only: what the API shows of a wallet and what the reconciler
//! checks the ledger against.

use std::time::Duration;

use serde_json::{Value, json};

use crate::key::Address;

/// `Transfer(address,address,uint256)`'s topic: the event every ERC-20 transfer logs.
pub const TRANSFER_TOPIC: &str =
    "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";
/// `balanceOf(address)`'s selector.
const BALANCE_OF: &str = "70a08231";
/// `decimals()`'s selector.
const DECIMALS: &str = "313ce567";

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("the chain at {url} did not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the chain refused {method}: {message} (code {code})")]
    Refused {
        method: &'static str,
        code: i64,
        message: String,
    },
    #[error("the chain's answer to {method} does not read: {reason}")]
    Unreadable {
        method: &'static str,
        reason: String,
    },
}

/// A mined transaction's receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub hash: String,
    pub block: u64,
    /// Whether it succeeded (a reverted transaction is mined and did nothing but pay gas).
    pub success: bool,
    pub from: Address,
    /// The contract or account it called.
    pub to: Option<Address>,
    /// The ERC-20 transfers it logged.
    pub transfers: Vec<TokenTransfer>,
}

/// One ERC-20 `Transfer` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTransfer {
    pub token: Address,
    pub hash: String,
    pub block: u64,
    pub from: Address,
    pub to: Address,
    pub amount: u128,
}

/// A chain's JSON-RPC endpoint.
#[derive(Clone, Debug)]
pub struct Chain {
    http: reqwest::Client,
    url: String,
}

impl Chain {
    /// The endpoint at `url`; every read gives up after `timeout`.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Self {
            http,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn call(&self, method: &'static str, params: Value) -> Result<Value, RpcError> {
        let unreachable = |reason: String| RpcError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let answer: Value = self
            .http
            .post(&self.url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .error_for_status()
            .map_err(|e| unreachable(e.to_string()))?
            .json()
            .await
            .map_err(|e| RpcError::Unreadable {
                method,
                reason: e.to_string(),
            })?;
        if let Some(error) = answer.get("error") {
            return Err(RpcError::Refused {
                method,
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .to_owned(),
            });
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| RpcError::Unreadable {
                method,
                reason: "no result".into(),
            })
    }

    async fn quantity(&self, method: &'static str, params: Value) -> Result<u128, RpcError> {
        let value = self.call(method, params).await?;
        quantity(&value).ok_or_else(|| RpcError::Unreadable {
            method,
            reason: format!("{value} is not a quantity"),
        })
    }

    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        narrow(
            "eth_chainId",
            self.quantity("eth_chainId", json!([])).await?,
        )
    }

    pub async fn block_number(&self) -> Result<u64, RpcError> {
        narrow(
            "eth_blockNumber",
            self.quantity("eth_blockNumber", json!([])).await?,
        )
    }

    /// The native balance of `account`, in wei.
    pub async fn native_balance(&self, account: Address) -> Result<u128, RpcError> {
        self.quantity("eth_getBalance", json!([account, "latest"]))
            .await
    }

    /// How many transactions `account` has had mined (its next nonce).
    pub async fn transaction_count(&self, account: Address) -> Result<u64, RpcError> {
        let count = self
            .quantity("eth_getTransactionCount", json!([account, "latest"]))
            .await?;
        narrow("eth_getTransactionCount", count)
    }

    /// `account`'s balance of the ERC-20 `token`, in its smallest units.
    pub async fn token_balance(&self, token: Address, account: Address) -> Result<u128, RpcError> {
        let data = format!("0x{BALANCE_OF}{}", &account.word()[2..]);
        self.quantity("eth_call", json!([{"to": token, "data": data}, "latest"]))
            .await
    }

    /// The decimals of the ERC-20 `token`.
    pub async fn token_decimals(&self, token: Address) -> Result<u8, RpcError> {
        let data = format!("0x{DECIMALS}");
        let decimals = self
            .quantity("eth_call", json!([{"to": token, "data": data}, "latest"]))
            .await?;
        u8::try_from(decimals).map_err(|_| RpcError::Unreadable {
            method: "eth_call",
            reason: format!("{decimals} decimals"),
        })
    }

    /// The receipt of the transaction `hash`; `None` while it is not mined (or unknown).
    pub async fn receipt(&self, hash: &str) -> Result<Option<Receipt>, RpcError> {
        const METHOD: &str = "eth_getTransactionReceipt";
        let value = self.call(METHOD, json!([hash])).await?;
        if value.is_null() {
            return Ok(None);
        }
        let unreadable = |what: &str| RpcError::Unreadable {
            method: METHOD,
            reason: format!("{what} in {value}"),
        };
        let block = value
            .get("blockNumber")
            .and_then(quantity)
            .and_then(|b| u64::try_from(b).ok())
            .ok_or_else(|| unreadable("no block number"))?;
        let from = value
            .get("from")
            .and_then(Value::as_str)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| unreadable("no sender"))?;
        let transfers = value
            .get("logs")
            .and_then(Value::as_array)
            .map(|logs| logs.iter().filter_map(token_transfer).collect())
            .unwrap_or_default();
        Ok(Some(Receipt {
            hash: hash.to_lowercase(),
            block,
            success: value.get("status").and_then(quantity) == Some(1),
            from,
            to: value
                .get("to")
                .and_then(Value::as_str)
                .and_then(|a| a.parse().ok()),
            transfers,
        }))
    }

    /// The ERC-20 `token`'s transfers from `from` (any sender when `None`) to `to` (any
    /// recipient when `None`), mined from block `since` on, oldest first.
    pub async fn token_transfers(
        &self,
        token: Address,
        from: Option<Address>,
        to: Option<Address>,
        since: u64,
    ) -> Result<Vec<TokenTransfer>, RpcError> {
        const METHOD: &str = "eth_getLogs";
        let topic = |a: Option<Address>| a.map_or(Value::Null, |a| json!(a.word()));
        let filter = json!({
            "address": token,
            "fromBlock": format!("0x{since:x}"),
            "toBlock": "latest",
            "topics": [TRANSFER_TOPIC, topic(from), topic(to)],
        });
        let logs = self.call(METHOD, json!([filter])).await?;
        let logs = logs.as_array().ok_or_else(|| RpcError::Unreadable {
            method: METHOD,
            reason: "not a list of logs".into(),
        })?;
        Ok(logs.iter().filter_map(token_transfer).collect())
    }
}

/// An ERC-20 `Transfer` event in a log entry; `None` for any other log.
fn token_transfer(log: &Value) -> Option<TokenTransfer> {
    let topics = log.get("topics")?.as_array()?;
    if topics.len() != 3 || topics[0].as_str()? != TRANSFER_TOPIC {
        return None;
    }
    Some(TokenTransfer {
        token: log.get("address")?.as_str()?.parse().ok()?,
        hash: log.get("transactionHash")?.as_str()?.to_lowercase(),
        block: u64::try_from(quantity(log.get("blockNumber")?)?).ok()?,
        from: Address::from_word(topics[1].as_str()?)?,
        to: Address::from_word(topics[2].as_str()?)?,
        amount: quantity(log.get("data")?)?,
    })
}

/// A hex quantity or 32-byte word (`0x...`) that fits 128 bits.
fn quantity(value: &Value) -> Option<u128> {
    let digits = value.as_str()?.strip_prefix("0x")?;
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Some(0);
    }
    u128::from_str_radix(significant, 16).ok()
}

fn narrow(method: &'static str, value: u128) -> Result<u64, RpcError> {
    u64::try_from(value).map_err(|_| RpcError::Unreadable {
        method,
        reason: format!("{value} does not fit 64 bits"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_log_reads_back() {
        let log = json!({
            "address": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
            "transactionHash": "0xABC",
            "blockNumber": "0x10",
            "topics": [TRANSFER_TOPIC,
                "0x000000000000000000000000f39fd6e51aad88f6f4ce6ab8827279cfffb92266",
                "0x00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c8"],
            "data": "0x00000000000000000000000000000000000000000000000000000000000f4240"});
        let t = token_transfer(&log).unwrap();
        assert_eq!(t.amount, 1_000_000);
        assert_eq!(t.block, 16);
        assert_eq!(t.hash, "0xabc");
        assert_eq!(
            t.to.to_string(),
            "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
        );
        assert_eq!(quantity(&json!("0x0")), Some(0));
        assert_eq!(quantity(&json!(format!("0x1{}", "0".repeat(32)))), None);
    }
}
