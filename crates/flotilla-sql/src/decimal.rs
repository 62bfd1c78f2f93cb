//! Decimal addition, subtraction and multiplication without a checked 128-bit multiplication
//! per row.
//!
//! Arrow evaluates `a + b`, `a - b` and `a * b` of `Decimal128` values with checked `i128`
//! arithmetic row by row: `mul_checked` for every product, and for a sum of two scales
//! (TPC-H's `1 - l_discount`: `Decimal128(20, 0)` and `Decimal128(15, 2)`) a checked
//! multiplication of each side by its power of ten as well. A checked `i128` multiplication
//! cannot be vectorised and costs tens of cycles, so in TPC-H q01 the two expressions
//! `l_extendedprice * (1 - l_discount)` and `... * (1 + l_tax)` took about 270 ms of CPU for
//! 6M rows, a third of the query (`EXPLAIN ANALYZE`: `expr_0_eval_time`,
//! `aggregate_arguments_time`).
//!
//! [`DecimalArithmetic`] replaces such a `BinaryExpr` in projections and aggregate arguments
//! by a call of [`decimal_functions`]' function of the same operation, whose kernel proves,
//! batch by batch, that no row can overflow: every value of an array side fits in 64 bits
//! (one vectorised pass), a constant side is rescaled once, and powers of ten stay below
//! 10^18; then `|a| * 10^18 + |b| * 10^18 < 2^124` and `|a * b| < 2^126`, and the
//! arithmetic is done with 64-bit-operand multiplications that cannot overflow. A batch that
//! fails the proof (a value beyond 64 bits, a scale gap beyond 18) is computed by arrow's own
//! kernel, as `BinaryExpr` computes it, with its errors. The result's type is arrow's (the
//! Hive rules), so plans, answers and errors stay as they were.
//!
//! The functions travel to workers by name (DataFusion's plan encoding), where
//! [`crate::distributed::worker_session_state`] registers them.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::buffer::{NullBuffer, ScalarBuffer};
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{
    ColumnarValue, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::ExecutionPlan;

/// The largest power of ten a side is rescaled by on the fast path (10^18 < 2^60).
const MAX_RESCALE_DIGITS: i32 = 18;
/// Rows whose bound is checked at a time (the check stops at the first failing chunk).
const CHECK_CHUNK: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum DecimalOp {
    Add,
    Subtract,
    Multiply,
}

impl DecimalOp {
    fn name(self) -> &'static str {
        match self {
            DecimalOp::Add => "decimal_add",
            DecimalOp::Subtract => "decimal_subtract",
            DecimalOp::Multiply => "decimal_multiply",
        }
    }

    fn of(operator: Operator) -> Option<Self> {
        match operator {
            Operator::Plus => Some(DecimalOp::Add),
            Operator::Minus => Some(DecimalOp::Subtract),
            Operator::Multiply => Some(DecimalOp::Multiply),
            _ => None,
        }
    }

    /// The result's precision and scale, by arrow's rules (`arrow_arith::numeric`), or
    /// `None` where arrow refuses the operation (a product's scale beyond 38).
    fn result_type(self, (p1, s1): (u8, i8), (p2, s2): (u8, i8)) -> Option<(u8, i8)> {
        let max_precision = i32::from(datafusion::arrow::datatypes::DECIMAL128_MAX_PRECISION);
        let max_scale = i32::from(datafusion::arrow::datatypes::DECIMAL128_MAX_SCALE);
        let (p1, s1, p2, s2) = (i32::from(p1), i32::from(s1), i32::from(p2), i32::from(s2));
        let (precision, scale) = match self {
            DecimalOp::Add | DecimalOp::Subtract => {
                let scale = s1.max(s2);
                (scale + (p1 - s1).max(p2 - s2) + 1, scale)
            }
            DecimalOp::Multiply => (p1 + p2 + 1, s1 + s2),
        };
        if scale > max_scale || scale < i32::from(i8::MIN) {
            return None;
        }
        Some((precision.clamp(1, max_precision) as u8, scale as i8))
    }
}

