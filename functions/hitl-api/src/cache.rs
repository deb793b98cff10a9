//! The console's reads, kept for a moment: the review queue, cards and the fleet view are
//! asked for again and again by every open console, and the database's answer rarely changes
//! between two asks.
//!
//! An answer is kept, as the JSON it was sent as, per tenant and URI, for at most [`READ_TTL`].
//! It is dropped sooner when anything could have changed it:
//! - a request of this process that may write (any method but GET and HEAD) drops everything
//!   once it has answered, so a caller reads its own writes;
//! - a row written by any process (the judge holding an item, another reviewer's decision, the
//!   sweep, an API instance elsewhere) drops what it shows when its transaction commits: the
//!   database sends `console_changed` (migration 11) and each process listens on a connection
//!   of its own. A review's change drops its card and its tenant's lists (queue and fleet); an
//!   agent's change drops everything of its tenant; anything else everything.
//!
//! While that connection is not listening (not yet connected, lost, the database restarting)
//! nothing is kept: every read goes to the database. Figures that move with the swarm's work
//! and send no notification (goals in flight, spend, quota use, a deferral's time) are at most
//! [`READ_TTL`] old. Concurrent asks for an answer that is not kept wait for one read of it.
//!
//! Under Lambda an execution environment is frozen between invocations, its listener too: it
//! reads the notifications that arrived meanwhile when thawed, and an answer kept from before
//! is never older than [`READ_TTL`] either way.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use chimera_core::domain::TenantId;
use chimera_store::PgPool;
use serde::Serialize;

use crate::ApiError;

/// The longest an answer is kept.
pub const READ_TTL: Duration = Duration::from_secs(1);

/// The channel migration 11's triggers notify.
pub const CHANNEL: &str = "console_changed";

/// At most this many answers are kept; past it, expired ones are dropped and, if none is,
/// a new answer is sent without being kept.
const MAX_ENTRIES: usize = 4096;

/// How long the listener waits before connecting again after losing its connection.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// What an answer shows, so a change drops only the answers it may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shows {
    /// Many reviews or agents of the tenant: the queue, the fleet view.
    List,
    /// One review: its card.
    Review(uuid::Uuid),
}

/// The kept answers of one process (cheap to clone: one shared store).
#[derive(Clone)]
pub struct ReadCache {
    inner: Arc<Inner>,
}

impl Default for ReadCache {
    fn default() -> Self {
        Self::new(READ_TTL)
    }
}

struct Inner {
    /// The longest an answer is kept ([`READ_TTL`] but in tests).
    ttl: Duration,
    /// Bumped by a change that may touch anything; an answer read under an older one is not
    /// served.
    generation: AtomicU64,
    /// The listener is connected and listening: only then are answers kept.
    listening: AtomicBool,
    /// The listener was started (once, on the first read).
    started: AtomicBool,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// Dropped with the cache: ends the listener.
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

struct Slot {
    tenant: TenantId,
    shows: Shows,
    /// Bumped by a change of what this answer shows.
    generation: AtomicU64,
    kept: Mutex<Option<Kept>>,
    /// Held while the answer is read from the database, so concurrent asks wait for it.
    loading: tokio::sync::Mutex<()>,
}

struct Kept {
    body: Bytes,
    /// The cache's and the slot's generations when the read began.
    generations: (u64, u64),
    at: Instant,
}

impl ReadCache {
    /// A cache keeping answers at most `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                ttl,
                generation: AtomicU64::new(0),
                listening: AtomicBool::new(false),
                started: AtomicBool::new(false),
                slots: Mutex::default(),
                stop: Mutex::default(),
            }),
        }
    }

    /// The answer at `uri` for `tenant` (the caller's permission was checked), which `shows`
    /// what it shows: the kept one if fresh, else `load`'s, serialized once and kept.
    pub async fn json<T, F, Fut>(
        &self,
        pool: &PgPool,
        tenant: TenantId,
        shows: Shows,
        uri: &str,
        load: F,
    ) -> Result<Response, ApiError>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        self.start(pool);
        let slot = if self.inner.listening.load(Ordering::Acquire) {
            self.slot(tenant, shows, uri)
        } else {
            None
        };
        let Some(slot) = slot else {
            return Ok(json_response(serialize(&load().await?)?));
        };
        if let Some(body) = self.fresh(&slot) {
            return Ok(json_response(body));
        }
        let _loading = slot.loading.lock().await;
        // Another ask may have read it while this one waited.
        if let Some(body) = self.fresh(&slot) {
            return Ok(json_response(body));
        }
        // Taken before the read: a change committed during it makes the answer stale at once.
        let generations = self.generations(&slot);
        let body = serialize(&load().await?)?;
        if self.inner.listening.load(Ordering::Acquire) {
            *slot.kept.lock().expect("cache slot") = Some(Kept {
                body: body.clone(),
                generations,
                at: Instant::now(),
            });
        }
        Ok(json_response(body))
    }

    /// Drops every kept answer.
    pub fn invalidate(&self) {
        self.inner.invalidate();
    }

    /// Whether answers are being kept (the listener is listening).
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Acquire)
    }

    fn generations(&self, slot: &Slot) -> (u64, u64) {
        (
            self.inner.generation.load(Ordering::Acquire),
            slot.generation.load(Ordering::Acquire),
        )
    }

    fn fresh(&self, slot: &Slot) -> Option<Bytes> {
        let generations = self.generations(slot);
        slot.kept
            .lock()
            .expect("cache slot")
            .as_ref()
            .filter(|kept| kept.generations == generations && kept.at.elapsed() < self.inner.ttl)
            .map(|kept| kept.body.clone())
    }

    /// The slot for `uri` of `tenant`, made if there is room.
    fn slot(&self, tenant: TenantId, shows: Shows, uri: &str) -> Option<Arc<Slot>> {
        let key = format!("{tenant} {uri}");
        let mut slots = self.inner.slots.lock().expect("cache slots");
        if let Some(slot) = slots.get(&key) {
            return Some(slot.clone());
        }
        if slots.len() >= MAX_ENTRIES {
            slots.retain(|_, slot| Arc::strong_count(slot) > 1 || self.fresh(slot).is_some());
            if slots.len() >= MAX_ENTRIES {
                return None;
            }
        }
        let slot = Arc::new(Slot {
            tenant,
            shows,
            generation: AtomicU64::new(0),
            kept: Mutex::default(),
            loading: tokio::sync::Mutex::default(),
        });
        slots.insert(key, slot.clone());
        Some(slot)
    }

    /// Starts the listener once, on a connection of its own (not one of the pool's).
    fn start(&self, pool: &PgPool) {
        if self.inner.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let (stop, stopped) = tokio::sync::oneshot::channel();
        *self.inner.stop.lock().expect("cache stop") = Some(stop);
        let options = (*pool.connect_options()).clone();
        tokio::spawn(listen(Arc::downgrade(&self.inner), options, stopped));
    }
}

