//! The world's durable state, in a PostgreSQL schema of its own (`world`): every tool call, the
//! social outbox and the wallet. Effects are keyed by the caller's idempotency key: a second
//! call with the same key and the same request returns the first outcome; the same key with a
//! different request is refused.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// Balance a wallet account opens with on first use.
pub const OPENING_BALANCE_CENTS: i64 = 1_000_000;

const SCHEMA: &str = r#"
create schema if not exists world;
create table if not exists world.calls (
    id          bigint generated always as identity primary key,
    tool        text not null,
    arguments   jsonb not null,
    called_at   timestamptz not null default now()
);
create table if not exists world.posts (
    id               uuid primary key,
    idempotency_key  text not null unique,
    request_hash     text not null,
    kind             text not null check (kind in ('post', 'reply')),
    platform         text not null,
    in_reply_to      text,
    text             text not null,
    media_sha256     text,
    created_at       timestamptz not null default now()
);
create table if not exists world.accounts (
    account        text primary key,
    balance_cents  bigint not null check (balance_cents >= 0)
);
create table if not exists world.transfers (
    id               uuid primary key,
    idempotency_key  text not null unique,
    request_hash     text not null,
    from_account     text not null references world.accounts (account),
    to_account       text not null,
    amount_cents     bigint not null check (amount_cents > 0),
    memo             text not null,
    balance_after    bigint not null,
    created_at       timestamptz not null default now()
);
-- Test aid (debug tools only): the self-assessed quality content.draft reports for a brief.
create table if not exists world.scripted_quality (
    brief    text primary key,
    quality  double precision not null check (quality >= 0 and quality <= 1)
);
"#;

/// Creates the schema if needed. Several server processes may start at once: an advisory lock
/// serializes their setup.
pub async fn setup(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(hashtext('chimera-world-setup'))")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
    tx.commit().await
}

/// Records one call (the server's own usage log; tests count it).
/// Scripts the quality `content.draft` reports for `brief` (debug tools only).
pub async fn script_quality(pool: &PgPool, brief: &str, quality: f64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into world.scripted_quality (brief, quality) values ($1, $2)
         on conflict (brief) do update set quality = excluded.quality",
    )
    .bind(brief)
    .bind(quality)
    .execute(pool)
    .await?;
    Ok(())
}

/// The quality scripted for `brief`, if any.
pub async fn scripted_quality(pool: &PgPool, brief: &str) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar("select quality from world.scripted_quality where brief = $1")
        .bind(brief)
        .fetch_optional(pool)
        .await
}

pub async fn log_call(
    pool: &PgPool,
    tool: &str,
    arguments: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("insert into world.calls (tool, arguments) values ($1, $2)")
        .bind(tool)
        .bind(arguments)
        .execute(pool)
        .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    #[error("idempotency key {0:?} was used before for a different request")]
    KeyReused(String),
    #[error("insufficient funds: balance {balance_cents} cents, transfer {amount_cents} cents")]
    InsufficientFunds {
        balance_cents: i64,
        amount_cents: i64,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn request_hash<T: Serialize>(request: &T) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(request).unwrap_or_default(),
    ))
}

/// A post or reply as the platform recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Post {
    pub post_id: Uuid,
    pub kind: String,
    pub platform: String,
    pub in_reply_to: Option<String>,
    pub text: String,
    pub media_sha256: Option<String>,
    pub url: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// True when this call returned the post an earlier call with the same key made.
    pub replayed: bool,
}

#[derive(Debug, Serialize)]
pub struct PostRequest<'a> {
    pub kind: &'a str,
    pub platform: &'a str,
    pub in_reply_to: Option<&'a str>,
    pub text: &'a str,
    pub media_sha256: Option<&'a str>,
}

