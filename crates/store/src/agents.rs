//! Agents as documents: onboarding an agent from its SOUL.md and AGENTS.md, and reading it back
//! with its current documents and their versions.
//!
//! An agent, its first persona and its first policy are one transaction (the agent row points
//! at both versions through deferred foreign keys), so an agent never exists half-written.

use chimera_core::domain::{AgentId, AuditRecord, GoalId, TenantId};
use chimera_core::routing::Policy;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use crate::audit;
use crate::outbox::{self, Message};

/// An agent to onboard, from its documents (already parsed and validated by the caller).
#[derive(Debug, Clone)]
pub struct NewAgent<'a> {
    /// Chosen by the caller, so the wallet's key can be stored under it first.
    pub id: AgentId,
    pub tenant: TenantId,
    pub handle: &'a str,
    pub display_name: &'a str,
    pub platforms: &'a [String],
    /// SOUL.md as written, and the persona it states.
    pub soul: &'a str,
    pub persona: &'a Value,
    /// AGENTS.md as written, and the policy it states (version 1).
    pub agents: &'a str,
    pub policy: &'a Policy,
    /// Who onboarded it (the token's subject).
    pub created_by: &'a str,
    /// Its wallet's address (the key is in the secret store, never here).
    pub wallet_address: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("the tenant already has an agent with this handle")]
    HandleTaken,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Stores the agent with version 1 of both documents and their hashes.
pub async fn create(pool: &PgPool, new: &NewAgent<'_>) -> Result<AgentId, CreateError> {
    let id = new.id;
    let policy = serde_json::to_value(new.policy).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query!(
        "insert into agents (id, tenant_id, handle, display_name, platforms, persona,
                             persona_version, policy_version, wallet_address)
         values ($1, $2, $3, $4, $5, $6, 1, $7, $8)
         on conflict (tenant_id, handle) do nothing",
        id.0,
        new.tenant.0,
        new.handle,
        new.display_name,
        new.platforms,
        new.persona,
        new.policy.version,
        new.wallet_address
    )
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(CreateError::HandleTaken);
    }
    sqlx::query!(
        "insert into personas (agent_id, version, source, sha256, persona, created_by)
         values ($1, 1, $2, $3, $4, $5)",
        id.0,
        new.soul,
        chimera_core::documents::content_hash(new.soul),
        new.persona,
        new.created_by
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into policies (agent_id, version, document, source, sha256, created_by)
         values ($1, $2, $3, $4, $5, $6)",
        id.0,
        new.policy.version,
        policy,
        new.agents,
        chimera_core::documents::content_hash(new.agents),
        new.created_by
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// One version of one of an agent's documents.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DocumentVersion {
    pub version: i32,
    /// The SHA-256 of the document as written (absent for one set before documents).
    pub sha256: Option<String>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An agent as an operator reads it: its current documents, their versions, its budget and
/// its work.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    pub id: uuid::Uuid,
    pub handle: String,
    pub display_name: Option<String>,
    /// `active`, `paused` or `retired`.
    pub status: String,
    pub platforms: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// SOUL.md as written (the current version), and what it states.
    pub soul_md: Option<String>,
    #[schema(value_type = Object)]
    pub persona: Value,
    pub persona_version: i32,
    /// AGENTS.md as written (the current version), and the policy it states.
    pub agents_md: Option<String>,
    #[schema(value_type = Object)]
    pub policy: Value,
    pub policy_version: i32,
    /// Every version of each document, newest first.
    pub persona_versions: Vec<DocumentVersion>,
    pub policy_versions: Vec<DocumentVersion>,
    /// The budget's balance in whole cents, rounded down (absent when none was opened).
    pub balance_cents: Option<i64>,
    /// The same balance exactly, in micros (10,000 to the cent), as the ledger keeps it.
    pub balance_micros: Option<i64>,
    /// Goals not settled yet, and results waiting for a human.
    pub goals_in_flight: i64,
    pub held_items: i64,
    /// Its wallet (absent for an agent onboarded before wallets): the address, and its
    /// balances as the chain shows them now (filled by the API, which reads the chain).
    pub wallet: Option<WalletView>,
}