impl Inner {
    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops what a notification's `payload` names (migration 11): `review <tenant> <id>`
    /// drops that card and the tenant's lists, `agent <tenant>` everything of the tenant,
    /// anything else everything.
    fn changed(&self, payload: &str) {
        let mut words = payload.split(' ');
        let (what, tenant, review) = (words.next(), words.next(), words.next());
        let tenant = tenant.and_then(|t| uuid::Uuid::parse_str(t).ok());
        let review = review.and_then(|r| uuid::Uuid::parse_str(r).ok());
        let drops: Box<dyn Fn(&Slot) -> bool> = match (what, tenant, review) {
            (Some("review"), Some(tenant), Some(review)) => Box::new(move |slot: &Slot| {
                slot.tenant.0 == tenant && matches!(slot.shows, Shows::List)
                    || slot.shows == Shows::Review(review)
            }),
            (Some("agent"), Some(tenant), None) => {
                Box::new(move |slot: &Slot| slot.tenant.0 == tenant)
            }
            _ => return self.invalidate(),
        };
        for slot in self.slots.lock().expect("cache slots").values() {
            if drops(slot) {
                slot.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// Listens on [`CHANNEL`] until the cache is dropped: every notification drops what it names,
/// and every lost or regained connection drops everything.
async fn listen(
    cache: Weak<Inner>,
    options: sqlx::postgres::PgConnectOptions,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let bump = |cache: &Weak<Inner>, listening: Option<bool>| -> bool {
        let Some(inner) = cache.upgrade() else {
            return false;
        };
        if let Some(listening) = listening {
            inner.listening.store(listening, Ordering::Release);
        }
        inner.invalidate();
        true
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .connect_lazy_with(options);
    loop {
        let connected = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = &mut stopped => return,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, "console cache: cannot listen for changes; reading through");
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = tokio::time::sleep(RECONNECT_AFTER) => continue,
                    }
                }
            },
        };
        if !bump(&cache, Some(true)) {
            return;
        }
        loop {
            let next = tokio::select! {
                _ = &mut stopped => return,
                next = listener.try_recv() => next,
            };
            match next {
                Ok(Some(change)) => match cache.upgrade() {
                    Some(inner) => inner.changed(change.payload()),
                    None => return,
                },
                // The connection was lost and made again: changes may have been missed.
                Ok(None) => {
                    if !bump(&cache, None) {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "console cache: lost the change listener; reading through");
                    break;
                }
            }
        }
        if !bump(&cache, Some(false)) {
            return;
        }
        drop(listener);
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(RECONNECT_AFTER) => {}
        }
    }
}

/// Drops every kept answer after a request that may have written, once it has answered.
pub async fn invalidate_after_writes(
    axum::extract::State(cache): axum::extract::State<ReadCache>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
    let response = next.run(request).await;
    if writes {
        cache.invalidate();
    }
    response
}

fn serialize<T: Serialize>(value: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(ApiError::internal)
}

fn json_response(body: Bytes) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}
