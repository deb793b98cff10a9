//! The local event-source runner.
//!
//! Lambda cannot run here (LocalStack needs Docker for it), so this runs the same handler
//! functions in-process and feeds them as Lambda's SQS event source mapping does:
//!
//! - long polls each queue (`ReceiveMessage` with a wait time), up to `batch_size` messages,
//!   and waits up to `batching_window` to fill a batch, as `MaximumBatchingWindowInSeconds`;
//! - hands the batch to the function's handler as an `SqsEvent`, with a deadline of the
//!   function's timeout;
//! - deletes the messages the handler did not report failed (`ReportBatchItemFailures`); a
//!   handler that panics fails its whole batch, as an invocation error would;
//! - receives with a visibility timeout of one short step: the handlers keep their messages
//!   invisible while they live ([`chimera_aws::visibility`]), so the messages of a runner that
//!   was killed come back within that step, not after the queue's timeout;
//! - leaves failed messages to reappear after the handler's backoff (or after `retry_after`,
//!   when set, to speed up demos and tests), so the queue's redrive policy moves a message to
//!   its DLQ after `maxReceiveCount` receives;
//! - runs `concurrency` pollers per function, as `ScalingConfig.MaximumConcurrency`.
//!
//! The same process serves the HITL API router on a local port, runs the sweep on a schedule,
//! and relays the outbox rows no handler sent (every second), as the scheduled sweep does in
//! AWS.

mod guard;
pub mod issuer;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName,
};
use chimera_aws::Clients;
use chimera_aws::handler::QueueHandler;
use chimera_aws::relay::Relay;
use chimera_core::names::{Function, Queue, ResourceNames};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How one function is fed, as its event source mapping would be configured.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Messages per batch, 1..=10.
    pub batch_size: i32,
    /// How long to keep gathering a batch once the first message arrived.
    pub batching_window: Duration,
    /// Pollers (concurrent invocations) for this function.
    pub concurrency: usize,
    /// Long-poll wait of each receive, 0..=20 s; stopping waits for the receives in flight.
    pub wait: Duration,
    /// When set, a failed message becomes visible again after this instead of the queue's
    /// visibility timeout.
    pub retry_after: Option<Duration>,
}

impl Default for SourceSettings {
    fn default() -> Self {
        Self {
            batch_size: 10,
            batching_window: Duration::ZERO,
            concurrency: 2,
            wait: Duration::from_secs(5),
            retry_after: None,
        }
    }
}

/// A function the runner feeds, built once and shared by its pollers.
pub type Handler = Arc<dyn QueueHandler>;

/// Counters of one function.
#[derive(Debug, Default)]
pub struct Counters {
    pub batches: AtomicU64,
    pub received: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
}

/// A snapshot of one function's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub batches: u64,
    pub received: u64,
    pub succeeded: u64,
    pub failed: u64,
}

