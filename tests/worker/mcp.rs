use chimera_core::domain::TaskKind;
use chimera_mcp::{McpClient, ToolError, allowed_tools};
use chimera_tests::TestDb;
use chimera_tests::world::{HttpWorld, calls, stdio_config};
use serde_json::json;

/// What every transport must do: list the tools, call them, refuse what is not allowed, time
/// out a hung tool and keep working afterwards.
async fn exercise(client: &McpClient, db: &TestDb) {
    let tools = client.tools().await.unwrap();
    for tool in [
        "trends.search",
        "content.draft",
        "media.render_image",
        "social.publish",
        "social.reply",
        "wallet.balance",
        "wallet.transfer",
        "debug.wait",
    ] {
        assert_eq!(
            tools.get(tool).map(String::as_str),
            Some("world"),
            "{tool} listed"
        );
    }

    let found = client
        .call(
            &allowed_tools(TaskKind::Research),
            "trends.search",
            json!({"query": "solar energy"}),
        )
        .await
        .unwrap();
    assert!(
        found.server_version.starts_with("chimera-world "),
        "{}",
        found.server_version
    );
    let items: serde_json::Value = found.parse().unwrap();
    assert_eq!(items["items"][0]["id"], "solar-balcony");

    let image = client
        .call(
            &allowed_tools(TaskKind::RenderMedia),
            "media.render_image",
            json!({"prompt": "a fox", "width": 64, "height": 32}),
        )
        .await
        .unwrap();
    let (png, media_type) = image.image().unwrap();
    assert_eq!(media_type, "image/png");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));

    // A draft task may not publish: refused before anything reaches the server.
    let before = calls(&db.pool, "social.publish").await;
    let refused = client
        .call(
            &allowed_tools(TaskKind::Draft),
            "social.publish",
            json!({"platform": "x", "text": "hi", "idempotency_key": "k"}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ToolError::NotAllowed { .. }),
        "{refused:?}"
    );
    assert!(!refused.is_retryable());
    assert_eq!(
        calls(&db.pool, "social.publish").await,
        before,
        "nothing was sent"
    );

    // A hung tool times out (the configured timeout is 500 ms), retryably.
    let hung = client
        .call(&["debug.wait"], "debug.wait", json!({"millis": 30_000}))
        .await
        .unwrap_err();
    assert!(matches!(hung, ToolError::Timeout { .. }), "{hung:?}");
    assert!(hung.is_retryable());
    // The session is still usable.
    client
        .call(
            &allowed_tools(TaskKind::Transact),
            "wallet.balance",
            json!({"account": "nova"}),
        )
        .await
        .unwrap();

    // Arguments the server refuses (a protocol error): not retryable.
    let invalid = client
        .call(
            &allowed_tools(TaskKind::RenderMedia),
            "media.render_image",
            json!({"prompt": "huge", "width": 50_000}),
        )
        .await
        .unwrap_err();
    assert!(matches!(invalid, ToolError::Rejected { .. }), "{invalid:?}");
    assert!(!invalid.is_retryable());
    // A failure the tool describes keeps its code and retryability.
    let broke = client
        .call(
            &allowed_tools(TaskKind::Execute),
            "wallet.transfer",
            json!({"from": "nova", "to": "shop", "amount_cents": 999_999_999, "idempotency_key": "too-much"}),
        )
        .await
        .unwrap_err();
    let ToolError::Failed {
        code, retryable, ..
    } = &broke
    else {
        panic!("{broke:?}")
    };
    assert_eq!((code.as_str(), *retryable), ("insufficient_funds", false));
}

