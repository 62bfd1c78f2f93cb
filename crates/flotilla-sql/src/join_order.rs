//! Selective joins moved down to the table they filter.
//!
//! DataFusion joins the tables of a query in the order of its `FROM` clause (left-deep) and
//! only chooses, join by join, which side to build its hash table on (`join_selection`, by
//! the sides' estimated sizes); it does not reorder joins. A small filtered table written
//! last, as the nations of TPC-H q07 (`n_name IN ('GERMANY', 'IRAQ')`, joined on the
//! supplier's and the customer's nation), is then joined after `lineitem` and `orders`:
//! every join below it is estimated, and sized, without its selectivity. In q07 the join
//! with `orders` was estimated 1.5M rows on both sides, so `orders` (1.5M rows) became the
//! build side although only 152K rows came from below at run time; a cluster broadcast all
//! of `orders` to every task and built the 1.5M-row table in each.
//!
//! [`SinkSelectiveJoins`] runs before join selection and, bottom up, rotates an inner join
//! `(A ⋈ B) ⋈ X` whose keys on the `(A ⋈ B)` side all come from `B` into `A ⋈ (B ⋈ X)`
//! (likewise for `A`) when `B ⋈ X` is estimated smaller than `A ⋈ B`: the only
//! intermediate result that changes is that one (the top's output is the same rows), so
//! each rotation lowers the estimated rows produced in between. `X` then sinks on into `B`
//! while that keeps paying, and the new upper join is tried again. The plan above keeps its
//! schema (a projection restores the column order). Only inner hash joins on column keys
//! with nothing embedded (projection, fetch, null-aware or null-equal keys) move, through
//! projections of plain columns; a join filter goes with the join whose inputs it reads.
//!
//! Only small tables sink (`X` estimated at most 128K rows, what DataFusion collects by
//! default): the join estimates are too rough for more (Parquet has no distinct counts).
//! Moving q21's `orders` (1.5M rows, a filter on its status) next to `lineitem` on them, in
//! a version without this bound, joined 1.8M rows there where 157K had come before, and
//! made q21 slower.
//!
//! A join whose keys on the `(A ⋈ B)` side the join below makes equal to columns of the other
//! side is split ([`split`]): `X` joins `A` on the keys `A` holds, itself or through those
//! equalities, and the keys only `B` holds move up to the join with `B`. TPC-H q09 joins
//! `lineitem` with the 5% of `part` its name filter keeps, then all 800K `partsupp` rows on
//! `lineitem`'s part and supplier keys; split, `partsupp` joins `part` first (43K rows) and
//! `lineitem` probes that on both keys: q09 160 → 136 ms in one process, 216 → 167 ms in a
//! cluster, where the 800K rows were broadcast to every task. Here `X` may be large, but the
//! new join must be estimated within what the session collects, so that the join with the
//! large side still builds on it. `optimizer.join_reordering = false` turns the rule off, as
//! it does DataFusion's own swaps.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinSide, JoinType, NullEquality, Result};
use datafusion::config::ConfigOptions;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::utils::{ColumnIndex, JoinFilter};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;

/// The rule's name in the physical optimizer's list.
pub const NAME: &str = "sink_selective_joins";

/// How many joins one join may sink through (and upper joins be retried) from where it
/// was planned: rotations recurse, and plans are as deep as the statement makes them.
const MAX_SINK_DEPTH: usize = 32;
/// Rotations one plan gets at most: each rotation retries two joins, so without a bound the
/// work could grow with the depth's power of two on estimates that keep finding a gain.
const MAX_ROTATIONS: usize = 64;

/// What one plan's rotations may still do.
struct Budget {
    /// Rotations left ([`MAX_ROTATIONS`]).
    rotations: usize,
    /// The rows up to which the session collects a join's build side (in a distributed
    /// statement, its share of the broadcast budget): a split's new join stays within it.
    collect_rows: usize,
}

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub struct SinkSelectiveJoins;

