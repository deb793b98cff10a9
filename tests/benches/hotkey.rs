//! A hot key measured two ways (`scripts/bench hotkey`): `BENCH_REPLIES` (200) replies of one
//! agent to one post, all submitted at once, with a policy of 3 attempts.
//!
//! 1. As built: two pollers per function, batches of up to 10; a task that conflicts waits
//!    for the next commit on its key (or a jittered backoff) and is replanned.
//! 2. One at a time for the agent: one poller per function, batches of 1, which is what an SQS
//!    FIFO queue with one message group per agent would give a one-agent workload (each
//!    function handles the agent's next message only once the last one is done).
//!
//! It prints, for each: the time until every reply settled, reply attempts, conflicts, wasted
//! work (conflicted attempts / attempts) and the most conflicts one reply met.

use std::time::Duration;

use chimera_runner::SourceSettings;
use chimera_tests::swarm::{Swarm, SwarmOptions};
use chimera_tests::{bench_setting, hot};

async fn run(label: &str, settings: SourceSettings, replies: usize) {
    let mut swarm = Swarm::new(SwarmOptions {
        policy: hot::policy(10_000, 3),
        settings,
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    let run = hot::replies_in_one_thread(&swarm, replies, "post-hot").await;
    let failed = run.statuses.iter().filter(|s| *s != "completed").count();
    println!("hotkey: {label}: {run}; {failed} not completed");
    swarm.stop().await;
}

#[tokio::main]
async fn main() {
    chimera_aws::telemetry::set_metrics_sink(Box::new(std::io::sink()));
    let replies = bench_setting("BENCH_REPLIES", 200);
    let base = SourceSettings {
        wait: Duration::from_secs(1),
        retry_after: Some(Duration::ZERO),
        ..SourceSettings::default()
    };
    run(
        "as built (2 pollers a function, batches of 10)",
        base.clone(),
        replies,
    )
    .await;
    run(
        "one at a time for the agent (1 poller a function, batches of 1: a FIFO group per agent)",
        SourceSettings {
            concurrency: 1,
            batch_size: 1,
            ..base
        },
        replies,
    )
    .await;
}
