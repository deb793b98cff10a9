//! The fleet at a glance: every agent of a tenant with what it is doing and what needs a
//! person, for the console's fleet view (`GET /fleet`).
//!
//! One statement reads, per agent: its goals in flight, its held items, its tasks failed in
//! the last day, its balance and today's spend against the policy's daily limit, its quota use
//! in the current windows, and its last published posts. Agents that need attention (held
//! items, failures, a budget spent or over the daily limit) come first.

use std::collections::BTreeMap;

use chimera_core::domain::TenantId;
use chimera_core::routing::Quota;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::agents::{Filter, like_pattern};
use crate::quotas::{self, Counted};

/// One agent of the fleet.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FleetAgent {
    pub id: uuid::Uuid,
    pub handle: String,
    pub display_name: Option<String>,
    /// `active`, `paused` or `retired`.
    pub status: String,
    /// Why it needs a person: `held` (items wait for review), `failing` (tasks failed in the
    /// last day), `out_of_budget` (nothing left), `over_daily_limit` (today's spend reached
    /// the policy's limit). Empty when nothing does.
    pub attention: Vec<String>,
    pub goals_in_flight: i64,
    pub held: i64,
    pub failed_today: i64,
    /// Whole cents, rounded down.
    pub balance_cents: Option<i64>,
    pub currency: Option<String>,
    /// Spent since midnight UTC (transfers, tokens, tools; what settled model calls gave back
    /// of their reservations not counted), in whole cents rounded up.
    pub spent_today_cents: i64,
    /// The policy's daily spend limit, if it sets one.
    pub per_day_limit_cents: Option<i64>,
    /// Use of the quota windows open now.
    pub quota_use: Vec<QuotaUse>,
    /// The last posts and replies it published, newest first (at most 3).
    #[schema(value_type = Vec<Object>)]
    pub last_posts: serde_json::Value,
}

/// An agent's use of one quota window.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuotaUse {
    pub platform: String,
    /// `post` (a day) or `reply` (an hour).
    pub kind: String,
    pub used: i32,
    pub limit: u32,
    pub window_start: DateTime<Utc>,
}

/// The fleet view's orders; each has its natural direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Those needing attention first (then most held, most failing), then by handle.
    #[default]
    Attention,
    /// By display name (else handle), A to Z.
    Name,
    /// Most held items first.
    Held,
    /// Most goals in flight first.
    GoalsInFlight,
    /// Most spent today first.
    SpentToday,
    /// Least money left first (no budget last).
    Balance,
}

impl Sort {
    pub const ALL: [Sort; 6] = [
        Self::Attention,
        Self::Name,
        Self::Held,
        Self::GoalsInFlight,
        Self::SpentToday,
        Self::Balance,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sort| sort.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attention => "attention",
            Self::Name => "name",
            Self::Held => "held",
            Self::GoalsInFlight => "goals_in_flight",
            Self::SpentToday => "spent_today",
            Self::Balance => "balance",
        }
    }
}

