//! The `tpch` connector: Trino's layout (schemas `tiny`, `sf1`, `sf100`, ... and any `sfN`),
//! with the eight TPC-H tables generated on the fly by `tpchgen`, each scan partition
//! generating its own share of the rows (tpchgen's `part`/`part_count`), so nothing is stored.
//! Scans are [`TpchScanExec`]s, which the distributed planner splits across tasks.
//!
//! Column names follow Trino's `tpch.column-naming`: `SIMPLIFIED` (default, `orderkey`) or
//! `STANDARD` (`l_orderkey`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator, PartSuppGenerator,
    RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow, SupplierArrow,
};

use crate::catalog::tpch_scan::{Part, TpchScanExec, TpchScanSpec};
use crate::catalog::CatalogError;

/// Schemas listed by `SHOW SCHEMAS`, as Trino lists them; any other `sfN` also resolves.
const LISTED_SCHEMAS: &[(&str, f64)] = &[
    ("tiny", 0.01),
    ("sf1", 1.0),
    ("sf10", 10.0),
    ("sf100", 100.0),
    ("sf300", 300.0),
    ("sf1000", 1000.0),
    ("sf3000", 3000.0),
    ("sf10000", 10000.0),
    ("sf30000", 30000.0),
    ("sf100000", 100000.0),
];

/// Rows a partition should hold at least before a table is split further.
const MIN_ROWS_PER_PARTITION: f64 = 50_000.0;
const BATCH_SIZE: usize = 8192;

/// `tpch.column-naming`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnNaming {
    /// `orderkey`: Trino's default.
    Simplified,
    /// `l_orderkey`: the names of the TPC-H specification.
    Standard,
}

impl ColumnNaming {
    pub fn parse(value: &str) -> Result<Self, CatalogError> {
        match value.to_ascii_uppercase().as_str() {
            "SIMPLIFIED" => Ok(ColumnNaming::Simplified),
            "STANDARD" => Ok(ColumnNaming::Standard),
            other => Err(CatalogError::InvalidProperty {
                key: "tpch.column-naming".into(),
                message: format!("expected SIMPLIFIED or STANDARD, got '{other}'"),
            }),
        }
    }
}

/// The eight tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpchTable {
    Nation,
    Region,
    Part,
    Supplier,
    PartSupp,
    Customer,
    Orders,
    LineItem,
}

impl TpchTable {
    pub const ALL: [TpchTable; 8] = [
        TpchTable::Customer,
        TpchTable::LineItem,
        TpchTable::Nation,
        TpchTable::Orders,
        TpchTable::Part,
        TpchTable::PartSupp,
        TpchTable::Region,
        TpchTable::Supplier,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TpchTable::Nation => "nation",
            TpchTable::Region => "region",
            TpchTable::Part => "part",
            TpchTable::Supplier => "supplier",
            TpchTable::PartSupp => "partsupp",
            TpchTable::Customer => "customer",
            TpchTable::Orders => "orders",
            TpchTable::LineItem => "lineitem",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The schema tpchgen produces, with the specification's (`STANDARD`) column names.
    pub fn standard_schema(self) -> SchemaRef {
        match self {
            TpchTable::Nation => NationArrow::schema_ref(),
            TpchTable::Region => RegionArrow::schema_ref(),
            TpchTable::Part => PartArrow::schema_ref(),
            TpchTable::Supplier => SupplierArrow::schema_ref(),
            TpchTable::PartSupp => PartSuppArrow::schema_ref(),
            TpchTable::Customer => CustomerArrow::schema_ref(),
            TpchTable::Orders => OrderArrow::schema_ref(),
            TpchTable::LineItem => LineItemArrow::schema_ref(),
        }
    }

    /// The schema with the column names of `naming`.
    pub fn schema(self, naming: ColumnNaming) -> SchemaRef {
        let standard = self.standard_schema();
        match naming {
            ColumnNaming::Standard => standard,
            ColumnNaming::Simplified => Arc::new(Schema::new(
                standard
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_name(simplified_name(f.name())))
                    .collect::<Vec<_>>(),
            )),
        }
    }

    /// Approximate row count, to size partitions.
    pub(crate) fn approximate_rows(self, scale: f64) -> f64 {
        match self {
            TpchTable::Nation => 25.0,
            TpchTable::Region => 5.0,
            TpchTable::Part => 200_000.0 * scale,
            TpchTable::Supplier => 10_000.0 * scale,
            TpchTable::PartSupp => 800_000.0 * scale,
            TpchTable::Customer => 150_000.0 * scale,
            TpchTable::Orders => 1_500_000.0 * scale,
            TpchTable::LineItem => 6_000_000.0 * scale,
        }
    }

