//! The language model the functions use, from configuration: the provider
//! ([`chimera_llm::provider::from_env`]), its price ([`chimera_llm::mind::Prices::from_env`])
//! and the budget ledger that meters it.

use std::sync::Arc;

use chimera_llm::mind::{Mind, Prices};
use chimera_store::PgPool;
use chimera_store::meter::LedgerMeter;

use crate::Clients;

/// The metered model, or `None` with `CHIMERA_LLM=none` (or unset).
pub fn from_env(clients: &Clients, pool: &PgPool) -> anyhow::Result<Option<Arc<Mind>>> {
    let Some(model) =
        chimera_llm::provider::from_env(&clients.config).map_err(anyhow::Error::msg)?
    else {
        return Ok(None);
    };
    let prices = Prices::from_env().map_err(anyhow::Error::msg)?;
    let meter = Arc::new(LedgerMeter::new(pool.clone()));
    let mind = Mind::new(model, &prices, meter).map_err(anyhow::Error::msg)?;
    tracing::info!(model = mind.model_id(), "language model configured");
    Ok(Some(Arc::new(mind)))
}
