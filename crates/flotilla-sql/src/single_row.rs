//! A scalar subquery that returns more than one row is an error
//! (`SUBQUERY_MULTIPLE_ROWS`), in one process and across workers alike.
//!
//! DataFusion can run an uncorrelated scalar subquery as a plan of its own, failing when it
//! returns a second row; datafusion-distributed disables that and the engine does too, in
//! one process as well (`engine.rs`), so the subquery becomes a join, and a join `ON true`
//! with a subquery of several rows silently returns each outer row once per subquery row:
//! `SELECT (SELECT n_nationkey FROM nation)` answered 25 rows.
//! [`EnforceSingleRow`] runs before DataFusion's `scalar_subquery_to_join` where subqueries
//! become joins, and puts every uncorrelated scalar subquery that may return more than one
//! row under an aggregate without `GROUP BY` (exactly one row): the row count and the
//! value, which [`single_row_function`] returns when the count is at most one and fails on
//! otherwise (Trino's `EnforceSingleRow`). No row gives NULL, as a scalar subquery must.
//! Correlated scalar subqueries must already be aggregates (DataFusion refuses others).

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::functions_aggregate::count::count;
use datafusion::functions_aggregate::first_last::first_value;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::logical_plan::FetchType;
use datafusion::logical_expr::{
    lit, Aggregate, ColumnarValue, Expr, LogicalPlan, Projection, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Subquery, Volatility,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use flotilla_proto::{ErrorCode, FlotillaError};

/// The function's name, how workers find it when they decode a task.
const NAME: &str = "$scalar_subquery_single_row";

/// The logical optimizer rule; see the module documentation. It acts only where uncorrelated
/// scalar subqueries are planned as joins
/// (`optimizer.enable_physical_uncorrelated_scalar_subquery` off, as the engine sets it
/// everywhere; with it on, DataFusion's own execution of the subquery fails on a second row)
/// and belongs before `scalar_subquery_to_join`.
#[derive(Debug, Default)]
pub struct EnforceSingleRow;

impl OptimizerRule for EnforceSingleRow {
    fn name(&self) -> &str {
        "enforce_single_row"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(&self, plan: LogicalPlan, config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        if config.options().optimizer.enable_physical_uncorrelated_scalar_subquery {
            return Ok(Transformed::no(plan));
        }
        plan.map_expressions(|expr| {
            expr.transform_down(|expr| match expr {
                Expr::ScalarSubquery(subquery)
                    if subquery.outer_ref_columns.is_empty()
                        && subquery.subquery.schema().fields().len() == 1
                        && !at_most_one_row(&subquery.subquery) =>
                {
                    Ok(Transformed::yes(Expr::ScalarSubquery(single_row(subquery)?)))
                }
                other => Ok(Transformed::no(other)),
            })
        })
    }
}

/// `subquery` as one row: its row count and (any) value under an aggregate, the value
/// returned by [`single_row_function`], under the subquery's own column name.
fn single_row(subquery: Subquery) -> Result<Subquery> {
    let plan = subquery.subquery.as_ref();
    let (qualifier, field) = plan.schema().qualified_field(0);
    let value = Expr::Column(Column::new(qualifier.cloned(), field.name()));
    let aggregate = Aggregate::try_new(
        subquery.subquery.clone(),
        vec![],
        vec![count(lit(1)).alias("__rows"), first_value(value, vec![]).alias("__value")],
    )?;
    let checked = Expr::ScalarFunction(ScalarFunction::new_udf(
        single_row_function(),
        vec![Expr::Column(Column::from_name("__rows")), Expr::Column(Column::from_name("__value"))],
    ))
    .alias_qualified(qualifier.cloned(), field.name());
    let projection = Projection::try_new(vec![checked], Arc::new(LogicalPlan::Aggregate(aggregate)))?;
    Ok(Subquery { subquery: Arc::new(LogicalPlan::Projection(projection)), ..subquery })
}

/// Whether `plan` returns at most one row whatever the data: an aggregate without
/// `GROUP BY`, a `LIMIT` of at most one, one row of `VALUES`, under row-preserving nodes.
fn at_most_one_row(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(aggregate) => aggregate.group_expr.is_empty(),
        LogicalPlan::EmptyRelation(_) => true,
        LogicalPlan::Values(values) => values.values.len() <= 1,
        LogicalPlan::Limit(limit) => {
            matches!(limit.get_fetch_type(), Ok(FetchType::Literal(Some(fetch))) if fetch <= 1)
                || at_most_one_row(&limit.input)
        }
        LogicalPlan::Projection(Projection { input, .. })
        | LogicalPlan::SubqueryAlias(datafusion::logical_expr::SubqueryAlias { input, .. }) => at_most_one_row(input),
        LogicalPlan::Filter(filter) => at_most_one_row(&filter.input),
        LogicalPlan::Sort(sort) => at_most_one_row(&sort.input),
        _ => false,
    }
}

/// `$scalar_subquery_single_row(rows, value)`: `value`, or `SUBQUERY_MULTIPLE_ROWS` when
/// `rows` is above one. Planned by [`EnforceSingleRow`] only (its name cannot be written in
/// SQL); workers register it to decode their tasks.
pub fn single_row_function() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(SingleRow { signature: Signature::any(2, Volatility::Immutable) }))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SingleRow {
    signature: Signature,
}

