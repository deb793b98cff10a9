//! Seed data for store tests: a tenant, an agent with the default policy, a goal and a task,
//! and results built like a worker builds them.

use chimera_core::domain::TaskStatus;
use std::collections::BTreeSet;

use chimera_core::domain::{
    AgentId, ArtifactRef, CommitHash, Confidence, Goal, GoalId, ReadSet, ResultId, ReviewId,
    StateKey, StateVersion, Task, TaskId, TaskKind, TaskResult, TenantId, WriteSet,
};
use chimera_core::routing::Policy;
use chimera_store::judging::{self, Decided, NewReview};
use chimera_store::records;
use sqlx::PgPool;

/// One agent with a goal and a running task.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub tenant: TenantId,
    pub agent: AgentId,
    pub goal: GoalId,
    pub task: TaskId,
}

/// An `execute` task of the seeded goal, released by `approval`, performing `inputs` (not
/// stored: the caller stores it as the path under test does).
pub fn execute_task(
    seed: &Seeded,
    approval: ReviewId,
    inputs: serde_json::Map<String, serde_json::Value>,
) -> Task {
    Task {
        id: TaskId::random(),
        goal_id: seed.goal,
        tenant_id: seed.tenant,
        agent_id: seed.agent,
        kind: TaskKind::Execute,
        attempt: 1,
        inputs,
        depends_on: vec![],
        read_set: Default::default(),
        write_set: Default::default(),
        feedback: None,
        approval_id: Some(approval),
    }
}

/// Another running task of the same goal, as a `Seeded` that points at it.
pub async fn another_task(pool: &PgPool, seed: &Seeded) -> Seeded {
    let task = draft_task(seed.tenant, seed.agent, seed.goal);
    records::insert_task(pool, &task, TaskStatus::Running, 3)
        .await
        .unwrap();
    Seeded {
        task: task.id,
        ..seed.clone()
    }
}

fn draft_task(tenant: TenantId, agent: AgentId, goal: GoalId) -> Task {
    Task {
        id: TaskId::random(),
        goal_id: goal,
        tenant_id: tenant,
        agent_id: agent,
        kind: TaskKind::Draft,
        attempt: 1,
        inputs: Default::default(),
        depends_on: vec![],
        read_set: ReadSet::new(),
        write_set: WriteSet::new(),
        feedback: None,
        approval_id: None,
    }
}

/// A new agent `handle` of `tenant` with a campaign goal submitted (nothing runs it).
pub async fn agent_with_goal(pool: &PgPool, tenant: TenantId, handle: &str) -> (AgentId, GoalId) {
    let agent = records::create_agent(
        pool,
        tenant,
        handle,
        &serde_json::json!({"voice": "warm"}),
        &Policy::default(),
    )
    .await
    .unwrap();
    let goal = Goal {
        id: GoalId::random(),
        tenant_id: tenant,
        agent_id: agent,
        kind: "campaign".into(),
        body: "launch the spring collection".into(),
        constraints: Default::default(),
    };
    chimera_store::goals::submit(pool, &goal, None, "test")
        .await
        .unwrap();
    (agent, goal.id)
}

pub async fn seed_agent(pool: &PgPool) -> Seeded {
    let tenant = records::create_tenant(pool, &format!("tenant-{}", uuid::Uuid::new_v4()))
        .await
        .unwrap();
    let (agent, goal) = agent_with_goal(pool, tenant, "nova").await;
    let task = draft_task(tenant, agent, goal);
    records::insert_task(pool, &task, TaskStatus::Running, 3)
        .await
        .unwrap();
    Seeded {
        tenant,
        agent,
        goal,
        task: task.id,
    }
}

/// A seeded agent whose task's result is held for a human, as the judge holds one.
pub async fn held(pool: &PgPool) -> (Seeded, TaskResult, ReviewId) {
    let seed = seed_agent(pool).await;
    let key = StateKey::parse("drafts:x").unwrap();
    let r = result(
        &seed,
        [(key.clone(), StateVersion::INITIAL)].into(),
        [key].into(),
        "a draft",
    );
    records::record_result(pool, &r).await.unwrap();
    let policy = Policy::default();
    let (due_at, final_deadline) = NewReview::deadlines(&policy);
    let review = NewReview {
        id: ReviewId::random(),
        policy_version: policy.version,
        reasoning: "medium confidence".into(),
        reasons: vec![],
        risk_types: vec!["medium_confidence"],
        financial: false,
        due_at,
        final_deadline,
        summary: Some("thanks for the kind words".into()),
    };
    assert_eq!(
        judging::hold(pool, &r, &review).await.unwrap(),
        Decided::Done(())
    );
    (seed, r, review.id)
}

/// A result of `seed.task` with the given read and write sets; `content` makes it unique.
pub fn result(seed: &Seeded, read_set: ReadSet, write_set: WriteSet, content: &str) -> TaskResult {
    let mut result = TaskResult {
        id: ResultId::random(),
        task_id: seed.task,
        goal_id: seed.goal,
        tenant_id: seed.tenant,
        agent_id: seed.agent,
        task_kind: TaskKind::Draft,
        attempt: 1,
        artifacts: vec![ArtifactRef {
            media_type: "text/plain".into(),
            sha256: "0".repeat(64),
            size_bytes: content.len() as u64,
            s3_key: None,
            inline: Some(content.to_owned()),
        }],
        confidence_score: Confidence::try_from(0.95).unwrap(),
        risk_tags: BTreeSet::new(),
        disclosure_level: None,
        read_set,
        write_set,
        commit_hash: CommitHash::parse("0".repeat(64)).unwrap(),
    };
    result.commit_hash = result.compute_commit_hash();
    result
}
