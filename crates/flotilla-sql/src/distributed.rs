//! What the SQL layer adds to `datafusion-distributed` so that queries run across workers.
//!
//! The distributed planner itself (stages cut at repartitions, broadcast of small join build
//! sides, coalesce to the head stage that runs on the coordinator, Arrow Flight between
//! tasks) is `datafusion-distributed`'s; this module gives it what is ours:
//!
//! - [`FlotillaCodec`]: how our own operators ([`TpchScanExec`]) travel to workers;
//! - task counts and splitting for our sources: a `tpch` scan is split by giving each task
//!   a disjoint set of tpchgen parts, so scans scale with workers and read no storage;
//! - [`is_distributable`]: a statement is distributed only when every table it reads can be
//!   read on a worker (the `system` and `information_schema` tables live on the coordinator);
//! - [`Distributor`]: the coordinator's hook that picks the workers of a statement;
//! - [`worker_session_state`]: the session a worker executes its tasks in (the same
//!   functions as the coordinator, so plans decode the same).

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::source_as_provider;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExt, DistributedLeafExec, ScaleUpLeafNodeEvent,
    ScaleUpLeafNodeEventResponse,
};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use flotilla_proto::FlotillaError;

use crate::catalog::blackhole::{BlackholeScanExec, BlackholeScanSpec};
use crate::catalog::files_write::{FilesWriteExec, WriteSpec};
use crate::catalog::tpch::TpchTableProvider;
use crate::catalog::tpch_scan::{TpchScanExec, TpchScanSpec};
use crate::functions::trino_functions;
use crate::session::SqlSession;

/// Rows one task of a scan should generate at least; smaller tables get fewer tasks, and a
/// table below it is read by one task.
pub const MIN_ROWS_PER_TASK: usize = 10_000;

/// Build sides of hash joins up to this many bytes in all (rows: [`BROADCAST_ROWS`]), divided
/// by the tasks a stage of the statement may have (so the copies stay within the budget), are
/// sent whole to every task: a broadcast build side leaves the probe side where it is read, where a
/// partitioned join moves both sides over the network. DataFusion's single-process
/// thresholds (1 MB, 128K rows) stay the floor.
pub const BROADCAST_BYTES: usize = 64 * 1024 * 1024;
/// See [`BROADCAST_BYTES`].
/// Kept small: where a connector knows rows but not bytes (the `tpch` tables), a wide build
/// side of this many rows is copied to every task (a million orders with their comments is
/// some 170 MB per worker) and a hash join's build side cannot spill.
pub const BROADCAST_ROWS: usize = 1024 * 1024;

/// Plans joins for the tasks a distributed statement may run per stage (its
/// `max_tasks_per_stage`, else its workers): build sides within the broadcast budget
/// ([`BROADCAST_BYTES`], [`BROADCAST_ROWS`], divided by those tasks) are collected, and
/// broadcast by the distributed planner, instead of shuffled with their probe side.
pub fn plan_joins_for_tasks(config: &mut datafusion::prelude::SessionConfig) {
    let limit = datafusion_distributed::DistributedConfig::from_session_config(config)
        .map(|distributed| distributed.max_tasks_per_stage)
        .unwrap_or(0);
    let tasks = match limit {
        0 => statement_workers(config).len().max(1),
        limit => limit,
    };
    set_broadcast_budget(config.options_mut(), tasks);
}

/// The workers a distributed statement may run on (its worker resolver's); none when it
/// has no resolver.
pub fn statement_workers(config: &datafusion::prelude::SessionConfig) -> Vec<url::Url> {
    datafusion_distributed::get_distributed_worker_resolver(config)
        .and_then(|resolver| resolver.get_urls())
        .unwrap_or_default()
}

/// Sets DataFusion's collect-the-build-side thresholds to the broadcast budget divided by
/// `tasks` (one: a statement that runs in this process), never below DataFusion's own.
/// In one process a collected build side is built once and shared by every partition, and
/// the probe side keeps its partitioning: no repartition of the probe side, and the join's
/// dynamic filter reaches the probe side's scan (TPC-H q18 over Parquet in one process:
/// 551 → 338 ms).
pub fn set_broadcast_budget(options: &mut datafusion::config::ConfigOptions, tasks: usize) {
    let tasks = tasks.max(1);
    let defaults = datafusion::config::OptimizerOptions::default();
    let optimizer = &mut options.optimizer;
    optimizer.hash_join_single_partition_threshold =
        defaults.hash_join_single_partition_threshold.max(BROADCAST_BYTES / tasks);
    optimizer.hash_join_single_partition_threshold_rows =
        defaults.hash_join_single_partition_threshold_rows.max(BROADCAST_ROWS / tasks);
}

/// Puts [`PartitionUnbroadcastableJoins`] right after DataFusion's join selection in a
/// distributed statement's physical optimizer, and has its scans filtered by join filters
/// only where producer and scan will share a stage
/// ([`FilterRowsByJoinFilters`](crate::join_filters::FilterRowsByJoinFilters)).
///
/// Edits the session's own rule list (`physical_optimizers`): the builder's
/// `physical_optimizer_rules` are rules *appended* to that list when it is built, so
/// editing a default list there ran DataFusion's whole optimizer a second time after the
/// first, join selection included, on a plan whose joins already had dynamic filters.
pub fn with_join_rules(builder: &mut SessionStateBuilder) {
    use crate::join_filters::{FilterRowsByJoinFilters, NAME};
    let rules = &mut builder
        .physical_optimizers()
        .get_or_insert_with(datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new)
        .rules;
    let at = rules.iter().position(|rule| rule.name() == "join_selection").map_or(0, |i| i + 1);
    rules.insert(at, Arc::new(PartitionUnbroadcastableJoins));
    let distributed = Arc::new(FilterRowsByJoinFilters { distributed: true });
    match rules.iter().position(|rule| rule.name() == NAME) {
        Some(at) => rules[at] = distributed,
        None => rules.push(distributed),
    }
}