/// An agent's wallet as the API shows it. The key is never part of it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WalletView {
    pub address: String,
    /// The chain it is on, and its balances there; absent when the stage has no chain
    /// configured or the chain could not be read (`chain_error` says why).
    pub chain_id: Option<u64>,
    /// The stablecoin's contract, and the wallet's balance of it in the token's smallest
    /// units (a decimal string: they can exceed 64 bits) and in whole cents.
    pub token: Option<String>,
    pub token_units: Option<String>,
    pub token_cents: Option<i64>,
    /// The native balance (gas), in wei, as a decimal string.
    pub native_wei: Option<String>,
    pub chain_error: Option<String>,
}

impl WalletView {
    /// The wallet at `address`, not read from the chain yet.
    pub fn unread(address: String) -> Self {
        Self {
            address,
            chain_id: None,
            token: None,
            token_units: None,
            token_cents: None,
            native_wei: None,
            chain_error: None,
        }
    }
}

/// The agent `id` of `tenant`, or `None`.
pub async fn view(
    pool: &PgPool,
    tenant: TenantId,
    id: AgentId,
) -> Result<Option<AgentView>, sqlx::Error> {
    let Some(row) = sqlx::query!(
        r#"select a.id, a.handle, a.display_name, a.status::text as "status!", a.platforms,
                  a.created_at, a.persona, a.persona_version, a.policy_version, a.wallet_address,
                  s.source as soul, p.source as agents, p.document as policy,
                  b.balance_cents as "balance_cents?", b.balance_micros as "balance_micros?",
                  (select count(*) from goals g where g.agent_id = a.id
                     and g.status in ('received', 'planning', 'in_progress', 'awaiting_review'))
                     as "goals_in_flight!",
                  (select count(*) from reviews v join tasks t on t.id = v.task_id
                     where t.agent_id = a.id and v.status = 'pending') as "held_items!"
           from agents a
           join personas s on s.agent_id = a.id and s.version = a.persona_version
           join policies p on p.agent_id = a.id and p.version = a.policy_version
           left join budgets b on b.agent_id = a.id
           where a.id = $1 and a.tenant_id = $2"#,
        id.0,
        tenant.0
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let persona_versions = sqlx::query_as!(
        DocumentVersion,
        "select version, sha256, created_by, created_at from personas
         where agent_id = $1 order by version desc",
        id.0
    )
    .fetch_all(pool)
    .await?;
    let policy_versions = sqlx::query_as!(
        DocumentVersion,
        "select version, sha256, created_by, created_at from policies
         where agent_id = $1 order by version desc",
        id.0
    )
    .fetch_all(pool)
    .await?;
    Ok(Some(AgentView {
        id: row.id,
        handle: row.handle,
        display_name: row.display_name,
        status: row.status,
        platforms: row.platforms,
        created_at: row.created_at,
        soul_md: row.soul,
        persona: row.persona,
        persona_version: row.persona_version,
        agents_md: row.agents,
        policy: row.policy,
        policy_version: row.policy_version,
        persona_versions,
        policy_versions,
        balance_cents: row.balance_cents,
        balance_micros: row.balance_micros,
        goals_in_flight: row.goals_in_flight,
        held_items: row.held_items,
        wallet: row.wallet_address.map(WalletView::unread),
    }))
}

/// An agent in a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentSummary {
    pub id: uuid::Uuid,
    pub handle: String,
    pub display_name: Option<String>,
    pub status: String,
    pub platforms: Vec<String>,
    pub persona_version: i32,
    pub policy_version: i32,
    pub created_at: DateTime<Utc>,
}

/// Which agents of a tenant to list.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// `active`, `paused` or `retired`.
    pub status: Option<&'a str>,
    /// Handles or display names containing this (case-insensitive).
    pub search: Option<&'a str>,
    pub limit: i64,
    pub offset: i64,
}

/// The tenant's agents, by handle.
pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    filter: &Filter<'_>,
) -> Result<Vec<AgentSummary>, sqlx::Error> {
    let pattern = filter.search.map(like_pattern);
    sqlx::query_as!(
        AgentSummary,
        r#"select id, handle, display_name, status::text as "status!", platforms,
                  persona_version, policy_version, created_at
           from agents
           where tenant_id = $1
             and ($2::text is null or status::text = $2)
             and ($3::text is null or handle ilike $3 or display_name ilike $3)
           order by handle
           limit $4 offset $5"#,
        tenant.0,
        filter.status,
        pattern,
        filter.limit,
        filter.offset
    )
    .fetch_all(pool)
    .await
}

