//! The MCP servers' credentials from Secrets Manager (LocalStack locally): the
//! [`chimera_mcp::Secrets`] port over the SDK client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chimera_aws::clients::Clients;
use chimera_mcp::{McpClient, McpConfig, Secrets};

/// Secrets Manager, as the MCP client reads it.
pub struct SecretsManager(aws_sdk_secretsmanager::Client);

impl SecretsManager {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        Self(client)
    }
}

impl Secrets for SecretsManager {
    fn secret<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + 'a>> {
        Box::pin(async move {
            match self.0.get_secret_value().secret_id(name).send().await {
                Ok(found) => Ok(found.secret_string),
                Err(err) => {
                    let service = err.into_service_error();
                    if service.is_resource_not_found_exception() {
                        Ok(None)
                    } else {
                        Err(aws_sdk_secretsmanager::error::DisplayErrorContext(service).to_string())
                    }
                }
            }
        })
    }
}

/// The MCP client of `config`, reading credentials from Secrets Manager.
pub fn mcp_client(config: McpConfig, clients: &Clients) -> McpClient {
    McpClient::new(config).with_secrets(Arc::new(SecretsManager::new(clients.secrets.clone())))
}