/// The three functions, for a worker's function registry.
pub fn decimal_functions() -> Vec<Arc<ScalarUDF>> {
    [DecimalOp::Add, DecimalOp::Subtract, DecimalOp::Multiply].into_iter().map(function).collect()
}

fn function(op: DecimalOp) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(DecimalFunction { op, signature: Signature::any(2, Volatility::Immutable) }))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DecimalFunction {
    op: DecimalOp,
    signature: Signature,
}

fn decimal_type(data_type: &DataType) -> Option<(u8, i8)> {
    match data_type {
        DataType::Decimal128(precision, scale) => Some((*precision, *scale)),
        _ => None,
    }
}

impl ScalarUDFImpl for DecimalFunction {
    fn name(&self) -> &str {
        self.op.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let [left, right] = arg_types else {
            return plan_err!("{} takes two decimal arguments", self.op.name());
        };
        match (decimal_type(left), decimal_type(right)) {
            (Some(left), Some(right)) => match self.op.result_type(left, right) {
                Some((precision, scale)) => Ok(DataType::Decimal128(precision, scale)),
                None => plan_err!("{} of {left:?} and {right:?} exceeds the largest decimal scale", self.op.name()),
            },
            _ => plan_err!("{} takes two decimal(38) arguments, not {left:?} and {right:?}", self.op.name()),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [left, right] = args.args.as_slice() else {
            return plan_err!("{} takes two decimal arguments", self.op.name());
        };
        evaluate(self.op, left, right)
    }
}

/// `left op right`: the fast kernel where it is proven exact, else arrow's.
fn evaluate(op: DecimalOp, left: &ColumnarValue, right: &ColumnarValue) -> Result<ColumnarValue> {
    if let Some(array) = fast(op, left, right)? {
        return Ok(ColumnarValue::Array(array));
    }
    arrow(op, left, right)
}

/// `left op right` by arrow's kernel, as `BinaryExpr` evaluates it (for decimals the
/// wrapping kernels check for overflow too).
fn arrow(op: DecimalOp, left: &ColumnarValue, right: &ColumnarValue) -> Result<ColumnarValue> {
    let kernel = match op {
        DecimalOp::Add => numeric::add_wrapping,
        DecimalOp::Subtract => numeric::sub_wrapping,
        DecimalOp::Multiply => numeric::mul_wrapping,
    };
    datafusion::physical_expr_common::datum::apply(left, right, kernel)
}

/// One side of an operation: its values and nulls, or a constant.
enum Side<'a> {
    Values(&'a PrimitiveArray<Decimal128Type>),
    Constant(i128),
}

fn side(value: &ColumnarValue) -> Option<(Side<'_>, (u8, i8))> {
    match value {
        ColumnarValue::Array(array) => {
            let decimal = decimal_type(array.data_type())?;
            Some((Side::Values(array.as_primitive_opt::<Decimal128Type>()?), decimal))
        }
        ColumnarValue::Scalar(ScalarValue::Decimal128(Some(value), precision, scale)) => {
            Some((Side::Constant(*value), (*precision, *scale)))
        }
        // A NULL constant, or not a decimal: arrow's kernel.
        ColumnarValue::Scalar(_) => None,
    }
}

/// Whether every value (NULL slots included) fits in 64 bits.
fn fits_64(values: &[i128]) -> bool {
    values
        .chunks(CHECK_CHUNK)
        .all(|chunk| chunk.iter().fold(true, |fits, &value| fits & (value as i64 as i128 == value)))
}

/// `a * b` of two values known to fit in 64 bits: one 64x64→128 multiplication, exact.
#[inline(always)]
fn product(a: i128, b: i128) -> i128 {
    i128::from(a as i64).wrapping_mul(i128::from(b as i64))
}

/// `op` of the two sides row by row, each side rescaled by its factor first (a constant
/// once), or `None` for two constants (arrow's kernel does those). Both sides fit in 64 bits
/// and the factors in 60 ([`fast`] checks), so the rescaling is exact; `op` is monomorphised,
/// so each loop is a plain pass over the values.
fn combine(
    left: &Side<'_>,
    left_factor: i128,
    right: &Side<'_>,
    right_factor: i128,
    op: impl Fn(i128, i128) -> i128,
) -> Option<Vec<i128>> {
    Some(match (left, right) {
        (Side::Values(a), Side::Values(b)) => a
            .values()
            .iter()
            .zip(b.values().iter())
            .map(|(&a, &b)| op(product(a, left_factor), product(b, right_factor)))
            .collect(),
        (Side::Values(a), Side::Constant(c)) => {
            let c = c * right_factor;
            a.values().iter().map(|&a| op(product(a, left_factor), c)).collect()
        }
        (Side::Constant(c), Side::Values(b)) => {
            let c = c * left_factor;
            b.values().iter().map(|&b| op(c, product(b, right_factor))).collect()
        }
        (Side::Constant(_), Side::Constant(_)) => return None,
    })
}

/// The result where no row can overflow, `None` where that is not proven (or a side is NULL
/// or not an array of decimals).
fn fast(op: DecimalOp, left: &ColumnarValue, right: &ColumnarValue) -> Result<Option<ArrayRef>> {
    let (Some((left, left_type)), Some((right, right_type))) = (side(left), side(right)) else {
        return Ok(None);
    };
    let Some((precision, scale)) = op.result_type(left_type, right_type) else { return Ok(None) };
    let bounded = |side: &Side<'_>| match side {
        Side::Values(array) => fits_64(array.values()),
        Side::Constant(value) => *value as i64 as i128 == *value,
    };
    if !bounded(&left) || !bounded(&right) {
        return Ok(None);
    }
    // Each side rescaled stays below 2^63 * 2^60, so sums and differences of two stay below
    // 2^124, and a product of two unscaled sides below 2^126.
    let (left_factor, right_factor) = match op {
        DecimalOp::Multiply => (1, 1),
        DecimalOp::Add | DecimalOp::Subtract => {
            let digits = |side_scale: i8| i32::from(scale) - i32::from(side_scale);
            let (left_digits, right_digits) = (digits(left_type.1), digits(right_type.1));
            if !(0..=MAX_RESCALE_DIGITS).contains(&left_digits) || !(0..=MAX_RESCALE_DIGITS).contains(&right_digits) {
                return Ok(None);
            }
            (10i128.pow(left_digits as u32), 10i128.pow(right_digits as u32))
        }
    };
    let values = match op {
        DecimalOp::Add => combine(&left, left_factor, &right, right_factor, i128::wrapping_add),
        DecimalOp::Subtract => combine(&left, left_factor, &right, right_factor, i128::wrapping_sub),
        DecimalOp::Multiply => combine(&left, left_factor, &right, right_factor, product),
    };
    let Some(values) = values else { return Ok(None) };
    let nulls = match (&left, &right) {
        (Side::Values(a), Side::Values(b)) => NullBuffer::union(a.nulls(), b.nulls()),
        (Side::Values(a), Side::Constant(_)) | (Side::Constant(_), Side::Values(a)) => a.nulls().cloned(),
        (Side::Constant(_), Side::Constant(_)) => return Ok(None),
    };
    let array = PrimitiveArray::<Decimal128Type>::try_new(ScalarBuffer::from(values), nulls)?
        .with_precision_and_scale(precision, scale)?;
    Ok(Some(Arc::new(array)))
}

