//! The distributed plans of the 22 TPC-H queries at `sf1` over three workers, pinned as
//! snapshots (`crates/flotilla/tests/plans/qNN.txt`). A planner change that moves a stage
//! boundary, a broadcast or a task count shows up here as a diff; after checking it, refresh
//! the files with `FLOTILLA_UPDATE_PLANS=1 cargo nextest run --workspace -E 'test(tpch_distributed_plans)'`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::execution::session_state::SessionStateBuilder;
use datafusion_distributed::{DistributedExt, WorkerResolver};
use flotilla_proto::FlotillaError;
use flotilla_sql::catalog::{Catalogs, NodeRow, QueryRow, RuntimeSource};
use flotilla_sql::{Distributor, Engine, SqlSession};
use futures::TryStreamExt;

#[derive(Debug)]
struct NoRuntime;

#[async_trait::async_trait]
impl RuntimeSource for NoRuntime {
    fn nodes(&self) -> Vec<NodeRow> {
        Vec::new()
    }

    fn queries(&self) -> Vec<QueryRow> {
        Vec::new()
    }

    async fn kill_query(
        &self,
        _user: &str,
        query_id: &str,
        _message: Option<&str>,
    ) -> Result<(), flotilla_proto::FlotillaError> {
        Err(flotilla_proto::FlotillaError::new(
            flotilla_proto::ErrorCode::NotFound,
            format!("no query {query_id} here"),
        ))
    }
}

#[derive(Debug, Clone)]
struct Workers(Vec<url::Url>);

impl WorkerResolver for Workers {
    fn get_urls(&self) -> datafusion::common::Result<Vec<url::Url>> {
        Ok(self.0.clone())
    }
}

/// Workers that are never called: EXPLAIN plans without running.
#[derive(Debug)]
struct SomeWorkers(usize);

impl Distributor for SomeWorkers {
    fn distribute(
        &self,
        builder: SessionStateBuilder,
        _: &SqlSession,
    ) -> Result<Option<SessionStateBuilder>, FlotillaError> {
        let urls = (1..=self.0).map(|i| url::Url::parse(&format!("http://worker-{i}:1")).unwrap()).collect();
        Ok(Some(builder.with_distributed_worker_resolver(Workers(urls))))
    }
}

/// An engine with a `tpch` catalog that runs everything in this process.
fn tpch_engine_alone() -> (crate::harness::TempDir, Engine) {
    let etc = crate::harness::TempDir::new("flotilla-plans");
    std::fs::write(etc.path.join("tpch.properties"), "connector.name=tpch\ntpch.column-naming=STANDARD\n").unwrap();
    let catalogs = Catalogs::load_dir(&etc.path).unwrap();
    (etc, Engine::new(&catalogs, Arc::new(NoRuntime)))
}

/// The same, distributing statements over `workers` (never called).
fn tpch_engine(workers: usize) -> (crate::harness::TempDir, Engine) {
    let (etc, engine) = tpch_engine_alone();
    (etc, engine.with_distributor(Arc::new(SomeWorkers(workers))))
}

async fn distributed_plan(engine: &Engine, session: &SqlSession, sql: &str) -> String {
    let result = engine.execute(session, &format!("EXPLAIN (TYPE DISTRIBUTED) {sql}")).await.unwrap();
    let batches: Vec<_> = result.stream.try_collect().await.unwrap();
    let column = batches[0].column(0).as_any().downcast_ref::<datafusion::arrow::array::StringArray>();
    column.unwrap().value(0).to_string()
}

