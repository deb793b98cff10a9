//! Creates a stage's resources, idempotently, and describes what exists.
//!
//! Order matters: each dead-letter queue is created first, so the main queue's redrive policy
//! can name its ARN. Re-running converges: a queue that exists gets its attributes set again
//! (so a changed `maxReceiveCount` takes effect), an existing bucket or table is kept.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use chimera_core::names::{
    IDEMPOTENCY_KEY_ATTRIBUTE, IDEMPOTENCY_TTL_ATTRIBUTE, Queue, ResourceNames,
};

use crate::Clients;

/// How the stage's queues are set up.
#[derive(Debug, Clone, Copy)]
pub struct BootstrapOptions {
    /// Receives before a message moves to its DLQ.
    pub max_receive_count: u32,
}

/// DLQs keep messages for the SQS maximum (14 days) so nothing dead-lettered is lost unseen.
const DLQ_RETENTION_SECS: u32 = 14 * 24 * 3600;

/// One queue as it exists after bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueReport {
    pub queue: Queue,
    pub url: String,
    pub dead_letter_url: String,
    pub visibility_timeout_secs: u32,
    pub max_receive_count: u32,
    pub approximate_messages: u64,
    pub dead_letter_messages: u64,
}

/// Everything bootstrap created or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageReport {
    pub queues: Vec<QueueReport>,
    pub bucket: String,
    pub table: String,
    pub table_ttl_attribute: Option<String>,
}

/// Creates (or converges) every resource of the stage.
pub async fn bootstrap(
    clients: &Clients,
    names: &ResourceNames,
    options: BootstrapOptions,
) -> Result<StageReport> {
    for queue in Queue::ALL {
        ensure_queue(clients, names, queue, options).await?;
    }
    ensure_bucket(clients, &names.artifact_bucket()).await?;
    ensure_idempotency_table(clients, &names.idempotency_table()).await?;
    describe(clients, names).await
}

async fn ensure_queue(
    clients: &Clients,
    names: &ResourceNames,
    queue: Queue,
    options: BootstrapOptions,
) -> Result<()> {
    let dlq_name = names.dead_letter_queue(queue);
    let dlq_url = create_or_update_queue(
        clients,
        &dlq_name,
        HashMap::from([(
            QueueAttributeName::MessageRetentionPeriod,
            DLQ_RETENTION_SECS.to_string(),
        )]),
    )
    .await?;
    let dlq_arn = queue_attributes(clients, &dlq_url)
        .await?
        .remove(&QueueAttributeName::QueueArn)
        .with_context(|| format!("queue {dlq_name} has no QueueArn attribute"))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": options.max_receive_count,
    });
    create_or_update_queue(
        clients,
        &names.queue(queue),
        HashMap::from([
            (
                QueueAttributeName::VisibilityTimeout,
                queue.visibility_timeout_secs().to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
            (
                QueueAttributeName::ReceiveMessageWaitTimeSeconds,
                "20".to_owned(),
            ),
        ]),
    )
    .await?;
    Ok(())
}

/// `CreateQueue` is idempotent only while the attributes match; when they differ it fails with
/// `QueueNameExists`, and the attributes are set on the existing queue.
async fn create_or_update_queue(
    clients: &Clients,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String> {
    let created = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.clone()))
        .send()
        .await;
    match created {
        Ok(out) => out
            .queue_url
            .with_context(|| format!("CreateQueue {name} returned no URL")),
        Err(err) => {
            // The model's QueueNameExists is the wire's `QueueAlreadyExists`.
            if !err
                .as_service_error()
                .is_some_and(|e| e.is_queue_name_exists())
            {
                return Err(anyhow::Error::new(err).context(format!("creating queue {name}")));
            }
            let url = queue_url(clients, name).await?;
            clients
                .sqs
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send()
                .await
                .with_context(|| format!("updating the attributes of queue {name}"))?;
            Ok(url)
        }
    }
}

/// The URL of a queue by name.
pub async fn queue_url(clients: &Clients, name: &str) -> Result<String> {
    clients
        .sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .with_context(|| format!("looking up queue {name}"))?
        .queue_url
        .with_context(|| format!("GetQueueUrl {name} returned no URL"))
}

