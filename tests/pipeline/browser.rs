//! Mission Control in headless Chromium: a reviewer signs in with a token, opens a held reply
//! from the queue, approves it, and the reply is published in the world once.

use std::time::Duration;

use chimera_tests::eventually;
use chimera_tests::swarm::{Swarm, SwarmOptions};
use chimera_tests::webdriver::{Driver, locate};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reviewer_approves_a_held_reply_in_mission_control() {
    let (chromedriver, chromium) = locate().expect(
        "chromium and chromedriver are needed for this test: `scripts/stack browser` installs them",
    );
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let goal = swarm
        .submit(
            0,
            "reply",
            "thanks for the kind words",
            json!({"platforms": ["x"], "in_reply_to": "post-ui", "simulated_quality": 0.80}),
        )
        .await;
    swarm.settle(&[goal], Duration::from_secs(90)).await;
    let review: uuid::Uuid = sqlx::query_scalar(
        "select v.id from reviews v join tasks t on t.id = v.task_id
         where t.goal_id = $1 and v.status = 'pending'",
    )
    .bind(goal.0)
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();

    let driver = Driver::start(&chromedriver, &chromium)
        .await
        .expect("starting headless Chromium");
    let outcome = drive(&driver, &swarm, review).await;
    if outcome.is_err()
        && let Ok(png) = driver.screenshot_png().await
    {
        let path = std::env::temp_dir().join(format!("mission-control-{review}.png"));
        let _ = std::fs::write(&path, png);
        eprintln!("screenshot of the failure: {}", path.display());
    }
    driver.quit().await;
    outcome.expect("driving Mission Control");

    // The effect was released: one reply under this approval, and the goal completes.
    eventually(
        Duration::from_secs(60),
        "the approved reply published",
        || async {
            let posts: i64 =
                sqlx::query_scalar("select count(*) from world.posts where idempotency_key = $1")
                    .bind(format!("approval:{review}"))
                    .fetch_one(&swarm.db.pool)
                    .await
                    .unwrap();
            if posts == 1 {
                Ok(())
            } else {
                Err(format!("{posts} posts"))
            }
        },
    )
    .await;
    assert_eq!(
        swarm.settle(&[goal], Duration::from_secs(60)).await,
        ["completed"]
    );
    let actor: String = sqlx::query_scalar(
        "select actor from audit_log where review_id = $1 and action = 'review.approve'",
    )
    .bind(review)
    .fetch_one(&swarm.db.pool)
    .await
    .unwrap();
    assert_eq!(actor, "ui-reviewer");
    swarm.stop().await;
}

