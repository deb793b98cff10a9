//! Tokens are money: a model behind a price table and a budget meter.
//!
//! [`Mind::call`] prices the call's worst case (the prompt's tokens, estimated from its length,
//! plus `max_tokens` of answer) and refuses it, before anything is sent, when the agent's
//! balance cannot cover it. After the answer it charges what the call cost, in micros
//! (millionths of the currency unit, rounded up per call), under the caller's idempotency key:
//! a redelivered task that calls again under the same key is charged once. A call refused or
//! never answered is not charged; one answered unusably is charged the tokens it reported (its
//! worst case when it reported none, or when no answer came in time).
//!
//! Every call has a time by which it must have answered ([`answer_by`] derives it from the
//! invocation's deadline): a handler that waits on a slow model past its own deadline would be
//! cut off by Lambda with nothing recorded, so the call gives up first and the caller falls back
//! or retries.
//!
//! The meter is a port ([`Meter`]); the store implements it on the budget ledger.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::limit::Slots;
use crate::{ChatRequest, ChatResponse, LanguageModel, LlmError, Usage};

/// A model's price, in cents per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_cents_per_mtok: f64,
    pub output_cents_per_mtok: f64,
}

/// Prices by model id.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Prices(pub BTreeMap<String, Price>);

impl Prices {
    /// `CHIMERA_LLM_PRICES`: a JSON object of model id -> price; the local model's price
    /// (what a hosted model of its size costs) when unset.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("CHIMERA_LLM_PRICES")
            .ok()
            .filter(|v| !v.is_empty())
        {
            None => Ok(Self::local()),
            Some(json) => {
                let prices: Self = serde_json::from_str(&json)
                    .map_err(|e| format!("CHIMERA_LLM_PRICES is not a price table: {e}"))?;
                prices.check()?;
                Ok(prices)
            }
        }
    }

    /// The local stack's model.
    pub fn local() -> Self {
        Self(BTreeMap::from([(
            "smollm2-135m-instruct".to_owned(),
            Price {
                input_cents_per_mtok: 10.0,
                output_cents_per_mtok: 20.0,
            },
        )]))
    }

    fn check(&self) -> Result<(), String> {
        for (model, p) in &self.0 {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(p.input_cents_per_mtok) || !ok(p.output_cents_per_mtok) {
                return Err(format!(
                    "the price of {model} must be finite and not negative"
                ));
            }
        }
        Ok(())
    }

    pub fn get(&self, model: &str) -> Option<Price> {
        self.0.get(model).copied()
    }
}

impl Price {
    /// What `usage` costs, in micros (millionths of the currency unit: a cent per million
    /// tokens is a hundredth of a micro per token), rounded up.
    pub fn micros(&self, usage: Usage) -> i64 {
        let hundredths = f64::from(usage.input_tokens) * self.input_cents_per_mtok
            + f64::from(usage.output_tokens) * self.output_cents_per_mtok;
        (hundredths / 100.0).ceil() as i64
    }
}

/// The most `request` can use: the prompt's tokens (about one per three characters, plus a
/// few per message) and all of `max_tokens`.
pub fn worst_case(request: &ChatRequest) -> Usage {
    let prompt: usize = request
        .messages
        .iter()
        .map(|m| m.content.len() / 3 + 8)
        .sum();
    let schema = request
        .output
        .as_ref()
        .map_or(0, |o| o.schema.to_string().len() / 3);
    Usage {
        input_tokens: u32::try_from(prompt + schema).unwrap_or(u32::MAX),
        output_tokens: request.max_tokens,
    }
}

/// Whom a call is charged to, and under which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub agent_id: uuid::Uuid,
    /// The task the call works for, if any.
    pub task_id: Option<uuid::Uuid>,
    /// Unique per call: derived from the task attempt and the call's purpose, so a redelivered
    /// task is not charged twice.
    pub key: String,
    /// What the call is for (`plan`, `draft`, `judge`...): the metrics' dimension.
    pub purpose: &'static str,
    pub memo: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("the agent has no budget")]
    NoBudget,
    /// The balance cannot cover the call's worst case (micros).
    #[error("the budget has {balance} micros left, the call may cost {needed}")]
    Insufficient { needed: i64, balance: i64 },
    /// The call would take the day's spend over the agent's limit.
    #[error("{0}")]
    OverLimit(String),
    #[error("the budget ledger is unavailable: {0}")]
    Unavailable(String),
}

