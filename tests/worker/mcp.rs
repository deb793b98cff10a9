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
            allowed_tools(TaskKind::Research),
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
            allowed_tools(TaskKind::RenderMedia),
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
            allowed_tools(TaskKind::Draft),
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
            allowed_tools(TaskKind::Transact),
            "wallet.balance",
            json!({"account": "nova"}),
        )
        .await
        .unwrap();

    // Arguments the server refuses (a protocol error): not retryable.
    let invalid = client
        .call(
            allowed_tools(TaskKind::RenderMedia),
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
            allowed_tools(TaskKind::Execute),
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

#[tokio::test]
async fn a_dead_session_is_opened_again() {
    let db = TestDb::migrated().await;
    let client = McpClient::new(stdio_config(&db.url(), true, ""));
    let search = || {
        client.call(
            allowed_tools(TaskKind::Research),
            "trends.search",
            json!({"query": "night trains"}),
        )
    };
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
            allowed_tools(TaskKind::Research),
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
