//! Access control inside the engine (Trino's file-based rules, [`AccessRules`]): every
//! statement runs in an [`AccessScope`] naming its user, and
//!
//! - **reads**: every table a query resolves while it is planned, through views too (a
//!   view's own tables are resolved inside the same planning), is recorded by the catalogs'
//!   [`SecuredCatalog`] layer; the statement then needs `SELECT` on each (the `INSERT`
//!   target needs `INSERT` instead). A view needs `SELECT` on itself and on what it reads
//!   (the invoker's rights; Trino's file rules have no view owners to run as).
//! - **listings** (`SHOW CATALOGS/SCHEMAS/TABLES`, `information_schema`, `system.jdbc`,
//!   `system.metadata`) show only the catalogs, schemas and tables the user may see, and
//!   `system.runtime.queries` only the queries the user may view;
//! - **writes and DDL** check their target ([`check_table`], [`check_schema_owner`]);
//!   `SET SESSION`, session properties sent by the client, and `CALL` check their rules.
//!
//! The scope is a tokio task-local set around the whole statement: listings and planning
//! run inside that task (DataFusion resolves tables in the planning future, and metadata
//! tables are computed when they are planned). Without rules there is no scope, and
//! everything is allowed, as before.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use flotilla_proto::access_control::{access_denied, AccessRules, QueryAccess, TablePrivilege};
use flotilla_proto::FlotillaError;
use parking_lot::Mutex;

use crate::session::TableName;

/// Who a statement runs as, and what its planning resolved.
#[derive(Debug)]
pub struct AccessScope {
    user: String,
    rules: Arc<AccessRules>,
    /// Tables resolved while recording (planning), outside listings.
    recorded: Mutex<Option<BTreeSet<TableName>>>,
}

tokio::task_local! {
    static SCOPE: Arc<AccessScope>;
}

impl AccessScope {
    pub fn new(user: &str, rules: Arc<AccessRules>) -> Arc<Self> {
        Arc::new(Self { user: user.to_string(), rules, recorded: Mutex::new(None) })
    }
}

fn current() -> Option<Arc<AccessScope>> {
    SCOPE.try_with(Clone::clone).ok()
}

/// Runs `work` as `scope`'s user (unrestricted without a scope).
pub async fn within<T>(scope: Option<Arc<AccessScope>>, work: impl Future<Output = T>) -> T {
    match scope {
        Some(scope) => SCOPE.scope(scope, work).await,
        None => work.await,
    }
}

/// Runs `planning` and returns the tables it resolved (none without a scope).
pub async fn recording<T>(planning: impl Future<Output = T>) -> (T, BTreeSet<TableName>) {
    let Some(scope) = current() else { return (planning.await, BTreeSet::new()) };
    let previous = scope.recorded.lock().replace(BTreeSet::new());
    let output = planning.await;
    let recorded = std::mem::replace(&mut *scope.recorded.lock(), previous);
    (output, recorded.unwrap_or_default())
}

fn record(table: TableName) {
    if crate::catalog::view_expansion::in_listing() {
        return;
    }
    if let Some(scope) = current() {
        if let Some(recorded) = scope.recorded.lock().as_mut() {
            recorded.insert(table);
        }
    }
}

fn decide(decision: impl FnOnce(&AccessScope) -> bool) -> bool {
    current().is_none_or(|scope| decision(&scope))
}

pub(crate) fn catalog_visible(catalog: &str) -> bool {
    decide(|s| s.rules.catalog_visible(&s.user, catalog))
}

pub(crate) fn schema_visible(catalog: &str, schema: &str) -> bool {
    decide(|s| s.rules.schema_visible(&s.user, catalog, schema))
}

pub(crate) fn table_visible(catalog: &str, schema: &str, table: &str) -> bool {
    decide(|s| s.rules.table_visible(&s.user, catalog, schema, table))
}

/// Whether the statement's user may see a query of `owner` (`system.runtime.queries`).
pub(crate) fn query_visible(owner: &str) -> bool {
    decide(|s| s.user == owner || s.rules.query_access(&s.user, Some(owner), QueryAccess::View))
}

/// Trino's words for a denied table privilege.
fn denied_table(privilege: TablePrivilege, table: &TableName) -> FlotillaError {
    let what = match privilege {
        TablePrivilege::Select => "select from table",
        TablePrivilege::Insert => "insert into table",
        TablePrivilege::Delete => "delete from table",
        TablePrivilege::Update => "update table",
        TablePrivilege::Ownership => "change table",
        TablePrivilege::GrantSelect => "grant select on table",
    };
    access_denied(format!("Cannot {what} {table}"))
}

