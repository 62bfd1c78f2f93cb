//! Which stored views are being expanded right now, so a view that reaches itself is refused
//! with `VIEW_IS_RECURSIVE` instead of being planned until the stack overflows.
//!
//! Planning a view resolves the names in its SQL, which may be views again; DataFusion does
//! that inside the one planning future, so the chain of views being expanded is a tokio
//! task-local ([`expand`] pushes a name for the duration of its planning). A name already in
//! the chain is a cycle; a chain longer than [`MAX_VIEW_DEPTH`] is refused too. The same
//! check runs when a view is created (its own name is the first in the chain), so
//! `CREATE OR REPLACE VIEW v AS SELECT * FROM v` is refused as Trino refuses it; the check at
//! planning catches cycles that two racing replacements made.
//!
//! A listing of a catalog's tables ([`listing`]: `information_schema`, `system.jdbc`) must
//! not fail because one view cannot be planned (its table was dropped, say): there, and
//! only there, a view that fails to plan is still listed, as Trino lists it, and reading it
//! reports why ([`InvalidView`]).

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use flotilla_proto::{ErrorCode, FlotillaError};

/// The longest chain of views within views that is planned.
pub const MAX_VIEW_DEPTH: usize = 16;

#[derive(Debug, Clone, Default)]
struct Expansion {
    /// The views being planned, outermost first (`catalog.schema.view`).
    chain: Vec<String>,
    /// Inside a listing of tables.
    listing: bool,
}

tokio::task_local! {
    static EXPANSION: Expansion;
}

fn current() -> Expansion {
    EXPANSION.try_with(Clone::clone).unwrap_or_default()
}

/// A Flotilla error carried through DataFusion (the engine maps it back unchanged).
pub fn carried(error: FlotillaError) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}

/// Plans the view `name` with `planning`: refused when `name` is already being expanded
/// (`VIEW_IS_RECURSIVE`) or views nest deeper than [`MAX_VIEW_DEPTH`].
pub async fn expand<T>(name: String, planning: impl Future<Output = Result<T>>) -> Result<T> {
    let mut expansion = current();
    if expansion.chain.contains(&name) {
        let path = expansion.chain.iter().chain([&name]).cloned().collect::<Vec<_>>().join(" -> ");
        return Err(carried(FlotillaError::new(
            ErrorCode::ViewIsRecursive,
            format!("View '{name}' is recursive: {path}"),
        )));
    }
    if expansion.chain.len() >= MAX_VIEW_DEPTH {
        return Err(carried(FlotillaError::new(
            ErrorCode::InvalidView,
            format!("View '{name}' nests views deeper than {MAX_VIEW_DEPTH} levels"),
        )));
    }
    expansion.chain.push(name);
    EXPANSION.scope(expansion, planning).await
}

/// Runs a listing of tables: a view that cannot be planned is listed as an [`InvalidView`]
/// instead of failing the listing.
pub async fn listing<T>(work: impl Future<Output = T>) -> T {
    let mut expansion = current();
    expansion.listing = true;
    EXPANSION.scope(expansion, work).await
}

/// Whether a listing of tables is running (its lookups are no reads of the tables).
pub fn in_listing() -> bool {
    current().listing
}

/// Whether a view that failed to plan should be listed rather than fail: inside a listing,
/// for the listed view itself (not for a view it reads, whose failure is its reader's).
pub fn tolerate_invalid_views() -> bool {
    let expansion = current();
    expansion.listing && expansion.chain.is_empty()
}

const FAILED_VIEW: &str = "Failed analyzing stored view";

/// Why the view `name` could not be planned, as Trino words it, with the cause's code (a
/// failure already described by an inner view, or a recursion, is passed on as it is).
pub fn failed_view(name: &str, error: &DataFusionError) -> FlotillaError {
    let cause = crate::error::from_datafusion(error);
    if cause.code == ErrorCode::ViewIsRecursive || cause.message.starts_with(FAILED_VIEW) {
        return cause;
    }
    FlotillaError::new(cause.code, format!("{FAILED_VIEW} '{name}': {}", cause.message))
}

/// A stored view that cannot be planned now: listed with its definition and no columns;
/// reading it fails with the reason.
#[derive(Debug)]
pub struct InvalidView {
    definition: String,
    error: FlotillaError,
}

impl InvalidView {
    pub fn new(definition: String, error: FlotillaError) -> Self {
        Self { definition, error }
    }
}

#[async_trait]
impl TableProvider for InvalidView {
    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::empty())
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        Some(&self.definition)
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Err(carried(self.error.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(error: DataFusionError) -> ErrorCode {
        crate::error::from_datafusion(&error).code
    }

    #[tokio::test]
    async fn a_view_that_reaches_itself_is_recursive() {
        let inner = expand("c.s.b".into(), expand("c.s.a".into(), async { Ok(()) }));
        let error = expand("c.s.a".into(), inner).await.unwrap_err();
        assert_eq!(code(error), ErrorCode::ViewIsRecursive);
        // Siblings are not a cycle.
        let ok = expand("c.s.a".into(), async {
            expand("c.s.b".into(), async { Ok(()) }).await?;
            expand("c.s.b".into(), async { Ok(()) }).await
        });
        assert!(ok.await.is_ok());
    }

    #[tokio::test]
    async fn chains_are_bounded() {
        fn nest(level: usize) -> futures::future::BoxFuture<'static, Result<()>> {
            Box::pin(expand(format!("c.s.v{level}"), async move {
                if level < 100 {
                    nest(level + 1).await
                } else {
                    Ok(())
                }
            }))
        }
        assert_eq!(code(nest(0).await.unwrap_err()), ErrorCode::InvalidView);
    }

    #[tokio::test]
    async fn only_the_listed_view_itself_is_tolerated() {
        assert!(!tolerate_invalid_views());
        assert!(listing(async { tolerate_invalid_views() }).await);
        assert!(!listing(expand("c.s.v".into(), async { Ok(tolerate_invalid_views()) })).await.unwrap());
    }
}
