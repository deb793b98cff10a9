//! Goals through the whole swarm: HTTP intake -> planner -> worker (MCP) -> judge -> commit,
//! fed by the local event-source runner from the stage's LocalStack queues.

use std::time::Duration;

use chimera_core::content;
use chimera_core::domain::GoalId;
use chimera_core::names::Queue;
use chimera_tests::swarm::{Swarm, SwarmOptions};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(120);

async fn scalar_i64(swarm: &Swarm, sql: &'static str, goal: GoalId) -> i64 {
    sqlx::query_scalar(sql)
        .bind(goal.0)
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap()
}

/// (kind, status, attempt) of the goal's tasks, in creation order.
async fn tasks(swarm: &Swarm, goal: GoalId) -> Vec<(String, String, i32)> {
    sqlx::query_as(
        "select kind::text, status::text, attempt from tasks where goal_id = $1 order by created_at, id",
    )
    .bind(goal.0)
    .fetch_all(&swarm.db.pool)
    .await
    .unwrap()
}

async fn version(swarm: &Swarm, agent: usize, key: &str) -> i64 {
    sqlx::query_scalar("select version from agent_state where agent_id = $1 and key = $2")
        .bind(swarm.agents[agent].0)
        .bind(key)
        .fetch_optional(&swarm.db.pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

async fn assert_queues_empty(swarm: &Swarm) {
    for queue in Queue::ALL {
        swarm
            .wait_depth(queue, false, 0, Duration::from_secs(30))
            .await;
        assert_eq!(swarm.depth(queue, true).await, 0, "{queue} DLQ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_campaign_goal_is_planned_executed_judged_committed_and_published() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let goal = swarm
        .submit(
            0,
            "campaign",
            "retro gaming night",
            json!({"platforms": ["instagram", "x"], "simulated_quality": 0.95}),
        )
        .await;
    assert_eq!(swarm.settle(&[goal], SETTLE).await, ["completed"]);

    let tasks = tasks(&swarm, goal).await;
    let kinds: Vec<&str> = tasks.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "research",
            "render_media",
            "draft",
            "publish",
            "draft",
            "publish",
            "execute",
            "execute"
        ]
    );
    assert!(
        tasks.iter().all(|t| t.1 == "committed" && t.2 == 1),
        "{tasks:?}"
    );
    // Every task's result was committed once, and each write bumped its key once.
    assert_eq!(
        scalar_i64(&swarm, "select count(*) from commits c join results r on r.id = c.result_id join tasks t on t.id = r.task_id where t.goal_id = $1", goal).await,
        8
    );
    // Only the posts touch agent state: each the slot it fills (the goal's own).
    for platform in ["instagram", "x"] {
        let key = format!("slot:{platform}:goal-{}", goal.0);
        assert_eq!(version(&swarm, 0, &key).await, 1, "{key}");
    }
    assert_eq!(
        scalar_i64(&swarm, "select count(*) from agent_state where agent_id = (select agent_id from goals where id = $1)", goal).await,
        2
    );
    // The two posts went out once each, under their approvals.
    let posts: i64 = sqlx::query_scalar("select count(*) from world.posts")
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap();
    assert_eq!(posts, 2);
    let approvals = scalar_i64(
        &swarm,
        "select count(*) from reviews v join tasks t on t.id = v.task_id
         where t.goal_id = $1 and v.decision = 'auto_approve' and v.status = 'approved'",
        goal,
    )
    .await;
    assert_eq!(approvals, 2);
    // Provenance for every artifact, an audit record for every decision.
    assert_eq!(
        scalar_i64(
            &swarm,
            "select count(*) from assets a join tasks t on t.id = a.task_id where t.goal_id = $1",
            goal
        )
        .await,
        8
    );
    assert_eq!(
        scalar_i64(&swarm, "select count(*) from audit_log where goal_id = $1 and action in ('judge.commit', 'judge.auto_approve')", goal).await,
        8
    );
    // The API reports the same.
    let view = swarm.view(goal).await;
    assert_eq!(view["status"], "completed");
    assert_eq!(view["tasks"].as_array().unwrap().len(), 8);
    assert_queues_empty(&swarm).await;
    swarm.stop().await;
}

/// The reply task of `goal` with its latest attempt, and the goal's pending reviews' risk types.
async fn reply_outcome(swarm: &Swarm, goal: GoalId) -> (String, i32, Vec<Vec<String>>) {
    let (status, attempt): (String, i32) = sqlx::query_as(
        "select status::text, attempt from tasks where goal_id = $1 and kind = 'reply'",
    )
    .bind(goal.0)
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    let pending: Vec<Vec<String>> = sqlx::query_scalar(
        "select v.risk_types from reviews v join tasks t on t.id = v.task_id
         where t.goal_id = $1 and v.status = 'pending'",
    )
    .bind(goal.0)
    .fetch_all(&swarm.db.pool)
    .await
    .unwrap();
    (status, attempt, pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_are_routed_by_confidence_and_sensitivity() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let reply = |quality: f64| json!({"platforms": ["x"], "in_reply_to": "post-1", "simulated_quality": quality});
    let high = swarm
        .submit(0, "reply", "thanks for the kind words", reply(0.95))
        .await;
    let medium = swarm
        .submit(0, "reply", "thanks for the feedback", reply(0.80))
        .await;
    let low = swarm
        .submit(0, "reply", "thanks for asking", reply(0.50))
        .await;
    let sensitive = swarm
        .submit(0, "reply", "our view on the election debate", reply(0.95))
        .await;
    let statuses = swarm.settle(&[high, medium, low, sensitive], SETTLE).await;
    assert_eq!(
        statuses,
        [
            "completed",
            "awaiting_review",
            "awaiting_review",
            "awaiting_review"
        ]
    );

    // 0.95: committed, and its reply sent once.
    assert_eq!(
        reply_outcome(&swarm, high).await,
        ("committed".into(), 1, vec![])
    );
    let executed = tasks(&swarm, high).await;
    assert_eq!(
        executed.last().unwrap(),
        &("execute".into(), "committed".into(), 1)
    );
    // 0.80: pending review for its medium confidence.
    assert_eq!(
        reply_outcome(&swarm, medium).await,
        (
            "awaiting_review".into(),
            1,
            vec![vec!["medium_confidence".into()]]
        )
    );
    // 0.50: replanned with feedback until the policy's 3 attempts were spent, then failed and
    // surfaced to humans.
    assert_eq!(
        reply_outcome(&swarm, low).await,
        (
            "failed".into(),
            3,
            vec![vec!["failed_after_retries".into()]]
        )
    );
    let retries = scalar_i64(
        &swarm,
        "select count(*) from audit_log where goal_id = $1 and action = 'judge.retry'",
        low,
    )
    .await;
    assert_eq!(retries, 2);
    let results = scalar_i64(
        &swarm,
        "select count(*) from results r join tasks t on t.id = r.task_id where t.goal_id = $1",
        low,
    )
    .await;
    assert_eq!(results, 3, "one result per attempt");
    // Sensitive: held whatever its confidence.
    assert_eq!(
        reply_outcome(&swarm, sensitive).await,
        ("awaiting_review".into(), 1, vec![vec!["sensitive".into()]])
    );
    // Nothing was published but the approved reply.
    let replies: i64 = sqlx::query_scalar("select count(*) from world.posts")
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap();
    assert_eq!(replies, 1);
    assert_queues_empty(&swarm).await;
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_conflict_is_replanned_with_fresh_versions_and_committed() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    // Another writer advances the state the task read, between its plan and its commit: when
    // the first attempt's result is recorded, the thread it replies in moves on.
    sqlx::raw_sql(
        "create function advance_mentions() returns trigger language plpgsql as $$
         begin
             if new.attempt = 1 and (select kind from tasks where id = new.task_id) = 'reply' then
                 update agent_state set version = version + 1
                 where key = 'thread:x:post-7' and agent_id = (select agent_id from tasks where id = new.task_id);
             end if;
             return new;
         end $$;
         create trigger advance_mentions after insert on results
             for each row execute function advance_mentions();",
    )
    .execute(&swarm.db.pool)
    .await
    .unwrap();
    swarm.run().await;
    let goal = swarm
        .submit(
            0,
            "reply",
            "thanks for the kind words",
            json!({"platforms": ["x"], "in_reply_to": "post-7", "simulated_quality": 0.95}),
        )
        .await;
    assert_eq!(swarm.settle(&[goal], SETTLE).await, ["completed"]);
    assert_eq!(
        reply_outcome(&swarm, goal).await,
        ("committed".into(), 2, vec![])
    );
    let conflicts = scalar_i64(
        &swarm,
        "select count(*) from audit_log where goal_id = $1 and action = 'judge.conflict'",
        goal,
    )
    .await;
    assert_eq!(conflicts, 1);
    // The commit read the version the other writer left (1) and wrote 2: no update was lost.
    let (input, output): (Value, Value) = sqlx::query_as(
        "select c.input_state_version, c.output_state_version from commits c
         join results r on r.id = c.result_id join tasks t on t.id = r.task_id
         where t.goal_id = $1 and t.kind = 'reply'",
    )
    .bind(goal.0)
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    assert_eq!(input, json!({"thread:x:post-7": 1}));
    assert_eq!(output, json!({"thread:x:post-7": 2}));
    assert_eq!(version(&swarm, 0, "thread:x:post-7").await, 2);
    // The replanned reply says nothing of the conflict.
    let replies: Vec<String> = sqlx::query_scalar("select text from world.posts")
        .fetch_all(&swarm.db.pool)
        .await
        .unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(
        content::leaks(&replies[0]),
        Vec::<String>::new(),
        "{replies:?}"
    );
    assert_queues_empty(&swarm).await;
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_goals_across_five_agents_all_settle_and_leave_no_message() {
    let mut swarm = Swarm::new(SwarmOptions {
        agents: 5,
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    let swarm = &swarm;
    let submissions = (0..20).map(|i| async move {
        let agent = i % 5;
        match i % 4 {
            0 | 1 => {
                swarm
                    .submit(agent, "campaign", "retro gaming night",
                            json!({"platforms": ["instagram"], "simulated_quality": 0.95}))
                    .await
            }
            2 => {
                swarm
                    .submit(agent, "reply", "thanks for the kind words",
                            json!({"platforms": ["x"], "in_reply_to": format!("post-{i}"), "simulated_quality": 0.95}))
                    .await
            }
            _ => {
                swarm
                    .submit(agent, "paid_action", "pay the photographer",
                            json!({"pay_to": "photo-studio", "amount_cents": 1500}))
                    .await
            }
        }
    });
    let goals: Vec<GoalId> = futures::future::join_all(submissions).await;
    let statuses = swarm.settle(&goals, Duration::from_secs(240)).await;
    for (i, status) in statuses.iter().enumerate() {
        // Payments wait for a human (finance is a sensitive topic by default); the rest complete.
        let expected = if i % 4 == 3 {
            "awaiting_review"
        } else {
            "completed"
        };
        assert_eq!(
            status,
            expected,
            "goal {i}: {:?}",
            tasks(swarm, goals[i]).await
        );
    }
    // Campaigns of one agent fill their own slots and replies answer different posts: nothing
    // they touch is shared, so nothing conflicted.
    let conflicts: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action in ('judge.conflict', 'review.conflict')",
    )
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    assert_eq!(conflicts, 0);
    assert_queues_empty(swarm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_message_on_each_queue_ends_in_its_dlq_while_the_rest_completes() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    let poison = r#"{"schema_version": 1, "message": {"type": "no such message"}}"#;
    for queue in Queue::ALL {
        swarm.send_raw(queue, poison).await;
    }
    swarm.run().await;
    let goal = swarm
        .submit(
            0,
            "reply",
            "thanks for the kind words",
            json!({"platforms": ["x"], "in_reply_to": "post-3", "simulated_quality": 0.95}),
        )
        .await;
    assert_eq!(swarm.settle(&[goal], SETTLE).await, ["completed"]);
    for queue in Queue::ALL {
        swarm
            .wait_depth(queue, true, 1, Duration::from_secs(60))
            .await;
        swarm
            .wait_depth(queue, false, 0, Duration::from_secs(30))
            .await;
        assert!(
            swarm.running().counts(queue).failed >= 3,
            "{queue}: the poison message was received and failed 3 times"
        );
    }
    swarm.stop().await;
}