/// Whether the distributed planner cut `plan` into stages for workers: it returns the plan
/// as planned (no `DistributedExec`) where every stage would be one task in this process.
pub fn runs_distributed(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    use datafusion::common::tree_node::TreeNode;
    use datafusion_distributed::{DistributedExec, NetworkBoundaryExt};
    plan.exists(|node| Ok(node.is::<DistributedExec>() || node.as_ref().is_network_boundary()))
}

/// Plans the joins that cannot be broadcast as DataFusion would in one process. With the
/// raised thresholds of [`plan_joins_for_tasks`], join selection collects every build side
/// under them, but a join that emits build-side rows (LEFT, FULL, LEFT SEMI/ANTI/MARK)
/// cannot be broadcast: datafusion-distributed makes it partitioned afterwards, too late for
/// DataFusion's distribution rule, which has already added a shuffle above it for what
/// reads the join's output (an aggregate on the join key, say) although a partitioned join's
/// output is partitioned on that key already. Run right after join selection, this turns
/// such joins whose build side is above DataFusion's own thresholds back into partitioned
/// ones, so the plan above them is distributed once.
#[derive(Debug)]
pub struct PartitionUnbroadcastableJoins;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for PartitionUnbroadcastableJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::common::JoinType;
        use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
        let defaults = datafusion::config::OptimizerOptions::default();
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else { return Ok(Transformed::no(node)) };
            let broadcastable = matches!(
                join.join_type(),
                JoinType::Inner | JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark
            );
            if *join.partition_mode() != PartitionMode::CollectLeft || broadcastable {
                return Ok(Transformed::no(node));
            }
            // What DataFusion collects on its own thresholds stays collected.
            #[allow(deprecated)]
            let statistics = join.left().partition_statistics(None)?;
            let small = match (statistics.total_byte_size.get_value(), statistics.num_rows.get_value()) {
                (Some(bytes), _) => *bytes < defaults.hash_join_single_partition_threshold,
                (None, Some(rows)) => *rows < defaults.hash_join_single_partition_threshold_rows,
                (None, None) => false,
            };
            if small {
                return Ok(Transformed::no(node));
            }
            let partitioned = join.builder().with_partition_mode(PartitionMode::Partitioned).build()?;
            Ok(Transformed::yes(Arc::new(partitioned) as Arc<dyn ExecutionPlan>))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "flotilla_partition_unbroadcastable_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Reads small broadcast build sides where they are joined: a broadcast stage of one task
