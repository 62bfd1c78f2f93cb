//! A scalar subquery that aggregates a grouped result the query also joins, computed from
//! that one result as a window aggregate instead of a second time.
//!
//! TPC-H q15 is the shape: `revenue0` (a `GROUP BY` over `lineitem`) is joined with
//! `supplier`, and `total_revenue = (SELECT max(total_revenue) FROM revenue0)` reads it
//! again. DataFusion inlines the CTE at both references and turns the subquery into a join
//! with a one-row aggregate, so `lineitem` is scanned and grouped twice. After
//! [`ScalarSubqueryAsWindow`] the grouped result is computed once and carries
//! `max(total_revenue) OVER ()` as a column up to where the subquery's value was joined
//! (the rewrite known as WinMagic: Zuzarte et al., SIGMOD 2003).
//!
//! When it applies (anything else is left as it is):
//! - an uncorrelated scalar subquery that is an aggregate without `GROUP BY` (under only
//!   projections and aliases: exactly one row), either as DataFusion's
//!   `scalar_subquery_to_join` leaves it where uncorrelated subqueries become joins (the
//!   engine's setting, in one process and distributed statements alike), a join `ON true`
//!   of the outer query with it, or as an expression in a filter or projection (DataFusion's
//!   default, which runs such subqueries as plans of their own);
//! - the aggregate's input is a grouped result (an `Aggregate` with `GROUP BY`, or a
//!   `DISTINCT`, under projections, filters and aliases), deterministic (no volatile
//!   function), and the same plan appears in the outer query where every output row of the
//!   outer query comes from exactly one of its rows: through filters, projections, aliases,
//!   sorts, limits and the preserved side of joins (not under an aggregate, a union, or the
//!   side of an outer join that can be NULL);
//! - each aggregate is a plain call (no `DISTINCT`, `FILTER`, `ORDER BY` or null treatment),
//!   so it has a window form over the whole result (`OVER ()`).
//!
//! A grouped result, and not any subplan, because the window buffers what it computes over
//! in one partition: a grouped result held no more rows in the aggregate's own hash table,
//! while a second scan of its input costs more than that buffer.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{internal_err, Column, Result, ScalarValue};
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams, WindowFunction};
use datafusion::logical_expr::{
    Aggregate, Expr, Filter, Join, JoinType, LogicalPlan, Projection, SubqueryAlias, Window, WindowFunctionDefinition,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The logical optimizer rule; see the module documentation. It belongs right after
/// DataFusion's `scalar_subquery_to_join`, whose joins it rewrites (before other rules have
/// pruned or filtered one reference of the grouped result and not the other).
#[derive(Debug, Default)]
pub struct ScalarSubqueryAsWindow;

impl OptimizerRule for ScalarSubqueryAsWindow {
    fn name(&self) -> &str {
        "scalar_subquery_as_window"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let rewritten = match &plan {
            LogicalPlan::Join(join) => rewrite_join(join, config)?,
            LogicalPlan::Filter(_) | LogicalPlan::Projection(_) => rewrite_subqueries(&plan, config)?,
            _ => None,
        };
        match rewritten {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// `outer` computing the scalar aggregate `scalar` as window columns, and the scalar side's
/// output columns as expressions of them; `None` where the rewrite does not apply.
fn share(
    scalar: &LogicalPlan,
    outer: &LogicalPlan,
    config: &dyn OptimizerConfig,
) -> Result<Option<(LogicalPlan, Vec<Expr>)>> {
    let Some(scalar) = ScalarAggregate::of(scalar) else { return Ok(None) };
    if !is_grouped_result(scalar.input) || is_volatile(scalar.input)? {
        return Ok(None);
    }
    let Some(windows) = scalar.window_exprs(config) else { return Ok(None) };
    let Some((outer, columns)) = attach_windows(outer, scalar.input, &windows)? else { return Ok(None) };
    let placeholders: Vec<Column> = (0..windows.len()).map(|i| aggregate_column(scalar.aggregate, i)).collect();
    let mut outputs = Vec::with_capacity(scalar.outputs.len());
    for output in scalar.outputs {
        let value = output.transform(|e| match e {
            Expr::Column(column) => match placeholders.iter().position(|p| *p == column) {
                Some(i) => Ok(Transformed::yes(Expr::Column(columns[i].clone()))),
                None => internal_err!("column {column} of a scalar aggregate's side is not its aggregate's"),
            },
            other => Ok(Transformed::no(other)),
        })?;
        outputs.push(value.data);
    }
    Ok(Some((outer, outputs)))
}

/// The join rewritten, when it joins the outer query with a scalar aggregate of a grouped
/// result the outer query reads (an uncorrelated scalar subquery that DataFusion's
/// `scalar_subquery_to_join` made a join, as it does in a distributed statement).
fn rewrite_join(join: &Join, config: &dyn OptimizerConfig) -> Result<Option<LogicalPlan>> {
    let condition_true = match &join.filter {
        None => true,
        Some(Expr::Literal(ScalarValue::Boolean(Some(true)), _)) => true,
        Some(_) => false,
    };
    if !join.on.is_empty() || !condition_true {
        return Ok(None);
    }
    // The outer side keeps every row, each joined with the aggregate's one row.
    let sides: &[(bool, &Arc<LogicalPlan>, &Arc<LogicalPlan>)] = match join.join_type {
        JoinType::Left => &[(true, &join.left, &join.right)],
        JoinType::Right => &[(false, &join.right, &join.left)],
        JoinType::Inner => &[(true, &join.left, &join.right), (false, &join.right, &join.left)],
        _ => return Ok(None),
    };
    for &(scalar_on_right, outer, scalar) in sides {
        let Some((outer, outputs)) = share(scalar, outer, config)? else { continue };
        // The join's columns: the outer side's as they were, the aggregate side's computed
        // from the window columns; the join's own schema (names, qualifiers, nullability)
        // so nothing above it changes.
        let scalar_count = outputs.len();
        let mut outputs = outputs.into_iter();
        let mut exprs = Vec::with_capacity(join.schema.fields().len());
        let outer_fields = join.schema.fields().len() - scalar_count;
        for (index, (qualifier, field)) in join.schema.iter().enumerate() {
            let from_outer = if scalar_on_right { index < outer_fields } else { index >= scalar_count };
            if from_outer {
                exprs.push(Expr::Column(Column::new(qualifier.cloned(), field.name())));
            } else {
                let value = outputs.next().expect("one expression per aggregate-side column");
                exprs.push(value.alias_qualified(qualifier.cloned(), field.name()));
            }
        }
        let projection = Projection::try_new_with_schema(exprs, Arc::new(outer), join.schema.clone())?;
        return Ok(Some(LogicalPlan::Projection(projection)));
    }
    Ok(None)
}

/// A filter or projection rewritten, when its expressions hold uncorrelated scalar
/// subqueries that aggregate a grouped result its input reads (as DataFusion leaves them
/// where it runs them as their own plans, in a statement that is not distributed).
fn rewrite_subqueries(plan: &LogicalPlan, config: &dyn OptimizerConfig) -> Result<Option<LogicalPlan>> {
    let mut input = plan.inputs()[0].clone();
    let mut changed = false;
    let mut exprs = Vec::new();
    for expr in plan.expressions() {
        let expr = expr.transform_down(|e| match e {
            Expr::ScalarSubquery(subquery) if subquery.outer_ref_columns.is_empty() => {
                match share(&subquery.subquery, &input, config)? {
                    Some((shared, mut outputs)) if outputs.len() == 1 => {
                        input = shared;
                        changed = true;
                        Ok(Transformed::yes(outputs.remove(0)))
                    }
                    _ => Ok(Transformed::no(Expr::ScalarSubquery(subquery))),
                }
            }
            other => Ok(Transformed::no(other)),
        })?;
        exprs.push(expr.data);
    }
    if !changed {
        return Ok(None);
    }
    let input = Arc::new(input);
    Ok(Some(match plan {
        // The projection's own output: each rewritten expression under its old name.
        LogicalPlan::Projection(projection) => {
            let exprs = exprs
                .into_iter()
                .zip(&projection.expr)
                .enumerate()
                .map(|(i, (new, old))| {
                    if new == *old {
                        return new;
                    }
                    let (qualifier, field) = projection.schema.qualified_field(i);
                    new.alias_qualified(qualifier.cloned(), field.name())
                })
                .collect();
            LogicalPlan::Projection(Projection::try_new_with_schema(exprs, input, projection.schema.clone())?)
        }
        // The filter's output without the window columns.
        LogicalPlan::Filter(filter) => {
            let predicate = exprs.into_iter().next().expect("a filter has one expression");
            let filtered = LogicalPlan::Filter(Filter::try_new(predicate, input)?);
            LogicalPlan::Projection(Projection::new_from_schema(Arc::new(filtered), filter.input.schema().clone()))
        }
        _ => return internal_err!("scalar subqueries are rewritten in filters and projections only"),
    }))
}

/// An `Aggregate` without `GROUP BY` under projections and aliases: one row.
struct ScalarAggregate<'a> {
    aggregate: &'a Aggregate,
    input: &'a LogicalPlan,
    /// The side's output columns as expressions of the aggregate's output columns.
    outputs: Vec<Expr>,
}

impl<'a> ScalarAggregate<'a> {
    fn of(plan: &'a LogicalPlan) -> Option<Self> {
        match plan {
            LogicalPlan::Aggregate(aggregate) if aggregate.group_expr.is_empty() => {
                let outputs =
                    (0..aggregate.aggr_expr.len()).map(|i| Expr::Column(aggregate_column(aggregate, i))).collect();
                Some(Self { aggregate, input: &aggregate.input, outputs })
            }
            LogicalPlan::SubqueryAlias(SubqueryAlias { input, .. }) => Self::of(input),
            LogicalPlan::Projection(Projection { expr, input, .. }) => {
                let mut below = Self::of(input)?;
                let schema = input.schema();
                let mut outputs = Vec::with_capacity(expr.len());
                for expr in expr {
                    let replaced = expr
                        .clone()
                        .unalias_nested()
                        .data
                        .transform(|e| match e {
                            Expr::Column(column) => {
                                let index = schema.index_of_column(&column)?;
                                Ok(Transformed::yes(below.outputs[index].clone()))
                            }
                            other => Ok(Transformed::no(other)),
                        })
                        .ok()?
                        .data;
                    outputs.push(replaced);
                }
                below.outputs = outputs;
                Some(below)
            }
            _ => None,
        }
    }

    /// Each aggregate as a window function over the whole input, under a name of its own;
    /// none when one of them has no such form.
    fn window_exprs(&self, config: &dyn OptimizerConfig) -> Option<Vec<Expr>> {
        let mut windows = Vec::with_capacity(self.aggregate.aggr_expr.len());
        for expr in &self.aggregate.aggr_expr {
            let mut expr = expr;
            while let Expr::Alias(alias) = expr {
                expr = &alias.expr;
            }
            let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
                return None;
            };
            let AggregateFunctionParams { args, distinct, filter, order_by, null_treatment } = params;
            if *distinct || filter.is_some() || !order_by.is_empty() || null_treatment.is_some() {
                return None;
            }
            let window =
                Expr::from(WindowFunction::new(WindowFunctionDefinition::AggregateUDF(func.clone()), args.clone()));
            windows.push(window.alias(config.alias_generator().next("__scalar_window")));
        }
        Some(windows)
    }
}

/// The aggregate's `i`th output column, which stands in [`ScalarAggregate::outputs`] for
/// the window column that replaces it.
fn aggregate_column(aggregate: &Aggregate, i: usize) -> Column {
    Column::from(aggregate.schema.qualified_field(i))
}

/// Whether `plan` is a grouped result under projections, filters and aliases.
fn is_grouped_result(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(aggregate) => !aggregate.group_expr.is_empty(),
        LogicalPlan::Distinct(_) => true,
        LogicalPlan::Projection(Projection { input, .. }) | LogicalPlan::SubqueryAlias(SubqueryAlias { input, .. }) => {
            is_grouped_result(input)
        }
        LogicalPlan::Filter(filter) => is_grouped_result(&filter.input),
        _ => false,
    }
}

/// Whether any expression in `plan` (subqueries included) is volatile: two evaluations
/// could differ, so one cannot stand for the other.
fn is_volatile(plan: &LogicalPlan) -> Result<bool> {
    let mut volatile = false;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            if expr.is_volatile() {
                volatile = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(if volatile { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    })?;
    Ok(volatile)
}

/// `plan` with the window columns `windows` computed over its first occurrence of `shared`
/// and carried up to its output, where each output row comes from exactly one row of
/// `shared`; the columns' names at the output. `None` when there is no such occurrence.
fn attach_windows(
    plan: &LogicalPlan,
    shared: &LogicalPlan,
    windows: &[Expr],
) -> Result<Option<(LogicalPlan, Vec<Column>)>> {
    if plan == shared {
        let window = Window::try_new(windows.to_vec(), Arc::new(plan.clone()))?;
        let columns = windows.iter().map(|expr| Column::from_name(expr.schema_name().to_string())).collect();
        return Ok(Some((LogicalPlan::Window(window), columns)));
    }
    // The inputs through which rows pass one to one.
    let through: Vec<usize> = match plan {
        LogicalPlan::Filter(_)
        | LogicalPlan::Projection(_)
        | LogicalPlan::Window(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_) => vec![0],
        LogicalPlan::Join(join) => match join.join_type {
            JoinType::Inner => vec![0, 1],
            JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti => vec![0],
            JoinType::Right | JoinType::RightSemi | JoinType::RightAnti => vec![1],
            _ => vec![],
        },
        _ => vec![],
    };
    let inputs = plan.inputs();
    for index in through {
        let Some((input, columns)) = attach_windows(inputs[index], shared, windows)? else { continue };
        let mut new_inputs: Vec<LogicalPlan> = inputs.iter().map(|input| (*input).clone()).collect();
        new_inputs[index] = input;
        return Ok(Some(match plan {
            LogicalPlan::Projection(projection) => {
                let mut exprs = projection.expr.clone();
                exprs.extend(columns.iter().cloned().map(Expr::Column));
                let projection = Projection::try_new(exprs, Arc::new(new_inputs.remove(0)))?;
                (LogicalPlan::Projection(projection), columns)
            }
            LogicalPlan::SubqueryAlias(alias) => {
                let alias_name = alias.alias.clone();
                let renamed = columns.iter().map(|c| Column::new(Some(alias_name.clone()), c.name.clone())).collect();
                let aliased = SubqueryAlias::try_new(Arc::new(new_inputs.remove(0)), alias_name)?;
                (LogicalPlan::SubqueryAlias(aliased), renamed)
            }
            _ => (plan.with_new_exprs(plan.expressions(), new_inputs)?, columns),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// `t(g, v)` and `u(g, w)` with repeated groups, NULLs and ties for the largest sum; in a
    /// context with the rule right after `scalar_subquery_to_join` (as the engine has it) or
    /// without it.
    ///
    /// `as_join`: uncorrelated scalar subqueries become joins (as in a distributed statement),
    /// else they stay expressions (one process).
    fn context(with_rule: bool, as_join: bool) -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(3);
        config.options_mut().optimizer.enable_physical_uncorrelated_scalar_subquery = !as_join;
        let mut rules = datafusion::optimizer::Optimizer::new().rules;
        if with_rule {
            let at = rules.iter().position(|rule| rule.name() == "scalar_subquery_to_join").unwrap() + 1;
            rules.insert(at, Arc::new(ScalarSubqueryAsWindow));
        }
        let state =
            SessionStateBuilder::new().with_default_features().with_config(config).with_optimizer_rules(rules).build();
        let ctx = SessionContext::new_with_state(state);
        let schema =
            Arc::new(Schema::new(vec![Field::new("g", DataType::Int64, true), Field::new("v", DataType::Int64, true)]));
        let g: Vec<Option<i64>> = (0..200).map(|i| if i % 37 == 0 { None } else { Some(i % 11) }).collect();
        let v: Vec<Option<i64>> = (0..200).map(|i| if i % 13 == 0 { None } else { Some((i * 7) % 23) }).collect();
        let t =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(g)), Arc::new(Int64Array::from(v))]).unwrap();
        ctx.register_batch("t", t).unwrap();
        let schema =
            Arc::new(Schema::new(vec![Field::new("g", DataType::Int64, true), Field::new("w", DataType::Int64, true)]));
        let u = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter((0..15).map(Some))),
                Arc::new(Int64Array::from_iter((0..15).map(|i| Some(i * 10)))),
            ],
        )
        .unwrap();
        ctx.register_batch("u", u).unwrap();
        ctx
    }

    /// The optimized plan and the sorted answer of `sql`.
    async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame.clone().into_optimized_plan().unwrap().display_indent().to_string();
        let mut lines: Vec<String> = pretty_format_batches(&frame.collect().await.unwrap())
            .unwrap()
            .to_string()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        (plan, lines.join("\n"))
    }

    /// Runs `sql` with and without the rule, with scalar subqueries as joins and as
    /// expressions: the same answer each time; whether the rule rewrote it, and how often
    /// `t` is scanned with it (the same both ways).
    async fn compare(sql: &str) -> (bool, usize) {
        let mut seen = None;
        for as_join in [true, false] {
            let (plain_plan, plain) = run(&context(false, as_join), sql).await;
            let (plan, answer) = run(&context(true, as_join), sql).await;
            assert_eq!(answer, plain, "{sql} (as a join: {as_join})\n{plan}");
            assert!(!plain_plan.contains("__scalar_window"));
            let outcome = (plan.contains("__scalar_window"), plan.matches("TableScan: t").count());
            assert_eq!(*seen.get_or_insert(outcome), outcome, "{sql} (as a join: {as_join})\n{plan}");
        }
        seen.unwrap()
    }

    const GROUPED: &str = "WITH c AS (SELECT g, sum(v) AS s FROM t GROUP BY g)";

    #[tokio::test]
    async fn a_scalar_aggregate_of_a_joined_grouped_result_reads_it_once() {
        // TPC-H q15's shape, ties for the largest sum included.
        let sql = format!(
            "{GROUPED} SELECT u.g, u.w, c.s FROM u, c WHERE u.g = c.g AND c.s = (SELECT max(s) FROM c) ORDER BY u.g"
        );
        assert_eq!(compare(&sql).await, (true, 1));
        let (plan, _) = run(&context(true, true), &sql).await;
        assert!(plan.contains("WindowAggr"), "{plan}");
    }

    #[tokio::test]
    async fn every_place_of_the_subquery_keeps_its_answer() {
        for query in [
            // In the select list, in comparisons, in expressions of several aggregates.
            "SELECT g, s, (SELECT max(s) FROM c) AS m FROM c",
            "SELECT g FROM c WHERE s > (SELECT avg(s) FROM c)",
            "SELECT g FROM c WHERE s * 2 >= (SELECT min(s) + max(s) FROM c)",
            "SELECT g, (SELECT count(*) FROM c) AS n, (SELECT sum(s) FROM c) AS total FROM c",
            "SELECT g FROM c WHERE s = (SELECT max(s) FROM c) ORDER BY g LIMIT 1",
            // On the preserved side of an outer join, and under a later aggregate.
            "SELECT c.g, u.w FROM c LEFT JOIN u ON c.g = u.g WHERE c.s < (SELECT max(s) FROM c)",
            "SELECT count(*) FROM c WHERE s <= (SELECT max(s) FROM c) GROUP BY s % 2",
        ] {
            let sql = format!("{GROUPED} {query}");
            assert!(compare(&sql).await.0, "{sql}");
        }
        // An empty grouped result: the aggregate is NULL, no row either way.
        let empty = "WITH c AS (SELECT g, sum(v) AS s FROM t WHERE v > 100 GROUP BY g) \
                     SELECT g, (SELECT max(s) FROM c) FROM c UNION ALL SELECT 1, (SELECT max(s) FROM c)";
        assert!(compare(empty).await.0);
    }

    #[tokio::test]
    async fn what_cannot_be_shared_is_left_alone() {
        for query in [
            // The subquery reads the table itself, not a grouped result: a window would
            // buffer the whole table.
            "SELECT g FROM t WHERE v = (SELECT max(v) FROM t)".to_string(),
            // A different grouped result than the outer query reads.
            format!("{GROUPED} SELECT g FROM c WHERE s = (SELECT max(s) FROM c WHERE g > 3)"),
            // DISTINCT aggregates, and a correlated subquery.
            format!("{GROUPED} SELECT g FROM c WHERE s > (SELECT count(DISTINCT s) FROM c)"),
            format!("{GROUPED} SELECT g FROM c c1 WHERE s = (SELECT max(s) FROM c c2 WHERE c2.g = c1.g)"),
            // The grouped result on the side of an outer join that can be NULL: rows without
            // one of its rows still carry the subquery's value.
            format!("{GROUPED} SELECT u.g, c.s FROM u LEFT JOIN c ON u.g = c.g WHERE u.w < (SELECT max(s) FROM c)"),
            // A volatile grouped result: two evaluations may differ, so they are not one.
            "WITH c AS (SELECT g, sum(v) + random() AS s FROM t GROUP BY g) SELECT count(*) FROM c WHERE s > (SELECT min(s) FROM c) - 1"
                .to_string(),
        ] {
            if query.contains("random()") {
                for as_join in [true, false] {
                    let (plan, _) = run(&context(true, as_join), &query).await;
                    assert!(!plan.contains("__scalar_window"), "{query}\n{plan}");
                }
                continue;
            }
            assert_eq!(compare(&query).await.0, false, "{query}");
        }
    }
}
