//! Semantic memory through the swarm with the local embedding model (all-MiniLM-L6-v2 behind
//! the stack's OpenAI-compatible `/v1/embeddings`): the judge remembers what a committed reply
//! said; a later goal on the same subject recalls it through the HNSW index, its plan records
//! which memories it used and its reply is drafted with them; another tenant's memory of the
//! very same words is never recalled.

use std::time::Duration;

use chimera_core::domain::{TaskId, derived_uuid};
use chimera_store::memories::{self, Kind, NewMemory};
use chimera_tests::eventually;
use chimera_tests::seed::seed_agent;
use chimera_tests::swarm::{Swarm, SwarmOptions, local_embedder};
use serde_json::{Value, json};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test]
async fn the_local_embedding_model_is_deterministic_and_ranks_related_texts_first() {
    let embedder = local_embedder();
    let texts: Vec<String> = [
        "Our green tea harvest came in early this spring.",
        "Our green tea harvest came in early this spring.",
        "The first tea leaves of the season were picked in April.",
        "Quarterly VAT returns are due at the end of the month.",
    ]
    .map(str::to_owned)
    .to_vec();
    let got = embedder.embed(&texts).await.unwrap();
    assert_eq!(got.model, "all-minilm-l6-v2");
    assert_eq!(got.vectors.len(), 4);
    assert!(got.vectors.iter().all(|v| v.len() == 384));
    assert!(got.input_tokens > 0);
    // Identical texts, identical vectors (in one batch and alone).
    assert_eq!(got.vectors[0], got.vectors[1]);
    let alone = embedder.embed(&texts[..1]).await.unwrap();
    assert!(cosine(&alone.vectors[0], &got.vectors[0]) > 0.9999);
    // Related above unrelated.
    let related = cosine(&got.vectors[0], &got.vectors[2]);
    let unrelated = cosine(&got.vectors[0], &got.vectors[3]);
    assert!(
        related > unrelated + 0.2,
        "related {related}, unrelated {unrelated}"
    );
    // Nothing to embed is a clear refusal, not a call.
    assert!(embedder.embed(&["  ".to_owned()]).await.is_err());
}

/// The memories a goal's plan records.
async fn plan_memories(swarm: &Swarm, goal: chimera_core::domain::GoalId) -> Vec<Value> {
    let meta: Value = sqlx::query_scalar("select plan_meta from goals where id = $1")
        .bind(goal.0)
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap();
    meta.get("memories")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_committed_reply_is_remembered_and_recalled_for_a_goal_on_its_subject() {
    let mut swarm = Swarm::new(SwarmOptions {
        agents: 2,
        embedder: Some(local_embedder()),
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;

    // Another tenant's agent said exactly what the next goal is about.
    let stranger = seed_agent(&swarm.db.pool).await;
    let words = "How I brew green tea on cold winter mornings";
    let vector = local_embedder()
        .embed(&[words.to_owned()])
        .await
        .unwrap()
        .vectors
        .remove(0);
    let strangers = uuid::Uuid::new_v4();
    memories::remember(
        &swarm.db.pool,
        &NewMemory {
            id: strangers,
            tenant: stranger.tenant,
            agent: stranger.agent,
            kind: Kind::Post,
            text: words,
            embedding: &vector,
            model: "all-minilm-l6-v2",
            platform: Some("x"),
            source_asset: None,
        },
    )
    .await
    .unwrap();

    // A reply about tea, good enough to go out without a person; and one about taxes.
    let tea = swarm
        .submit(
            0,
            "reply",
            "share our tips for brewing green tea when it is cold outside",
            json!({"platforms": ["x"], "in_reply_to": "post-tea", "simulated_quality": 0.95}),
        )
        .await;
    let tax = swarm
        .submit(
            0,
            "reply",
            "remind followers that quarterly tax filings are due soon",
            json!({"platforms": ["x"], "in_reply_to": "post-tax", "simulated_quality": 0.95}),
        )
        .await;
    assert_eq!(
        swarm.settle(&[tea, tax], Duration::from_secs(120)).await,
        ["completed", "completed"]
    );
    // The judge remembered each committed reply, once, by the task that sent it.
    let execute: uuid::Uuid = sqlx::query_scalar(
        "select id from tasks where goal_id = $1 and kind = 'execute' and status = 'committed'",
    )
    .bind(tea.0)
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    let remembered = derived_uuid(&format!("memory:{}", TaskId(execute).0));
    let rows: Vec<(uuid::Uuid, String, String, Option<String>)> = eventually(
        Duration::from_secs(30),
        "both replies remembered",
        || async {
            let rows: Vec<(uuid::Uuid, String, String, Option<String>)> = sqlx::query_as(
                "select id, kind, text, platform from memories where agent_id = $1 order by created_at",
            )
            .bind(swarm.agents[0].0)
            .fetch_all(&swarm.db.pool)
            .await
            .unwrap();
            if rows.len() == 2 {
                Ok(rows)
            } else {
                Err(format!("{} memories", rows.len()))
            }
        },
    )
    .await;
    let tea_memory = rows
        .iter()
        .find(|r| r.0 == remembered)
        .expect("the tea reply's memory");
    assert_eq!(
        (tea_memory.1.as_str(), tea_memory.3.as_deref()),
        ("reply", Some("x"))
    );
    let published: String =
        sqlx::query_scalar("select inputs -> 'arguments' ->> 'text' from tasks where id = $1")
            .bind(execute)
            .fetch_one(&swarm.db.pool)
            .await
            .unwrap();
    assert_eq!(tea_memory.2, published);

    // A new goal on the subject recalls the tea reply first, and never the stranger's words.
    let again = swarm
        .submit(
            0,
            "reply",
            words,
            json!({"platforms": ["x"], "in_reply_to": "post-tea-2", "simulated_quality": 0.95}),
        )
        .await;
    assert_eq!(
        swarm.settle(&[again], Duration::from_secs(120)).await,
        ["completed"]
    );
    let used = plan_memories(&swarm, again).await;
    assert!(!used.is_empty(), "the plan recorded no memory");
    assert_eq!(used[0]["id"], json!(remembered), "{used:#?}");
    assert!(
        used.iter().all(|m| m["id"] != json!(strangers)),
        "{used:#?}"
    );
    let distances: Vec<f64> = used
        .iter()
        .map(|m| m["distance"].as_f64().unwrap())
        .collect();
    assert!(distances.windows(2).all(|w| w[0] <= w[1]), "{distances:?}");
    // The reply was drafted with what was said before, as data.
    let inputs: Value =
        sqlx::query_scalar("select inputs from tasks where goal_id = $1 and kind = 'reply'")
            .bind(again.0)
            .fetch_one(&swarm.db.pool)
            .await
            .unwrap();
    assert_eq!(inputs["memories"][0], json!(published), "{inputs}");

    // The other agent of the same tenant has no memories: its plan records none.
    let other = swarm
        .submit(
            1,
            "reply",
            words,
            json!({"platforms": ["x"], "in_reply_to": "post-tea-3", "simulated_quality": 0.95}),
        )
        .await;
    swarm.settle(&[other], Duration::from_secs(120)).await;
    assert!(plan_memories(&swarm, other).await.is_empty());
    swarm.stop().await;
}
