//! What a running statement reports about itself: input read by its scans and progress read
//! from the physical plan's live metrics (its memory is counted in [`crate::memory`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;

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
    /// Bytes operators spilled to disk (on the workers once their metrics are merged in).
    pub spilled_bytes: u64,
    /// Rows the leaf operators are expected to produce in all (from the connectors'
    /// estimates; 0 when unknown), for the progress percentage.
    pub expected_rows: u64,
}

/// The rows a leaf is expected to produce, when its connector can say (its statistics).
fn expected_rows(leaf: &Arc<dyn ExecutionPlan>) -> u64 {
    let leaf = match leaf.downcast_ref::<datafusion_distributed::DistributedLeafExec>() {
        Some(distributed) => distributed.original(),
        None => leaf,
    };
    #[allow(deprecated)]
    let statistics = leaf.partition_statistics(None);
    statistics.ok().and_then(|s| s.num_rows.get_value().copied()).unwrap_or(0) as u64
}

/// Progress of a running plan: splits and CPU from the plan's metrics, input figures from
/// the connectors' counters.
pub fn plan_progress(plan: &Arc<dyn ExecutionPlan>, scans: &ScanCounters) -> PlanProgress {
    fn walk(plan: &Arc<dyn ExecutionPlan>, progress: &mut PlanProgress) {
        let metrics = plan.metrics();
        if let Some(metrics) = &metrics {
            progress.cpu_nanos += metrics.elapsed_compute().unwrap_or(0) as u64;
            progress.spilled_bytes += metrics.spilled_bytes().unwrap_or(0) as u64;
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
