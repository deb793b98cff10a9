//! The budget ledger as the language-model port's meter: a model call's worst case is reserved
//! under the budget's lock ([`budget::reserve_inference`]) and settled at what it cost
//! ([`budget::settle_inference`]), as inference.

use chimera_core::domain::{AgentId, TaskId};
use chimera_llm::mind::{Charge, Meter, MeterError};
use futures::future::BoxFuture;
use sqlx::PgPool;

use crate::budget::{self, BudgetError};

#[derive(Clone)]
pub struct LedgerMeter {
    pool: PgPool,
}

impl LedgerMeter {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn unavailable(err: impl std::fmt::Display) -> MeterError {
    MeterError::Unavailable(err.to_string())
}

fn refused(err: BudgetError) -> MeterError {
    match err {
        BudgetError::NoBudget => MeterError::NoBudget,
        BudgetError::Insufficient {
            balance_micros,
            requested_micros,
        } => MeterError::Insufficient {
            needed: requested_micros,
            balance: balance_micros,
        },
        BudgetError::OverLimit(why) => MeterError::OverLimit(why),
        other => unavailable(other),
    }
}

impl Meter for LedgerMeter {
    fn reserve<'a>(
        &'a self,
        charge: &'a Charge,
        micros: i64,
    ) -> BoxFuture<'a, Result<i64, MeterError>> {
        Box::pin(async move {
            budget::reserve_inference(
                &self.pool,
                AgentId(charge.agent_id),
                &charge.key,
                micros,
                charge.task_id.map(TaskId),
                &charge.memo,
            )
            .await
            .map_err(refused)
        })
    }

    fn settle<'a>(
        &'a self,
        charge: &'a Charge,
        micros: i64,
    ) -> BoxFuture<'a, Result<i64, MeterError>> {
        Box::pin(async move {
            budget::settle_inference(&self.pool, AgentId(charge.agent_id), &charge.key, micros)
                .await
                .map_err(refused)
        })
    }
}