/// `expr` with each decimal `+`, `-` and `*` of it replaced by its [`decimal_functions`]
/// call (same result type and nullability).
fn rewrite_expr(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &datafusion::arrow::datatypes::Schema,
    config: &Arc<ConfigOptions>,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    Arc::clone(expr).transform_up(|node| {
        let Some(binary) = node.downcast_ref::<BinaryExpr>() else { return Ok(Transformed::no(node)) };
        let Some(op) = DecimalOp::of(*binary.op()) else { return Ok(Transformed::no(node)) };
        let (Some(left), Some(right)) =
            (decimal_type(&binary.left().data_type(schema)?), decimal_type(&binary.right().data_type(schema)?))
        else {
            return Ok(Transformed::no(node));
        };
        let Some((precision, scale)) = op.result_type(left, right) else { return Ok(Transformed::no(node)) };
        let data_type = DataType::Decimal128(precision, scale);
        if node.data_type(schema)? != data_type {
            return Ok(Transformed::no(node));
        }
        let field = Field::new(op.name(), data_type, node.nullable(schema)?);
        let call = ScalarFunctionExpr::new(
            op.name(),
            function(op),
            vec![Arc::clone(binary.left()), Arc::clone(binary.right())],
            Arc::new(field),
            Arc::clone(config),
        );
        Ok(Transformed::yes(Arc::new(call) as Arc<dyn PhysicalExpr>))
    })
}