/// A build side is broadcast while its copies (one per task) stay within the budget: the
/// more workers, the smaller what is broadcast, never below DataFusion's own threshold; in
/// one process the whole budget applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_sides_are_broadcast_within_a_budget_shared_by_the_workers() {
    let session = SqlSession { catalog: Some("tpch".into()), schema: Some("sf1".into()), ..Default::default() };
    // customer: 150,000 rows, above DataFusion's 128K-row single-process threshold.
    let join = "SELECT count(*) FROM customer JOIN orders ON c_custkey = o_custkey";
    for (workers, broadcast) in [(2, true), (4, true), (16, false)] {
        let (_etc, engine) = tpch_engine(workers);
        let plan = distributed_plan(&engine, &session, join).await;
        assert_eq!(plan.contains("NetworkBroadcastExec"), broadcast, "{workers} workers:\n{plan}");
        assert_eq!(plan.contains("mode=Partitioned"), !broadcast, "{workers} workers:\n{plan}");
    }
    // In one process (no workers) the whole budget applies: the build side is collected once
    // and shared by the partitions, where DataFusion's own 128K rows would partition it.
    let (_etc, alone) = tpch_engine_alone();
    let plan = distributed_plan(&alone, &session, join).await;
    assert!(plan.contains("mode=CollectLeft") && !plan.contains("DistributedExec"), "{plan}");
    // A LEFT join cannot be broadcast (it emits build-side rows): it stays partitioned, and
    // the aggregate on its key runs in the join's stage, on the partitioning it already has.
    let (_etc, engine) = tpch_engine(2);
    let left = "SELECT c_custkey, count(o_orderkey) FROM customer LEFT JOIN orders ON c_custkey = o_custkey \
                GROUP BY c_custkey";
    let plan = distributed_plan(&engine, &session, left).await;
    assert!(plan.contains("mode=Partitioned, join_type=Left"), "{plan}");
    assert!(plan.contains("AggregateExec: mode=SinglePartitioned") && !plan.contains("NetworkBroadcastExec"), "{plan}");
}

/// A small build side (a few thousand rows) is read by every task that joins it, not
/// broadcast from a stage of its own; a larger one is still broadcast, and stages are
/// numbered without gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_build_sides_are_read_where_they_are_joined() {
    let session = SqlSession { catalog: Some("tpch".into()), schema: Some("sf1".into()), ..Default::default() };
    let (_etc, engine) = tpch_engine(2);
    // nation (25 rows) and supplier (10,000 rows) under partsupp (800,000 rows, two tasks).
    let small = "SELECT count(*) FROM partsupp JOIN supplier ON ps_suppkey = s_suppkey \
                 JOIN nation ON s_nationkey = n_nationkey WHERE n_name = 'GERMANY'";
    let plan = distributed_plan(&engine, &session, small).await;
    assert!(!plan.contains("NetworkBroadcastExec"), "{plan}");
    assert!(plan.contains("Stage 1 ── tasks=2") && !plan.contains("Stage 2"), "{plan}");
    // The tables read in place are read whole by each task (not one task's split of them).
    for table in ["nation", "supplier"] {
        let scan = plan.lines().find(|line| line.contains(&format!("TpchScanExec: table={table},"))).unwrap();
        assert!(!scan.contains("t0:") && scan.contains("parts=1..1/1"), "{plan}");
    }
    // customer (150,000 rows) is above the in-place limit: broadcast from its own stage.
    let large = "SELECT count(*) FROM customer JOIN orders ON c_custkey = o_custkey";
    let plan = distributed_plan(&engine, &session, large).await;
    assert!(plan.contains("NetworkBroadcastExec") && plan.contains("Stage 2"), "{plan}");
}

fn queries_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tpch/queries")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_distributed_plans_are_pinned() {
    let (_etc, engine) = tpch_engine(3);
    let mut session = SqlSession { catalog: Some("tpch".into()), schema: Some("sf1".into()), ..Default::default() };
    // Plans depend on the partitions per operator; fix them rather than take the machine's.
    session.properties.insert("task_concurrency".into(), "4".into());

    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans");
    let update = std::env::var_os("FLOTILLA_UPDATE_PLANS").is_some();
    let mut mismatched = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(queries_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 22);
    for path in paths {
        let sql = std::fs::read_to_string(&path).unwrap();
        let plan = distributed_plan(&engine, &session, &sql).await;
        assert!(
            plan.contains("DistributedExec") && plan.contains("Stage 1 "),
            "{} runs on the workers:\n{plan}",
            path.display()
        );
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let snapshot = snapshots.join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(&snapshots).unwrap();
            std::fs::write(&snapshot, &plan).unwrap();
            continue;
        }
        match std::fs::read_to_string(&snapshot) {
            Ok(pinned) if pinned == plan => {}
            Ok(pinned) => mismatched.push(format!("{name}:\n--- pinned\n{pinned}\n--- now\n{plan}")),
            Err(_) => mismatched.push(format!("{name}: no snapshot at {}", snapshot.display())),
        }
    }
    assert!(
        mismatched.is_empty(),
        "distributed plans changed (FLOTILLA_UPDATE_PLANS=1 to accept):\n{}",
        mismatched.join("\n")
    );
}

