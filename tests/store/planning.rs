use chimera_core::domain::{ReviewId, Task, TaskId, TaskKind, TaskStatus};
use chimera_store::dag::{self, Post, RECENT_POSTS};
use chimera_store::records;
use chimera_tests::TestDb;
use chimera_tests::seed::seed_agent;
use serde_json::json;

#[tokio::test]
async fn a_planner_sees_the_agents_latest_published_posts_newest_first() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let other = seed_agent(&db.pool).await;
    let effect = |agent: &chimera_tests::seed::Seeded, action: &str, arguments| Task {
        id: TaskId::random(),
        goal_id: agent.goal,
        tenant_id: agent.tenant,
        agent_id: agent.agent,
        kind: TaskKind::Execute,
        attempt: 1,
        inputs: json!({"action": action, "arguments": arguments})
            .as_object()
            .cloned()
            .unwrap(),
        depends_on: vec![],
        read_set: Default::default(),
        write_set: Default::default(),
        feedback: None,
        approval_id: Some(ReviewId::random()),
    };
    let post = |n: usize| json!({"platform": "x", "text": format!("post {n}")});
    let mut effects = vec![
        (
            effect(&seed, "social.publish", post(1)),
            TaskStatus::Committed,
        ),
        (
            effect(&seed, "social.reply", post(2)),
            TaskStatus::Committed,
        ),
        (
            effect(&seed, "social.publish", post(3)),
            TaskStatus::Committed,
        ),
        // Not published (yet), not a post, another agent's.
        (effect(&seed, "social.publish", post(4)), TaskStatus::Failed),
        (effect(&seed, "social.publish", post(5)), TaskStatus::Queued),
        (
            effect(
                &seed,
                "wallet.transfer",
                json!({"to": "x", "amount_cents": 5}),
            ),
            TaskStatus::Committed,
        ),
        (
            effect(&other, "social.publish", post(6)),
            TaskStatus::Committed,
        ),
    ];
    effects.insert(
        3,
        (
            effect(&seed, "social.reply", post(7)),
            TaskStatus::Committed,
        ),
    );
    for (task, status) in &effects {
        records::insert_task(&db.pool, task, *status, 3)
            .await
            .unwrap();
    }
    let ctx = dag::planning_context(&db.pool, seed.goal)
        .await
        .unwrap()
        .unwrap();
    let texts: Vec<&str> = ctx.recent_posts.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(texts, ["post 7", "post 3", "post 2"]);
    assert_eq!(ctx.recent_posts.len() as i64, RECENT_POSTS);
    assert_eq!(
        ctx.recent_posts[0],
        Post {
            platform: "x".into(),
            text: "post 7".into()
        }
    );
    // An agent that published nothing has nothing to see.
    let fresh = seed_agent(&db.pool).await;
    let ctx = dag::planning_context(&db.pool, fresh.goal)
        .await
        .unwrap()
        .unwrap();
    assert!(ctx.recent_posts.is_empty());
    db.drop_db().await;
}
