//! The engagement collector: what came back about the fleet's posts, pulled through the
//! platforms' MCP tool (`social.metrics`) into `asset_events` (see
//! [`chimera_store::engagement`]).
//!
//! Run on a schedule: the local runner every `--collect-every` seconds, in AWS an EventBridge
//! schedule invoking the worker with `{"collect_engagement": {}}`. Each run measures the posts
//! and replies committed in the last seven days, 100 per call, at one moment, and records them
//! in one batch per call; a run repeated at the same moment records nothing twice.
//!
//! The tool's answer is untrusted: only posts that were asked about are kept, and counts are
//! read as non-negative integers.

use std::collections::HashMap;

use anyhow::Context;
use chimera_mcp::McpClient;
use chimera_store::PgPool;
use chimera_store::engagement::{self, Measured, PublishedPost};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

/// Posts asked about per tool call (the tool's own bound).
const PER_CALL: usize = 100;
/// Posts measured per run at most.
const PER_RUN: i64 = 5_000;

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Posts and replies of the window.
    pub posts: usize,
    /// Of which the platform measured.
    pub measured: usize,
    /// Rows written to `asset_events`.
    pub rows: u64,
    pub partitions_created: i32,
    /// Batches whose answer could not be used (logged; the next run asks again).
    pub failed_batches: usize,
}

#[derive(Deserialize)]
struct Report {
    metrics: Vec<Metric>,
}

#[derive(Deserialize)]
struct Metric {
    post_id: uuid::Uuid,
    views: u64,
    likes: u64,
    replies: u64,
    shares: u64,
}

/// A count as stored (a tool claiming more than `i64` holds is held to it).
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Measures the posts of the last week at `at` and records what came back.
pub async fn collect(
    pool: &PgPool,
    mcp: &McpClient,
    at: DateTime<Utc>,
) -> anyhow::Result<Collected> {
    let posts = engagement::recent_posts(pool, at - engagement::LOOKBACK, PER_RUN)
        .await
        .context("reading the week's posts")?;
    let mut collected = Collected {
        posts: posts.len(),
        ..Collected::default()
    };
    for batch in posts.chunks(PER_CALL) {
        let asked: HashMap<uuid::Uuid, &PublishedPost> =
            batch.iter().map(|p| (p.post_id, p)).collect();
        let ids: Vec<uuid::Uuid> = asked.keys().copied().collect();
        let answer = mcp
            .call(
                &["social.metrics"],
                "social.metrics",
                json!({"post_ids": ids, "at": at}),
            )
            .await
            .map_err(anyhow::Error::new)
            .and_then(|output| output.parse::<Report>().map_err(anyhow::Error::new));
        let report = match answer {
            Ok(report) => report,
            Err(err) => {
                // One bad answer costs its batch, not the run.
                tracing::warn!(
                    error = format!("{err:#}"),
                    posts = ids.len(),
                    "social.metrics gave nothing usable"
                );
                collected.failed_batches += 1;
                continue;
            }
        };
        let mut seen = std::collections::HashSet::new();
        let measured: Vec<Measured> = report
            .metrics
            .into_iter()
            // Only posts asked about, each once.
            .filter(|m| seen.insert(m.post_id))
            .filter_map(|m| {
                let post = asked.get(&m.post_id)?;
                Some(Measured {
                    asset_id: post.asset_id,
                    agent_id: post.agent_id,
                    platform: post.platform.clone(),
                    post_id: m.post_id,
                    views: count(m.views),
                    likes: count(m.likes),
                    replies: count(m.replies),
                    shares: count(m.shares),
                })
            })
            .collect();
        collected.measured += measured.len();
        let recorded = engagement::record(pool, at, &measured)
            .await
            .context("recording engagement")?;
        collected.rows += recorded.rows;
        collected.partitions_created += recorded.partitions_created;
    }
    tracing::info!(
        posts = collected.posts,
        measured = collected.measured,
        rows = collected.rows,
        partitions_created = collected.partitions_created,
        failed_batches = collected.failed_batches,
        "engagement collected"
    );
    Ok(collected)
}
