//! Wallets against the chain: what the reconciler needs from the effect ledger to compare an
//! agent's settled transfers with the chain, and where it keeps what it found.
//!
//! A transfer is compared as it was approved (the execute task's arguments: payee, cents,
//! token), never as its tool reported it; the ledger gives the transaction's hash. What the
//! reconciler last found for each wallet is in `wallet_checks`; a difference is audited
//! (`wallet.difference`) when it appears or changes, and its end (`wallet.agrees`) once.

use chimera_core::domain::{AgentId, AuditRecord, TenantId};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::audit;

/// A transfer the ledger holds as confirmed, as approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledTransfer {
    pub approval_id: uuid::Uuid,
    /// The transaction's hash (the effect's platform id).
    pub hash: String,
    /// The payee, the amount and the token, as approved.
    pub to: Option<String>,
    pub amount_cents: Option<i64>,
    pub token: Option<String>,
}

/// A wallet to compare with the chain.
#[derive(Debug, Clone)]
pub struct Wallet {
    pub agent_id: AgentId,
    pub tenant_id: TenantId,
    pub address: String,
    pub transfers: Vec<SettledTransfer>,
}

/// Up to `limit` wallets, those checked longest ago (or never) first, each with its settled
/// transfers; a wallet with a transfer whose outcome is not settled yet waits for the next
/// pass (the chain may show it before the ledger does).
pub async fn due(pool: &PgPool, limit: i64) -> Result<Vec<Wallet>, sqlx::Error> {
    let agents = sqlx::query!(
        r#"select a.id, a.tenant_id, a.wallet_address as "wallet_address!"
           from agents a left join wallet_checks c on c.agent_id = a.id
           where a.wallet_address is not null
             -- A transfer on its way is compared once it settled.
             and not exists (select 1 from effects e where e.agent_id = a.id
                             and e.op = 'transfer' and e.state in ('sent', 'unknown'))
           order by c.checked_at nulls first, a.id
           limit $1"#,
        limit
    )
    .fetch_all(pool)
    .await?;
    let ids: Vec<uuid::Uuid> = agents.iter().map(|a| a.id).collect();
    let transfers = sqlx::query!(
        r#"select e.agent_id, e.approval_id, e.platform_ref as "hash!",
                  t.inputs #>> '{arguments,to}' as "to?",
                  (t.inputs #>> '{arguments,amount_cents}')::bigint as "amount_cents?",
                  t.inputs #>> '{arguments,token}' as "token?"
           from effects e join tasks t on t.approval_id = e.approval_id
           where e.agent_id = any($1) and e.op = 'transfer' and e.state = 'confirmed'
             and e.platform_ref is not null
           order by e.settled_at"#,
        &ids
    )
    .fetch_all(pool)
    .await?;
    Ok(agents
        .into_iter()
        .map(|a| Wallet {
            agent_id: AgentId(a.id),
            tenant_id: TenantId(a.tenant_id),
            address: a.wallet_address,
            transfers: transfers
                .iter()
                .filter(|t| t.agent_id == a.id)
                .map(|t| SettledTransfer {
                    approval_id: t.approval_id,
                    hash: t.hash.to_lowercase(),
                    to: t.to.clone(),
                    amount_cents: t.amount_cents,
                    token: t.token.clone(),
                })
                .collect(),
        })
        .collect())
}

/// What one comparison found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub block: u64,
    /// The token's balance on chain, and what the ledger says it should be, in its units.
    pub balance_units: u128,
    pub expected_units: u128,
    /// Each difference, as a sentence; empty when they agree.
    pub differences: Vec<String>,
}

/// What recording a check changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Same finding as last time: nothing audited.
    Unchanged,
    /// A difference appeared or changed: audited.
    Differs,
    /// The wallet agrees with the ledger again: audited.
    Agrees,
    /// First check, and they agree.
    FirstAgrees,
}

/// Records `check` of `wallet` at `now`, auditing a difference when it appears or changes.
pub async fn record(
    pool: &PgPool,
    wallet: &Wallet,
    check: &Check,
    now: DateTime<Utc>,
) -> Result<Recorded, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let before = sqlx::query_scalar!(
        "select differences from wallet_checks where agent_id = $1 for update",
        wallet.agent_id.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into wallet_checks (agent_id, address, checked_at, block, balance_units,
                                    expected_units, differences)
         values ($1, $2, $3, $4, $5::text::numeric, $6::text::numeric, $7)
         on conflict (agent_id) do update set address = excluded.address,
             checked_at = excluded.checked_at, block = excluded.block,
             balance_units = excluded.balance_units, expected_units = excluded.expected_units,
             differences = excluded.differences",
        wallet.agent_id.0,
        wallet.address,
        now,
        i64::try_from(check.block).unwrap_or(i64::MAX),
        check.balance_units.to_string(),
        check.expected_units.to_string(),
        &check.differences
    )
    .execute(&mut *tx)
    .await?;
    let recorded = match (&before, check.differences.is_empty()) {
        (Some(was), _) if *was == check.differences => Recorded::Unchanged,
        (None, true) => Recorded::FirstAgrees,
        (Some(_), true) => Recorded::Agrees,
        (_, false) => Recorded::Differs,
    };
    let action = match recorded {
        Recorded::Differs => "wallet.difference",
        Recorded::Agrees => "wallet.agrees",
        Recorded::Unchanged | Recorded::FirstAgrees => {
            tx.commit().await?;
            return Ok(recorded);
        }
    };
    let reasoning = if check.differences.is_empty() {
        format!(
            "agent {} wallet {}: the chain agrees with the ledger again (balance {} units at block {})",
            wallet.agent_id.0, wallet.address, check.balance_units, check.block
        )
    } else {
        format!(
            "agent {} wallet {} at block {}: balance {} units on chain, {} by the ledger; {}",
            wallet.agent_id.0,
            wallet.address,
            check.block,
            check.balance_units,
            check.expected_units,
            check.differences.join("; ")
        )
    };
    let entry = AuditRecord {
        reasoning: Some(reasoning),
        ..AuditRecord::new(wallet.tenant_id, "reconciler", action, now)
    };
    audit::append(&mut *tx, &entry).await?;
    tx.commit().await?;
    Ok(recorded)
}

/// The differences last found for `agent` (empty when none, or never checked).
pub async fn differences(pool: &PgPool, agent: AgentId) -> Result<Vec<String>, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "select differences from wallet_checks where agent_id = $1",
        agent.0
    )
    .fetch_optional(pool)
    .await?
    .unwrap_or_default())
}