/// Writes the `tiny` TPC-H tables as Parquet files (`flotilla tpch-gen`) under `dir/lake`,
/// with `lake.properties` (a `files` catalog over them) and `tpch.properties` in `dir`.
pub(crate) fn tiny_lake(dir: &Path) -> PathBuf {
    let lake = dir.join("lake");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["tpch-gen", "--scale", "0.01", "--output"])
        .arg(lake.join("tiny"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(dir.join("lake.properties"), format!("connector.name=files\nfiles.root={}\n", lake.display()))
        .unwrap();
    std::fs::write(dir.join("tpch.properties"), "connector.name=tpch\ntpch.column-naming=STANDARD\n").unwrap();
    lake
}

/// Part's rows grouped before a join keeps a few parts (the filter spares the aggregate)...
const JOIN_FILTER_SPARES_AGGREGATE: &str = "SELECT count(*), sum(a) FROM \
    (SELECT l_partkey, avg(l_quantity) AS a FROM lineitem GROUP BY l_partkey) q \
    JOIN part ON p_partkey = q.l_partkey WHERE p_brand = 'Brand#42'";
/// ...and read by that join directly (the filter would only repeat the join's probe).
const JOIN_FILTER_DIRECT: &str =
    "SELECT count(*), sum(l_quantity) FROM lineitem JOIN part ON p_partkey = l_partkey WHERE p_brand = 'Brand#42'";

/// ...and read through a static filter before the aggregate (TPC-H q20's shape): the scan
/// cannot filter rows in the reader (its date range would be evaluated there too), so the
/// join's filter joins the `FilterExec` above it, after the date range.
const JOIN_FILTER_SPARES_FILTERED_AGGREGATE: &str = "SELECT count(*), sum(a) FROM \
    (SELECT l_partkey, avg(l_quantity) AS a FROM lineitem WHERE l_shipdate >= DATE '1994-01-01' \
     GROUP BY l_partkey) q JOIN part ON p_partkey = q.l_partkey WHERE p_brand = 'Brand#42'";

/// Whether the `FilterExec` over the scan of `table` evaluates a dynamic filter.
fn filter_over_scan_has_join_filter(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>, table: &str) -> bool {
    let text = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string();
    let lines: Vec<&str> = text.lines().collect();
    let scan = lines.iter().position(|line| line.contains(&format!("{table}.parquet"))).unwrap();
    lines[scan - 1].contains("FilterExec") && lines[scan - 1].contains("DynamicFilter")
}

/// ...and a join's build side (suppliers) reached by the filter of a join above it (the
/// suppliers of one nation), which would otherwise pass every supplier's matches up to that
/// join. A semi join (`IN`): an inner join with the nation would be moved down next to
/// `supplier` instead (`SinkSelectiveJoins`).
const JOIN_FILTER_SPARES_BUILD: &str = "SELECT count(*) FROM supplier JOIN lineitem ON s_suppkey = l_suppkey \
    WHERE s_nationkey IN (SELECT n_nationkey FROM nation WHERE n_name = 'ARGENTINA')";

/// Whether each Parquet scan of `table` in `plan` filters rows (row-level pushdown).
fn scans_filtering_rows(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>, table: &str) -> Vec<bool> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::datasource::physical_plan::ParquetSource;
    use datafusion::datasource::source::DataSourceExec;
    let mut found = Vec::new();
    plan.apply(|node| {
        if let Some((files, parquet)) =
            node.downcast_ref::<DataSourceExec>().and_then(|scan| scan.downcast_to_file_source::<ParquetSource>())
        {
            let path = files.file_groups.iter().flat_map(|group| group.files()).next().map(|f| f.path().to_string());
            if path.is_some_and(|path| path.ends_with(&format!("{table}.parquet"))) {
                found.push(parquet.table_parquet_options().global.pushdown_filters);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    found
}

/// `plan` with the probe side of its (first) hash join under `layers` filters that keep
/// every row.
fn bury_probe_side(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    layers: usize,
) -> Arc<dyn datafusion::physical_plan::ExecutionPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
    use datafusion::physical_expr::expressions::lit;
    use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::joins::HashJoinExec;
    plan.transform_down(|node| {
        if node.downcast_ref::<HashJoinExec>().is_none() {
            return Ok(Transformed::no(node));
        }
        let (build, mut probe) = (Arc::clone(node.children()[0]), Arc::clone(node.children()[1]));
        for _ in 0..layers {
            probe = Arc::new(FilterExec::try_new(lit(true), probe)?);
        }
        let join = replace_children_if_necessary(node, vec![build, probe])?;
        Ok(Transformed::new(join, true, TreeNodeRecursion::Jump))
    })
    .unwrap()
    .data
}

/// The rule on DataFusion's own plans: a scan whose rows go through an aggregate before the
/// join whose dynamic filter reaches it filters rows in the scan; one read by the join
/// directly does not; and where hash repartitions become stage boundaries (a distributed
/// statement) the filter cannot reach the scan, so neither does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_filters_become_row_filters_only_where_they_spare_work() {
    use datafusion::physical_optimizer::PhysicalOptimizerRule;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    use flotilla_sql::join_filters::FilterRowsByJoinFilters;
    let dir = crate::harness::TempDir::new("flotilla-join-filters");
    let lake = tiny_lake(&dir.path);
    let context = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    for table in ["lineitem", "part", "supplier", "nation"] {
        let path = lake.join("tiny").join(format!("{table}.parquet"));
        context.register_parquet(table, path.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    }
    // The suppliers are the build side of their join with `lineitem`, under the join with
    // `nation`, whose filter reaches them; `nation` has a static predicate. A distributed
    // statement reads so small a table in the joining task, so there too.
    let plan = context.sql(JOIN_FILTER_SPARES_BUILD).await.unwrap().create_physical_plan().await.unwrap();
    let text = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string();
    let supplier = text.lines().find(|line| line.contains("supplier.parquet")).unwrap_or_default();
    assert!(supplier.contains("DynamicFilter"), "{text}");
    let options = context.state().config_options().clone();
    for distributed in [false, true] {
        let rewritten = FilterRowsByJoinFilters { distributed }.optimize(plan.clone(), &options).unwrap();
        assert_eq!(scans_filtering_rows(&rewritten, "supplier"), vec![true], "{text}");
        assert_eq!(scans_filtering_rows(&rewritten, "lineitem"), vec![false], "{text}");
    }
    for (sql, spares) in [(JOIN_FILTER_SPARES_AGGREGATE, true), (JOIN_FILTER_DIRECT, false)] {
        let plan = context.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        assert_eq!(scans_filtering_rows(&plan, "lineitem"), vec![false], "DataFusion's own plan");
        let options = context.state().config_options().clone();
        let one = FilterRowsByJoinFilters::default().optimize(plan.clone(), &options).unwrap();
        assert_eq!(scans_filtering_rows(&one, "lineitem"), vec![spares], "{sql}");
        // The part scan has a static predicate: it stays a FilterExec's.
        assert_eq!(scans_filtering_rows(&one, "part"), vec![false], "{sql}");
        let distributed = FilterRowsByJoinFilters { distributed: true }.optimize(plan, &options).unwrap();
        assert_eq!(scans_filtering_rows(&distributed, "lineitem"), vec![false], "{sql}");
    }
    // A static predicate on the scan too: the join's filter goes to the filter above it, in
    // one process; in a distributed statement the repartition before the final aggregate
    // is an exchange, and `cross_stage_filters` sees to it.
    let plan = context.sql(JOIN_FILTER_SPARES_FILTERED_AGGREGATE).await.unwrap().create_physical_plan().await.unwrap();
    assert!(!filter_over_scan_has_join_filter(&plan, "lineitem"), "DataFusion's own plan");
    let one = FilterRowsByJoinFilters::default().optimize(plan.clone(), &options).unwrap();
    assert!(filter_over_scan_has_join_filter(&one, "lineitem"));
    assert_eq!(scans_filtering_rows(&one, "lineitem"), vec![false]);
    let distributed = FilterRowsByJoinFilters { distributed: true }.optimize(plan, &options).unwrap();
    assert!(!filter_over_scan_has_join_filter(&distributed, "lineitem"));
    // Plans deeper than the rule walks (its recursion is bounded) are left as they are: the
    // same join with its probe side under more pass-through filters than that keeps its scan
    // as DataFusion planned it; under a few, the scan filters rows.
    let plan = context.sql(JOIN_FILTER_SPARES_AGGREGATE).await.unwrap().create_physical_plan().await.unwrap();
    let options = context.state().config_options().clone();
    for (layers, spares) in [(8, true), (flotilla_sql::join_filters::MAX_DEPTH + 8, false)] {
        let deep = bury_probe_side(plan.clone(), layers);
        let rewritten = FilterRowsByJoinFilters::default().optimize(deep, &options).unwrap();
        assert_eq!(scans_filtering_rows(&rewritten, "lineitem"), vec![spares], "{layers} layers");
    }
    // A partitioned join: only a hash repartition between its probe scan and it, which a
    // lookup per row in the reader does not pay for.
    let mut config = SessionConfig::new().with_target_partitions(2);
    config.options_mut().optimizer.hash_join_single_partition_threshold = 0;
    config.options_mut().optimizer.hash_join_single_partition_threshold_rows = 0;
    let context = SessionContext::new_with_config(config);
    for table in ["lineitem", "orders"] {
        let path = lake.join("tiny").join(format!("{table}.parquet"));
        context.register_parquet(table, path.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    }
    let partitioned = "SELECT count(*) FROM lineitem JOIN orders ON l_orderkey = o_orderkey \
                       WHERE o_orderdate < DATE '1993-01-01'";
    let plan = context.sql(partitioned).await.unwrap().create_physical_plan().await.unwrap();
    let text = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string();
    let probe = text.lines().find(|line| line.contains("lineitem.parquet")).unwrap_or_default();
    assert!(text.contains("mode=Partitioned") && probe.contains("DynamicFilter"), "{text}");
    let options = context.state().config_options().clone();
    let one = FilterRowsByJoinFilters::default().optimize(plan, &options).unwrap();
    assert_eq!(scans_filtering_rows(&one, "lineitem"), vec![false], "{text}");
    // A partitioned build side: hash-repartitioned on its way to the join, which in a
    // distributed statement is an exchange between stages the filter does not cross.
    for table in ["supplier", "nation"] {
        let path = lake.join("tiny").join(format!("{table}.parquet"));
        context.register_parquet(table, path.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    }
    let plan = context.sql(JOIN_FILTER_SPARES_BUILD).await.unwrap().create_physical_plan().await.unwrap();
    let text = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string();
    for (distributed, spares) in [(false, true), (true, false)] {
        let rewritten = FilterRowsByJoinFilters { distributed }.optimize(plan.clone(), &options).unwrap();
        assert_eq!(scans_filtering_rows(&rewritten, "supplier"), vec![spares], "{text}");
    }
}

/// The engine plans with the rule: the aggregated query's `lineitem` scan drops rows itself
/// (EXPLAIN ANALYZE counts them), the direct one's does not, the build side's `supplier`
/// scan does, and all answer as the `tpch` catalog does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_scans_drop_rows_a_join_filter_rules_out_before_an_aggregate() {
    let dir = crate::harness::TempDir::new("flotilla-join-filters");
    tiny_lake(&dir.path);
    let engine = Engine::new(&Catalogs::load_dir(&dir.path).unwrap(), Arc::new(NoRuntime));
    let lake = SqlSession { catalog: Some("lake".into()), schema: Some("tiny".into()), ..Default::default() };
    let tpch = SqlSession { catalog: Some("tpch".into()), ..lake.clone() };
    let run = |session: &SqlSession, sql: String| {
        let (engine, session) = (&engine, session.clone());
        async move {
            let result = engine.execute(&session, &sql).await.unwrap();
            let plan = result.plan.clone();
            let batches: Vec<_> = result.stream.try_collect().await.unwrap();
            (datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string(), plan)
        }
    };
    // The filter over the date range keeps only the rows of the brand's parts (about 1.5K of the
    // 36K in the range at this scale), and the answer is the same.
    let (answer, _) = run(&lake, JOIN_FILTER_SPARES_FILTERED_AGGREGATE.to_string()).await;
    let (expected, _) = run(&tpch, JOIN_FILTER_SPARES_FILTERED_AGGREGATE.to_string()).await;
    assert_eq!(answer, expected);
    let (analyzed, _) = run(&lake, format!("EXPLAIN ANALYZE {JOIN_FILTER_SPARES_FILTERED_AGGREGATE}")).await;
    let filter = analyzed.lines().find(|line| line.contains("FilterExec") && line.contains("DynamicFilter"));
    let kept = filter.and_then(|line| line.split("output_rows=").nth(1)).and_then(|rest| rest.split([',', ']']).next());
    // EXPLAIN ANALYZE writes 1,410 rows as "1.41 K".
    let kept = kept.and_then(|rows| match rows.trim().strip_suffix(" K") {
        Some(thousands) => thousands.parse::<f64>().ok().map(|k| (k * 1000.0) as u64),
        None => rows.trim().parse::<u64>().ok(),
    });
    assert!(kept.is_some_and(|rows| rows > 0 && rows < 10_000), "{kept:?}\n{analyzed}");
    for (sql, table, spares) in [
        (JOIN_FILTER_SPARES_AGGREGATE, "lineitem", true),
        (JOIN_FILTER_DIRECT, "lineitem", false),
        (JOIN_FILTER_SPARES_BUILD, "supplier", true),
    ] {
        let (answer, plan) = run(&lake, sql.to_string()).await;
        let (expected, _) = run(&tpch, sql.to_string()).await;
        assert_eq!(answer, expected, "{sql}");
        assert_eq!(scans_filtering_rows(&plan.unwrap(), table), vec![spares], "{sql}");
        let (analyzed, _) = run(&lake, format!("EXPLAIN ANALYZE {sql}")).await;
        let scan = analyzed.lines().find(|line| line.contains(&format!("{table}.parquet"))).unwrap_or_default();
        let pruned = scan.split("pushdown_rows_pruned=").nth(1).and_then(|rest| rest.split([',', ']']).next());
        assert_eq!(pruned.is_some_and(|count| count != "0"), spares, "{analyzed}");
    }
}

/// A distributed statement whose stages all come out as one task runs in the coordinator,
/// planned as one process plans it: the distributed session plans its joins for tasks on
/// workers (joins that cannot be broadcast partitioned where one process collects them: TPC-H
/// q22's coordinator repartitioned all of `orders` for its anti join).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_of_one_task_run_the_plan_of_one_process() {
    let dir = crate::harness::TempDir::new("flotilla-one-task");
    tiny_lake(&dir.path);
    let catalogs = Catalogs::load_dir(&dir.path).unwrap();
    let alone = Engine::new(&catalogs, Arc::new(NoRuntime));
    let cluster = Engine::new(&catalogs, Arc::new(NoRuntime)).with_distributor(Arc::new(SomeWorkers(2)));
    let session = SqlSession { catalog: Some("lake".into()), schema: Some("tiny".into()), ..Default::default() };
    // A FULL join cannot be broadcast: with its build side above DataFusion's 1 MB (60K
    // rows with their comments), the distributed session would partition it.
    let sql = "SELECT count(a.l_comment), count(b.l_comment) FROM lineitem a FULL JOIN lineitem b \
               ON a.l_orderkey = b.l_orderkey AND a.l_linenumber = b.l_linenumber";
    let plan = distributed_plan(&cluster, &session, sql).await;
    assert!(!plan.contains("DistributedExec") && !plan.contains("mode=Partitioned"), "{plan}");
    assert_eq!(plan, distributed_plan(&alone, &session, sql).await);
    // A statement with stages of several tasks is still distributed.
    let (_etc, engine) = tpch_engine(2);
    let session = SqlSession { catalog: Some("tpch".into()), schema: Some("sf1".into()), ..Default::default() };
    assert!(distributed_plan(&engine, &session, sql).await.contains("DistributedExec"));
}