impl Counters {
    fn snapshot(&self) -> Counts {
        Counts {
            batches: self.batches.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// The running runner.
pub struct Running {
    pub api_addr: Option<SocketAddr>,
    counters: Vec<(Queue, Arc<Counters>)>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    /// The counters of the function consuming `queue`.
    pub fn counts(&self, queue: Queue) -> Counts {
        self.counters
            .iter()
            .find(|(q, _)| *q == queue)
            .map(|(_, c)| c.snapshot())
            .unwrap_or_default()
    }

    /// Stops polling; batches being handled finish first.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// What to run.
pub struct RunnerConfig {
    pub names: ResourceNames,
    pub planner: SourceSettings,
    pub worker: SourceSettings,
    pub judge: SourceSettings,
    /// Sends the outbox rows no handler sent, every second.
    pub relay: Arc<Relay>,
    /// Where to serve the HITL API router, if at all.
    pub api: Option<(SocketAddr, axum::Router)>,
    /// The review sweep and how often it runs (an EventBridge schedule in AWS).
    pub sweep: Option<(Duration, Arc<chimera_hitl_api::AppState>)>,
}

/// Starts the pollers (and the API); returns once the API listens and every queue was found.
/// Starts feeding `handlers` from their queues (and the API); returns once the API listens and
/// every queue was found.
pub async fn start(
    clients: &Clients,
    handlers: Vec<Handler>,
    config: RunnerConfig,
) -> anyhow::Result<Running> {
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut counters = Vec::new();
    for handler in handlers {
        let queue = handler.queue();
        let settings = match queue {
            Queue::Goal => &config.planner,
            Queue::Task => &config.worker,
            Queue::Review => &config.judge,
        };
        let source = Source::new(clients, &config.names, queue, settings.clone()).await?;
        let source = Arc::new(source);
        counters.push((queue, source.counters.clone()));
        for _ in 0..settings.concurrency.max(1) {
            let (source, handler, cancel) = (source.clone(), handler.clone(), cancel.clone());
            tasks.spawn(async move { source.poll(handler, cancel).await });
        }
    }
    let mut api_addr = None;
    if let Some((addr, router)) = config.api {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the API to {addr}"))?;
        api_addr = Some(listener.local_addr()?);
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let served = axum::serve(guard::GuardedListener(listener), router)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "the API server stopped");
            }
        });
    }
    let relay = config.relay.clone();
    tasks.spawn(every(RELAY_EVERY, cancel.clone(), move || {
        let relay = relay.clone();
        async move {
            let before =
                chrono::Utc::now() - chrono::Duration::from_std(RELAY_EVERY).unwrap_or_default();
            if let Err(err) = relay.drain(before).await {
                tracing::warn!(error = format!("{err:#}"), "outbox relay failed; retrying");
            }
        }
    }));
    if let Some((period, state)) = config.sweep {
        tasks.spawn(every(period, cancel.clone(), move || {
            let state = state.clone();
            async move {
                if let Err(err) = chimera_hitl_api::sweep::run(&state).await {
                    tracing::error!(error = format!("{err:#}"), "sweep failed");
                }
            }
        }));
    }
    Ok(Running {
        api_addr,
        counters,
        cancel,
        tasks,
    })
}

/// Runs `work` every `period` (a run that overruns delays the next) until `cancel`.
async fn every<F, Fut>(period: Duration, cancel: CancellationToken, work: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut schedule = tokio::time::interval(period);
    schedule.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = schedule.tick() => work().await,
        }
    }
}

/// How often the runner relays outbox rows no handler sent (those older than this).
const RELAY_EVERY: Duration = Duration::from_secs(1);

/// One queue and the function it feeds.
struct Source {
    sqs: aws_sdk_sqs::Client,
    url: String,
    arn: String,
    region: String,
    function: Function,
    settings: SourceSettings,
    counters: Arc<Counters>,
}

impl Source {
    async fn new(
        clients: &Clients,
        names: &ResourceNames,
        queue: Queue,
        settings: SourceSettings,
    ) -> anyhow::Result<Source> {
        let url = chimera_aws::bootstrap::queue_url(clients, &names.queue(queue)).await?;
        let attributes = clients
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .with_context(|| format!("reading the ARN of {url}"))?;
        let arn = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default();
        let region = arn.split(':').nth(3).unwrap_or("us-east-1").to_owned();
        Ok(Source {
            sqs: clients.sqs.clone(),
            url,
            arn,
            region,
            function: queue.consumer(),
            settings,
            counters: Arc::new(Counters::default()),
        })
    }

