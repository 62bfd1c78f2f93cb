//! The `tpch` scan operator: generates its partitions' share of a table with tpchgen.
//!
//! A scan is described entirely by plain values (table, scale, column naming, projection,
//! limit and the generator parts of each partition), so it travels to workers as a few
//! bytes ([`TpchScanSpec`], JSON through the distributed codec) and is split across tasks
//! by handing each task a disjoint set of parts: the whole table is generated once, by
//! whichever tasks hold its parts, and nothing is stored.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, Statistics};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use serde::{Deserialize, Serialize};

use crate::catalog::tpch::{ColumnNaming, TpchTable};
use crate::progress::ScanCounters;

/// One generator part: `part` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub part: i32,
    pub count: i32,
}

/// Everything a worker needs to rebuild a scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TpchScanSpec {
    pub table: String,
    pub scale: f64,
    pub standard_names: bool,
    pub projection: Option<Vec<usize>>,
    pub limit: Option<usize>,
    /// The generator parts of each output partition.
    pub partitions: Vec<Part>,
}

/// Generates a share of one TPC-H table.
#[derive(Debug)]
pub struct TpchScanExec {
    spec: TpchScanSpec,
    table: TpchTable,
    /// The table's schema with the catalog's column names, before projection.
    table_schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl TpchScanExec {
    pub fn try_new(spec: TpchScanSpec) -> Result<Self> {
        let table = TpchTable::from_name(&spec.table)
            .ok_or_else(|| DataFusionError::Plan(format!("unknown tpch table '{}'", spec.table)))?;
        if spec.partitions.is_empty() {
            return Err(DataFusionError::Internal("a tpch scan needs at least one partition".into()));
        }
        let naming = if spec.standard_names { ColumnNaming::Standard } else { ColumnNaming::Simplified };
        let table_schema = table.schema(naming);
        let schema = match &spec.projection {
            Some(indices) => Arc::new(table_schema.project(indices)?),
            None => table_schema.clone(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(spec.partitions.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self { spec, table, table_schema, properties: Arc::new(properties), metrics: Default::default() })
    }

    pub fn spec(&self) -> &TpchScanSpec {
        &self.spec
    }

    /// The same scan split over `tasks` tasks, each with as many partitions as this one:
    /// task `t` generates parts `t*P+1 ..= (t+1)*P` of `tasks*P`.
    pub fn split(&self, tasks: usize) -> Result<Vec<TpchScanExec>> {
        let per_task = self.spec.partitions.len();
        let count = (per_task * tasks) as i32;
        (0..tasks)
            .map(|task| {
                let partitions =
                    (0..per_task).map(|p| Part { part: (task * per_task + p + 1) as i32, count }).collect();
                TpchScanExec::try_new(TpchScanSpec { partitions, ..self.spec.clone() })
            })
            .collect()
    }

    /// Approximate rows this scan generates, for the planners' statistics.
    pub fn approximate_rows(&self) -> usize {
        let share: f64 = self.spec.partitions.iter().map(|p| 1.0 / p.count.max(1) as f64).sum();
        let rows = (self.table.approximate_rows(self.spec.scale) * share).ceil() as usize;
        match self.spec.limit {
            Some(limit) => rows.min(limit),
            None => rows,
        }
    }
}

impl DisplayAs for TpchScanExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let scale = self.spec.scale;
        write!(f, "TpchScanExec: table={}, scale={scale}, partitions={}", self.spec.table, self.spec.partitions.len())?;
        if let Some(first) = self.spec.partitions.first() {
            write!(
                f,
                ", parts={}..{}/{}",
                first.part,
                first.part + self.spec.partitions.len() as i32 - 1,
                first.count
            )?;
        }
        if let Some(projection) = &self.spec.projection {
            let names: Vec<&str> = projection.iter().map(|i| self.table_schema.field(*i).name().as_str()).collect();
            write!(f, ", projection=[{}]", names.join(", "))?;
        }
        if let Some(limit) = self.spec.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for TpchScanExec {
    fn name(&self) -> &str {
        "TpchScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal("TpchScanExec has no children".into()));
        }
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let part = *self
            .spec
            .partitions
            .get(partition)
            .ok_or_else(|| DataFusionError::Internal(format!("TpchScanExec has no partition {partition}")))?;
        let counters = context.session_config().get_extension::<ScanCounters>();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let schema = self.schema();
        let mut builder = RecordBatchReceiverStreamBuilder::new(schema.clone(), 2);
        let sender = builder.tx();
        let (table, scale, projection) = (self.table, self.spec.scale, self.spec.projection.clone());
        let table_schema = self.table_schema.clone();
        let mut remaining = self.spec.limit.unwrap_or(usize::MAX);
        // Generation is CPU work: it runs on the blocking pool and stops when the reader drops.
        builder.spawn_blocking(move || {
            let timer = baseline.elapsed_compute().clone();
            let result = table.generate(scale, part.part, part.count, |batch| {
                let started = timer.timer();
                if let Some(counters) = &counters {
                    counters.add(batch.num_rows(), batch.get_array_memory_size());
                }
                // Same columns in the same order; only the names may differ.
                let batch = RecordBatch::try_new(table_schema.clone(), batch.columns().to_vec())
                    .and_then(|batch| match &projection {
                        Some(indices) => batch.project(indices),
                        None => Ok(batch),
                    })
                    .map(|batch| {
                        let batch = if batch.num_rows() > remaining { batch.slice(0, remaining) } else { batch };
                        remaining -= batch.num_rows();
                        batch
                    })
                    .map_err(DataFusionError::from);
                if let Ok(batch) = &batch {
                    baseline.record_output(batch.num_rows());
                }
                started.done();
                sender.blocking_send(batch).is_ok() && remaining > 0
            });
            baseline.done();
            result
        });
        Ok(builder.build())
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    #[allow(deprecated)]
    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        let mut statistics = Statistics::new_unknown(&self.schema());
        let rows = self.approximate_rows();
        statistics.num_rows = Precision::Inexact(match partition {
            Some(_) => rows.div_ceil(self.spec.partitions.len()),
            None => rows,
        });
        Ok(Arc::new(statistics))
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        let limit = match (limit, self.spec.limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        TpchScanExec::try_new(TpchScanSpec { limit, ..self.spec.clone() }).ok().map(|e| Arc::new(e) as _)
    }

    fn fetch(&self) -> Option<usize> {
        self.spec.limit
    }
}
