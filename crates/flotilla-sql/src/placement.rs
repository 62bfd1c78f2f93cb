//! The warehouse a statement's tables ask for, when neither its session nor a routing rule
//! names one (design document 004, ByConity's scheduling flow): a write (INSERT, CREATE TABLE
//! AS, a table's compaction) runs in its table's write warehouse — the table's
//! `write_warehouse` property, else its catalog's `files.write-warehouse` — and a read in
//! the read warehouse of the first table it names that has one (`read_warehouse`, else
//! `files.read-warehouse`). Only `files` catalogs carry warehouses.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{visit_relations, ObjectName, SetExpr, Statement, TableObject};

use crate::engine::Engine;
use crate::session::SqlSession;
use crate::statement::{parse_statement, TrinoStatement};
use crate::writes::{parts, table_properties};

/// How a statement uses a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Read,
    Write,
}

/// Most table names of one statement looked up for a warehouse (each may cost a store
/// request).
const MAX_LOOKUPS: usize = 16;

impl Engine {
    /// The warehouse the tables of `sql` ask for (see the module doc); `None` when they ask
    /// for none, or the statement cannot be read (planning it reports why).
    pub async fn table_warehouse(&self, session: &SqlSession, sql: &str) -> Option<String> {
        let mut statement = parse_statement(sql).ok()?;
        // The statement a prepared one, or EXPLAIN ANALYZE, runs.
        for _ in 0..2 {
            statement = match statement {
                TrinoStatement::Execute { name, .. } => {
                    parse_statement(session.prepared_statements.get(&name)?).ok()?
                }
                TrinoStatement::ExecuteImmediate { sql, .. } | TrinoStatement::Explain { analyze: true, sql, .. } => {
                    parse_statement(&sql).ok()?
                }
                other => other,
            };
        }
        match statement {
            TrinoStatement::AlterTableExecute { table, .. } => self.warehouse_of(session, &table, Use::Write).await,
            TrinoStatement::Other(statement) => match *statement {
                Statement::Insert(insert) => match &insert.table {
                    TableObject::TableName(name) => self.warehouse_of(session, &parts(name), Use::Write).await,
                    _ => None,
                },
                Statement::CreateTable(create) if create.query.is_some() => {
                    let property = table_properties(&create.table_options).ok()?;
                    if let Some((_, warehouse)) = property.into_iter().find(|(key, _)| key == "write_warehouse") {
                        return Some(warehouse);
                    }
                    let name = session.qualify(&parts(&create.name)).ok()?;
                    self.writable.get(&name.catalog)?.settings().write_warehouse.clone()
                }
                Statement::Query(query) => {
                    if matches!(*query.body, SetExpr::Values(_)) {
                        return None;
                    }
                    let mut names: Vec<Vec<String>> = Vec::new();
                    let _ = visit_relations(&query, |name: &ObjectName| {
                        let name = parts(name);
                        if !names.contains(&name) {
                            names.push(name);
                        }
                        match names.len() < MAX_LOOKUPS {
                            true => ControlFlow::Continue(()),
                            false => ControlFlow::Break(()),
                        }
                    });
                    for name in names {
                        if let Some(warehouse) = self.warehouse_of(session, &name, Use::Read).await {
                            return Some(warehouse);
                        }
                    }
                    None
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The warehouse of table `name` (as written, qualified with the session's catalog and
    /// schema) for `usage`: its own property, else its catalog's.
    async fn warehouse_of(&self, session: &SqlSession, name: &[String], usage: Use) -> Option<String> {
        let name = session.qualify(name).ok()?;
        let files = self.writable.get(&name.catalog)?;
        let meta = files.table_meta(&name.schema, &name.table).await.ok().flatten();
        let (own, default) = match usage {
            Use::Read => (meta.and_then(|m| m.read_warehouse), &files.settings().read_warehouse),
            Use::Write => (meta.and_then(|m| m.write_warehouse), &files.settings().write_warehouse),
        };
        own.or_else(|| default.clone())
    }
}
