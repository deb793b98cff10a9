//! AWS clients, built once per execution environment and shared by reference.

use aws_config::{BehaviorVersion, SdkConfig};

/// The clients every Chimera process may need. Building them does no network round trip;
/// credentials and endpoints are resolved from the environment on first use.
#[derive(Debug, Clone)]
pub struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    /// The configuration they were made from (other clients are made from it too: the
    /// language model's on Bedrock).
    pub config: SdkConfig,
}

impl Clients {
    /// Loads the standard AWS configuration (region, credentials, endpoint overrides).
    pub async fn from_env() -> Self {
        let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::from_sdk_config(&config)
    }

    pub fn from_sdk_config(config: &SdkConfig) -> Self {
        // LocalStack serves buckets by path (`host/bucket/key`); virtual-hosted style would need
        // wildcard DNS. AWS itself accepts both, so path style is only turned on for endpoints
        // that are configured explicitly.
        let custom_s3_endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .any(|var| std::env::var_os(var).is_some());
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(custom_s3_endpoint)
            .build();
        Self {
            sqs: aws_sdk_sqs::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(s3),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
            config: config.clone(),
        }
    }
}
