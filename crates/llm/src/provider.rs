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
/// made from `sdk`, the configuration the process already loaded.
pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Option<Arc<dyn LanguageModel>>, String> {
    let choice = std::env::var("CHIMERA_LLM").unwrap_or_default();
    match choice.trim() {
        "" | "none" => Ok(None),
        "openai" => Ok(Some(Arc::new(OpenAiCompatible::new(
            OpenAiConfig::from_env()?,
        )))),
        "bedrock" => Ok(Some(Arc::new(Bedrock::new(
            sdk,
            BedrockConfig::from_env()?,
        )))),
        other => Err(format!(
            "CHIMERA_LLM={other:?} is not a provider (openai, bedrock or none)"
        )),
    }
}
