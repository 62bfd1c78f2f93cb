//! What a running statement reports about itself: its peak memory (a pool wrapper that
//! remembers the high-water mark) and progress read from the physical plan's live metrics.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::memory_pool::{MemoryLimit, MemoryPool, MemoryReservation};
use datafusion::physical_plan::ExecutionPlan;

/// One query's view of a memory pool: forwards to the pool, and counts what the query
/// itself has reserved through it, now and at most. A coordinator gives each statement one
/// over its own pool; a worker gives each query one over the node's shared pool, used by
/// all of the query's tasks there.
#[derive(Debug)]
pub struct PeakMemoryPool {
    inner: Arc<dyn MemoryPool>,
    reserved: AtomicUsize,
    peak: AtomicUsize,
    /// The most the query may hold through this pool (`query.max-memory-per-node`).
    limit: AtomicUsize,
}

/// How a refused reservation over `query.max-memory-per-node` is described (the message
/// travels from a worker as text): `EXCEEDED_LOCAL_MEMORY_LIMIT`.
pub const LOCAL_MEMORY_PHRASE: &str = "Query exceeded per-node memory limit";

impl PeakMemoryPool {
    pub fn new(inner: Arc<dyn MemoryPool>) -> Self {
        Self::with_limit(inner, usize::MAX)
    }

    /// A view whose reservations together may not pass `limit` bytes: past it a fallible
    /// reservation is refused (a spilling operator spills; others fail the query).
    pub fn with_limit(inner: Arc<dyn MemoryPool>, limit: usize) -> Self {
        Self { inner, reserved: AtomicUsize::new(0), peak: AtomicUsize::new(0), limit: AtomicUsize::new(limit) }
    }

    /// Lowers the limit (never raises it).
    pub fn lower_limit(&self, limit: usize) {
        self.limit.fetch_min(limit, Ordering::Relaxed);
    }

    /// Bytes the query holds now.
    pub fn query_reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// The most the query ever held.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn add(&self, bytes: usize) {
        let now = self.reserved.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
}

/// Bytes as Trino writes data sizes (`12.50MB`).
pub fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

impl fmt::Display for PeakMemoryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peak-tracking({})", self.inner)
    }
}

impl MemoryPool for PeakMemoryPool {
    fn name(&self) -> &str {
        "peak-tracking"
    }

