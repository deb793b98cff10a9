//! The sweep: nothing waits forever.
//!
//! Run on a schedule (an EventBridge schedule in AWS, the runner locally), [`run`]:
//! - escalates pending reviews past their due time (priority up, a notification, an audit
//!   record) and rejects by default those past their final deadline, then settles their goals;
//! - reconciles work that stopped moving ([`chimera_store::reconcile`]): tasks with no
//!   progress are sent again from the outbox, undecided results re-judged, lost replans and
//!   releases sent again, goals settled; each action audited;
//! - submits the goals of recurring schedules that came due ([`chimera_store::schedules`]),
//!   each occurrence once, and sends their messages;
//! - compares agents' wallets with the chain (their settled transfers, the balance) and audits
//!   a difference ([`crate::wallets`]);
//! - relays the outbox rows no handler sent (a flush that failed, a process that died between
//!   its commit and its flush), and forgets rows sent more than a day ago.

use chimera_core::names::Queue;
use chimera_store::outbox;
use chimera_store::reconcile::{self, Backlog, Reconciled};
use chimera_store::reviews::{self, Swept};
use chimera_store::schedules::{self, Scheduled};

use crate::AppState;

/// Most reviews escalated, and most defaulted, per run; most items of each kind reconciled.
const BATCH: i64 = 200;

/// What one sweep did.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub reviews: Swept,
    pub reconciled: Reconciled,
    /// Recurring goals submitted.
    pub scheduled: Scheduled,
    /// Outbox rows the sweep sent.
    pub relayed: usize,
    /// Wallets compared with the chain.
    pub wallets: crate::wallets::WalletsReconciled,
}

/// One sweep at the current time.
pub async fn run(state: &AppState) -> anyhow::Result<SweepReport> {
    let now = chrono::Utc::now();
    let swept = reviews::sweep(&state.pool, now, BATCH).await?;
    for goal in &swept.goals {
        crate::reviews::settle(state, *goal).await;
    }
    let reconciled = reconcile::reconcile(&state.pool, now, BATCH, backlog(state).await).await?;
    let scheduled = schedules::run(&state.pool, now).await?;
    // A chain that cannot be read holds up no other work: said, and tried at the next sweep.
    let wallets = state
        .wallets
        .reconcile(&state.pool, now, BATCH)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(
                error = format!("{err:#}"),
                "wallets not compared with the chain"
            );
            Default::default()
        });
    state.relay.flush(&scheduled.submitted).await;
    // Rows a handler wrote a moment ago are its own to flush; older ones are the sweep's.
    let relayed = state
        .relay
        .drain(chrono::Utc::now() - chrono::Duration::seconds(2))
        .await?;
    let mut conn = state.pool.acquire().await?;
    outbox::prune(&mut conn, now - chrono::Duration::days(1)).await?;
    if !swept.escalated.is_empty()
        || !swept.defaulted.is_empty()
        || !reconciled.is_empty()
        || relayed > 0
    {
        tracing::info!(
            escalated = swept.escalated.len(),
            defaulted = swept.defaulted.len(),
            unplanned = reconciled.unplanned.len(),
            redriven = reconciled.redriven.len(),
            given_up = reconciled.given_up.len(),
            rejudged = reconciled.rejudged.len(),
            replanned = reconciled.replanned.len(),
            released = reconciled.released.len(),
            settled = reconciled.settled.len(),
            relayed,
            backlog = ?reconciled.backlog,
            "sweep"
        );
    }
    Ok(SweepReport {
        reviews: swept,
        reconciled,
        scheduled,
        relayed,
        wallets,
    })
}

/// What the queues hold now; a queue whose depth cannot be read is `None` (logged).
async fn backlog(state: &AppState) -> Backlog {
    let read_at = Some(chrono::Utc::now());
    let queues = state.relay.queues();
    let depth = |queue: Queue| async move {
        match queues.backlog(queue).await {
            Ok(depth) => Some(depth),
            Err(err) => {
                tracing::warn!(%queue, error = format!("{err:#}"), "queue depth unknown: the reconciler goes by its budgets alone");
                None
            }
        }
    };
    let (goal, task, review) =
        tokio::join!(depth(Queue::Goal), depth(Queue::Task), depth(Queue::Review));
    Backlog {
        goal,
        task,
        review,
        read_at,
    }
}
