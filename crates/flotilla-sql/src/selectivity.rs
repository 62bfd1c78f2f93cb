//! Row estimates of filters that DataFusion can analyse only in part.
//!
//! DataFusion estimates a `FilterExec`'s output with interval analysis of its predicate over
//! the input's column statistics (min, max, distinct counts) when every part of the
//! predicate is analysable, and otherwise takes `optimizer.default_filter_selectivity`
//! (20%) of the input's rows for the predicate as a whole, ignoring the parts it could have
//! analysed. TPC-H q12's `lineitem` filter keeps one year of seven (`l_receiptdate`, which
//! the analysis reads from the Parquet statistics) of the rows with two ship modes
//! (strings: not analysable): 31K of 6M rows, estimated at 1.2M, which is above the
//! broadcast budget, so the join with `orders` was planned partitioned and a cluster
//! shuffled all 1.5M orders to it instead of broadcasting the 31K rows.
//!
//! [`EstimateAnalysableConjuncts`] runs before DataFusion's join selection and gives such a
//! filter the selectivity of its analysable conjuncts (interval analysis, as DataFusion
//! would do for them alone) times the default selectivity for all the rest together, as if
//! the two parts were independent. The rest still counts as one default filter however many
//! conjuncts it has (no compounding of guesses), so the estimate is never below what the
//! analysable part alone and one default guess give.

use std::sync::Arc;