/// Requires `privilege` on `table`; `action` words the refusal for DDL (e.g. "drop table").
pub(crate) fn check_table(
    table: &TableName,
    privilege: TablePrivilege,
    action: Option<&str>,
) -> Result<(), FlotillaError> {
    if decide(|s| s.rules.has_table_privilege(&s.user, &table.catalog, &table.schema, &table.table, privilege)) {
        return Ok(());
    }
    Err(match action {
        Some(action) => access_denied(format!("Cannot {action} {table}")),
        None => denied_table(privilege, table),
    })
}

/// Requires `SELECT` on every table a planning resolved, except `target` (a write's table,
/// checked for its own privilege).
pub(crate) fn check_reads(recorded: &BTreeSet<TableName>, target: Option<&TableName>) -> Result<(), FlotillaError> {
    for table in recorded.iter().filter(|t| Some(*t) != target) {
        check_table(table, TablePrivilege::Select, None)?;
    }
    Ok(())
}

/// Requires ownership of `catalog.schema` (create or drop it).
pub(crate) fn check_schema_owner(catalog: &str, schema: &str, action: &str) -> Result<(), FlotillaError> {
    if decide(|s| s.rules.is_schema_owner(&s.user, catalog, schema)) {
        return Ok(());
    }
    Err(access_denied(format!("Cannot {action} schema {catalog}.{schema}")))
}

/// Requires that the user may run queries at all, and set every session property they sent.
pub(crate) fn check_statement(properties: impl Iterator<Item = String>) -> Result<(), FlotillaError> {
    if !decide(|s| s.rules.query_access(&s.user, None, QueryAccess::Execute)) {
        return Err(access_denied("Cannot execute query"));
    }
    for property in properties {
        check_session_property(&property)?;
    }
    Ok(())
}

pub(crate) fn check_session_property(property: &str) -> Result<(), FlotillaError> {
    if decide(|s| s.rules.may_set_session_property(&s.user, property)) {
        return Ok(());
    }
    Err(access_denied(format!("Cannot set system session property {property}")))
}

pub(crate) fn check_procedure(name: &str) -> Result<(), FlotillaError> {
    let parts: Vec<&str> = name.splitn(3, '.').collect();
    let [catalog, schema, procedure] = parts.as_slice() else { return Ok(()) };
    if decide(|s| s.rules.may_execute_procedure(&s.user, catalog, schema, procedure)) {
        return Ok(());
    }
    Err(access_denied(format!("Cannot execute procedure {name}")))
}

/// The catalogs, filtered to what the statement's user may see.
#[derive(Debug)]
pub struct SecuredCatalogList {
    inner: Arc<dyn CatalogProviderList>,
}

impl SecuredCatalogList {
    pub fn new(inner: Arc<dyn CatalogProviderList>) -> Self {
        Self { inner }
    }
}

impl CatalogProviderList for SecuredCatalogList {
    fn register_catalog(&self, name: String, catalog: Arc<dyn CatalogProvider>) -> Option<Arc<dyn CatalogProvider>> {
        self.inner.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        self.inner.catalog_names().into_iter().filter(|name| catalog_visible(name)).collect()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        self.inner.catalog(name)
    }
}

/// A catalog whose listings show what the statement's user may see, and whose table
/// lookups are recorded for the read checks.
#[derive(Debug)]
pub struct SecuredCatalog {
    name: String,
    inner: Arc<dyn CatalogProvider>,
}

impl SecuredCatalog {
    pub fn new(name: String, inner: Arc<dyn CatalogProvider>) -> Self {
        Self { name, inner }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn inner(&self) -> &Arc<dyn CatalogProvider> {
        &self.inner
    }
}

impl CatalogProvider for SecuredCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names().into_iter().filter(|schema| schema_visible(&self.name, schema)).collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name)?;
        Some(Arc::new(SecuredSchema { catalog: self.name.clone(), name: name.to_string(), inner }))
    }
}

/// A schema of a [`SecuredCatalog`].
#[derive(Debug)]
pub struct SecuredSchema {
    catalog: String,
    name: String,
    inner: Arc<dyn SchemaProvider>,
}

impl SecuredSchema {
    pub fn inner(&self) -> &Arc<dyn SchemaProvider> {
        &self.inner
    }

    /// Keeps the names of `tables` the user may see.
    pub fn visible(&self, tables: Vec<String>) -> Vec<String> {
        tables.into_iter().filter(|table| table_visible(&self.catalog, &self.name, table)).collect()
    }
}

#[async_trait]
impl SchemaProvider for SecuredSchema {
    fn table_names(&self) -> Vec<String> {
        self.visible(self.inner.table_names())
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let table = self.inner.table(name).await?;
        if table.is_some() {
            record(TableName { catalog: self.catalog.clone(), schema: self.name.clone(), table: name.to_string() });
        }
        Ok(table)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        self.inner.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        self.inner.deregister_table(name)
    }
}