/// that reads only small tables (no stage below it) is put in place of its
/// `NetworkBroadcastExec`, and every consumer task reads those tables whole. Small is what
/// DataFusion collects in one process on its own: files of up to 1 MB in all, or, for
/// sources that know rows and not files (`tpch`), up to 128K rows (`nation`, `region`, and
/// `supplier` up to about sf1). Each such stage was a round trip on the path of the join
/// that waits for it (a task started on a worker, its rows sent on to every consumer),
/// which costs more than reading the rows again. Run on the distributed plan, before its
/// tasks are sent.
pub fn read_small_build_sides_in_place(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion_distributed::{BroadcastExec, NetworkBoundary, NetworkBoundaryExt, NetworkBroadcastExec, Stage};
    let plan = plan.transform_up(|node| {
        let Some(Stage::Local(stage)) = node.downcast_ref::<NetworkBroadcastExec>().map(|b| b.input_stage()) else {
            return Ok(Transformed::no(node));
        };
        let Some(head) = stage.plan.downcast_ref::<BroadcastExec>() else { return Ok(Transformed::no(node)) };
        let input = Arc::clone(head.input());
        let mut small = stage.tasks == 1;
        input.apply(|plan| {
            if plan.as_ref().is_network_boundary() {
                small = false;
            } else if plan.children().is_empty() {
                let leaf = plan.downcast_ref::<DistributedLeafExec>().map_or(plan, |leaf| leaf.original());
                small &= small_leaf(leaf)?;
            }
            Ok(if small { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
        })?;
        if !small {
            return Ok(Transformed::no(node));
        }
        // The stage's leaves were split for one task; every consumer task reads them whole.
        let whole = input.transform_up(|plan| match plan.downcast_ref::<DistributedLeafExec>() {
            Some(leaf) => Ok(Transformed::yes(Arc::clone(leaf.original()))),
            None => Ok(Transformed::no(plan)),
        })?;
        Ok(Transformed::yes(whole.data))
    })?;
    if !plan.transformed {
        return Ok(plan.data);
    }
    // Stages numbered 1.. again, bottom up as the distributed planner numbers them.
    let mut next = 1;
    plan.data
        .transform_up(|node| {
            let Some(boundary) = node.as_ref().as_network_boundary() else { return Ok(Transformed::no(node)) };
            let Stage::Local(stage) = boundary.input_stage() else { return Ok(Transformed::no(node)) };
            let mut renumbered = stage.clone();
            renumbered.num = next;
            next += 1;
            let boundary = boundary.with_input_stage(Stage::Local(renumbered))?;
            Ok(Transformed::yes(boundary as Arc<dyn ExecutionPlan>))
        })
        .map(|transformed| transformed.data)
}

/// Whether a scan reads no more than DataFusion collects on its own in one process: its
/// files' bytes (the ranges it reads) when it reads files, else its rows.
pub(crate) fn small_leaf(leaf: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    let defaults = datafusion::config::OptimizerOptions::default();
    let files =
        leaf.downcast_ref::<DataSourceExec>().and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>());
    if let Some(files) = files {
        let bytes: u64 = files
            .file_groups
            .iter()
            .flat_map(|group| group.iter())
            .map(|file| {
                file.range.as_ref().map_or(file.object_meta.size, |range| (range.end - range.start).max(0) as u64)
            })
            .sum();
        return Ok(bytes <= defaults.hash_join_single_partition_threshold as u64);
    }
    #[allow(deprecated)]
    let rows = leaf.partition_statistics(None)?.num_rows;
    Ok(rows.get_value().is_some_and(|rows| *rows <= defaults.hash_join_single_partition_threshold_rows))
}

/// Chooses the workers of one distributed statement (the coordinator implements it).
pub trait Distributor: Send + Sync + fmt::Debug {
    /// Adds the worker resolver, routing and channels for `session`'s statement to `builder`,
    /// or `None` when the statement should run right here (the only worker is this process).
    /// Fails (`NO_NODES_AVAILABLE`) when the statement's warehouse has no live worker.
    fn distribute(
        &self,
        builder: SessionStateBuilder,
        session: &SqlSession,
    ) -> std::result::Result<Option<SessionStateBuilder>, FlotillaError>;
}

/// Whether every table a plan reads can be read on a worker (and it reads at least one).
pub fn is_distributable(plan: &LogicalPlan) -> bool {
    let mut tables = 0usize;
    let mut local_only = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables += 1;
            // Generated tables, and files every node reads at the same path (the `files`
            // connector's listing tables).
            let on_workers = source_as_provider(&scan.source).is_ok_and(|provider| {
                provider.is::<TpchTableProvider>()
                    || provider.is::<crate::catalog::blackhole::BlackholeTable>()
                    || provider.is::<datafusion::datasource::listing::ListingTable>()
                    || provider.is::<crate::catalog::files_table::FilesTable>()
                    // A view is as distributable as what it reads.
                    || provider
                        .downcast_ref::<datafusion::catalog::view::ViewTable>()
                        .is_some_and(|view| is_distributable(view.logical_plan()))
            });
            if !on_workers {
                local_only = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables > 0 && !local_only
}

/// Adds our codec and our sources' task handlers to a session, on coordinators and workers.
pub fn with_flotilla_operators(builder: SessionStateBuilder) -> SessionStateBuilder {
    builder
        .with_distributed_user_codec(FlotillaCodec)
        .with_distributed_desired_task_count_handler(task_count)
        .with_distributed_scale_up_leaf_node_handler(scale_up)
}

/// The session a worker runs a task in: the worker's runtime and the distributed settings
/// the coordinator sent (already in `builder`), plus our functions and operators.
pub fn worker_session_state(builder: SessionStateBuilder) -> SessionState {
    let mut state =
        with_flotilla_operators(builder).with_distributed_worker_plan_rewrite_handler(cheap_conjuncts_first).build();
    // The decimal arithmetic functions the coordinator plans ([`crate::decimal`]) and the
    // check of scalar subqueries' rows ([`crate::single_row`]) arrive by name.
    for function in trino_functions()
        .into_iter()
        .chain(crate::decimal::decimal_functions())
        .chain([crate::single_row::single_row_function()])
    {
        let _ = datafusion::execution::FunctionRegistry::register_udf(&mut state, function);
    }
    state
}

/// A task's plan as the worker runs it, its filters' conjuncts in the order that costs least
/// ([`crate::conjuncts`]). The coordinator plans them so, but the workers were measured
/// evaluating TPC-H q06's five comparisons the way DataFusion builds them (its profile on a
/// worker showed the pre-selection scatter of the planned shape), so the worker sees to it.
fn cheap_conjuncts_first(
    event: datafusion_distributed::WorkerPlanRewriteEvent<'_>,
) -> Result<datafusion_distributed::WorkerPlanRewriteEventResponse> {
    use datafusion::physical_optimizer::PhysicalOptimizerRule;
    let planned = Arc::clone(&event.plan);
    let plan = crate::conjuncts::EvaluateCheapConjunctsFirst.optimize(event.plan, event.session_config.options())?;
    if !Arc::ptr_eq(&planned, &plan) {
        tracing::debug!("filters of a task's plan rebuilt with their cheap conjuncts first");
    }
    Ok(datafusion_distributed::WorkerPlanRewriteEventResponse::new(plan))
}

/// How many tasks a scan takes: a `tpch` scan by its rows; a `blackhole` scan at most one
/// per split; a Parquet scan by the bytes it reads ([`parquet_task_count`]). Other scans
/// are left to `datafusion-distributed` (their files' bytes).
fn task_count(event: DesiredTaskCountEvent<'_>) -> Option<Result<DesiredTaskCountEventResponse>> {
    if let Some(scan) = event.plan.downcast_ref::<BlackholeScanExec>() {
        let splits = scan.spec().generation.split_count.max(1) as usize;
        return Some(Ok(DesiredTaskCountEventResponse::maximum(splits)));
    }
    tpch_task_count(event).or_else(|| parquet_task_count(event))
}

/// The Parquet footers this process has read (its file metadata cache), in a statement's
/// session so that [`parquet_task_count`] can size scans by what they read.
#[derive(Clone)]
pub struct ParquetFooters(pub Arc<datafusion::execution::cache::cache_manager::FileMetadataCache>);

impl fmt::Debug for ParquetFooters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ParquetFooters")
    }
}

