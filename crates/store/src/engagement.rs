//! The engagement loop's records: what came back about the posts the fleet published (views,
//! likes, replies, shares), as `engagement` rows of the time-partitioned `asset_events`, and
//! each agent's summary of its week for the planner.
//!
//! - [`recent_posts`]: posts and replies committed since a moment, with the platform's post id
//!   (from the effect's receipt) and the receipt's asset, which the events are about.
//! - [`record`]: one batch of measurements, in one transaction: the weekly partitions of the
//!   moment measured (and the next week) are created first when missing, under a lock, so a
//!   row never lands in the default partition; then one multi-row insert. A post measured
//!   twice at the same moment is recorded once.
//! - [`week_summary`]: an agent's posts of the last seven days with their latest engagement,
//!   the most liked first.

use chimera_core::domain::AgentId;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// A published post or reply, as the collector asks about it.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedPost {
    /// The effect's receipt, which the engagement events are about.
    pub asset_id: uuid::Uuid,
    pub agent_id: uuid::Uuid,
    pub platform: Option<String>,
    /// The platform's id of the post (a UUID in the world, an `at://` URI on Bluesky).
    pub post_id: String,
    pub published_at: DateTime<Utc>,
}

/// The posts and replies committed at or after `since`, newest first, at most `limit`.
/// A receipt that names no post id (another tool's answer) is skipped.
pub async fn recent_posts(
    pool: &PgPool,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<PublishedPost>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select distinct on (c.committed_at, e.id)
                  a.id as asset_id, e.agent_id,
                  e.inputs -> 'arguments' ->> 'platform' as platform,
                  r.artifact -> 'artifacts' -> 0 ->> 'inline' as receipt,
                  c.committed_at
           from tasks e
           join commits c on c.task_id = e.id
           join results r on r.id = c.result_id
           join assets a on a.task_id = e.id
                        and a.sha256 = r.artifact -> 'artifacts' -> 0 ->> 'sha256'
           where e.kind = 'execute' and e.status = 'committed'
             and e.inputs ->> 'action' in ('social.publish', 'social.reply')
             and c.committed_at >= $1
           order by c.committed_at desc, e.id, a.created_at
           limit $2"#,
        since,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let receipt: serde_json::Value = serde_json::from_str(r.receipt.as_deref()?).ok()?;
            let post_id = receipt.get("post_id")?.as_str()?.to_owned();
            Some(PublishedPost {
                asset_id: r.asset_id,
                agent_id: r.agent_id,
                platform: r.platform,
                post_id,
                published_at: r.committed_at,
            })
        })
        .collect())
}

/// One post's engagement at a moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    pub asset_id: uuid::Uuid,
    pub agent_id: uuid::Uuid,
    pub platform: Option<String>,
    pub post_id: String,
    pub views: i64,
    pub likes: i64,
    pub replies: i64,
    pub shares: i64,
}

/// What one [`record`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Weekly partitions created for the moment measured.
    pub partitions_created: i32,
    /// Rows written (a post already measured at that moment is not written again).
    pub rows: u64,
}

/// Records `measured` at `at`: the partitions first, then the rows, in one transaction.
pub async fn record(
    pool: &PgPool,
    at: DateTime<Utc>,
    measured: &[Measured],
) -> Result<Recorded, sqlx::Error> {
    if measured.is_empty() {
        return Ok(Recorded::default());
    }
    let mut tx = pool.begin().await?;
    // Two collectors must not both create a partition: the second would fail.
    sqlx::query!("select pg_advisory_xact_lock(hashtext('chimera-asset-event-partitions'))")
        .execute(&mut *tx)
        .await?;
    let partitions_created: i32 =
        sqlx::query_scalar!("select ensure_asset_event_partitions($1, 2)", at)
            .fetch_one(&mut *tx)
            .await?
            .unwrap_or(0);
    let column = |f: fn(&Measured) -> i64| measured.iter().map(f).collect::<Vec<i64>>();
    let assets: Vec<uuid::Uuid> = measured.iter().map(|m| m.asset_id).collect();
    let agents: Vec<uuid::Uuid> = measured.iter().map(|m| m.agent_id).collect();
    let platforms: Vec<Option<String>> = measured.iter().map(|m| m.platform.clone()).collect();
    let posts: Vec<String> = measured.iter().map(|m| m.post_id.clone()).collect();
    let rows = sqlx::query!(
        r#"insert into asset_events (occurred_at, asset_id, agent_id, event_type, platform, payload)
           select $1, m.asset_id, m.agent_id, 'engagement', m.platform,
                  jsonb_build_object('post_id', m.post_id, 'views', m.views, 'likes', m.likes,
                                     'replies', m.replies, 'shares', m.shares)
           from unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int8[], $7::int8[],
                       $8::int8[], $9::int8[])
                as m (asset_id, agent_id, platform, post_id, views, likes, replies, shares)
           where not exists (
               select 1 from asset_events x
               where x.asset_id = m.asset_id and x.occurred_at = $1 and x.event_type = 'engagement')"#,
        at,
        &assets,
        &agents,
        &platforms as &[Option<String>],
        &posts,
        &column(|m| m.views),
        &column(|m| m.likes),
        &column(|m| m.replies),
        &column(|m| m.shares),
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Recorded {
        partitions_created,
        rows,
    })
}

/// A post of the week with its latest engagement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostOfTheWeek {
    pub platform: Option<String>,
    pub text: String,
    pub views: i64,
    pub likes: i64,
    pub replies: i64,
}

/// What worked for an agent in the seven days before `now`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WeekSummary {
    /// Posts and replies measured this week.
    pub posts: i64,
    pub views: i64,
    pub likes: i64,
    pub replies: i64,
    /// The most liked first, at most three.
    pub best: Vec<PostOfTheWeek>,
}

/// `agent`'s week before `now`, from each post's latest measurement.
pub async fn week_summary(
    pool: &PgPool,
    agent: AgentId,
    now: DateTime<Utc>,
) -> Result<WeekSummary, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select l.platform, e.inputs -> 'arguments' ->> 'text' as text,
                  (l.payload ->> 'views')::int8 as "views!",
                  (l.payload ->> 'likes')::int8 as "likes!",
                  (l.payload ->> 'replies')::int8 as "replies!"
           from (select distinct on (asset_id) asset_id, platform, payload
                 from asset_events
                 where agent_id = $1 and event_type = 'engagement'
                   and occurred_at > $2::timestamptz - interval '7 days' and occurred_at <= $2
                 order by asset_id, occurred_at desc) l
           join assets a on a.id = l.asset_id
           join tasks e on e.id = a.task_id
           order by 4 desc, 3 desc"#,
        agent.0,
        now,
    )
    .fetch_all(pool)
    .await?;
    let mut summary = WeekSummary {
        posts: rows.len() as i64,
        ..WeekSummary::default()
    };
    for r in &rows {
        summary.views += r.views;
        summary.likes += r.likes;
        summary.replies += r.replies;
    }
    summary.best = rows
        .into_iter()
        .take(3)
        .map(|r| PostOfTheWeek {
            platform: r.platform,
            text: r.text.unwrap_or_default(),
            views: r.views,
            likes: r.likes,
            replies: r.replies,
        })
        .collect();
    Ok(summary)
}

/// The window the collector looks back over: posts older than this stop being measured.
pub const LOOKBACK: Duration = Duration::days(7);
