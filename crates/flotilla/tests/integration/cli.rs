//! `flotilla sql` against a running coordinator: batch mode, output formats, session
//! state carried between statements, and failures reported with a non-zero exit.

use std::process::Command;

use crate::harness::TestCluster;

/// Runs `flotilla sql` against the cluster, off the async runtime.
async fn flotilla_sql(cluster: &TestCluster, extra: &[&str]) -> std::process::Output {
    let url = cluster.url();
    let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["sql", "--server", &url, "--user", "cli-test", "--no-progress"])
            .args(&extra)
            .output()
            .expect("flotilla runs")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn batch_mode_prints_csv_and_keeps_session_state() {
    let cluster = TestCluster::start_default().await;
    let sql = "USE tpch.tiny; SELECT name FROM nation WHERE nationkey < 2 ORDER BY nationkey";
    let output = flotilla_sql(&cluster, &["--output-format", "CSV_HEADER", "--execute", sql]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "\"name\"\n\"ALGERIA\"\n\"ARGENTINA\"\n");
    cluster.shutdown().await;
}

#[tokio::test]
async fn failures_exit_non_zero_with_the_trino_message() {
    let cluster = TestCluster::start_default().await;
    let output = flotilla_sql(&cluster, &["--execute", "SELECT * FROM tpch.tiny.nope"]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Table 'tpch.tiny.nope' does not exist"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn json_output_has_one_object_per_row() {
    let cluster = TestCluster::start_default().await;
    let sql = "SELECT regionkey, name FROM tpch.tiny.region ORDER BY regionkey LIMIT 2";
    let output = flotilla_sql(&cluster, &["--output-format", "JSON", "--execute", sql]).await;
    assert!(output.status.success());
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"regionkey": 0, "name": "AFRICA"}),
            serde_json::json!({"regionkey": 1, "name": "AMERICA"})
        ]
    );
    cluster.shutdown().await;
}

/// Runs `flotilla health-check` against `url`, off the async runtime.
async fn health_check(url: &str, ready: bool) -> std::process::Output {
    let mut args =
        vec!["health-check".to_string(), "--url".to_string(), url.to_string(), "--timeout".into(), "2s".into()];
    if ready {
        args.push("--ready".into());
    }
    tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_flotilla")).args(&args).output().unwrap())
        .await
        .unwrap()
}

/// `flotilla health-check` for container probes: alive while the node answers, ready only
/// while it is ACTIVE (a draining node is alive but not ready); no answer is unhealthy.
#[tokio::test]
async fn health_check_tells_alive_from_ready() {
    let cluster = TestCluster::builder().config(|c| c.node.admin_users = vec!["admin".into()]).start().await;
    let url = cluster.url();
    for ready in [false, true] {
        let output = health_check(&url, ready).await;
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "ACTIVE\n");
    }
    let drained = reqwest::Client::new()
        .put(format!("{url}/v1/info/state"))
        .header("X-Trino-User", "admin")
        .json(&"SHUTTING_DOWN")
        .send()
        .await
        .unwrap();
    assert_eq!(drained.status(), 200);
    let output = health_check(&url, true).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("SHUTTING_DOWN, not ready"), "{output:?}");
    assert!(health_check(&url, false).await.status.success(), "a draining node is alive");
    let output = health_check("http://127.0.0.1:9", false).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("unhealthy: "), "{output:?}");
    cluster.shutdown().await;
}

/// `${ENV:NAME}` in a `--set` value as in a properties file: an unset variable stops the
/// start with exit code 2, naming it.
#[tokio::test]
async fn set_flags_take_environment_variables() {
    let output = tokio::task::spawn_blocking(|| {
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["resource-manager", "--bind", "127.0.0.1", "--port", "0"])
            .args(["--set", "internal-communication.shared-secret=${ENV:FLOTILLA_TEST_SURELY_UNSET_SECRET}"])
            .env_remove("FLOTILLA_TEST_SURELY_UNSET_SECRET")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FLOTILLA_TEST_SURELY_UNSET_SECRET is not set"), "{stderr}");
}

/// `log.format=json`: every log event is one JSON object a line (timestamp, level, fields).
#[tokio::test]
async fn json_logs_are_one_object_a_line() {
    let logs = crate::harness::TempDir::new("flotilla-json-logs");
    let mut spec = flotilla::local_cluster::NodeSpec::new(
        flotilla::local_cluster::Role::Coordinator,
        "json-logs",
        std::net::IpAddr::from([127, 0, 0, 1]),
    );
    spec.settings.push(("log.format".into(), "json".into()));
    spec.env.push(("RUST_LOG".into(), "info".into()));
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_flotilla"));
    let log_dir = logs.path.clone();
    let mut process = tokio::task::spawn_blocking(move || {
        flotilla::local_cluster::NodeProcess::spawn(
            binary,
            &spec,
            "json-logs-test-secret",
            &log_dir,
            std::time::Duration::from_secs(30),
        )
    })
    .await
    .unwrap()
    .unwrap();
    let text = std::fs::read_to_string(&process.log_path).unwrap();
    process.kill();
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(events.iter().any(|e| e["fields"]["message"] == "coordinator started"), "{text}");
    for event in &events {
        assert!(event["timestamp"].is_string() && event["level"].is_string(), "{event}");
    }
    // Nothing else but the launcher's own lines is text.
    for line in text.lines().filter(|line| !line.starts_with('{')) {
        assert!(
            line.starts_with("---") || line.starts_with("Flotilla is serving") || line.starts_with("flotilla "),
            "{line}"
        );
    }
}

/// `flotilla drain --wait` (a preStop hook): the worker drains and exits, and the command
/// returns then; without the cluster's secret it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_a_worker_and_waits_for_it() {
    let mut cluster = crate::harness::ProcessCluster::builder().workers(1).start();
    let worker = cluster.cluster.workers[0].url.clone();
    let secret = cluster.cluster.secret.clone();
    let drain = |secret: Option<String>| {
        let worker = worker.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_flotilla"));
            command
                .args(["drain", "--url", &worker, "--wait", "--timeout", "60s"])
                .env_remove("FLOTILLA_SHARED_SECRET");
            if let Some(secret) = secret {
                command.env("FLOTILLA_SHARED_SECRET", secret);
            }
            command.output().unwrap()
        })
    };
    let refused = drain(None).await.unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("FLOTILLA_SHARED_SECRET is not set"));
    let forged = drain(Some("not-the-cluster-secret-at-all".into())).await.unwrap();
    assert!(!forged.status.success(), "a request signed with another secret is refused");
    assert!(cluster.cluster.workers[0].is_running());
    let drained = drain(Some(secret)).await.unwrap();
    assert!(drained.status.success(), "{}", String::from_utf8_lossy(&drained.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cluster.cluster.workers[0].is_running() {
        assert!(std::time::Instant::now() < deadline, "the drained worker did not exit");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