/// Tasks for a Parquet scan: `datafusion-distributed` sizes a file scan by its files' bytes
/// (a task per `max_split_size` times the partitions a task runs), but a Parquet scan reads
/// only the column chunks of its columns: q16 reads two integer columns of `partsupp`, a
/// twelfth of the file (3.4 of 41 MB, one row group), and was spread over two tasks, one
/// with nothing to read, and four stages.
/// Sized by the bytes its columns take in the files instead ([`projected_bytes`]); when a
/// footer is not known yet (the statement's planning reads footers through the same cache,
/// so only where statistics are off), the files' bytes as before.
fn parquet_task_count(event: DesiredTaskCountEvent<'_>) -> Option<Result<DesiredTaskCountEventResponse>> {
    use datafusion::datasource::physical_plan::{FileScanConfig, ParquetSource};
    use datafusion::datasource::source::DataSourceExec;
    let scan = event.plan.downcast_ref::<DataSourceExec>()?;
    let files = scan.data_source().downcast_ref::<FileScanConfig>()?;
    files.file_source().downcast_ref::<ParquetSource>()?;
    let footers = event.session_config.get_extension::<ParquetFooters>()?;
    let columns = read_columns(files);
    let columns: std::collections::HashSet<&str> = columns.iter().map(String::as_str).collect();
    let bytes = projected_bytes(files, &columns, footers.0.as_ref())?;
    let split = datafusion_distributed::DistributedConfig::from_session_config(event.session_config)
        .ok()?
        .file_scan_config_bytes_per_partition
        .max(1);
    let partitions = event.session_config.target_partitions().max(1);
    let tasks = (bytes as usize).div_ceil(split).div_ceil(partitions).max(1);
    Some(Ok(DesiredTaskCountEventResponse::desired(tasks)))
}

/// The file columns a scan reads: those its projection refers to (by index, so a computed
/// projection counts the columns it is computed from), every file column without one.
fn read_columns(files: &datafusion::datasource::physical_plan::FileScanConfig) -> Vec<String> {
    let schema = files.file_schema();
    // `column_indices` collects the columns of every projected expression (the table schema's
    // indices: those past the file schema are partition columns, not read from the file).
    // Not `file_column_projection_indices`: it panics on a computed projection.
    let indices = match files.file_source().projection() {
        Some(projection) => projection.column_indices(),
        None => (0..schema.fields().len()).collect(),
    };
    indices.into_iter().filter_map(|i| schema.fields().get(i)).map(|field| field.name().clone()).collect()
}

/// The bytes a Parquet scan reads for `columns`: each file's byte range (the scan's share of
/// the file) times the share of the file's compressed column chunks that belong to those
/// columns. `None` when a file's footer is not in `footers` (or is stale).
fn projected_bytes(
    files: &datafusion::datasource::physical_plan::FileScanConfig,
    columns: &std::collections::HashSet<&str>,
    footers: &datafusion::execution::cache::cache_manager::FileMetadataCache,
) -> Option<u64> {
    use datafusion::datasource::physical_plan::parquet;
    let mut total = 0u64;
    for file in files.file_groups.iter().flat_map(|group| group.iter()) {
        let entry = footers.get(&file.object_meta.location)?;
        if !entry.is_valid_for(&file.object_meta) {
            return None;
        }
        // Planning caches the footer as `metadata`'s type, the Parquet reader as its own.
        let any = entry.file_metadata.as_any();
        let footer = match any.downcast_ref::<parquet::metadata::CachedParquetMetaData>() {
            Some(cached) => cached.parquet_metadata(),
            None => any.downcast_ref::<parquet::CachedParquetMetaData>()?.parquet_metadata(),
        };
        let (mut all, mut read) = (0u64, 0u64);
        for chunk in footer.row_groups().iter().flat_map(|group| group.columns()) {
            let size = chunk.compressed_size().max(0) as u64;
            all += size;
            if chunk.column_path().parts().first().is_some_and(|root| columns.contains(root.as_str())) {
                read += size;
            }
        }
        if all > 0 {
            total += (file.effective_size() as u128 * read as u128 / all as u128) as u64;
        }
    }
    Some(total)
}

fn tpch_task_count(event: DesiredTaskCountEvent<'_>) -> Option<Result<DesiredTaskCountEventResponse>> {
    let scan = event.plan.downcast_ref::<TpchScanExec>()?;
    let rows = scan.approximate_rows();
    Some(Ok(if rows < 2 * MIN_ROWS_PER_TASK {
        DesiredTaskCountEventResponse::maximum(1)
    } else {
        DesiredTaskCountEventResponse::desired(rows / MIN_ROWS_PER_TASK)
    }))
}

/// Spreads a scan of ours over the tasks its stage got: each task generates its own share.
fn scale_up(event: ScaleUpLeafNodeEvent<'_>) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    fn leaf<T: ExecutionPlan + 'static>(
        event: &ScaleUpLeafNodeEvent<'_>,
        variants: Result<Vec<T>>,
    ) -> Result<ScaleUpLeafNodeEventResponse> {
        let variants = variants?.into_iter().map(|scan| Arc::new(scan) as Arc<dyn ExecutionPlan>);
        let leaf = DistributedLeafExec::try_new(event.plan.clone(), variants)?;
        Ok(ScaleUpLeafNodeEventResponse::new(Arc::new(leaf)))
    }
    if let Some(scan) = event.plan.downcast_ref::<BlackholeScanExec>() {
        return Some(leaf(&event, scan.split(event.task_count)));
    }
    let scan = event.plan.downcast_ref::<TpchScanExec>()?;
    Some(leaf(&event, scan.split(event.task_count)))
}

