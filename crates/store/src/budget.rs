//! The budget ledger: spends that never overdraw, charged once per idempotency key.
//!
//! A spend is one statement (`budget_spend`): under the budget row's lock it checks the key, the
//! balance, decrements and writes the ledger row, so whatever the concurrency the balance never
//! goes below zero and the ledger always sums to what left the budget.
//!
//! Amounts in the ledger are integer micros ([`chimera_core::money`]): a model call's fraction
//! of a cent is kept exactly. Transfers, limits and top-ups are whole cents, converted here.

use chimera_core::domain::{AgentId, AuditRecord, TaskId, TenantId};
use chimera_core::money::{self, from_cents};
use chimera_core::routing::SpendLimits;
use sqlx::{PgConnection, PgExecutor, PgPool};

/// What a spend did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendOutcome {
    /// Charged; the balance after it, in micros.
    Spent { balance_micros: i64 },
    /// This key was charged before (same amount); nothing charged now.
    Duplicate { balance_micros: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("insufficient budget: {} left, {} requested", money::show(*balance_micros), money::show(*requested_micros))]
    Insufficient {
        balance_micros: i64,
        requested_micros: i64,
    },
    #[error("the agent has no budget")]
    NoBudget,
    #[error("idempotency key {0:?} was already used for a different spend")]
    KeyReused(String),
    #[error("amount must be positive, got {0}")]
    InvalidAmount(i64),
    #[error("database error during a budget operation")]
    Database(#[from] sqlx::Error),
    #[error("unreadable budget outcome: {0}")]
    Unreadable(String),
    /// Over a spend limit of the agent's policy.
    #[error("{0}")]
    OverLimit(String),
}

