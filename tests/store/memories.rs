//! Semantic memory in the real PostgreSQL with pgvector: an agent finds its own memory nearest
//! to a query through the HNSW index, never another agent's or another tenant's, and a memory
//! written twice is one.

use chimera_core::domain::AgentId;
use chimera_core::routing::Policy;
use chimera_store::memories::{self, Kind, NewMemory};
use chimera_store::records;
use chimera_tests::TestDb;
use chimera_tests::seed::seed_agent;

const MODEL: &str = "all-minilm-l6-v2";

/// A unit vector pointing mostly along axis `axis`, a little along the others (from `seed`).
fn direction(axis: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut v: Vec<f32> = (0..384)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / u32::MAX as f32 - 0.25) * 0.2
        })
        .collect();
    v[axis] += 1.0;
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

#[tokio::test]
async fn an_agent_recalls_its_own_nearest_memory_and_nobody_elses() {
    let db = TestDb::migrated().await;
    let mine = seed_agent(&db.pool).await;
    let other_tenant = seed_agent(&db.pool).await;
    let colleague = records::create_agent(
        &db.pool,
        mine.tenant,
        "colleague",
        &serde_json::json!({"voice": "dry"}),
        &Policy::default(),
    )
    .await
    .unwrap();
    let write = |tenant, agent: AgentId, text: String, embedding: Vec<f32>| {
        let pool = db.pool.clone();
        async move {
            memories::remember(
                &pool,
                &NewMemory {
                    id: uuid::Uuid::new_v4(),
                    tenant,
                    agent,
                    kind: Kind::Post,
                    text: &text,
                    embedding: &embedding,
                    model: MODEL,
                    platform: Some("x"),
                    source_asset: None,
                },
            )
            .await
            .unwrap()
        }
    };
    // Many memories about other things (axes 1..), one about the topic (axis 0).
    for i in 0..600u64 {
        write(
            mine.tenant,
            mine.agent,
            format!("note {i}"),
            direction(1 + (i as usize % 50), i),
        )
        .await;
    }
    write(
        mine.tenant,
        mine.agent,
        "green tea at dawn".into(),
        direction(0, 7),
    )
    .await;
    // Closer to the query than anything of mine, but not mine.
    write(
        other_tenant.tenant,
        other_tenant.agent,
        "another tenant's tea".into(),
        direction(0, 1000),
    )
    .await;
    write(
        mine.tenant,
        colleague,
        "a colleague's tea".into(),
        direction(0, 1000),
    )
    .await;
    sqlx::query("analyze memories")
        .execute(&db.pool)
        .await
        .unwrap();

    let query = direction(0, 1000);
    let found = memories::nearest(&db.pool, mine.tenant, mine.agent, MODEL, &query, 5)
        .await
        .unwrap();
    assert_eq!(found.len(), 5);
    assert_eq!(found[0].text, "green tea at dawn", "{found:?}");
    assert!(found[0].distance < found[1].distance);
    assert!(
        found
            .iter()
            .all(|m| !m.text.contains("tea") || m.text == "green tea at dawn"),
        "only the agent's own memories: {found:?}"
    );
    // Another model's vectors are not compared with these.
    let none = memories::nearest(&db.pool, mine.tenant, mine.agent, "other-model", &query, 5)
        .await
        .unwrap();
    assert!(none.is_empty());

    // With many memories (as a fleet's agents have), the search goes through the HNSW index.
    sqlx::query(
        "insert into memories (id, tenant_id, agent_id, kind, text, embedding, model)
         select gen_random_uuid(), $1, $2, 'post', 'filler ' || i,
                (select ('[' || string_agg((random() - 0.5)::text, ',') || ']')::vector
                 from generate_series(1, 384) where i > 0),
                $3
         from generate_series(1, 5000) i",
    )
    .bind(mine.tenant.0)
    .bind(mine.agent.0)
    .bind(MODEL)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("analyze memories")
        .execute(&db.pool)
        .await
        .unwrap();
    let literal = format!(
        "[{}]",
        query
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    // The store's own query, as it runs.
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "explain {}",
        memories::nearest_sql(384)
    )))
    .bind(mine.tenant.0)
    .bind(mine.agent.0)
    .bind(MODEL)
    .bind(&literal)
    .bind(5i64)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    // One agent's partition is read, through its HNSW index.
    assert!(
        plan.iter()
            .any(|l| l.contains("Index Scan using memories_p") && l.contains("_embedding_idx")),
        "{plan:#?}"
    );
    let partitions: std::collections::BTreeSet<&str> = plan
        .iter()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("memories_p")))
        .collect();
    assert_eq!(partitions.len(), 1, "{plan:#?}");

    // Written twice, remembered once.
    let again = NewMemory {
        id: found[0].id,
        tenant: mine.tenant,
        agent: mine.agent,
        kind: Kind::Post,
        text: "green tea at dawn",
        embedding: &direction(0, 7),
        model: MODEL,
        platform: Some("x"),
        source_asset: None,
    };
    assert!(!memories::remember(&db.pool, &again).await.unwrap());
    // A vector of the wrong length is refused before it reaches the database.
    assert!(matches!(
        memories::nearest(&db.pool, mine.tenant, mine.agent, MODEL, &[0.5; 3], 5).await,
        Err(memories::MemoryError::Dimensions { got: 3 })
    ));
    db.drop_db().await;
}
