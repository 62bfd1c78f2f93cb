//! The `blackhole` connector: tables that swallow writes and generate rows at a set pace;
//! what the suite uses for queries that run as long as wanted on the workers without
//! using the CPU.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{ProcessCluster, TempDir, TestCluster};
use crate::Http;

/// An `etc/` with the `tpch` and `blackhole` catalogs.
pub(crate) fn blackhole_etc() -> TempDir {
    let etc = TempDir::new("flotilla-etc");
    std::fs::create_dir_all(etc.path.join("catalog")).unwrap();
    std::fs::write(etc.path.join("catalog/tpch.properties"), "connector.name=tpch\n").unwrap();
    std::fs::write(etc.path.join("catalog/blackhole.properties"), "connector.name=blackhole\n").unwrap();
    etc
}

/// A coordinator with the `tpch` and `blackhole` catalogs.
pub(crate) async fn with_blackhole() -> TestCluster {
    TestCluster::builder()
        .catalog("tpch", "connector.name=tpch\n")
        .catalog("blackhole", "connector.name=blackhole\n")
        .start()
        .await
}

/// Creates `blackhole.default.NAME` (one bigint column) of `splits` splits of `pages` pages
/// of 10 rows, a page every `delay` (e.g. `'500ms'`); returns the query that counts it.
pub(crate) async fn paced_table(http: &Http, name: &str, splits: u32, pages: u32, delay: &str) -> String {
    http.rows(&format!(
        "CREATE TABLE blackhole.default.{name} (x bigint) WITH (split_count = {splits}, \
         pages_per_split = {pages}, rows_per_page = 10, page_processing_delay = '{delay}')"
    ))
    .await;
    format!("SELECT count(*) FROM blackhole.default.{name}")
}

/// A table that a full scan takes `seconds` to read, one page a second (2 splits).
pub(crate) async fn slow_table(http: &Http, name: &str, seconds: u32) -> String {
    paced_table(http, name, 2, seconds, "1s").await
}

/// A process cluster of `workers` workers with the `tpch` and `blackhole` catalogs, every
/// node counted by the coordinator; the `etc/` lives as long as the cluster is used.
pub(crate) async fn blackhole_cluster(workers: usize) -> (TempDir, ProcessCluster, Http) {
    let etc = blackhole_etc();
    let cluster = ProcessCluster::builder().workers(workers).etc_dir(&etc.path).start();
    let http = Http::new(&cluster.coordinator_url());
    crate::distributed::wait_for_nodes(&http, workers + 2).await;
    (etc, cluster, http)
}

