//! Blobs in the artifact bucket, under content-addressed keys (`artifacts/sha256/<hex>`): the
//! same bytes always land on the same key, a re-run writes nothing new, and a reference names
//! exactly the bytes it was made from. The database holds only keys and hashes.
//!
//! Results go to the review queue through [`send_result`]: inline when they fit in a message,
//! otherwise as JSON in the bucket with a reference in the message ([`load_result`] reads
//! either form back and checks the hash).

use aws_sdk_s3::primitives::ByteStream;
use chimera_core::domain::{ArtifactRef, TaskResult};
use chimera_core::envelope::{self, MAX_MESSAGE_BYTES, ResultMessage};
use sha2::{Digest, Sha256};

/// Why the bucket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("artifact bucket {bucket} unavailable: {reason}")]
    Unavailable { bucket: String, reason: String },
    #[error("object {key} does not match its hash {expected}")]
    Corrupt { key: String, expected: String },
    /// The object does not exist: a reference to it will never resolve.
    #[error("object {key} does not exist")]
    Missing { key: String },
    #[error("result message unreadable: {0}")]
    Unreadable(String),
}

/// Objects above this size are checked for before they are uploaded (a HEAD costs less than
/// the upload); smaller ones are put directly (one request instead of two).
const CHECK_BEFORE_PUT_BYTES: usize = 1024 * 1024;

/// Texts (and JSON, such as a proposal) up to this size also travel inline in their reference,
/// for the judge and reviewers: the review card shows them without a read from the bucket.
pub const INLINE_TEXT_BYTES: usize = 4096;

#[derive(Debug, Clone)]
pub struct ArtifactStore {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl StorageError {
    /// Whether trying again can help: only an unavailable bucket; a missing, corrupt or
    /// unreadable object stays so.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

impl ArtifactStore {
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            s3,
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn key_for(sha256: &str) -> String {
        format!("artifacts/sha256/{sha256}")
    }

    fn unavailable(&self, err: impl std::fmt::Display) -> StorageError {
        StorageError::Unavailable {
            bucket: self.bucket.clone(),
            reason: err.to_string(),
        }
    }

    /// Stores `bytes` and returns their reference. Small UTF-8 texts and JSON are also carried
    /// inline.
    /// The key is the content's hash, so writing it again writes the same bytes: small objects
    /// are simply put (one request); large ones are put only if absent.
    pub async fn put(&self, bytes: &[u8], media_type: &str) -> Result<ArtifactRef, StorageError> {
        let sha256 = sha256_hex(bytes);
        let key = Self::key_for(&sha256);
        self.put_at(&key, bytes, media_type).await?;
        let textual = media_type.starts_with("text/") || media_type.starts_with("application/json");
        let inline = (textual && bytes.len() <= INLINE_TEXT_BYTES)
            .then(|| String::from_utf8(bytes.to_vec()).ok())
            .flatten();
        Ok(ArtifactRef {
            media_type: media_type.to_owned(),
            sha256,
            size_bytes: bytes.len() as u64,
            s3_key: Some(key),
            inline,
        })
    }

    async fn put_at(&self, key: &str, bytes: &[u8], media_type: &str) -> Result<(), StorageError> {
        if bytes.len() > CHECK_BEFORE_PUT_BYTES {
            self.put_if_absent(key, bytes, media_type).await
        } else {
            self.put_object(key, bytes, media_type).await
        }
    }

    async fn put_if_absent(
        &self,
        key: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), StorageError> {
        let exists = self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match exists {
            Ok(_) => return Ok(()),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => {}
            Err(err) => return Err(self.unavailable(aws_sdk_s3::error::DisplayErrorContext(err))),
        }
        self.put_object(key, bytes, media_type).await
    }

    async fn put_object(
        &self,
        key: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), StorageError> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(media_type)
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .map_err(|e| self.unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Reads an object and checks it against the hash its key or reference names.
    pub async fn get(&self, key: &str, sha256: &str) -> Result<Vec<u8>, StorageError> {
        let object = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| match e.into_service_error() {
                aws_sdk_s3::operation::get_object::GetObjectError::NoSuchKey(_) => {
                    StorageError::Missing {
                        key: key.to_owned(),
                    }
                }
                other => self.unavailable(aws_sdk_s3::error::DisplayErrorContext(other)),
            })?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| self.unavailable(e))?
            .into_bytes()
            .to_vec();
        if sha256_hex(&bytes) != sha256 {
            return Err(StorageError::Corrupt {
                key: key.to_owned(),
                expected: sha256.to_owned(),
            });
        }
        Ok(bytes)
    }

    /// The review-queue message body for `result`: inline, or offloaded to the bucket when the
    /// message would be larger than SQS takes.
    pub async fn result_message(&self, result: &TaskResult) -> Result<String, StorageError> {
        let inline = envelope::encode(&ResultMessage::Inline {
            result: result.clone(),
        });
        if inline.len() <= MAX_MESSAGE_BYTES {
            return Ok(inline);
        }
        let json =
            serde_json::to_vec(result).map_err(|e| StorageError::Unreadable(e.to_string()))?;
        let sha256 = sha256_hex(&json);
        let key = format!("results/{}/{sha256}.json", result.id.0);
        self.put_at(&key, &json, "application/json").await?;
        tracing::info!(result_id = %result.id.0, bytes = json.len(), key, "result offloaded to S3");
        Ok(envelope::encode(&ResultMessage::Offloaded {
            result_id: result.id,
            s3_key: key,
            sha256,
            size_bytes: json.len() as u64,
        }))
    }

    /// The result a review-queue message carries or references.
    pub async fn load_result(&self, message: ResultMessage) -> Result<TaskResult, StorageError> {
        match message {
            ResultMessage::Inline { result } => Ok(result),
            ResultMessage::Offloaded {
                result_id,
                s3_key,
                sha256,
                ..
            } => {
                let json = self.get(&s3_key, &sha256).await?;
                let result: TaskResult = serde_json::from_slice(&json)
                    .map_err(|e| StorageError::Unreadable(e.to_string()))?;
                if result.id != result_id {
                    return Err(StorageError::Unreadable(format!(
                        "{s3_key} holds result {} where {} was referenced",
                        result.id.0, result_id.0
                    )));
                }
                Ok(result)
            }
            ResultMessage::Rejudge { review_id, .. } => Err(StorageError::Unreadable(format!(
                "re-judging review {} carries no result",
                review_id.0
            ))),
        }
    }
}
