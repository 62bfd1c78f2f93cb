//! Build sides of joins over semi and anti joins, chosen by rows.
//!
//! DataFusion's join selection builds a partitioned hash join's table on the side it
//! estimates smaller: by estimated bytes where both sides have them, else by rows. Its
//! inner joins report no byte estimate (rows decide), but a semi or anti join reports the
//! column sizes of the side it preserves as the scans read them, not scaled to the rows it
//! keeps. In TPC-H q21 the `EXISTS` join keeps an estimated 60K of 5.9M `lineitem` rows
//! (73K at run time) and reports 95.2 MB, the `NOT EXISTS` side's 5.9M filtered `lineitem`
//! rows 95.0 MB: the anti join above them built its hash table on those rows (3.8M at run
//! time) to probe 73K, in one process and in a cluster alike.
//!
//! [`BuildSemiJoinsByRows`] runs right after join selection and decides again each
//! partitioned hash join with a semi or anti join on either side (through projections),
//! DataFusion's way but with the semi or anti join's byte estimate taken as unknown, as its
//! inner joins' are: the smaller side by rows is built. Joins collected into one partition
//! keep their sides (swapping one would have to check the new build side against the
//! collection thresholds).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinType, Result};
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;

/// The rule's name in the physical optimizer's list.
pub const NAME: &str = "build_semi_joins_by_rows";

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub struct BuildSemiJoinsByRows;

