//! The review sweep: nothing waits forever.
//!
//! Run on a schedule (an EventBridge schedule in AWS, the runner locally), [`run`]:
//! - escalates pending reviews past their due time (priority up, a notification, an audit
//!   record) and rejects by default those past their final deadline, then settles their goals;
//! - sends again approved `execute` tasks that have waited unsent (a send that failed after the
//!   decision was taken); the worker performs each effect once whatever it receives.

use chimera_core::envelope::{self, TaskMessage};
use chimera_core::names::Queue;
use chimera_store::reviews::{self, Swept};

use crate::AppState;

/// Most reviews escalated, and most defaulted, per run.
const BATCH: i64 = 200;
/// An `execute` task queued longer than this without a result is sent again.
const UNSENT_AFTER_SECS: i64 = 120;

/// One sweep at the current time.
pub async fn run(state: &AppState) -> anyhow::Result<Swept> {
    let now = chrono::Utc::now();
    let swept = reviews::sweep(&state.pool, now, BATCH).await?;
    for goal in &swept.goals {
        crate::reviews::settle(state, *goal).await;
    }
    let stale = reviews::waiting_effects(
        &state.pool,
        now - chrono::Duration::seconds(UNSENT_AFTER_SECS),
    )
    .await?;
    for task in &stale {
        state
            .outbox
            .send(
                Queue::Task,
                envelope::encode(&TaskMessage { task: task.clone() }),
            )
            .await?;
    }
    if !swept.escalated.is_empty() || !swept.defaulted.is_empty() || !stale.is_empty() {
        tracing::info!(
            escalated = swept.escalated.len(),
            defaulted = swept.defaulted.len(),
            resent_effects = stale.len(),
            "review sweep"
        );
    }
    Ok(swept)
}