impl PhysicalOptimizerRule for SinkSelectiveJoins {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        if !config.optimizer.join_reordering {
            return Ok(plan);
        }
        let mut budget = Budget {
            rotations: MAX_ROTATIONS,
            collect_rows: config.optimizer.hash_join_single_partition_threshold_rows,
        };
        plan.transform_up(|node| sink(node, 0, &mut budget)).map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        NAME
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A join this rule may move: an inner hash join on keys where NULL matches nothing, with
/// no projection, fetch or null-aware semantics of its own.
fn movable(plan: &Arc<dyn ExecutionPlan>) -> Option<&HashJoinExec> {
    let join = plan.downcast_ref::<HashJoinExec>()?;
    let plain = *join.join_type() == JoinType::Inner
        && join.projection.is_none()
        && join.null_equality() == NullEquality::NullEqualsNothing
        && !join.null_aware
        && join.fetch().is_none();
    plain.then_some(join)
}

/// `node` with its join rotated down where that pays (see the module documentation),
/// trying the right child as the sinking side first (the `FROM` clause's later table).
fn sink(
    node: Arc<dyn ExecutionPlan>,
    depth: usize,
    budget: &mut Budget,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if depth >= MAX_SINK_DEPTH || budget.rotations == 0 {
        return Ok(Transformed::no(node));
    }
    let Some(top) = movable(&node) else {
        return Ok(Transformed::no(node));
    };
    for sinking in [JoinSide::Right, JoinSide::Left] {
        if let Some(rotated) = rotate(top, sinking, depth, budget)? {
            return Ok(Transformed::yes(rotated));
        }
    }
    for sinking in [JoinSide::Right, JoinSide::Left] {
        if let Some(rotated) = split(top, sinking, depth, budget)? {
            return Ok(Transformed::yes(rotated));
        }
    }
    Ok(Transformed::no(node))
}

/// The estimated rows of a table that may sink: what DataFusion collects into one
/// partition by its own default (128K rows), whatever the session's thresholds.
fn small_rows() -> usize {
    datafusion::config::OptimizerOptions::default().hash_join_single_partition_threshold_rows
}

/// Estimated output rows of `plan`, if its statistics tell.
fn rows(plan: &dyn ExecutionPlan) -> Option<usize> {
    crate::selectivity::estimate(plan)?.num_rows.get_value().copied()
}

/// For a projection of plain columns, the input column of each output column.
fn plain_columns(projection: &ProjectionExec) -> Option<Vec<usize>> {
    projection.expr().iter().map(|expr| expr.expr.downcast_ref::<Column>().map(Column::index)).collect()
}

/// The movable join below `plan` through projections of plain columns (the planner's, and
/// those of rotations below), with the join's output column of each of `plan`'s columns.
fn join_below(plan: &Arc<dyn ExecutionPlan>) -> Option<(&HashJoinExec, Vec<usize>)> {
    let mut lower_plan = plan;
    let mut through: Vec<usize> = (0..plan.schema().fields().len()).collect();
    while let Some(projection) = lower_plan.downcast_ref::<ProjectionExec>() {
        let columns = plain_columns(projection)?;
        through = through.iter().map(|&column| columns[column]).collect();
        lower_plan = projection.input();
    }
    Some((movable(lower_plan)?, through))
}

/// An inner hash join of the kind this rule moves (keys where NULL matches nothing, no
/// projection of its own), for a rotated plan.
fn inner_join(
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    on: Vec<(Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>)>,
    filter: Option<JoinFilter>,
    mode: PartitionMode,
) -> Result<HashJoinExec> {
    HashJoinExec::try_new(left, right, on, filter, &JoinType::Inner, None, mode, NullEquality::NullEqualsNothing, false)
}

/// Where each column of the rotated plan `A ⋈ (B ⋈ X)` (or `(A ⋈ X) ⋈ B`) lies.
struct Layout {
    a: usize,
    b: usize,
    x: usize,
    /// `X` joins `B` (else `A`).
    into_b: bool,
}

impl Layout {
    /// The rotated plan's column of the old lower join's output column `column`.
    fn lower(&self, column: usize) -> usize {
        // Only `B`'s columns move, past `X`, when `X` joins `A`.
        if column >= self.a && !self.into_b {
            column + self.x
        } else {
            column
        }
    }

