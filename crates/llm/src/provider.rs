//! Which model the functions use: configuration, not code.
//!
//! `CHIMERA_LLM` = `openai` (any OpenAI-compatible endpoint: [`crate::openai::OpenAiConfig::from_env`]),
//! `bedrock` (Amazon Bedrock Converse: [`crate::bedrock::BedrockConfig::from_env`]) or `none`
//! (the default): no model; the planner uses templates, the MCP drafting tool writes, and the
//! judge runs its deterministic checks only.

use std::sync::Arc;

use crate::LanguageModel;
use crate::bedrock::{Bedrock, BedrockConfig};
use crate::openai::{OpenAiCompatible, OpenAiConfig};

/// The configured model, or `None` for `CHIMERA_LLM=none` (or unset). Bedrock's client is
/// made from `sdk`, the configuration the process already loaded; `api_key`, when given (read
/// from a secret as deployed), is the OpenAI-compatible endpoint's key.
pub fn from_env(
    sdk: &aws_config::SdkConfig,
    api_key: Option<String>,
) -> Result<Option<Arc<dyn LanguageModel>>, String> {
    let choice = std::env::var("CHIMERA_LLM").unwrap_or_default();
    match choice.trim() {
        "" | "none" => Ok(None),
        "openai" => {
            let mut config = OpenAiConfig::from_env()?;
            config.api_key = api_key.or(config.api_key);
            Ok(Some(Arc::new(OpenAiCompatible::new(config))))
        }
        "bedrock" => Ok(Some(Arc::new(Bedrock::new(
            sdk,
            BedrockConfig::from_env()?,
        )))),
        other => Err(format!(
            "CHIMERA_LLM={other:?} is not a provider (openai, bedrock or none)"
        )),
    }
}

/// What names the configured endpoint for its call slots ([`crate::limit::shared`]): the
/// provider, where it is reached (the base URL, or Bedrock's region) and the model.
pub fn endpoint(sdk: &aws_config::SdkConfig, model_id: &str) -> String {
    let provider = std::env::var("CHIMERA_LLM").unwrap_or_default();
    let place = match provider.trim() {
        "bedrock" => sdk.region().map(ToString::to_string).unwrap_or_default(),
        _ => crate::var("CHIMERA_LLM_BASE_URL").unwrap_or_default(),
    };
    format!("{}|{place}|{model_id}", provider.trim())
}
