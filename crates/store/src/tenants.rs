//! Tenants: the organisations whose agents, goals and reviews are kept apart.

use chimera_core::domain::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: uuid::Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub agents: i64,
}

/// Creates a tenant; `None` when the name is taken.
pub async fn create(pool: &PgPool, name: &str) -> Result<Option<TenantId>, sqlx::Error> {
    let id = TenantId::random();
    let inserted = sqlx::query!(
        "insert into tenants (id, name) values ($1, $2) on conflict (name) do nothing",
        id.0,
        name
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok((inserted == 1).then_some(id))
}

/// Tenants by name: all of them, or only `only` (a tenant admin sees its own).
pub async fn list(
    pool: &PgPool,
    only: Option<TenantId>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Tenant>, sqlx::Error> {
    sqlx::query_as!(
        Tenant,
        r#"select t.id, t.name, t.created_at,
                  (select count(*) from agents a where a.tenant_id = t.id) as "agents!"
           from tenants t where ($3::uuid is null or t.id = $3)
           order by t.name limit $1 offset $2"#,
        limit,
        offset,
        only.map(|t| t.0)
    )
    .fetch_all(pool)
    .await
}