    /// The rotated plan's column of `X`'s column `column`.
    fn sinking(&self, column: usize) -> usize {
        if self.into_b {
            self.a + self.b + column
        } else {
            self.a + column
        }
    }

    /// Every column of the top's output, in the rotated plan: the top read the old lower join
    /// through `through` (its columns there) on the side other than `sinking`.
    fn output(&self, sinking: JoinSide, through: &[usize]) -> Vec<usize> {
        let upper = through.iter().map(|&column| self.lower(column));
        let x = (0..self.x).map(|column| self.sinking(column));
        match sinking {
            JoinSide::Right => upper.chain(x).collect(),
            _ => x.chain(upper).collect(),
        }
    }

    /// The columns of the new lower join `T ⋈ X` (`T` is `B` or `A`), in the rotated plan.
    fn new_lower(&self) -> std::ops::Range<usize> {
        if self.into_b {
            self.a..self.a + self.b + self.x
        } else {
            0..self.a + self.x
        }
    }

    /// A column of the rotated plan as the new lower join `T ⋈ X` reads it.
    fn in_new_lower(&self, column: usize) -> ColumnIndex {
        let start = self.new_lower().start;
        let t = if self.into_b { self.b } else { self.a };
        match column - start < t {
            true => ColumnIndex { index: column - start, side: JoinSide::Left },
            false => ColumnIndex { index: column - start - t, side: JoinSide::Right },
        }
    }

    /// A column of the rotated plan as the new upper join reads it.
    fn in_new_upper(&self, column: usize) -> ColumnIndex {
        let left = if self.into_b { self.a } else { self.a + self.x };
        match column < left {
            true => ColumnIndex { index: column, side: JoinSide::Left },
            false => ColumnIndex { index: column - left, side: JoinSide::Right },
        }
    }
}

/// `top` rotated so that its `sinking` child joins one side of the join below its other
/// child first, if that side holds all of `top`'s keys and the new lower join is estimated
/// smaller than the old one.
fn rotate(
    top: &HashJoinExec,
    sinking: JoinSide,
    depth: usize,
    budget: &mut Budget,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let (upper_child, x) = match sinking {
        JoinSide::Right => (top.left(), top.right()),
        _ => (top.right(), top.left()),
    };
    // Only small tables sink (see the module documentation).
    match rows(x.as_ref()) {
        Some(rows) if rows <= small_rows() => {}
        _ => return Ok(None),
    }
    let Some((lower, through)) = join_below(upper_child) else {
        return Ok(None);
    };
    let to_lower = |column: usize| through[column];
    let layout = Layout {
        a: lower.left().schema().fields().len(),
        b: lower.right().schema().fields().len(),
        x: x.schema().fields().len(),
        into_b: false,
    };
    let mut keys = Vec::with_capacity(top.on().len());
    for (left, right) in top.on() {
        let (upper_key, x_key) = if sinking == JoinSide::Right { (left, right) } else { (right, left) };
        let Some(column) = upper_key.downcast_ref::<Column>() else {
            return Ok(None);
        };
        keys.push((to_lower(column.index()), Arc::clone(x_key)));
    }
    let into_b = if keys.iter().all(|(column, _)| *column >= layout.a) {
        true
    } else if keys.iter().all(|(column, _)| *column < layout.a) {
        false
    } else {
        return Ok(None);
    };
    let layout = Layout { into_b, ..layout };
    let (target, offset) = if into_b { (lower.right(), layout.a) } else { (lower.left(), 0) };

    let output = layout.output(sinking, &through);
    let from_upper_child = |column: usize| layout.lower(to_lower(column));

    // The top's filter goes with the new lower join if it reads only `T` and `X`, else
    // with the new upper join (which has the lower join's filter, if any: then no rotation).
    let mut lower_filter = None;
    let mut upper_filter = lower.filter().cloned();
    if let Some(filter) = top.filter() {
        let columns: Vec<usize> = filter
            .column_indices()
            .iter()
            .map(|index| match index.side == sinking {
                true => layout.sinking(index.index),
                false => from_upper_child(index.index),
            })
            .collect();
        let new_lower = layout.new_lower();
        if columns.iter().all(|column| new_lower.contains(column)) {
            let indices = columns.iter().map(|&column| layout.in_new_lower(column)).collect();
            lower_filter = Some(JoinFilter::new(Arc::clone(filter.expression()), indices, Arc::clone(filter.schema())));
        } else if upper_filter.is_none() {
            let indices = columns.iter().map(|&column| layout.in_new_upper(column)).collect();
            upper_filter = Some(JoinFilter::new(Arc::clone(filter.expression()), indices, Arc::clone(filter.schema())));
        } else {
            return Ok(None);
        }
    }

    let target_schema = target.schema();
    let on = keys
        .into_iter()
        .map(|(column, x_key)| {
            let index = column - offset;
            let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new(target_schema.field(index).name(), index));
            (key, x_key)
        })
        .collect();
    let new_lower = inner_join(Arc::clone(target), Arc::clone(x), on, lower_filter, *top.partition_mode())?;
    match (rows(&new_lower), rows(lower)) {
        (Some(new), Some(old)) if new < old => {}
        _ => return Ok(None),
    }
    budget.rotations -= 1;
    let new_lower = sink(Arc::new(new_lower), depth + 1, budget)?.data;
    let (left, right) = match into_b {
        true => (Arc::clone(lower.left()), new_lower),
        false => (new_lower, Arc::clone(lower.right())),
    };
    let new_upper = inner_join(left, right, lower.on().to_vec(), upper_filter, *lower.partition_mode())?;
    let new_upper = sink(Arc::new(new_upper), depth + 1, budget)?.data;
    Ok(Some(restore_columns(new_upper, &output, &top.schema())?))
}