/// An `ILIKE` pattern for names containing `search` (its `%`, `_` and `\\` taken literally).
pub(crate) fn like_pattern(search: &str) -> String {
    format!(
        "%{}%",
        search
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("no such agent")]
    NotFound,
    /// The caller edited another version than the current one.
    #[error("the current version is {current}, not {expected}")]
    VersionMoved { current: i32, expected: i32 },
    #[error("the agent is retired")]
    Retired,
    /// Spend and auto-pay limits are a tenant admin's to change.
    #[error(
        "changing the spend limits (spend: per_transfer_cents, per_day_cents, auto_pay_per_day_cents) needs the admin role"
    )]
    SpendNeedsAdmin,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A new version of an agent's document, stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVersion {
    pub version: i32,
    /// The goals of the held items sent to be judged again under it (a policy's).
    pub rejudging: Vec<GoalId>,
}

/// The current document versions of a live agent, its row locked for a new one.
struct Versions {
    persona: i32,
    policy: i32,
}

async fn lock_versions(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    id: AgentId,
) -> Result<Versions, UpdateError> {
    let row = sqlx::query!(
        r#"select persona_version, policy_version, status::text = 'retired' as "retired!"
           from agents where id = $1 and tenant_id = $2 for update"#,
        id.0,
        tenant.0
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(UpdateError::NotFound)?;
    if row.retired {
        return Err(UpdateError::Retired);
    }
    Ok(Versions {
        persona: row.persona_version,
        policy: row.policy_version,
    })
}

/// Stores SOUL.md as the agent's next persona version (when `expected` is given, only if the
/// current version is still that one).
pub async fn new_persona(
    pool: &PgPool,
    tenant: TenantId,
    id: AgentId,
    soul: &str,
    persona: &Value,
    expected: Option<i32>,
    by: &str,
) -> Result<NewVersion, UpdateError> {
    let mut tx = pool.begin().await?;
    let current = lock_versions(&mut tx, tenant, id).await?.persona;
    check_expected(current, expected)?;
    let version = current + 1;
    sqlx::query!(
        "insert into personas (agent_id, version, source, sha256, persona, created_by)
         values ($1, $2, $3, $4, $5, $6)",
        id.0,
        version,
        soul,
        chimera_core::documents::content_hash(soul),
        persona,
        by
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update agents set persona_version = $2, persona = $3 where id = $1",
        id.0,
        version,
        persona
    )
    .execute(&mut *tx)
    .await?;
    versioned(
        &mut tx,
        tenant,
        id,
        by,
        "agent.persona_updated",
        version,
        soul,
    )
    .await?;
    tx.commit().await?;
    Ok(NewVersion {
        version,
        rejudging: Vec::new(),
    })
}

/// Stores AGENTS.md as the agent's next policy version (`policy` is what it states; its
/// `version` is set here) and sends every held item of the agent to be judged again under it.
/// A change of the spend limits (auto-pay included) needs `may_change_spend` (a tenant's
/// admin) and is audited as `budget.limits_changed`.
#[allow(clippy::too_many_arguments)]
pub async fn new_policy(
    pool: &PgPool,
    tenant: TenantId,
    id: AgentId,
    source: &str,
    policy: &Policy,
    expected: Option<i32>,
    by: &str,
    may_change_spend: bool,
) -> Result<NewVersion, UpdateError> {
    let mut tx = pool.begin().await?;
    let current = lock_versions(&mut tx, tenant, id).await?.policy;
    check_expected(current, expected)?;
    let before = sqlx::query_scalar!(
        "select document from policies where agent_id = $1 and version = $2",
        id.0,
        current
    )
    .fetch_one(&mut *tx)
    .await?;
    let before: Policy =
        serde_json::from_value(before).map_err(|e| sqlx::Error::Decode(e.into()))?;
    if before.spend != policy.spend {
        if !may_change_spend {
            return Err(UpdateError::SpendNeedsAdmin);
        }
        let mut record = AuditRecord::new(tenant, by, "budget.limits_changed", Utc::now());
        record.reasoning = Some(format!(
            "agent {}: spend limits {} -> {}",
            id.0,
            serde_json::to_string(&before.spend).unwrap_or_default(),
            serde_json::to_string(&policy.spend).unwrap_or_default()
        ));
        audit::append(&mut *tx, &record).await?;
    }
    let version = current + 1;
    let policy = Policy {
        version,
        ..policy.clone()
    };
    let document = serde_json::to_value(&policy).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query!(
        "insert into policies (agent_id, version, document, source, sha256, created_by)
         values ($1, $2, $3, $4, $5, $6)",
        id.0,
        version,
        document,
        source,
        chimera_core::documents::content_hash(source),
        by
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update agents set policy_version = $2 where id = $1",
        id.0,
        version
    )
    .execute(&mut *tx)
    .await?;
    let rejudging = crate::rejudge::enqueue_for_agent(&mut tx, id, version).await?;
    versioned(
        &mut tx,
        tenant,
        id,
        by,
        "agent.policy_updated",
        version,
        source,
    )
    .await?;
    tx.commit().await?;
    Ok(NewVersion { version, rejudging })
}

/// The audit record of a new document version.
async fn versioned(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    agent: AgentId,
    by: &str,
    action: &str,
    version: i32,
    source: &str,
) -> Result<(), sqlx::Error> {
    let mut record = AuditRecord::new(tenant, by, action, Utc::now());
    record.reasoning = Some(format!(
        "agent {}: version {version}, sha256 {}",
        agent.0,
        chimera_core::documents::content_hash(source)
    ));
    if action == "agent.policy_updated" {
        record.policy_version = Some(version);
    }
    audit::append(&mut *conn, &record).await?;
    Ok(())
}

fn check_expected(current: i32, expected: Option<i32>) -> Result<(), UpdateError> {
    match expected {
        Some(expected) if expected != current => {
            Err(UpdateError::VersionMoved { current, expected })
        }
        _ => Ok(()),
    }
}

/// What [`set_status`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// Whether the status changed (`false`: it already was).
    pub changed: bool,
    /// Goals sent to the planner again on a resume (their rows are in the outbox).
    pub goals: Vec<GoalId>,
}