/// Publishes once per idempotency key.
pub async fn publish(
    pool: &PgPool,
    key: &str,
    request: &PostRequest<'_>,
) -> Result<Post, EffectError> {
    let hash = request_hash(request);
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "insert into world.posts (id, idempotency_key, request_hash, kind, platform, in_reply_to, text, media_sha256)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (idempotency_key) do nothing",
    )
    .bind(id)
    .bind(key)
    .bind(&hash)
    .bind(request.kind)
    .bind(request.platform)
    .bind(request.in_reply_to)
    .bind(request.text)
    .bind(request.media_sha256)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    let row: PostRow = sqlx::query_as(
        "select request_hash, id, kind, platform, in_reply_to, text, media_sha256, created_at
         from world.posts where idempotency_key = $1",
    )
    .bind(key)
    .fetch_one(pool)
    .await?;
    if row.request_hash != hash {
        return Err(EffectError::KeyReused(key.to_owned()));
    }
    Ok(Post {
        url: format!("https://{}.example/{}/{}", row.platform, row.kind, row.id),
        post_id: row.id,
        kind: row.kind,
        platform: row.platform,
        in_reply_to: row.in_reply_to,
        text: row.text,
        media_sha256: row.media_sha256,
        created_at: row.created_at,
        replayed: !inserted,
    })
}

#[derive(sqlx::FromRow)]
struct PostRow {
    request_hash: String,
    id: Uuid,
    kind: String,
    platform: String,
    in_reply_to: Option<String>,
    text: String,
    media_sha256: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
}
/// The text and platform of a post the world published (an agent's), by its id.
pub async fn post_text(pool: &PgPool, id: Uuid) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("select platform, text from world.posts where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Opens `account` with the opening balance if it has never been used.
async fn open_account(pool: &PgPool, account: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into world.accounts (account, balance_cents) values ($1, $2) on conflict do nothing",
    )
    .bind(account)
    .bind(OPENING_BALANCE_CENTS)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn balance(pool: &PgPool, account: &str) -> Result<i64, sqlx::Error> {
    open_account(pool, account).await?;
    sqlx::query_scalar("select balance_cents from world.accounts where account = $1")
        .bind(account)
        .fetch_one(pool)
        .await
}

#[derive(Debug, Serialize)]
pub struct TransferRequest<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub amount_cents: i64,
    pub memo: &'a str,
}

/// A transfer as the wallet recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Transfer {
    pub transfer_id: Uuid,
    pub from: String,
    pub to: String,
    pub amount_cents: i64,
    pub memo: String,
    pub balance_after_cents: i64,
    pub replayed: bool,
}

/// Transfers once per idempotency key, never below a zero balance.
pub async fn transfer(
    pool: &PgPool,
    key: &str,
    request: &TransferRequest<'_>,
) -> Result<Transfer, EffectError> {
    open_account(pool, request.from).await?;
    let hash = request_hash(request);
    let mut tx = pool.begin().await?;
    // The account row's lock orders the transfers of one account.
    let balance: i64 = sqlx::query_scalar(
        "select balance_cents from world.accounts where account = $1 for update",
    )
    .bind(request.from)
    .fetch_one(&mut *tx)
    .await?;
    let prior: Option<(String, Uuid, i64)> = sqlx::query_as(
        "select request_hash, id, balance_after from world.transfers where idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((stored_hash, id, balance_after)) = prior {
        if stored_hash != hash {
            return Err(EffectError::KeyReused(key.to_owned()));
        }
        return Ok(Transfer {
            transfer_id: id,
            from: request.from.to_owned(),
            to: request.to.to_owned(),
            amount_cents: request.amount_cents,
            memo: request.memo.to_owned(),
            balance_after_cents: balance_after,
            replayed: true,
        });
    }
    if balance < request.amount_cents {
        return Err(EffectError::InsufficientFunds {
            balance_cents: balance,
            amount_cents: request.amount_cents,
        });
    }
    let balance_after = balance - request.amount_cents;
    sqlx::query("update world.accounts set balance_cents = $2 where account = $1")
        .bind(request.from)
        .bind(balance_after)
        .execute(&mut *tx)
        .await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into world.transfers (id, idempotency_key, request_hash, from_account, to_account, amount_cents, memo, balance_after)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(key)
    .bind(&hash)
    .bind(request.from)
    .bind(request.to)
    .bind(request.amount_cents)
    .bind(request.memo)
    .bind(balance_after)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Transfer {
        transfer_id: id,
        from: request.from.to_owned(),
        to: request.to.to_owned(),
        amount_cents: request.amount_cents,
        memo: request.memo.to_owned(),
        balance_after_cents: balance_after,
        replayed: false,
    })
}

