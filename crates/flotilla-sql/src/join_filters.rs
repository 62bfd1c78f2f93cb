//! Rows of Parquet scans filtered by the dynamic filters of the joins above them, where
//! that spares the work in between.
//!
//! A hash join whose build side is collected publishes what its build side holds (the key
//! range and the keys, or a lookup into its hash table) as a dynamic filter on the scans of
//! its probe side; aggregates and TopK sorts publish theirs too. With DataFusion's defaults
//! (`parquet.pushdown_filters` off) a Parquet scan uses such a filter only to skip whole
//! files and row groups: every row of the rest is decoded and travels up to the operator
//! that published the filter. Row-level pushdown evaluates the filter in the scan, and
//! decodes the other columns only for the rows that pass.
//!
//! That pays when the rows would otherwise go through costly work before reaching the
//! filter's producer: TPC-H q17's subquery aggregates all 6 million `lineitem` rows by part
//! to join 200 parts (one process, sf1: 297 → 158 ms with the filter in the scan; sf10
//! 4.9 → 2.3 s), q18's TopK keeps 100 of the orders its aggregate groups. It does not pay
//! when the scan feeds the producer directly: evaluating a join's hash-table lookup on every
//! row in the Parquet reader, then decoding the survivors a second time, costs more than the
//! join's own probe (q08 211 → 264 ms, q09 367 → 479 ms with every dynamic filter pushed to
//! rows), nor when only a hash repartition lies in between (q12 sf10 1.47 → 1.68 s: the
//! repartition of the orders it drops costs less than the lookup on every row). Static
//! filters as row filters are slower too (q06, q12, q15), which is why DataFusion leaves
//! `pushdown_filters` off.
//!
//! It pays too where the scan is the build side of another join below the filter's
//! producer: every build row the filter would drop is joined with all its matches on that
//! join's probe side first. TPC-H q21 joins all 10K suppliers with 3.8M `lineitem` rows and
//! then keeps one nation's 400 (one process, sf1: 720 → 530 ms with the suppliers filtered
//! in their scan), q07 likewise (310 → 225 ms). The build side is the smaller one, so the
//! lookup per row costs little there.
//!
//! [`FilterRowsByJoinFilters`] therefore turns row-level pushdown on for a Parquet scan whose
//! predicate is made of dynamic filters alone (a static predicate stays a `FilterExec` above
//! the scan, as before) when at least one of those filters comes from an operator with an
//! aggregate, a full sort or a join's build side between it and the scan. In a distributed
//! statement a hash repartition or a coalesce becomes an exchange between stages, so there
//! such a node ends the search (except a coalesce of small tables, which the joining task
//! reads itself: [`crate::distributed::read_small_build_sides_in_place`]): a join's filter
//! reaches a scan in another stage only as [`crate::cross_stage_filters`] sends it, and that
//! scan filters rows with it (its rows would cross the exchange). A dynamic filter only drops rows its
//! producer would drop anyway (a join's unmatched probe rows, a TopK's rows below its
//! threshold), so filtering them earlier changes no answer.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, DynamicFilterPhysicalExpr};
use datafusion::physical_expr::{split_conjunction, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

/// See the [module](self).
#[derive(Debug, Default)]
pub struct FilterRowsByJoinFilters {
    /// The plan will be cut into stages at its hash repartitions and coalesces.
    pub distributed: bool,
}

/// The rule's name, by which a distributed statement's session swaps it for its own.
pub const NAME: &str = "flotilla_filter_rows_by_join_filters";

/// What lies between a scan and the operators whose dynamic filters may reach it: for each
/// producer (by the filter's expression id), whether costly work is in between.
type Producers = HashMap<u64, bool>;

/// How many plan levels the rule looks through; deeper plans are left as they are (the
/// walk is recursive).
pub const MAX_DEPTH: usize = 512;

impl FilterRowsByJoinFilters {
    fn rewrite(
        &self,
        node: Arc<dyn ExecutionPlan>,
        above: &Producers,
        depth: usize,
    ) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
        if depth > MAX_DEPTH {
            return Ok(Transformed::no(node));
        }
        if node.children().is_empty() {
            return filter_rows(node, above);
        }
        let mut producers = above.clone();
        if self.is_stage_cut(node.as_ref()) {
            producers.clear();
        } else if is_costly(node.as_ref()) {
            producers.values_mut().for_each(|costly| *costly = true);
        }
        if let Some(filter) = node.downcast_ref::<FilterExec>() {
            let sparing = |id| producers.get(&id).copied().unwrap_or(false);
            if let Some(filter) = with_join_filters(filter, &sparing)? {
                return Ok(Transformed::yes(filter));
            }
        }
        let produced: Vec<u64> =
            node.dynamic_expressions_produced().iter().filter_map(|expr| expr.expression_id()).collect();
        // A join's filter reaches its probe side (the second child), others' their input.
        let join = node.downcast_ref::<HashJoinExec>().is_some();
        let probe = if join { 1 } else { 0 };
        let mut changed = false;
        let mut children = Vec::with_capacity(node.children().len());
        for (i, child) in node.children().into_iter().enumerate() {
            let mut reaching = producers.clone();
            if join && i == 0 {
                // A build row the filter from above drops would be multiplied by its matches
                // on the probe side before that filter's producer drops them all.
                reaching.values_mut().for_each(|costly| *costly = true);
            }
            if i == probe {
                reaching.extend(produced.iter().map(|id| (*id, false)));
            }
            let child = self.rewrite(Arc::clone(child), &reaching, depth + 1)?;
            changed |= child.transformed;
            children.push(child.data);
        }
        if !changed {
            return Ok(Transformed::no(node));
        }
        Ok(Transformed::yes(replace_children_if_necessary(node, children)?))
    }

    fn is_stage_cut(&self, node: &dyn ExecutionPlan) -> bool {
        self.distributed
            && (is_hash_repartition(node)
                || node
                    .downcast_ref::<CoalescePartitionsExec>()
                    .is_some_and(|coalesce| !read_in_place(coalesce.input()))
                || node.downcast_ref::<SortPreservingMergeExec>().is_some())
    }
}