use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::config::ConfigOptions;
use datafusion::physical_expr::intervals::utils::check_support;
use datafusion::physical_expr::{analyze, conjunction, split_conjunction, AnalysisContext, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::ExecutionPlan;

/// The rule's name in the physical optimizer's list.
pub const NAME: &str = "estimate_analysable_conjuncts";

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub struct EstimateAnalysableConjuncts;

impl PhysicalOptimizerRule for EstimateAnalysableConjuncts {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            match selectivity_percent(filter) {
                Some(percent) if percent < filter.default_selectivity() => {
                    let refined = FilterExecBuilder::from(filter).with_default_selectivity(percent).build()?;
                    Ok(Transformed::yes(Arc::new(refined) as Arc<dyn ExecutionPlan>))
                }
                _ => Ok(Transformed::no(node)),
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

/// The refined selectivity of `filter` in whole percent (rounded up, at least 1), or `None`
/// where DataFusion's own estimate stands: a predicate it analyses whole, or one without an
/// analysable conjunct, or input statistics that do not tell.
fn selectivity_percent(filter: &FilterExec) -> Option<u8> {
    let schema = filter.input().schema();
    let predicate = filter.predicate();
    if check_support(predicate, &schema) {
        return None;
    }
    let analysable: Vec<Arc<dyn PhysicalExpr>> =
        split_conjunction(predicate).into_iter().filter(|part| check_support(part, &schema)).cloned().collect();
    if analysable.is_empty() {
        return None;
    }
    let statistics = estimate(filter.input().as_ref())?;
    if matches!(statistics.num_rows, Precision::Absent) {
        return None;
    }
    let context = AnalysisContext::try_from_statistics(&schema, &statistics.column_statistics).ok()?;
    let known = analyze(&conjunction(analysable), context, &schema).ok()?.selectivity?;
    if !(0.0..=1.0).contains(&known) {
        return None;
    }
    let percent = (known * f64::from(filter.default_selectivity())).ceil().clamp(1.0, 100.0);
    Some(percent as u8)
}

/// `plan`'s statistics as DataFusion's optimizer rules read them (the rules that size
/// and order joins share this), if it can tell.
pub(crate) fn estimate(plan: &dyn ExecutionPlan) -> Option<Arc<datafusion::common::Statistics>> {
    StatisticsContext::new().compute(plan, &StatisticsArgs::new()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::common::tree_node::TreeNodeRecursion;

    /// The filters of a plan: (default selectivity, estimated rows).
    fn filters(plan: &Arc<dyn ExecutionPlan>) -> Vec<(u8, Option<usize>)> {
        let mut found = Vec::new();
        plan.apply(|node| {
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                let statistics = StatisticsContext::new().compute(filter, &StatisticsArgs::new()).unwrap();
                let rows = statistics.num_rows.get_value().copied();
                found.push((filter.default_selectivity(), rows));
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found
    }

    #[tokio::test]
    async fn partly_analysable_filters_are_estimated_by_their_analysable_part() {
        // 70,000 rows: a date spread evenly over 7 years, a mode of 7 strings.
        let rows = 70_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("day", DataType::Date32, false),
            Field::new("mode", DataType::Utf8, false),
        ]));
        let days = Date32Array::from_iter_values((0..rows).map(|i| 8035 + (i % 2555)));
        let modes = StringArray::from_iter_values(
            (0..rows).map(|i| ["MAIL", "SHIP", "AIR", "RAIL", "FOB", "TRUCK", "REG"][i as usize % 7]),
        );
        let batch = RecordBatch::try_new(schema, vec![Arc::new(days), Arc::new(modes)]).unwrap();
        let table = crate::test_support::ParquetTable::new(&batch, 1).await;
        let ctx = &table.ctx;
        let plan_of = |sql: &'static str| {
            let ctx = ctx.clone();
            async move { ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap() }
        };
        let rule = EstimateAnalysableConjuncts;
        let options = ConfigOptions::default();

        // One year of seven and two modes of seven: the year is analysable (1/7), the modes
        // are not (20%): 1/7 * 20% = 2.9% → 3%, 2,100 rows instead of 14,000.
        let mixed = plan_of(
            "SELECT * FROM t WHERE mode IN ('MAIL', 'SHIP') AND day >= DATE '1992-01-01' AND day < DATE '1993-01-01'",
        )
        .await;
        assert_eq!(filters(&mixed), [(20, Some(14_000))]);
        let refined = rule.optimize(mixed, &options).unwrap();
        assert_eq!(filters(&refined), [(3, Some(2_100))]);

        // Wholly analysable, or with no analysable part: DataFusion's estimate stands.
        for sql in [
            "SELECT * FROM t WHERE day >= DATE '1992-01-01' AND day < DATE '1993-01-01'",
            "SELECT * FROM t WHERE mode IN ('MAIL', 'SHIP') AND mode <> 'AIR'",
        ] {
            let plan = plan_of(sql).await;
            let before = filters(&plan);
            assert_eq!(filters(&rule.optimize(plan, &options).unwrap()), before, "{sql}");
        }

        // An analysable part that keeps everything: never above the default.
        let wide = plan_of("SELECT * FROM t WHERE mode = 'MAIL' AND day >= DATE '1900-01-01'").await;
        assert_eq!(filters(&rule.optimize(wide, &options).unwrap()), [(20, Some(14_000))]);
        // One that keeps nothing by the statistics: 1%, never 0 (statistics can be stale).
        let none = plan_of("SELECT * FROM t WHERE mode = 'MAIL' AND day < DATE '1900-01-01'").await;
        assert_eq!(filters(&rule.optimize(none, &options).unwrap()), [(1, Some(700))]);

        // Hostile: hundreds of conjuncts, analysable and not, interleaved; still one default
        // guess for all the unanalysable ones, and the analysable ones narrow it.
        let mut sql = String::from("SELECT * FROM t WHERE day < DATE '1993-01-01'");
        for i in 0..300 {
            sql.push_str(&format!(" AND mode <> 'M{i}' AND day <> DATE '1992-01-01' + INTERVAL '{i}' DAY"));
        }
        let plan = ctx.sql(&sql).await.unwrap().create_physical_plan().await.unwrap();
        let refined = filters(&rule.optimize(plan, &options).unwrap());
        assert!(matches!(refined.as_slice(), [(percent, Some(_))] if (1..=3).contains(percent)), "{refined:?}");
    }
}
