//! The swarm's pipeline against the real local stack: goal intake over the HITL API router,
//! and the planner.

mod intake;
mod planner;

use std::time::{Duration, Instant};

use chimera_aws::bootstrap::queue_url;
use chimera_core::names::{Queue, ResourceNames};
use chimera_tests::clients;

/// Bodies received (and deleted) from `queue`, until `expected` arrived or `wait` passed.
pub async fn drain(
    names: &ResourceNames,
    queue: Queue,
    expected: usize,
    wait: Duration,
) -> Vec<String> {
    let c = clients().await;
    let url = queue_url(&c, &names.queue(queue)).await.unwrap();
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        let got = c
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            out.push(m.body().unwrap().to_owned());
            c.sqs
                .delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    out
}
