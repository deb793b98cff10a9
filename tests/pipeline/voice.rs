//! Agents that sound like themselves: a reply is written from the post it answers (read
//! through MCP) and the persona, the policy's disclosure is part of what is published, and the
//! local model plans every goal: its answers are decoded against the plan's schema, and a goal
//! waits while the model is busy instead of being planned by a template.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chimera_core::domain::{Goal, GoalId};
use chimera_core::routing::Policy;
use chimera_llm::{LanguageModel, Role};
use chimera_planner::llm::LlmPlanner;
use chimera_planner::plan::{AgentContext, Planner, validate};
use chimera_tests::eventually;
use chimera_tests::scripted::{Draft, Reading, Scripted};
use chimera_tests::swarm::{Swarm, SwarmOptions, local_mind, local_model};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(240);

/// Nova, as examples/agents/nova/SOUL.md makes her.
fn nova() -> Value {
    json!({
        "name": "Nova",
        "voice": "warm and curious",
        "bio": "Nova runs the social accounts of a small workshop that makes paper lanterns by hand.",
        "examples": ["Twelve hours of folding, one evening of light. Our spring lanterns are in the shop now."],
        "style": {"posts": ["say how the thing was made"], "replies": ["thank the person first"]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reply_is_written_from_the_post_it_answers_and_published_with_the_disclosure() {
    let reply =
        "Thank you for the kind words about our paper lanterns! We loved making every one of them.";
    let scripted = Arc::new(Scripted::new(
        Draft::Fixed(reply.into()),
        Reading::Score(1.0),
    ));
    let mut swarm = Swarm::new(SwarmOptions {
        model: Some(scripted.clone() as Arc<dyn LanguageModel>),
        policy: Policy {
            disclosure_text: Some("#automated".into()),
            ..Policy::default()
        },
        ..SwarmOptions::default()
    })
    .await;
    sqlx::query("update agents set persona = $2 where id = $1")
        .bind(swarm.agents[0].0)
        .bind(nova())
        .execute(&swarm.db.pool)
        .await
        .unwrap();
    swarm.run().await;
    // post-107 is one of the world's readers' posts.
    let goal = swarm
        .submit(
            0,
            "reply",
            "thank the reader for the kind words about our paper lanterns",
            json!({"platforms": ["x"], "in_reply_to": "post-107"}),
        )
        .await;
    assert_eq!(swarm.settle(&[goal], SETTLE).await, ["completed"]);

    // The drafter saw the post it answers, as data, and the persona's bio and an example.
    let drafts = scripted.drafts.lock().unwrap().clone();
    let request = drafts.first().expect("the reply was drafted by the model");
    let system = &request.messages[0];
    let user = &request.messages[1];
    assert_eq!((system.role, user.role), (Role::System, Role::User));
    assert!(
        user.content.starts_with(
            "The post you answer:\n<data>\nYour paper lanterns made our garden party. Thank you!\n</data>"
        ),
        "{}",
        user.content
    );
    assert!(
        !system.content.contains("garden party"),
        "{}",
        system.content
    );
    assert!(
        system
            .content
            .contains("About you: Nova runs the social accounts")
            && system
                .content
                .contains("\"Twelve hours of folding, one evening of light.")
            && system.content.contains("thank the person first"),
        "{}",
        system.content
    );

    // What was published carries the policy's disclosure, once.
    let published: Vec<String> =
        sqlx::query_scalar("select text from world.posts where in_reply_to = 'post-107'")
            .fetch_all(&swarm.db.pool)
            .await
            .unwrap();
    assert_eq!(published, [format!("{reply} #automated")]);
    swarm.stop().await;
}

/// Goals of both kinds the model plans, on subjects of the three example agents.
const SUBJECTS: [&str; 10] = [
    "spring lanterns are back in the shop",
    "how we fold a lantern in twelve hours",
    "a first oolong for people new to tea",
    "why the new harvest tastes brighter",
    "a budget for a first apartment",
    "saving a little every week",
    "our stall at the night market",
    "three ways to steep green tea",
    "lanterns for a garden party",
    "what a rainy day fund is for",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_local_model_answers_a_buildable_plan_on_twenty_calls_of_twenty() {
    let swarm = Swarm::new(SwarmOptions::default()).await;
    let planner = LlmPlanner::new(local_mind(&swarm.db.pool));
    let agent = AgentContext {
        handle: "nova".into(),
        persona: nova(),
        policy: Policy::default(),
        recent_posts: Vec::new(),
        memories: Vec::new(),
        week: Default::default(),
    };
    let mut made = Vec::new();
    for i in 0..20 {
        let (kind, constraints) = if i % 2 == 0 {
            (
                "reply",
                json!({"platforms": ["x"], "in_reply_to": format!("post-{i}")}),
            )
        } else if i % 4 == 1 {
            ("campaign", json!({"platforms": ["instagram"]}))
        } else {
            ("campaign", json!({"platforms": ["x", "instagram"]}))
        };
        let goal = Goal {
            id: GoalId::random(),
            tenant_id: swarm.tenant,
            agent_id: swarm.agents[0],
            kind: kind.into(),
            body: SUBJECTS[i / 2].into(),
            constraints: constraints.as_object().cloned().unwrap(),
        };
        let by = Instant::now() + Duration::from_secs(120);
        let plan = planner.plan(&goal, &agent, by).await.unwrap();
        // One call, and its answer was a plan: nothing fell back, nothing was asked again.
        assert_eq!(
            (plan.meta.planner.as_str(), plan.meta.attempts),
            ("model", 1),
            "goal {i} ({kind}): {:?}",
            plan.meta
        );
        validate(&plan.tasks).unwrap();
        made.push(plan.tasks.len());
    }
    eprintln!("tasks per plan: {made:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_goals_at_once_wait_for_the_busy_local_model_and_none_is_planned_by_a_template() {
    let mut swarm = Swarm::new(SwarmOptions {
        model: Some(local_model()),
        // One call at a time, as the runner has it for the local server.
        model_slots: Some(1),
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    let submitted = (0..20).map(|i| {
        let swarm = &swarm;
        async move {
            swarm
                .submit(
                    0,
                    "reply",
                    SUBJECTS[i % SUBJECTS.len()],
                    json!({"platforms": ["x"], "in_reply_to": format!("post-b{i}")}),
                )
                .await
        }
    });
    let goals: Vec<uuid::Uuid> = futures::future::join_all(submitted)
        .await
        .into_iter()
        .map(|g| g.0)
        .collect();
    let metas: Vec<Value> = eventually(Duration::from_secs(900), "every goal planned", || {
        let pool = swarm.db.pool.clone();
        let goals = goals.clone();
        async move {
            let metas: Vec<Value> = sqlx::query_scalar(
                "select plan_meta from goals where id = any($1) and plan_meta is not null",
            )
            .bind(&goals)
            .fetch_all(&pool)
            .await
            .map_err(|e| e.to_string())?;
            if metas.len() == goals.len() {
                Ok(metas)
            } else {
                Err(format!("{} of {} planned", metas.len(), goals.len()))
            }
        }
    })
    .await;
    let templates: Vec<&Value> = metas.iter().filter(|m| m["planner"] != "model").collect();
    assert!(templates.is_empty(), "planned by templates: {templates:?}");
    let deferred: i64 = sqlx::query_scalar(
        "select count(*) from outbox where goal_id = any($1) and dedup_key like 'goal:%:model-busy:%'",
    )
    .bind(&goals)
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    eprintln!("20 goals planned by the model; {deferred} deferrals while it was busy");
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reply_that_copies_what_the_agent_said_before_goes_back_to_the_drafter() {
    let swarm = Swarm::new(SwarmOptions::default()).await;
    let said =
        "Twelve hours of folding, one evening of light: our spring lanterns are in the shop.";
    let mut decisions = Vec::new();
    for text in [
        "Thank you! Twelve hours of folding, one evening of light, that is our spring.",
        "Thank you for the kind words! The blue ones took us the longest this year.",
    ] {
        let (task, result) = crate::judge::reply_and_result(&swarm, 0.99, text).await;
        // The plan recalled what the agent said before into the task, as the planner does.
        sqlx::query("update tasks set inputs = jsonb_set(inputs, '{memories}', $2) where id = $1")
            .bind(task.id.0)
            .bind(json!([said]))
            .execute(&swarm.db.pool)
            .await
            .unwrap();
        let body = chimera_core::envelope::encode(&chimera_core::envelope::ResultMessage::Inline {
            result,
        });
        assert!(crate::judge::judge(&swarm, &[body]).await.is_empty());
        let (action, why): (String, String) = sqlx::query_as(
            "select action, coalesce(reasoning, '') from audit_log
             where task_id = $1 and action like 'judge.%' order by id desc limit 1",
        )
        .bind(task.id.0)
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap();
        decisions.push((action, why));
    }
    let (copied, fresh) = (&decisions[0], &decisions[1]);
    assert_eq!(copied.0, "judge.retry", "{}", copied.1);
    assert!(
        copied.1.contains(
            "copies what the agent posted before: \"twelve hours of folding one evening of\""
        ),
        "{}",
        copied.1
    );
    assert!(!fresh.1.contains("copies"), "{}", fresh.1);
}
