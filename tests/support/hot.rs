//! A hot key: many replies of one agent to one post, all submitted at once, so every attempt
//! contends on the same thread key. The contention test checks what must hold; the `hotkey`
//! bench measures it under two orderings.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chimera_core::domain::GoalId;
use chimera_core::routing::{Policy, Quota};
use serde_json::json;

use crate::swarm::Swarm;

/// An agent policy with room for `replies` an hour on x (the thread contends, not the quota)
/// and `max_attempts` attempts a task.
pub fn policy(replies: u32, max_attempts: u32) -> Policy {
    Policy {
        max_attempts,
        quotas: BTreeMap::from([(
            "x".to_owned(),
            Quota {
                posts_per_day: None,
                replies_per_hour: Some(replies),
            },
        )]),
        ..Policy::default()
    }
}

/// What a run of [`replies_in_one_thread`] came to.
#[derive(Debug, Clone)]
pub struct HotThread {
    pub replies: usize,
    pub took: Duration,
    /// The goals' statuses once settled.
    pub statuses: Vec<String>,
    /// Attempts of the reply tasks, conflicts among them, and the most one reply met.
    pub attempts: i64,
    pub conflicts: i64,
    pub most: i32,
}

impl HotThread {
    pub fn wasted(&self) -> f64 {
        100.0 * self.conflicts as f64 / self.attempts.max(1) as f64
    }
}

impl std::fmt::Display for HotThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} replies in one thread: {:.1?}, {} attempts, {} conflicts ({:.1}% wasted), at most {} for one reply",
            self.replies,
            self.took,
            self.attempts,
            self.conflicts,
            self.wasted(),
            self.most
        )
    }
}

/// Submits `replies` replies of agent 0 to one post of x at once (a running swarm, its agent's
/// policy from [`policy`]) and waits until every goal settles.
pub async fn replies_in_one_thread(swarm: &Swarm, replies: usize, post: &str) -> HotThread {
    let text = "thanks for the kind words";
    swarm.script_quality(text, 0.95).await;
    let started = Instant::now();
    let goals: Vec<GoalId> = futures::future::join_all((0..replies).map(|_| async move {
        swarm
            .submit(
                0,
                "reply",
                text,
                json!({"platforms": ["x"], "in_reply_to": post}),
            )
            .await
    }))
    .await;
    let statuses = swarm.settle(&goals, Duration::from_secs(1800)).await;
    let took = started.elapsed();
    let (attempts, conflicts, most): (i64, i64, i32) = sqlx::query_as(
        "select sum(attempt)::bigint, sum(conflicts)::bigint, max(conflicts) from tasks where kind = 'reply'",
    )
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    HotThread {
        replies,
        took,
        statuses,
        attempts,
        conflicts,
        most,
    }
}