    /// Generates part `part` (1-based) of `part_count` and hands each batch to `emit`, which
    /// returns false once the consumer has gone away.
    pub fn generate(
        self,
        scale: f64,
        part: i32,
        part_count: i32,
        mut emit: impl FnMut(RecordBatch) -> bool,
    ) -> Result<()> {
        fn drive<I>(batches: I, emit: &mut dyn FnMut(RecordBatch) -> bool) -> Result<()>
        where
            I: Iterator<Item = std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError>>,
        {
            for batch in batches {
                if !emit(batch?) {
                    break;
                }
            }
            Ok(())
        }
        let emit = &mut emit;
        match self {
            TpchTable::Nation => {
                drive(NationArrow::new(NationGenerator::new(scale, part, part_count)).with_batch_size(BATCH_SIZE), emit)
            }
            TpchTable::Region => {
                drive(RegionArrow::new(RegionGenerator::new(scale, part, part_count)).with_batch_size(BATCH_SIZE), emit)
            }
            TpchTable::Part => {
                drive(PartArrow::new(PartGenerator::new(scale, part, part_count)).with_batch_size(BATCH_SIZE), emit)
            }
            TpchTable::Supplier => drive(
                SupplierArrow::new(SupplierGenerator::new(scale, part, part_count)).with_batch_size(BATCH_SIZE),
                emit,
            ),
            TpchTable::PartSupp => drive(
                PartSuppArrow::new(PartSuppGenerator::new(scale, part, part_count)).with_batch_size(BATCH_SIZE),
                emit,
            ),
            TpchTable::Customer => drive(
                CustomerArrow::new(CustomerGenerator::new(scale, part, part_count)).with_batch_size(BATCH_SIZE),
                emit,
            ),
            TpchTable::Orders => {
                drive(OrderArrow::new(OrderGenerator::new(scale, part, part_count)).with_batch_size(BATCH_SIZE), emit)
            }
            TpchTable::LineItem => drive(
                LineItemArrow::new(LineItemGenerator::new(scale, part, part_count)).with_batch_size(BATCH_SIZE),
                emit,
            ),
        }
    }
}

fn simplified_name(standard: &str) -> &str {
    standard.split_once('_').map(|(_, rest)| rest).unwrap_or(standard)
}

/// The scale factor a schema name stands for: `tiny` or `sf<number>`.
pub fn scale_factor_of(schema: &str) -> Option<f64> {
    if schema == "tiny" {
        return Some(0.01);
    }
    let scale: f64 = schema.strip_prefix("sf")?.parse().ok()?;
    (scale > 0.0 && scale.is_finite()).then_some(scale)
}

/// The `tpch` catalog.
#[derive(Debug)]
pub struct TpchCatalog {
    naming: ColumnNaming,
}

impl TpchCatalog {
    pub fn new(naming: ColumnNaming) -> Self {
        Self { naming }
    }
}

impl CatalogProvider for TpchCatalog {
    fn schema_names(&self) -> Vec<String> {
        LISTED_SCHEMAS.iter().map(|(name, _)| name.to_string()).collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let scale = scale_factor_of(name)?;
        Some(Arc::new(TpchSchema { scale, naming: self.naming }))
    }
}

#[derive(Debug)]
struct TpchSchema {
    scale: f64,
    naming: ColumnNaming,
}

#[async_trait]
impl SchemaProvider for TpchSchema {
    fn table_names(&self) -> Vec<String> {
        TpchTable::ALL.iter().map(|t| t.name().to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Ok(TpchTable::from_name(name)
            .map(|table| Arc::new(TpchTableProvider::new(table, self.scale, self.naming)) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        TpchTable::from_name(name).is_some()
    }
}

/// One TPC-H table at one scale factor.
#[derive(Debug)]
pub struct TpchTableProvider {
    table: TpchTable,
    scale: f64,
    naming: ColumnNaming,
    schema: SchemaRef,
}

impl TpchTableProvider {
    pub fn new(table: TpchTable, scale: f64, naming: ColumnNaming) -> Self {
        Self { table, scale, naming, schema: table.schema(naming) }
    }

    fn partition_count(&self, target_partitions: usize) -> usize {
        let by_size = (self.table.approximate_rows(self.scale) / MIN_ROWS_PER_PARTITION).ceil() as usize;
        by_size.clamp(1, target_partitions.max(1))
    }
}

#[async_trait]
impl TableProvider for TpchTableProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let part_count = self.partition_count(state.config().target_partitions()) as i32;
        let spec = TpchScanSpec {
            table: self.table.name().to_string(),
            scale: self.scale,
            standard_names: self.naming == ColumnNaming::Standard,
            projection: projection.cloned(),
            limit,
            partitions: (1..=part_count).map(|part| Part { part, count: part_count }).collect(),
        };
        Ok(Arc::new(TpchScanExec::try_new(spec)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_resolve_to_scale_factors() {
        assert_eq!(scale_factor_of("tiny"), Some(0.01));
        assert_eq!(scale_factor_of("sf1"), Some(1.0));
        assert_eq!(scale_factor_of("sf0.1"), Some(0.1));
        assert_eq!(scale_factor_of("sf"), None);
        assert_eq!(scale_factor_of("sf-1"), None);
        assert_eq!(scale_factor_of("information_schema"), None);
    }

    #[test]
    fn simplified_names_drop_the_table_prefix() {
        let provider = TpchTableProvider::new(TpchTable::LineItem, 0.01, ColumnNaming::Simplified);
        assert_eq!(provider.schema().field(0).name(), "orderkey");
        let standard = TpchTableProvider::new(TpchTable::PartSupp, 0.01, ColumnNaming::Standard);
        assert_eq!(standard.schema().field(0).name(), "ps_partkey");
    }

    #[test]
    fn partitions_together_generate_every_row_once() {
        let count = |parts: i32| -> usize {
            (1..=parts)
                .map(|part| {
                    let mut rows = 0;
                    TpchTable::Orders
                        .generate(0.01, part, parts, |b| {
                            rows += b.num_rows();
                            true
                        })
                        .unwrap();
                    rows
                })
                .sum()
        };
        assert_eq!(count(1), 15_000);
        assert_eq!(count(3), 15_000);
    }
}
