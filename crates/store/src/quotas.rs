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
//! (see `docs/capacity.md`). A platform that meters writes itself adds its own windows
//! ([`platform_points`]: Bluesky's PDS charges 3 points a record, 5,000 an hour and 35,000 a
//! day): an effect there takes its cost in units from both, posts and replies alike, and goes
//! when every window that counts it has room.

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
    /// A platform's write points, per UTC hour.
    PointsHour,
    /// A platform's write points, per UTC day.
    PointsDay,
}

impl Counted {
    pub const ALL: [Counted; 4] = [
        Counted::Post,
        Counted::Reply,
        Counted::PointsHour,
        Counted::PointsDay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Reply => "reply",
            Self::PointsHour => "points_hour",
            Self::PointsDay => "points_day",
        }
    }

    /// The kind named `name` ([`Self::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The length of its windows.
    pub fn window(self) -> Duration {
        match self {
            Self::Post | Self::PointsDay => Duration::days(1),
            Self::Reply | Self::PointsHour => Duration::hours(1),
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

/// What a platform meters itself, per account: each record created costs `cost` points, of
/// `per_hour` an hour and `per_day` a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePoints {
    pub cost: u32,
    pub per_hour: u32,
    pub per_day: u32,
}

/// The write points `platform`'s server enforces, if it meters writes: Bluesky's PDS (its
/// rate limits for record creation: 3 points a create, 5,000 points an hour, 35,000 a day).
pub fn platform_points(platform: &str) -> Option<WritePoints> {
    match platform {
        "bluesky" => Some(WritePoints {
            cost: 3,
            per_hour: 5_000,
            per_day: 35_000,
        }),
        _ => None,
    }
}

/// A quota an effect counts against: what, where, the limit per window and what the effect
/// takes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub counted: Counted,
    pub platform: String,
    pub per_window: u32,
    pub units: u32,
}

/// The quotas `execute` counts against under `quotas` (the policy's): its kind's (posts a day,
/// replies an hour) and its platform's write points; none for an effect no quota counts (a
/// transfer).
pub fn limits_of(execute: &Task, quotas: &BTreeMap<String, Quota>) -> Vec<Limit> {
    let proposal = effect::performed_by(execute);
    let counted = match EffectAction::parse(&proposal.action) {
        Some(EffectAction::Publish) => Counted::Post,
        Some(EffectAction::Reply) => Counted::Reply,
        Some(EffectAction::Transfer) | None => return Vec::new(),
    };
    let Some(platform) = proposal.arguments.get("platform").and_then(|p| p.as_str()) else {
        return Vec::new();
    };
    let mut limits = vec![Limit {
        counted,
        per_window: per_window(quotas, platform, counted),
        platform: platform.to_owned(),
        units: 1,
    }];
    if let Some(points) = platform_points(platform) {
        for counted in [Counted::PointsHour, Counted::PointsDay] {
            limits.push(Limit {
                counted,
                per_window: per_window(quotas, platform, counted),
                platform: platform.to_owned(),
                units: points.cost,
            });
        }
    }
    limits
}

