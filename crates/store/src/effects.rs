//! The effect ledger: each approved effect from before it reaches its platform to the
//! platform's id for it (`intended -> sent -> confirmed | unknown`, and `failed` when the
//! platform refused it and a look-up showed it absent).
//!
//! A platform that does not honour an idempotency key can commit a post and lose the answer
//! (a timeout, a reset connection). The worker records the effect as `sent` before it calls
//! the tool and `unknown` when the call comes back without a usable answer; whoever meets an
//! effect in `sent` or `unknown` looks it up on the platform before sending again (see the
//! worker's `execute`). Every move is a conditional update on the state the mover read, so two
//! workers never both send, and a platform object answers for one effect only (a unique
//! index on `(platform, platform_ref)`).

use chimera_core::domain::{AgentId, EffectState, ReviewId};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// An effect as the ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub approval: ReviewId,
    pub state: EffectState,
    /// How often it was handed to the tool.
    pub sends: i32,
    pub platform_ref: Option<String>,
    pub receipt: Option<Value>,
    pub tool: Option<String>,
    pub server: Option<String>,
    pub server_version: Option<String>,
    pub error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
}

/// What an effect is, recorded before anything reaches the platform.
#[derive(Debug, Clone, Copy)]
pub struct Intent<'a> {
    pub approval: ReviewId,
    pub agent: AgentId,
    /// `publish`, `reply` or `transfer`.
    pub op: &'a str,
    /// The platform it lands on (`""` for a transfer).
    pub platform: &'a str,
}

/// What the platform holds for an effect: its id there and the tool's mapped answer.
#[derive(Debug, Clone, Copy)]
pub struct Confirmation<'a> {
    pub platform_ref: Option<&'a str>,
    pub receipt: &'a Value,
    pub tool: &'a str,
    pub server: &'a str,
    pub server_version: &'a str,
}

/// What [`confirm`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirmed {
    Done,
    /// The platform object already answers for another effect: not this one's.
    Taken,
    /// Someone else settled the effect meanwhile; here it is.
    Moved(Effect),
}

struct Row {
    approval_id: uuid::Uuid,
    state: EffectState,
    sends: i32,
    platform_ref: Option<String>,
    receipt: Option<Value>,
    tool: Option<String>,
    server: Option<String>,
    server_version: Option<String>,
    error: Option<String>,
    sent_at: Option<DateTime<Utc>>,
    answered_at: Option<DateTime<Utc>>,
}

impl From<Row> for Effect {
    fn from(r: Row) -> Self {
        Self {
            approval: ReviewId(r.approval_id),
            state: r.state,
            sends: r.sends,
            platform_ref: r.platform_ref,
            receipt: r.receipt,
            tool: r.tool,
            server: r.server,
            server_version: r.server_version,
            error: r.error,
            sent_at: r.sent_at,
            answered_at: r.answered_at,
        }
    }
}

/// The effect of `approval`, if the ledger has it.
pub async fn get(pool: &PgPool, approval: ReviewId) -> Result<Option<Effect>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        r#"select approval_id, state as "state: EffectState", sends, platform_ref, receipt, tool,
                  server, server_version, error, sent_at, answered_at
           from effects where approval_id = $1"#,
        approval.0
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Effect::from))
}