/// `top` split over the join below it: its `sinking` child `X` joins the side `T` of that
/// join that holds some of `top`'s keys, directly or through the join's own keys (`B.b = X.k`
/// where the join below has `A.a = B.b` is `A.a = X.k` for `T = A`), and `top`'s keys that
/// only the other side holds move up into the join with it: `(A ⋈ B) ⋈ X` becomes
/// `(A ⋈ X) ⋈ B` (or `A ⋈ (B ⋈ X)`) when `A ⋈ X` is estimated smaller than `A ⋈ B`. TPC-H
/// q09 joins `lineitem` with the `part` rows a name filter keeps, then all of `partsupp` on
/// `lineitem`'s part and supplier; `partsupp` joins `part` first this way (on the part key
/// `lineitem` shares with it: 43K rows), and `lineitem` that on both keys.
///
/// Unlike [`rotate`], `X` may be of any size, but at least one key must be implied: `X` then
/// joins `T` on a column `T` is already joined on (q09's part key), not on one that happens
/// to be there. A join
/// whose keys `T` holds directly (what `rotate` moves when `X` is small) moves only when
/// below it, it splits so: `partsupp` first passes q09's join with `supplier` to reach the
/// join of `lineitem` and `part`. Joins with filters stay where they are.
fn split(
    top: &HashJoinExec,
    sinking: JoinSide,
    depth: usize,
    budget: &mut Budget,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if depth >= MAX_SINK_DEPTH || budget.rotations == 0 || top.filter().is_some() {
        return Ok(None);
    }
    let (upper_child, x) = match sinking {
        JoinSide::Right => (top.left(), top.right()),
        _ => (top.right(), top.left()),
    };
    let Some((lower, through)) = join_below(upper_child) else {
        return Ok(None);
    };
    if lower.filter().is_some() {
        return Ok(None);
    }
    let (a, b) = (lower.left().schema().fields().len(), lower.right().schema().fields().len());
    // `top`'s keys: the column of the join below, and `X`'s column.
    let mut keys = Vec::with_capacity(top.on().len());
    for (left, right) in top.on() {
        let (upper_key, x_key) = if sinking == JoinSide::Right { (left, right) } else { (right, left) };
        let (Some(upper), Some(x_key)) = (upper_key.downcast_ref::<Column>(), x_key.downcast_ref::<Column>()) else {
            return Ok(None);
        };
        keys.push((through[upper.index()], x_key.index()));
    }
    // The columns the join below makes equal, both ways (its output's numbering).
    let mut equal = Vec::new();
    for (left, right) in lower.on() {
        if let (Some(left), Some(right)) = (left.downcast_ref::<Column>(), right.downcast_ref::<Column>()) {
            equal.push((left.index(), a + right.index()));
            equal.push((a + right.index(), left.index()));
        }
    }
    let x_schema = x.schema();
    let x_column = |index: usize, offset: usize| -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new(x_schema.field(index).name(), offset + index))
    };
    for into_b in [false, true] {
        let holds = |column: usize| (column >= a) == into_b;
        let (target, offset) = if into_b { (lower.right(), a) } else { (lower.left(), 0) };
        let target_schema = target.schema();
        let target_column = |column: usize| -> Arc<dyn PhysicalExpr> {
            Arc::new(Column::new(target_schema.field(column - offset).name(), column - offset))
        };
        // `X`'s keys on `T` (substituted where the join below makes them equal), and those
        // that stay with the other side.
        let (mut on, mut rest, mut implied) = (Vec::new(), Vec::new(), false);
        for &(column, x_key) in &keys {
            if holds(column) {
                on.push((target_column(column), x_column(x_key, 0)));
            } else if let Some(&(_, same)) = equal.iter().find(|&&(from, to)| from == column && holds(to)) {
                on.push((target_column(same), x_column(x_key, 0)));
                implied = true;
            } else {
                rest.push((column, x_key));
            }
        }
        // With keys on both sides and none implied, `X` would join `T` on a column of its own
        // choosing (TPC-H q05's `supplier` joined `customer` on the nation, 400 suppliers a
        // customer, where the estimates of the `tpch` tables said smaller): no split.
        if on.is_empty() || (!implied && !rest.is_empty()) {
            continue;
        }
        let joined = inner_join(Arc::clone(target), Arc::clone(x), on, None, *top.partition_mode())?;
        let new_lower = if implied {
            // Smaller than the join it replaces, and still collected: the new upper join
            // builds on it where it built on `T` (TPC-H q09 at sf10: `part` with `partsupp`,
            // estimated 1.6M rows, would have had all of `lineitem` shuffled to join it).
            match (rows(&joined), rows(lower)) {
                (Some(new), Some(old)) if new < old && new <= budget.collect_rows => {}
                _ => continue,
            }
            budget.rotations -= 1;
            sink(Arc::new(joined), depth + 1, budget)?.data
        } else {
            // `T` holds every key as it is: only if the join splits below.
            match split(&joined, JoinSide::Right, depth + 1, budget)? {
                Some(split) => split,
                None => continue,
            }
        };
        // The join below's keys, and the keys that stay with the other side.
        let mut upper_on = lower.on().to_vec();
        for (column, x_key) in rest {
            if into_b {
                upper_on.push((
                    Arc::new(Column::new(lower.schema().field(column).name(), column)) as _,
                    x_column(x_key, b),
                ));
            } else {
                let b_column: Arc<dyn PhysicalExpr> =
                    Arc::new(Column::new(lower.schema().field(column).name(), column - a));
                upper_on.push((x_column(x_key, a), b_column));
            }
        }
        let (left, right) = match into_b {
            true => (Arc::clone(lower.left()), new_lower),
            false => (new_lower, Arc::clone(lower.right())),
        };
        let new_upper = inner_join(left, right, upper_on, None, *lower.partition_mode())?;
        let new_upper = sink(Arc::new(new_upper), depth + 1, budget)?.data;
        let output = Layout { a, b, x: x_schema.fields().len(), into_b }.output(sinking, &through);
        return Ok(Some(restore_columns(new_upper, &output, &top.schema())?));
    }
    Ok(None)
}

