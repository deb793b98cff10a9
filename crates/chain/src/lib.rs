//! Chimera's EVM chain port.
//!
//! - [`key`]: an agent's wallet key, generated at onboarding and kept in Secrets Manager
//!   (`<stage>/agents/<agent id>/wallet`), never in PostgreSQL, logs or the API; its
//!   [`Address`] is public and is what the rest of Chimera knows of the wallet.
//! - [`rpc`]: the reads Chimera makes of the chain itself over JSON-RPC (an agent's balances for
//!   the API, receipts and token transfers for the reconciler). Transfers are never sent from
//!   here: they go through the wallet's MCP server (AgentKit), behind an approval.
//! - [`units`]: budgets count cents, a stablecoin counts its smallest units.

pub mod key;
pub mod rpc;
pub mod units;

pub use key::{Address, KeyError, WalletKey};
pub use rpc::{Chain, Receipt, RpcError, TokenTransfer};
