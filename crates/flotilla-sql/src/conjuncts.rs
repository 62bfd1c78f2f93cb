//! The conjuncts of a filter evaluated in the order that costs least.
//!
//! DataFusion evaluates `a AND b` by evaluating `a` on the whole batch and then, when `a`
//! keeps at most a fifth of the rows, copying those rows of every column of the batch,
//! evaluating `b` on the copy and scattering its result back bit by bit ("pre-selection");
//! otherwise it evaluates `b` on the whole batch too and ANDs the two bitmaps. A filter's
//! predicate comes from the planner as a left-deep chain, `((a AND b) AND c) AND d`, so once
//! the first conjuncts together keep few rows, every further level copies the batch's rows
//! again and scatters again. For TPC-H q06 (five comparisons of `lineitem` columns with
//! constants, 1.9% of the rows kept) that machinery cost more than the comparisons
//! themselves.
//!
//! [`EvaluateCheapConjunctsFirst`] rebuilds each `FilterExec`'s predicate from the same
//! conjuncts: the cheap ones (comparisons of primitive columns with constants or with each
//! other, null checks) first, as a right-deep chain `a AND (b AND c)`, whose levels evaluate
//! on the whole batch and AND bitmaps (pre-selection happens only when the first conjunct
//! alone is selective, and then once, on a batch that shrinks level by level); then the
//! others (string matches, lists, functions, arithmetic) in their order, each above the
//! cheap ones, so they are evaluated, after one pre-selection, only on the rows the cheap
//! ones kept. Measured (one process, sf1, best of 7): q06 150 → 100 ms, q12 225 → 150 ms.
//!
//! The rule runs last in every session's physical optimizer, and again on each task's plan
//! where a worker receives it ([`crate::distributed::worker_session_state`]): the workers
//! were found evaluating the left-deep shape, although the shape survives DataFusion's plan
//! encoding (tested below).
//!
//! The answer cannot change: AND is commutative and associative (NULLs included). Only the
//! cheap conjuncts, which cannot fail, move ahead; the others keep their order. DataFusion
//! never promised to skip a conjunct on rows an earlier one rules out (it evaluates both
//! sides on the whole batch whenever the left keeps more than a fifth of the rows or has
//! NULLs), so a query whose later conjunct fails on such rows (a division by zero, a cast)
//! could fail before and still can.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, IsNotNullExpr, IsNullExpr, Literal};
use datafusion::physical_expr::{split_conjunction, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::ExecutionPlan;

/// Filters with more conjuncts than this are left as planned (the rebuilt chain would be as
/// deep as the planned one, but there is no gain worth walking such predicates for).
pub const MAX_CONJUNCTS: usize = 64;

/// See the [module](self).
#[derive(Debug, Default)]
pub struct EvaluateCheapConjunctsFirst;

impl PhysicalOptimizerRule for EvaluateCheapConjunctsFirst {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else { return Ok(Transformed::no(node)) };
            let Some(predicate) = reorder(filter.predicate(), &filter.input().schema()) else {
                return Ok(Transformed::no(node));
            };
            let filter = FilterExecBuilder::from(filter).with_predicate(predicate).build()?;
            Ok(Transformed::yes(Arc::new(filter) as Arc<dyn ExecutionPlan>))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "flotilla_evaluate_cheap_conjuncts_first"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `predicate` rebuilt as the [module](self) says where that changes it.
pub(crate) fn cheap_first(predicate: Arc<dyn PhysicalExpr>, schema: &Schema) -> Arc<dyn PhysicalExpr> {
    reorder(&predicate, schema).unwrap_or(predicate)
}

/// `predicate` rebuilt as the [module](self) says, or `None` when that is the shape it has
/// (one conjunct, none cheap, or two in that order) or it has too many conjuncts.
fn reorder(predicate: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<Arc<dyn PhysicalExpr>> {
    let conjuncts = split_conjunction(predicate);
    if conjuncts.len() < 2 || conjuncts.len() > MAX_CONJUNCTS {
        return None;
    }
    let (cheap, costly): (Vec<_>, Vec<_>) = conjuncts.iter().partition(|conjunct| is_cheap(conjunct, schema));
    if cheap.is_empty() || (conjuncts.len() == 2 && (cheap.len() == 2 || Arc::ptr_eq(cheap[0], conjuncts[0]))) {
        return None;
    }
    let and = |left: Arc<dyn PhysicalExpr>, right: Arc<dyn PhysicalExpr>| -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(left, Operator::And, right))
    };
    // The cheap ones right-deep: a AND (b AND (c AND d)).
    let cheap =
        cheap.into_iter().rev().map(|conjunct| Arc::clone(conjunct)).reduce(|inner, conjunct| and(conjunct, inner));
    // The others above them, left-deep: ((cheap AND x) AND y).
    costly.into_iter().map(|conjunct| Arc::clone(conjunct)).fold(cheap, |below, conjunct| {
        Some(match below {
            Some(below) => and(below, conjunct),
            None => conjunct,
        })
    })
}

/// A comparison of primitive columns and constants, or a null check of a column: a kernel
/// pass over fixed-width values that cannot fail.
fn is_cheap(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> bool {
    let fixed_width = |data_type: &DataType| data_type.is_primitive() || matches!(data_type, DataType::Boolean);
    let operand = |expr: &Arc<dyn PhysicalExpr>| {
        if let Some(column) = expr.downcast_ref::<Column>() {
            return schema.fields().get(column.index()).is_some_and(|field| fixed_width(field.data_type()));
        }
        expr.downcast_ref::<Literal>().is_some_and(|literal| fixed_width(&literal.value().data_type()))
    };
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        return matches!(
            binary.op(),
            Operator::Eq | Operator::NotEq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
        ) && operand(binary.left())
            && operand(binary.right());
    }
    if let Some(check) = expr.downcast_ref::<IsNullExpr>() {
        return operand(check.arg());
    }
    expr.downcast_ref::<IsNotNullExpr>().is_some_and(|check| operand(check.arg()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Date32Array, Int32Array, StringArray};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::config::ConfigOptions;
    use datafusion::physical_optimizer::PhysicalOptimizerRule;
    use datafusion::physical_plan::{collect, ExecutionPlan};
    use datafusion::prelude::SessionContext;

    use super::{EvaluateCheapConjunctsFirst, MAX_CONJUNCTS};
    use crate::test_support::{filter_predicate as predicate, predicate_shape as shape};

    async fn context() -> SessionContext {
        // NULLs in every column: AND's three-valued logic must come out the same.
        let n = 5_000;
        let a = Int32Array::from_iter((0..n).map(|i| (i % 7 != 0).then_some(i % 13)));
        let b = Int32Array::from_iter((0..n).map(|i| (i % 11 != 0).then_some(i % 17)));
        let d = Date32Array::from_iter((0..n).map(|i| (i % 5 != 0).then_some(18_000 + i % 900)));
        let s = StringArray::from_iter((0..n).map(|i| (i % 3 != 0).then(|| format!("row {}", i % 29))));
        let batch = RecordBatch::try_from_iter([
            ("a", Arc::new(a) as _),
            ("b", Arc::new(b) as _),
            ("d", Arc::new(d) as _),
            ("s", Arc::new(s) as _),
        ])
        .unwrap();
        let ctx = SessionContext::new();
        ctx.register_batch("t", batch).unwrap();
        ctx
    }

    async fn answer(ctx: &SessionContext, plan: Arc<dyn ExecutionPlan>) -> String {
        pretty_format_batches(&collect(plan, ctx.task_ctx()).await.unwrap()).unwrap().to_string()
    }

    /// Cheap comparisons first, right-deep; the LIKE and the function call after them in
    /// their order, left-deep; the same rows come out.
    #[tokio::test]
    async fn cheap_conjuncts_come_first_and_the_answer_stays() {
        let ctx = context().await;
        let rule = EvaluateCheapConjunctsFirst;
        let options = ConfigOptions::default();
        let cases = [
            (
                "SELECT * FROM t WHERE s LIKE '%1%' AND a > 1 AND b < 10 AND upper(s) <> 'ROW 3' \
                 AND d >= DATE '2019-06-01' ORDER BY a, b, d, s",
                "(((a (b d)) L) U)",
            ),
            ("SELECT * FROM t WHERE a > 1 AND b < 10 AND d IS NOT NULL ORDER BY a, b, d, s", "(a (b d))"),
            // Two conjuncts: the costly one goes second; already so, or both alike, unchanged.
            ("SELECT * FROM t WHERE s LIKE '%1%' AND a > 1 ORDER BY a, b, d, s", "(a L)"),
            ("SELECT * FROM t WHERE a > 1 AND s LIKE '%1%' ORDER BY a, b, d, s", "(a L)"),
            ("SELECT * FROM t WHERE a > 1 AND b <> 3 ORDER BY a, b, d, s", "(a b)"),
            // No cheap conjunct: left as planned.
            ("SELECT * FROM t WHERE s LIKE '%1%' AND upper(s) <> 'ROW 3' ORDER BY a, b, d, s", "(L U)"),
        ];
        for (sql, expected) in cases {
            let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
            let rewritten = rule.optimize(Arc::clone(&plan), &options).unwrap();
            assert_eq!(shape(&predicate(&rewritten)), expected, "{sql}");
            // A plan runs once: the reference answer from a plan of its own.
            let reference = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
            let before = answer(&ctx, reference).await;
            assert!(before.lines().count() > 10, "{sql} keeps rows");
            assert_eq!(answer(&ctx, rewritten).await, before, "{sql}");
        }
    }

    /// Hostile predicates: more conjuncts than the rule rebuilds are left alone; up to that
    /// many are rebuilt, and answer the same.
    #[tokio::test]
    async fn long_conjunctions_are_bounded() {
        let ctx = context().await;
        let rule = EvaluateCheapConjunctsFirst;
        let options = ConfigOptions::default();
        for count in [MAX_CONJUNCTS, MAX_CONJUNCTS + 1, 600] {
            let conjuncts: Vec<String> = (0..count)
                .map(|i| if i % 2 == 0 { format!("a <> {}", 100 + i) } else { format!("s NOT LIKE '%x{i}%'") })
                .collect();
            let sql = format!("SELECT count(*) FROM t WHERE {}", conjuncts.join(" AND "));
            let plan = ctx.sql(&sql).await.unwrap().create_physical_plan().await.unwrap();
            let rewritten = rule.optimize(Arc::clone(&plan), &options).unwrap();
            let changed = shape(&predicate(&rewritten)) != shape(&predicate(&plan));
            assert_eq!(changed, count <= MAX_CONJUNCTS, "{count} conjuncts");
            // A plan runs once: the reference answer from a plan of its own.
            let reference = ctx.sql(&sql).await.unwrap().create_physical_plan().await.unwrap();
            assert_eq!(answer(&ctx, rewritten).await, answer(&ctx, reference).await, "{count} conjuncts");
        }
    }

    /// The shape travels with a plan sent to the workers (DataFusion's protobuf encoding).
    #[tokio::test]
    async fn the_shape_survives_the_plan_encoding() {
        let ctx = context().await;
        let sql = "SELECT * FROM t WHERE s LIKE '%1%' AND a > 1 AND b < 10 AND d >= DATE '2019-06-01'";
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let rewritten = EvaluateCheapConjunctsFirst.optimize(plan, &ConfigOptions::default()).unwrap();
        let codec = datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec {};
        let converter = datafusion_proto::physical_plan::DeduplicatingProtoConverter::default();
        let bytes = datafusion_proto::bytes::physical_plan_to_bytes_with_proto_converter(
            Arc::clone(&rewritten),
            &codec,
            &converter,
        )
        .unwrap();
        let decoded = datafusion_proto::bytes::physical_plan_from_bytes_with_proto_converter(
            &bytes,
            &ctx.task_ctx(),
            &codec,
            &converter,
        )
        .unwrap();
        assert_eq!(shape(&predicate(&decoded)), shape(&predicate(&rewritten)));
    }
}
