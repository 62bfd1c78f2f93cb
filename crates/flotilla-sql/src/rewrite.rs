//! Rewrites of the parsed statement that give Trino's semantics where DataFusion's differ.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, DataType, ExactNumberInfo, Expr, Ident, Select, SelectItem, Statement, Value, VisitMut,
    VisitorMut,
};

/// Names unnamed projected expressions `_col0`, `_col1`, ... by position, as Trino does.
/// Besides matching Trino's column names, this lets a query project the same expression
/// twice (`SELECT 1, 1`), which DataFusion rejects when names collide.
struct NameUnnamedColumns;

impl VisitorMut for NameUnnamedColumns {
    type Break = ();

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<Self::Break> {
        for (index, item) in select.projection.iter_mut().enumerate() {
            if let SelectItem::UnnamedExpr(expr) = item {
                if matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                    continue;
                }
                let expr = std::mem::replace(expr, Expr::Value(datafusion::sql::sqlparser::ast::Value::Null.into()));
                *item = SelectItem::ExprWithAlias { expr, alias: Ident::new(format!("_col{index}")) };
            }
        }
        ControlFlow::Continue(())
    }
}

pub fn name_unnamed_columns(statement: &mut Statement) {
    let _ = statement.visit(&mut NameUnnamedColumns);
}

/// Precision and scale of a decimal literal's text, as Trino infers them: `DECIMAL '12.30'`
/// is `decimal(4,2)`.
fn literal_decimal_type(text: &str) -> Option<(u64, u64)> {
    let digits = text.trim().trim_start_matches(['+', '-']);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    let scale = fraction.len() as u64;
    let precision = (whole.len() as u64 + scale).max(1);
    (precision <= 38).then_some((precision, scale))
}

/// Gives `DECIMAL 'x'` literals without precision the precision and scale of their text.
pub fn type_decimal_literals(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::TypedString(typed) = expr {
            if let DataType::Decimal(ExactNumberInfo::None) | DataType::Numeric(ExactNumberInfo::None) = typed.data_type
            {
                let text = match &typed.value.value {
                    Value::SingleQuotedString(text) => Some(text.clone()),
                    _ => None,
                };
                if let Some((precision, scale)) = text.as_deref().and_then(literal_decimal_type) {
                    typed.data_type = DataType::Decimal(ExactNumberInfo::PrecisionAndScale(precision, scale as i64));
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    #[test]
    fn decimal_literals_take_their_texts_precision() {
        assert_eq!(literal_decimal_type("12.30"), Some((4, 2)));
        assert_eq!(literal_decimal_type("-0.05"), Some((2, 2)));
        assert_eq!(literal_decimal_type("007"), Some((1, 0)));
        assert_eq!(literal_decimal_type("1e5"), None);
        let mut statement = Parser::parse_sql(&GenericDialect {}, "SELECT DECIMAL '12.30'").unwrap().remove(0);
        type_decimal_literals(&mut statement);
        assert_eq!(statement.to_string(), "SELECT DECIMAL(4,2) '12.30'");
    }

    #[test]
    fn unnamed_expressions_get_positional_names() {
        let mut statement =
            Parser::parse_sql(&GenericDialect {}, "SELECT 1, a, t.b, count(*) AS c, a + 1 FROM t").unwrap().remove(0);
        name_unnamed_columns(&mut statement);
        assert_eq!(statement.to_string(), "SELECT 1 AS _col0, a, t.b, count(*) AS c, a + 1 AS _col4 FROM t");
    }
}