async fn drive(driver: &Driver, swarm: &Swarm, review: uuid::Uuid) -> anyhow::Result<()> {
    let idle = "return document.body.dataset.state !== 'busy'";
    driver.goto(&format!("{}/", swarm.api())).await?;
    driver.wait_until_js(idle, WAIT).await?;
    let token = swarm.token("ui-reviewer", &["reviewer"]);
    let field = driver.wait_for("#token", WAIT).await?;
    driver.send_keys(&field, &token).await?;
    driver.click(&driver.find("#login").await?).await?;
    driver
        .wait_until_js("return document.body.dataset.state === 'ready'", WAIT)
        .await?;
    let row = format!("#queue tr[data-review-id='{review}']");
    driver.wait_for(&row, WAIT).await?;
    // The queue names the agent, its id on hover.
    let agent = driver
        .text(&driver.find(&format!("{row} td.agent")).await?)
        .await?;
    anyhow::ensure!(agent == "agent0", "the queue's agent cell: {agent:?}");
    let who = driver.text(&driver.find("#whoami").await?).await?;
    anyhow::ensure!(who.contains("ui-reviewer"), "whoami shows {who:?}");
    driver
        .click(&driver.find(&format!("{row} button.open")).await?)
        .await?;
    driver
        .wait_for(&format!("#card[data-review-id='{review}']"), WAIT)
        .await?;
    driver.wait_until_js(idle, WAIT).await?;
    let reasoning = driver
        .text(
            &driver
                .find("#card-meta [data-field='judge_reasoning'] dd")
                .await?,
        )
        .await?;
    anyhow::ensure!(
        reasoning.contains("0.80"),
        "the card shows the judge's reasoning: {reasoning:?}"
    );
    driver.find("#proposal-action").await?;
    driver.click(&driver.find("#approve").await?).await?;
    driver
        .wait_until_js(
            "const s = document.querySelector('#status'); return s && s.dataset.code === 'approve'",
            WAIT,
        )
        .await?;
    // The queue reloads without the approved item.
    driver
        .wait_until_js(
            &format!("return document.body.dataset.state === 'ready' && !document.querySelector(\"{row}\")"),
            WAIT,
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_view_lists_agents_by_name_with_the_one_needing_attention_first() {
    let (chromedriver, chromium) = locate().expect(
        "chromium and chromedriver are needed for this test: `scripts/stack browser` installs them",
    );
    let mut swarm = Swarm::new(SwarmOptions {
        agents: 2,
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    // agent1 publishes a reply; agent0's waits for a person.
    let done = swarm
        .submit(
            1,
            "reply",
            "thanks for the kind words",
            json!({"platforms": ["x"], "in_reply_to": "post-fv1", "simulated_quality": 0.95}),
        )
        .await;
    let held = swarm
        .submit(
            0,
            "reply",
            "thanks for asking",
            json!({"platforms": ["x"], "in_reply_to": "post-fv0", "simulated_quality": 0.80}),
        )
        .await;
    swarm.settle(&[done, held], Duration::from_secs(90)).await;

    let driver = Driver::start(&chromedriver, &chromium)
        .await
        .expect("starting headless Chromium");
    let artifacts = chimera_tests::repo_root().join(".local/artifacts");
    let outcome = drive_fleet(&driver, &swarm, &artifacts).await;
    if outcome.is_err()
        && let Ok(png) = driver.screenshot_png().await
    {
        let _ = std::fs::create_dir_all(&artifacts);
        let _ = std::fs::write(artifacts.join("fleet-failure.png"), png);
    }
    driver.quit().await;
    outcome.expect("driving the fleet view");
    for name in ["fleet-1400.png", "fleet-390.png"] {
        let written = std::fs::metadata(artifacts.join(name)).map(|m| m.len());
        assert!(
            written.as_ref().is_ok_and(|n| *n > 1000),
            "{name}: {written:?}"
        );
    }
    swarm.stop().await;
}

async fn drive_fleet(
    driver: &Driver,
    swarm: &Swarm,
    artifacts: &std::path::Path,
) -> anyhow::Result<()> {
    driver.set_window_size(1400, 1000).await?;
    driver.goto(&format!("{}/", swarm.api())).await?;
    driver
        .wait_until_js("return document.body.dataset.state !== 'busy'", WAIT)
        .await?;
    let field = driver.wait_for("#token", WAIT).await?;
    driver
        .send_keys(&field, &swarm.token("ui-operator", &["operator"]))
        .await?;
    driver.click(&driver.find("#login").await?).await?;
    driver
        .wait_until_js("return document.body.dataset.state === 'ready'", WAIT)
        .await?;
    driver
        .wait_for("#fleet tbody tr[data-handle='agent1']", WAIT)
        .await?;
    // The agent whose reply waits is first, marked, and says why in words.
    driver
        .wait_until_js(
            "const first = document.querySelector('#fleet tbody tr');
             return first.dataset.handle === 'agent0' && first.classList.contains('attention')
                 && first.dataset.attention.split(' ').includes('held')",
            WAIT,
        )
        .await?;
    let why = driver
        .text(
            &driver
                .find("#fleet tr[data-handle='agent0'] td[data-field='attention']")
                .await?,
        )
        .await?;
    anyhow::ensure!(why.contains("items wait for review"), "attention: {why:?}");
    let other = driver
        .text(&driver.find("#fleet tr[data-handle='agent1']").await?)
        .await?;
    anyhow::ensure!(
        other.contains("agent1") && other.contains("x reply 1/8"),
        "agent1's row: {other:?}"
    );
    std::fs::create_dir_all(artifacts)?;
    std::fs::write(
        artifacts.join("fleet-1400.png"),
        driver.screenshot_png().await?,
    )?;
    // At phone width the page fits the screen: the table scrolls inside its panel.
    driver.set_window_size(390, 844).await?;
    driver
        .wait_until_js(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            WAIT,
        )
        .await?;
    std::fs::write(
        artifacts.join("fleet-390.png"),
        driver.screenshot_png().await?,
    )?;
    Ok(())
}
