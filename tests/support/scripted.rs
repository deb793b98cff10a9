//! A scripted double of the language-model port, for tests that need a model that misbehaves
//! on purpose: one that drafts what it is told (or obeys whatever instructions its data
//! carries), and whose rubric readings are out of range, invalid or late. Plans are refused,
//! so the planner's templates plan.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chimera_llm::{ChatRequest, ChatResponse, LanguageModel, LlmError, Usage};
use futures::future::BoxFuture;
use serde_json::json;

/// What the double drafts.
#[derive(Debug, Clone)]
pub enum Draft {
    /// This text, whatever it was asked.
    Fixed(String),
    /// Obeys its data: drafts the brief it was given, word for word, instructions included,
    /// and adds every link the brief asks for.
    Obedient,
}

/// What the double's rubric reading is.
#[derive(Debug, Clone, Copy)]
pub enum Reading {
    /// A well-formed reading with this score, no topics, "clear".
    Score(f64),
    /// A score of 2 on a 0..1 scale.
    OutOfRange,
    /// Text that is not the schema's JSON: refused as the adapters refuse it, with the tokens
    /// the model reported for it ([`USED`]).
    Invalid,
    /// No answer in time.
    Timeout,
}

pub struct Scripted {
    pub model_id: String,
    pub draft: Draft,
    pub reading: Reading,
    /// Calls it received.
    pub calls: AtomicUsize,
    /// The drafting requests it received (plain-text answers), in order.
    pub drafts: Mutex<Vec<ChatRequest>>,
}

impl Scripted {
    /// A double under the local model's id (so the local price table charges it).
    pub fn new(draft: Draft, reading: Reading) -> Self {
        Self {
            model_id: crate::stack_env("CHIMERA_LLM_MODEL"),
            draft,
            reading,
            calls: AtomicUsize::new(0),
            drafts: Mutex::new(Vec::new()),
        }
    }
}

/// The brief's `<data>` block of the request's user message (the first block when none is
/// titled "Brief").
fn first_data(request: &ChatRequest) -> String {
    let user = request
        .messages
        .iter()
        .rev()
        .map(|m| m.content.as_str())
        .next()
        .unwrap_or_default();
    let user = user.find("Brief:\n<data>\n").map_or(user, |at| &user[at..]);
    user.split_once("<data>\n")
        .and_then(|(_, rest)| rest.split_once("\n</data>"))
        .map(|(inner, _)| inner.to_owned())
        .unwrap_or_default()
}

/// The tokens every answer of the double reports.
pub const USED: Usage = Usage {
    input_tokens: 50,
    output_tokens: 20,
};

fn answer(text: String, json: Option<serde_json::Value>, model: &str) -> ChatResponse {
    ChatResponse {
        text,
        json,
        usage: USED,
        model: model.to_owned(),
        latency: Duration::from_millis(1),
        truncated: false,
    }
}

impl LanguageModel for Scripted {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, LlmError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match request.output.as_ref().map(|o| o.name.as_str()) {
                Some("review") => match self.reading {
                    Reading::Score(score) => {
                        let json = json!({"score": score, "topics": [], "reasons": ["clear"]});
                        Ok(answer(json.to_string(), Some(json), &self.model_id))
                    }
                    Reading::OutOfRange => {
                        let json = json!({"score": 2.0, "topics": [], "reasons": ["clear"]});
                        Ok(answer(json.to_string(), Some(json), &self.model_id))
                    }
                    Reading::Invalid => Err(LlmError::InvalidOutput {
                        why: "not JSON: \"Great post! 10/10\"".into(),
                        used: Some(USED),
                    }),
                    Reading::Timeout => Err(LlmError::Timeout(Duration::from_millis(5))),
                },
                Some(_) => Err(LlmError::Refused {
                    status: 400,
                    message: "the scripted model makes no plans".into(),
                }),
                None => {
                    self.drafts
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(request.clone());
                    let text = match &self.draft {
                        Draft::Fixed(text) => text.clone(),
                        Draft::Obedient => {
                            let brief = first_data(request);
                            let links: Vec<&str> = brief
                                .split_whitespace()
                                .filter(|w| w.starts_with("https://"))
                                .collect();
                            format!("{brief} {}", links.join(" "))
                        }
                    };
                    Ok(answer(text, None, &self.model_id))
                }
            }
        })
    }
}