/// See the [module](self). Rewrites projections and aggregate arguments (filters keep their
/// `BinaryExpr`s, which DataFusion's statistics and pruning analyse).
#[derive(Debug, Default)]
pub struct DecimalArithmetic;

impl PhysicalOptimizerRule for DecimalArithmetic {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        let config = Arc::new(config.clone());
        plan.transform_up(|node| {
            if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
                let schema = projection.input().schema();
                let mut changed = false;
                let mut exprs = Vec::with_capacity(projection.expr().len());
                for projected in projection.expr() {
                    let rewritten = rewrite_expr(&projected.expr, &schema, &config)?;
                    changed |= rewritten.transformed;
                    exprs.push(ProjectionExpr { expr: rewritten.data, alias: projected.alias.clone() });
                }
                if !changed {
                    return Ok(Transformed::no(node));
                }
                let rebuilt = ProjectionExec::try_new(exprs, Arc::clone(projection.input()))?;
                // A projection that carried its own field metadata is left as planned.
                if rebuilt.schema() != projection.schema() {
                    return Ok(Transformed::no(node));
                }
                return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
            }
            if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
                let schema = aggregate.input_schema();
                let mut changed = false;
                let mut aggregates = Vec::with_capacity(aggregate.aggr_expr().len());
                for function in aggregate.aggr_expr() {
                    let mut args = Vec::new();
                    for arg in function.expressions() {
                        let rewritten = rewrite_expr(&arg, &schema, &config)?;
                        changed |= rewritten.transformed;
                        args.push(rewritten.data);
                    }
                    let order_by = function.order_bys().iter().map(|sort| Arc::clone(&sort.expr)).collect();
                    match function.with_new_expressions(args, order_by) {
                        Some(rewritten) => aggregates.push(Arc::new(rewritten)),
                        None => return Ok(Transformed::no(node)),
                    }
                }
                if !changed {
                    return Ok(Transformed::no(node));
                }
                return Ok(Transformed::yes(
                    Arc::new(aggregate.with_new_aggr_exprs(aggregates)) as Arc<dyn ExecutionPlan>
                ));
            }
            Ok(Transformed::no(node))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "decimal_arithmetic"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Decimal128Array;

    fn decimals(values: Vec<Option<i128>>, precision: u8, scale: i8) -> ColumnarValue {
        let array = Decimal128Array::from(values).with_precision_and_scale(precision, scale).unwrap();
        ColumnarValue::Array(Arc::new(array))
    }

