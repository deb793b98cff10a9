//! Leases on open goal event streams, at most `cap` per caller (tenant and subject): a stream
//! takes one when it opens and gives it back when it ends; a lease whose process died lapses
//! at its expiry. Taking one is one transaction serialised per caller (an advisory lock on
//! the caller), so many streams opening at once never exceed the cap.

use chimera_core::domain::{GoalId, TenantId};
use sqlx::PgPool;

/// A stream's lease, to give back with [`release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease(pub uuid::Uuid);

/// A lease for one more stream of `subject` in `tenant` lasting at most `lasts`, or `None`
/// when the caller holds `cap` unexpired leases already. Expired leases (anyone's: a caller
/// who never comes back leaves some) are removed on the way.
pub async fn take(
    pool: &PgPool,
    tenant: TenantId,
    subject: &str,
    goal: GoalId,
    cap: u32,
    lasts: std::time::Duration,
) -> Result<Option<Lease>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "select pg_advisory_xact_lock(hashtextextended('event_streams:' || $1 || ':' || $2, 0))",
        tenant.0.to_string(),
        subject,
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!("delete from event_streams where expires_at <= now()")
        .execute(&mut *tx)
        .await?;
    let lease = sqlx::query_scalar!(
        r#"insert into event_streams (tenant_id, subject, goal_id, expires_at)
           select $1, $2, $3, now() + make_interval(secs => $4)
           where (select count(*) from event_streams where tenant_id = $1 and subject = $2) < $5
           returning id"#,
        tenant.0,
        subject,
        goal.0,
        lasts.as_secs_f64(),
        i64::from(cap),
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(lease.map(Lease))
}

/// Gives a lease back (a no-op if it lapsed meanwhile).
pub async fn release(pool: &PgPool, lease: Lease) -> Result<(), sqlx::Error> {
    sqlx::query!("delete from event_streams where id = $1", lease.0)
        .execute(pool)
        .await?;
    Ok(())
}

/// How many unexpired streams `subject` of `tenant` holds.
pub async fn open(pool: &PgPool, tenant: TenantId, subject: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select count(*) as "count!" from event_streams
           where tenant_id = $1 and subject = $2 and expires_at > now()"#,
        tenant.0,
        subject,
    )
    .fetch_one(pool)
    .await
}
