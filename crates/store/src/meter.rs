//! The budget ledger as the language-model port's meter: a model call is authorized against
//! the agent's balance and charged as inference ([`budget::charge_inference`]).

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

impl Meter for LedgerMeter {
    fn balance(&self, agent: uuid::Uuid) -> BoxFuture<'_, Result<i64, MeterError>> {
        Box::pin(async move {
            budget::balance(&self.pool, AgentId(agent))
                .await
                .map_err(unavailable)?
                .ok_or(MeterError::NoBudget)
        })
    }

    fn charge<'a>(
        &'a self,
        charge: &'a Charge,
        cents: i64,
    ) -> BoxFuture<'a, Result<i64, MeterError>> {
        Box::pin(async move {
            budget::charge_inference(
                &self.pool,
                AgentId(charge.agent_id),
                &charge.key,
                cents,
                charge.task_id.map(TaskId),
                &charge.memo,
            )
            .await
            .map_err(|err| match err {
                BudgetError::NoBudget => MeterError::NoBudget,
                other => unavailable(other),
            })
        })
    }
}
