//! Mission Control in headless Chromium: an operator sees a held reply but cannot decide it; a
//! reviewer opens it from the queue, approves it, and the reply is published in the world
//! once, and once in the page's Published view. The fleet view lists agents by name, those
//! needing a person first; a goal's view follows it live until it settles.

use std::time::Duration;

use chimera_tests::eventually;
use chimera_tests::swarm::{Swarm, SwarmOptions};
use chimera_tests::webdriver::{Driver, locate};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// Where the browser tests write their screenshots.
fn artifacts() -> std::path::PathBuf {
    chimera_tests::repo_root().join(".local/artifacts")
}

/// Runs `drive` in a fresh headless Chromium; if it fails, a screenshot of the page goes to
/// `<name>-failure.png` among the artifacts. The browser is closed either way.
async fn in_browser(name: &str, drive: impl AsyncFnOnce(&Driver) -> anyhow::Result<()>) {
    let (chromedriver, chromium) = locate().expect(
        "chromium and chromedriver are needed for this test: `scripts/stack browser` installs them",
    );
    let driver = Driver::start(&chromedriver, &chromium)
        .await
        .expect("starting headless Chromium");
    let outcome = drive(&driver).await;
    if outcome.is_err()
        && let Ok(png) = driver.screenshot_png().await
    {
        let path = artifacts().join(format!("{name}-failure.png"));
        let _ = std::fs::create_dir_all(artifacts());
        let _ = std::fs::write(&path, png);
        eprintln!("screenshot of the failure: {}", path.display());
    }
    driver.quit().await;
    outcome.unwrap_or_else(|err| panic!("driving {name}: {err:#}"));
}

/// Opens Mission Control and waits until the page has decided between signing in and ready.
async fn open(driver: &Driver, swarm: &Swarm) -> anyhow::Result<()> {
    driver.goto(&format!("{}/", swarm.api())).await?;
    driver
        .wait_until_js("return document.body.dataset.state !== 'busy'", WAIT)
        .await
}

