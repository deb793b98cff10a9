//! Idempotency records in DynamoDB: one item per unit of work (a task attempt), claimed with a
//! conditional put.
//!
//! - `in_progress` items carry an expiry derived from the claimant's remaining time: a worker
//!   that dies mid-task holds its claim only until then, after which a redelivery takes over.
//! - `complete` items carry what the work produced, so a redelivery answers it again without
//!   redoing the work.
//! - Every item carries the hash of the request it was claimed for: the same key with a
//!   different request is refused, never answered with someone else's outcome.
//! - Items expire (TTL attribute) after the retention period.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use chimera_core::names::{IDEMPOTENCY_KEY_ATTRIBUTE, IDEMPOTENCY_TTL_ATTRIBUTE};

const STATUS: &str = "status";
const PAYLOAD_HASH: &str = "payload_hash";
const TOKEN: &str = "claim_token";
const IN_PROGRESS_UNTIL: &str = "in_progress_until_ms";
const OUTCOME: &str = "outcome";
const IN_PROGRESS: &str = "in_progress";
const COMPLETE: &str = "complete";

/// How long complete records are kept (the TTL), by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns the work until its expiry; `token` proves it when completing.
    Acquired { token: String },
    /// Done before: here is what it produced.
    Completed { outcome: String },
    /// Someone else is on it and their claim has not expired.
    InProgress { until_ms: u64 },
    /// The key was claimed for a different request.
    PayloadMismatch,
}

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("idempotency table {table} unavailable: {reason}")]
    Unavailable { table: String, reason: String },
    /// The claim expired and someone else took the work over before this caller completed it.
    #[error("the claim on {key} was lost to another worker")]
    ClaimLost { key: String },
    #[error("idempotency record {key} is unreadable: {reason}")]
    Unreadable { key: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    retention: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

impl IdempotencyStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            retention: DEFAULT_RETENTION,
        }
    }

    fn unavailable(&self, err: impl std::fmt::Display) -> IdempotencyError {
        IdempotencyError::Unavailable {
            table: self.table.clone(),
            reason: err.to_string(),
        }
    }

    /// Claims `key` for the request hashing to `payload_hash` until `until`, or reports who has
    /// it. An expired in-progress claim for the same request is taken over.
    pub async fn claim(
        &self,
        key: &str,
        payload_hash: &str,
        until: SystemTime,
    ) -> Result<Claim, IdempotencyError> {
        let now = now_ms();
        let until_ms = until
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(now)
            .max(now + 1_000);
        let token = uuid::Uuid::now_v7().to_string();
        let expires_at = (now / 1000) + self.retention.as_secs();
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(IDEMPOTENCY_KEY_ATTRIBUTE, s(key))
            .item(STATUS, s(IN_PROGRESS))
            .item(PAYLOAD_HASH, s(payload_hash))
            .item(TOKEN, s(&token))
            .item(IN_PROGRESS_UNTIL, n(until_ms))
            .item(IDEMPOTENCY_TTL_ATTRIBUTE, n(expires_at))
            .condition_expression(
                "attribute_not_exists(#id) OR (#status = :in_progress AND #until < :now AND #hash = :hash)",
            )
            .expression_attribute_names("#id", IDEMPOTENCY_KEY_ATTRIBUTE)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#until", IN_PROGRESS_UNTIL)
            .expression_attribute_names("#hash", PAYLOAD_HASH)
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":hash", s(payload_hash))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let existing = match put {
            Ok(_) => return Ok(Claim::Acquired { token }),
            Err(err) => match err.into_service_error() {
                aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(e) => {
                    match e.item {
                        Some(item) => item,
                        None => self.read(key).await?,
                    }
                }
                other => {
                    return Err(self.unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(other)));
                }
            },
        };
        self.classify(key, payload_hash, &existing)
    }

    async fn read(&self, key: &str) -> Result<HashMap<String, AttributeValue>, IdempotencyError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(IDEMPOTENCY_KEY_ATTRIBUTE, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        // Gone between the failed put and this read (expired and deleted): a retry claims it.
        Ok(got.item.unwrap_or_default())
    }

    fn classify(
        &self,
        key: &str,
        payload_hash: &str,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<Claim, IdempotencyError> {
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let unreadable = |reason: &str| IdempotencyError::Unreadable {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if item.is_empty() {
            return Ok(Claim::InProgress { until_ms: 0 });
        }
        if text(PAYLOAD_HASH).as_deref() != Some(payload_hash) {
            return Ok(Claim::PayloadMismatch);
        }
        match text(STATUS).as_deref() {
            Some(COMPLETE) => Ok(Claim::Completed {
                outcome: text(OUTCOME).ok_or_else(|| unreadable("complete without an outcome"))?,
            }),
            Some(IN_PROGRESS) => Ok(Claim::InProgress {
                until_ms: item
                    .get(IN_PROGRESS_UNTIL)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_default(),
            }),
            _ => Err(unreadable("unknown status")),
        }
    }

    /// Marks the caller's claim complete with `outcome`. Fails with `ClaimLost` if the claim is
    /// no longer the caller's.
    pub async fn complete(
        &self,
        key: &str,
        token: &str,
        outcome: &str,
    ) -> Result<(), IdempotencyError> {
        let done = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(IDEMPOTENCY_KEY_ATTRIBUTE, s(key))
            .update_expression("SET #status = :complete, #outcome = :outcome REMOVE #until")
            .condition_expression("#token = :token AND #status = :in_progress")
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#outcome", OUTCOME)
            .expression_attribute_names("#until", IN_PROGRESS_UNTIL)
            .expression_attribute_names("#token", TOKEN)
            .expression_attribute_values(":complete", s(COMPLETE))
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":outcome", s(outcome))
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        match done {
            Ok(_) => Ok(()),
            Err(err) => match err.into_service_error() {
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(_) => {
                    Err(IdempotencyError::ClaimLost { key: key.to_owned() })
                }
                other => Err(self.unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(other))),
            },
        }
    }

    /// Moves the expiry of the caller's in-progress claim to `until` (a live worker renews its
    /// claim in short steps, so one that dies holds it only briefly). Fails with `ClaimLost` if
    /// the claim is no longer the caller's.
    pub async fn extend(
        &self,
        key: &str,
        token: &str,
        until: SystemTime,
    ) -> Result<(), IdempotencyError> {
        let until_ms = until
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let done = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(IDEMPOTENCY_KEY_ATTRIBUTE, s(key))
            .update_expression("SET #until = :until")
            .condition_expression("#token = :token AND #status = :in_progress")
            .expression_attribute_names("#until", IN_PROGRESS_UNTIL)
            .expression_attribute_names("#token", TOKEN)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .send()
            .await;
        match done {
            Ok(_) => Ok(()),
            Err(err) => match err.into_service_error() {
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(_) => {
                    Err(IdempotencyError::ClaimLost { key: key.to_owned() })
                }
                other => Err(self.unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(other))),
            },
        }
    }

    /// Gives the caller's in-progress claim up (the work failed), so that a retry need not wait
    /// for the claim to expire. Nothing happens if the claim is no longer the caller's.
    pub async fn release(&self, key: &str, token: &str) -> Result<(), IdempotencyError> {
        let done = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(IDEMPOTENCY_KEY_ATTRIBUTE, s(key))
            .condition_expression("#token = :token AND #status = :in_progress")
            .expression_attribute_names("#token", TOKEN)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .send()
            .await;
        match done {
            Ok(_) => Ok(()),
            Err(err) => match err.into_service_error() {
                aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(_) => Ok(()),
                other => Err(self.unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(other))),
            },
        }
    }
}