    async fn poll(&self, handler: Handler, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !cancel.is_cancelled() {
            match self.receive_batch(&cancel).await {
                Ok(messages) if messages.is_empty() => {}
                Ok(messages) => {
                    backoff = Duration::from_millis(200);
                    self.invoke(&handler, messages).await;
                }
                Err(err) => {
                    tracing::warn!(queue = %self.url, error = %format!("{err:#}"), "receive failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn receive(&self, max: i32, wait: Duration) -> anyhow::Result<Vec<Message>> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(chimera_aws::visibility::STEP.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// One batch: a long poll, then more receives until the batch is full or the window closes.
    async fn receive_batch(&self, cancel: &CancellationToken) -> anyhow::Result<Vec<Message>> {
        let mut batch = self
            .receive(self.settings.batch_size, self.settings.wait)
            .await?;
        if batch.is_empty() || self.settings.batching_window.is_zero() {
            return Ok(batch);
        }
        let window_ends = Instant::now() + self.settings.batching_window;
        while (batch.len() as i32) < self.settings.batch_size && !cancel.is_cancelled() {
            let left = window_ends.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let more = self
                .receive(
                    self.settings.batch_size - batch.len() as i32,
                    left.min(Duration::from_secs(1)),
                )
                .await?;
            batch.extend(more);
        }
        Ok(batch)
    }

    fn event(&self, messages: &[Message]) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = messages
            .iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.message_id = m.message_id.clone();
                record.receipt_handle = m.receipt_handle.clone();
                record.body = m.body.clone();
                record.md5_of_body = m.md5_of_body.clone();
                record.attributes = m
                    .attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                record.message_attributes = m
                    .message_attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| {
                                let mut attribute = SqsMessageAttribute::default();
                                attribute.string_value = v.string_value.clone();
                                attribute.data_type = Some(v.data_type.clone());
                                (k.clone(), attribute)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                record.event_source = Some("aws:sqs".into());
                record.event_source_arn = Some(self.arn.clone());
                record.aws_region = Some(self.region.clone());
                record
            })
            .collect();
        event
    }

    /// Hands `messages` to the function, then deletes the successes.
    async fn invoke(&self, handler: &Handler, messages: Vec<Message>) {
        let event = self.event(&messages);
        let deadline = SystemTime::now() + Duration::from_secs(self.function.timeout_secs().into());
        // Spawned, so a panic fails this batch only, as an invocation error would.
        let handler = handler.clone();
        // One span per invocation, as Lambda's runtime gives one (the messages' spans are its
        // children): what a trace shows of the function's run, and what benches time.
        let span = tracing::info_span!(
            "invocation",
            function = self.function.name(),
            messages = messages.len()
        );
        let response = tokio::spawn(tracing::Instrument::instrument(
            async move { handler.handle(&event, deadline).await },
            span,
        ))
        .await;
        let failed: HashSet<String> = match response {
            Ok(response) => response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(err) => {
                tracing::error!(function = self.function.name(), error = %err, "the handler failed; the whole batch will be retried");
                messages
                    .iter()
                    .filter_map(|m| m.message_id.clone())
                    .collect()
            }
        };
        let (done, retry): (Vec<&Message>, Vec<&Message>) = messages
            .iter()
            .partition(|m| m.message_id.as_ref().is_some_and(|id| !failed.contains(id)));
        let c = &self.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.received
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        c.succeeded.fetch_add(done.len() as u64, Ordering::Relaxed);
        c.failed.fetch_add(retry.len() as u64, Ordering::Relaxed);
        if let Err(err) = self.delete(&done).await {
            // They reappear and are handled again: every handler is idempotent.
            tracing::warn!(queue = %self.url, error = %format!("{err:#}"), "deleting handled messages failed");
        }
        if let Some(after) = self.settings.retry_after
            && let Err(err) = self.make_visible(&retry, after).await
        {
            tracing::warn!(queue = %self.url, error = %format!("{err:#}"), "changing visibility failed");
        }
    }

    async fn delete(&self, messages: &[&Message]) -> anyhow::Result<()> {
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            if !out.failed.is_empty() {
                anyhow::bail!("{} deletes failed", out.failed.len());
            }
        }
        Ok(())
    }

    async fn make_visible(&self, messages: &[&Message], after: Duration) -> anyhow::Result<()> {
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                        .visibility_timeout(after.as_secs() as i32)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.sqs
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        }
        Ok(())
    }
}