/// Screenshots `<name>-1400.png` and, at phone width once nothing scrolls sideways (wide
/// tables scroll inside their panels), `<name>-390.png`.
async fn screenshots(driver: &Driver, name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(artifacts())?;
    std::fs::write(
        artifacts().join(format!("{name}-1400.png")),
        driver.screenshot_png().await?,
    )?;
    driver.set_window_size(390, 844).await?;
    driver
        .wait_until_js(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            WAIT,
        )
        .await?;
    std::fs::write(
        artifacts().join(format!("{name}-390.png")),
        driver.screenshot_png().await?,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reviewer_approves_a_held_reply_in_mission_control() {
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

    in_browser("mission-control", async |driver| {
        drive(driver, &swarm, review).await
    })
    .await;

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

/// Signs in with `token` and waits for the page to be ready.
async fn sign_in(driver: &Driver, token: &str) -> anyhow::Result<()> {
    let field = driver.wait_for("#token", WAIT).await?;
    driver.send_keys(&field, token).await?;
    driver.click(&driver.find("#login").await?).await?;
    driver
        .wait_until_js("return document.body.dataset.state === 'ready'", WAIT)
        .await
}

/// An operator reads the held item's card, and no decision is offered to them.
async fn operator_cannot_decide(
    driver: &Driver,
    swarm: &Swarm,
    review: uuid::Uuid,
) -> anyhow::Result<()> {
    sign_in(driver, &swarm.token("ui-operator", &["operator"])).await?;
    let row = format!("#queue tr[data-review-id='{review}']");
    driver.wait_for(&row, WAIT).await?;
    driver
        .click(&driver.find(&format!("{row} button.open")).await?)
        .await?;
    driver
        .wait_for(&format!("#card[data-review-id='{review}']"), WAIT)
        .await?;
    driver
        .wait_until_js("return document.body.dataset.state === 'ready'", WAIT)
        .await?;
    driver
        .wait_until_js(
            "const usable = (b) => !b.disabled && b.offsetParent !== null;
             return document.body.dataset.canDecide === 'false'
                 && ![...document.querySelectorAll('#card .decide button, #bulk-dry-run, #bulk-approve')].some(usable)
                 && ![...document.querySelectorAll('#queue input.select')].some((b) => !b.disabled)
                 && [...document.querySelectorAll('#card .role-note')].some((n) => n.offsetParent !== null)",
            WAIT,
        )
        .await?;
    // What approving would do is still shown, in words.
    let approves = driver.text(&driver.find("#approves-text").await?).await?;
    anyhow::ensure!(
        approves.contains("replies on x to post post-ui") && approves.lines().count() >= 2,
        "the card says what approving does: {approves:?}"
    );
    driver.click(&driver.find("#logout").await?).await?;
    driver
        .wait_until_js("return document.body.dataset.state === 'login'", WAIT)
        .await
}

async fn drive(driver: &Driver, swarm: &Swarm, review: uuid::Uuid) -> anyhow::Result<()> {
    let idle = "return document.body.dataset.state !== 'busy'";
    open(driver, swarm).await?;
    operator_cannot_decide(driver, swarm, review).await?;
    sign_in(driver, &swarm.token("ui-reviewer", &["reviewer"])).await?;
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
    // Once the worker has published it, the Published view shows the reply once, with the
    // approval it came from (refreshed until it is there).
    let published = format!("#published tbody tr[data-review-id='{review}']");
    driver
        .wait_until_js(
            &format!(
                "if (document.querySelector(\"{published}\")) return true;
                 if (document.body.dataset.state === 'ready') document.querySelector('#published-refresh').click();
                 return false;"
            ),
            Duration::from_secs(60),
        )
        .await?;
    driver
        .wait_until_js("return document.body.dataset.state === 'ready'", WAIT)
        .await?;
    let rows = driver
        .execute(&format!(
            "return document.querySelectorAll(\"{published}\").length"
        ))
        .await?;
    anyhow::ensure!(rows == serde_json::json!(1), "published rows: {rows}");
    let text = driver.text(&driver.find(&published).await?).await?;
    anyhow::ensure!(
        text.contains("x reply") && text.contains("approved by ui-reviewer"),
        "the published row: {text:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_view_lists_agents_by_name_with_the_one_needing_attention_first() {
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

    in_browser("fleet", async |driver| drive_fleet(driver, &swarm).await).await;
    for name in ["fleet-1400.png", "fleet-390.png"] {
        let written = std::fs::metadata(artifacts().join(name)).map(|m| m.len());
        assert!(
            written.as_ref().is_ok_and(|n| *n > 1000),
            "{name}: {written:?}"
        );
    }
    swarm.stop().await;
}

async fn drive_fleet(driver: &Driver, swarm: &Swarm) -> anyhow::Result<()> {
    driver.set_window_size(1400, 1000).await?;
    open(driver, swarm).await?;
    sign_in(driver, &swarm.token("ui-operator", &["operator"])).await?;
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
    screenshots(driver, "fleet").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_goal_view_follows_a_goal_live_until_it_settles() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    // A reply held for a person: the view shows it waiting, then (approved over the API while
    // the page watches) its effect runs and the goal completes, with no reload.
    let goal = swarm
        .submit(
            0,
            "reply",
            "thanks for asking",
            json!({"platforms": ["x"], "in_reply_to": "post-live", "simulated_quality": 0.80}),
        )
        .await;
    swarm.settle(&[goal], Duration::from_secs(90)).await;
    in_browser("goal", async |driver| {
        drive_goal(driver, &swarm, goal.0).await
    })
    .await;
    swarm.stop().await;
}

async fn drive_goal(driver: &Driver, swarm: &Swarm, goal: uuid::Uuid) -> anyhow::Result<()> {
    driver.set_window_size(1400, 1000).await?;
    open(driver, swarm).await?;
    sign_in(driver, &swarm.token("ui-operator", &["operator"])).await?;
    let row = format!("#goals tbody tr[data-goal-id='{goal}']");
    driver.wait_for(&row, WAIT).await?;
    driver
        .click(&driver.find(&format!("{row} button.open-goal")).await?)
        .await?;
    let view = format!("#goal[data-goal-id='{goal}']");
    driver
        .wait_until_js(
            &format!(
                "const v = document.querySelector(\"{view}\");
                 return v && v.dataset.live === 'live' && v.dataset.status === 'awaiting_review'
                     && !!document.querySelector(\"#goal-tasks tr[data-status='awaiting_review'] td[data-field='routing']\")"
            ),
            WAIT,
        )
        .await?;
    let routing = driver
        .text(
            &driver
                .find("#goal-tasks tr[data-status='awaiting_review'] td[data-field='routing']")
                .await?,
        )
        .await?;
    anyhow::ensure!(routing == "held for a person", "routing: {routing:?}");
    let reasons = driver
        .text(
            &driver
                .find("#goal-tasks tr[data-status='awaiting_review'] td[data-field='reasons']")
                .await?,
        )
        .await?;
    anyhow::ensure!(!reasons.is_empty(), "the judge's reasons are shown");
    // A mark that a reload would lose.
    let before = driver
        .execute("window.__sameLoad = true; return Number(document.querySelector('#goal').dataset.updates)")
        .await?;

    // A reviewer approves over the API while the page watches.
    let http = reqwest::Client::new();
    let reviewer = swarm.token("api-reviewer", &["reviewer"]);
    let review: uuid::Uuid = sqlx::query_scalar(
        "select v.id from reviews v join tasks t on t.id = v.task_id
         where t.goal_id = $1 and v.status = 'pending'",
    )
    .bind(goal)
    .fetch_one(&swarm.db.pool)
    .await?;
    let card: serde_json::Value = http
        .get(format!("{}/reviews/{review}", swarm.api()))
        .bearer_auth(&reviewer)
        .send()
        .await?
        .json()
        .await?;
    let approved = http
        .post(format!("{}/reviews/{review}/approve", swarm.api()))
        .bearer_auth(&reviewer)
        .json(&json!({"artifact_hash": card["artifact_hash"], "policy_version": card["policy_version"]}))
        .send()
        .await?;
    anyhow::ensure!(
        approved.status().is_success(),
        "approve: {}",
        approved.status()
    );

    driver
        .wait_until_js(
            &format!(
                "const v = document.querySelector(\"{view}\");
                 return v.dataset.status === 'completed' && v.dataset.live === 'settled'
                     && !!document.querySelector(\"#goal-tasks tr[data-kind='execute'][data-status='committed']\")"
            ),
            Duration::from_secs(60),
        )
        .await?;
    let after = driver
        .execute("return window.__sameLoad === true ? Number(document.querySelector('#goal').dataset.updates) : -1")
        .await?;
    anyhow::ensure!(
        after.as_i64() > before.as_i64(),
        "the view updated in place: {before} -> {after}"
    );
    // Settled, the goal's history is loaded: the hold and the reviewer's approval.
    driver
        .wait_until_js(
            "return !!document.querySelector(\"#goal-audit li[data-action='judge.hold']\")
                 && !!document.querySelector(\"#goal-audit li[data-action='review.approve']\")",
            WAIT,
        )
        .await?;
    screenshots(driver, "goal").await
}

/// `pairs` as an `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params("http://form.invalid/", pairs)
        .unwrap()
        .query()
        .unwrap_or_default()
        .to_owned()
}

/// The local issuer's code for a sign-in of `sub` in `tenant` as `roles` (its form posted as a
/// browser would), for `challenge`.
async fn issuer_code(api: &str, tenant: uuid::Uuid, challenge: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = client
        .post(format!("{api}/local-issuer/authorize"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("response_type", "code"),
            ("client_id", "mission-control"),
            ("redirect_uri", &format!("{api}/")),
            ("state", "s1"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("sub", "ui-pkce"),
            ("tenant", &tenant.to_string()),
            ("roles", "reviewer"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    let url = reqwest::Url::parse(&location).unwrap();
    assert_eq!(
        url.query_pairs().find(|(k, _)| k == "state").unwrap().1,
        "s1"
    );
    url.query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned()
}

/// Exchanges `code` with `verifier` at the local issuer: (status, body).
async fn exchange(api: &str, code: &str, verifier: &str) -> (u16, serde_json::Value) {
    let answer = reqwest::Client::new()
        .post(format!("{api}/local-issuer/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &format!("{api}/")),
            ("client_id", "mission-control"),
            ("code_verifier", verifier),
        ]))
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mission_control_signs_in_through_the_code_flow_with_pkce() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let tenant = swarm.tenant.0;

    in_browser("sign-in-pkce", async |driver: &Driver| {
        open(driver, &swarm).await?;
        driver.click(&driver.wait_for("#signin", WAIT).await?).await?;
        // The issuer's page: who signs in.
        let sub = driver.wait_for("#issuer-sub", WAIT).await?;
        driver.send_keys(&sub, "ui-pkce").await?;
        let field = driver.find("#issuer-tenant").await?;
        driver.send_keys(&field, &tenant.to_string()).await?;
        driver
            .click(&driver.find("input[name=roles][value=reviewer]").await?)
            .await?;
        driver.click(&driver.find("#issuer-submit").await?).await?;
        // Back in Mission Control: the code exchanged with the page's verifier, signed in.
        driver
            .wait_until_js(
                "return document.body.dataset.state === 'ready' && document.querySelector('[data-claim=sub]')?.textContent === 'ui-pkce'",
                WAIT,
            )
            .await?;
        let address = driver.execute("return location.href").await?;
        anyhow::ensure!(
            !address.as_str().unwrap_or_default().contains("code="),
            "the code stays out of the address: {address}"
        );
        let can_decide = driver
            .execute("return document.body.dataset.canDecide")
            .await?;
        anyhow::ensure!(can_decide == "true", "a reviewer may decide: {can_decide}");
        Ok(())
    })
    .await;

    // The issuer sends codes back to its own pages only.
    let foreign = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!(
            "{}/local-issuer/authorize?{}",
            swarm.api(),
            form(&[
                ("response_type", "code"),
                ("client_id", "mission-control"),
                ("redirect_uri", "http://elsewhere.example/"),
                ("state", "s"),
                ("code_challenge", &"a".repeat(43)),
                ("code_challenge_method", "S256"),
            ])
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 400);

    // The issuer checks the verifier, and a code is good once.
    let verifier = "a-verifier-of-forty-three-characters-at-least-0123";
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let code = issuer_code(swarm.api(), tenant, &challenge).await;
    let (status, body) = exchange(
        swarm.api(),
        &code,
        "another-verifier-of-forty-three-characters-0123",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let (status, body) = exchange(swarm.api(), &code, verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "used once: {body}"
    );
    let code = issuer_code(swarm.api(), tenant, &challenge).await;
    let (status, body) = exchange(swarm.api(), &code, verifier).await;
    assert_eq!(status, 200, "{body}");
    // Its token is one the API takes.
    let token = body["id_token"].as_str().unwrap();
    let fleet = reqwest::Client::new()
        .get(format!("{}/fleet", swarm.api()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(fleet.status(), 200);
    swarm.stop().await;
}
