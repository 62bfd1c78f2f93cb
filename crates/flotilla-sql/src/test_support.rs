//! Helpers shared by this crate's unit tests.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::Operator;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

/// Tables written as Parquet files (one each) and registered in a DataFusion context; the
/// files' folder is removed when dropped, also when the test fails. [`ParquetTable::new`]:
/// one table `t` in a context of `partitions` target partitions.
pub(crate) struct ParquetTable {
    pub ctx: SessionContext,
    pub path: PathBuf,
    dir: PathBuf,
}

impl ParquetTable {
    pub async fn new(batch: &RecordBatch, partitions: usize) -> Self {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
        Self::with_tables(ctx, &[("t", batch)]).await
    }

    /// Each of `tables` written as one Parquet file and registered under its name in
    /// `ctx`; `path` is the first table's file.
    pub async fn with_tables(ctx: SessionContext, tables: &[(&str, &RecordBatch)]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("flotilla-parquet-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut paths = Vec::new();
        for (name, batch) in tables {
            let path = dir.join(format!("{name}.parquet"));
            let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
            writer.write(batch).unwrap();
            writer.close().unwrap();
            ctx.register_parquet(*name, path.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
            paths.push(path);
        }
        Self { ctx, path: paths.swap_remove(0), dir }
    }
}

impl Drop for ParquetTable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The predicate of the first `FilterExec` in `plan` (top down).
pub(crate) fn filter_predicate(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn PhysicalExpr> {
    let mut found = None;
    plan.apply(|node| {
        if let Some(filter) = node.downcast_ref::<FilterExec>() {
            found = Some(Arc::clone(filter.predicate()));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    found.expect("a FilterExec")
}

/// A predicate's AND tree with every level in parentheses; each conjunct by the first
/// letter of its text (the column it compares), `L` for a LIKE, `U` for a call of `upper`.
pub(crate) fn predicate_shape(expr: &Arc<dyn PhysicalExpr>) -> String {
    match expr.downcast_ref::<BinaryExpr>() {
        Some(and) if *and.op() == Operator::And => {
            format!("({} {})", predicate_shape(and.left()), predicate_shape(and.right()))
        }
        _ => {
            let text = expr.to_string();
            if text.contains("LIKE") {
                "L".to_string()
            } else if text.contains("upper") {
                "U".to_string()
            } else {
                text[..1].to_string()
            }
        }
    }
}