/// The budget ledger, as the mind needs it: a call's worst case is reserved before it is sent
/// and the reservation settled at what it cost.
pub trait Meter: Send + Sync {
    /// Reserves `micros` (> 0, the call's worst case) under the budget's lock, once per
    /// `charge.key`; returns what it reserved (0 when the key was reserved before).
    fn reserve<'a>(
        &'a self,
        charge: &'a Charge,
        micros: i64,
    ) -> BoxFuture<'a, Result<i64, MeterError>>;

    /// Settles the reservation of `charge.key` at `micros`, what the call cost (the rest goes
    /// back; more is charged as far as the balance goes); returns what the call was charged.
    fn settle<'a>(
        &'a self,
        charge: &'a Charge,
        micros: i64,
    ) -> BoxFuture<'a, Result<i64, MeterError>>;

    /// Told of every answered call, after its charge, with what the charge took in micros (0
    /// for a call charged before under its key): for metrics; nothing by default.
    fn observe(&self, _charge: &Charge, _response: &ChatResponse, _charged: i64) {}
}

/// Why a metered call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum MindError {
    /// Refused before it was sent: the budget cannot cover the call's worst case (micros).
    #[error("model call refused: it may cost {needed} micros and the budget has {balance} left")]
    OverBudget { needed: i64, balance: i64 },
    /// A call chose a model nobody priced: it is not sent.
    #[error("model call refused: model {0} is not in the stage's price table (CHIMERA_LLM_PRICES)")]
    Unpriced(String),
    #[error(transparent)]
    Meter(#[from] MeterError),
    #[error(transparent)]
    Model(#[from] LlmError),
}

impl MindError {
    /// Whether the same call can succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::OverBudget { .. }
            | Self::Unpriced(_)
            | Self::Meter(
                MeterError::NoBudget | MeterError::Insufficient { .. } | MeterError::OverLimit(_),
            ) => false,
            Self::Meter(MeterError::Unavailable(_)) => true,
            Self::Model(err) => err.is_retryable(),
        }
    }
}

/// When a model call made during an invocation that must answer by `deadline` has to have
/// answered: early enough to record what follows (a quarter of the time left, at most 5 s).
pub fn answer_by(deadline: SystemTime) -> Instant {
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left - (left / 4).min(Duration::from_secs(5))
}

/// A model with its price and the meter that charges its calls.
pub struct Mind {
    model: Arc<dyn LanguageModel>,
    price: Price,
    /// The prices of models a call may choose instead ([`ChatRequest::model`]).
    prices: Prices,
    meter: Arc<dyn Meter>,
    /// The endpoint's call slots ([`crate::limit`]); unbounded when `None`.
    slots: Option<Arc<Slots>>,
}

/// A metered answer: the model's, and the micros it cost.
#[derive(Debug, Clone)]
pub struct Answer {
    pub response: ChatResponse,
    pub micros: i64,
}

impl Mind {
    /// Refuses a model without a price: every call must be chargeable.
    pub fn new(
        model: Arc<dyn LanguageModel>,
        prices: &Prices,
        meter: Arc<dyn Meter>,
    ) -> Result<Self, String> {
        let price = prices.get(model.model_id()).ok_or_else(|| {
            format!(
                "no price for model {} (set CHIMERA_LLM_PRICES)",
                model.model_id()
            )
        })?;
        Ok(Self {
            model,
            price,
            prices: prices.clone(),
            meter,
            slots: None,
        })
    }

    /// Takes one of `slots` for each call ([`crate::limit::shared`]).
    pub fn with_slots(mut self, slots: Arc<Slots>) -> Self {
        self.slots = Some(slots);
        self
    }

    /// The price of the model `request` asks: the configured one's, or the chosen one's from
    /// the stage's price table, which wins over any price the choice carries.
    fn price_of(&self, request: &ChatRequest) -> Result<Price, MindError> {
        match &request.model {
            None => Ok(self.price),
            Some(choice) => self
                .prices
                .get(&choice.id)
                .ok_or_else(|| MindError::Unpriced(choice.id.clone())),
        }
    }

    /// Whether the stage prices (and so allows) model `id`.
    pub fn offers(&self, id: &str) -> bool {
        self.model.model_id() == id || self.prices.get(id).is_some()
    }

    pub fn model_id(&self) -> &str {
        self.model.model_id()
    }