async fn queue_attributes(
    clients: &Clients,
    url: &str,
) -> Result<HashMap<QueueAttributeName, String>> {
    Ok(clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .with_context(|| format!("reading the attributes of {url}"))?
        .attributes
        .unwrap_or_default())
}

async fn ensure_bucket(clients: &Clients, bucket: &str) -> Result<()> {
    match clients.s3.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
        {
            Ok(())
        }
        Err(err) => Err(anyhow::Error::new(err).context(format!("creating bucket {bucket}"))),
    }
}

async fn ensure_idempotency_table(clients: &Clients, table: &str) -> Result<()> {
    let created = clients
        .dynamodb
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(IDEMPOTENCY_KEY_ATTRIBUTE)
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(IDEMPOTENCY_KEY_ATTRIBUTE)
                .key_type(KeyType::Hash)
                .build()?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(err) => return Err(anyhow::Error::new(err).context(format!("creating table {table}"))),
    }
    if table_ttl_attribute(clients, table).await?.as_deref() != Some(IDEMPOTENCY_TTL_ATTRIBUTE) {
        clients
            .dynamodb
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(IDEMPOTENCY_TTL_ATTRIBUTE)
                    .build()?,
            )
            .send()
            .await
            .with_context(|| format!("enabling TTL on table {table}"))?;
    }
    Ok(())
}

async fn table_ttl_attribute(clients: &Clients, table: &str) -> Result<Option<String>> {
    let ttl = clients
        .dynamodb
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .with_context(|| format!("reading the TTL settings of table {table}"))?;
    Ok(ttl
        .time_to_live_description
        .filter(|d| {
            matches!(
                d.time_to_live_status,
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            )
        })
        .and_then(|d| d.attribute_name))
}

/// Describes the stage's resources as they exist; fails naming the first one that is missing.
pub async fn describe(clients: &Clients, names: &ResourceNames) -> Result<StageReport> {
    let mut queues = Vec::new();
    for queue in Queue::ALL {
        let url = queue_url(clients, &names.queue(queue)).await?;
        let dead_letter_url = queue_url(clients, &names.dead_letter_queue(queue)).await?;
        let attributes = queue_attributes(clients, &url).await?;
        let dlq_attributes = queue_attributes(clients, &dead_letter_url).await?;
        let number = |attrs: &HashMap<QueueAttributeName, String>,
                      name: QueueAttributeName|
         -> u64 { attrs.get(&name).and_then(|v| v.parse().ok()).unwrap_or(0) };
        let redrive: serde_json::Value = attributes
            .get(&QueueAttributeName::RedrivePolicy)
            .map(|raw| serde_json::from_str(raw))
            .transpose()
            .context("parsing a RedrivePolicy")?
            .with_context(|| format!("queue {} has no redrive policy", names.queue(queue)))?;
        let max_receive_count = match &redrive["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .with_context(|| {
            format!(
                "queue {} has a redrive policy without maxReceiveCount",
                names.queue(queue)
            )
        })?;
        if redrive["deadLetterTargetArn"].as_str()
            != dlq_attributes
                .get(&QueueAttributeName::QueueArn)
                .map(String::as_str)
        {
            bail!(
                "queue {} does not redrive to {}",
                names.queue(queue),
                names.dead_letter_queue(queue)
            );
        }
        queues.push(QueueReport {
            queue,
            visibility_timeout_secs: number(&attributes, QueueAttributeName::VisibilityTimeout)
                as u32,
            max_receive_count: max_receive_count as u32,
            approximate_messages: number(
                &attributes,
                QueueAttributeName::ApproximateNumberOfMessages,
            ) + number(
                &attributes,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ),
            dead_letter_messages: number(
                &dlq_attributes,
                QueueAttributeName::ApproximateNumberOfMessages,
            ) + number(
                &dlq_attributes,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ),
            url,
            dead_letter_url,
        });
    }
    let bucket = names.artifact_bucket();
    clients
        .s3
        .head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .with_context(|| format!("bucket {bucket} is not reachable"))?;
    let table = names.idempotency_table();
    clients
        .dynamodb
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .with_context(|| format!("table {table} is not reachable"))?;
    let table_ttl_attribute = table_ttl_attribute(clients, &table).await?;
    Ok(StageReport {
        queues,
        bucket,
        table,
        table_ttl_attribute,
    })
}
