use chimera_aws::handler::QueueHandler;
use std::time::Duration;

use chimera_aws::bootstrap::{BootstrapOptions, bootstrap};
use chimera_core::domain::{Goal, GoalId, ReadSet, StateKey, Task, TaskKind, TaskResult};
use chimera_core::envelope::{self, PlannerMessage, TaskMessage};
use chimera_core::names::{Queue, ResourceNames};
use chimera_planner::PlannerService;
use chimera_planner::plan::TemplatePlanner;
use chimera_store::judging::{self, Decided};
use chimera_store::records;
use chimera_tests::seed::{Seeded, seed_agent};
use chimera_tests::{TestDb, clients, drain, unique_stage};
use serde_json::{Value, json};

struct Setup {
    db: TestDb,
    names: ResourceNames,
    seed: Seeded,
    planner: PlannerService,
}

impl Setup {
    /// Releases the goal's ready tasks and sends their messages (the outbox rows the release
    /// wrote), as the judge does after a commit.
    async fn release(&self, goal: GoalId) -> usize {
        let released = self.planner.release(goal).await.unwrap();
        self.planner.relay().flush(&[goal]).await;
        released
    }

    async fn new() -> Setup {
        let db = TestDb::migrated().await;
        let seed = seed_agent(&db.pool).await;
        let names = unique_stage();
        let c = clients().await;
        bootstrap(
            &c,
            &names,
            BootstrapOptions {
                max_receive_count: 3,
            },
        )
        .await
        .unwrap();
        let planner =
            PlannerService::new(c, db.pool.clone(), names.clone(), Box::new(TemplatePlanner));
        Setup {
            db,
            names,
            seed,
            planner,
        }
    }

    async fn goal(&self, kind: &str, constraints: Value) -> GoalId {
        let goal = Goal {
            id: GoalId::random(),
            tenant_id: self.seed.tenant,
            agent_id: self.seed.agent,
            kind: kind.into(),
            body: "launch the spring collection".into(),
            constraints: constraints.as_object().cloned().unwrap_or_default(),
        };
        chimera_store::goals::submit(&self.db.pool, &goal, None, "test")
            .await
            .unwrap();
        goal.id
    }

    async fn deliver(&self, messages: &[&str]) -> Vec<String> {
        let records: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(i, body)| json!({"messageId": format!("m{i}"), "body": body, "attributes": {}, "messageAttributes": {}}))
            .collect();
        let event = serde_json::from_value(json!({ "Records": records })).unwrap();
        let response = serde_json::to_value(self.planner.handle(&event, deadline()).await).unwrap();
        response["batchItemFailures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn queued(&self, expected: usize) -> Vec<Task> {
        drain(&self.names, Queue::Task, expected, Duration::from_secs(10))
            .await
            .iter()
            .map(|b| envelope::decode::<TaskMessage>(b).unwrap().task)
            .collect()
    }

    async fn statuses(&self, goal: GoalId) -> Vec<(String, String)> {
        sqlx::query_as(
            "select kind::text, status::text from tasks where goal_id = $1 order by created_at, id",
        )
        .bind(goal.0)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// Commits a result of `task` with one text artifact, as the judge would.
    async fn commit(&self, task: &Task, text: &str) {
        let mut result = TaskResult {
            id: chimera_core::domain::ResultId::random(),
            task_id: task.id,
            goal_id: task.goal_id,
            tenant_id: task.tenant_id,
            agent_id: task.agent_id,
            task_kind: task.kind,
            attempt: task.attempt,
            artifacts: vec![chimera_core::domain::ArtifactRef {
                media_type: "text/plain".into(),
                sha256: format!("{:0>64}", task.kind.as_str().len()),
                size_bytes: text.len() as u64,
                s3_key: None,
                inline: Some(text.into()),
            }],
            confidence_score: 0.95.try_into().unwrap(),
            risk_tags: Default::default(),
            disclosure_level: None,
            read_set: task.read_set.clone(),
            write_set: task.write_set.clone(),
            commit_hash: chimera_core::domain::CommitHash::parse("0".repeat(64)).unwrap(),
        };
        result.commit_hash = result.compute_commit_hash();
        let result = records::record_result(&self.db.pool, &result)
            .await
            .unwrap();
        let decided = judging::commit(&self.db.pool, &result, 1, "test approval", None)
            .await
            .unwrap();
        assert!(matches!(decided, Decided::Done(_)), "{decided:?}");
    }
}

#[tokio::test]
async fn a_goal_is_planned_once_and_its_tasks_released_as_dependencies_commit() {
    let s = Setup::new().await;
    let goal = s
        .goal("campaign", json!({"platforms": ["x", "instagram"]}))
        .await;
    let message = envelope::encode(&PlannerMessage::Goal { goal_id: goal });
    assert!(s.deliver(&[&message]).await.is_empty());

    let statuses = s.statuses(goal).await;
    assert_eq!(statuses.len(), 6, "{statuses:?}");
    assert_eq!(statuses[0], ("research".into(), "queued".into()));
    assert!(
        statuses[1..].iter().all(|(_, st)| st == "blocked"),
        "{statuses:?}"
    );
    let research = s.queued(1).await;
    assert_eq!(research.len(), 1);
    assert_eq!(research[0].kind, TaskKind::Research);
    assert_eq!(research[0].inputs["query"], "launch the spring collection");

    // The same goal message again: nothing planned twice, nothing released twice.
    assert!(s.deliver(&[&message]).await.is_empty());
    assert_eq!(s.statuses(goal).await.len(), 6);
    assert!(
        s.queued(1).await.is_empty(),
        "nothing new on the task queue"
    );

    // Research committed: the render and both drafts are released.
    s.commit(&research[0], "trend notes").await;
    assert_eq!(s.release(goal).await, 3);
    let mut next = s.queued(3).await;
    next.sort_by_key(|t| {
        (
            t.kind.as_str(),
            t.inputs.get("platform").map(|p| p.to_string()),
        )
    });
    let kinds: Vec<TaskKind> = next.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [TaskKind::Draft, TaskKind::Draft, TaskKind::RenderMedia]
    );
    assert_eq!(s.release(goal).await, 0, "released once");

