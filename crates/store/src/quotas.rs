//! Platform quotas: how many posts a day and replies an hour an agent may publish on each
//! platform, enforced when an effect is approved.
//!
//! Each approved post or reply reserves one unit of its window in the approval's own
//! transaction, with an atomic, commutative counter (`used = used + 1 where used < limit`): two
//! approvals of one agent never conflict over it, they only queue for the window's row lock,
//! held until the approval's transaction ends. Windows are fixed and UTC-aligned: a day for posts, an hour for replies. When the
//! current window is full the effect is not failed: it reserves the first later window with
//! room and waits for it (its `execute` task is not due, and its message is delivered, until
//! the window starts); the card and the goal show when it goes. A reservation is released (the
//! database's `release_quota` trigger) if its effect fails for good or is cancelled.
//!
//! Limits come from the agent's policy (`quotas.<platform>` in AGENTS.md) and otherwise from
//! [`platform_default`], which follows what each platform publishes for automated accounts
//! (see `docs/capacity.md`).

use std::collections::BTreeMap;

use chimera_core::domain::{AgentId, Task, TaskStatus};
use chimera_core::effect::{self, EffectAction};
use chimera_core::routing::Quota;
use chrono::{DateTime, Duration, DurationRound, Utc};
use sqlx::PgConnection;

use crate::{outbox, records};

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Posts, per UTC day.
    Post,
    /// Replies, per UTC hour.
    Reply,
}

impl Counted {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Reply => "reply",
        }
    }

    /// The length of its windows.
    pub fn window(self) -> Duration {
        match self {
            Self::Post => Duration::days(1),
            Self::Reply => Duration::hours(1),
        }
    }
}

/// Windows searched ahead for room before an approval is refused.
pub const MAX_WINDOWS_AHEAD: i32 = 1000;

/// The limits a platform publishes for one automated account, as (posts per day, replies per
/// hour): X's limits for unverified accounts (50 posts and 200 replies a day), Threads' API
/// (250 posts, 1,000 replies per 24 h), Bluesky's (11,666 creates a day, 1,666 an hour),
/// Instagram's content publishing API (50 posts per 24 h; 60 comments an hour), TikTok's
/// direct post (about 15 a day) and LinkedIn's member posting (150 a day).
pub fn platform_default(platform: &str) -> (u32, u32) {
    match platform {
        "x" => (50, 8),
        "threads" => (250, 41),
        "bluesky" => (11_666, 1_666),
        "instagram" => (50, 60),
        "tiktok" => (15, 15),
        "linkedin" => (150, 20),
        // A platform nobody documented: the most careful of the above.
        _ => (15, 8),
    }
}

/// The quota an effect counts against: what, where, and the limit per window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub counted: Counted,
    pub platform: String,
    pub per_window: u32,
}

/// The quota `execute` counts against under `quotas` (the policy's), `None` for an effect no
/// quota counts (a transfer).
pub fn limit_of(execute: &Task, quotas: &BTreeMap<String, Quota>) -> Option<Limit> {
    let proposal = effect::performed_by(execute);
    let counted = match EffectAction::parse(&proposal.action)? {
        EffectAction::Publish => Counted::Post,
        EffectAction::Reply => Counted::Reply,
        EffectAction::Transfer => return None,
    };
    let platform = proposal.arguments.get("platform")?.as_str()?.to_owned();
    Some(Limit {
        counted,
        per_window: per_window(quotas, &platform, counted),
        platform,
    })
}

/// The limit per window of `counted` on `platform` under `quotas` (the policy's), else the
/// platform's default.
pub fn per_window(quotas: &BTreeMap<String, Quota>, platform: &str, counted: Counted) -> u32 {
    let (posts, replies) = platform_default(platform);
    let set = quotas.get(platform).copied().unwrap_or_default();
    match counted {
        Counted::Post => set.posts_per_day.unwrap_or(posts),
        Counted::Reply => set.replies_per_hour.unwrap_or(replies),
    }
    .max(1)
}