/// A post's engagement at a moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Engagement {
    pub post_id: Uuid,
    pub platform: String,
    pub kind: String,
    pub views: i64,
    pub likes: i64,
    pub replies: i64,
    pub shares: i64,
    /// Hours between publication and the moment measured.
    pub hours_live: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MetricsReport {
    pub at: chrono::DateTime<chrono::Utc>,
    pub metrics: Vec<Engagement>,
    /// Ids of no post of this platform.
    pub unknown: Vec<Uuid>,
}

/// Engagement of `post` `hours` after it went out: each post has its own reach and appeal
/// (from its id), reached over about a day; nothing before publication.
pub fn engagement_of(post: Uuid, hours: f64) -> (i64, i64, i64, i64) {
    let seed = u64::from_be_bytes(
        Sha256::digest(post.as_bytes())[..8]
            .try_into()
            .unwrap_or_default(),
    );
    let reach = 200.0 + (seed % 4_800) as f64;
    let appeal = 0.02 + ((seed >> 16) % 1_000) as f64 / 1_000.0 * 0.10;
    let hours = hours.max(0.0);
    let views = (reach * (1.0 - (-hours / 24.0).exp())).floor();
    let likes = (views * appeal).floor();
    let replies = (likes * (0.05 + ((seed >> 32) % 100) as f64 / 1_000.0)).floor();
    let shares = (likes * 0.04).floor();
    (views as i64, likes as i64, replies as i64, shares as i64)
}

/// The engagement of `posts` at `at`.
pub async fn metrics(
    pool: &PgPool,
    posts: &[Uuid],
    at: chrono::DateTime<chrono::Utc>,
) -> Result<MetricsReport, sqlx::Error> {
    let rows: Vec<(Uuid, String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select id, platform, kind, created_at from world.posts where id = any($1) order by id",
    )
    .bind(posts)
    .fetch_all(pool)
    .await?;
    let metrics: Vec<Engagement> = rows
        .into_iter()
        .map(|(post_id, platform, kind, created_at)| {
            let hours = (at - created_at).num_milliseconds() as f64 / 3_600_000.0;
            let (views, likes, replies, shares) = engagement_of(post_id, hours);
            Engagement {
                post_id,
                platform,
                kind,
                views,
                likes,
                replies,
                shares,
                hours_live: hours.max(0.0),
            }
        })
        .collect();
    let unknown = posts
        .iter()
        .filter(|id| !metrics.iter().any(|m| m.post_id == **id))
        .copied()
        .collect();
    Ok(MetricsReport {
        at,
        metrics,
        unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engagement_is_the_posts_own_and_grows_with_time() {
        let post = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let other = Uuid::from_u128(42);
        assert_eq!(engagement_of(post, 0.0), (0, 0, 0, 0));
        assert_eq!(engagement_of(post, -5.0), (0, 0, 0, 0));
        assert_eq!(engagement_of(post, 12.0), engagement_of(post, 12.0));
        assert_ne!(engagement_of(post, 48.0), engagement_of(other, 48.0));
        let mut last = (0, 0, 0, 0);
        for hours in [1.0, 6.0, 12.0, 24.0, 72.0, 500.0] {
            let now = engagement_of(post, hours);
            assert!(now.0 >= last.0 && now.1 >= last.1 && now.2 >= last.2 && now.3 >= last.3);
            assert!(now.1 <= now.0 && now.2 <= now.1, "{now:?}");
            last = now;
        }
        // Reach is at most 5,000 views.
        assert!(last.0 > 0 && last.0 <= 5_000, "{last:?}");
    }
}