/// The limit per window of `counted` on `platform` under `quotas` (the policy's), else the
/// platform's default; a platform's write points are its own.
pub fn per_window(quotas: &BTreeMap<String, Quota>, platform: &str, counted: Counted) -> u32 {
    let (posts, replies) = platform_default(platform);
    let set = quotas.get(platform).copied().unwrap_or_default();
    let points = platform_points(platform);
    match counted {
        Counted::Post => set.posts_per_day.unwrap_or(posts),
        Counted::Reply => set.replies_per_hour.unwrap_or(replies),
        Counted::PointsHour => points.map_or(i32::MAX as u32, |p| p.per_hour),
        Counted::PointsDay => points.map_or(i32::MAX as u32, |p| p.per_day),
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

/// Reserves what an effect takes of every one of `limits` for `agent`, in the windows that hold
/// the first moment (from `now`) when all of them have room; returns that moment (`now`, or
/// the start of a later window).
pub async fn reserve(
    conn: &mut PgConnection,
    agent: AgentId,
    limits: &[Limit],
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, QuotaError> {
    let mut at = now;
    // Each round either takes every window or moves `at` to a later window start; another
    // approval filling a window meanwhile costs a round.
    for _ in 0..16 {
        let mut latest = at;
        for limit in limits {
            let start = first_with_room(conn, agent, limit, window_start(limit.counted, at))
                .await?
                .ok_or_else(|| QuotaError::Exhausted {
                    counted: limit.counted.as_str(),
                    platform: limit.platform.clone(),
                    limit: limit.per_window,
                })?;
            if start > latest {
                latest = start;
            }
        }
        if latest > at {
            at = latest;
            continue;
        }
        let mut taken: Vec<&Limit> = Vec::new();
        for limit in limits {
            if take(conn, agent, limit, window_start(limit.counted, at)).await? {
                taken.push(limit);
            } else {
                break;
            }
        }
        if taken.len() == limits.len() {
            return Ok(at);
        }
        for limit in taken {
            give_back(conn, agent, limit, window_start(limit.counted, at)).await?;
        }
    }
    let limit = limits.first();
    Err(QuotaError::Exhausted {
        counted: limit.map_or("post", |l| l.counted.as_str()),
        platform: limit.map(|l| l.platform.clone()).unwrap_or_default(),
        limit: limit.map_or(0, |l| l.per_window),
    })
}

/// The first window of `limit`, from the one starting at `from`, with room for its units.
async fn first_with_room(
    conn: &mut PgConnection,
    agent: AgentId,
    limit: &Limit,
    from: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let width = limit.counted.window();
    sqlx::query_scalar!(
        r#"select s as "start!"
           from generate_series($4::timestamptz,
                                $4::timestamptz + $6::float8 * $7::float8 * interval '1 second',
                                $6::float8 * interval '1 second') s
           where not exists (select 1 from quota_windows w
                             where w.agent_id = $1 and w.platform = $2 and w.kind = $3
                               and w.window_start = s and w.used + $8::int4 > $5::int4)
           order by s
           limit 1"#,
        agent.0,
        limit.platform,
        limit.counted.as_str(),
        from,
        limit.per_window as i32,
        width.num_seconds() as f64,
        f64::from(MAX_WINDOWS_AHEAD),
        limit.units as i32,
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Takes `limit`'s units of the window starting at `start`, if it has room.
async fn take(
    conn: &mut PgConnection,
    agent: AgentId,
    limit: &Limit,
    start: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    if limit.units > limit.per_window {
        return Ok(false);
    }
    let taken = sqlx::query_scalar!(
        "insert into quota_windows (agent_id, platform, kind, window_start, used)
         values ($1, $2, $3, $4, $6)
         on conflict (agent_id, platform, kind, window_start)
             do update set used = quota_windows.used + $6
             where quota_windows.used + $6 <= $5
         returning window_start",
        agent.0,
        limit.platform,
        limit.counted.as_str(),
        start,
        limit.per_window as i32,
        limit.units as i32,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(taken.is_some())
}

/// Gives back what [`take`] took (in the same transaction, when another window had no room).
async fn give_back(
    conn: &mut PgConnection,
    agent: AgentId,
    limit: &Limit,
    start: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update quota_windows set used = greatest(used - $5, 0)
         where agent_id = $1 and platform = $2 and kind = $3 and window_start = $4",
        agent.0,
        limit.platform,
        limit.counted.as_str(),
        start,
        limit.units as i32,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
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
    let limits = limits_of(execute, quotas);
    let at = if limits.is_empty() {
        now
    } else {
        reserve(conn, execute.agent_id, &limits, now).await?
    };
    let deferred_until = Some(at).filter(|at| *at > now);
    records::insert_task_in(conn, execute, TaskStatus::Queued, 1).await?;
    for limit in &limits {
        sqlx::query!(
            "insert into quota_reservations (task_id, agent_id, platform, kind, window_start, quota, units)
             values ($1, $2, $3, $4, $5, $6, $7)",
            execute.id.0,
            execute.agent_id.0,
            limit.platform,
            limit.counted.as_str(),
            window_start(limit.counted, at),
            limit.per_window as i32,
            limit.units as i32,
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
