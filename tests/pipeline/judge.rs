//! The judge handler on its own, fed batches directly: duplicates, forged and stale results.

use chimera_aws::artifacts::ArtifactStore;
use chimera_aws::handler::QueueHandler;
use chimera_core::domain::TaskStatus;
use chimera_core::domain::{
    CommitHash, DisclosureLevel, Goal, GoalId, ReadSet, ResultId, StateKey, StateVersion, Task,
    TaskId, TaskKind, TaskResult,
};
use chimera_store::records;
use chimera_tests::swarm::{Swarm, SwarmOptions};
use serde_json::{Value, json};

/// A reply task, queued as the planner leaves it, and a result for it proposing `text` as the
/// reply, claimed at `confidence` with no risk tag.
pub(crate) async fn reply_and_result(
    swarm: &Swarm,
    confidence: f64,
    text: &str,
) -> (Task, TaskResult) {
    let goal = Goal {
        id: GoalId::random(),
        tenant_id: swarm.tenant,
        agent_id: swarm.agents[0],
        kind: "reply".into(),
        body: "thanks for the kind words".into(),
        constraints: json!({"in_reply_to": "post-1"})
            .as_object()
            .cloned()
            .unwrap(),
    };
    chimera_store::goals::submit(&swarm.db.pool, &goal, None, "test")
        .await
        .unwrap();
    sqlx::query("update goals set status = 'in_progress' where id = $1")
        .bind(goal.id.0)
        .execute(&swarm.db.pool)
        .await
        .unwrap();
    let key = StateKey::parse("thread:x:post-1").unwrap();
    let task = Task {
        id: TaskId::random(),
        goal_id: goal.id,
        tenant_id: swarm.tenant,
        agent_id: swarm.agents[0],
        kind: TaskKind::Reply,
        attempt: 1,
        inputs: Default::default(),
        depends_on: vec![],
        read_set: ReadSet::from([(key.clone(), StateVersion::INITIAL)]),
        write_set: [key].into(),
        feedback: None,
        approval_id: None,
    };
    records::insert_task(&swarm.db.pool, &task, TaskStatus::Queued, 3)
        .await
        .unwrap();
    let store = ArtifactStore::new(swarm.clients.s3.clone(), swarm.names.artifact_bucket());
    let proposal = json!({"action": "social.reply",
                          "arguments": {"platform": "x", "text": text, "in_reply_to": "post-1"}});
    let artifact = store
        .put(proposal.to_string().as_bytes(), "application/json")
        .await
        .unwrap();
    let mut result = TaskResult {
        id: ResultId::random(),
        task_id: task.id,
        goal_id: task.goal_id,
        tenant_id: task.tenant_id,
        agent_id: task.agent_id,
        task_kind: task.kind,
        attempt: 1,
        artifacts: vec![artifact],
        confidence_score: confidence.try_into().unwrap(),
        risk_tags: Default::default(),
        disclosure_level: Some(DisclosureLevel::Automated),
        read_set: task.read_set.clone(),
        write_set: task.write_set.clone(),
        commit_hash: CommitHash::parse("0".repeat(64)).unwrap(),
    };
    result.commit_hash = result.compute_commit_hash();
    (task, result)
}

/// Hands `bodies` to the judge as one batch; returns the ids reported failed.
pub(crate) async fn judge(swarm: &Swarm, bodies: &[String]) -> Vec<String> {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| json!({"messageId": format!("m{i}"), "body": body, "attributes": {}, "messageAttributes": {}}))
        .collect();
    let event = serde_json::from_value(json!({ "Records": records })).unwrap();
    let response = serde_json::to_value(swarm.judge().handle(&event, deadline()).await).unwrap();
    response["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect()
}

async fn count(swarm: &Swarm, sql: &'static str, task: TaskId) -> i64 {
    sqlx::query_scalar(sql)
        .bind(task.0)
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_delivered_three_times_is_decided_once() {
    let swarm = Swarm::new(SwarmOptions::default()).await;
    let (task, result) =
        reply_and_result(&swarm, 0.95, "Thank you so much for the kind words!").await;
    let body = chimera_core::envelope::encode(&chimera_core::envelope::ResultMessage::Inline {
        result: result.clone(),
    });
    // Twice in one batch (handled concurrently), then once more.
    assert!(
        judge(&swarm, &[body.clone(), body.clone()])
            .await
            .is_empty()
    );
    assert!(judge(&swarm, &[body]).await.is_empty());

    let commits = count(
        &swarm,
        "select count(*) from commits c join results r on r.id = c.result_id where r.task_id = $1",
        task.id,
    )
    .await;
    assert_eq!(commits, 1);
    let approvals = count(
        &swarm,
        "select count(*) from reviews where task_id = $1 and decision = 'auto_approve'",
        task.id,
    )
    .await;
    assert_eq!(approvals, 1);
    let effects = count(
        &swarm,
        "select count(*) from tasks t join task_dependencies d on d.task_id = t.id
         where d.depends_on = $1 and t.kind = 'execute'",
        task.id,
    )
    .await;
    assert_eq!(effects, 1);
    let audit = count(
        &swarm,
        "select count(*) from audit_log where task_id = $1 and action like 'judge.%'",
        task.id,
    )
    .await;
    assert_eq!(audit, 1);
    let version: i64 = sqlx::query_scalar(
        "select version from agent_state where agent_id = $1 and key = 'thread:x:post-1'",
    )
    .bind(swarm.agents[0].0)
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    assert_eq!(version, 1);
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_and_unknown_results_are_refused_and_change_nothing() {
    let swarm = Swarm::new(SwarmOptions::default()).await;
    let (task, result) =
        reply_and_result(&swarm, 0.95, "Thank you so much for the kind words!").await;
    let encode = |r: &TaskResult| {
        chimera_core::envelope::encode(&chimera_core::envelope::ResultMessage::Inline {
            result: r.clone(),
        })
    };
    // Content altered after hashing.
    let mut altered = result.clone();
    altered.confidence_score = 0.99.try_into().unwrap();
    // Re-hashed, but claiming to have read another version than the task did.
    let mut forged = result.clone();
    forged.read_set = ReadSet::from([(
        StateKey::parse("thread:x:post-1").unwrap(),
        StateVersion::try_from(7).unwrap(),
    )]);
    forged.commit_hash = forged.compute_commit_hash();
    // For a task that does not exist.
    let mut orphan = result.clone();
    orphan.task_id = TaskId::random();
    orphan.commit_hash = orphan.compute_commit_hash();
    let failed = judge(
        &swarm,
        &[
            encode(&altered),
            encode(&forged),
            encode(&orphan),
            "{}".into(),
        ],
    )
    .await;
    assert_eq!(failed.len(), 4, "{failed:?}");
    let recorded = count(
        &swarm,
        "select count(*) from results where task_id = $1",
        task.id,
    )
    .await;
    assert_eq!(recorded, 0);
    let status: String = sqlx::query_scalar("select status::text from tasks where id = $1")
        .bind(task.id.0)
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "queued");
    // The genuine result still goes through.
    assert!(judge(&swarm, &[encode(&result)]).await.is_empty());
    swarm.stop().await;
}

/// An invocation's deadline, as the runner gives one.
fn deadline() -> std::time::SystemTime {
    std::time::SystemTime::now() + std::time::Duration::from_secs(30)
}
