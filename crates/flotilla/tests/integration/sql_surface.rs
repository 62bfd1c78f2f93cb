//! The SQL clients issue on their own: SHOW, session statements, prepared statements,
//! metadata tables, and the tpch catalog.

use serde_json::{json, Value};

use crate::harness::TestCluster;
use crate::Http;

fn column(rows: &[Vec<Value>], index: usize) -> Vec<String> {
    rows.iter().map(|r| r[index].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn show_statements_list_catalogs_schemas_tables_and_columns() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let (names, rows) = http.rows("SHOW CATALOGS").await;
    assert_eq!(names, vec!["Catalog"]);
    assert_eq!(column(&rows, 0), vec!["system", "tpch"]);
    let (_, rows) = http.rows("SHOW SCHEMAS FROM tpch").await;
    let schemas = column(&rows, 0);
    assert!(
        schemas.contains(&"tiny".to_string())
            && schemas.contains(&"sf1".to_string())
            && schemas.contains(&"information_schema".to_string())
    );
    let (_, rows) = http.rows("SHOW SCHEMAS FROM tpch LIKE 'sf1%'").await;
    assert!(column(&rows, 0).iter().all(|s| s.starts_with("sf1")));
    let (_, rows) = http.rows("SHOW TABLES FROM tpch.tiny").await;
    assert_eq!(
        column(&rows, 0),
        vec!["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]
    );
    let (names, rows) = http.rows("DESCRIBE tpch.tiny.nation").await;
    assert_eq!(names, vec!["Column", "Type", "Extra", "Comment"]);
    assert_eq!(column(&rows, 0), vec!["nationkey", "name", "regionkey", "comment"]);
    assert_eq!(column(&rows, 1)[0], "bigint");
    let (_, rows) = http.rows("SHOW COLUMNS FROM tpch.tiny.lineitem").await;
    assert!(rows.iter().any(|r| r[0] == "extendedprice" && r[1] == "decimal(15,2)"));
    let (_, rows) = http.rows("SHOW FUNCTIONS LIKE 'abs'").await;
    assert_eq!(column(&rows, 0), vec!["abs"]);
    let (names, rows) = http.rows("SHOW SESSION").await;
    assert_eq!(names, vec!["Name", "Value", "Default", "Type", "Description"]);
    assert!(column(&rows, 0).contains(&"query_max_run_time".to_string()));
    assert_eq!(http.error("SHOW SCHEMAS FROM nope").await["errorName"], "CATALOG_NOT_FOUND");
    assert_eq!(http.error("SHOW TABLES FROM tpch.nope").await["errorName"], "SCHEMA_NOT_FOUND");
    cluster.shutdown().await;
}

#[tokio::test]
async fn session_statements_answer_with_trino_headers() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let responses = http.run_with(http.post("USE tpch.tiny")).await;
    assert_eq!(responses.last().unwrap()["updateType"], "USE");
    let headers = http.final_headers(http.post("USE tpch.tiny")).await;
    assert_eq!(headers["x-trino-set-catalog"], "tpch");
    assert_eq!(headers["x-trino-set-schema"], "tiny");

    let headers = http.final_headers(http.post("SET SESSION query_max_run_time = '1h'")).await;
    assert_eq!(headers["x-trino-set-session"], "query_max_run_time=1h");
    assert_eq!(http.error("SET SESSION no_such_property = 1").await["errorName"], "INVALID_SESSION_PROPERTY");
    assert_eq!(http.error("SET SESSION query_max_run_time = 'soon'").await["errorName"], "INVALID_SESSION_PROPERTY");

    let (_, rows) = http
        .rows_with(
            http.post("SELECT count(*) FROM nation").header("X-Trino-Catalog", "tpch").header("X-Trino-Schema", "tiny"),
        )
        .await;
    assert_eq!(rows, vec![vec![json!(25)]]);
    cluster.shutdown().await;
}

#[tokio::test]
async fn prepared_statements_round_trip_through_headers() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let headers = http.final_headers(http.post("PREPARE my_query FROM SELECT ? + 1, ?")).await;
    let added = headers["x-trino-added-prepare"].to_str().unwrap().to_string();
    assert!(added.starts_with("my_query="), "{added}");
    let (_, rows) = http
        .rows_with(http.post("EXECUTE my_query USING 41, 'x'").header("X-Trino-Prepared-Statement", added.clone()))
        .await;
    assert_eq!(rows, vec![vec![json!(42), json!("x")]]);
    let error = http
        .error_with(http.post("EXECUTE my_query USING 1").header("X-Trino-Prepared-Statement", added.clone()))
        .await;
    assert_eq!(error["errorName"], "INVALID_PARAMETER_USAGE");
    let (names, rows) =
        http.rows_with(http.post("DESCRIBE OUTPUT my_query").header("X-Trino-Prepared-Statement", added.clone())).await;
    assert_eq!(names[0], "Column Name");
    assert_eq!(rows.len(), 2);
    let (_, rows) = http.rows("EXECUTE IMMEDIATE 'SELECT ? * 2' USING 21").await;
    assert_eq!(rows, vec![vec![json!(42)]]);
    assert_eq!(http.error("EXECUTE missing").await["errorName"], "NOT_FOUND");
    let responses =
        http.run_with(http.post("DEALLOCATE PREPARE my_query").header("X-Trino-Prepared-Statement", added)).await;
    assert_eq!(responses.last().unwrap()["updateType"], "DEALLOCATE");
    cluster.shutdown().await;
}

