//! Access control rules (`access-control.name=file`) in a coordinator, with users named by
//! `X-Trino-User` (no authentication here: tests/python/test_security.py covers that end to
//! end): reads through views, writes and DDL by their privileges, listings filtered,
//! session properties, procedures, hostile rules files, and the rules re-read when they
//! change.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{TempDir, TestCluster};
use crate::Http;

fn rules(reader_tables: &str) -> String {
    format!(
        r#"{{
          "schemas": [{{"user": "admin", "owner": true}}],
          "tables": [
            {{"user": "admin", "privileges": ["SELECT", "INSERT", "DELETE", "UPDATE", "OWNERSHIP"]}},
            {{"user": "reader", "catalog": "lake", "schema": "s", "table": "{reader_tables}", "privileges": ["SELECT"]}},
            {{"user": "viewer", "catalog": "lake", "table": "v", "privileges": ["SELECT"]}},
            {{"user": "writer", "catalog": "lake", "table": "t", "privileges": ["INSERT"]}},
            {{"catalog": "tpch", "privileges": ["SELECT"]}}
          ],
          "system_session_properties": [{{"property": "query_max_run_time", "allow": false}}, {{"allow": true}}],
          "procedures": [{{"user": "admin", "privileges": ["EXECUTE"]}}]
        }}"#
    )
}

fn message(error: &Value) -> &str {
    error["message"].as_str().unwrap_or_default()
}

async fn denied(http: &Http, user: &str, sql: &str) -> String {
    let error = http.error_with(http.post_as(user, sql)).await;
    assert_eq!(error["errorName"], "PERMISSION_DENIED", "{user}: {sql}: {error}");
    message(&error).to_string()
}

