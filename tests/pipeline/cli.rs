//! The `chimera` CLI driving the runner's API as an operator and a reviewer would: exit codes
//! and `--json` output are what scripts rely on.

use std::path::PathBuf;

use chimera_tests::swarm::{Swarm, SwarmOptions};
use chimera_tests::workspace_bin;
use serde_json::Value;

/// What one `chimera` run printed, and how it ended.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("JSON on stdout ({e}): {} / {}", self.stdout, self.stderr))
    }
}

async fn chimera(swarm: &Swarm, token: &str, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(workspace_bin("chimera"))
        .args(args)
        .env("CHIMERA_API", swarm.api())
        .env("CHIMERA_TOKEN", token)
        .env("CHIMERA_CONFIG", "/nonexistent")
        .output()
        .await
        .expect("running chimera");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn example(file: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/agents/nova")
        .join(file)
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_and_a_reviewer_run_an_agent_from_the_command_line() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let op = swarm.token("otto", &["operator"]);
    let rev = swarm.token("rita", &["reviewer"]);
    let (soul, agents) = (example("SOUL.md"), example("AGENTS.md"));
    let create = [
        "--json",
        "agents",
        "create",
        "--handle",
        "nova",
        "--display-name",
        "Nova",
        "--platform",
        "x",
        "--soul",
        &soul,
        "--agents",
        &agents,
    ];
    let run = chimera(&swarm, &op, &create).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["handle"], "nova");
    let run = chimera(&swarm, &op, &create).await;
    assert_eq!(run.code, 4, "a taken handle is a conflict: {}", run.stderr);
    let run = chimera(&swarm, &op, &["agents", "show", "ghost"]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    // Money is the tenant admin's: the operator is refused, the admin opens the budget.
    let budget = ["budgets", "set", "nova", "--balance-cents", "5000"];
    let run = chimera(&swarm, &op, &budget).await;
    assert_ne!(run.code, 0, "an operator opens no budget: {}", run.stdout);
    let admin = swarm.token("ada", &["admin"]);
    let run = chimera(&swarm, &admin, &budget).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = chimera(&swarm, &op, &["agents", "show", "nova"]).await;
    assert!(
        run.stdout.contains("balance       5000 cents"),
        "{}",
        run.stdout
    );

    // A reply the world drafts at 0.80: nova's policy holds it for a person.
    let text = "thank the reader for the lantern photo";
    swarm.script_quality(text, 0.80).await;
    let run = chimera(
        &swarm,
        &op,
        &[
            "--json",
            "goals",
            "submit",
            "nova",
            "--kind",
            "reply",
            "--text",
            text,
            "--platform",
            "x",
            "--in-reply-to",
            "post-42",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let goal = run.json()["goal_id"].as_str().unwrap().to_owned();
    let run = chimera(
        &swarm,
        &op,
        &["goals", "watch", &goal, "--timeout-secs", "3"],
    )
    .await;
    assert_eq!(
        run.code, 9,
        "held, so not settled in time: {} {}",
        run.stdout, run.stderr
    );
    assert!(run.stdout.contains("reply"), "{}", run.stdout);

    let review = chimera_tests::eventually(
        std::time::Duration::from_secs(60),
        "the reply in the queue",
        || async {
            let run = chimera(
                &swarm,
                &rev,
                &["--json", "reviews", "list", "--agent", "nova"],
            )
            .await;
            run.json()["items"][0]["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| run.stdout.clone())
        },
    )
    .await;
    let run = chimera(&swarm, &op, &["reviews", "approve", &review]).await;
    assert_eq!(run.code, 6, "an operator may not approve: {}", run.stderr);
    let run = chimera(&swarm, &rev, &["--json", "reviews", "approve", &review]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["decision"], "approve");
    let run = chimera(&swarm, &rev, &["reviews", "approve", &review]).await;
    assert_eq!(run.code, 4, "already decided: {}", run.stderr);
    assert!(run.stderr.contains("already decided"), "{}", run.stderr);

    let run = chimera(
        &swarm,
        &op,
        &["--json", "goals", "watch", &goal, "--timeout-secs", "60"],
    )
    .await;
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    assert_eq!(run.json()["status"], "completed");
    let run = chimera(&swarm, &op, &["--json", "goals", "list", "--agent", "nova"]).await;
    assert_eq!(run.json()["items"][0]["id"], goal.as_str());

    // Failures scripts can tell apart: no valid token, no API.
    let run = chimera(&swarm, "not-a-token", &["agents", "list"]).await;
    assert_eq!(run.code, 6, "{}", run.stderr);
    let run = chimera(
        &swarm,
        &op,
        &["--api", "http://127.0.0.1:9", "agents", "list"],
    )
    .await;
    assert_eq!(run.code, 7, "{}", run.stderr);
    swarm.stop().await;
}
