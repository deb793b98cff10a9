//! The language model the functions use, from configuration: the provider
//! ([`chimera_llm::provider::from_env`]), its price ([`chimera_llm::mind::Prices::from_env`])
//! and the budget ledger that meters it. As deployed, an OpenAI-compatible endpoint's key is
//! read once, at start-up, from the secret `CHIMERA_LLM_API_KEY_SECRET_ARN` names.

use std::sync::Arc;

use anyhow::Context;
use chimera_core::money::MICROS_PER_CENT;
use chimera_llm::ChatResponse;
use chimera_llm::mind::{Charge, Meter, MeterError, Mind, Prices};
use chimera_store::PgPool;
use chimera_store::meter::LedgerMeter;
use futures::future::BoxFuture;

use crate::Clients;
use crate::telemetry::{Emf, Unit};

/// The variable naming the secret that holds the OpenAI-compatible endpoint's key.
pub const API_KEY_SECRET_ARN: &str = "CHIMERA_LLM_API_KEY_SECRET_ARN";

/// The metered model, or `None` with `CHIMERA_LLM=none` (or unset).
pub async fn from_env(clients: &Clients, pool: &PgPool) -> anyhow::Result<Option<Arc<Mind>>> {
    let api_key = api_key_from_secret(clients).await?;
    let Some(model) =
        chimera_llm::provider::from_env(&clients.config, api_key).map_err(anyhow::Error::msg)?
    else {
        return Ok(None);
    };
    let prices = Prices::from_env().map_err(anyhow::Error::msg)?;
    let meter = meter(pool);
    let concurrency = chimera_llm::limit::concurrency_from_env().map_err(anyhow::Error::msg)?;
    let slots = chimera_llm::limit::shared(
        &chimera_llm::provider::endpoint(&clients.config, model.model_id()),
        concurrency,
    );
    let mind = Mind::new(model, &prices, meter)
        .map_err(anyhow::Error::msg)?
        .with_slots(slots);
    tracing::info!(
        model = mind.model_id(),
        concurrency,
        "language model configured"
    );
    Ok(Some(Arc::new(mind)))
}

/// The budget ledger as the model's meter, each answered call also counted in metrics (tokens,
/// spend and latency by model and purpose).
pub fn meter(pool: &PgPool) -> Arc<dyn Meter> {
    Arc::new(Observed(LedgerMeter::new(pool.clone())))
}

struct Observed(LedgerMeter);

impl Meter for Observed {
    fn reserve<'a>(
        &'a self,
        charge: &'a Charge,
        micros: i64,
    ) -> BoxFuture<'a, Result<i64, MeterError>> {
        self.0.reserve(charge, micros)
    }

    fn settle<'a>(
        &'a self,
        charge: &'a Charge,
        micros: i64,
    ) -> BoxFuture<'a, Result<i64, MeterError>> {
        self.0.settle(charge, micros)
    }

    /// Tokens and latency per call; spend as charged (a call charged before under its key, as
    /// a redelivered task's is, adds nothing), in cents with their fraction.
    fn observe(&self, charge: &Charge, response: &ChatResponse, micros: i64) {
        let mut line = Emf::new("model")
            .dimension("Model", response.model.clone())
            .dimension("Purpose", charge.purpose)
            .count("ModelCalls", 1)
            .count("InputTokens", response.usage.input_tokens.into())
            .count("OutputTokens", response.usage.output_tokens.into())
            .metric(
                "SpendCents",
                micros as f64 / MICROS_PER_CENT as f64,
                Unit::None,
            )
            .millis("ModelLatency", response.latency)
            .property("agent_id", charge.agent_id.to_string());
        if let Some(task) = charge.task_id {
            line = line.property("task_id", task.to_string());
        }
        line.emit();
    }
}

/// The models an agent's policy may choose: those the stage prices (`CHIMERA_LLM_PRICES`, or
/// the local model's table), read once. `Err` says why the table does not read.
pub fn stage_models() -> Result<&'static [String], &'static str> {
    static MODELS: std::sync::LazyLock<Result<Vec<String>, String>> =
        std::sync::LazyLock::new(|| Prices::from_env().map(|p| p.0.into_keys().collect()));
    match &*MODELS {
        Ok(models) => Ok(models),
        Err(why) => Err(why),
    }
}

/// The model an agent's policy chose, as a call asks for it: by id only, priced by the stage's
/// table (a policy's own price is never read).
pub fn choice(
    chosen: Option<&chimera_core::routing::ModelChoice>,
) -> Option<chimera_llm::ModelChoice> {
    chosen.map(|m| chimera_llm::ModelChoice {
        id: m.id.clone(),
        price: None,
    })
}

/// The key in the secret, for `CHIMERA_LLM=openai` when the secret is named and no key is set
/// directly: the secret's string, or its JSON's `api_key`.
async fn api_key_from_secret(clients: &Clients) -> anyhow::Result<Option<String>> {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some("openai"), None, Some(arn)) = (
        set("CHIMERA_LLM").as_deref(),
        set("CHIMERA_LLM_API_KEY"),
        set(API_KEY_SECRET_ARN),
    ) else {
        return Ok(None);
    };
    let value = clients
        .secrets
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .with_context(|| format!("reading the model's API key secret {arn}"))?;
    let text = value
        .secret_string()
        .with_context(|| format!("the secret {arn} has no string value"))?;
    Ok(Some(key_of(text).with_context(|| {
        format!("the secret {arn} holds no API key")
    })?))
}

/// A secret's API key: `{"api_key": ...}`, or the whole string.
fn key_of(secret: &str) -> Option<String> {
    let key = match serde_json::from_str::<serde_json::Value>(secret) {
        Ok(serde_json::Value::Object(fields)) => fields.get("api_key")?.as_str()?.to_owned(),
        _ => secret.trim().to_owned(),
    };
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn a_key_secret_is_a_string_or_json_with_api_key() {
        assert_eq!(key_of(" sk-123 \n").as_deref(), Some("sk-123"));
        assert_eq!(key_of(r#"{"api_key": "sk-9"}"#).as_deref(), Some("sk-9"));
        assert_eq!(key_of(r#"{"key": "sk-9"}"#), None);
        assert_eq!(key_of(""), None);
    }
}
