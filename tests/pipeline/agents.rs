//! Agents as documents over the API: onboarding from SOUL.md and AGENTS.md, and refusals that
//! name the document, line and field and store nothing.

use chimera_core::documents::content_hash;
use chimera_core::domain::{AgentId, TenantId};
use chimera_tests::swarm::{Swarm, SwarmOptions};
use reqwest::Method;
use serde_json::{Value, json};

use crate::hitl::{call, operator};

const EXAMPLES: [(&str, &str, &str, &str); 3] = [
    (
        "nova",
        "Nova of the lantern workshop",
        include_str!("../../examples/agents/nova/SOUL.md"),
        include_str!("../../examples/agents/nova/AGENTS.md"),
    ),
    (
        "rex",
        "Rex, tea importer",
        include_str!("../../examples/agents/rex/SOUL.md"),
        include_str!("../../examples/agents/rex/AGENTS.md"),
    ),
    (
        "ivy",
        "Ivy from the bank's education team",
        include_str!("../../examples/agents/ivy/SOUL.md"),
        include_str!("../../examples/agents/ivy/AGENTS.md"),
    ),
];

async fn agents_of(swarm: &Swarm, tenant: TenantId) -> i64 {
    sqlx::query_scalar("select count(*) from agents where tenant_id = $1")
        .bind(tenant.0)
        .fetch_one(&swarm.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_are_onboarded_from_their_documents_and_their_goals_use_them() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let token = operator(&swarm);
    let mut ids = Vec::new();
    for (handle, display_name, soul, agents) in EXAMPLES {
        let (status, body) = call(
            &swarm,
            Method::POST,
            "/agents",
            Some(&token),
            Some(json!({"handle": handle, "display_name": display_name,
                        "platforms": ["x", "instagram"], "soul_md": soul, "agents_md": agents})),
        )
        .await;
        assert_eq!(status, 201, "{handle}: {body}");
        assert_eq!(body["persona_sha256"], content_hash(soul));
        assert_eq!(body["policy_sha256"], content_hash(agents));
        ids.push(body["agent_id"].as_str().unwrap().to_owned());
    }
    let (status, nova) = call(
        &swarm,
        Method::GET,
        &format!("/agents/{}", ids[0]),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{nova}");
    assert_eq!(nova["handle"], "nova");
    assert_eq!(nova["display_name"], "Nova of the lantern workshop");
    assert_eq!(nova["status"], "active");
    assert_eq!(nova["soul_md"], EXAMPLES[0].2);
    assert_eq!(nova["agents_md"], EXAMPLES[0].3);
    assert_eq!(nova["persona"]["voice"], "warm and curious");
    assert_eq!(nova["policy"]["quotas"]["instagram"]["posts_per_day"], 5);
    assert_eq!(
        (
            nova["persona_version"].clone(),
            nova["policy_version"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(
        nova["policy_versions"][0]["sha256"],
        content_hash(EXAMPLES[0].3)
    );
    assert_eq!(nova["policy_versions"][0]["created_by"], "otto");
    let (status, rex) = call(
        &swarm,
        Method::GET,
        &format!("/agents/{}", ids[1]),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(rex["policy"]["max_attempts"], 4);

    // The same handle again: 409, nothing stored. Another tenant does not see the agent.
    let (status, body) = call(
        &swarm,
        Method::POST,
        "/agents",
        Some(&token),
        Some(
            json!({"handle": "nova", "display_name": "Nova again", "platforms": ["x"],
                    "soul_md": EXAMPLES[0].2, "agents_md": EXAMPLES[0].3}),
        ),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let stranger = swarm.token_for(TenantId::random(), "op", &["operator"]);
    let (status, _) = call(
        &swarm,
        Method::GET,
        &format!("/agents/{}", ids[0]),
        Some(&stranger),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Nova's goal is planned with her persona and her policy's disclosure.
    swarm.agents.push(AgentId(ids[0].parse().unwrap()));
    let nova_index = swarm.agents.len() - 1;
    let goal = swarm
        .submit(
            nova_index,
            "reply",
            "thank the reader for the photo of our lantern",
            json!({"platforms": ["x"], "in_reply_to": "post-1"}),
        )
        .await;
    swarm
        .settle(&[goal], std::time::Duration::from_secs(90))
        .await;
    let (persona, disclosure): (Value, Option<String>) = sqlx::query_as(
        "select inputs -> 'persona', inputs ->> 'disclosure_level' from tasks
         where goal_id = $1 and kind = 'reply'",
    )
    .bind(goal.0)
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    assert_eq!(persona["name"], "Nova");
    assert_eq!(persona["voice"], "warm and curious");
    assert_eq!(disclosure.as_deref(), Some("automated"));
    // The plan, the review and the audit records name the versions they used.
    let view = swarm.view(goal).await;
    assert_eq!(
        view["plan"]["documents"],
        json!({"persona_version": 1, "persona_sha256": content_hash(EXAMPLES[0].2),
               "policy_version": 1, "policy_sha256": content_hash(EXAMPLES[0].3)}),
        "{view}"
    );
    let versions: Vec<Option<i32>> = sqlx::query_scalar(
        "select policy_version from audit_log where goal_id = $1 and action like 'judge.%'",
    )
    .bind(goal.0)
    .fetch_all(&swarm.db.pool)
    .await
    .unwrap();
    assert!(
        !versions.is_empty() && versions.iter().all(|v| *v == Some(1)),
        "{versions:?}"
    );
    let reviewed: Vec<i32> = sqlx::query_scalar(
        "select v.policy_version from reviews v join tasks t on t.id = v.task_id where t.goal_id = $1",
    )
    .bind(goal.0)
    .fetch_all(&swarm.db.pool)
    .await
    .unwrap();
    assert!(
        !reviewed.is_empty() && reviewed.iter().all(|v| *v == 1),
        "{reviewed:?}"
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_documents_are_refused_naming_the_field_and_nothing_is_stored() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let token = operator(&swarm);
    let before = agents_of(&swarm, swarm.tenant).await;
    let soul = EXAMPLES[0].2;
    let cases: [(&str, &str, &str, Option<u64>, &str); 5] = [
        (
            soul,
            "---\nmax_attempts: 3\nbanned_phrases: a: b\n---\n",
            "AGENTS.md",
            Some(3),
            "",
        ),
        (
            soul,
            "---\nmax_attempts: 3\nquota:\n  x: {posts_per_day: 3}\n---\n",
            "AGENTS.md",
            Some(3),
            "",
        ),
        (
            soul,
            "---\nauto_approve_above: 0.6\nreview_at_or_above: 0.8\n---\n",
            "AGENTS.md",
            Some(3),
            "review_at_or_above",
        ),
        (
            soul,
            "---\nquotas:\n  x:\n    posts_per_day: -1\n---\n",
            "AGENTS.md",
            Some(4),
            "quotas.x.posts_per_day",
        ),
        (
            "---\nname: Nova\nvoice: warm\nmood: bright\n---\n",
            EXAMPLES[0].3,
            "SOUL.md",
            Some(4),
            "",
        ),
    ];
    for (soul, agents, document, line, field) in cases {
        let (status, body) = call(
            &swarm,
            Method::POST,
            "/agents",
            Some(&token),
            Some(
                json!({"handle": "broken", "display_name": "Broken", "platforms": ["x"],
                        "soul_md": soul, "agents_md": agents}),
            ),
        )
        .await;
        assert_eq!(status, 422, "{agents}: {body}");
        let error = &body["error"];
        assert_eq!(error["code"], "invalid_document", "{body}");
        assert_eq!(error["document"], document, "{body}");
        assert_eq!(error["line"].as_u64(), line, "{body}");
        if !field.is_empty() {
            assert_eq!(error["field"], field, "{body}");
        }
        assert!(
            error["message"].as_str().unwrap().contains(document),
            "{body}"
        );
    }
    // Requests that are not documents: 400.
    for (patch, what) in [
        (json!({"handle": "Not A Handle"}), "handle"),
        (json!({"platforms": ["x", "x"]}), "platforms"),
        (json!({"platforms": ["myspace"]}), "platforms"),
        (json!({"display_name": ""}), "display_name"),
        (json!({"extra": true}), "unknown field"),
    ] {
        let mut body = json!({"handle": "fine", "display_name": "Fine", "platforms": ["x"],
                              "soul_md": soul, "agents_md": EXAMPLES[0].3});
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) =
            call(&swarm, Method::POST, "/agents", Some(&token), Some(body)).await;
        assert_eq!(status, 400, "{patch}: {answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(what),
            "{patch}: {answer}"
        );
    }
    // A reviewer may not onboard agents.
    let reviewer = swarm.token("rita", &["reviewer"]);
    let (status, _) = call(
        &swarm,
        Method::POST,
        "/agents",
        Some(&reviewer),
        Some(
            json!({"handle": "fine", "display_name": "Fine", "platforms": ["x"],
                    "soul_md": soul, "agents_md": EXAMPLES[0].3}),
        ),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(agents_of(&swarm, swarm.tenant).await, before);
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documents_get_new_versions_and_a_paused_agent_takes_no_new_work_until_resumed() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let token = operator(&swarm);
    let (status, created) = call(
        &swarm,
        Method::POST,
        "/agents",
        Some(&token),
        Some(
            json!({"handle": "rex", "display_name": "Rex, tea importer", "platforms": ["x"],
                    "soul_md": EXAMPLES[1].2, "agents_md": EXAMPLES[1].3}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let rex = created["agent_id"].as_str().unwrap().to_owned();

    // A new policy version; an edit made from an older version is refused with the current one.
    let stricter = EXAMPLES[1].3.replace("max_attempts: 4", "max_attempts: 2");
    let (status, body) = call(
        &swarm,
        Method::PUT,
        &format!("/agents/{rex}/policy"),
        Some(&token),
        Some(json!({"document": stricter, "base_version": 1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(body["sha256"], content_hash(&stricter));
    let (status, body) = call(
        &swarm,
        Method::PUT,
        &format!("/agents/{rex}/policy"),
        Some(&token),
        Some(json!({"document": EXAMPLES[1].3, "base_version": 1})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("current version is 2")
    );
    let (status, body) = call(
        &swarm,
        Method::PUT,
        &format!("/agents/{rex}/persona"),
        Some(&token),
        Some(json!({"document": "---\nname: Rex\n---\n"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (_, view) = call(
        &swarm,
        Method::GET,
        &format!("/agents/{rex}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(view["policy_version"], 2);
    assert_eq!(view["policy"]["version"], 2);
    assert_eq!(view["policy"]["max_attempts"], 2);
    assert_eq!(view["agents_md"], stricter.as_str());
    assert_eq!(view["policy_versions"].as_array().unwrap().len(), 2);
    assert_eq!(view["persona_version"], 1);

    // The list: by name, by status.
    let (_, page) = call(
        &swarm,
        Method::GET,
        "/agents?search=TEA",
        Some(&token),
        None,
    )
    .await;
    let handles: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["handle"].as_str().unwrap())
        .collect();
    assert_eq!(handles, ["rex"]);
    let (status, _) = call(
        &swarm,
        Method::GET,
        "/agents?status=sleeping",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 400);

    // Paused: a new goal is refused; a goal that got in waits unplanned; resumed, it runs.
    let (status, body) = call(
        &swarm,
        Method::POST,
        &format!("/agents/{rex}/pause"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (status, body["changed"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let (_, page) = call(
        &swarm,
        Method::GET,
        "/agents?status=paused",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (status, body) = call(
        &swarm,
        Method::POST,
        "/goals",
        Some(&token),
        Some(
            json!({"agent_id": rex, "kind": "reply", "text": "thank them for the tea photo",
                    "constraints": {"platforms": ["x"], "in_reply_to": "post-7"}}),
        ),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("paused")
    );
    // A goal let in just before the pause committed: stored, announced, left waiting.
    let agent = AgentId(rex.parse().unwrap());
    let goal = chimera_core::domain::GoalId::random();
    sqlx::query(
        "insert into goals (id, tenant_id, agent_id, kind, body, constraints)
         values ($1, $2, $3, 'reply', 'thank them for the tea photo',
                 '{\"platforms\": [\"x\"], \"in_reply_to\": \"post-8\"}')",
    )
    .bind(goal.0)
    .bind(swarm.tenant.0)
    .bind(agent.0)
    .execute(&swarm.db.pool)
    .await
    .unwrap();
    let handled = swarm
        .running()
        .counts(chimera_core::names::Queue::Goal)
        .received;
    swarm
        .send_raw(
            chimera_core::names::Queue::Goal,
            &chimera_core::envelope::encode(&chimera_core::envelope::PlannerMessage::Goal {
                goal_id: goal,
            }),
        )
        .await;
    chimera_tests::eventually(
        std::time::Duration::from_secs(30),
        "the planner handled the goal",
        || async {
            let now = swarm
                .running()
                .counts(chimera_core::names::Queue::Goal)
                .received;
            (now > handled).then_some(()).ok_or(format!("{now}"))
        },
    )
    .await;
    let (status, tasks): (String, i64) = sqlx::query_as(
        "select g.status::text, (select count(*) from tasks t where t.goal_id = g.id)
         from goals g where g.id = $1",
    )
    .bind(goal.0)
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), tasks), ("received", 0));
    let (status, body) = call(
        &swarm,
        Method::POST,
        &format!("/agents/{rex}/resume"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["goals_resumed"], 1);
    let settled = swarm
        .settle(&[goal], std::time::Duration::from_secs(90))
        .await;
    assert_ne!(settled[0], "received");
    let audited: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where tenant_id = $1 and action like 'agent.%' order by id",
    )
    .bind(swarm.tenant.0)
    .fetch_all(&swarm.db.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        ["agent.policy_updated", "agent.paused", "agent.resumed"]
    );
    swarm.stop().await;
}

/// One call with an `Idempotency-Key`.
async fn call_with_key(
    swarm: &Swarm,
    path: &str,
    token: &str,
    key: &str,
    body: Value,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", swarm.api()))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_is_opened_topped_up_once_per_key_and_its_ledger_read_by_page() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let token = operator(&swarm);
    let (_, created) = call(
        &swarm,
        Method::POST,
        "/agents",
        Some(&token),
        Some(
            json!({"handle": "ivy", "display_name": "Ivy", "platforms": ["x"],
                    "soul_md": EXAMPLES[2].2, "agents_md": EXAMPLES[2].3}),
        ),
    )
    .await;
    let ivy = created["agent_id"].as_str().unwrap().to_owned();
    let budget = format!("/agents/{ivy}/budget");
    let open = json!({"currency": "USD", "balance_cents": 1000});
    // Money is the tenant admin's: an operator can neither open a budget nor top one up.
    let (status, body) = call(
        &swarm,
        Method::PUT,
        &budget,
        Some(&token),
        Some(open.clone()),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call_with_key(
        &swarm,
        &format!("/agents/{ivy}/budget/top-ups"),
        &token,
        "op-1",
        json!({"amount_cents": 500}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let token = swarm.token("ada", &["admin"]);
    let (status, body) = call(
        &swarm,
        Method::PUT,
        &budget,
        Some(&token),
        Some(open.clone()),
    )
    .await;
    assert_eq!(
        (status, body["balance_cents"].clone()),
        (201, json!(1000)),
        "{body}"
    );
    let (status, _) = call(&swarm, Method::PUT, &budget, Some(&token), Some(open)).await;
    assert_eq!(status, 409);

    let top_ups = format!("/agents/{ivy}/budget/top-ups");
    let add = json!({"amount_cents": 500, "memo": "november"});
    let (status, body) = call_with_key(&swarm, &top_ups, &token, "nov-1", add.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"balance_cents": 1500, "balance_micros": 15_000_000, "duplicate": false})
    );
    let (status, body) = call_with_key(&swarm, &top_ups, &token, "nov-1", add.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"balance_cents": 1500, "balance_micros": 15_000_000, "duplicate": true})
    );
    let audited: Vec<(String, String)> = sqlx::query_as(
        "select actor, reasoning from audit_log where action = 'budget.topped_up' and tenant_id = $1",
    )
    .bind(swarm.tenant.0)
    .fetch_all(&swarm.db.pool)
    .await
    .unwrap();
    assert_eq!(audited.len(), 1, "once per key: {audited:?}");
    assert_eq!(audited[0].0, "ada");
    assert!(
        audited[0].1.contains("500 cents added (november)"),
        "{audited:?}"
    );
    let (status, _) = call_with_key(
        &swarm,
        &top_ups,
        &token,
        "nov-1",
        json!({"amount_cents": 600}),
    )
    .await;
    assert_eq!(status, 409);
    let (status, body) = call(
        &swarm,
        Method::POST,
        &top_ups,
        Some(&token),
        Some(add.clone()),
    )
    .await;
    assert_eq!(status, 400, "no key: {body}");
    let (status, body) = call_with_key(&swarm, &top_ups, &token, "nov\t2", add.clone()).await;
    assert_eq!(status, 400, "a control character: {body}");
    for bad in [
        json!({"amount_cents": 0}),
        json!({"amount_cents": -5}),
        json!([500, "an array reads as the fields of the struct"]),
    ] {
        let (status, body) = call_with_key(&swarm, &top_ups, &token, "nov-3", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (_, view) = call(
        &swarm,
        Method::GET,
        &format!("/agents/{ivy}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (&view["balance_cents"], &view["balance_micros"]),
        (&json!(1500), &json!(15_000_000))
    );

    // The ledger, newest first, by page and by category.
    let ledger = format!("/agents/{ivy}/ledger");
    let (status, page) = call(
        &swarm,
        Method::GET,
        &format!("{ledger}?limit=1"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["amount_micros"], 5_000_000);
    assert_eq!(page["items"][0]["memo"], "november");
    let before = page["next_before"].as_i64().unwrap();
    let (_, page) = call(
        &swarm,
        Method::GET,
        &format!("{ledger}?limit=1&before={before}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(page["items"][0]["memo"], "opening balance");
    let (_, page) = call(
        &swarm,
        Method::GET,
        &format!("{ledger}?category=inference"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(page["items"], json!([]));
    let (status, _) = call(
        &swarm,
        Method::GET,
        &format!("{ledger}?category=fees"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let stranger = swarm.token_for(TenantId::random(), "ad", &["admin"]);
    let (status, _) = call(&swarm, Method::GET, &ledger, Some(&stranger), None).await;
    assert_eq!(status, 404);
    let (status, _) = call_with_key(&swarm, &top_ups, &stranger, "nov-9", add).await;
    assert_eq!(status, 404);
    // The longest key the API takes (200 characters) works like any other.
    let long = "k".repeat(200);
    let (status, body) =
        call_with_key(&swarm, &top_ups, &token, &long, json!({"amount_cents": 1})).await;
    assert_eq!(
        (status, body["duplicate"].clone()),
        (200, json!(false)),
        "{body}"
    );
    let (status, body) =
        call_with_key(&swarm, &top_ups, &token, &long, json!({"amount_cents": 1})).await;
    assert_eq!(
        (status, body["duplicate"].clone()),
        (200, json!(true)),
        "{body}"
    );
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_platform_admin_creates_tenants_whose_admins_and_operators_see_only_their_own() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let admin = swarm.token("pat", &["platform_admin"]);
    // A tenant's admin creates no tenant, and lists only its own.
    let tenant_admin = swarm.token("ada", &["admin"]);
    let (status, _) = call(
        &swarm,
        Method::POST,
        "/tenants",
        Some(&tenant_admin),
        Some(json!({"name": "mine"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, own) = call(
        &swarm,
        Method::GET,
        "/tenants?limit=200",
        Some(&tenant_admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{own}");
    let ids: Vec<&str> = own
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![swarm.tenant.0.to_string()], "{own}");
    let name = format!("acme-{}", uuid::Uuid::new_v4());
    let (status, body) = call(
        &swarm,
        Method::POST,
        "/tenants",
        Some(&admin),
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let acme = TenantId(body["tenant_id"].as_str().unwrap().parse().unwrap());
    let (status, _) = call(
        &swarm,
        Method::POST,
        "/tenants",
        Some(&admin),
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = call(
        &swarm,
        Method::POST,
        "/tenants",
        Some(&operator(&swarm)),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, list) = call(
        &swarm,
        Method::GET,
        "/tenants?limit=200",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == name.as_str()),
        "{list}"
    );

    // Acme's operator onboards nova; the swarm's tenant does not see her, Acme does.
    let acme_op = swarm.token_for(acme, "wile", &["operator"]);
    let (status, body) = call(
        &swarm,
        Method::POST,
        "/agents",
        Some(&acme_op),
        Some(
            json!({"handle": "nova", "display_name": "Nova", "platforms": ["x"],
                    "soul_md": EXAMPLES[0].2, "agents_md": EXAMPLES[0].3}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, mine) = call(
        &swarm,
        Method::GET,
        "/agents?search=nova",
        Some(&acme_op),
        None,
    )
    .await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    let (_, theirs) = call(
        &swarm,
        Method::GET,
        "/agents?search=nova",
        Some(&operator(&swarm)),
        None,
    )
    .await;
    assert_eq!(theirs["items"], json!([]));
    // A URI too long for the API: 414 with the usual JSON error.
    let (status, body) = call(
        &swarm,
        Method::GET,
        &format!("/agents?search={}", "a".repeat(9000)),
        Some(&acme_op),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (414, Some("uri_too_long")),
        "{body}"
    );
    // One too long even for the HTTP parser (over 64 KiB): the same answer.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = swarm.api().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "GET /agents?search={} HTTP/1.1\r\nhost: {address}\r\n\r\n",
        "a".repeat(100_000)
    );
    // The server stops reading at its limit: the rest may not be taken.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.write_all(request.as_bytes()),
    )
    .await
    .expect("written in time");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("answered in time");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(answer.contains(r#""code":"uri_too_long""#), "{answer}");
    swarm.stop().await;
}