#[tokio::test]
async fn transactions_and_explain_are_accepted() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let headers = http.final_headers(http.post("START TRANSACTION")).await;
    assert!(headers.contains_key("x-trino-started-transaction-id"));
    assert_eq!(http.run("COMMIT").await.last().unwrap()["updateType"], "COMMIT");
    assert_eq!(http.run("ROLLBACK").await.last().unwrap()["updateType"], "ROLLBACK");
    let (names, rows) = http.rows("EXPLAIN SELECT count(*) FROM tpch.tiny.orders").await;
    assert_eq!(names, vec!["Query Plan"]);
    assert!(rows[0][0].as_str().unwrap().contains("AggregateExec"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn tpch_tables_have_their_row_counts_and_column_naming_applies() {
    let cluster = TestCluster::builder()
        .catalog("tpch", "connector.name=tpch\n")
        .catalog("tpch_standard", "connector.name=tpch\ntpch.column-naming=STANDARD\n")
        .start()
        .await;
    let http = Http::new(&cluster.url());
    let (_, rows) = http
        .rows("SELECT (SELECT count(*) FROM tpch.tiny.lineitem), (SELECT count(*) FROM tpch.tiny.orders), (SELECT count(*) FROM tpch.tiny.customer), (SELECT count(*) FROM tpch.tiny.region)")
        .await;
    assert_eq!(rows, vec![vec![json!(60175), json!(15000), json!(1500), json!(5)]]);
    let (_, rows) = http.rows("SELECT l_orderkey FROM tpch_standard.tiny.lineitem ORDER BY l_orderkey LIMIT 1").await;
    assert_eq!(rows, vec![vec![json!(1)]]);
    let (_, rows) = http.rows("SELECT name FROM tpch.tiny.nation WHERE nationkey = 7").await;
    assert_eq!(rows, vec![vec![json!("GERMANY")]]);
    cluster.shutdown().await;
}

#[tokio::test]
async fn metadata_tables_use_trino_column_names() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let (_, rows) = http.rows("SELECT table_cat FROM system.jdbc.catalogs ORDER BY 1").await;
    assert_eq!(column(&rows, 0), vec!["system", "tpch"]);
    let (_, rows) = http
        .rows("SELECT column_name, data_type, is_nullable FROM tpch.information_schema.columns WHERE table_schema = 'tiny' AND table_name = 'orders' ORDER BY ordinal_position")
        .await;
    assert_eq!(rows[0], vec![json!("orderkey"), json!("bigint"), json!("NO")]);
    assert!(rows.iter().any(|r| r[1] == "decimal(15,2)"));
    let (_, rows) = http.rows("SELECT count(*) FROM tpch.information_schema.tables WHERE table_schema = 'tiny' AND table_type = 'BASE TABLE'").await;
    assert_eq!(rows, vec![vec![json!(8)]]);
    let (_, rows) =
        http.rows("SELECT schema_name FROM tpch.information_schema.schemata WHERE schema_name = 'tiny'").await;
    assert_eq!(rows.len(), 1);
    let (_, rows) = http.rows("SELECT comment FROM system.metadata.table_comments WHERE catalog_name = 'tpch' AND schema_name = 'tiny' AND table_name = 'nation'").await;
    assert_eq!(rows, vec![vec![Value::Null]]);
    let (_, rows) = http.rows("SELECT coordinator, state FROM system.runtime.nodes").await;
    assert_eq!(rows, vec![vec![json!(true), json!("active")]]);
    let (_, rows) = http.rows("SELECT count(*) FROM system.runtime.queries WHERE query LIKE '%runtime.queries%'").await;
    assert_eq!(rows, vec![vec![json!(1)]]);
    let (_, rows) = http.rows("SELECT now() IS NOT NULL, current_date IS NOT NULL").await;
    assert_eq!(rows, vec![vec![json!(true), json!(true)]]);
    let (_, rows) = http.rows("SELECT version()").await;
    assert_eq!(rows, vec![vec![json!(flotilla_proto::FLOTILLA_VERSION)]]);
    cluster.shutdown().await;
}

#[tokio::test]
async fn values_are_encoded_as_trino_clients_expect() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let responses = http
        .run("SELECT DECIMAL '12.30', DOUBLE 'NaN', DATE '2001-08-22', TIMESTAMP '2001-08-22 03:04:05.321', CAST('ab' AS varbinary), ARRAY[1, 2], CAST(1.5 AS real), true, CAST(NULL AS bigint), CAST(TIMESTAMP '2001-08-22 03:04:05.321' AS timestamp(3))")
        .await;
    let last = responses.last().unwrap();
    assert!(last.get("error").is_none(), "{}", last["error"]);
    let (_, rows) = crate::collect(&responses);
    assert_eq!(
        rows[0],
        vec![
            json!("12.30"),
            json!("NaN"),
            json!("2001-08-22"),
            json!("2001-08-22 03:04:05.321000"),
            json!("YWI="),
            json!([1, 2]),
            json!(1.5),
            json!(true),
            Value::Null,
            json!("2001-08-22 03:04:05.321"),
        ]
    );
    let columns = responses.iter().find_map(|r| r.get("columns")).unwrap();
    let types: Vec<&str> = columns.as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        vec![
            "decimal(4,2)",
            "double",
            "date",
            "timestamp(6)",
            "varbinary",
            "array(bigint)",
            "real",
            "boolean",
            "bigint",
            "timestamp(3)"
        ]
    );
    assert_eq!(columns[0]["typeSignature"]["rawType"], "decimal");
    cluster.shutdown().await;
}