    fn constant(value: Option<i128>, precision: u8, scale: i8) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Decimal128(value, precision, scale))
    }

    fn array(value: ColumnarValue) -> ArrayRef {
        value.into_array(1).unwrap()
    }

    const OPS: [DecimalOp; 3] = [DecimalOp::Add, DecimalOp::Subtract, DecimalOp::Multiply];

    #[test]
    fn answers_and_types_are_arrows_for_every_shape() {
        // Deterministic spread of values: small, negative, near the 64-bit edge, NULLs.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let values = |next: &mut dyn FnMut() -> u64, bound: i128| -> Vec<Option<i128>> {
            (0..3000)
                .map(|i| match i % 11 {
                    0 => None,
                    1 => Some(i64::MAX as i128),
                    2 => Some(i64::MIN as i128),
                    _ => Some((next() as i128 % bound) - bound / 2),
                })
                .collect()
        };
        let types = [(15u8, 2i8), (20, 0), (12, 4), (38, 10), (5, -2)];
        for &(p1, s1) in &types {
            for &(p2, s2) in &types {
                let left = decimals(values(&mut next, 10i128.pow(12)), p1, s1);
                let right = decimals(values(&mut next, 10i128.pow(9)), p2, s2);
                let sides = [
                    (left.clone(), right.clone()),
                    (left.clone(), constant(Some(1), p2, s2)),
                    (constant(Some(-7), p1, s1), right.clone()),
                ];
                for (l, r) in &sides {
                    for op in OPS {
                        let expected = arrow(op, l, r);
                        let got = evaluate(op, l, r);
                        match (expected, got) {
                            (Ok(expected), Ok(got)) => {
                                let (expected, got) = (array(expected), array(got));
                                assert_eq!(expected.data_type(), got.data_type(), "{op:?} ({p1},{s1}) ({p2},{s2})");
                                assert_eq!(&expected, &got, "{op:?} ({p1},{s1}) ({p2},{s2})");
                            }
                            (Err(_), Err(_)) => {}
                            (expected, got) => {
                                panic!("{op:?} ({p1},{s1}) ({p2},{s2}): arrow {expected:?}, ours {got:?}")
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn tpch_q01s_arithmetic_takes_the_fast_kernel() {
        // `l_extendedprice * (1 - l_discount)`: the constant 1 is a Decimal128(20, 0).
        let price = decimals(vec![Some(9_015_000), None, Some(10_494_950)], 15, 2);
        let discount = decimals(vec![Some(4), Some(10), Some(0)], 15, 2);
        let one = constant(Some(1), 20, 0);
        let kept = fast(DecimalOp::Subtract, &one, &discount).unwrap().expect("fast kernel");
        assert_eq!(kept.data_type(), &DataType::Decimal128(23, 2));
        assert_eq!(kept.as_primitive::<Decimal128Type>().values().to_vec(), vec![96, 90, 100]);
        let kept = ColumnarValue::Array(kept);
        let charged = fast(DecimalOp::Multiply, &price, &kept).unwrap().expect("fast kernel");
        assert_eq!(charged.data_type(), &DataType::Decimal128(38, 4));
        assert_eq!(charged.null_count(), 1);
        let charged = charged.as_primitive::<Decimal128Type>();
        assert_eq!((charged.value(0), charged.value(2)), (9_015_000 * 96, 10_494_950 * 100));
        assert_eq!(
            &(Arc::new(charged.clone()) as ArrayRef),
            &array(arrow(DecimalOp::Multiply, &price, &kept).unwrap())
        );
    }

    #[test]
    fn values_beyond_64_bits_take_arrows_kernel_and_its_overflow_error() {
        let huge = i128::MAX / 3;
        let left = decimals(vec![Some(huge), Some(1)], 38, 0);
        let right = decimals(vec![Some(10), Some(2)], 38, 0);
        assert!(fast(DecimalOp::Multiply, &left, &right).unwrap().is_none());
        let error = evaluate(DecimalOp::Multiply, &left, &right).unwrap_err().to_string();
        assert!(error.contains("Overflow"), "{error}");
        let sum = array(evaluate(DecimalOp::Add, &left, &right).unwrap());
        assert_eq!(sum.as_primitive::<Decimal128Type>().value(0), huge + 10);
        // A gap of scales beyond 18 digits: arrow's kernel too, same answer.
        let fine = decimals(vec![Some(5)], 38, 30);
        let coarse = decimals(vec![Some(3)], 10, 0);
        assert!(fast(DecimalOp::Add, &fine, &coarse).unwrap().is_none());
        let sum = array(evaluate(DecimalOp::Add, &fine, &coarse).unwrap());
        assert_eq!(sum.as_primitive::<Decimal128Type>().value(0), 5 + 3 * 10i128.pow(30));
    }

    #[test]
    fn null_and_non_decimal_arguments_are_arrows_or_refused() {
        let left = decimals(vec![Some(1), None], 15, 2);
        let null = constant(None, 15, 2);
        for op in OPS {
            let got = array(evaluate(op, &left, &null).unwrap());
            assert_eq!(got.null_count(), 2);
        }
        let function = DecimalFunction { op: DecimalOp::Add, signature: Signature::any(2, Volatility::Immutable) };
        assert!(function.return_type(&[DataType::Int64, DataType::Decimal128(15, 2)]).is_err());
        assert!(function.return_type(&[DataType::Decimal128(15, 2)]).is_err());
        let product = DecimalFunction { op: DecimalOp::Multiply, signature: Signature::any(2, Volatility::Immutable) };
        assert_eq!(
            product.return_type(&[DataType::Decimal128(15, 2), DataType::Decimal128(23, 2)]).unwrap(),
            DataType::Decimal128(38, 4)
        );
        assert!(product.return_type(&[DataType::Decimal128(38, 30), DataType::Decimal128(38, 30)]).is_err());
    }
    #[tokio::test]
    async fn plans_use_the_functions_answers_stay_and_workers_decode_them_by_name() {
        use datafusion::arrow::util::pretty::pretty_format_batches;
        use datafusion::execution::SessionStateBuilder;
        use datafusion::physical_plan::{collect, displayable};
        use datafusion::prelude::SessionContext;
        let context = |rule: bool| {
            let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
            if rule {
                rules.push(Arc::new(DecimalArithmetic));
            }
            let state = SessionStateBuilder::new().with_default_features().with_physical_optimizer_rules(rules).build();
            SessionContext::new_with_state(state)
        };
        let sql = "SELECT g, sum(p * (1 - d)) AS s, sum(p * (1 - d) * (1 + t)) AS c, min(p - d) AS m FROM \
                   (SELECT column1 AS g, CAST(column2 AS DECIMAL(15, 2)) AS p, CAST(column3 AS DECIMAL(15, 2)) AS d, \
                           CAST(column4 AS DECIMAL(15, 2)) AS t \
                    FROM (VALUES (1, '10.25', '0.04', '0.02'), (1, '3.50', NULL, '0.01'), \
                                 (2, '9999999999999.99', '0.10', '0.00'), (2, NULL, '0.05', '0.08'))) \
                   GROUP BY g ORDER BY g";
        let mut answers = Vec::new();
        for rule in [false, true] {
            let ctx = context(rule);
            let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
            let shown = displayable(plan.as_ref()).indent(true).to_string();
            assert_eq!(shown.contains("decimal_multiply("), rule, "{shown}");
            answers.push(
                pretty_format_batches(&collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap()).unwrap().to_string(),
            );
            if rule {
                // Encoded by name; a worker decodes them where they are registered, only there.
                let codec = datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec {};
                let bytes =
                    datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(Arc::clone(&plan), &codec)
                        .unwrap();
                let bare = context(false);
                assert!(datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
                    &bytes,
                    &bare.task_ctx(),
                    &codec
                )
                .is_err());
                let worker = context(false);
                for function in decimal_functions() {
                    worker.register_udf(function.as_ref().clone());
                }
                let decoded = datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
                    &bytes,
                    &worker.task_ctx(),
                    &codec,
                )
                .unwrap();
                let decoded =
                    pretty_format_batches(&collect(decoded, worker.task_ctx()).await.unwrap()).unwrap().to_string();
                assert_eq!(&decoded, answers.last().unwrap());
            }
        }
        assert_eq!(answers[0], answers[1]);
        assert!(answers[0].contains("| 1 |"), "{}", answers[0]);
    }
}