impl PhysicalOptimizerRule for BuildSemiJoinsByRows {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        if !config.optimizer.join_reordering {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let swappable = *join.partition_mode() == PartitionMode::Partitioned
                && join.join_type().supports_swap()
                && !join.null_aware;
            if !swappable || !(semi_or_anti(join.left()) || semi_or_anti(join.right())) {
                return Ok(Transformed::no(node));
            }
            if larger(join.left(), join.right()) {
                Ok(Transformed::yes(join.swap_inputs(PartitionMode::Partitioned)?))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        NAME
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `plan` is a semi or anti hash join, under projections.
fn semi_or_anti(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut plan = plan;
    while let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        plan = projection.input();
    }
    plan.downcast_ref::<HashJoinExec>().is_some_and(|join| {
        matches!(join.join_type(), JoinType::LeftSemi | JoinType::RightSemi | JoinType::LeftAnti | JoinType::RightAnti)
    })
}

/// Whether `left` is estimated larger than `right`, compared DataFusion's way (bytes where
/// both sides have them, else rows; not larger where neither tells), a semi or anti join's
/// bytes taken as unknown: they are its input's column sizes, not scaled to the rows it keeps.
fn larger(left: &Arc<dyn ExecutionPlan>, right: &Arc<dyn ExecutionPlan>) -> bool {
    let size = |plan: &Arc<dyn ExecutionPlan>| {
        let Some(statistics) = crate::selectivity::estimate(plan.as_ref()) else { return (None, None) };
        let bytes = statistics.total_byte_size.get_value().copied().filter(|_| !semi_or_anti(plan));
        (bytes, statistics.num_rows.get_value().copied())
    };
    match (size(left), size(right)) {
        ((Some(left), _), (Some(right), _)) => left > right,
        ((_, Some(left)), (_, Some(right))) => left > right,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use crate::test_support::ParquetTable;

    /// `l`: 20,000 rows of an order key (4 rows an order), a supplier (`l_supp`, 0 to 99)
    /// and a 200-byte comment; `d`: 100 suppliers, 10 names.
    fn tables() -> (RecordBatch, RecordBatch) {
        let n = 20_000;
        let l = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("l_key", DataType::Int64, false),
                Field::new("l_supp", DataType::Int64, false),
                Field::new("l_comment", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Int64Array::from((0..n).map(|i| i / 4).collect::<Vec<_>>())),
                Arc::new(Int64Array::from((0..n).map(|i| (i * 7) % 100).collect::<Vec<_>>())),
                Arc::new(StringArray::from((0..n).map(|i| format!("{i:0>200}")).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let d = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("d_key", DataType::Int64, false),
                Field::new("d_name", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Int64Array::from((0..100).collect::<Vec<_>>())),
                Arc::new(StringArray::from((0..100).map(|i| format!("n{}", i % 10)).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        (l, d)
    }

    /// `l` and `d` in a context whose joins are all partitioned, with or without the rule.
    async fn context((l, d): &(RecordBatch, RecordBatch), rule: bool) -> ParquetTable {
        let mut config = SessionConfig::new().with_target_partitions(2);
        config.options_mut().optimizer.hash_join_single_partition_threshold = 0;
        config.options_mut().optimizer.hash_join_single_partition_threshold_rows = 0;
        let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
        if rule {
            let at = rules.iter().position(|rule| rule.name() == "join_selection").unwrap();
            rules.insert(at + 1, Arc::new(BuildSemiJoinsByRows));
        }
        let state =
            SessionStateBuilder::new().with_default_features().with_config(config).with_physical_optimizer_rules(rules);
        ParquetTable::with_tables(SessionContext::new_with_state(state.build()), &[("l", l), ("d", d)]).await
    }

    /// The anti join's type and whether its build (left) side is the semi join.
    fn anti_join(plan: &Arc<dyn ExecutionPlan>) -> Option<(JoinType, bool)> {
        if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
            if matches!(join.join_type(), JoinType::LeftAnti | JoinType::RightAnti) {
                let mut build = join.left();
                while !build.children().is_empty() && build.downcast_ref::<HashJoinExec>().is_none() {
                    build = build.children()[0];
                }
                return Some((*join.join_type(), semi_or_anti(build)));
            }
        }
        plan.children().into_iter().find_map(anti_join)
    }

    /// TPC-H q21's shape: a `NOT EXISTS` over an `EXISTS` that keeps few wide rows. The semi
    /// join's bytes (its comments, unscaled) exceed the filtered side's, so DataFusion builds
    /// on the many rows; the rule builds on the few, with the same answer.
    #[tokio::test]
    async fn an_anti_join_over_a_semi_join_builds_on_the_fewer_rows() {
        let tables = tables();
        let sql = "SELECT count(*), max(l1.l_comment) FROM l l1, d \
                   WHERE l1.l_supp = d_key AND d_name = 'n3' \
                   AND EXISTS (SELECT 1 FROM l l2 WHERE l2.l_key = l1.l_key AND l2.l_supp <> l1.l_supp) \
                   AND NOT EXISTS (SELECT 1 FROM l l3 WHERE l3.l_key = l1.l_key AND l3.l_supp <> l1.l_supp \
                                   AND l3.l_supp > 50)";
        let mut answers = Vec::new();
        let mut shapes = Vec::new();
        for rule in [false, true] {
            let table = context(&tables, rule).await;
            let frame = table.ctx.sql(sql).await.unwrap();
            let plan = frame.clone().create_physical_plan().await.unwrap();
            shapes.push(anti_join(&plan).unwrap());
            answers.push(pretty_format_batches(&frame.collect().await.unwrap()).unwrap().to_string());
        }
        assert_eq!(shapes[0], (JoinType::RightAnti, false), "DataFusion alone builds on the anti side's rows");
        assert_eq!(shapes[1], (JoinType::LeftAnti, true));
        assert_eq!(answers[0], answers[1]);
        assert!(answers[1].contains("| 600 "), "{}", answers[1]);
    }

    /// Joins without a semi or anti join below keep DataFusion's sides, and the rule is off
    /// with `optimizer.join_reordering`.
    #[tokio::test]
    async fn other_joins_and_a_disabled_reordering_are_left_alone() {
        let table = context(&tables(), false).await;
        let ctx = &table.ctx;
        let plan =
            ctx.sql("SELECT * FROM l, d WHERE l_supp = d_key").await.unwrap().create_physical_plan().await.unwrap();
        let options = ConfigOptions::default();
        let text = |plan: &Arc<dyn ExecutionPlan>| {
            datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string()
        };
        assert_eq!(text(&BuildSemiJoinsByRows.optimize(Arc::clone(&plan), &options).unwrap()), text(&plan));

        let sql = "SELECT count(*) FROM l l1 WHERE EXISTS (SELECT 1 FROM l l2, d WHERE l2.l_key = l1.l_key AND l2.l_supp = d_key)";
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let mut off = ConfigOptions::default();
        off.optimizer.join_reordering = false;
        assert_eq!(text(&BuildSemiJoinsByRows.optimize(Arc::clone(&plan), &off).unwrap()), text(&plan));
    }
}