/// Records `intent` (once per approval) and returns where the effect stands.
pub async fn intend(pool: &PgPool, intent: Intent<'_>) -> Result<Effect, sqlx::Error> {
    sqlx::query!(
        "insert into effects (approval_id, agent_id, op, platform) values ($1, $2, $3, $4)
         on conflict (approval_id) do nothing",
        intent.approval.0,
        intent.agent.0,
        intent.op,
        intent.platform
    )
    .execute(pool)
    .await?;
    get(pool, intent.approval)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// Moves `seen` to `sent` (it is about to reach the tool) if nobody moved it since it was
/// read; `false` when someone did.
pub async fn mark_sent(pool: &PgPool, seen: &Effect) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query!(
        "update effects set state = 'sent', sends = sends + 1, sent_at = now(), answered_at = null
         where approval_id = $1 and state = $2 and sends = $3
           and state in ('intended', 'sent', 'unknown')",
        seen.approval.0,
        seen.state as EffectState,
        seen.sends
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// The call came back without a usable answer (`error`): the platform may hold the effect.
/// Returns the effect as it now stands (`None`: it was not sent or unknown).
pub async fn mark_unknown(
    pool: &PgPool,
    approval: ReviewId,
    error: &str,
) -> Result<Option<Effect>, sqlx::Error> {
    after_call(pool, approval, EffectState::Unknown, error).await
}

/// The platform holds the effect (its answer, or a look-up, said so): confirmed, and audited
/// (`effect.confirmed`, the platform's id and its receipt in the details) in the same
/// statement.
pub async fn confirm(
    pool: &PgPool,
    approval: ReviewId,
    c: Confirmation<'_>,
) -> Result<Confirmed, sqlx::Error> {
    let updated = sqlx::query_scalar!(
        r#"with confirmed as (
               update effects set state = 'confirmed', platform_ref = $2, receipt = $3, tool = $4,
                      server = $5, server_version = $6, error = null, settled_at = now()
               where approval_id = $1 and state in ('sent', 'unknown')
               returning approval_id, op, platform, platform_ref, receipt, sends
           ), logged as (
               insert into audit_log (tenant_id, actor, action, goal_id, task_id, review_id,
                                      reasoning, details)
               select g.tenant_id, 'worker', 'effect.confirmed', t.goal_id, t.id,
                      (select r.id from reviews r where r.id = c.approval_id),
                      c.op || coalesce(' on ' || nullif(c.platform, ''), '') || ': '
                          || coalesce(c.platform_ref, 'no platform id'),
                      jsonb_build_object('op', c.op, 'platform', c.platform,
                                         'platform_ref', c.platform_ref, 'sends', c.sends,
                                         'receipt', c.receipt)
               from confirmed c join tasks t on t.approval_id = c.approval_id
                                join goals g on g.id = t.goal_id
               returning 1
           )
           select count(*) as "confirmed!" from confirmed"#,
        approval.0,
        c.platform_ref,
        c.receipt,
        c.tool,
        c.server,
        c.server_version
    )
    .fetch_one(pool)
    .await;
    match updated {
        Ok(1) => Ok(Confirmed::Done),
        Ok(_) => Ok(Confirmed::Moved(
            get(pool, approval).await?.ok_or(sqlx::Error::RowNotFound)?,
        )),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Confirmed::Taken),
        Err(e) => Err(e),
    }
}

/// The platform turned the call away before doing anything (its rate limit, `error`): the
/// effect is as if never sent, and is sent when its time comes.
pub async fn turned_away(
    pool: &PgPool,
    approval: ReviewId,
    error: &str,
) -> Result<Option<Effect>, sqlx::Error> {
    after_call(pool, approval, EffectState::Intended, error).await
}

/// The platform refused the effect and it is not there: settled as failed with `error`.
pub async fn fail(
    pool: &PgPool,
    approval: ReviewId,
    error: &str,
) -> Result<Option<Effect>, sqlx::Error> {
    after_call(pool, approval, EffectState::Failed, error).await
}

/// Moves a sent (or unknown) effect to `to` after a call that gave no usable answer, noting
/// `error` and when the call came back (`failed` is settled).
async fn after_call(
    pool: &PgPool,
    approval: ReviewId,
    to: EffectState,
    error: &str,
) -> Result<Option<Effect>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        r#"update effects
           set state = $2, error = $3, answered_at = now(),
               settled_at = case when $2 = 'failed'::effect_state then now() end
           where approval_id = $1 and state in ('sent', 'unknown')
           returning approval_id, state as "state: EffectState", sends, platform_ref, receipt, tool,
                     server, server_version, error, sent_at, answered_at"#,
        approval.0,
        to as EffectState,
        error
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Effect::from))
}

/// Whether `platform_ref` on `platform` answers for an effect other than `approval`.
pub async fn taken_by_another(
    pool: &PgPool,
    platform: &str,
    platform_ref: &str,
    approval: ReviewId,
) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query_scalar!(
        r#"select exists (select 1 from effects
                          where platform = $1 and platform_ref = $2 and approval_id <> $3) as "taken!""#,
        platform,
        platform_ref,
        approval.0
    )
    .fetch_one(pool)
    .await?;
    Ok(taken)
}
