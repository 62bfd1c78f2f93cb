//! The `files` connector: the TPC-H tables written as Parquet (`flotilla tpch-gen`) under a
//! root every process sees, queried through a cluster with two workers: the 22 queries give
//! the generated `tpch` catalog's answers, the scans are distributed, SHOW and
//! information_schema list the tables, and writes are refused as not supported yet.

use std::path::Path;

use serde_json::Value;

use crate::distributed::wait_for_nodes;
use crate::harness::{ProcessCluster, TempDir};
use crate::Http;

/// Rows with floating-point values rounded (the two catalogs sum in different orders).
fn normalized(rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.into_iter()
        .map(|row| {
            row.into_iter()
                .map(|value| match value.as_f64() {
                    Some(number) if value.is_f64() => Value::from(format!("{number:.6e}")),
                    _ => value,
                })
                .collect()
        })
        .collect()
}

fn with_schema(http: &Http, catalog: &str, sql: &str) -> reqwest::RequestBuilder {
    http.post(sql).header("X-Trino-Catalog", catalog).header("X-Trino-Schema", "tiny")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_under_a_shared_root_answer_like_the_tpch_catalog() {
    let root = TempDir::new("flotilla-lake");
    for (scale, schema) in [("0.01", "tiny"), ("1", "sf1")] {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["tpch-gen", "--scale", scale, "--output"])
            .arg(root.path.join(schema))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let etc = TempDir::new("flotilla-etc");
    std::fs::create_dir_all(etc.path.join("catalog")).unwrap();
    std::fs::write(
        etc.path.join("catalog/lake.properties"),
        format!("connector.name=files\nfiles.root={}\n", root.path.display()),
    )
    .unwrap();
    std::fs::write(etc.path.join("catalog/tpch.properties"), "connector.name=tpch\ntpch.column-naming=STANDARD\n")
        .unwrap();
    let cluster = ProcessCluster::builder().workers(2).etc_dir(&etc.path).start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 4).await;

    let (_, schemas) = http.rows("SHOW SCHEMAS FROM lake").await;
    assert!(schemas.contains(&vec![Value::from("tiny")]), "{schemas:?}");
    let (_, tables) = http.rows("SHOW TABLES FROM lake.tiny").await;
    assert_eq!(tables.len(), 8, "{tables:?}");
    let (_, columns) = http
        .rows("SELECT column_name FROM lake.information_schema.columns WHERE table_schema = 'tiny' AND table_name = 'nation' ORDER BY ordinal_position")
        .await;
    assert_eq!(
        columns,
        vec![vec!["n_nationkey"], vec!["n_name"], vec!["n_regionkey"], vec!["n_comment"]]
            .into_iter()
            .map(|r| r.into_iter().map(Value::from).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );

    // Distributed: a scan of more than one task's worth of bytes (datafusion-distributed's
    // 16MB per partition) runs in a stage on the workers, each task reading its part of the
    // file; every row is counted once.
    let sum = "SELECT sum(l_quantity), count(l_comment) FROM lake.sf1.lineitem";
    let (_, plan) = http.rows(&format!("EXPLAIN {sum}")).await;
    let text: String = plan.iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join("\n");
    assert!(text.contains("Stage 1") && text.contains("t1: DataSourceExec"), "{text}");
    let (_, rows) = http.rows(sum).await;
    let (_, expected) = http.rows("SELECT sum(l_quantity), count(l_comment) FROM tpch.sf1.lineitem").await;
    assert_eq!(normalized(rows), normalized(expected));

    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tpch/queries");
    let mut paths: Vec<_> = std::fs::read_dir(&queries).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    assert_eq!(paths.len(), 22);
    for path in paths {
        let sql = std::fs::read_to_string(&path).unwrap();
        let (names, lake) = http.rows_with(with_schema(&http, "lake", &sql)).await;
        let (expected_names, generated) = http.rows_with(with_schema(&http, "tpch", &sql)).await;
        assert_eq!(names, expected_names, "{}", path.display());
        assert_eq!(normalized(lake), normalized(generated), "{}", path.display());
    }

    // Read-only for now, and said so.
    for statement in ["CREATE TABLE lake.tiny.copy AS SELECT * FROM lake.tiny.nation", "DROP TABLE lake.tiny.nation"] {
        let error = http.error(statement).await;
        assert_eq!(error["errorName"], "NOT_SUPPORTED", "{statement}: {error}");
    }
    assert!(root.path.join("tiny/nation.parquet").is_file());
}
