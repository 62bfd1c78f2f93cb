//! Trino's `blackhole` connector: tables that swallow what is written to them and, when
//! read, generate rows at a set pace, storing nothing. What Trino operators use it for:
//! sinks for load tests, and scans of a known length that cost no CPU (a query that runs
//! for exactly as long as wanted, on the workers, until it is cancelled or killed).
//!
//! ```sql
//! CREATE TABLE blackhole.default.slow (x bigint, s varchar)
//!   WITH (split_count = 2, pages_per_split = 100, rows_per_page = 10, page_processing_delay = '1s');
//! SELECT count(*) FROM blackhole.default.slow;   -- 2000 rows, after 100 s
//! INSERT INTO blackhole.default.slow SELECT ...; -- counted, discarded
//! ```
//!
//! As in Trino, tables and schemas live in the memory of the coordinator that created
//! them (another coordinator, or a restart, does not see them); schema `default` always
//! exists. A scan is described by plain values ([`BlackholeScanSpec`]), so it runs on a
//! worker like a `tpch` scan. Generated values are zeros, `false`, and strings of
//! `field_length` `'x'`s (other types: NULL). Every property is bounded, so no statement
//! can ask for more than [`MAX_ROWS`] rows or a wait longer than [`MAX_DELAY`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, ScalarValue, Statistics};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use flotilla_proto::{ErrorCode, FlotillaError};
use futures::StreamExt;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

/// The schema every blackhole catalog has.
pub const DEFAULT_SCHEMA: &str = "default";
/// Most rows one table may generate.
pub const MAX_ROWS: u64 = 1 << 40;
/// Longest wait before a page.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Most splits (parallel partitions) of one table.
pub const MAX_SPLITS: u64 = 1024;
/// Most rows in one page (one batch).
pub const MAX_ROWS_PER_PAGE: u64 = 1 << 20;
/// Longest generated string.
pub const MAX_FIELD_LENGTH: u64 = 1 << 16;

/// How a table generates its rows (Trino's table properties).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub split_count: u64,
    pub pages_per_split: u64,
    pub rows_per_page: u64,
    pub field_length: u64,
    pub page_processing_delay_ms: u64,
}

impl Default for Generation {
    /// Trino's defaults: a table that reads as empty.
    fn default() -> Self {
        Self { split_count: 0, pages_per_split: 0, rows_per_page: 0, field_length: 16, page_processing_delay_ms: 0 }
    }
}

impl Generation {
    /// From `WITH (...)` properties, by name: bounded, unknown names refused.
    pub fn from_properties(properties: &[(String, String)]) -> Result<Self, FlotillaError> {
        let invalid = |name: &str, message: String| {
            FlotillaError::new(
                ErrorCode::InvalidTableProperty,
                format!("Invalid value for table property '{name}': {message}"),
            )
        };
        let count = |name: &str, value: &str, max: u64| -> Result<u64, FlotillaError> {
            let parsed: u64 =
                value.parse().map_err(|_| invalid(name, format!("'{value}' is not a non-negative integer")))?;
            if parsed > max {
                return Err(invalid(name, format!("{parsed} is more than the most allowed, {max}")));
            }
            Ok(parsed)
        };
        let mut generation = Generation::default();
        for (name, value) in properties {
            match name.as_str() {
                "split_count" => generation.split_count = count(name, value, MAX_SPLITS)?,
                "pages_per_split" => generation.pages_per_split = count(name, value, MAX_ROWS)?,
                "rows_per_page" => generation.rows_per_page = count(name, value, MAX_ROWS_PER_PAGE)?,
                "field_length" => generation.field_length = count(name, value, MAX_FIELD_LENGTH)?,
                "page_processing_delay" => {
                    let delay = flotilla_proto::parse_duration(value).map_err(|m| invalid(name, m))?;
                    if delay > MAX_DELAY {
                        return Err(invalid(name, format!("more than the most allowed, {MAX_DELAY:?}")));
                    }
                    generation.page_processing_delay_ms = delay.as_millis() as u64;
                }
                other => {
                    return Err(FlotillaError::new(
                        ErrorCode::InvalidTableProperty,
                        format!(
                            "Catalog property '{other}' does not exist for blackhole tables (split_count, pages_per_split, rows_per_page, field_length, page_processing_delay)"
                        ),
                    ))
                }
            }
        }
        let rows = generation
            .split_count
            .checked_mul(generation.pages_per_split)
            .and_then(|pages| pages.checked_mul(generation.rows_per_page));
        if rows.is_none_or(|rows| rows > MAX_ROWS) {
            return Err(invalid("rows_per_page", format!("the table would generate more than {MAX_ROWS} rows")));
        }
        Ok(generation)
    }
}

