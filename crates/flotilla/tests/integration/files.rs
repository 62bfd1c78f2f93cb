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

/// An `etc/` with the `tpch` catalog (standard column names) and a `lake` files catalog
/// over `root`.
pub(crate) fn lake_etc(root: &Path) -> TempDir {
    let etc = TempDir::new("flotilla-etc");
    std::fs::create_dir_all(etc.path.join("catalog")).unwrap();
    let lake = format!("connector.name=files\nfiles.root={}\n", root.display());
    std::fs::write(etc.path.join("catalog/lake.properties"), lake).unwrap();
    std::fs::write(etc.path.join("catalog/tpch.properties"), "connector.name=tpch\ntpch.column-naming=STANDARD\n")
        .unwrap();
    std::fs::write(etc.path.join("catalog/blackhole.properties"), "connector.name=blackhole\n").unwrap();
    etc
}

/// Waits until a worker runs tasks of query `id` (the scheduler may have placed them all on
/// one), as its `/v1/status` lists them; returns its index.
async fn writing_worker(http: &Http, cluster: &ProcessCluster, id: &str) -> usize {
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        seen.clear();
        for (index, worker) in cluster.cluster.workers.iter().enumerate() {
            let status: Value = http.get_json(&format!("{}/v1/status", worker.url)).await;
            seen.push(status["queries"].clone());
            let queries = status["queries"].as_array().cloned().unwrap_or_default();
            if queries.iter().any(|q| q["queryId"] == id && q["tasks"].as_u64().unwrap_or(0) > 0) {
                return index;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no worker runs the tasks of {id}: {seen:?}")
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
    let etc = lake_etc(&root.path);
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
    let text = crate::plan_text(&plan);
    assert!(text.contains("Stage 1") && text.contains("t1: DataSourceExec"), "{text}");
    let (_, rows) = http.rows(sum).await;
    let (_, expected) = http.rows("SELECT sum(l_quantity), count(l_comment) FROM tpch.sf1.lineitem").await;
    assert_eq!(normalized(rows), normalized(expected));

    // Files of up to 1 MB in all that a join collects (supplier, nation) are read by each
    // task of the stage that joins them, not broadcast from a stage of their own. (The
    // comments make the partsupp scan read more than one task's worth of bytes.)
    let join =
        "SELECT count(*), sum(ps_availqty), count(ps_comment) FROM lake.sf1.partsupp JOIN lake.sf1.supplier ON ps_suppkey = s_suppkey \
                JOIN lake.sf1.nation ON s_nationkey = n_nationkey WHERE n_name = 'GERMANY'";
    let (_, plan) = http.rows(&format!("EXPLAIN {join}")).await;
    let text = crate::plan_text(&plan);
    assert!(text.contains("Stage 1 ── tasks=2") && !text.contains("NetworkBroadcastExec"), "{text}");
    let (_, rows) = http.rows(join).await;
    let (_, expected) = http.rows(&join.replace("lake.sf1.", "tpch.sf1.")).await;
    assert_eq!(normalized(rows), normalized(expected));
    // Without the comments the same scan reads two integer columns, a few MB of the 41 MB
    // file: a task's worth at most, so the statement runs in the coordinator, undistributed.
    let narrow = join.replace(", count(ps_comment)", "");
    let (_, plan) = http.rows(&format!("EXPLAIN {narrow}")).await;
    let text = crate::plan_text(&plan);
    assert!(!text.contains("Stage 1") && !text.contains("DistributedExec"), "{text}");
    let (_, rows) = http.rows(&narrow).await;
    let (_, expected) = http.rows(&narrow.replace("lake.sf1.", "tpch.sf1.")).await;
    assert_eq!(normalized(rows), normalized(expected));

    // A filter analysable in part (a year of `l_receiptdate` from the footers' statistics, two
    // ship modes not) is estimated by that part: q12's 31K `lineitem` rows are broadcast to the
    // `orders` scan (by DataFusion's 20% they would be 1.2M, and both sides were shuffled).
    let q12 =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tpch/queries/q12.sql"))
            .unwrap()
            .replace("lineitem", "lake.sf1.lineitem")
            .replace("orders", "lake.sf1.orders");
    let (_, plan) = http.rows(&format!("EXPLAIN {q12}")).await;
    let text = crate::plan_text(&plan);
    assert!(text.contains("mode=CollectLeft") && !text.contains("mode=Partitioned"), "{text}");
    let (_, rows) = http.rows(&q12).await;
    let (_, expected) = http.rows(&q12.replace("lake.sf1.", "tpch.sf1.")).await;
    assert_eq!(normalized(rows), normalized(expected));

    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tpch/queries");
    let mut paths: Vec<_> = std::fs::read_dir(&queries).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    assert_eq!(paths.len(), 22);
    for path in paths {
        let sql = std::fs::read_to_string(&path).unwrap();
        // Splits of 64kB spread the tiny files over both workers and several stages, so the
        // joins' filters cross stages as they do on larger data.
        let small_splits = with_schema(&http, "lake", &sql).header("X-Trino-Session", "max_split_size=64kB");
        let (names, lake) = http.rows_with(small_splits).await;
        let (expected_names, generated) = http.rows_with(with_schema(&http, "tpch", &sql)).await;
        assert_eq!(names, expected_names, "{}", path.display());
        assert_eq!(normalized(lake), normalized(generated), "{}", path.display());
    }

    // Generated catalogs cannot be written, and say so.
    let error = http.error("CREATE TABLE tpch.tiny.copy AS SELECT * FROM tpch.tiny.nation").await;
    assert_eq!(error["errorName"], "NOT_SUPPORTED", "{error}");
    // Files Flotilla did not write have no manifest: inserting into them is refused.
    let error = http.error("INSERT INTO lake.tiny.region SELECT * FROM tpch.tiny.region").await;
    assert_eq!(error["errorName"], "NOT_SUPPORTED", "{error}");
    let (_, rows) = http.rows("SELECT count(*) FROM lake.tiny.region").await;
    assert_eq!(rows, vec![vec![Value::from(5)]]);
    // Parquet footers are cached across statements, each checked against its file: a file
    // replaced in place is read anew.
    std::fs::copy(root.path.join("tiny/nation.parquet"), root.path.join("tiny/region.parquet")).unwrap();
    let (_, rows) = http.rows("SELECT count(*) FROM lake.tiny.region").await;
    assert_eq!(rows, vec![vec![Value::from(25)]]);
}

/// The last response of a statement (its updateType and updateCount, or its error).
async fn last(http: &Http, sql: &str) -> Value {
    http.run_with(http.post(sql)).await.pop().unwrap()
}

fn count(rows: &[Vec<Value>]) -> i64 {
    rows[0][0].as_i64().unwrap()
}

/// Data files a managed table's directory holds (committed or not).
/// The data files of a table created through Flotilla, committed or not.
fn data_files(dir: &Path) -> usize {
    let data = dir.join("data");
    std::fs::read_dir(data).map(|d| d.filter(|e| e.as_ref().unwrap().path().is_file()).count()).unwrap_or(0)
}

/// Schemas and tables created through one coordinator are there through the other; CREATE
/// TABLE AS writes from the workers in parallel and is all or nothing (a killed worker, a
/// lost race); INSERTs commit whole (concurrent ones all land, a cancelled one leaves the
/// table as it was); DROP removes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_created_written_and_dropped_whole() {
    let root = TempDir::new("flotilla-lake");
    let etc = lake_etc(&root.path);
    let mut cluster = ProcessCluster::builder().coordinators(2).workers(2).etc_dir(&etc.path).start();
    let a = Http::new(&cluster.cluster.coordinators[0].url);
    let b = Http::new(&cluster.cluster.coordinators[1].url);
    wait_for_nodes(&a, 5).await;
    wait_for_nodes(&b, 5).await;

    // Schemas.
    assert_eq!(last(&a, "CREATE SCHEMA lake.s").await["updateType"], "CREATE SCHEMA");
    assert_eq!(a.error("CREATE SCHEMA lake.s").await["errorName"], "SCHEMA_ALREADY_EXISTS");
    assert!(last(&a, "CREATE SCHEMA IF NOT EXISTS lake.s").await.get("error").is_none());

    // CREATE TABLE AS through A, read through B at once.
    let created = last(&a, "CREATE TABLE lake.s.orders AS SELECT * FROM tpch.sf1.orders").await;
    assert_eq!(created["updateType"], "CREATE TABLE", "{created}");
    assert_eq!(created["updateCount"], 1500000, "{created}");
    let (_, rows) = b.rows("SELECT count(*), sum(o_totalprice), max(o_comment) FROM lake.s.orders").await;
    let (_, expected) = b.rows("SELECT count(*), sum(o_totalprice), max(o_comment) FROM tpch.sf1.orders").await;
    assert_eq!(rows, expected);
    assert!(data_files(&root.path.join("s/orders")) >= 2, "written in parallel, one file per partition");
    // Filters reach the scans of tables Flotilla wrote, which prune with Parquet statistics.
    let selective = "SELECT count(*), sum(o_totalprice) FROM lake.s.orders WHERE o_orderkey < 1000";
    let (_, plan) = b.rows(&format!("EXPLAIN {selective}")).await;
    let plan = format!("{plan:?}");
    assert!(plan.contains("predicate=o_orderkey@") && plan.contains("pruning_predicate="), "{plan}");
    let (_, rows) = b.rows(selective).await;
    let (_, expected) = b.rows(&selective.replace("lake.s.", "tpch.sf1.")).await;
    assert_eq!(rows, expected);
    assert_eq!(a.error("CREATE TABLE lake.s.orders AS SELECT 1 AS x").await["errorName"], "TABLE_ALREADY_EXISTS");
    assert!(last(&a, "CREATE TABLE IF NOT EXISTS lake.s.orders AS SELECT 1 AS x").await.get("error").is_none());
    let (_, tables) = b.rows("SELECT table_name FROM lake.information_schema.tables WHERE table_schema = 's'").await;
    assert_eq!(tables, vec![vec![Value::from("orders")]]);

    // A table with columns, CSV; INSERT VALUES and concurrent INSERT ... SELECT through both.
    let made = last(&a, "CREATE TABLE lake.s.t (id bigint, name varchar) WITH (format = 'CSV')").await;
    assert_eq!(made["updateType"], "CREATE TABLE", "{made}");
    let inserted = last(&b, "INSERT INTO lake.s.t VALUES (1, 'a'), (2, 'b')").await;
    assert_eq!(
        (inserted["updateType"].clone(), inserted["updateCount"].clone()),
        (Value::from("INSERT"), Value::from(2))
    );
    let inserts = [&a, &b, &a, &b].map(|http| async move {
        last(http, "INSERT INTO lake.s.t SELECT n_nationkey, n_name FROM tpch.tiny.nation").await
    });
    for result in futures::future::join_all(inserts).await {
        assert_eq!(result["updateCount"], 25, "{result}");
    }
    let (_, rows) = a.rows("SELECT count(*), count(DISTINCT name) FROM lake.s.t").await;
    assert_eq!(rows, vec![vec![Value::from(102), Value::from(27)]], "every insert landed");

    // A cancelled INSERT leaves the table as it was (its source: a page a second, for an hour).
    crate::blackhole::slow_table(&a, "slow", 3600).await;
    let slow = "INSERT INTO lake.s.t SELECT x, 'slow' FROM blackhole.default.slow";
    let first = a.client.execute(a.post(slow).build().unwrap()).await.unwrap().json::<Value>().await.unwrap();
    let id = first["id"].as_str().unwrap().to_string();
    writing_worker(&a, &cluster, &id).await;
    a.client.delete(format!("{}/v1/query/{id}", a.base)).header("X-Trino-User", "test").send().await.unwrap();
    a.wait_for_state(&id, &["FAILED"], std::time::Duration::from_secs(20)).await;
    let (_, rows) = b.rows("SELECT count(*) FROM lake.s.t").await;
    assert_eq!(count(&rows), 102, "the cancelled insert added nothing");

    // A worker killed in the middle of a CREATE TABLE AS: with retries off the query fails,
    // no table. (Its source pages for an hour.)
    crate::blackhole::slow_table(&a, "halting", 3600).await;
    let doomed = "CREATE TABLE lake.s.doomed AS SELECT * FROM blackhole.default.halting";
    let request = a.post(doomed).header("X-Trino-Session", "retry_policy=NONE");
    let first = a.client.execute(request.build().unwrap()).await.unwrap().json::<Value>().await.unwrap();
    let id = first["id"].as_str().unwrap().to_string();
    let busy = writing_worker(&a, &cluster, &id).await;
    cluster.cluster.workers[busy].kill();
    a.wait_for_state(&id, &["FAILED"], std::time::Duration::from_secs(60)).await;
    let (_, tables) = a.rows("SHOW TABLES FROM lake.s").await;
    assert!(!tables.contains(&vec![Value::from("doomed")]), "{tables:?}");
    assert!(!root.path.join("s/doomed/_flotilla/table").exists(), "never published");
    // What the killed write left (files the other worker finished) is not the next table's.
    let again = last(&a, "CREATE TABLE lake.s.doomed AS SELECT 1 AS x").await;
    assert_eq!(again["updateCount"], 1, "{again}");
    assert_eq!(a.rows("SELECT count(*) FROM lake.s.doomed").await.1, vec![vec![Value::from(1)]]);
    assert_eq!(last(&a, "DROP TABLE lake.s.doomed").await["updateType"], "DROP TABLE");
    // Later statements run on the worker left, once both coordinators see it gone.
    wait_for_nodes(&a, 4).await;
    wait_for_nodes(&b, 4).await;

    // Two CREATE TABLE AS of one name at once, through both coordinators: one wins.
    let race = "CREATE TABLE lake.s.raced AS SELECT * FROM tpch.tiny.customer";
    let results = futures::future::join_all([&a, &b].map(|http| async move { last(http, race).await })).await;
    let won = results.iter().filter(|r| r.get("error").is_none()).count();
    let lost: Vec<&Value> = results.iter().filter_map(|r| r.get("error")).collect();
    assert_eq!(won, 1, "{results:?}");
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0]["errorName"], "TABLE_ALREADY_EXISTS", "{results:?}");
    let (_, rows) = b.rows("SELECT count(*) FROM lake.s.raced").await;
    assert_eq!(count(&rows), 1500);

    // Views live in the catalog: made through A, read through B, replaced, dropped.
    let view = "CREATE VIEW lake.s.big_orders AS SELECT o_orderkey, o_totalprice FROM lake.s.orders WHERE o_totalprice > 400000";
    assert_eq!(last(&a, view).await["updateType"], "CREATE VIEW");
    let (_, rows) = b.rows("SELECT count(*), sum(o_totalprice) FROM lake.s.big_orders").await;
    let (_, expected) =
        b.rows("SELECT count(*), sum(o_totalprice) FROM tpch.sf1.orders WHERE o_totalprice > 400000").await;
    assert_eq!(rows, expected);
    assert_eq!(a.error(view).await["errorName"], "TABLE_ALREADY_EXISTS");
    assert_eq!(
        last(&b, "CREATE OR REPLACE VIEW lake.s.big_orders AS SELECT 42 AS answer").await["updateType"],
        "CREATE VIEW"
    );
    let (_, rows) = a.rows("SELECT answer FROM lake.s.big_orders").await;
    assert_eq!(rows, vec![vec![Value::from(42)]]);
    assert_eq!(a.error("DROP TABLE lake.s.big_orders").await["errorName"], "NOT_SUPPORTED");
    assert_eq!(last(&a, "DROP VIEW lake.s.big_orders").await["updateType"], "DROP VIEW");
    assert!(last(&a, "DROP VIEW IF EXISTS lake.s.big_orders").await.get("error").is_none());

    // Rename.
    assert_eq!(last(&a, "ALTER TABLE lake.s.t RENAME TO t2").await["updateType"], "RENAME TABLE");
    let (_, rows) = b.rows("SELECT count(*) FROM lake.s.t2").await;
    assert_eq!(count(&rows), 102);
    assert_eq!(b.error("SELECT count(*) FROM lake.s.t").await["errorName"], "TABLE_NOT_FOUND");
    assert_eq!(a.error("ALTER TABLE lake.s.t2 RENAME TO orders").await["errorName"], "TABLE_ALREADY_EXISTS");
    assert!(last(&a, "ALTER TABLE lake.s.t2 RENAME TO t").await.get("error").is_none());

    // Comments, in information_schema and system.metadata, and SHOW CREATE TABLE.
    assert_eq!(last(&a, "COMMENT ON TABLE lake.s.t IS 'people'").await["updateType"], "COMMENT");
    assert_eq!(last(&b, "COMMENT ON COLUMN lake.s.t.name IS 'their name'").await["updateType"], "COMMENT");
    let columns = "SELECT comment FROM lake.information_schema.columns WHERE table_schema = 's' AND table_name = 't' ORDER BY ordinal_position";
    let (_, rows) = a.rows(columns).await;
    assert_eq!(rows, vec![vec![Value::Null], vec![Value::from("their name")]]);
    let comments = "SELECT comment FROM system.metadata.table_comments WHERE catalog_name = 'lake' AND schema_name = 's' AND table_name = 't'";
    let (_, rows) = a.rows(comments).await;
    assert_eq!(rows, vec![vec![Value::from("people")]]);
    let (_, rows) = b.rows("SHOW CREATE TABLE lake.s.t").await;
    let text = rows[0][0].as_str().unwrap();
    assert!(text.contains("name varchar COMMENT 'their name'"), "{text}");
    assert!(text.contains("COMMENT 'people'") && text.contains("format = 'CSV'"), "{text}");

    // Drops.
    assert_eq!(a.error("DROP SCHEMA lake.s").await["errorName"], "SCHEMA_NOT_EMPTY");
    for table in ["orders", "t", "raced"] {
        assert_eq!(last(&b, &format!("DROP TABLE lake.s.{table}")).await["updateType"], "DROP TABLE");
    }
    assert_eq!(a.error("DROP TABLE lake.s.t").await["errorName"], "TABLE_NOT_FOUND");
    assert!(last(&a, "DROP TABLE IF EXISTS lake.s.t").await.get("error").is_none());
    assert_eq!(a.error("SELECT * FROM lake.s.t").await["errorName"], "TABLE_NOT_FOUND");
    assert_eq!(last(&a, "DROP SCHEMA lake.s").await["updateType"], "DROP SCHEMA");
    let remains: Vec<_> = walk(&root.path.join("s"));
    assert!(remains.is_empty(), "the schema's directory is gone: {remains:?}");
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        found.push(entry.path());
        if entry.path().is_dir() {
            found.extend(walk(&entry.path()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_table_as_that_loses_a_worker_runs_again_and_lands_once() {
    let root = TempDir::new("flotilla-lake");
    let etc = lake_etc(&root.path);
    let mut cluster = ProcessCluster::builder().workers(2).etc_dir(&etc.path).start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 4).await;
    http.rows("CREATE SCHEMA lake.s").await;
    // Two splits of 6 pages, a page every half second: three seconds an attempt.
    crate::blackhole::paced_table(&http, "paced", 2, 6, "500ms").await;
    let request = http.post("CREATE TABLE lake.s.copy AS SELECT x, 'row' AS note FROM blackhole.default.paced");
    let first = http.client.execute(request.build().unwrap()).await.unwrap().json::<Value>().await.unwrap();
    let id = first["id"].as_str().unwrap().to_string();
    let busy = writing_worker(&http, &cluster, &id).await;
    cluster.cluster.workers[busy].kill();
    http.wait_for_state(&id, &["FINISHED", "FAILED"], std::time::Duration::from_secs(60)).await;
    let info: Value = http.get_json(&format!("{}/v1/query/{id}", http.base)).await;
    assert_eq!(info["state"], "FINISHED", "{info}");
    assert_eq!(info["failedAttempts"].as_array().unwrap().len(), 1, "{info}");

    // The table exists once, with every row once.
    let (_, rows) = http.rows("SELECT count(*), count(DISTINCT note) FROM lake.s.copy").await;
    assert_eq!(rows, vec![vec![Value::from(120), Value::from(1)]]);
    // What the failed attempt wrote is deleted: every data file left is the table's own
    // (named by its id), once the clean-up's last sweep is done.
    let entry: Value =
        serde_json::from_slice(&std::fs::read(root.path.join("s/copy/_flotilla/table")).unwrap()).unwrap();
    let table_id = entry["id"].as_str().or(entry["table"]["id"].as_str()).expect("the entry names its id").to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let strays: Vec<_> = crate::hostile::files_under(&root.path.join("s/copy/data"))
            .into_iter()
            .filter(|f| !f.file_name().unwrap().to_string_lossy().starts_with(&table_id))
            .collect();
        if strays.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the failed attempt's files stayed: {strays:?}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Sets the modification time of every file under `dir` to `age` ago (what vacuum judges
/// ages by on a local root).
fn age_files(dir: &Path, age: std::time::Duration) {
    let then = std::time::SystemTime::now() - age;
    for path in walk(dir).into_iter().filter(|p| p.is_file()) {
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(then).unwrap();
    }
}

/// The files the latest manifest of the table in `dir` lists.
fn manifest_files(dir: &Path) -> Vec<String> {
    let meta = dir.join("_flotilla");
    let latest = std::fs::read_dir(&meta)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|name| name.contains(".v") && !name.contains(".entry."))
        .max_by_key(|name| name.rsplit_once(".v").unwrap().1.parse::<u64>().unwrap())
        .unwrap();
    let manifest: Value = serde_json::from_slice(&std::fs::read(meta.join(latest)).unwrap()).unwrap();
    manifest["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect()
}

/// `ALTER TABLE ... EXECUTE optimize` merges 200 small files into a few with the same rows
/// while concurrent INSERTs all land; `CALL lake.system.vacuum` deletes expired manifests,
/// replaced files and a dead writer's old files, and nothing a reader that started before it
/// still reads, nor a writer's fresh files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_merges_small_files_and_vacuum_keeps_what_readers_need() {
    use crate::harness::TestCluster;
    let root = TempDir::new("flotilla-lake");
    let lake = format!("connector.name=files\nfiles.root={}\nfiles.manifest-retention=1h\n", root.path.display());
    let cluster = TestCluster::builder().catalog("lake", &lake).catalog("tpch", "connector.name=tpch\n").start().await;
    let http = Http::new(&cluster.url());
    http.rows("CREATE SCHEMA lake.s").await;
    http.rows("CREATE TABLE lake.s.t (k bigint, v varchar)").await;
    let inserts: Vec<_> = (0..4)
        .map(|stream| {
            let http = Http::new(&cluster.url());
            tokio::spawn(async move {
                for i in 0..50 {
                    let k = stream * 50 + i;
                    http.rows(&format!("INSERT INTO lake.s.t VALUES ({k}, 'v{k}')")).await;
                }
            })
        })
        .collect();
    for insert in inserts {
        insert.await.unwrap();
    }
    let table = root.path.join("s/t");
    assert_eq!(data_files(&table), 200);
    let summary = "SELECT count(*), sum(k), count(DISTINCT v) FROM lake.s.t";
    assert_eq!(http.rows(summary).await.1, vec![vec![Value::from(200), Value::from(19900), Value::from(200)]]);

    // Optimize while 4 INSERTs run.
    let concurrent: Vec<_> = (200..204)
        .map(|k| {
            let http = Http::new(&cluster.url());
            tokio::spawn(async move { http.rows(&format!("INSERT INTO lake.s.t VALUES ({k}, 'v{k}')")).await })
        })
        .collect();
    let optimized = http.rows("ALTER TABLE lake.s.t EXECUTE optimize").await.1;
    for insert in concurrent {
        insert.await.unwrap();
    }
    let rewritten = optimized[0][0].as_i64().unwrap();
    assert!((200..=204).contains(&rewritten), "rows rewritten: {rewritten}");
    let files = manifest_files(&table);
    assert!(files.len() <= 1 + 4, "a few files after optimize: {files:?}");
    assert_eq!(http.rows(summary).await.1, vec![vec![Value::from(204), Value::from(20706), Value::from(204)]]);
    // Nothing small left to merge: optimize again changes nothing.
    assert_eq!(http.rows("ALTER TABLE lake.s.t EXECUTE optimize(file_size_threshold => '1B')").await.1[0][0], 0);

    // Hostile and wrong uses.
    for (sql, code) in [
        ("ALTER TABLE lake.s.t EXECUTE expire_snapshots", "PROCEDURE_NOT_FOUND"),
        ("ALTER TABLE lake.s.t EXECUTE optimize(nothing => 1)", "INVALID_PROCEDURE_ARGUMENT"),
        ("ALTER TABLE lake.s.t EXECUTE optimize(file_size_threshold => 'big')", "INVALID_PROCEDURE_ARGUMENT"),
        ("ALTER TABLE lake.s.t EXECUTE optimize('1MB', '2MB')", "INVALID_PROCEDURE_ARGUMENT"),
        ("ALTER TABLE lake.s.nothing EXECUTE optimize", "TABLE_NOT_FOUND"),
        ("ALTER TABLE tpch.tiny.orders EXECUTE optimize", "NOT_SUPPORTED"),
        ("ALTER TABLE lake.s.t EXECUTE", "SYNTAX_ERROR"),
        ("CALL lake.system.vacuum('s', 't', '1s')", "INVALID_PROCEDURE_ARGUMENT"),
        ("CALL lake.system.vacuum('s')", "INVALID_PROCEDURE_ARGUMENT"),
        ("CALL lake.system.vacuum('s', 'nothing')", "TABLE_NOT_FOUND"),
        ("CALL lake.system.vacuum('../..', 't')", "TABLE_NOT_FOUND"),
        ("CALL tpch.system.vacuum('tiny', 'orders')", "PROCEDURE_NOT_FOUND"),
    ] {
        assert_eq!(http.error(sql).await["errorName"], code, "{sql}");
    }

    // A reader of a larger table reads its first page, then the table is optimized and
    // vacuumed: the reader still gets every row (the replaced files are younger than the
    // retention).
    http.rows("CREATE TABLE lake.s.big AS SELECT * FROM tpch.tiny.lineitem").await;
    for _ in 0..3 {
        http.rows("INSERT INTO lake.s.big SELECT * FROM tpch.tiny.lineitem").await;
    }
    let big = root.path.join("s/big");
    let before = manifest_files(&big);
    assert!(before.len() >= 4, "{before:?}");
    let mut page = http.first(http.post("SELECT * FROM lake.s.big")).await;
    let mut rows = 0;
    while rows == 0 {
        let next = page["nextUri"].as_str().expect("rows come before the end").to_string();
        page = http.client.get(&next).send().await.unwrap().json().await.unwrap();
        rows += page["data"].as_array().map_or(0, Vec::len);
    }
    assert!(rows < 4 * 60175, "the reader is mid-way: {rows}");
    http.rows("ALTER TABLE lake.s.big EXECUTE optimize(file_size_threshold => '1GB')").await;
    http.rows("CALL lake.system.vacuum('s', 'big')").await;
    assert!(before.iter().all(|f| big.join(f).exists()), "files replaced less than an hour ago stay");
    while let Some(next) = page["nextUri"].as_str().map(str::to_string) {
        page = http.client.get(&next).send().await.unwrap().json().await.unwrap();
        assert!(page.get("error").is_none(), "the reader failed: {}", page["error"]);
        rows += page["data"].as_array().map_or(0, Vec::len);
    }
    assert_eq!(rows, 4 * 60175, "the reader got every row");

    // Once the retention has passed (the files aged by two hours), vacuum deletes the
    // replaced files and manifests, and a dead writer's old file; a fresh uncommitted file
    // (a writer still running) stays.
    let after = manifest_files(&big);
    age_files(&big, std::time::Duration::from_secs(2 * 3600));
    let id = after[0].trim_start_matches("data/").split('-').next().unwrap().to_string();
    std::fs::write(big.join(format!("data/{id}-19700101_000000-dead.parquet")), b"orphan").unwrap();
    age_files(&big.join("data"), std::time::Duration::from_secs(2 * 3600));
    std::fs::write(big.join(format!("data/{id}-20991231_000000-inflight.parquet")), b"young").unwrap();
    http.rows("CALL lake.system.vacuum(schema_name => 's', table_name => 'big', retention => '2h')").await;
    let mut left: Vec<String> = std::fs::read_dir(big.join("data"))
        .unwrap()
        .flatten()
        .map(|e| format!("data/{}", e.file_name().into_string().unwrap()))
        .collect();
    left.sort();
    let mut expected = after.clone();
    expected.push(format!("data/{id}-20991231_000000-inflight.parquet"));
    expected.sort();
    assert_eq!(left, expected, "only the committed files and the young one are left");
    let manifests = std::fs::read_dir(big.join("_flotilla"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".v"))
        .count();
    assert_eq!(manifests, 1, "only the latest manifest is left");
    assert_eq!(http.rows("SELECT count(*) FROM lake.s.big").await.1, vec![vec![Value::from(4 * 60175)]]);
    cluster.shutdown().await;
}

/// `files.maintenance-interval`: tables with enough small files are compacted, and vacuumed,
/// in the background, by whichever of two coordinators the admission leader grants each
/// job to, as queries of user `flotilla` (never two at once for one table); after the leading
/// resource manager is killed, the next one takes over and maintenance goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_compacted_and_vacuumed_in_the_background_and_survive_a_resource_manager() {
    let root = TempDir::new("flotilla-lake");
    let etc = lake_etc(&root.path);
    let lake = format!(
        "connector.name=files\nfiles.root={}\nfiles.maintenance-interval=1s\nfiles.compaction-min-files=5\n\
         files.manifest-retention=1s\n",
        root.path.display()
    );
    std::fs::write(etc.path.join("catalog/lake.properties"), lake).unwrap();
    let mut cluster =
        ProcessCluster::builder().resource_managers(2).coordinators(2).workers(1).etc_dir(&etc.path).start();
    let http = Http::new(&cluster.cluster.coordinators[1].url);
    wait_for_nodes(&http, 5).await;
    http.rows("CREATE SCHEMA lake.s").await;
    http.rows("CREATE TABLE lake.s.t (k bigint)").await;
    let table = root.path.join("s/t");
    let compacted = |inserted: usize| {
        let (http, table) = (&http, table.clone());
        async move {
            for k in 0..inserted {
                http.rows(&format!("INSERT INTO lake.s.t VALUES ({k})")).await;
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            // Compacted (fewer than 5 files listed) and vacuumed (no file left unlisted).
            loop {
                let listed = manifest_files(&table);
                if listed.len() < 5 && data_files(&table) == listed.len() {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "never compacted and vacuumed: {listed:?}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    compacted(8).await;
    assert_eq!(http.rows("SELECT count(*), sum(k) FROM lake.s.t").await.1, vec![vec![Value::from(8), Value::from(28)]]);
    let jobs = "SELECT query, state, created, \"end\" FROM system.runtime.queries \
                WHERE \"user\" = 'flotilla' AND query LIKE 'ALTER TABLE%' ORDER BY created";
    let (_, ran) = http.rows(jobs).await;
    assert!(!ran.is_empty() && ran.iter().all(|r| r[1] == "FINISHED"), "{ran:?}");
    for pair in ran.windows(2) {
        assert!(pair[0][3].as_str() <= pair[1][2].as_str(), "two compactions of one table overlapped: {ran:?}");
    }

    // The leading resource manager dies: the other takes over, and maintenance goes on.
    cluster.cluster.resource_managers[0].kill();
    compacted(8).await;
    assert_eq!(
        http.rows("SELECT count(*), sum(k) FROM lake.s.t").await.1,
        vec![vec![Value::from(16), Value::from(56)]]
    );
}