    // The x draft and the image committed: the x post is released with their text and hash,
    // reading the slot it fills (the goal's own) at its current version.
    let draft_x = next.iter().find(|t| t.inputs["platform"] == "x").unwrap();
    s.commit(draft_x, "Spring is here on x").await;
    s.commit(&next[2], "image").await;
    assert_eq!(s.release(goal).await, 1);
    let publish = s.queued(1).await.remove(0);
    assert_eq!(publish.kind, TaskKind::Publish);
    assert_eq!(publish.inputs["text"], "Spring is here on x");
    assert!(
        publish.inputs["media_sha256"]
            .as_str()
            .is_some_and(|h| h.len() == 64)
    );
    assert!(publish.inputs.get("text_from").is_none());
    let slot = StateKey::parse(format!("slot:x:goal-{}", goal.0)).unwrap();
    assert_eq!(
        publish.read_set,
        ReadSet::from([(slot, 0.try_into().unwrap())])
    );
    s.db.drop_db().await;
}

#[tokio::test]
async fn a_replan_takes_the_next_attempt_once_and_bad_messages_fail_alone() {
    let s = Setup::new().await;
    let goal = s
        .goal(
            "reply",
            json!({"in_reply_to": "post-1", "platforms": ["x"]}),
        )
        .await;
    s.deliver(&[&envelope::encode(&PlannerMessage::Goal { goal_id: goal })])
        .await;
    let reply = s.queued(1).await.remove(0);
    assert_eq!(reply.kind, TaskKind::Reply);

    // The judge asks for a retry.
    sqlx::query("update tasks set status = 'retrying' where id = $1")
        .bind(reply.id.0)
        .execute(&s.db.pool)
        .await
        .unwrap();
    let replan = envelope::encode(&PlannerMessage::Replan {
        task_id: reply.id,
        attempt: Some(1),
        feedback: "warmer, please".into(),
        fresh_versions: ReadSet::new(),
    });
    assert!(s.deliver(&[&replan, "not an envelope", &replan]).await == vec!["m1".to_owned()]);
    let again = s.queued(2).await;
    assert_eq!(again.len(), 1, "the duplicate replan did nothing");
    assert_eq!(
        (again[0].attempt, again[0].feedback.as_deref()),
        (2, Some("warmer, please"))
    );

    // A goal no planner can decompose fails, visibly; its message is done.
    let odd = s.goal("party", json!({})).await;
    assert!(
        s.deliver(&[&envelope::encode(&PlannerMessage::Goal { goal_id: odd })])
            .await
            .is_empty()
    );
    let status: String = sqlx::query_scalar("select status::text from goals where id = $1")
        .bind(odd.0)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "failed");
    // A goal that does not exist is a permanent failure of that message.
    let ghost = envelope::encode(&PlannerMessage::Goal {
        goal_id: GoalId::random(),
    });
    assert_eq!(s.deliver(&[&ghost]).await, vec!["m0".to_owned()]);
    s.db.drop_db().await;
}

/// An invocation's deadline, as the runner gives one.
fn deadline() -> std::time::SystemTime {
    std::time::SystemTime::now() + std::time::Duration::from_secs(30)
}