/// `plan`'s columns `output` (by index), named as in `schema`.
fn restore_columns(plan: Arc<dyn ExecutionPlan>, output: &[usize], schema: &Schema) -> Result<Arc<dyn ExecutionPlan>> {
    let input = plan.schema();
    let exprs = output.iter().zip(schema.fields()).map(|(&column, field)| ProjectionExpr {
        expr: Arc::new(Column::new(input.field(column).name(), column)),
        alias: field.name().clone(),
    });
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use crate::test_support::ParquetTable;

    fn table(columns: &[(&str, Vec<i64>)], names: Option<(&str, Vec<String>)>) -> RecordBatch {
        let mut fields: Vec<Field> =
            columns.iter().map(|(name, _)| Field::new(*name, DataType::Int64, false)).collect();
        let mut arrays: Vec<Arc<dyn datafusion::arrow::array::Array>> =
            columns.iter().map(|(_, values)| Arc::new(Int64Array::from(values.clone())) as _).collect();
        if let Some((name, values)) = names {
            fields.push(Field::new(name, DataType::Utf8, false));
            arrays.push(Arc::new(StringArray::from(values)));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    }

    /// A fact table of 20,000 rows, `other` of 1,000 (keyed `o_key`, with a `dim` key of its
    /// own), `dim` of 100 (keyed `d_key`, 10 names, `n0` to `n9`) and `pair` of 10,000 (keyed
    /// by a `dim` and an `other` key), in two contexts: with and without the rule before join
    /// selection.
    async fn tables() -> (ParquetTable, ParquetTable) {
        let fact = table(
            &[
                ("f_dim", (0..20_000).map(|i| i % 100).collect()),
                ("f_other", (0..20_000).map(|i| (i * 7) % 1000).collect()),
                ("f_val", (0..20_000).collect()),
            ],
            None,
        );
        let other =
            table(&[("o_key", (0..1000).collect()), ("o_dim", (0..1000).map(|i| (i * 3) % 100).collect())], None);
        let dim = table(
            &[("d_key", (0..100).collect())],
            Some(("d_name", (0..100).map(|i| format!("n{}", i % 10)).collect())),
        );
        // A `partsupp` to `fact`'s `lineitem`: every `dim` with every tenth `other` key.
        let pair = table(
            &[
                ("p_dim", (0..10_000).map(|i| i / 100).collect()),
                ("p_other", (0..10_000).map(|i| (i % 100) * 10).collect()),
                ("p_val", (0..10_000).collect()),
            ],
            None,
        );
        let tables = [("fact", &fact), ("other", &other), ("dim", &dim), ("pair", &pair)];
        let config = || SessionConfig::new().with_target_partitions(2);
        let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
        let at = rules.iter().position(|rule| rule.name() == "join_selection").unwrap();
        rules.insert(at, Arc::new(SinkSelectiveJoins));
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config())
            .with_physical_optimizer_rules(rules)
            .build();
        let with = ParquetTable::with_tables(SessionContext::new_with_state(state), &tables).await;
        let without = ParquetTable::with_tables(SessionContext::new_with_config(config()), &tables).await;
        (with, without)
    }

    /// The join tree of `plan` by table names, each join's sides in name order (join
    /// selection may swap them).
    fn join_tree(plan: &Arc<dyn ExecutionPlan>) -> String {
        if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
            let mut sides = [join_tree(join.left()), join_tree(join.right())];
            sides.sort();
            return format!("({} {})", sides[0], sides[1]);
        }
        if plan.downcast_ref::<DataSourceExec>().is_some() {
            let text = datafusion::physical_plan::displayable(plan.as_ref()).one_line().to_string();
            let file = text.split(".parquet").next().unwrap_or_default();
            return file.rsplit('/').next().unwrap_or_default().to_string();
        }
        plan.children().iter().map(|child| join_tree(child)).collect::<Vec<_>>().join(" ")
    }

    /// The plan's join tree in `ctx`, and the query's answer.
    async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame.clone().create_physical_plan().await.unwrap();
        let answer = pretty_format_batches(&frame.collect().await.unwrap()).unwrap().to_string();
        (join_tree(&plan), answer)
    }

    #[tokio::test]
    async fn a_filtered_table_joined_last_is_joined_first_with_the_table_it_filters() {
        let (with, without) = tables().await;
        let sql = "SELECT count(*), sum(f_val), sum(o_dim) FROM fact, other, dim \
                   WHERE f_other = o_key AND f_dim = d_key AND d_name = 'n3'";
        let (tree, answer) = run(&with.ctx, sql).await;
        let (old_tree, old_answer) = run(&without.ctx, sql).await;
        assert_eq!(old_tree, "((fact other) dim)");
        assert_eq!(tree, "((dim fact) other)");
        assert_eq!(answer, old_answer);
        assert!(answer.contains("| 2000 "), "{answer}");

        // A join that does not make its side smaller stays where it is: `other` joins every
        // fact row (as does any table on a foreign key without a filter).
        let sql = "SELECT count(*) FROM fact, dim, other WHERE f_dim = d_key AND f_other = o_key";
        assert_eq!(run(&with.ctx, sql).await.0, run(&without.ctx, sql).await.0);

        // Keys from both sides of the join below: nowhere to sink to.
        let sql =
            "SELECT count(*) FROM fact, other, dim WHERE f_other = o_key AND f_dim + o_dim = d_key AND d_name = 'n3'";
        let (tree, answer) = run(&with.ctx, sql).await;
        assert_eq!((tree, answer), run(&without.ctx, sql).await);
    }

    #[tokio::test]
    async fn join_filters_go_with_the_join_whose_inputs_they_read() {
        let (with, without) = tables().await;
        // TPC-H q07's shape: two filtered copies of `dim`, each sinking to its own table, and
        // a filter over both that stays above them.
        let sql = "SELECT d1.d_name, d2.d_name, count(*), sum(f_val) FROM fact, other, dim d1, dim d2 \
                   WHERE f_other = o_key AND f_dim = d1.d_key AND o_dim = d2.d_key \
                   AND (d1.d_name = 'n3' AND d2.d_name = 'n3' OR d1.d_name = 'n6' AND d2.d_name = 'n6') \
                   GROUP BY 1, 2 ORDER BY 1, 2";
        let (tree, answer) = run(&with.ctx, sql).await;
        let (old_tree, old_answer) = run(&without.ctx, sql).await;
        assert_eq!(old_tree, "(((fact other) dim) dim)");
        assert_eq!(tree, "((dim fact) (dim other))");
        assert_eq!(answer, old_answer);
        assert!(answer.contains("| n3     | n3     |") && answer.contains("| n6     | n6     |"), "{answer}");

        // A filter that reads the sinking table and one side only moves down with it.
        let sql = "SELECT count(*) FROM fact, other, dim \
                   WHERE f_other = o_key AND f_dim = d_key AND d_name = 'n3' AND f_val + d_key > 100";
        let (tree, answer) = run(&with.ctx, sql).await;
        assert_eq!(tree, "((dim fact) other)");
        assert_eq!(answer, run(&without.ctx, sql).await.1);
    }

    #[tokio::test]
    async fn a_join_on_two_keys_splits_to_join_first_the_filtered_table_one_key_reaches() {
        let (with, without) = tables().await;
        // TPC-H q09's shape: `pair` (partsupp) joins `fact` (lineitem) on both its keys; its
        // `dim` key equals the filtered `dim`'s (part) through the join below, so `pair`
        // joins `dim` first on it, and `fact` joins that on both keys.
        let sql = "SELECT count(*), sum(f_val), sum(p_val) FROM fact, dim, pair \
                   WHERE f_dim = d_key AND d_name = 'n0' AND p_dim = f_dim AND p_other = f_other";
        let (tree, answer) = run(&with.ctx, sql).await;
        let (old_tree, old_answer) = run(&without.ctx, sql).await;
        assert_eq!(old_tree, "((dim fact) pair)");
        assert_eq!(tree, "((dim pair) fact)");
        assert_eq!(answer, old_answer);
        assert!(answer.contains("| 2000 "), "{answer}");

        // It passes a join it does not read (q09's `supplier`) to get there; then `other`,
        // whose key equals `pair`'s through `fact`, splits the same way.
        let sql = "SELECT count(*), sum(f_val), sum(p_val), sum(o_dim) FROM fact, dim, other, pair \
                   WHERE f_dim = d_key AND d_name = 'n0' AND f_other = o_key AND p_dim = f_dim AND p_other = f_other";
        let (tree, answer) = run(&with.ctx, sql).await;
        let (old_tree, old_answer) = run(&without.ctx, sql).await;
        assert_eq!(old_tree, "(((dim fact) other) pair)");
        assert_eq!(tree, "(((dim pair) other) fact)");
        assert_eq!(answer, old_answer);

        // Where `fact` is what the filter makes small, `dim` and `pair` joined first would be
        // larger than `fact` and `dim`: nothing moves.
        let sql = "SELECT count(*) FROM fact, dim, pair \
                   WHERE f_dim = d_key AND f_val < 100 AND p_dim = f_dim AND p_other = f_other";
        let (tree, answer) = run(&with.ctx, sql).await;
        assert_eq!((tree, answer), run(&without.ctx, sql).await);

        // A key through an expression cannot be split off: nothing moves.
        let sql = "SELECT count(*) FROM fact, dim, pair \
                   WHERE f_dim = d_key AND d_name = 'n0' AND p_dim = f_dim AND p_other = f_other + 0";
        let (tree, answer) = run(&with.ctx, sql).await;
        assert_eq!((tree, answer), run(&without.ctx, sql).await);

        // Nor where the new join would be estimated above what the session collects (here
        // 100 rows): the join with `fact` would have to shuffle `fact` to build on it.
        with.ctx.sql("SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 100").await.unwrap();
        let sql = "SELECT count(*) FROM fact, dim, pair \
                   WHERE f_dim = d_key AND d_name = 'n0' AND p_dim = f_dim AND p_other = f_other";
        assert_eq!(run(&with.ctx, sql).await.0, "((dim fact) pair)");
    }

    #[tokio::test]
    async fn long_chains_of_joins_are_bounded_and_keep_their_answer() {
        let (with, without) = tables().await;
        // 40 joins of `dim` on its key, the filtered copy last: it sinks at most
        // MAX_SINK_DEPTH joins, within MAX_ROTATIONS, and the answer stays.
        let mut sql = String::from("SELECT count(*), sum(a0.d_key) FROM dim a0");
        for i in 1..40 {
            sql.push_str(&format!(" JOIN dim a{i} ON a{}.d_key = a{i}.d_key", i - 1));
        }
        sql.push_str(" WHERE a39.d_name = 'n3'");
        let (_, answer) = run(&with.ctx, &sql).await;
        assert_eq!(answer, run(&without.ctx, &sql).await.1);
        assert!(answer.contains("| 10 "), "{answer}");

        // Turned off with DataFusion's own join reordering.
        let sql = "SELECT count(*) FROM fact, other, dim WHERE f_other = o_key AND f_dim = d_key AND d_name = 'n3'";
        with.ctx.sql("SET datafusion.optimizer.join_reordering = false").await.unwrap();
        assert_eq!(run(&with.ctx, sql).await.0, "((fact other) dim)");
    }
}
