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