/// A blackhole catalog: schemas of tables, in this process's memory.
#[derive(Debug)]
pub struct BlackholeCatalog {
    schemas: RwLock<BTreeMap<String, Arc<BlackholeSchema>>>,
}

impl Default for BlackholeCatalog {
    fn default() -> Self {
        let schemas = BTreeMap::from([(DEFAULT_SCHEMA.to_string(), Arc::new(BlackholeSchema::default()))]);
        Self { schemas: RwLock::new(schemas) }
    }
}

fn schema_not_found(catalog: &str, schema: &str) -> FlotillaError {
    FlotillaError::new(ErrorCode::SchemaNotFound, format!("Schema '{catalog}.{schema}' does not exist"))
}

impl BlackholeCatalog {
    /// `CREATE SCHEMA`; `Ok(false)`: it existed (with IF NOT EXISTS).
    pub fn create_schema(&self, catalog: &str, schema: &str, if_not_exists: bool) -> Result<bool, FlotillaError> {
        let mut schemas = self.schemas.write();
        if schemas.contains_key(schema) {
            return match if_not_exists {
                true => Ok(false),
                false => Err(FlotillaError::new(
                    ErrorCode::SchemaAlreadyExists,
                    format!("Schema '{catalog}.{schema}' already exists"),
                )),
            };
        }
        schemas.insert(schema.to_string(), Arc::default());
        Ok(true)
    }

    /// `DROP SCHEMA` (an empty one); `Ok(false)`: absent (with IF EXISTS).
    pub fn drop_schema(&self, catalog: &str, schema: &str, if_exists: bool) -> Result<bool, FlotillaError> {
        let mut schemas = self.schemas.write();
        match schemas.get(schema) {
            None if if_exists => Ok(false),
            None => Err(schema_not_found(catalog, schema)),
            Some(found) if !found.tables.read().is_empty() => {
                Err(FlotillaError::new(ErrorCode::SchemaNotEmpty, format!("Cannot drop non-empty schema '{schema}'")))
            }
            Some(_) => {
                schemas.remove(schema);
                Ok(true)
            }
        }
    }

    /// `CREATE TABLE`; `Ok(false)`: it existed (with IF NOT EXISTS).
    pub fn create_table(
        &self,
        name: &crate::session::TableName,
        schema: SchemaRef,
        generation: Generation,
        if_not_exists: bool,
    ) -> Result<bool, FlotillaError> {
        let schemas = self.schemas.read();
        let found = schemas.get(&name.schema).ok_or_else(|| schema_not_found(&name.catalog, &name.schema))?;
        let mut tables = found.tables.write();
        if tables.contains_key(&name.table) {
            return match if_not_exists {
                true => Ok(false),
                false => {
                    Err(FlotillaError::new(ErrorCode::TableAlreadyExists, format!("Table '{name}' already exists")))
                }
            };
        }
        tables.insert(name.table.clone(), Arc::new(BlackholeTable { schema, generation }));
        Ok(true)
    }