/// Whether what a coalesce gathers will be read by the task that coalesces it rather than
/// by a stage of its own: small tables alone, nothing cut below them
/// ([`crate::distributed::read_small_build_sides_in_place`] decides the same on the
/// distributed plan).
fn read_in_place(input: &Arc<dyn ExecutionPlan>) -> bool {
    let mut in_place = true;
    let walk = input.apply(|node| {
        if is_hash_repartition(node.as_ref())
            || node.downcast_ref::<CoalescePartitionsExec>().is_some()
            || node.downcast_ref::<SortPreservingMergeExec>().is_some()
        {
            in_place = false;
        } else if node.children().is_empty() {
            in_place &= crate::distributed::small_leaf(node)?;
        }
        Ok(if in_place { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
    });
    walk.is_ok() && in_place
}

fn is_hash_repartition(node: &dyn ExecutionPlan) -> bool {
    node.downcast_ref::<RepartitionExec>().is_some_and(|r| matches!(r.partitioning(), Partitioning::Hash(..)))
}

/// Work on every row that a filter applied below it would spare, at more than the filter's
/// own cost in the reader (a hash repartition is not: measured in the module's notes).
fn is_costly(node: &dyn ExecutionPlan) -> bool {
    node.downcast_ref::<AggregateExec>().is_some()
        || node.downcast_ref::<SortExec>().is_some_and(|sort| sort.fetch().is_none())
}

/// Turns row-level pushdown on for a Parquet scan filtered only by dynamic filters, one of
/// them from a producer with costly work in between.
fn filter_rows(node: Arc<dyn ExecutionPlan>, producers: &Producers) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let parquet =
        node.downcast_ref::<DataSourceExec>().and_then(|scan| scan.downcast_to_file_source::<ParquetSource>());
    let Some(predicate) = parquet.and_then(|(_, parquet)| parquet.filter()) else {
        return Ok(Transformed::no(node));
    };
    let spares_work = split_conjunction(&predicate)
        .iter()
        .filter_map(|conjunct| conjunct.expression_id())
        .any(|id| producers.get(&id).copied().unwrap_or(false));
    if !spares_work {
        return Ok(Transformed::no(node));
    }
    Ok(filtering_rows(&node).map_or(Transformed::no(node), Transformed::yes))
}

/// A Parquet scan whose predicate is made of dynamic filters alone, with row-level pushdown
/// on; `None` for other scans (a static predicate stays with the `FilterExec` above, which
/// keeps it out of the reader).
pub(crate) fn filtering_rows(node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let scan = node.downcast_ref::<DataSourceExec>()?;
    let (files, parquet) = scan.downcast_to_file_source::<ParquetSource>()?;
    if parquet.table_parquet_options().global.pushdown_filters {
        return None;
    }
    let predicate = parquet.filter()?;
    let conjuncts = split_conjunction(&predicate);
    if !conjuncts.iter().all(|conjunct| conjunct.is::<DynamicFilterPhysicalExpr>()) {
        return None;
    }
    let source = Arc::new(parquet.clone().with_pushdown_filters(true));
    let files = FileScanConfigBuilder::from(files.clone()).with_source(source).build();
    Some(Arc::new(scan.clone().with_data_source(Arc::new(files))))
}

/// A `FilterExec` over a Parquet scan whose predicate has static conjuncts and dynamic
/// filters for which `wanted` holds, with those filters among its own conjuncts (after the
/// cheap ones: [`crate::conjuncts`]), or `None`. Such a scan cannot filter rows in the reader
/// (the static conjuncts would be evaluated there too, which costs more than it spares); the
/// filter above it evaluates the dynamic ones on the rows its static conjuncts keep, before the
/// costly work the filters spare (TPC-H q20: the one-year `lineitem` rows are aggregated by
/// part and supplier to meet 312 `partsupp` rows). The scan may be wrapped in a distributed
/// leaf and a wait for filters from other stages.
pub(crate) fn with_join_filters(
    filter: &FilterExec,
    wanted: &dyn Fn(u64) -> bool,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::filter::FilterExecBuilder;
    let mut scan = filter.input();
    if let Some(wait) = scan.downcast_ref::<crate::cross_stage_filters::JoinFilterWaitExec>() {
        scan = wait.input();
    }
    if let Some(leaf) = scan.downcast_ref::<datafusion_distributed::DistributedLeafExec>() {
        scan = leaf.original();
    }
    let parquet =
        scan.downcast_ref::<DataSourceExec>().and_then(|source| source.downcast_to_file_source::<ParquetSource>());
    let Some((_, parquet)) = parquet else { return Ok(None) };
    if parquet.table_parquet_options().global.pushdown_filters {
        return Ok(None);
    }
    let Some(predicate) = parquet.filter() else { return Ok(None) };
    let conjuncts = split_conjunction(&predicate);
    if conjuncts.iter().all(|conjunct| conjunct.is::<DynamicFilterPhysicalExpr>()) {
        return Ok(None);
    }
    // The scan's predicate reads the table's columns; the filter reads the scan's output.
    let output = filter.input().schema();
    let mut added = Vec::new();
    for conjunct in conjuncts {
        let Some(id) = conjunct.expression_id() else { continue };
        if !conjunct.is::<DynamicFilterPhysicalExpr>() || !wanted(id) {
            continue;
        }
        let keys: Option<Vec<Arc<dyn PhysicalExpr>>> = conjunct
            .children()
            .into_iter()
            .map(|key| {
                let column = key.downcast_ref::<Column>()?;
                let index = output.index_of(column.name()).ok()?;
                Some(Arc::new(Column::new(column.name(), index)) as Arc<dyn PhysicalExpr>)
            })
            .collect();
        let Some(keys) = keys else { continue };
        added.push(Arc::clone(conjunct).with_new_children(keys)?);
    }
    if added.is_empty() {
        return Ok(None);
    }
    let predicate = added.into_iter().fold(Arc::clone(filter.predicate()), |predicate, conjunct| {
        Arc::new(BinaryExpr::new(predicate, Operator::And, conjunct)) as Arc<dyn PhysicalExpr>
    });
    let predicate = crate::conjuncts::cheap_first(predicate, &output);
    Ok(Some(Arc::new(FilterExecBuilder::from(filter).with_predicate(predicate).build()?)))
}

impl PhysicalOptimizerRule for FilterRowsByJoinFilters {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        if config.execution.parquet.pushdown_filters {
            return Ok(plan);
        }
        Ok(self.rewrite(plan, &Producers::new(), 0)?.data)
    }

    fn name(&self) -> &str {
        NAME
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::physical_plan::{ExecutionPlan, Partitioning};

    use super::read_in_place;
    use crate::test_support::ParquetTable;

    /// A table of one column of `rows` distinct integers (no encoding makes it small).
    fn numbers(rows: i64) -> RecordBatch {
        let values = Int64Array::from_iter_values((0..rows).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64)));
        RecordBatch::try_from_iter([("n", Arc::new(values) as _)]).unwrap()
    }

    /// A distributed statement keeps what a coalesce gathers in the coalescing task only
    /// for small tables (files of up to 1 MB, DataFusion's own collect threshold), with no
    /// exchange below; elsewhere a join filter from above cannot reach the scan.
    #[tokio::test]
    async fn coalesced_scans_are_read_in_place_only_when_small_and_uncut() {
        let small = ParquetTable::new(&numbers(1_000), 2).await;
        let large = ParquetTable::new(&numbers(400_000), 2).await;
        assert!(std::fs::metadata(&large.path).unwrap().len() > 1024 * 1024);
        for (table, expected) in [(&small, true), (&large, false)] {
            let scan = table.ctx.sql("SELECT n FROM t").await.unwrap().create_physical_plan().await.unwrap();
            assert_eq!(read_in_place(&scan), expected, "{}", table.path.display());
            let shuffled: Arc<dyn ExecutionPlan> = Arc::new(
                RepartitionExec::try_new(scan.clone(), Partitioning::Hash(vec![col("n", &scan.schema()).unwrap()], 2))
                    .unwrap(),
            );
            assert!(!read_in_place(&shuffled), "a hash repartition is an exchange");
        }
    }
}