impl ScalarUDFImpl for SingleRow {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[1].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [rows, value] = args.args.as_slice() else {
            return datafusion::common::internal_err!("{NAME} takes two arguments");
        };
        let several = match rows {
            ColumnarValue::Scalar(ScalarValue::Int64(rows)) => rows.is_some_and(|rows| rows > 1),
            ColumnarValue::Array(rows) => match rows.as_any().downcast_ref::<Int64Array>() {
                Some(rows) => rows.iter().any(|rows| rows.is_some_and(|rows| rows > 1)),
                None => return datafusion::common::internal_err!("{NAME} counts rows as Int64"),
            },
            ColumnarValue::Scalar(other) => return datafusion::common::internal_err!("{NAME} got a count of {other}"),
        };
        if several {
            return Err(crate::error::carry(FlotillaError::new(
                ErrorCode::SubqueryMultipleRows,
                "Scalar sub-query has returned multiple rows",
            )));
        }
        Ok(value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Scalar subqueries as joins (the engine's setting) or run as their own plans
    /// (DataFusion's default), with the rule where the engine has it; `t` holds 1, 2, 2, 3.
    async fn context(as_join: bool) -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(2);
        config.options_mut().optimizer.enable_physical_uncorrelated_scalar_subquery = !as_join;
        let mut rules = datafusion::optimizer::Optimizer::new().rules;
        let at = rules.iter().position(|rule| rule.name() == "scalar_subquery_to_join").unwrap();
        rules.insert(at, Arc::new(EnforceSingleRow));
        let state =
            SessionStateBuilder::new().with_default_features().with_config(config).with_optimizer_rules(rules).build();
        let ctx = SessionContext::new_with_state(state);
        ctx.sql("CREATE TABLE t AS VALUES (1), (2), (2), (3)").await.unwrap().collect().await.unwrap();
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> Result<String> {
        let plan = ctx.sql(sql).await?.create_physical_plan().await?;
        Ok(pretty_format_batches(&collect(plan, ctx.task_ctx()).await?)?.to_string())
    }

    #[tokio::test]
    async fn a_subquery_of_several_rows_fails_as_in_datafusions_own_form() {
        for sql in [
            "SELECT (SELECT column1 FROM t) AS x",
            "SELECT count(*) FROM t WHERE column1 = (SELECT column1 FROM t WHERE column1 = 2)",
            "SELECT column1 FROM t WHERE column1 > (SELECT column1 FROM t ORDER BY column1 LIMIT 2)",
            // Nested: the inner one has several rows.
            "SELECT (SELECT (SELECT column1 FROM t) + 1) AS x",
        ] {
            let joined = answer(&context(true).await, sql).await.expect_err(sql);
            let flotilla = crate::error::from_datafusion(&joined);
            assert_eq!(flotilla.code, ErrorCode::SubqueryMultipleRows, "{sql}: {joined}");
            assert!(flotilla.message.contains("multiple rows"), "{sql}: {joined}");
            // DataFusion's own execution of the subquery fails too.
            assert!(answer(&context(false).await, sql).await.is_err(), "{sql}");
        }
    }

    #[tokio::test]
    async fn subqueries_of_at_most_one_row_keep_their_answers() {
        for sql in [
            "SELECT (SELECT column1 FROM t WHERE column1 = 3) AS x",
            "SELECT column1 FROM t WHERE column1 < (SELECT max(column1) FROM t) ORDER BY column1",
            "SELECT column1 FROM t WHERE column1 = (SELECT column1 FROM t ORDER BY column1 DESC LIMIT 1)",
            "SELECT column1, (SELECT column1 FROM t WHERE column1 = 1) + column1 AS y FROM t ORDER BY column1",
        ] {
            let joined = answer(&context(true).await, sql).await.expect(sql);
            let own = answer(&context(false).await, sql).await.expect(sql);
            assert_eq!(joined, own, "{sql}");
        }
        // No row: NULL. (DataFusion's own execution fails on these: it keeps the subquery's
        // column non-nullable, and the NULL of no row breaks its batch.)
        let ctx = context(true).await;
        let none = answer(&ctx, "SELECT (SELECT 'a' WHERE false) AS x, (SELECT 7) AS y").await.unwrap();
        assert!(none.contains("|   | 7 |"), "{none}");
        let none = answer(&ctx, "SELECT (SELECT column1 FROM t WHERE column1 > 10) AS x").await.unwrap();
        assert!(none.contains("|   |"), "{none}");
        // Subqueries that return one row whatever the data are left as they are.
        let ctx = context(true).await;
        for sql in
            ["SELECT (SELECT max(column1) FROM t)", "SELECT (SELECT column1 FROM t LIMIT 1)", "SELECT (SELECT 7)"]
        {
            let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap().display_indent().to_string();
            assert!(!plan.contains(NAME), "{sql}\n{plan}");
        }
        let plan = ctx
            .sql("SELECT (SELECT column1 FROM t)")
            .await
            .unwrap()
            .into_optimized_plan()
            .unwrap()
            .display_indent()
            .to_string();
        assert!(plan.contains(NAME), "{plan}");
    }

    #[tokio::test]
    async fn workers_decode_the_check_by_name() {
        let ctx = context(true).await;
        let sql = "SELECT column1 FROM t WHERE column1 = (SELECT column1 FROM t WHERE column1 = 3)";
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let codec = datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec {};
        let bytes = datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, &codec).unwrap();
        let bare = SessionContext::new();
        assert!(datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
            &bytes,
            &bare.task_ctx(),
            &codec
        )
        .is_err());
        bare.register_udf(single_row_function().as_ref().clone());
        let decoded =
            datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(&bytes, &bare.task_ctx(), &codec)
                .unwrap();
        let rows = pretty_format_batches(&collect(decoded, bare.task_ctx()).await.unwrap()).unwrap().to_string();
        assert!(rows.contains("| 3 "), "{rows}");
    }
}
