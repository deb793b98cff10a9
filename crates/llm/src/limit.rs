//! How many calls a process has in flight to one model endpoint.
//!
//! A model server answers a bounded number of calls at once (the local stack's one at a time,
//! with a queue of 32 behind it; a hosted endpoint up to its rate limit). Calls beyond that
//! only wait in the server's queue, where a caller cannot tell waiting from working and the
//! server answers 429 once the queue is full. So each process takes a slot per call from one
//! semaphore per endpoint, shared by every function it hosts (the local runner hosts three),
//! and a call that gets no slot by its deadline is [`crate::LlmError::Busy`]: its caller defers
//! the work instead of degrading it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Semaphore, SemaphorePermit};

/// The default number of calls in flight per endpoint.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// `CHIMERA_LLM_CONCURRENCY`: calls in flight per endpoint and process (default
/// [`DEFAULT_CONCURRENCY`]); at least 1.
pub fn concurrency_from_env() -> Result<usize, String> {
    match crate::var("CHIMERA_LLM_CONCURRENCY") {
        None => Ok(DEFAULT_CONCURRENCY),
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1024).contains(n))
            .ok_or_else(|| format!("CHIMERA_LLM_CONCURRENCY={n} is not a number in 1..=1024")),
    }
}

/// An endpoint's call slots.
#[derive(Debug)]
pub struct Slots {
    semaphore: Semaphore,
    size: usize,
}

impl Slots {
    /// One slot, held until the returned permit drops; `None` when none freed by `by`.
    pub async fn take(&self, by: std::time::Instant) -> Option<SemaphorePermit<'_>> {
        tokio::time::timeout_at(by.into(), self.semaphore.acquire())
            .await
            .ok()
            .and_then(Result::ok)
    }

    pub fn size(&self) -> usize {
        self.size
    }
}

/// The process's slots for `endpoint`: `size` of them, made the first time the endpoint is
/// named; the same slots afterwards (whatever `size` a later caller asks).
pub fn shared(endpoint: &str, size: usize) -> Arc<Slots> {
    static SLOTS: OnceLock<Mutex<HashMap<String, Arc<Slots>>>> = OnceLock::new();
    let mut slots = SLOTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    slots
        .entry(endpoint.to_owned())
        .or_insert_with(|| {
            let size = size.max(1);
            Arc::new(Slots {
                semaphore: Semaphore::new(size),
                size,
            })
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_endpoint_has_one_set_of_slots_and_a_full_set_times_out() {
        let a = shared("http://model.test/v1|m", 2);
        let b = shared("http://model.test/v1|m", 9);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.size(), 2);
        let other = shared("http://other.test/v1|m", 1);
        assert!(!Arc::ptr_eq(&a, &other));
        let soon = || std::time::Instant::now() + std::time::Duration::from_millis(20);
        let held = other.take(soon()).await.expect("a free slot");
        assert!(other.take(soon()).await.is_none());
        drop(held);
        assert!(other.take(soon()).await.is_some());
    }
}
