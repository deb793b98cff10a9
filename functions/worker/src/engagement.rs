//! The engagement collector: what came back about the fleet's posts, pulled through each
//! platform's `metrics` operation (the world's `social.metrics`; Bluesky's `get_posts`, whose
//! like, reply and repost counts the profile maps) into `asset_events` (see
//! [`chimera_store::engagement`]).
//!
//! Run on a schedule: the local runner every `--collect-every` seconds, in AWS an EventBridge
//! schedule invoking the worker with `{"collect_engagement": {}}`. Each run measures the posts
//! and replies committed in the last seven days at one moment, grouped by platform (and by
//! agent where the platform's server acts for one agent), at most 100 per call (fewer where the
//! binding's `max_batch` says so), and records them in one batch per call; a run repeated at
//! the same moment records nothing twice.
//!
//! The tool's answer is untrusted: only posts that were asked about are kept, and counts are
//! read as non-negative integers.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use chimera_core::domain::AgentId;
use chimera_mcp::{McpClient, Op, Vars};
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
    post_id: String,
    /// A count the platform does not keep (Bluesky counts no views) or left out is 0.
    #[serde(default)]
    views: Option<u64>,
    #[serde(default)]
    likes: Option<u64>,
    #[serde(default)]
    replies: Option<u64>,
    #[serde(default)]
    shares: Option<u64>,
}

/// A count as stored (a tool claiming more than `i64` holds is held to it).
fn count(n: Option<u64>) -> i64 {
    i64::try_from(n.unwrap_or(0)).unwrap_or(i64::MAX)
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
    // By platform, and by agent where the platform's server acts for one agent.
    let mut per_agent: HashMap<Option<&str>, bool> = HashMap::new();
    for post in &posts {
        let platform = post.platform.as_deref();
        if per_agent.contains_key(&platform) {
            continue;
        }
        match mcp.per_agent(Op::Metrics, platform).await {
            Ok(answer) => {
                per_agent.insert(platform, answer);
            }
            Err(err) => {
                tracing::warn!(error = %err, platform, "no metrics for this platform");
            }
        }
    }
    let mut groups: BTreeMap<(Option<String>, Option<uuid::Uuid>), Vec<&PublishedPost>> =
        BTreeMap::new();
    for post in &posts {
        let Some(by_agent) = per_agent.get(&post.platform.as_deref()) else {
            continue;
        };
        let agent = by_agent.then_some(post.agent_id);
        groups
            .entry((post.platform.clone(), agent))
            .or_default()
            .push(post);
    }
    let batches = groups.iter().flat_map(|((platform, agent), posts)| {
        let per_call = mcp
            .config()
            .profile
            .binding(Op::Metrics, platform.as_deref())
            .max_batch
            .unwrap_or(PER_CALL)
            .min(PER_CALL);
        posts
            .chunks(per_call)
            .map(move |batch| (platform.as_deref(), *agent, batch))
    });
    for (platform, agent, batch) in batches {
        let asked: HashMap<&str, &PublishedPost> =
            batch.iter().map(|p| (p.post_id.as_str(), *p)).collect();
        let ids: Vec<&str> = asked.keys().copied().collect();
        let mut vars = Vars::new();
        vars.insert("post_ids".into(), json!(ids));
        vars.insert("at".into(), json!(at));
        let answer = mcp
            .invoke(
                &[Op::Metrics],
                Op::Metrics,
                platform,
                agent.map(AgentId),
                vars,
            )
            .await
            .map_err(anyhow::Error::new)
            .and_then(|invoked| invoked.parse::<Report>().map_err(anyhow::Error::new));
        let report = match answer {
            Ok(report) => report,
            Err(err) => {
                // One bad answer costs its batch, not the run.
                tracing::warn!(
                    error = format!("{err:#}"),
                    posts = ids.len(),
                    platform,
                    "the platform's metrics gave nothing usable"
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
            .filter(|m| seen.insert(m.post_id.clone()))
            .filter_map(|m| {
                let post = asked.get(m.post_id.as_str())?;
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