/// Encodes Flotilla's own operators for the trip to a worker: a tag, then JSON.
#[derive(Debug, Clone, Copy)]
pub struct FlotillaCodec;

const TPCH_SCAN_TAG: &[u8] = b"flotilla.tpch_scan:";
const FILES_WRITE_TAG: &[u8] = b"flotilla.files_write:";
const BLACKHOLE_SCAN_TAG: &[u8] = b"flotilla.blackhole_scan:";
const JOIN_FILTER_EXPORT_TAG: &[u8] = b"flotilla.join_filter_export:";
const JOIN_FILTER_WAIT_TAG: &[u8] = b"flotilla.join_filter_wait:";
const JOIN_KEYS_TAG: &[u8] = b"flotilla.join_keys:";

impl PhysicalExtensionCodec for FlotillaCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        use crate::cross_stage_filters::WaitSpec;
        use crate::cross_stage_filters::{
            ExportSpec, JoinFilterExportExec, JoinFilterWaitExec, JoinKeysExec, KeysSpec,
        };
        use prost::Message;
        let malformed = |what: &str, e: &dyn fmt::Display| {
            DataFusionError::Internal(format!("malformed {what} in a distributed plan: {e}"))
        };
        if let Some(body) = buf.strip_prefix(JOIN_FILTER_EXPORT_TAG) {
            let [input] = inputs else {
                return Err(DataFusionError::Internal("a join filter export has one input".into()));
            };
            let spec = ExportSpec::decode(body).map_err(|e| malformed("join filter export", &e))?;
            let filter = spec.filter.as_ref().ok_or_else(|| malformed("join filter export", &"no filter"))?;
            // Through the plan's converter, so this copy shares its state with the join's.
            let decode = datafusion_proto::physical_plan::PhysicalPlanDecodeContext::new(ctx, self);
            let filter = proto_converter.proto_to_physical_expr(filter, &input.schema(), &decode)?;
            return Ok(Arc::new(JoinFilterExportExec::try_new(input.clone(), filter, spec.targets, spec.partitioned)?));
        }
        if let Some(body) = buf.strip_prefix(JOIN_KEYS_TAG) {
            let [input] = inputs else {
                return Err(DataFusionError::Internal("a join's key list has one input".into()));
            };
            let spec = KeysSpec::decode(body).map_err(|e| malformed("join key list", &e))?;
            let decode = datafusion_proto::physical_plan::PhysicalPlanDecodeContext::new(ctx, self);
            let keys = spec
                .keys
                .iter()
                .map(|key| proto_converter.proto_to_physical_expr(key, &input.schema(), &decode))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Arc::new(JoinKeysExec::try_new(input.clone(), keys, spec.id)?));
        }
        if let Some(body) = buf.strip_prefix(JOIN_FILTER_WAIT_TAG) {
            let [input] = inputs else {
                return Err(DataFusionError::Internal("a join filter wait has one input".into()));
            };
            let spec = WaitSpec::decode(body).map_err(|e| malformed("join filter wait", &e))?;
            return Ok(Arc::new(JoinFilterWaitExec::new(input.clone(), spec.ids)));
        }
        if let Some(body) = buf.strip_prefix(FILES_WRITE_TAG) {
            let [input] = inputs else {
                return Err(DataFusionError::Internal("a files write has one input".into()));
            };
            let spec: WriteSpec = serde_json::from_slice(body)
                .map_err(|e| DataFusionError::Internal(format!("malformed files write in a distributed plan: {e}")))?;
            return Ok(Arc::new(FilesWriteExec::new(input.clone(), spec)?));
        }
        if let Some(body) = buf.strip_prefix(BLACKHOLE_SCAN_TAG) {
            if !inputs.is_empty() {
                return Err(DataFusionError::Internal("a blackhole scan has no inputs".into()));
            }
            let spec: BlackholeScanSpec = serde_json::from_slice(body).map_err(|e| {
                DataFusionError::Internal(format!("malformed blackhole scan in a distributed plan: {e}"))
            })?;
            return Ok(Arc::new(BlackholeScanExec::try_new(spec)?));
        }
        let Some(body) = buf.strip_prefix(TPCH_SCAN_TAG) else {
            return Err(DataFusionError::Internal("unknown Flotilla operator in a distributed plan".into()));
        };
        if !inputs.is_empty() {
            return Err(DataFusionError::Internal("a tpch scan has no inputs".into()));
        }
        let spec: TpchScanSpec = serde_json::from_slice(body)
            .map_err(|e| DataFusionError::Internal(format!("malformed tpch scan in a distributed plan: {e}")))?;
        Ok(Arc::new(TpchScanExec::try_new(spec)?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        use crate::cross_stage_filters::WaitSpec;
        use crate::cross_stage_filters::{
            ExportSpec, JoinFilterExportExec, JoinFilterWaitExec, JoinKeysExec, KeysSpec,
        };
        use prost::Message;
        if let Some(keys) = node.downcast_ref::<JoinKeysExec>() {
            let spec = KeysSpec {
                id: keys.id(),
                keys: keys
                    .keys()
                    .iter()
                    .map(|key| proto_converter.physical_expr_to_proto(key, self))
                    .collect::<Result<Vec<_>>>()?,
            };
            buf.extend_from_slice(JOIN_KEYS_TAG);
            spec.encode(buf).map_err(|e| DataFusionError::Internal(e.to_string()))?;
            return Ok(());
        }
        if let Some(export) = node.downcast_ref::<JoinFilterExportExec>() {
            let filter = proto_converter.physical_expr_to_proto(export.filter(), self)?;
            let spec = ExportSpec {
                filter: Some(filter),
                targets: export.targets().to_vec(),
                partitioned: export.partitioned(),
            };
            buf.extend_from_slice(JOIN_FILTER_EXPORT_TAG);
            spec.encode(buf).map_err(|e| DataFusionError::Internal(e.to_string()))?;
            return Ok(());
        }
        if let Some(wait) = node.downcast_ref::<JoinFilterWaitExec>() {
            buf.extend_from_slice(JOIN_FILTER_WAIT_TAG);
            WaitSpec { ids: wait.ids().to_vec() }.encode(buf).map_err(|e| DataFusionError::Internal(e.to_string()))?;
            return Ok(());
        }
        if let Some(write) = node.downcast_ref::<FilesWriteExec>() {
            buf.extend_from_slice(FILES_WRITE_TAG);
            return serde_json::to_writer(&mut *buf, write.spec())
                .map_err(|e| DataFusionError::Internal(e.to_string()));
        }
        if let Some(scan) = node.downcast_ref::<BlackholeScanExec>() {
            buf.extend_from_slice(BLACKHOLE_SCAN_TAG);
            return serde_json::to_writer(&mut *buf, scan.spec()).map_err(|e| DataFusionError::Internal(e.to_string()));
        }
        let Some(scan) = node.downcast_ref::<TpchScanExec>() else {
            return Err(DataFusionError::NotImplemented(format!("{} cannot run on a worker", node.name())));
        };
        buf.extend_from_slice(TPCH_SCAN_TAG);
        serde_json::to_writer(&mut *buf, scan.spec()).map_err(|e| DataFusionError::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tpch_scan::Part;

    /// A distributed statement's session runs DataFusion's optimizer once, with our join
    /// rules in their places: the rules are edited in the session's list, not appended as a
    /// second copy of it (which ran join selection again after dynamic filters were set).
    #[test]
    fn join_rules_edit_the_one_rule_list() {
        use crate::join_filters::{FilterRowsByJoinFilters, NAME};
        let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
        rules.push(Arc::new(FilterRowsByJoinFilters::default()));
        let state = SessionStateBuilder::new().with_default_features().with_physical_optimizer_rules(rules).build();
        let before = state.physical_optimizers().len();
        let mut builder = SessionStateBuilder::new_from_existing(state);
        with_join_rules(&mut builder);
        let state = builder.build();
        let names: Vec<&str> = state.physical_optimizers().iter().map(|rule| rule.name()).collect();
        assert_eq!(names.len(), before + 1, "{names:?}");
        assert_eq!(names.iter().filter(|name| **name == "join_selection").count(), 1, "{names:?}");
        let at = names.iter().position(|name| *name == "join_selection").unwrap();
        assert_eq!(names[at + 1], "flotilla_partition_unbroadcastable_joins", "{names:?}");
        let filters: Vec<_> = state.physical_optimizers().iter().filter(|rule| rule.name() == NAME).collect();
        assert_eq!(filters.len(), 1, "{names:?}");
        assert!(format!("{:?}", filters[0]).contains("distributed: true"), "{:?}", filters[0]);
    }

    fn scan(table: &str, scale: f64, partitions: i32) -> TpchScanExec {
        TpchScanExec::try_new(TpchScanSpec {
            table: table.into(),
            scale,
            standard_names: false,
            projection: Some(vec![0, 1]),
            limit: None,
            partitions: (1..=partitions).map(|part| Part { part, count: partitions }).collect(),
        })
        .unwrap()
    }

    #[test]
    fn blackhole_scans_travel_to_workers_whole() {
        use crate::catalog::blackhole::BlackholeScanExec;
        let schema = datafusion::arrow::datatypes::Schema::new(vec![datafusion::arrow::datatypes::Field::new(
            "d",
            datafusion::arrow::datatypes::DataType::Decimal128(12, 2),
            true,
        )]);
        let table = crate::catalog::blackhole::tests_support::spec(&schema);
        let scan: Arc<dyn ExecutionPlan> = Arc::new(BlackholeScanExec::try_new(table).unwrap());
        let converter = datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {};
        let mut buf = Vec::new();
        FlotillaCodec.try_encode(scan.clone(), &mut buf, &converter).unwrap();
        let decoded = FlotillaCodec.try_decode(&buf, &[], &TaskContext::default(), &converter).unwrap();
        let decoded = decoded.downcast_ref::<BlackholeScanExec>().unwrap();
        assert_eq!(decoded.spec(), scan.downcast_ref::<BlackholeScanExec>().unwrap().spec());
        assert_eq!(decoded.schema(), scan.schema());
        // Garbage after the tag is an error, not a panic.
        let mut bad = b"flotilla.blackhole_scan:{".to_vec();
        bad.extend_from_slice(b"\"columns\": 3}");
        assert!(FlotillaCodec.try_decode(&bad, &[], &TaskContext::default(), &converter).is_err());
    }

    /// A join's key list travels with its keys and filter id; a body that is not one, a key
    /// outside its input's columns or a wrong number of inputs is an error, not a panic.
    #[test]
    fn join_key_lists_travel_to_workers_and_bad_ones_are_refused() {
        use crate::cross_stage_filters::JoinKeysExec;
        use datafusion::physical_expr::expressions::Column;
        let input: Arc<dyn ExecutionPlan> = Arc::new(scan("nation", 0.01, 1));
        let key: Arc<dyn datafusion::physical_expr::PhysicalExpr> = Arc::new(Column::new("n_name", 1));
        let keys: Arc<dyn ExecutionPlan> = Arc::new(JoinKeysExec::try_new(input.clone(), vec![key], 42).unwrap());
        let converter = datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {};
        let ctx = TaskContext::default();
        let mut buf = Vec::new();
        FlotillaCodec.try_encode(keys, &mut buf, &converter).unwrap();
        let decoded = FlotillaCodec.try_decode(&buf, std::slice::from_ref(&input), &ctx, &converter).unwrap();
        let decoded = decoded.downcast_ref::<JoinKeysExec>().unwrap();
        assert_eq!(decoded.id(), 42);
        assert_eq!(decoded.keys().iter().map(|k| k.to_string()).collect::<Vec<_>>(), vec!["n_name@1"]);
        assert!(FlotillaCodec.try_decode(&buf, &[], &ctx, &converter).is_err(), "no input");
        assert!(FlotillaCodec.try_decode(&buf, &[input.clone(), input.clone()], &ctx, &converter).is_err());
        let mut garbage = JOIN_KEYS_TAG.to_vec();
        garbage.extend_from_slice(&[0xff; 64]);
        assert!(FlotillaCodec.try_decode(&garbage, std::slice::from_ref(&input), &ctx, &converter).is_err());
        // A key outside the input's columns, as a sender could write it.
        let outside: Arc<dyn datafusion::physical_expr::PhysicalExpr> = Arc::new(Column::new("n_name", 900));
        assert!(JoinKeysExec::try_new(input.clone(), vec![outside.clone()], 42).is_err());
        let spec = crate::cross_stage_filters::KeysSpec {
            id: 42,
            keys: vec![converter.physical_expr_to_proto(&outside, &FlotillaCodec).unwrap()],
        };
        let mut buf = JOIN_KEYS_TAG.to_vec();
        prost::Message::encode(&spec, &mut buf).unwrap();
        assert!(FlotillaCodec.try_decode(&buf, std::slice::from_ref(&input), &ctx, &converter).is_err());
    }

    #[test]
    fn splits_cover_every_part_once() {
        let variants = scan("orders", 1.0, 3).split(4).unwrap();
        let mut parts: Vec<Part> = variants.iter().flat_map(|v| v.spec().partitions.clone()).collect();
        assert!(variants.iter().all(|v| v.spec().partitions.len() == 3));
        parts.sort_by_key(|p| p.part);
        assert_eq!(parts, (1..=12).map(|part| Part { part, count: 12 }).collect::<Vec<_>>());
    }

    #[test]
    fn small_tables_take_one_task_large_ones_many() {
        let config = datafusion::prelude::SessionConfig::new();
        let count = |plan: Arc<dyn ExecutionPlan>| {
            let event = DesiredTaskCountEvent { plan: &plan, session_config: &config };
            tpch_task_count(event).unwrap().unwrap().task_count
        };
        assert!(matches!(
            count(Arc::new(scan("nation", 1.0, 1))),
            datafusion_distributed::TaskCountAnnotation::Maximum(1)
        ));
        assert!(matches!(
            count(Arc::new(scan("lineitem", 1.0, 4))),
            datafusion_distributed::TaskCountAnnotation::Desired(600)
        ));
    }

    #[tokio::test]
    async fn parquet_scans_take_tasks_by_the_bytes_of_the_columns_they_read() {
        use datafusion::arrow::array::{Int32Array, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::arrow::record_batch::RecordBatch;
        use datafusion::common::tree_node::TreeNode;
        use datafusion::datasource::physical_plan::FileScanConfig;
        use datafusion::datasource::source::DataSourceExec;
        use datafusion::prelude::{SessionConfig, SessionContext};
        use datafusion_distributed::TaskCountAnnotation;

        // A narrow integer column (dictionary-encoded keys) and a wide text column (~9 MB), as
        // `partsupp`'s keys and comments.
        let rows = 200_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("comment", DataType::Utf8, false),
        ]));
        let ids = Int32Array::from_iter_values((0..rows).map(|i| i % 1000));
        let comments = StringArray::from_iter_values(
            (0..rows).map(|i| format!("{i:08x} {} a comment for row {}", (i as u64 * 7919) % 1_000_003, i * 31)),
        );
        let batch = RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(comments)]).unwrap();
        let table = crate::test_support::ParquetTable::new(&batch, 2).await;
        let (ctx, path) = (&table.ctx, &table.path);
        let footers = ParquetFooters(ctx.runtime_env().cache_manager.get_file_metadata_cache());
        let scan_of = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
                let mut found = None;
                plan.apply(|node| {
                    if node.downcast_ref::<DataSourceExec>().is_some() {
                        found = Some(Arc::clone(node));
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
                .unwrap();
                found.expect("a scan")
            }
        };
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_option_extension(datafusion_distributed::DistributedConfig::default())
            .with_distributed_file_scan_config_bytes_per_partition(1024 * 1024)
            .unwrap()
            .with_extension(Arc::new(footers.clone()));
        let tasks = |plan: &Arc<dyn ExecutionPlan>, config: &SessionConfig| match task_count(DesiredTaskCountEvent {
            plan,
            session_config: config,
        }) {
            Some(Ok(response)) => Some(response.task_count),
            Some(Err(e)) => panic!("{e}"),
            None => None,
        };

        let narrow = scan_of("SELECT id FROM t").await;
        let wide = scan_of("SELECT comment FROM t").await;
        let both = scan_of("SELECT id, comment FROM t").await;
        let files = |plan: &Arc<dyn ExecutionPlan>| {
            plan.downcast_ref::<DataSourceExec>()
                .unwrap()
                .data_source()
                .downcast_ref::<FileScanConfig>()
                .unwrap()
                .clone()
        };
        let bytes = |plan: &Arc<dyn ExecutionPlan>| {
            let columns: std::collections::HashSet<&str> = ["id", "comment"].into_iter().collect();
            let all = projected_bytes(&files(plan), &columns, footers.0.as_ref()).unwrap();
            let read = read_columns(&files(plan));
            assert_eq!(read, plan.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>());
            let columns: std::collections::HashSet<&str> = read.iter().map(String::as_str).collect();
            (projected_bytes(&files(plan), &columns, footers.0.as_ref()).unwrap(), all)
        };
        let (narrow_bytes, file_bytes) = bytes(&narrow);
        let (wide_bytes, _) = bytes(&wide);
        assert!(narrow_bytes < 1024 * 1024, "the ids take {narrow_bytes} bytes");
        assert!(wide_bytes > 4 * 1024 * 1024, "the comments take {wide_bytes} bytes");
        assert!(narrow_bytes + wide_bytes <= file_bytes && file_bytes <= std::fs::metadata(&path).unwrap().len());
        // One task for the ids, several for the comments: a task per 1 MB times 2 partitions.
        assert!(matches!(tasks(&narrow, &config), Some(TaskCountAnnotation::Desired(1))));
        let wide_tasks = (wide_bytes as usize).div_ceil(1024 * 1024).div_ceil(2);
        assert!(matches!(tasks(&wide, &config), Some(TaskCountAnnotation::Desired(n)) if n == wide_tasks && n > 1));
        assert!(matches!(tasks(&both, &config), Some(TaskCountAnnotation::Desired(n)) if n >= wide_tasks));
        // A computed projection pushed into the scan counts the columns it is computed from
        // (DataFusion's `file_column_projection_indices` panics on one: a dbt model hit that).
        let computed = scan_of("SELECT round(id * 2, 2) AS r, length(comment) AS n FROM t").await;
        let projection = files(&computed).file_source().projection().cloned().expect("a projection in the scan");
        assert!(
            projection
                .iter()
                .any(|e| e.expr.downcast_ref::<datafusion::physical_expr::expressions::Column>().is_none()),
            "the computed expressions are pushed into the scan: {projection:?}"
        );
        assert_eq!(read_columns(&files(&computed)), ["id", "comment"]);
        assert!(matches!(tasks(&computed, &config), Some(TaskCountAnnotation::Desired(n)) if n >= wide_tasks));

        // A footer this process has not read, or one of an earlier version of the file: left to
        // datafusion-distributed (the files' bytes).
        let unknown = SessionContext::new().runtime_env().cache_manager.get_file_metadata_cache();
        let config_unknown = config.clone().with_extension(Arc::new(ParquetFooters(unknown)));
        assert!(tasks(&narrow, &config_unknown).is_none());
        let mut stale = files(&narrow);
        for group in stale.file_groups.iter_mut() {
            let mut changed: Vec<_> = group.iter().cloned().collect();
            for file in changed.iter_mut() {
                file.object_meta.size += 1;
            }
            *group = datafusion::datasource::physical_plan::FileGroup::new(changed);
        }
        let columns: std::collections::HashSet<&str> = ["id"].into_iter().collect();
        assert!(projected_bytes(&stale, &columns, footers.0.as_ref()).is_none());
        // Without the footers in the session at all: left to datafusion-distributed too.
        assert!(tasks(&narrow, &SessionConfig::new()).is_none());
    }

    /// A task's plan reaching a worker with a filter in DataFusion's left-deep shape runs it
    /// with the cheap conjuncts first, right-deep; a plan without such a filter is left as is.
    #[tokio::test]
    async fn workers_run_filters_with_their_cheap_conjuncts_first() {
        use crate::test_support::{filter_predicate, predicate_shape};
        let batch = datafusion::arrow::record_batch::RecordBatch::try_from_iter([
            ("a", Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(0..100)) as _),
            ("b", Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(0..100)) as _),
        ])
        .unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_batch("t", batch).unwrap();
        let config = ctx.state().config().clone();
        let rewrite = |sql: &'static str| {
            let ctx = ctx.clone();
            let config = config.clone();
            async move {
                let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
                let event =
                    datafusion_distributed::WorkerPlanRewriteEvent { plan: Arc::clone(&plan), session_config: &config };
                (plan, cheap_conjuncts_first(event).unwrap().plan)
            }
        };
        let (planned, rewritten) = rewrite("SELECT * FROM t WHERE a > 1 AND b < 90 AND a <> 50").await;
        assert_eq!(predicate_shape(&filter_predicate(&planned)), "((a b) a)", "DataFusion's own shape");
        assert_eq!(predicate_shape(&filter_predicate(&rewritten)), "(a (b a))");
        let (planned, rewritten) = rewrite("SELECT * FROM t WHERE a > 1").await;
        assert!(Arc::ptr_eq(&planned, &rewritten));
    }
}
