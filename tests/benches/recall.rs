//! Semantic memory's retrieval (`scripts/bench recall`): one agent's nearest memories among a
//! whole fleet's, through the store's own query (`chimera_store::memories::nearest`: the HNSW
//! index of the vectors' length, iterative scan, scoped to tenant, agent and model).
//!
//! A table of `BENCH_MEMORIES` memories (1,000,000) of 384 dimensions, spread over 100 agents
//! of 10 tenants, of which one agent holds `BENCH_AGENT_MEMORIES` (10,000). The table is built
//! once in the database `chimera_bench_recall` and kept, so a second run only measures (a
//! different size rebuilds it). It prints the build time, then p50, p99 and the maximum of
//! `BENCH_QUERIES` (1,000) queries one after another, and recall@5 against an exact scan for
//! 50 of them. Target: p99 < 10 ms at 1,000,000 rows with an agent of 10,000 (bench profile).

use std::str::FromStr;
use std::time::{Duration, Instant};

use chimera_core::domain::{AgentId, TenantId};
use chimera_core::routing::Policy;
use chimera_store::memories;
use chimera_store::records;
use chimera_tests::{bench_setting, stack_env};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};

const DB: &str = "chimera_bench_recall";
const MODEL: &str = "bench-random-384";
const DIMS: usize = 384;
const K: i64 = 5;

/// Subjects the memories are about: real embeddings cluster by meaning, uniform random vectors
/// do not (every pair is about as far apart, and no index can tell neighbours apart).
const TOPICS: u64 = 2_000;

