//! `scripts/stack` refuses a port that something else holds, says how to fix it, exits
//! non-zero and starts nothing.

use chimera_tests::repo_root;

#[tokio::test]
async fn stack_up_refuses_a_taken_port_and_starts_nothing() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let local = tempdir();
    let out = tokio::process::Command::new(repo_root().join("scripts/stack"))
        .arg("up")
        .env("CHIMERA_LOCAL_DIR", &local)
        .env("LOCALSTACK_PORT", port.to_string())
        .output()
        .await
        .expect("running scripts/stack");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stack up must fail: {stderr}");
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains("already in use"),
        "{stderr}"
    );
    assert!(
        stderr.contains("LOCALSTACK_PORT="),
        "the error says how to fix it: {stderr}"
    );
    assert!(out.stdout.is_empty(), "no export lines on failure");
    let pid_files: Vec<_> = std::fs::read_dir(local.join("run"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(pid_files.is_empty(), "nothing was started: {pid_files:?}");
    std::fs::remove_dir_all(&local).ok();
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "chimera-stack-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