/// Pauses (`active = false`) or resumes the agent, audited as `agent.paused` or
/// `agent.resumed`. A paused agent's goals are not planned and its tasks not released (work a
/// worker already holds finishes, held items stay held); a resume sends its unfinished goals
/// to the planner again, which plans them and releases what is ready.
pub async fn set_status(
    pool: &PgPool,
    tenant: TenantId,
    id: AgentId,
    active: bool,
    by: &str,
) -> Result<StatusChange, UpdateError> {
    let mut tx = pool.begin().await?;
    let status = sqlx::query_scalar!(
        r#"select status::text as "status!" from agents where id = $1 and tenant_id = $2 for update"#,
        id.0,
        tenant.0
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(UpdateError::NotFound)?;
    let wanted = if active { "active" } else { "paused" };
    if status == wanted {
        return Ok(StatusChange {
            changed: false,
            goals: Vec::new(),
        });
    }
    if status == "retired" {
        return Err(UpdateError::Retired);
    }
    sqlx::query!(
        "update agents set status = $2::text::agent_status where id = $1",
        id.0,
        wanted
    )
    .execute(&mut *tx)
    .await?;
    let mut goals = Vec::new();
    if active {
        let unfinished = sqlx::query_scalar!(
            "select id from goals where agent_id = $1
               and status in ('received', 'in_progress', 'awaiting_review')",
            id.0
        )
        .fetch_all(&mut *tx)
        .await?;
        let resume = uuid::Uuid::new_v4();
        for goal in unfinished {
            let goal = GoalId(goal);
            outbox::enqueue(&mut tx, &Message::goal(goal, &format!("resume-{resume}"))).await?;
            goals.push(goal);
        }
    }
    let action = if active {
        "agent.resumed"
    } else {
        "agent.paused"
    };
    let mut record = AuditRecord::new(tenant, by, action, Utc::now());
    record.reasoning = Some(format!("agent {}", id.0));
    audit::append(&mut *tx, &record).await?;
    tx.commit().await?;
    Ok(StatusChange {
        changed: true,
        goals,
    })
}

/// Whether `id` is an agent of `tenant`.
pub async fn belongs(pool: &PgPool, tenant: TenantId, id: AgentId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from agents where id = $1 and tenant_id = $2) as "found!""#,
        id.0,
        tenant.0
    )
    .fetch_one(pool)
    .await
}