    /// `DROP TABLE`; `Ok(false)`: absent (with IF EXISTS).
    pub fn drop_table(&self, name: &crate::session::TableName, if_exists: bool) -> Result<bool, FlotillaError> {
        let schemas = self.schemas.read();
        let found = schemas.get(&name.schema).ok_or_else(|| schema_not_found(&name.catalog, &name.schema))?;
        let removed = found.tables.write().remove(&name.table);
        match (removed, if_exists) {
            (Some(_), _) => Ok(true),
            (None, true) => Ok(false),
            (None, false) => {
                Err(FlotillaError::new(ErrorCode::TableNotFound, format!("Table '{name}' does not exist")))
            }
        }
    }
}

impl CatalogProvider for BlackholeCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.schemas.read().keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.schemas.read().get(name).map(|schema| schema.clone() as Arc<dyn SchemaProvider>)
    }
}

/// One schema's tables.
#[derive(Debug, Default)]
struct BlackholeSchema {
    tables: RwLock<BTreeMap<String, Arc<BlackholeTable>>>,
}

#[async_trait]
impl SchemaProvider for BlackholeSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.read().keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.tables.read().get(name).map(|table| table.clone() as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.read().contains_key(name)
    }
}

/// A table: its columns and how it generates rows.
#[derive(Debug)]
pub struct BlackholeTable {
    schema: SchemaRef,
    generation: Generation,
}

#[async_trait]
impl TableProvider for BlackholeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(indices) => Arc::new(self.schema.project(indices)?),
            None => self.schema.clone(),
        };
        let spec =
            BlackholeScanSpec { columns: Columns::of(&schema)?, generation: self.generation, limit, share: whole() };
        Ok(Arc::new(BlackholeScanExec::try_new(spec)?))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        _insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(Swallow { schema: self.schema.clone() }), None)))
    }
}

/// Where an INSERT's rows go: counted, then nowhere.
#[derive(Debug)]
struct Swallow {
    schema: SchemaRef,
}

impl DisplayAs for Swallow {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BlackholeSink")
    }
}

#[async_trait]
impl DataSink for Swallow {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(&self, mut data: SendableRecordBatchStream, _context: &Arc<TaskContext>) -> Result<u64> {
        let mut rows = 0u64;
        while let Some(batch) = data.next().await {
            rows += batch?.num_rows() as u64;
        }
        Ok(rows)
    }
}

/// Column names and types, as plain values for the trip to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Columns(Vec<(String, String)>);

impl Columns {
    fn of(schema: &Schema) -> Result<Self> {
        Ok(Self(schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect()))
    }