/// A pseudo-random unit vector from `seed`.
fn direction(seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..DIMS)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// A query about topic `seed % TOPICS`: its centre and a little noise, as a new text on a known
/// subject would be.
fn query(seed: u64) -> Vec<f32> {
    let centre = direction(seed % TOPICS);
    let noise = direction(seed.wrapping_add(1 << 40));
    let v: Vec<f32> = centre
        .iter()
        .zip(&noise)
        .map(|(c, n)| c + 0.5 * n)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// The bench's database, made anew and migrated.
async fn fresh_database() -> PgPool {
    let admin = PgConnectOptions::from_str(&stack_env("DATABASE_URL")).unwrap();
    let mut conn = admin.connect().await.unwrap();
    for sql in [
        format!("drop database if exists {DB} with (force)"),
        format!("create database {DB}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
    let pool = chimera_store::pool_options(4)
        .connect_with(admin.database(DB))
        .await
        .unwrap();
    chimera_store::migrate(&pool).await.unwrap();
    pool
}

/// The table as asked for: (the measured agent's tenant, the agent). Built, in a new
/// database, when the kept one holds another size.
async fn seed(total: i64, own: i64) -> (PgPool, TenantId, AgentId) {
    let label = format!("{total}:{own}:{TOPICS} topics:by agent");
    // A table built by this bench at this size, with every migration applied, is kept.
    let kept = async {
        let admin = PgConnectOptions::from_str(&stack_env("DATABASE_URL")).ok()?;
        let pool = chimera_store::pool_options(4)
            .connect_with(admin.database(DB))
            .await
            .ok()?;
        let applied: i64 =
            sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
                .fetch_one(&pool)
                .await
                .ok()?;
        if applied < chimera_store::MIGRATOR.iter().count() as i64 {
            return None;
        }
        let (tenant, agent): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
            "select tenant_id, id from agents where handle = 'bench_measured' and display_name = $1",
        )
        .bind(&label)
        .fetch_optional(&pool)
        .await
        .ok()??;
        Some((pool, TenantId(tenant), AgentId(agent)))
    };
    if let Some(built) = kept.await {
        println!("recall: the table of {total} memories is already built");
        return built;
    }
    let pool = fresh_database().await;
    let pool = &pool;
    sqlx::query("create table bench_topics (id int primary key, v float4[] not null)")
        .execute(pool)
        .await
        .unwrap();
    for t in 0..TOPICS {
        sqlx::query("insert into bench_topics values ($1, $2)")
            .bind(t as i32)
            .bind(direction(t))
            .execute(pool)
            .await
            .unwrap();
    }
    // Rows first, the index after (a bulk build is faster than one insert at a time).
    sqlx::query("drop index if exists memories_embedding_384")
        .execute(pool)
        .await
        .unwrap();
    let started = Instant::now();
    let mut agents = Vec::new();
    for t in 0..10 {
        let tenant = records::create_tenant(pool, &format!("bench-tenant-{t}"))
            .await
            .unwrap();
        for a in 0..10 {
            let handle = if t == 0 && a == 0 {
                "bench_measured".to_owned()
            } else {
                format!("bench_{t}_{a}")
            };
            let agent = records::create_agent(
                pool,
                tenant,
                &handle,
                &serde_json::json!({"voice": "plain"}),
                &Policy::default(),
            )
            .await
            .unwrap();
            agents.push((tenant, agent));
        }
    }
    // Rows in chunks, the vectors drawn by PostgreSQL; the measured agent's first.
    let others = (total - own).max(0);
    let per_other = others / 99;
    let plan: Vec<(usize, i64)> = std::iter::once((0, own))
        .chain((1..100).map(|i| (i, per_other)))
        .collect();
    let mut written = 0i64;
    for (index, count) in plan {
        let (tenant, agent) = agents[index];
        let mut left = count;
        while left > 0 {
            let n = left.min(20_000);
            sqlx::query(
                "insert into memories (id, tenant_id, agent_id, kind, text, embedding, model)
                 select gen_random_uuid(), $1, $2, 'post', 'memory ' || i,
                        (select ('[' || string_agg((t.v[d] + (random() - 0.5) * 0.1)::text, ','
                                                   order by d) || ']')::vector
                         from generate_series(1, 384) d),
                        $3
                 from generate_series(1, $4::int) i
                 join bench_topics t on t.id = (i * 7919 + $5) % $6",
            )
            .bind(tenant.0)
            .bind(agent.0)
            .bind(MODEL)
            .bind(n as i32)
            .bind(written as i32)
            .bind(TOPICS as i32)
            .execute(pool)
            .await
            .unwrap();
            left -= n;
            written += n;
            if written % 100_000 < n {
                eprintln!(
                    "recall: {written} of {total} rows ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    println!(
        "recall: {written} rows written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let indexing = Instant::now();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("set maintenance_work_mem = '4GB'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("set max_parallel_maintenance_workers = 2")
        .execute(&mut *conn)
        .await
        .unwrap();
    // The migration's definition (20261128000007_memory_dimensions.sql).
    sqlx::query(
        "create index memories_embedding_384 on memories
             using hnsw ((embedding::vector(384)) vector_cosine_ops) where dims = 384",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    println!(
        "recall: HNSW index built in {:.1} s",
        indexing.elapsed().as_secs_f64()
    );
    sqlx::query("vacuum analyze memories")
        .execute(pool)
        .await
        .unwrap();
    // Built: a run cut short before here builds again.
    sqlx::query("update agents set display_name = $1 where handle = 'bench_measured'")
        .bind(&label)
        .execute(pool)
        .await
        .unwrap();
    let (tenant, agent) = agents[0];
    (pool.clone(), tenant, agent)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let total = bench_setting("BENCH_MEMORIES", 1_000_000) as i64;
    let own = bench_setting("BENCH_AGENT_MEMORIES", 10_000) as i64;
    let queries = bench_setting("BENCH_QUERIES", 1_000);
    let (pool, tenant, agent) = seed(total, own).await;
    let rows: i64 = sqlx::query_scalar("select count(*) from memories")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mine: i64 = sqlx::query_scalar("select count(*) from memories where agent_id = $1")
        .bind(agent.0)
        .fetch_one(&pool)
        .await
        .unwrap();
    println!("recall: {rows} memories, {mine} of the measured agent, k = {K}, {queries} queries");

    // Warm the index's pages as a running system would have them.
    for q in 0..50u64 {
        memories::nearest(&pool, tenant, agent, MODEL, &query(1_000_000 + q), K)
            .await
            .unwrap();
    }
    let mut times = Vec::with_capacity(queries);
    let mut empty = 0;
    for q in 0..queries as u64 {
        let asked = query(q + 1);
        let started = Instant::now();
        let found = memories::nearest(&pool, tenant, agent, MODEL, &asked, K)
            .await
            .unwrap();
        times.push(started.elapsed());
        if found.len() < K as usize {
            empty += 1;
        }
    }
    times.sort();
    println!(
        "recall: nearest {K}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 < 10 ms); {empty} queries found fewer than {K}",
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        percentile(&times, 1.0)
    );

    // Recall@K against an exact scan of the agent's memories.
    let mut hits = 0usize;
    let checked = 50u64;
    for q in 0..checked {
        let asked = query(q + 1);
        let found: Vec<uuid::Uuid> = memories::nearest(&pool, tenant, agent, MODEL, &asked, K)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        let literal = format!(
            "[{}]",
            asked
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let exact: Vec<uuid::Uuid> = sqlx::query_scalar(
            "select id from memories where agent_id = $1 and model = $2
             order by (embedding::vector(384) <=> $3::text::vector(384)) + 0 limit $4",
        )
        .bind(agent.0)
        .bind(MODEL)
        .bind(&literal)
        .bind(K)
        .fetch_all(&pool)
        .await
        .unwrap();
        hits += exact.iter().filter(|id| found.contains(id)).count();
    }
    println!(
        "recall: recall@{K} against an exact scan: {:.3} ({checked} queries)",
        hits as f64 / (checked as usize * K as usize) as f64
    );
}