#[tokio::test]
async fn the_client_uses_the_world_server_over_stdio() {
    let db = TestDb::migrated().await;
    let client = McpClient::new(stdio_config(&db.url(), true, r#"{"call_timeout_ms": 500}"#));
    exercise(&client, &db).await;
    client.shutdown().await;
    db.drop_db().await;
}

#[tokio::test]
async fn the_client_uses_the_world_server_over_streamable_http() {
    let db = TestDb::migrated().await;
    let world = HttpWorld::start(&db.url(), true).await;
    let client = McpClient::new(world.config(r#"{"call_timeout_ms": 500}"#));
    exercise(&client, &db).await;
    client.shutdown().await;
    world.stop().await;
    db.drop_db().await;
}

/// A tool call made for a task tells the server whom it works for (`_meta`): the server's JSON
/// log line of the call names the goal, task and agent and the goal's trace.
#[tokio::test]
async fn the_server_logs_each_call_with_its_goal_and_trace() {
    let db = TestDb::migrated().await;
    let path = std::env::temp_dir().join(format!("world-{}.log", uuid::Uuid::new_v4()));
    let world = HttpWorld::start_logging(&db.url(), std::fs::File::create(&path).unwrap()).await;
    let client = McpClient::new(world.config(""));
    let goal = uuid::Uuid::now_v7();
    let (task, agent) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let trace = chimera_core::trace::TraceContext::for_goal(goal);
    let context = chimera_mcp::CallContext {
        traceparent: trace.traceparent(),
        goal_id: goal.to_string(),
        task_id: task.to_string(),
        agent_id: agent.to_string(),
    };
    chimera_mcp::within(
        context,
        client.call(
            &allowed_tools(TaskKind::Research),
            "trends.search",
            json!({"query": "tea"}),
        ),
    )
    .await
    .expect("trends.search");
    let line = chimera_tests::eventually(
        std::time::Duration::from_secs(10),
        "the server's log line of the call",
        || {
            let path = path.clone();
            async move {
                std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(|l| l["message"] == "tool call" && l["tool"] == "trends.search")
                    .ok_or_else(|| "not yet".to_owned())
            }
        },
    )
    .await;
    assert_eq!(line["goal_id"], goal.to_string(), "{line}");
    assert_eq!(line["task_id"], task.to_string(), "{line}");
    assert_eq!(line["agent_id"], agent.to_string(), "{line}");
    assert_eq!(line["trace_id"], trace.trace_id(), "{line}");
    assert_eq!(line["parent_span_id"], trace.span_id(), "{line}");
    client.shutdown().await;
    world.stop().await;
    let _ = std::fs::remove_file(&path);
    db.drop_db().await;
}

#[tokio::test]
async fn a_dead_session_is_opened_again() {
    let db = TestDb::migrated().await;
    let client = McpClient::new(stdio_config(&db.url(), true, ""));
    let research = allowed_tools(TaskKind::Research);
    let search = || client.call(&research, "trends.search", json!({"query": "night trains"}));
    search().await.unwrap();
    // The server process dies under the session.
    let crashed = client
        .call(&["debug.crash"], "debug.crash", json!({}))
        .await
        .unwrap_err();
    assert!(crashed.is_retryable(), "{crashed:?}");
    // The next call finds the session dead and opens a new one (a call that raced the
    // session's closing may fail once, retryably).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut failures = 0;
    loop {
        match search().await {
            Ok(_) => break,
            Err(err) => {
                assert!(err.is_retryable(), "{err:?}");
                failures += 1;
                assert!(
                    std::time::Instant::now() < deadline,
                    "no new session: {err:?}"
                );
            }
        }
    }
    assert!(
        failures <= 1,
        "{failures} failures before the session was opened again"
    );
    assert_eq!(calls(&db.pool, "trends.search").await, 2);
    client.shutdown().await;
    db.drop_db().await;
}

#[tokio::test]
async fn tool_output_is_untrusted_bounded_and_validated() {
    let db = TestDb::migrated().await;
    let client = McpClient::new(stdio_config(
        &db.url(),
        true,
        r#"{"max_output_bytes": 10000}"#,
    ));
    let echo: &'static [&'static str] = &["debug.echo"];

    let big = client
        .call(
            echo,
            "debug.echo",
            json!({"payload": "x".repeat(100), "repeat": 500}),
        )
        .await
        .unwrap_err();
    assert!(matches!(big, ToolError::OutputTooLarge { .. }), "{big:?}");
    assert!(!big.is_retryable());

    // Text where structured content is expected: unusable for a typed caller.
    let garbage = client
        .call(
            echo,
            "debug.echo",
            json!({"payload": null, "as_text": "}{ not json"}),
        )
        .await
        .unwrap();
    #[derive(serde::Deserialize, Debug)]
    struct Expected {
        #[allow(dead_code)]
        items: Vec<String>,
    }
    let err = garbage.parse::<Expected>().unwrap_err();
    assert!(matches!(err, ToolError::InvalidOutput { .. }), "{err:?}");
    // Structured content of the wrong shape, likewise.
    let wrong = client
        .call(echo, "debug.echo", json!({"payload": {"items": 3}}))
        .await
        .unwrap();
    assert!(matches!(
        wrong.parse::<Expected>(),
        Err(ToolError::InvalidOutput { .. })
    ));

    // A tool no server offers.
    let unknown = client
        .call(&["nowhere.tool"], "nowhere.tool", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(unknown, ToolError::UnknownTool(_)), "{unknown:?}");

    // A server that cannot start is unavailable, retryably.
    let broken = McpClient::new(
        chimera_mcp::McpConfig::parse(
            r#"{"servers": {"gone": {"transport": "stdio", "command": "/nonexistent/mcp-server"}}}"#,
        )
        .unwrap(),
    );
    let err = broken
        .call(
            &allowed_tools(TaskKind::Research),
            "trends.search",
            json!({"query": "x"}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    client.shutdown().await;
    db.drop_db().await;
}