    fn schema(&self) -> Result<SchemaRef> {
        let fields = self
            .0
            .iter()
            .map(|(name, data_type)| {
                let data_type: DataType = data_type
                    .parse()
                    .map_err(|e| DataFusionError::Internal(format!("bad column type '{data_type}': {e}")))?;
                Ok(Field::new(name, data_type, true))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// Everything a worker needs to run a scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlackholeScanSpec {
    pub columns: Columns,
    pub generation: Generation,
    pub limit: Option<usize>,
    /// This task's share when the scan is spread over tasks: (task, tasks). Every task has
    /// a partition per split; task `t` generates the splits `s` with `s % tasks == t`.
    #[serde(default = "whole")]
    pub share: (u64, u64),
}

fn whole() -> (u64, u64) {
    (0, 1)
}

/// Generates a table's pages, one split per partition, waiting before each page.
#[derive(Debug)]
pub struct BlackholeScanExec {
    spec: BlackholeScanSpec,
    properties: Arc<PlanProperties>,
}

impl BlackholeScanExec {
    pub fn try_new(spec: BlackholeScanSpec) -> Result<Self> {
        let schema = spec.columns.schema()?;
        // A table of no splits still has one (empty) partition.
        let partitions = spec.generation.split_count.max(1) as usize;
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self { spec, properties: Arc::new(properties) })
    }

    pub fn spec(&self) -> &BlackholeScanSpec {
        &self.spec
    }

    /// The same scan spread over `tasks` tasks (each with a partition per split).
    pub fn split(&self, tasks: usize) -> Result<Vec<BlackholeScanExec>> {
        let tasks = tasks.max(1) as u64;
        (0..tasks)
            .map(|task| BlackholeScanExec::try_new(BlackholeScanSpec { share: (task, tasks), ..self.spec.clone() }))
            .collect()
    }

    /// One page of `rows` rows.
    fn page(schema: &SchemaRef, rows: usize, field_length: usize) -> Result<RecordBatch> {
        let columns = schema
            .fields()
            .iter()
            .map(|field| -> Result<ArrayRef> {
                Ok(match field.data_type() {
                    DataType::Utf8 => Arc::new(StringArray::from(vec!["x".repeat(field_length); rows])),
                    data_type => match ScalarValue::new_zero(data_type).or_else(|_| ScalarValue::try_from(data_type)) {
                        Ok(ScalarValue::Boolean(_)) => ScalarValue::Boolean(Some(false)).to_array_of_size(rows)?,
                        Ok(value) => value.to_array_of_size(rows)?,
                        Err(_) => new_null_array(data_type, rows),
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
    }
}

impl DisplayAs for BlackholeScanExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let g = &self.spec.generation;
        write!(
            f,
            "BlackholeScanExec: splits={}, pages_per_split={}, rows_per_page={}, delay={}ms",
            g.split_count, g.pages_per_split, g.rows_per_page, g.page_processing_delay_ms
        )
    }
}

impl BlackholeScanExec {
    /// The rows this scan (this task's share of it) generates.
    fn rows(&self) -> usize {
        let g = &self.spec.generation;
        let (task, tasks) = self.spec.share;
        let splits = (0..g.split_count).filter(|s| s % tasks.max(1) == task).count() as u64;
        let rows = splits.saturating_mul(g.pages_per_split).saturating_mul(g.rows_per_page) as usize;
        rows.min(self.spec.limit.map_or(usize::MAX, |limit| limit.saturating_mul(g.split_count.max(1) as usize)))
    }
}

impl ExecutionPlan for BlackholeScanExec {
    fn name(&self) -> &str {
        "BlackholeScanExec"
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
            return Err(DataFusionError::Internal("BlackholeScanExec has no children".into()));
        }
        Ok(self)
    }

    /// What it will generate (what progress is measured against); inexact, so that no
    /// optimizer answers a query from it instead of running the scan, whose pace is the point.
    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        let mut statistics = Statistics::new_unknown(&self.schema());
        let rows = self.rows();
        statistics.num_rows = Precision::Inexact(match partition {
            None => rows,
            Some(_) => rows.div_ceil(self.spec.generation.split_count.max(1) as usize),
        });
        Ok(Arc::new(statistics))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        // Generated rows count as the query's input, as a connector's reads do.
        let counters = context.session_config().get_extension::<crate::progress::ScanCounters>();
        let schema = self.schema();
        let g = self.spec.generation;
        let (task, tasks) = self.spec.share;
        let mine = (partition as u64) < g.split_count && partition as u64 % tasks.max(1) == task;
        let pages = if mine { g.pages_per_split } else { 0 };
        let rows_per_page = g.rows_per_page as usize;
        let delay = Duration::from_millis(g.page_processing_delay_ms);
        let (field_length, limit) = (g.field_length as usize, self.spec.limit.unwrap_or(usize::MAX));
        let page_schema = schema.clone();
        // Pages, each after the delay; a limit ends the split early. The wait is a timer,
        // so a scan costs no CPU, and it ends as soon as the reader drops it.
        let stream = futures::stream::unfold((0u64, 0usize), move |(page, sent)| {
            let schema = page_schema.clone();
            let counters = counters.clone();
            async move {
                if page >= pages || sent >= limit || rows_per_page == 0 {
                    return None;
                }
                tokio::time::sleep(delay).await;
                let rows = rows_per_page.min(limit - sent);
                let page_batch = Self::page(&schema, rows, field_length);
                if let (Some(counters), Ok(batch)) = (&counters, &page_batch) {
                    counters.add(batch.num_rows(), batch.get_array_memory_size());
                }
                Some((page_batch, (page + 1, sent + rows)))
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Test helpers for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A scan of `schema` generating 2 × 3 pages of 5 rows.
    pub(crate) fn spec(schema: &Schema) -> BlackholeScanSpec {
        let generation = Generation {
            split_count: 2,
            pages_per_split: 3,
            rows_per_page: 5,
            field_length: 2,
            page_processing_delay_ms: 1,
        };
        BlackholeScanSpec { columns: Columns::of(schema).unwrap(), generation, limit: None, share: whole() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_column_type_a_table_can_have_travels_to_a_worker() {
        use datafusion::arrow::datatypes::TimeUnit;
        let types = [
            DataType::Boolean,
            DataType::Int8,
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::Float32,
            DataType::Float64,
            DataType::Decimal128(38, 10),
            DataType::Utf8,
            DataType::Binary,
            DataType::Date32,
            DataType::Time64(TimeUnit::Microsecond),
            DataType::Timestamp(TimeUnit::Millisecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, Some("+05:30".into())),
            DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
        ];
        let fields: Vec<Field> =
            types.iter().enumerate().map(|(i, t)| Field::new(format!("c{i}"), t.clone(), true)).collect();
        let schema = Schema::new(fields);
        let columns = Columns::of(&schema).unwrap();
        let travelled: Columns = serde_json::from_str(&serde_json::to_string(&columns).unwrap()).unwrap();
        assert_eq!(travelled.schema().unwrap().as_ref(), &schema);
        // And a page of every type can be generated.
        BlackholeScanExec::page(&travelled.schema().unwrap(), 3, 2).unwrap();
    }

    #[test]
    fn properties_are_bounded_and_named() {
        let ok = Generation::from_properties(&props(&[
            ("split_count", "2"),
            ("pages_per_split", "3"),
            ("rows_per_page", "4"),
            ("page_processing_delay", "10ms"),
        ]))
        .unwrap();
        assert_eq!((ok.split_count, ok.pages_per_split, ok.rows_per_page, ok.page_processing_delay_ms), (2, 3, 4, 10));
        for bad in [
            props(&[("split_count", "-1")]),
            props(&[("split_count", "100000")]),
            props(&[("rows_per_page", "99999999999")]),
            props(&[("page_processing_delay", "2h")]),
            props(&[("page_processing_delay", "soon")]),
            props(&[("split_count", "1024"), ("pages_per_split", "18446744073709551615"), ("rows_per_page", "2")]),
            props(&[("format", "PARQUET")]),
        ] {
            let error = Generation::from_properties(&bad).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidTableProperty, "{bad:?}: {error}");
        }
    }

    async fn exec_rows(execs: Vec<BlackholeScanExec>) -> usize {
        let mut rows = 0;
        for exec in execs {
            let batches = datafusion::physical_plan::collect(Arc::new(exec), Arc::new(TaskContext::default())).await;
            rows += batches.unwrap().iter().map(RecordBatch::num_rows).sum::<usize>();
        }
        rows
    }

    #[tokio::test]
    async fn scans_generate_their_pages_and_honour_a_limit() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("d", DataType::Decimal128(12, 2), true),
        ]));
        let spec = super::tests_support::spec(&schema);
        let exec = Arc::new(BlackholeScanExec::try_new(spec.clone()).unwrap());
        let context = Arc::new(TaskContext::default());
        let batches = datafusion::physical_plan::collect(exec, context.clone()).await.unwrap();
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 30);
        assert_eq!(batches[0].schema(), schema);
        let strings = batches[0].column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(strings.value(0), "xx");
        let limited =
            Arc::new(BlackholeScanExec::try_new(BlackholeScanSpec { limit: Some(7), ..spec.clone() }).unwrap());
        let rows: usize =
            datafusion::physical_plan::collect(limited, context).await.unwrap().iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 14, "each split stops at the limit (the plan's limit above keeps 7)");
        // Spread over three tasks, the splits are generated once in all.
        let parts = exec_rows(BlackholeScanExec::try_new(spec.clone()).unwrap().split(3).unwrap()).await;
        assert_eq!(parts, 30);
    }
}