async fn rows(http: &Http, user: &str, sql: &str) -> Vec<Vec<Value>> {
    http.rows_with(http.post_as(user, sql)).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_decide_reads_writes_listings_and_are_reloaded() {
    let dir = TempDir::new("security");
    let lake = dir.path.join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let rules_file = dir.path.join("rules.json");
    std::fs::write(&rules_file, rules("t|v")).unwrap();
    let cluster = TestCluster::builder()
        .catalog("lake", &format!("connector.name=files\nfiles.root={}\n", lake.display()))
        .catalog("tpch", "connector.name=tpch\n")
        .config(|config| {
            config.node.security.access_control = true;
            config.node.security.access_control_file = Some(rules_file.clone());
            config.node.security.access_control_refresh = Some(Duration::from_millis(200));
        })
        .start()
        .await;
    let http = Http::new(&cluster.url());
    for sql in [
        "CREATE SCHEMA lake.s",
        "CREATE TABLE lake.s.t AS SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS x(id, name)",
        "CREATE TABLE lake.s.hidden AS SELECT 1 AS id",
        "CREATE VIEW lake.s.v AS SELECT id FROM lake.s.t",
    ] {
        rows(&http, "admin", sql).await;
    }

    // Reads: the table, and through the view (which needs its table too).
    assert_eq!(rows(&http, "reader", "SELECT count(*) FROM lake.s.v").await, vec![vec![Value::from(2)]]);
    let through_view = denied(&http, "viewer", "SELECT count(*) FROM lake.s.v").await;
    assert_eq!(through_view, "Access Denied: Cannot select from table lake.s.t");
    assert_eq!(
        denied(&http, "reader", "SELECT * FROM lake.s.hidden").await,
        "Access Denied: Cannot select from table lake.s.hidden"
    );
    assert!(denied(&http, "nobody", "SELECT 1 FROM lake.s.t").await.contains("lake.s.t"));
    // Writes and DDL.
    assert_eq!(
        denied(&http, "reader", "INSERT INTO lake.s.t VALUES (3, 'c')").await,
        "Access Denied: Cannot insert into table lake.s.t"
    );
    rows(&http, "writer", "INSERT INTO lake.s.t VALUES (3, 'c')").await;
    assert!(denied(&http, "writer", "INSERT INTO lake.s.t SELECT id, 'x' FROM lake.s.hidden")
        .await
        .contains("Cannot select from table"));
    assert_eq!(denied(&http, "reader", "DROP TABLE lake.s.t").await, "Access Denied: Cannot drop table lake.s.t");
    assert_eq!(
        denied(&http, "reader", "CREATE TABLE lake.s.copy AS SELECT * FROM lake.s.t").await,
        "Access Denied: Cannot create table lake.s.copy"
    );
    assert_eq!(
        denied(&http, "reader", "CREATE SCHEMA lake.mine").await,
        "Access Denied: Cannot create schema lake.mine"
    );
    assert!(denied(&http, "reader", "SHOW CREATE TABLE lake.s.t").await.contains("Cannot show create table"));
    assert!(denied(&http, "reader", "SHOW COLUMNS FROM lake.s.hidden").await.contains("Cannot show columns"));
    assert!(denied(&http, "reader", "CREATE VIEW lake.s.v2 AS SELECT 1 AS x").await.contains("Cannot create view"));
    // Listings show what the user may see.
    let names =
        |rows: Vec<Vec<Value>>| rows.into_iter().map(|r| r[0].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(names(rows(&http, "reader", "SHOW TABLES FROM lake.s").await), ["t", "v"]);
    assert_eq!(names(rows(&http, "admin", "SHOW TABLES FROM lake.s").await), ["hidden", "t", "v"]);
    let listed = "SELECT table_name FROM lake.information_schema.tables WHERE table_schema = 's' ORDER BY 1";
    assert_eq!(names(rows(&http, "viewer", listed).await), ["v"]);
    assert_eq!(names(rows(&http, "nobody", "SHOW SCHEMAS FROM lake").await), ["information_schema"]);
    assert!(!names(rows(&http, "nobody", "SHOW CATALOGS").await).contains(&"lake".to_string()));
    // The cluster's nodes are system information: no rule gives it to anyone here.
    let nodes = http.client.get(format!("{}/v1/node", http.base)).header("X-Trino-User", "admin").send().await.unwrap();
    assert_eq!(nodes.status(), 403);
    let metrics =
        http.client.get(format!("{}/metrics", http.base)).header("X-Trino-User", "admin").send().await.unwrap();
    assert_eq!(metrics.status(), 403, "metrics are system information too");
    // Session properties and procedures.
    assert!(denied(&http, "reader", "SET SESSION query_max_run_time = '1h'").await.contains("query_max_run_time"));
    let with_property = http.post_as("reader", "SELECT 1").header("X-Trino-Session", "query_max_run_time=1h");
    let error = http.error_with(with_property).await;
    assert_eq!(error["errorName"], "PERMISSION_DENIED", "{error}");
    assert!(denied(&http, "reader", "CALL system.runtime.kill_query(query_id => '20260101_000000_00000_aaaaa')")
        .await
        .contains("Cannot execute procedure system.runtime.kill_query"));

    // A broken rules file keeps the last good rules; a new good one applies.
    std::fs::write(&rules_file, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rows(&http, "reader", "SELECT count(*) FROM lake.s.t").await, vec![vec![Value::from(3)]]);
    std::fs::write(&rules_file, rules("hidden")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let responses = http.run_with(http.post_as("reader", "SELECT count(*) FROM lake.s.t")).await;
        let error = responses.last().unwrap()["error"].clone();
        if message(&error) == "Access Denied: Cannot select from table lake.s.t" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new rules never applied: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows(&http, "reader", "SELECT * FROM lake.s.hidden").await, vec![vec![Value::from(1)]]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_refuses_to_start_with_unusable_rules() {
    let dir = TempDir::new("security-bad");
    for (name, text) in [
        ("missing.json", None),
        ("unknown.json", Some(r#"{"tables": [{"privileges": ["SELECT"], "colums": []}]}"#)),
        ("masks.json", Some(r#"{"tables": [{"privileges": ["SELECT"], "columns": [{"name": "x", "mask": "'*'"}]}]}"#)),
        ("regex.json", Some(r#"{"catalogs": [{"catalog": "(", "allow": "all"}]}"#)),
        ("deep.json", Some(&format!("{{\"tables\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000)))),
    ] {
        let path = dir.path.join(name);
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let mut config = flotilla_coordinator::CoordinatorConfig::default();
        config.node.security.access_control = true;
        config.node.security.access_control_file = Some(path.clone());
        let address = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        let started =
            flotilla_coordinator::Coordinator::start(config, flotilla_sql::catalog::Catalogs::defaults(), address)
                .await;
        let error = started.err().unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(error.to_string().contains(&path.display().to_string()), "{name}: {error}");
    }
}
