//! The console's reads, kept for a moment: the review queue, cards and the fleet view are
//! asked for again and again by every open console, and the database's answer rarely changes
//! between two asks.
//!
//! An answer is kept, as the JSON it was sent as, per tenant and URI, for at most [`READ_TTL`]
//! from when its read began. It is dropped sooner when anything could have changed it:
//! - a request of this process that may write (any method but GET and HEAD, unless it was
//!   refused with a 4xx) drops everything before it answers, so a caller reads its own writes
//!   from the process that made them;
//! - a row written by any process (the judge holding an item, another reviewer's decision, the
//!   sweep, another API instance) drops what it shows when its transaction commits: the
//!   database sends `console_changed` (migration 11) and each process listens on a connection
//!   of its own. A review's change drops its card and its tenant's lists (queue and fleet); an
//!   agent's change drops everything of its tenant; anything else everything.
//!
//! Nothing is kept while the listener is not known to hear: until a notification it sent
//! itself came back through the database, after its connection is lost, and when a ping
//! (every [`PING_EVERY`] without other news) does not come back within [`PING_WITHIN`]. So
//! a proxy that does not pass notifications on, or a connection that died silently, means
//! reading through, not stale answers. Figures that move with the swarm's work and send no
//! notification (goals in flight, spend, quota use, a deferral's time, writes to goals and
//! budgets by another instance) are at most [`READ_TTL`] old. Concurrent asks for an answer
//! that is not kept wait for one read of it. At most [`MAX_BYTES`] of answers are kept.
//!
//! Under Lambda an execution environment is frozen between invocations, its listener too: an
//! environment thawed within a second of its last answer may serve it once before it has read
//! the notifications that arrived meanwhile; never one older than [`READ_TTL`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use chimera_core::domain::TenantId;
use chimera_store::PgPool;
use futures::StreamExt;
use serde::Serialize;

use crate::ApiError;

/// The longest an answer is kept, from when its read began.
pub const READ_TTL: Duration = Duration::from_secs(1);

/// The channel migration 11's triggers notify.
pub const CHANNEL: &str = "console_changed";

/// After this long without a notification, the listener sends itself one.
pub const PING_EVERY: Duration = Duration::from_secs(10);

/// A ping that has not come back within this is a connection that no longer hears.
pub const PING_WITHIN: Duration = Duration::from_secs(5);

/// At most this many bytes of answers are kept; past it, answers no longer fresh are dropped
/// and, if that is not enough, a new answer is sent without being kept.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;

/// At most this many answers are kept (each slot costs a little even when empty).
const MAX_ENTRIES: usize = 4096;

/// The listener's wait before connecting again: doubled after each failure, up to the most.
const RECONNECT_AFTER: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(30));

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

struct Inner {
    /// Where answers are read, and where the listener sends its pings.
    pool: PgPool,
    /// The longest an answer is kept ([`READ_TTL`] but in tests).
    ttl: Duration,
    /// Bumped by a change that may touch anything; an answer read under an older one is not
    /// served.
    generation: AtomicU64,
    /// The listener hears notifications: only then are answers kept.
    listening: AtomicBool,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// The bytes of the answers kept.
    bytes: AtomicUsize,
    /// Set when the listener starts (on the first read); dropped with the cache, it ends it.
    stop: OnceLock<tokio::sync::oneshot::Sender<()>>,
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
    /// When the read began.
    at: Instant,
}

