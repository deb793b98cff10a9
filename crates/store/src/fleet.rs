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
    pub balance_cents: Option<i64>,
    pub currency: Option<String>,
    /// Spent since midnight UTC (transfers, tokens, tools).
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

/// The agents of `tenant` matching `filter` (its status and search), those needing attention
/// first, then by handle.
pub async fn view(
    pool: &PgPool,
    tenant: TenantId,
    filter: &Filter<'_>,
) -> Result<Vec<FleetAgent>, sqlx::Error> {
    let pattern = filter.search.map(like_pattern);
    let rows = sqlx::query!(
        r#"with agent as (
               select a.id, a.handle, a.display_name, a.status::text as status,
                      (select count(*) from goals g where g.agent_id = a.id
                         and g.status in ('received', 'planning', 'in_progress', 'awaiting_review')) as in_flight,
                      (select count(*) from reviews v join tasks t on t.id = v.task_id
                        where t.agent_id = a.id and v.status = 'pending') as held,
                      (select count(*) from tasks t where t.agent_id = a.id and t.status = 'failed'
                         and t.updated_at > now() - interval '24 hours') as failed_today,
                      b.balance_cents, b.currency,
                      coalesce((select sum(l.amount_cents) from ledger l
                                 where l.agent_id = a.id and l.kind = 'spend'
                                   and l.created_at >= date_trunc('day', now() at time zone 'utc') at time zone 'utc'), 0)::bigint as spent_today,
                      (p.document -> 'spend' ->> 'per_day_cents')::bigint as per_day_limit,
                      p.document -> 'quotas' as quotas,
                      coalesce((select jsonb_agg(jsonb_build_object('platform', w.platform, 'kind', w.kind,
                                                                    'used', w.used, 'window_start', w.window_start)
                                                 order by w.platform, w.kind)
                                from quota_windows w
                                where w.agent_id = a.id and w.window_start <= now()
                                  and w.window_start + case w.kind when 'post' then interval '1 day'
                                                                   else interval '1 hour' end > now()), '[]') as quota_use,
                      coalesce((select jsonb_agg(x.post order by x.at desc) from (
                                    select e.updated_at as at,
                                           jsonb_build_object('action', e.inputs ->> 'action',
                                                              'platform', e.inputs -> 'arguments' ->> 'platform',
                                                              'text', e.inputs -> 'arguments' ->> 'text',
                                                              'published_at', e.updated_at) as post
                                    from tasks e
                                    where e.agent_id = a.id and e.kind = 'execute' and e.status = 'committed'
                                      and e.inputs ->> 'action' in ('social.publish', 'social.reply')
                                    order by e.updated_at desc limit 3) x), '[]') as last_posts
               from agents a
               join policies p on p.agent_id = a.id and p.version = a.policy_version
               left join budgets b on b.agent_id = a.id
               where a.tenant_id = $1
                 and ($2::text is null or a.status::text = $2)
                 and ($3::text is null or a.handle ilike $3 or a.display_name ilike $3)
           ),
           marked as (
               select agent.*,
                      array_remove(array[
                          case when held > 0 then 'held' end,
                          case when failed_today > 0 then 'failing' end,
                          case when balance_cents = 0 then 'out_of_budget' end,
                          case when spent_today >= per_day_limit then 'over_daily_limit' end
                      ], null) as attention
               from agent
           )
           select id as "id!", handle as "handle!", display_name, status as "status!",
                  attention as "attention!",
                  in_flight as "in_flight!", held as "held!", failed_today as "failed_today!",
                  balance_cents as "balance_cents?", currency as "currency?", spent_today as "spent_today!",
                  per_day_limit, quotas, quota_use as "quota_use!", last_posts as "last_posts!"
           from marked
           order by cardinality(attention) > 0 desc, held desc, failed_today desc, handle
           limit $4 offset $5"#,
        tenant.0,
        filter.status,
        pattern,
        filter.limit,
        filter.offset,
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
                    let counted = if w.kind == "post" {
                        Counted::Post
                    } else {
                        Counted::Reply
                    };
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