async fn fails_with(http: &Http, sql: &str, name: &str) -> Value {
    let responses = http.run(sql).await;
    let error = responses.last().unwrap()["error"].clone();
    assert_eq!(error["errorName"], name, "{sql}: {error}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_tables_swallow_writes_and_generate_their_rows() {
    let cluster = with_blackhole().await;
    let http = Http::new(&cluster.url());
    http.rows(
        "CREATE TABLE blackhole.default.t (n bigint, s varchar, b boolean, d decimal(12,2)) \
         WITH (split_count = 2, pages_per_split = 3, rows_per_page = 4, field_length = 3)",
    )
    .await;
    let (_, rows) = http.rows("SELECT count(*), min(n), max(s), bool_or(b), sum(d) FROM blackhole.default.t").await;
    assert_eq!(
        rows,
        vec![vec![Value::from(24), Value::from(0), Value::from("xxx"), Value::from(false), Value::from("0.00")]]
    );
    let (_, rows) = http.rows("SELECT n FROM blackhole.default.t LIMIT 5").await;
    assert_eq!(rows.len(), 5);

    // Writes are counted and swallowed.
    let (_, rows) =
        http.rows("INSERT INTO blackhole.default.t SELECT nationkey, name, true, 1 FROM tpch.tiny.nation").await;
    assert_eq!(rows, vec![vec![Value::from(25)]]);
    let (_, rows) = http.rows("CREATE TABLE blackhole.default.copy AS SELECT * FROM tpch.tiny.region").await;
    assert_eq!(rows, vec![vec![Value::from(5)]]);
    let (_, rows) = http.rows("SELECT count(*) FROM blackhole.default.copy").await;
    assert_eq!(rows, vec![vec![Value::from(0)]], "a table without properties reads empty");
    let (_, rows) = http.rows("SHOW TABLES FROM blackhole.default").await;
    assert_eq!(rows, vec![vec![Value::from("copy")], vec![Value::from("t")]]);

    // Schemas and drops, as on any catalog.
    http.rows("CREATE SCHEMA blackhole.other").await;
    fails_with(&http, "CREATE SCHEMA blackhole.other", "SCHEMA_ALREADY_EXISTS").await;
    http.rows("CREATE TABLE blackhole.other.x (a integer)").await;
    fails_with(&http, "DROP SCHEMA blackhole.other", "SCHEMA_NOT_EMPTY").await;
    http.rows("DROP TABLE blackhole.other.x").await;
    http.rows("DROP SCHEMA blackhole.other").await;
    fails_with(&http, "CREATE TABLE blackhole.other.x (a integer)", "SCHEMA_NOT_FOUND").await;
    http.rows("DROP TABLE blackhole.default.copy").await;
    fails_with(&http, "SELECT * FROM blackhole.default.copy", "TABLE_NOT_FOUND").await;
    fails_with(&http, "CREATE TABLE blackhole.default.t (a integer)", "TABLE_ALREADY_EXISTS").await;
    http.rows("CREATE TABLE IF NOT EXISTS blackhole.default.t (a integer)").await;

    // Hostile properties: bounded, named, never a crash or a runaway table.
    for (properties, word) in [
        ("split_count = 100000", "split_count"),
        ("rows_per_page = -1", "rows_per_page"),
        ("split_count = 1024, pages_per_split = 9223372036854775807, rows_per_page = 1000", "pages_per_split"),
        ("split_count = 1024, pages_per_split = 1099511627776, rows_per_page = 1000", "rows"),
        ("page_processing_delay = '3650d'", "page_processing_delay"),
        ("page_processing_delay = 'soon'", "page_processing_delay"),
        ("format = 'PARQUET'", "format"),
    ] {
        let error = fails_with(
            &http,
            &format!("CREATE TABLE blackhole.default.bad (a integer) WITH ({properties})"),
            "INVALID_TABLE_PROPERTY",
        )
        .await;
        assert!(error["message"].as_str().unwrap().contains(word), "{error}");
    }
    fails_with(&http, "CREATE VIEW blackhole.default.v AS SELECT 1 x", "NOT_SUPPORTED").await;

    // Racing creations of one name: exactly one wins, the others are told it exists.
    let racers = (0..8).map(|_| {
        let http = Http::new(&http.base);
        async move { http.run("CREATE TABLE blackhole.default.race (a integer)").await.last().unwrap().clone() }
    });
    let outcomes = futures::future::join_all(racers).await;
    let won = outcomes.iter().filter(|o| o.get("error").is_none()).count();
    assert_eq!(won, 1, "{outcomes:#?}");
    assert!(outcomes.iter().filter_map(|o| o.get("error")).all(|e| e["errorName"] == "TABLE_ALREADY_EXISTS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_blackhole_scan_runs_on_a_worker_until_cancelled() {
    let (_etc, cluster, http) = blackhole_cluster(2).await;
    let workers: Vec<String> = cluster.cluster.workers.iter().map(|w| w.url.clone()).collect();

    let query = slow_table(&http, "slow", 3600).await;
    let first: Value = http.post(&query).send().await.unwrap().json().await.unwrap();
    let mut response = first;
    // Its scan is on a worker, waiting for its next page.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut busy = None;
        for url in &workers {
            let status: Value = http.get_json(&format!("{url}/v1/status")).await;
            if status["runningTasks"].as_u64().unwrap_or(0) > 0 {
                busy = Some(status);
            }
        }
        if busy.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the scan never reached a worker");
        if let Some(next) = response["nextUri"].as_str().map(str::to_string) {
            response = http.get_json(&next).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next = response["nextUri"].as_str().expect("still running").to_string();
    assert!(http.client.delete(&next).send().await.unwrap().status().is_success());
    let deadline = Instant::now() + Duration::from_secs(5);
    for url in &workers {
        loop {
            let status: Value = http.get_json(&format!("{url}/v1/status")).await;
            if status["runningTasks"].as_u64() == Some(0) {
                break;
            }
            assert!(Instant::now() < deadline, "the cancelled scan still runs: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