/// The start of the window of `counted` that holds `at`.
pub fn window_start(counted: Counted, at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(counted.window()).unwrap_or(at)
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(
        "no {counted} window with room in the next {MAX_WINDOWS_AHEAD} on {platform} (limit {limit})"
    )]
    Exhausted {
        counted: &'static str,
        platform: String,
        limit: u32,
    },
    #[error("database error during a quota reservation")]
    Database(#[from] sqlx::Error),
}

/// Reserves one unit of `limit` for `agent` in the first window with room, from the one that
/// holds `now`; returns that window's start.
pub async fn reserve(
    conn: &mut PgConnection,
    agent: AgentId,
    limit: &Limit,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, QuotaError> {
    let current = window_start(limit.counted, now);
    if let Some(start) = take(conn, agent, limit, current).await? {
        return Ok(start);
    }
    // Full: the first later window that is not (another approval may fill it first: look again).
    for _ in 0..8 {
        let width = limit.counted.window();
        let Some(candidate) = sqlx::query_scalar!(
            r#"select s as "start!"
               from generate_series($4::timestamptz + $6 * interval '1 second',
                                    $4::timestamptz + $6 * $7 * interval '1 second',
                                    $6 * interval '1 second') s
               where not exists (select 1 from quota_windows w
                                 where w.agent_id = $1 and w.platform = $2 and w.kind = $3
                                   and w.window_start = s and w.used >= $5)
               order by s
               limit 1"#,
            agent.0,
            limit.platform,
            limit.counted.as_str(),
            current,
            limit.per_window as i32,
            width.num_seconds() as f64,
            f64::from(MAX_WINDOWS_AHEAD),
        )
        .fetch_optional(&mut *conn)
        .await?
        else {
            break;
        };
        if let Some(start) = take(conn, agent, limit, candidate).await? {
            return Ok(start);
        }
    }
    Err(QuotaError::Exhausted {
        counted: limit.counted.as_str(),
        platform: limit.platform.clone(),
        limit: limit.per_window,
    })
}

/// One unit of the window starting at `start`, if it has room.
async fn take(
    conn: &mut PgConnection,
    agent: AgentId,
    limit: &Limit,
    start: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "insert into quota_windows (agent_id, platform, kind, window_start, used)
         values ($1, $2, $3, $4, 1)
         on conflict (agent_id, platform, kind, window_start)
             do update set used = quota_windows.used + 1 where quota_windows.used < $5
         returning window_start",
        agent.0,
        limit.platform,
        limit.counted.as_str(),
        start,
        limit.per_window as i32,
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Schedules an approved effect in the approval's transaction: its quota reserved, its
/// `execute` task stored `queued` and its message written to the outbox, both due when the
/// reserved window starts. Returns when that is, if it is later than now (the effect waits).
pub async fn schedule_effect(
    conn: &mut PgConnection,
    execute: &Task,
    quotas: &BTreeMap<String, Quota>,
) -> Result<Option<DateTime<Utc>>, QuotaError> {
    let now = Utc::now();
    let reserved = match limit_of(execute, quotas) {
        Some(limit) => {
            let start = reserve(conn, execute.agent_id, &limit, now).await?;
            Some((limit, start))
        }
        None => None,
    };
    let deferred_until = reserved
        .as_ref()
        .map(|(_, start)| *start)
        .filter(|start| *start > now);
    records::insert_task_in(conn, execute, TaskStatus::Queued, 1).await?;
    if let Some((limit, start)) = &reserved {
        sqlx::query!(
            "insert into quota_reservations (task_id, agent_id, platform, kind, window_start, quota)
             values ($1, $2, $3, $4, $5, $6)",
            execute.id.0,
            execute.agent_id.0,
            limit.platform,
            limit.counted.as_str(),
            start,
            limit.per_window as i32,
        )
        .execute(&mut *conn)
        .await?;
    }
    if let Some(at) = deferred_until {
        sqlx::query!(
            "update tasks set not_before = $2 where id = $1",
            execute.id.0,
            at
        )
        .execute(&mut *conn)
        .await?;
    }
    outbox::enqueue_task_at(conn, execute.id, deferred_until).await?;
    Ok(deferred_until)
}