impl ReadCache {
    /// A cache of answers read from `pool`, keeping each at most `ttl` ([`READ_TTL`]).
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                ttl,
                generation: AtomicU64::new(0),
                listening: AtomicBool::new(false),
                slots: Mutex::default(),
                bytes: AtomicUsize::new(0),
                stop: OnceLock::new(),
            }),
        }
    }

    /// The answer at `uri` for `tenant` (the caller's permission was checked), which `shows`
    /// what it shows: the kept one if fresh, else `load`'s, serialized once and kept.
    pub async fn json<T, F, Fut>(
        &self,
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
        self.start();
        let slot = if self.is_listening() {
            self.slot(tenant, shows, uri)
        } else {
            None
        };
        let Some(slot) = slot else {
            return Ok(json_response(serialize(&load().await?)?));
        };
        // What this ask knows of: an answer read since then will do.
        let known = self.generations(&slot);
        if let Some(body) = self.inner.fresh(&slot, known) {
            return Ok(json_response(body));
        }
        let _loading = slot.loading.lock().await;
        // Another ask may have read it while this one waited.
        if let Some(body) = self.inner.fresh(&slot, known) {
            return Ok(json_response(body));
        }
        // Taken before the read: a change committed during it makes the answer stale at once.
        let (generations, at) = (self.generations(&slot), Instant::now());
        let body = serialize(&load().await?)?;
        if self.is_listening() {
            self.inner.keep(
                &slot,
                Kept {
                    body: body.clone(),
                    generations,
                    at,
                },
            );
        }
        Ok(json_response(body))
    }

    /// Drops every kept answer.
    pub fn invalidate(&self) {
        self.inner.invalidate();
    }

    /// Whether answers are being kept (the listener hears notifications).
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Acquire)
    }

    fn generations(&self, slot: &Slot) -> (u64, u64) {
        (
            self.inner.generation.load(Ordering::Acquire),
            slot.generation.load(Ordering::Acquire),
        )
    }

    /// The slot for `uri` of `tenant`, made if there is room.
    fn slot(&self, tenant: TenantId, shows: Shows, uri: &str) -> Option<Arc<Slot>> {
        let key = format!("{tenant} {uri}");
        let mut slots = self.inner.slots.lock().expect("cache slots");
        if let Some(slot) = slots.get(&key) {
            return Some(slot.clone());
        }
        if slots.len() >= MAX_ENTRIES {
            self.inner.prune(&mut slots);
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

    /// Starts the listener once.
    fn start(&self) {
        self.inner.stop.get_or_init(|| {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            tokio::spawn(listen(Arc::downgrade(&self.inner), stopped));
            stop
        });
    }
}

impl Inner {
    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The listener hears: answers may be kept from now on (none from before).
    fn hears(&self) {
        self.invalidate();
        self.listening.store(true, Ordering::Release);
    }

    /// The listener does not hear: nothing is kept, nor served.
    fn deaf(&self) {
        self.listening.store(false, Ordering::Release);
        self.invalidate();
    }

    /// The body kept in `slot`, if read since `known` (the generations an ask knew of) and
    /// within the TTL. An expired body is freed.
    fn fresh(&self, slot: &Slot, known: (u64, u64)) -> Option<Bytes> {
        let mut kept = slot.kept.lock().expect("cache slot");
        let current = kept.as_ref()?;
        if current.at.elapsed() >= self.ttl {
            self.free(&mut kept);
            return None;
        }
        (current.generations.0 >= known.0 && current.generations.1 >= known.1)
            .then(|| current.body.clone())
    }

    /// Drops the body kept in a slot, counting its bytes out.
    fn free(&self, kept: &mut Option<Kept>) {
        if let Some(old) = kept.take() {
            self.bytes.fetch_sub(old.body.len(), Ordering::AcqRel);
        }
    }

    /// Keeps `answer` in `slot` if the bytes allow, dropping stale answers to make room.
    fn keep(&self, slot: &Slot, answer: Kept) {
        let size = answer.body.len();
        if self.bytes.load(Ordering::Acquire) + size > MAX_BYTES {
            self.prune(&mut self.slots.lock().expect("cache slots"));
            if self.bytes.load(Ordering::Acquire) + size > MAX_BYTES {
                return;
            }
        }
        let mut kept = slot.kept.lock().expect("cache slot");
        self.free(&mut kept);
        self.bytes.fetch_add(size, Ordering::AcqRel);
        *kept = Some(answer);
    }

    /// Drops the answers that would not be served now, and the slots nobody uses that keep
    /// nothing.
    fn prune(&self, slots: &mut HashMap<String, Arc<Slot>>) {
        let generation = self.generation.load(Ordering::Acquire);
        slots.retain(|_, slot| {
            let known = (generation, slot.generation.load(Ordering::Acquire));
            let fresh = self.fresh(slot, known).is_some();
            if !fresh {
                self.free(&mut slot.kept.lock().expect("cache slot"));
            }
            fresh || Arc::strong_count(slot) > 1
        });
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

/// Why one listening connection ended.
enum Ended {
    /// The cache was dropped.
    Stopped,
    /// Lost, or never heard; `heard` when it had heard before.
    Lost { heard: bool, why: String },
}

/// Listens on [`CHANNEL`] until the cache is dropped, connecting again (with a growing wait)
/// whenever a connection ends.
async fn listen(cache: Weak<Inner>, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    // A panic here must not leave the cache keeping answers nobody drops.
    struct Deaf(Weak<Inner>);
    impl Drop for Deaf {
        fn drop(&mut self) {
            if let Some(inner) = self.0.upgrade() {
                inner.deaf();
            }
        }
    }
    let _deaf = Deaf(cache.clone());
    // The pool, not the cache: the listener must not keep the cache alive.
    let Some(pool) = cache.upgrade().map(|inner| inner.pool.clone()) else {
        return;
    };
    let mut wait = RECONNECT_AFTER.0;
    loop {
        match listen_once(&cache, &pool, &mut stopped).await {
            Ended::Stopped => return,
            Ended::Lost { heard, why } => {
                if heard {
                    wait = RECONNECT_AFTER.0;
                }
                tracing::warn!(why, retry_in = ?wait, "console cache: not hearing changes; reading through");
            }
        }
        match cache.upgrade() {
            Some(inner) => inner.deaf(),
            None => return,
        }
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RECONNECT_AFTER.1);
    }
}

/// One listening connection, of its own (a pool of one, made anew each time, so a broken
/// connection is never waited for), until it ends. It hears once a ping it sent through `pool`
/// came back.
async fn listen_once(
    cache: &Weak<Inner>,
    pool: &PgPool,
    stopped: &mut tokio::sync::oneshot::Receiver<()>,
) -> Ended {
    let lost = |heard: bool, why: String| Ended::Lost { heard, why };
    let own = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(PING_WITHIN)
        .connect_lazy_with((*pool.connect_options()).clone());
    let connected = async {
        let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    let listener = tokio::select! {
        _ = &mut *stopped => return Ended::Stopped,
        connected = connected => match connected {
            Ok(listener) => listener,
            Err(err) => return lost(false, err.to_string()),
        },
    };
    // `into_stream` would connect again by itself and hide the loss: each notification is
    // taken with `try_recv`, whose `None` is a lost connection (no reconnecting: see above).
    // The stream keeps the pending receive across the select's other branches.
    let mut notifications = Box::pin(futures::stream::unfold(listener, |mut listener| async {
        match listener.try_recv().await {
            Ok(Some(change)) => Some((Ok(change), listener)),
            Ok(None) => None,
            Err(err) => Some((Err(err), listener)),
        }
    }));
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mut pings = 0u64;
    // The ping awaited (its payload and when it was sent), and when anything was last heard.
    let mut awaited: Option<(String, Instant)> = None;
    let mut heard_at: Option<Instant> = None;
    let mut heard = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut *stopped => return Ended::Stopped,
            _ = tick.tick() => {
                if let Some((_, sent)) = &awaited {
                    if sent.elapsed() > PING_WITHIN {
                        return lost(heard, format!("a ping did not come back within {PING_WITHIN:?}"));
                    }
                } else if heard_at.is_none_or(|at| at.elapsed() >= PING_EVERY) {
                    pings += 1;
                    let payload = format!("ping {nonce} {pings}");
                    let sent = sqlx::query("select pg_notify($1, $2)")
                        .bind(CHANNEL)
                        .bind(&payload)
                        .execute(pool)
                        .await;
                    if let Err(err) = sent {
                        return lost(heard, format!("sending a ping: {err}"));
                    }
                    awaited = Some((payload, Instant::now()));
                }
            }
            next = notifications.next() => {
                let change = match next {
                    Some(Ok(change)) => change,
                    Some(Err(err)) => return lost(heard, err.to_string()),
                    None => return lost(heard, "the connection was lost".into()),
                };
                let Some(inner) = cache.upgrade() else {
                    return Ended::Stopped;
                };
                heard_at = Some(Instant::now());
                let payload = change.payload();
                if awaited.as_ref().is_some_and(|(ping, _)| ping == payload) {
                    awaited = None;
                    if !heard {
                        heard = true;
                        inner.hears();
                    }
                } else if !payload.starts_with("ping ") {
                    inner.changed(payload);
                }
            }
        }
    }
}

/// Drops every kept answer after a request that may have written, before it answers (a
/// request refused with a 4xx wrote nothing).
pub async fn invalidate_after_writes(
    axum::extract::State(cache): axum::extract::State<ReadCache>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
    let response = next.run(request).await;
    if writes && !response.status().is_client_error() {
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