    fn register(&self, consumer: &datafusion::execution::memory_pool::MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &datafusion::execution::memory_pool::MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.add(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.reserved.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let held = self.query_reserved();
        let limit = self.limit.load(Ordering::Relaxed);
        if held.saturating_add(additional) > limit {
            return Err(datafusion::error::DataFusionError::ResourcesExhausted(format!(
                "{LOCAL_MEMORY_PHRASE} of {} [query.max-memory-per-node]: it holds {} and {} asked for {} more",
                human_bytes(limit),
                human_bytes(held),
                reservation.consumer().name(),
                human_bytes(additional),
            )));
        }
        self.inner.try_grow(reservation, additional)?;
        self.add(additional);
        Ok(())
    }

    /// The whole pool's reservation, as DataFusion expects of a pool.
    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// Rows and bytes that connectors have read for one statement: Trino's processed input.
/// Each statement's session carries one as a config extension; scans add to it as they go.
#[derive(Debug, Default)]
pub struct ScanCounters {
    rows: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl ScanCounters {
    pub fn add(&self, rows: usize, bytes: usize) {
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Progress figures of a physical plan, read from its metrics (which operators update while
/// they run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanProgress {
    /// Partitions of the leaf operators: Trino's splits.
    pub total_splits: u64,
    /// Rows the leaf operators have produced so far.
    pub processed_rows: u64,
    /// Bytes the leaf operators have read, where they report it.
    pub processed_bytes: u64,
    /// CPU time across operators, in nanoseconds.
    pub cpu_nanos: u64,
    /// Rows the leaf operators are expected to produce in all (from the connectors'
    /// estimates; 0 when unknown), for the progress percentage.
    pub expected_rows: u64,
}

/// The rows a leaf is expected to produce, when its connector can say.
fn expected_rows(leaf: &Arc<dyn ExecutionPlan>) -> u64 {
    let leaf = match leaf.downcast_ref::<datafusion_distributed::DistributedLeafExec>() {
        Some(distributed) => distributed.original(),
        None => leaf,
    };
    leaf.downcast_ref::<crate::catalog::tpch_scan::TpchScanExec>()
        .map(|scan| scan.approximate_rows() as u64)
        .unwrap_or(0)
}

/// Progress of a running plan: splits and CPU from the plan's metrics, input figures from
/// the connectors' counters.
pub fn plan_progress(plan: &Arc<dyn ExecutionPlan>, scans: &ScanCounters) -> PlanProgress {
    fn walk(plan: &Arc<dyn ExecutionPlan>, progress: &mut PlanProgress) {
        let metrics = plan.metrics();
        if let Some(metrics) = &metrics {
            progress.cpu_nanos += metrics.elapsed_compute().unwrap_or(0) as u64;
        }
        let children = plan.children();
        if children.is_empty() {
            progress.total_splits += plan.properties().output_partitioning().partition_count() as u64;
            progress.expected_rows += expected_rows(plan);
            if let Some(metrics) = metrics {
                progress.processed_rows += metrics.output_rows().unwrap_or(0) as u64;
                progress.processed_bytes +=
                    metrics.sum_by_name("bytes_scanned").map(|v| v.as_usize()).unwrap_or(0) as u64;
            }
        }
        for child in children {
            walk(child, progress);
        }
    }
    let mut progress = PlanProgress::default();
    walk(plan, &mut progress);
    progress.processed_rows = progress.processed_rows.max(scans.rows());
    progress.processed_bytes = progress.processed_bytes.max(scans.bytes());
    progress
}

/// One stage of a distributed plan, with its figures read from the plan's metrics (the
/// workers' task metrics once they have been merged in, at the end of the query).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageProgress {
    /// 0 for the coordinator's head stage, then the planner's stage numbers.
    pub stage: usize,
    pub tasks: usize,
    pub progress: PlanProgress,
    /// Per task (by index), once the workers' metrics are in: rows its leaves produced and
    /// its CPU time in nanoseconds.
    pub task_figures: std::collections::BTreeMap<usize, TaskFigures>,
    pub children: Vec<StageProgress>,
}

/// One task's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskFigures {
    pub processed_rows: u64,
    pub cpu_nanos: u64,
}

/// The stage tree of a distributed plan; `None` for a plan that runs in one process.
pub fn stage_tree(plan: &Arc<dyn ExecutionPlan>) -> Option<StageProgress> {
    use datafusion::physical_plan::metrics::MetricValue;
    use datafusion_distributed::{DistributedExec, NetworkBoundaryExt, DISTRIBUTED_DATAFUSION_TASK_ID_LABEL};

    fn walk(plan: &Arc<dyn ExecutionPlan>, tasks: u64, stage: &mut StageProgress) {
        if let Some(boundary) = plan.as_ref().as_network_boundary() {
            let input = boundary.input_stage();
            let mut child = StageProgress { stage: input.num(), tasks: input.task_count(), ..Default::default() };
            if let Some(local) = input.local_plan() {
                walk(local, input.task_count() as u64, &mut child);
            }
            stage.children.push(child);
            return;
        }
        let metrics = plan.metrics();
        let children = plan.children();
        if let Some(metrics) = &metrics {
            stage.progress.cpu_nanos += metrics.elapsed_compute().unwrap_or(0) as u64;
            // Metrics merged from the workers carry the task they came from.
            for metric in metrics.iter() {
                let task = metric.labels().iter().find(|l| l.name() == DISTRIBUTED_DATAFUSION_TASK_ID_LABEL);
                let Some(task) = task.and_then(|l| l.value().parse::<usize>().ok()) else { continue };
                let figures = stage.task_figures.entry(task).or_default();
                match metric.value() {
                    MetricValue::ElapsedCompute(time) => figures.cpu_nanos += time.value() as u64,
                    MetricValue::OutputRows(rows) if children.is_empty() => {
                        figures.processed_rows += rows.value() as u64
                    }
                    _ => {}
                }
            }
        }
        if children.is_empty() {
            let partitions = plan.properties().output_partitioning().partition_count() as u64;
            stage.progress.total_splits += partitions * tasks.max(1);
            stage.progress.expected_rows += expected_rows(plan);
            if let Some(metrics) = metrics {
                stage.progress.processed_rows += metrics.output_rows().unwrap_or(0) as u64;
                stage.progress.processed_bytes +=
                    metrics.sum_by_name("bytes_scanned").map(|v| v.as_usize()).unwrap_or(0) as u64;
            }
        }
        for child in children {
            walk(child, tasks, stage);
        }
    }

    if !plan.is::<DistributedExec>() {
        return None;
    }
    let mut head = StageProgress { stage: 0, tasks: 1, ..Default::default() };
    for child in plan.children() {
        walk(child, 1, &mut head);
    }
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer};

    #[test]
    fn a_query_pool_counts_only_its_own_reservations() {
        let node: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let query_a = Arc::new(PeakMemoryPool::new(node.clone()));
        let query_b = Arc::new(PeakMemoryPool::new(node.clone()));
        let a = MemoryConsumer::new("a").register(&(query_a.clone() as Arc<dyn MemoryPool>));
        let b = MemoryConsumer::new("b").register(&(query_b.clone() as Arc<dyn MemoryPool>));
        a.try_grow(300).unwrap();
        b.try_grow(200).unwrap();
        a.shrink(100);
        assert_eq!((query_a.query_reserved(), query_a.peak()), (200, 300));
        assert_eq!(query_b.query_reserved(), 200);
        assert_eq!(node.reserved(), 400, "the node's pool holds both");
        assert!(a.try_grow(700).is_err(), "the node's limit still applies");
        drop(a);
        assert_eq!(query_a.query_reserved(), 0, "freed when the query's consumers go");
    }
}