/// The agents of `tenant` matching `filter` (its status and search), in `sort` order (ties by
/// handle), a page of them: the order is the database's, so a page of a large fleet is the
/// page of the whole fleet's order.
pub async fn view(
    pool: &PgPool,
    tenant: TenantId,
    filter: &Filter<'_>,
    sort: Sort,
) -> Result<Vec<FleetAgent>, sqlx::Error> {
    let pattern = filter.search.map(like_pattern);
    let rows = sqlx::query!(
        r#"with agent as (
               select a.id, a.handle, a.display_name, a.status::text as status, a.policy_version
               from agents a
               where a.tenant_id = $1
                 and ($2::text is null or a.status::text = $2)
                 and ($3::text is null or a.handle ilike $3 or a.display_name ilike $3)
           ),
           in_flight as (
               select g.agent_id, count(*) as n from goals g join agent on agent.id = g.agent_id
               where g.status in ('received', 'planning', 'in_progress', 'awaiting_review')
               group by g.agent_id
           ),
           held as (
               select t.agent_id, count(*) as n from reviews v join tasks t on t.id = v.task_id
               where v.tenant_id = $1 and v.status = 'pending'
               group by t.agent_id
           ),
           failed as (
               select t.agent_id, count(*) as n from tasks t join agent on agent.id = t.agent_id
               where t.status = 'failed' and t.updated_at > now() - interval '24 hours'
               group by t.agent_id
           ),
           spent as (
               select l.agent_id,
                      ((sum(case l.kind when 'release' then -l.amount_micros else l.amount_micros end) + 9999) / 10000)::bigint as n
               from ledger l join agent on agent.id = l.agent_id
               where l.kind in ('spend', 'release')
                 and l.created_at >= date_trunc('day', now() at time zone 'utc') at time zone 'utc'
               group by l.agent_id
           ),
           windows as (
               select w.agent_id,
                      jsonb_agg(jsonb_build_object('platform', w.platform, 'kind', w.kind,
                                                   'used', w.used, 'window_start', w.window_start)
                                order by w.platform, w.kind) as quota_use
               from quota_windows w join agent on agent.id = w.agent_id
               where w.window_start <= now()
                 and w.window_start > now() - interval '1 day'
                 and w.window_start + case when w.kind in ('post', 'points_day') then interval '1 day'
                                           else interval '1 hour' end > now()
               group by w.agent_id
           ),
           marked as (
               select agent.*, b.balance_cents, b.currency,
                      coalesce(in_flight.n, 0) as in_flight, coalesce(held.n, 0) as held,
                      coalesce(failed.n, 0) as failed_today, coalesce(spent.n, 0) as spent_today,
                      (p.document -> 'spend' ->> 'per_day_cents')::bigint as per_day_limit,
                      p.document -> 'quotas' as quotas,
                      coalesce(windows.quota_use, '[]') as quota_use
               from agent
               join policies p on p.agent_id = agent.id and p.version = agent.policy_version
               left join budgets b on b.agent_id = agent.id
               left join in_flight on in_flight.agent_id = agent.id
               left join held on held.agent_id = agent.id
               left join failed on failed.agent_id = agent.id
               left join spent on spent.agent_id = agent.id
               left join windows on windows.agent_id = agent.id
           ),
           flagged as (
               select marked.*,
                      array_remove(array[
                          case when held > 0 then 'held' end,
                          case when failed_today > 0 then 'failing' end,
                          case when balance_cents = 0 then 'out_of_budget' end,
                          case when spent_today >= per_day_limit then 'over_daily_limit' end
                      ], null) as attention
               from marked
           ),
           ranked as (
               select flagged.*,
                      row_number() over (
                          order by
                              case $6
                                  when 'held' then held::float8
                                  when 'goals_in_flight' then in_flight::float8
                                  when 'spent_today' then spent_today::float8
                                  when 'balance' then -coalesce(balance_cents, 9e15)::float8
                                  when 'name' then 0
                                  else (cardinality(attention) > 0)::int * 1e12 + held * 1e6 + failed_today
                              end desc,
                              case when $6 = 'name' then lower(coalesce(display_name, handle)) end,
                              handle
                      ) as position
               from flagged
               order by position
               limit $4 offset $5
           )
           select r.id as "id!", r.handle as "handle!", r.display_name, r.status as "status!",
                  r.attention as "attention!",
                  r.in_flight as "in_flight!", r.held as "held!", r.failed_today as "failed_today!",
                  r.balance_cents as "balance_cents?", r.currency as "currency?", r.spent_today as "spent_today!",
                  r.per_day_limit, r.quotas, r.quota_use as "quota_use!",
                  coalesce((select jsonb_agg(jsonb_build_object('action', e.inputs ->> 'action',
                                                                'platform', e.inputs -> 'arguments' ->> 'platform',
                                                                'text', e.inputs -> 'arguments' ->> 'text',
                                                                'published_at', e.updated_at)
                                             order by e.updated_at desc)
                            from (select e.inputs, e.updated_at from tasks e
                                  where e.agent_id = r.id and e.kind = 'execute' and e.status = 'committed'
                                    and e.inputs ->> 'action' in ('social.publish', 'social.reply')
                                  order by e.updated_at desc limit 3) e), '[]') as "last_posts!"
           from ranked r
           order by r.position"#,
        tenant.0,
        filter.status,
        pattern,
        filter.limit,
        filter.offset,
        sort.as_str(),
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let quotas: BTreeMap<String, Quota> = r
                .quotas
                .filter(|q| !q.is_null())
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| sqlx::Error::Decode(e.into()))?
                .unwrap_or_default();
            #[derive(serde::Deserialize)]
            struct Window {
                platform: String,
                kind: String,
                used: i32,
                window_start: DateTime<Utc>,
            }
            let windows: Vec<Window> =
                serde_json::from_value(r.quota_use).map_err(|e| sqlx::Error::Decode(e.into()))?;
            let quota_use = windows
                .into_iter()
                .map(|w| {
                    let counted = Counted::parse(&w.kind).unwrap_or(Counted::Reply);
                    QuotaUse {
                        limit: quotas::per_window(&quotas, &w.platform, counted),
                        platform: w.platform,
                        kind: w.kind,
                        used: w.used,
                        window_start: w.window_start,
                    }
                })
                .collect();
            Ok(FleetAgent {
                id: r.id,
                handle: r.handle,
                display_name: r.display_name,
                status: r.status,
                attention: r.attention,
                goals_in_flight: r.in_flight,
                held: r.held,
                failed_today: r.failed_today,
                balance_cents: r.balance_cents,
                currency: r.currency,
                spent_today_cents: r.spent_today,
                per_day_limit_cents: r.per_day_limit,
                quota_use,
                last_posts: r.last_posts,
            })
        })
        .collect()
}