/// Opens an agent's budget with a starting balance, recorded in the ledger as a top-up.
pub async fn open_budget(
    pool: &PgPool,
    agent: AgentId,
    currency: &str,
    balance_cents: i64,
) -> Result<(), BudgetError> {
    if balance_cents < 0 {
        return Err(BudgetError::InvalidAmount(balance_cents));
    }
    let mut tx = pool.begin().await?;
    let micros = from_cents(balance_cents);
    sqlx::query!(
        "insert into budgets (agent_id, currency, balance_micros) values ($1, $2, $3)",
        agent.0,
        currency,
        micros
    )
    .execute(&mut *tx)
    .await?;
    if micros > 0 {
        sqlx::query!(
            "insert into ledger (agent_id, idempotency_key, kind, category, amount_micros, balance_after_micros, memo)
             values ($1, 'opening-balance', 'top_up', 'top_up', $2, $2, 'opening balance')",
            agent.0,
            micros
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Charges `micros` to the agent's budget under `idempotency_key` (on a pool, or inside the
/// caller's transaction with the writes the spend pays for).
pub async fn spend<'e>(
    executor: impl PgExecutor<'e>,
    agent: AgentId,
    idempotency_key: &str,
    micros: i64,
    task: Option<TaskId>,
    memo: Option<&str>,
) -> Result<SpendOutcome, BudgetError> {
    if micros <= 0 {
        return Err(BudgetError::InvalidAmount(micros));
    }
    let row = sqlx::query!(
        r#"select outcome as "outcome!", balance_micros from budget_spend($1, $2, $3, $4, $5)"#,
        agent.0,
        idempotency_key,
        micros,
        task.map(|t| t.0),
        memo
    )
    .fetch_one(executor)
    .await?;
    let balance = || {
        row.balance_micros
            .ok_or_else(|| BudgetError::Unreadable("no balance".into()))
    };
    match row.outcome.as_str() {
        "spent" => Ok(SpendOutcome::Spent {
            balance_micros: balance()?,
        }),
        "duplicate" => Ok(SpendOutcome::Duplicate {
            balance_micros: balance()?,
        }),
        "insufficient" => Err(BudgetError::Insufficient {
            balance_micros: balance()?,
            requested_micros: micros,
        }),
        "no_budget" => Err(BudgetError::NoBudget),
        "key_reused" => Err(BudgetError::KeyReused(idempotency_key.to_owned())),
        other => Err(BudgetError::Unreadable(format!("outcome {other:?}"))),
    }
}

/// What the agent spent today (UTC), in micros, other than under `key`: its transfers net of
/// the released ones (a transfer that did not happen), and its inference net of what settled
/// reservations gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Today {
    pub transfers: i64,
    pub inference: i64,
}

impl Today {
    pub fn total(&self) -> i64 {
        self.transfers.saturating_add(self.inference)
    }
}

pub async fn spent_today(
    conn: &mut PgConnection,
    agent: AgentId,
    key: &str,
) -> Result<Today, sqlx::Error> {
    let row = sqlx::query!(
        r#"select
               coalesce(sum(case kind when 'spend' then amount_micros when 'release' then -amount_micros else 0 end)
                        filter (where category = 'transfer'), 0)::bigint as "transfers!",
               coalesce(sum(case kind when 'spend' then amount_micros when 'release' then -amount_micros else 0 end)
                        filter (where category = 'inference'), 0)::bigint as "inference!"
           from ledger
           where agent_id = $1 and idempotency_key <> $2
             and created_at >= date_trunc('day', now() at time zone 'utc') at time zone 'utc'"#,
        agent.0,
        key
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Today {
        transfers: row.transfers,
        inference: row.inference,
    })
}

/// Why a transfer of `amount` cents breaks `limits`, given what was spent today: per transfer,
/// per day (inference and transfers together), and for a payment approved without a person
/// (`auto`), the day's auto-pay limit (transfers only; none set: nothing goes alone).
pub fn over_limits(amount: i64, today: Today, limits: &SpendLimits, auto: bool) -> Option<String> {
    let limit = |cents: u64| from_cents(i64::try_from(cents).unwrap_or(i64::MAX));
    let micros = from_cents(amount);
    if let Some(max) = limits.per_transfer_cents
        && micros > limit(max)
    {
        return Some(format!(
            "{amount} cents is over the policy's limit of {max} cents per transfer"
        ));
    }
    let total = today.total().saturating_add(micros);
    if let Some(max) = limits.per_day_cents
        && total > limit(max)
    {
        return Some(format!(
            "{amount} cents would make {} spent today (transfers and inference), over the policy's limit of {max} cents a day",
            money::show(total)
        ));
    }
    if auto {
        let paid = today.transfers.saturating_add(micros);
        match limits.auto_pay_per_day_cents {
            Some(max) if paid > limit(max) => {
                return Some(format!(
                    "{amount} cents would make {} paid today without a person, over the auto-pay limit of {max} cents",
                    money::show(paid)
                ));
            }
            None => return Some("the policy sets no auto-pay limit".to_owned()),
            Some(_) => {}
        }
    }
    None
}

/// A transfer's spend of `amount` cents within the policy's `limits` (and its auto-pay limit when it goes
/// without a person, `auto`): under the budget row's lock (so concurrent approvals and model
/// calls of one agent see each other's spend), refused with [`BudgetError::OverLimit`] when it
/// breaks one; a key charged before is a duplicate whatever the limits say now.
#[allow(clippy::too_many_arguments)]
pub async fn spend_transfer(
    tx: &mut PgConnection,
    agent: AgentId,
    key: &str,
    amount: i64,
    task: Option<TaskId>,
    memo: Option<&str>,
    limits: &SpendLimits,
    auto: bool,
) -> Result<SpendOutcome, BudgetError> {
    let locked = sqlx::query_scalar!(
        "select balance_micros from budgets where agent_id = $1 for update",
        agent.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    if locked.is_none() {
        return Err(BudgetError::NoBudget);
    }
    let charged_before = sqlx::query_scalar!(
        r#"select exists (select 1 from ledger where agent_id = $1 and idempotency_key = $2) as "found!""#,
        agent.0,
        key
    )
    .fetch_one(&mut *tx)
    .await?;
    if !charged_before {
        let today = spent_today(tx, agent, key).await?;
        if let Some(why) = over_limits(amount, today, limits, auto) {
            return Err(BudgetError::OverLimit(why));
        }
    }
    spend(&mut *tx, agent, key, from_cents(amount), task, memo).await
}

/// Reserves a model call's worst case, `micros` (> 0), under the budget row's lock and the key
/// `key`, as inference: refused when the balance cannot cover it
/// ([`BudgetError::Insufficient`]) or when it would take the day's spend (inference and
/// transfers) over the agent's policy's `spend.per_day_cents` ([`BudgetError::OverLimit`]).
/// Returns what it reserved: 0 when `key` was reserved before (a redelivered call).
pub async fn reserve_inference(
    pool: &PgPool,
    agent: AgentId,
    key: &str,
    micros: i64,
    task: Option<TaskId>,
    memo: &str,
) -> Result<i64, BudgetError> {
    if micros <= 0 {
        return Err(BudgetError::InvalidAmount(micros));
    }
    let mut tx = pool.begin().await?;
    let Some(locked) = sqlx::query!(
        r#"select b.balance_micros, (p.document -> 'spend' ->> 'per_day_cents')::bigint as per_day
           from budgets b
           join agents a on a.id = b.agent_id
           join policies p on p.agent_id = a.id and p.version = a.policy_version
           where b.agent_id = $1 for update of b"#,
        agent.0
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Err(BudgetError::NoBudget);
    };
    let before = sqlx::query_scalar!(
        r#"select exists (select 1 from ledger where agent_id = $1 and idempotency_key = $2) as "found!""#,
        agent.0,
        key
    )
    .fetch_one(&mut *tx)
    .await?;
    if before {
        return Ok(0);
    }
    if locked.balance_micros < micros {
        return Err(BudgetError::Insufficient {
            balance_micros: locked.balance_micros,
            requested_micros: micros,
        });
    }
    if let Some(max) = locked.per_day {
        let total = spent_today(&mut tx, agent, key)
            .await?
            .total()
            .saturating_add(micros);
        if total > from_cents(max) {
            return Err(BudgetError::OverLimit(format!(
                "a model call that may cost {} would make {} spent today, over the policy's limit of {max} cents a day",
                money::show(micros),
                money::show(total)
            )));
        }
    }
    sqlx::query!(
        "insert into ledger (agent_id, idempotency_key, kind, category, amount_micros, balance_after_micros, task_id, memo)
         values ($1, $2, 'spend', 'inference', $3, $4, $5, $6)",
        agent.0,
        key,
        micros,
        locked.balance_micros - micros,
        task.map(|t| t.0),
        memo
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update budgets set balance_micros = balance_micros - $2, updated_at = now() where agent_id = $1",
        agent.0,
        micros
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(micros)
}

/// Settles the reservation under `key` at what the call cost, `micros`: the rest goes back to
/// the balance (a `release` row); a call that cost more than its reservation is charged the
/// difference, as far as the balance goes (an `:over` row, the shortfall logged). Settling
/// twice changes nothing. Returns what the call was charged in all, or 0 when it was settled
/// before (a redelivered call: its spend was counted then).
pub async fn settle_inference(
    pool: &PgPool,
    agent: AgentId,
    key: &str,
    micros: i64,
) -> Result<i64, BudgetError> {
    let mut tx = pool.begin().await?;
    let Some(balance) = sqlx::query_scalar!(
        "select balance_micros from budgets where agent_id = $1 for update",
        agent.0
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Err(BudgetError::NoBudget);
    };
    let rows = sqlx::query!(
        r#"select idempotency_key as "key!", amount_micros, task_id, memo from ledger
           where agent_id = $1 and idempotency_key in ($2, $2 || ':release', $2 || ':over')"#,
        agent.0,
        key
    )
    .fetch_all(&mut *tx)
    .await?;
    let Some(reserved) = rows.iter().find(|r| r.key == key) else {
        return Ok(0);
    };
    let settled_before = rows.iter().any(|r| r.key != key);
    let cost = micros.max(0);
    if settled_before {
        return Ok(0);
    }
    if cost == reserved.amount_micros {
        return Ok(cost);
    }
    let (kind, suffix, amount) = if cost < reserved.amount_micros {
        ("release", "release", reserved.amount_micros - cost)
    } else {
        (
            "spend",
            "over",
            (cost - reserved.amount_micros).min(balance),
        )
    };
    if kind == "spend" && amount < cost - reserved.amount_micros {
        tracing::warn!(agent_id = %agent.0, key, micros = cost, balance, "model call cost more than its reservation and the budget had left");
    }
    if amount > 0 {
        let after = if kind == "release" {
            balance + amount
        } else {
            balance - amount
        };
        sqlx::query!(
            "insert into ledger (agent_id, idempotency_key, kind, category, amount_micros, balance_after_micros, task_id, memo)
             values ($1, $2, $3::text::ledger_kind, 'inference', $4, $5, $6, $7)",
            agent.0,
            format!("{key}:{suffix}"),
            kind,
            amount,
            after,
            reserved.task_id,
            reserved.memo
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "update budgets set balance_micros = $2, updated_at = now() where agent_id = $1",
            agent.0,
            after
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(if kind == "release" {
        cost
    } else {
        reserved.amount_micros + amount
    })
}

/// The current balance in micros, if the agent has a budget.
pub async fn balance(pool: &PgPool, agent: AgentId) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "select balance_micros from budgets where agent_id = $1",
        agent.0
    )
    .fetch_optional(pool)
    .await
}

/// What a top-up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopUp {
    pub balance_micros: i64,
    /// This key topped the budget up before (by the same amount): nothing added now.
    pub duplicate: bool,
}

/// Adds `amount_cents` (> 0) to the agent's budget once per `key`, recorded as a top-up. The
/// same key with another amount is [`BudgetError::KeyReused`].
pub async fn top_up(
    pool: &PgPool,
    agent: AgentId,
    key: &str,
    amount_cents: i64,
    memo: Option<&str>,
    by: &str,
) -> Result<TopUp, BudgetError> {
    if amount_cents <= 0 {
        return Err(BudgetError::InvalidAmount(amount_cents));
    }
    let micros = from_cents(amount_cents);
    let mut tx = pool.begin().await?;
    let Some(row) = sqlx::query!(
        "select b.balance_micros, a.tenant_id from budgets b join agents a on a.id = b.agent_id
         where b.agent_id = $1 for update of b",
        agent.0
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Err(BudgetError::NoBudget);
    };
    let balance = row.balance_micros;
    let prior = sqlx::query!(
        r#"select kind::text as "kind!", amount_micros from ledger
           where agent_id = $1 and idempotency_key = $2"#,
        agent.0,
        key
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(prior) = prior {
        return if prior.kind == "top_up" && prior.amount_micros == micros {
            Ok(TopUp {
                balance_micros: balance,
                duplicate: true,
            })
        } else {
            Err(BudgetError::KeyReused(key.to_owned()))
        };
    }
    let after = balance
        .checked_add(micros)
        .ok_or(BudgetError::InvalidAmount(amount_cents))?;
    sqlx::query!(
        "insert into ledger (agent_id, idempotency_key, kind, category, amount_micros, balance_after_micros, memo)
         values ($1, $2, 'top_up', 'top_up', $3, $4, $5)",
        agent.0,
        key,
        micros,
        after,
        memo
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update budgets set balance_micros = $2, updated_at = now() where agent_id = $1",
        agent.0,
        after
    )
    .execute(&mut *tx)
    .await?;
    let mut entry = AuditRecord::new(
        TenantId(row.tenant_id),
        by,
        "budget.topped_up",
        chrono::Utc::now(),
    );
    entry.reasoning = Some(format!(
        "agent {}: {amount_cents} cents added ({}), balance {}",
        agent.0,
        memo.unwrap_or("no memo"),
        money::show(after)
    ));
    crate::audit::append(&mut *tx, &entry).await?;
    tx.commit().await?;
    Ok(TopUp {
        balance_micros: after,
        duplicate: false,
    })
}

/// One ledger row. Amounts are micros (10,000 to the cent): a model call's fraction of a cent
/// is kept exactly.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub id: i64,
    /// `spend`, `top_up`, or `release` (what a settled model call gave back of its reservation).
    pub kind: String,
    /// `top_up`, `transfer`, `inference` or `tool`.
    pub category: String,
    pub amount_micros: i64,
    pub balance_after_micros: i64,
    pub idempotency_key: String,
    pub task_id: Option<uuid::Uuid>,
    pub memo: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The agent's ledger, newest first: at most `limit` rows older than the row `before` (all
/// when `None`), of `category` when given.
pub async fn ledger(
    pool: &PgPool,
    agent: AgentId,
    category: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as!(
        Entry,
        r#"select id, kind::text as "kind!", category::text as "category!", amount_micros,
                  balance_after_micros, idempotency_key, task_id, memo, created_at
           from ledger
           where agent_id = $1 and ($2::text is null or category::text = $2)
             and ($3::bigint is null or id < $3)
           order by id desc
           limit $4"#,
        agent.0,
        category,
        before,
        limit
    )
    .fetch_all(pool)
    .await
}
