//! Chimera's AWS adapters.
//!
//! - [`clients`]: the SQS, S3, DynamoDB and Secrets Manager clients, built once per process from the standard
//!   AWS configuration. Endpoints are configuration (`AWS_ENDPOINT_URL`,
//!   `AWS_ENDPOINT_URL_DYNAMODB`), so the same code talks to LocalStack, DynamoDB Local or AWS.
//! - [`bootstrap`]: creates a stage's queues (each with its DLQ and redrive policy), artifact
//!   bucket and idempotency table, idempotently, from the names in `chimera_core::names`; and
//!   describes what exists, for health reports.
//! - [`handler`]: [`handler::QueueHandler`], the shape of the planner, worker and judge that
//!   Lambda and the local runner both drive.
//! - [`batch`]: runs a per-message handler over an SQS event and reports only the failed
//!   message ids (`ReportBatchItemFailures`), one span per message.
//! - [`artifacts`]: content-addressed blobs in the artifact bucket, and results sent to the
//!   review queue (offloaded to the bucket when too large for a message).
//! - [`idempotency`]: DynamoDB idempotency records (conditional put, in-progress / complete,
//!   expiry, payload hash).
//! - [`database`]: the database URL, from `DATABASE_URL` or from the Secrets Manager secret
//!   deployed functions are given.
//! - [`queues`]: sending to the stage's queues, by URL from the environment or looked up once.
//! - [`relay`]: sends what decisions wrote to the store's outbox, once it committed, and marks
//!   it sent.
//! - [`visibility`]: a batch's messages stay invisible only while their handler lives (renewed
//!   in short steps), and failed ones come back after a backoff.
//! - [`memory`]: semantic memory: the configured embedder in front of the store's memories.
//! - [`telemetry`]: JSON logs, Embedded Metric Format metrics, and the trace context messages
//!   carry.

pub mod artifacts;
pub mod batch;
pub mod bootstrap;
pub mod clients;
pub mod database;
pub mod handler;
pub mod idempotency;
pub mod memory;
pub mod mind;
pub mod queues;
pub mod relay;
pub mod telemetry;
pub mod visibility;

pub use clients::Clients;