    /// One call: its worst case reserved under the budget's lock before it is sent (refused
    /// when the balance or the day's limit cannot cover it), the reservation settled at what
    /// the answer used. A call answered unusably (too large, not of the schema) is charged the
    /// tokens the model reported for it, or keeps its reservation when it reported none; one
    /// with no answer in time keeps its reservation (it may have used all of it); one refused
    /// or unreachable gives it back. It gives up when no answer came `by` then.
    pub async fn call(
        &self,
        charge: &Charge,
        request: &ChatRequest,
        by: Instant,
    ) -> Result<Answer, MindError> {
        let price = self.price_of(request)?;
        // A slot first: a call that cannot be sent in time reserves nothing.
        let _slot = match &self.slots {
            None => None,
            Some(slots) => Some(slots.take(by).await.ok_or_else(|| {
                LlmError::Busy(format!(
                    "none of this process's {} call slots freed in time",
                    slots.size()
                ))
            })?),
        };
        let needed = price.micros(worst_case(request));
        if needed > 0 {
            self.meter
                .reserve(charge, needed)
                .await
                .map_err(|err| match err {
                    MeterError::Insufficient { needed, balance } => {
                        MindError::OverBudget { needed, balance }
                    }
                    other => MindError::Meter(other),
                })?;
        }
        let left = by.saturating_duration_since(Instant::now());
        let answered = tokio::time::timeout(left, self.model.chat(request))
            .await
            .map_err(|_| LlmError::Timeout(left))
            .and_then(|answer| answer);
        let response = match answered {
            Ok(response) => response,
            Err(err) => {
                if needed > 0 {
                    let cost = match (&err, err.used()) {
                        (_, Some(used)) => price.micros(used),
                        (
                            LlmError::Timeout(_)
                            | LlmError::TooLarge { .. }
                            | LlmError::InvalidOutput { .. },
                            None,
                        ) => needed,
                        _ => 0,
                    };
                    self.meter.settle(charge, cost).await?;
                }
                return Err(err.into());
            }
        };
        let micros = price.micros(response.usage);
        let charged = if needed > 0 || micros > 0 {
            self.meter.settle(charge, micros).await?
        } else {
            0
        };
        self.meter.observe(charge, &response, charged);
        tracing::info!(model = %response.model, key = %charge.key, input_tokens = response.usage.input_tokens,
                       output_tokens = response.usage.output_tokens, micros,
                       latency_ms = response.latency.as_millis() as u64, "model call");
        Ok(Answer { response, micros })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn calls_are_priced_in_micros_rounded_up() {
        let price = Price {
            input_cents_per_mtok: 300.0,
            output_cents_per_mtok: 1500.0,
        };
        let usage = |i, o| Usage {
            input_tokens: i,
            output_tokens: o,
        };
        // 300 cents per million input tokens: 3 micros a token.
        assert_eq!(price.micros(usage(0, 0)), 0);
        assert_eq!(price.micros(usage(100, 10)), 450);
        assert_eq!(price.micros(usage(1, 0)), 3);
        assert_eq!(price.micros(usage(1_000_000, 0)), 3_000_000);
        assert_eq!(price.micros(usage(1_000_000, 1_000_000)), 18_000_000);
        let cheap = Price {
            input_cents_per_mtok: 10.0,
            output_cents_per_mtok: 20.0,
        };
        // A tenth of a micro per token, rounded up per call.
        assert_eq!(cheap.micros(usage(35, 0)), 4);
        let request = ChatRequest {
            model: None,
            messages: vec![Message::user("x".repeat(300))],
            output: None,
            max_tokens: 50,
            temperature: 0.0,
            seed: None,
        };
        assert_eq!(worst_case(&request), usage(108, 50));
    }

    #[test]
    fn price_tables_come_from_configuration_and_are_checked() {
        let table: Prices = serde_json::from_str(
            r#"{"m": {"input_cents_per_mtok": 1, "output_cents_per_mtok": 2}}"#,
        )
        .unwrap();
        assert!(table.check().is_ok());
        assert!(table.get("m").is_some() && table.get("n").is_none());
        let negative: Prices = serde_json::from_str(
            r#"{"m": {"input_cents_per_mtok": -1, "output_cents_per_mtok": 2}}"#,
        )
        .unwrap();
        assert!(negative.check().is_err());
        assert!(Prices::local().get("smollm2-135m-instruct").is_some());
    }
}
