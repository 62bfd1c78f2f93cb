//! Whether a query's output order is deterministic: whether running it again returns the
//! same rows in the same sequence (over the same data), so a coordinator that adopts it
//! after rows were delivered can skip exactly those.
//!
//! That holds when the outermost ordering of the plan is a sort whose keys totally order
//! its input: the keys cover every column (rows that tie are equal rows), or they include
//! a unique key of the input (DataFusion's functional dependencies: an aggregate's group-by
//! columns, a table's primary key). Only order-keeping operators (projection, limit,
//! filter, alias) may sit above that sort. It holds too when the output has one row at
//! most: an aggregate without `GROUP BY`, or a `LIMIT 1` (or 0).

use std::collections::HashSet;

use datafusion::common::Dependency;
use datafusion::logical_expr::{Expr, LogicalPlan};

/// Whether `plan` returns its rows in one order only (see the module docs).
pub fn totally_ordered(plan: &LogicalPlan) -> bool {
    let mut node = plan;
    // Bounded by the plan's depth, which the parser already bounds.
    loop {
        match node {
            LogicalPlan::Projection(p) => node = &p.input,
            LogicalPlan::Limit(l) => {
                if matches!(l.get_fetch_type(), Ok(datafusion::logical_expr::FetchType::Literal(Some(fetch))) if fetch <= 1)
                {
                    return true;
                }
                node = &l.input
            }
            LogicalPlan::Aggregate(a) if a.group_expr.is_empty() => return true,
            LogicalPlan::Filter(f) => node = &f.input,
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::Sort(sort) => {
                let schema = sort.input.schema();
                let keys: HashSet<usize> = sort
                    .expr
                    .iter()
                    .filter_map(|s| match &s.expr {
                        Expr::Column(column) => schema.index_of_column(column).ok(),
                        _ => None,
                    })
                    .collect();
                let all = schema.fields().len();
                if (0..all).all(|i| keys.contains(&i)) {
                    return true;
                }
                return schema.functional_dependencies().iter().any(|dependence| {
                    dependence.mode == Dependency::Single
                        && dependence.source_indices.iter().all(|i| keys.contains(i))
                        && (0..all).all(|i| dependence.target_indices.contains(&i) || keys.contains(&i))
                });
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn ordered(sql: &str) -> bool {
        let context = SessionContext::new();
        context.sql("CREATE TABLE t (a INT, b INT, c VARCHAR) AS VALUES (1, 2, 'x')").await.unwrap();
        let plan = context.state().create_logical_plan(sql).await.unwrap();
        totally_ordered(&plan)
    }

    #[tokio::test]
    async fn only_an_outermost_sort_that_orders_every_row_is_deterministic() {
        // Every column a key; a limit or projection above the sort keeps its order.
        assert!(ordered("SELECT a, b, c FROM t ORDER BY c, b, a").await);
        assert!(ordered("SELECT a, b FROM t ORDER BY a, b LIMIT 3").await);
        // Group-by keys are unique in an aggregate's output.
        assert!(ordered("SELECT a, b, sum(length(c)) FROM t GROUP BY a, b ORDER BY b, a").await);
        assert!(ordered("SELECT a, count(*) AS n FROM t GROUP BY a ORDER BY a DESC").await);
        // Ties left open, no sort, or a sort under something that reorders.
        assert!(!ordered("SELECT a, b FROM t ORDER BY a").await);
        assert!(!ordered("SELECT a, count(*) AS n FROM t GROUP BY a, b ORDER BY a").await);
        assert!(!ordered("SELECT a, b FROM t").await);
        assert!(!ordered("SELECT a FROM (SELECT a FROM t ORDER BY a) GROUP BY a").await);
        assert!(!ordered("SELECT a, b FROM t LIMIT 2").await);
        // One row at most: nothing to order.
        assert!(ordered("SELECT count(*), sum(a) FROM t WHERE b > 1").await);
        assert!(ordered("SELECT a FROM t LIMIT 1").await);
        // A sort by the only output column: rows that tie are equal.
        assert!(ordered("SELECT a + b FROM t ORDER BY a + b").await);
    }
}
