//! Statements that change a catalog: CREATE SCHEMA, DROP SCHEMA, CREATE TABLE [AS],
//! INSERT, DROP TABLE. Only `files` catalogs can be written (`catalog::files`); others answer
//! NOT_SUPPORTED naming their connector.
//!
//! Writes are distributed like queries: `INSERT` and `CREATE TABLE AS` plan the query,
//! then [`FilesTable::insert_into`](crate::catalog::files_table::FilesTable) puts a writer
//! over every partition of it (on the workers when the query reads worker tables) and one
//! commit on the coordinator. `CREATE TABLE AS` writes a new table under its own id and
//! publishes it (creates its entry) only once the commit is done, so a failed or cancelled
//! one leaves nothing readers see.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, TableType};
use datafusion::physical_plan::execute_stream;
use datafusion::sql::sqlparser::ast::{
    AlterTable, AlterTableOperation, CommentObject, CreateTable, CreateTableOptions, CreateView, Expr, Insert,
    ObjectName, ObjectType, RenameTableNameKind, SchemaName, ShowCreateObject, SqlOption, Statement, TableObject,
    Value,
};
use flotilla_proto::access_control::TablePrivilege;
use flotilla_proto::{ErrorCode, FlotillaError};
use futures::TryStreamExt;

use crate::access;
use crate::catalog::blackhole::{BlackholeCatalog, Generation};
use crate::catalog::files::{FilesCatalog, ViewDefinition};
use crate::catalog::files_table::TableMeta;
use crate::catalog::view_expansion;
use crate::engine::{df_error, done, rows, Engine, SessionChanges, StatementResult};
use crate::memory::PeakMemoryPool;
use crate::progress::ScanCounters;
use crate::session::{SqlSession, TableName};

/// A name's parts, lowercased as Trino folds unquoted identifiers.
pub(crate) fn parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) if ident.quote_style.is_some() => ident.value.clone(),
            Some(ident) => ident.value.to_lowercase(),
            None => part.to_string().to_lowercase(),
        })
        .collect()
}

/// `[catalog.]schema` with the session's catalog.
fn schema_name(session: &SqlSession, name: &ObjectName) -> Result<(String, String), FlotillaError> {
    session.qualify_schema(&parts(name))
}

/// `[[catalog.]schema.]table` with the session's catalog and schema.
fn table_name(session: &SqlSession, name: &ObjectName) -> Result<TableName, FlotillaError> {
    session.qualify(&parts(name))
}

/// The table an `INSERT` writes to (its reads are checked apart from it).
pub(crate) fn insert_target(session: &SqlSession, insert: &Insert) -> Option<TableName> {
    match &insert.table {
        TableObject::TableName(name) => table_name(session, name).ok(),
        _ => None,
    }
}

/// The catalog to write to, or why it cannot be written.
pub(crate) fn writable<'a>(
    engine: &'a Engine,
    catalog: &str,
    action: &str,
) -> Result<&'a Arc<FilesCatalog>, FlotillaError> {
    if let Some(files) = engine.writable.get(catalog) {
        return Ok(files);
    }
    if engine.catalog_list().catalog(catalog).is_none() {
        return Err(FlotillaError::new(ErrorCode::CatalogNotFound, format!("Catalog '{catalog}' not found")));
    }
    Err(FlotillaError::not_supported(format!(
        "Catalog '{catalog}' does not support {action} (only files catalogs are writable)"
    )))
}

/// A statement's result as Trino reports writes: one `rows` column, and the count.
pub(crate) fn updated(
    update_type: &str,
    count: u64,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    let schema = Arc::new(Schema::new(vec![Field::new("rows", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![count as i64])) as ArrayRef])
        .map_err(|e| FlotillaError::internal(e.to_string()))?;
    let mut result = rows(batch, memory)?;
    result.update_type = Some(update_type.to_string());
    result.update_count = Some(count as i64);
    Ok(result)
}

/// `SHOW CREATE TABLE`'s text, as Trino writes it.
fn create_table_text(name: &str, table: &dyn datafusion::catalog::TableProvider) -> String {
    let (comment, column_comments) = crate::catalog::files_table::comments(table).unwrap_or_default();
    let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
    let columns: Vec<String> = table
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let mut line =
                format!("   {} {}", field.name(), crate::catalog::information_schema_type_name(field.data_type()));
            if let Some(Some(comment)) = column_comments.get(i) {
                line.push_str(&format!(" COMMENT {}", quote(comment)));
            }
            line
        })
        .collect();
    let mut text = format!("CREATE TABLE {name} (\n{}\n)", columns.join(",\n"));
    if let Some(comment) = comment {
        text.push_str(&format!("\nCOMMENT {}", quote(&comment)));
    }
    if let Some(meta) =
        (table as &dyn std::any::Any).downcast_ref::<crate::catalog::files_table::FilesTable>().map(|t| t.meta())
    {
        let mut properties = vec![format!("   format = '{}'", meta.format.to_uppercase())];
        for (key, value) in [("read_warehouse", &meta.read_warehouse), ("write_warehouse", &meta.write_warehouse)] {
            if let Some(value) = value {
                properties.push(format!("   {key} = {}", quote(value)));
            }
        }
        text.push_str(&format!("\nWITH (\n{}\n)", properties.join(",\n")));
    }
    text
}

/// `WITH (name = value, ...)` as (lowercase name, value text) pairs.
pub(crate) fn table_properties(options: &CreateTableOptions) -> Result<Vec<(String, String)>, FlotillaError> {
    let list: &[SqlOption] = match options {
        CreateTableOptions::None => &[],
        CreateTableOptions::With(list)
        | CreateTableOptions::Options(list)
        | CreateTableOptions::Plain(list)
        | CreateTableOptions::TableProperties(list) => list,
    };
    list.iter()
        .map(|option| {
            let SqlOption::KeyValue { key, value } = option else {
                return Err(FlotillaError::new(
                    ErrorCode::InvalidTableProperty,
                    format!("Unsupported table property: {option}"),
                ));
            };
            let text = match value {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(text) => text.clone(),
                    other => other.to_string(),
                },
                other => other.to_string(),
            };
            Ok((key.value.to_lowercase(), text))
        })
        .collect()
}

/// The table properties of a files table: `format` (`PARQUET` by default, `CSV`, `JSON`),
/// `read_warehouse` and `write_warehouse`; others are refused.
fn files_table_properties(options: &CreateTableOptions, meta: &mut TableMeta) -> Result<(), FlotillaError> {
    let invalid = |message: String| FlotillaError::new(ErrorCode::InvalidTableProperty, message);
    for (key, value) in table_properties(options)? {
        match key.as_str() {
            "format" => {
                let text = value.to_lowercase();
                if !["parquet", "csv", "json"].contains(&text.as_str()) {
                    return Err(invalid(format!("Unsupported format '{text}': use 'PARQUET', 'CSV' or 'JSON'")));
                }
                meta.format = text;
            }
            "read_warehouse" | "write_warehouse" => {
                if !flotilla_proto::config::valid_label(&value) {
                    return Err(invalid(format!(
                        "'{value}' is not a valid warehouse name (letters, digits, '-', '_' and '.')"
                    )));
                }
                match key.as_str() {
                    "read_warehouse" => meta.read_warehouse = Some(value),
                    _ => meta.write_warehouse = Some(value),
                }
            }
            other => {
                return Err(invalid(format!(
                    "Catalog does not support table property '{other}' (only format, read_warehouse, write_warehouse)"
                )))
            }
        }
    }
    Ok(())
}

/// Runs a statement that writes, or reads what writes made (`SHOW CREATE`): one call per
/// statement kind.
pub(crate) async fn execute(
    engine: &Engine,
    session: &SqlSession,
    statement: Statement,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    match statement {
        Statement::CreateSchema { schema_name, if_not_exists, .. } => {
            create_schema(engine, session, schema_name, if_not_exists, memory).await
        }
        Statement::Drop { object_type: ObjectType::Schema, if_exists, names, cascade, .. } => {
            drop_schema(engine, session, names, if_exists, cascade, memory).await
        }
        Statement::Drop {
            object_type: object_type @ (ObjectType::Table | ObjectType::View), if_exists, names, ..
        } => drop_relations(engine, session, names, if_exists, object_type == ObjectType::View, memory).await,
        Statement::Drop { object_type, .. } => {
            Err(FlotillaError::not_supported(format!("DROP {object_type} is not supported")))
        }
        Statement::AlterTable(alter) => alter_table(engine, session, alter, memory).await,
        Statement::CreateView(view) => create_view(engine, session, view, memory).await,
        Statement::CreateTable(create) => create_table(engine, session, create, memory).await,
        Statement::Comment { object_type, object_name, comment, .. } => {
            set_comment(engine, session, object_type, object_name, comment, memory).await
        }
        Statement::ShowCreate { obj_type, obj_name } => show_create(engine, session, obj_type, obj_name, memory).await,
        Statement::Insert(insert) => insert_into(engine, session, insert, memory).await,
        other => Err(FlotillaError::not_supported(format!("This statement is not supported: {other}"))),
    }
}

/// `CREATE SCHEMA`.
async fn create_schema(
    engine: &Engine,
    session: &SqlSession,
    name: SchemaName,
    if_not_exists: bool,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    let name = match name {
        SchemaName::Simple(name) | SchemaName::NamedAuthorization(name, _) => name,
        SchemaName::UnnamedAuthorization(_) => {
            return Err(FlotillaError::not_supported("CREATE SCHEMA needs a schema name"))
        }
    };
    let (catalog, schema) = schema_name(session, &name)?;
    access::check_schema_owner(&catalog, &schema, "create")?;
    match engine.blackholes.get(&catalog) {
        Some(blackhole) => blackhole.create_schema(&catalog, &schema, if_not_exists)?,
        None => writable(engine, &catalog, "creating schemas")?.create_schema(&catalog, &schema, if_not_exists).await?,
    };
    done("CREATE SCHEMA", SessionChanges::default(), memory)
}

/// `DROP SCHEMA` (only an empty one).
async fn drop_schema(
    engine: &Engine,
    session: &SqlSession,
    names: Vec<ObjectName>,
    if_exists: bool,
    cascade: bool,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    if cascade {
        return Err(FlotillaError::not_supported("DROP SCHEMA ... CASCADE is not supported"));
    }
    for name in &names {
        let (catalog, schema) = schema_name(session, name)?;
        access::check_schema_owner(&catalog, &schema, "drop")?;
        match engine.blackholes.get(&catalog) {
            Some(blackhole) => blackhole.drop_schema(&catalog, &schema, if_exists)?,
            None => writable(engine, &catalog, "dropping schemas")?.drop_schema(&catalog, &schema, if_exists).await?,
        };
    }
    done("DROP SCHEMA", SessionChanges::default(), memory)
}

/// `DROP TABLE` or, with `views`, `DROP VIEW`.
async fn drop_relations(
    engine: &Engine,
    session: &SqlSession,
    names: Vec<ObjectName>,
    if_exists: bool,
    views: bool,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    let (what, update_type) = if views { ("dropping views", "DROP VIEW") } else { ("dropping tables", "DROP TABLE") };
    for name in &names {
        let name = table_name(session, name)?;
        let action = if views { "drop view" } else { "drop table" };
        access::check_table(&name, TablePrivilege::Ownership, Some(action))?;
        if let (Some(blackhole), false) = (engine.blackholes.get(&name.catalog), views) {
            blackhole.drop_table(&name, if_exists)?;
            continue;
        }
        let TableName { catalog, schema, table } = name;
        let files = writable(engine, &catalog, what)?;
        match views {
            true => files.drop_view(&catalog, &schema, &table, if_exists).await?,
            false => files.drop_table(&catalog, &schema, &table, if_exists).await?,
        };
    }
    done(update_type, SessionChanges::default(), memory)
}

/// `ALTER TABLE ... RENAME TO`.
async fn alter_table(
    engine: &Engine,
    session: &SqlSession,
    alter: AlterTable,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    let [AlterTableOperation::RenameTable { table_name: RenameTableNameKind::To(to) | RenameTableNameKind::As(to) }] =
        alter.operations.as_slice()
    else {
        return Err(FlotillaError::not_supported("Only ALTER TABLE ... RENAME TO is supported"));
    };
    let TableName { catalog, schema, table } = table_name(session, &alter.name)?;
    let TableName { catalog: to_catalog, schema: to_schema, table: to_table } = match parts(to).as_slice() {
        [table] => TableName { catalog: catalog.clone(), schema: schema.clone(), table: table.clone() },
        _ => table_name(session, to)?,
    };
    if to_catalog != catalog {
        return Err(FlotillaError::not_supported("Table rename across catalogs is not supported"));
    }
    let from = TableName { catalog: catalog.clone(), schema: schema.clone(), table: table.clone() };
    let to = TableName { catalog: catalog.clone(), schema: to_schema.clone(), table: to_table.clone() };
    if access::check_table(&from, TablePrivilege::Ownership, None).is_err()
        || access::check_table(&to, TablePrivilege::Ownership, None).is_err()
    {
        return Err(flotilla_proto::access_control::access_denied(format!("Cannot rename table from {from} to {to}")));
    }
    writable(engine, &catalog, "renaming tables")?
        .rename_table(&catalog, (&schema, &table), (&to_schema, &to_table), alter.if_exists)
        .await?;
    done("RENAME TABLE", SessionChanges::default(), memory)
}

/// `CREATE [OR REPLACE] VIEW`.
async fn create_view(
    engine: &Engine,
    session: &SqlSession,
    view: CreateView,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    if view.materialized || !view.columns.is_empty() || view.if_not_exists {
        return Err(FlotillaError::not_supported("Only CREATE [OR REPLACE] VIEW name AS query is supported"));
    }
    let view_name = table_name(session, &view.name)?;
    access::check_table(&view_name, TablePrivilege::Ownership, Some("create view"))?;
    let TableName { catalog, schema, table: name } = view_name;
    let files = writable(engine, &catalog, "creating views")?;
    // The query must plan now; its names resolve later as they do now. It is planned
    // as the view itself would be, so a view that reads itself (directly or through
    // other views) is refused with VIEW_IS_RECURSIVE.
    let state = engine.session_state_counting(session, memory.clone(), Arc::new(ScanCounters::default()))?;
    let planning = async {
        let query = Statement::Query(view.query.clone());
        engine.plan_logical(&state, session, query).await.map_err(view_expansion::carried)
    };
    view_expansion::expand(format!("{catalog}.{schema}.{name}"), planning).await.map_err(df_error)?;
    let definition = ViewDefinition {
        id: crate::catalog::files_table::new_id(),
        sql: view.query.to_string(),
        catalog: session.catalog.clone().unwrap_or_else(|| catalog.clone()),
        schema: session.schema.clone().unwrap_or_else(|| schema.clone()),
    };
    files.create_view(&catalog, &schema, &name, &definition, view.or_replace).await?;
    done("CREATE VIEW", SessionChanges::default(), memory)
}

/// `COMMENT ON TABLE | COLUMN`.
async fn set_comment(
    engine: &Engine,
    session: &SqlSession,
    object_type: CommentObject,
    object_name: ObjectName,
    comment: Option<String>,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    let (table_ref, column) = match object_type {
        CommentObject::Table => (object_name.clone(), None),
        CommentObject::Column => {
            let mut name = object_name.clone();
            let column = name.0.pop().map(|part| parts(&ObjectName(vec![part])).remove(0));
            (name, column)
        }
        other => return Err(FlotillaError::not_supported(format!("COMMENT ON {other} is not supported"))),
    };
    let target = table_name(session, &table_ref)?;
    let action = if column.is_some() { "comment column of table" } else { "comment table" };
    access::check_table(&target, TablePrivilege::Ownership, Some(action))?;
    let TableName { catalog, schema, table } = target;
    writable(engine, &catalog, "comments")?.set_comment(&catalog, &schema, &table, column.as_deref(), comment).await?;
    done("COMMENT", SessionChanges::default(), memory)
}

/// `SHOW CREATE TABLE | VIEW`.
async fn show_create(
    engine: &Engine,
    session: &SqlSession,
    obj_type: ShowCreateObject,
    obj_name: ObjectName,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    let target = table_name(session, &obj_name)?;
    access::check_table(&target, TablePrivilege::Ownership, Some("show create table for"))?;
    let TableName { catalog, schema, table } = target;
    let provider = engine.resolve_table(session, &[catalog.clone(), schema.clone(), table.clone()]).await?;
    let name = format!("{catalog}.{schema}.{table}");
    let (column, text) = match (obj_type, provider.table_type()) {
        (ShowCreateObject::View, TableType::View) | (ShowCreateObject::Table, TableType::View) => {
            let sql = provider.get_table_definition().unwrap_or_default().to_string();
            ("Create View", format!("CREATE VIEW {name} AS\n{sql}"))
        }
        (ShowCreateObject::Table, _) => ("Create Table", create_table_text(&name, provider.as_ref())),
        (ShowCreateObject::View, _) => {
            return Err(FlotillaError::new(
                ErrorCode::NotSupported,
                format!("Relation '{name}' is a table, not a view"),
            ))
        }
        (other, _) => return Err(FlotillaError::not_supported(format!("SHOW CREATE {other} is not supported"))),
    };
    let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![text])) as ArrayRef])
        .map_err(|e| FlotillaError::internal(e.to_string()))?;
    rows(batch, memory)
}

/// `INSERT INTO ... VALUES | SELECT`.
async fn insert_into(
    engine: &Engine,
    session: &SqlSession,
    insert: Insert,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    // Tables Flotilla did not create (plain directories of files) have no manifest to
    // commit to: writing into them could not be made whole.
    if let TableObject::TableName(name) = &insert.table {
        let target = table_name(session, name)?;
        access::check_table(&target, TablePrivilege::Insert, None)?;
        let TableName { catalog, schema, table } = target;
        if !engine.blackholes.contains_key(&catalog) {
            writable(engine, &catalog, "inserts")?;
        }
        let provider = engine.resolve_table(session, &[catalog.clone(), schema.clone(), table.clone()]).await?;
        if !provider.is::<crate::catalog::files_table::FilesTable>()
            && !provider.is::<crate::catalog::blackhole::BlackholeTable>()
        {
            return Err(FlotillaError::not_supported(format!(
                "Cannot insert into '{catalog}.{schema}.{table}': only tables created through Flotilla can be written"
            )));
        }
    }
    let statement = Statement::Insert(insert);
    let scans = Arc::new(ScanCounters::default());
    let state = engine.session_state_counting(session, memory.clone(), scans)?;
    let logical = engine.plan_logical(&state, session, statement).await?;
    let count = run(engine, state, session, &logical).await?;
    updated("INSERT", count, memory)
}

/// Runs a write's plan to the end; returns the rows written.
pub(crate) async fn run(
    engine: &Engine,
    state: datafusion::execution::session_state::SessionState,
    session: &SqlSession,
    logical: &LogicalPlan,
) -> Result<u64, FlotillaError> {
    let (state, plan) = engine.physical_from_logical(state, session, logical).await?;
    let batches: Vec<RecordBatch> =
        execute_stream(plan, state.task_ctx()).map_err(df_error)?.try_collect().await.map_err(df_error)?;
    Ok(batches
        .iter()
        .filter_map(|b| {
            b.column_by_name("count")?.as_any().downcast_ref::<UInt64Array>().map(|c| c.iter().flatten().sum::<u64>())
        })
        .sum())
}

async fn create_table(
    engine: &Engine,
    session: &SqlSession,
    create: CreateTable,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    if create.or_replace || create.temporary || create.external || create.like.is_some() {
        return Err(FlotillaError::not_supported(
            "Only CREATE TABLE [IF NOT EXISTS] name (columns) | AS query is supported",
        ));
    }
    let name = table_name(session, &create.name)?;
    access::check_table(&name, TablePrivilege::Ownership, Some("create table"))?;
    if let Some(blackhole) = engine.blackholes.get(&name.catalog).cloned() {
        return create_blackhole_table(engine, session, create, &blackhole, name, memory).await;
    }
    let TableName { catalog, schema, table } = name;
    let files = writable(engine, &catalog, "creating tables")?.clone();
    let mut meta = TableMeta::new("parquet", &Schema::empty());
    files_table_properties(&create.table_options, &mut meta)?;
    // Trino reports both forms as CREATE TABLE (with the rows written for AS).
    let update_type = "CREATE TABLE";
    if files.table_exists(&catalog, &schema, &table).await? {
        return match create.if_not_exists {
            true => updated(update_type, 0, memory),
            false => Err(FlotillaError::new(
                ErrorCode::TableAlreadyExists,
                format!("Table '{catalog}.{schema}.{table}' already exists"),
            )),
        };
    }
    let scans = Arc::new(ScanCounters::default());
    let state = engine.session_state_counting(session, memory.clone(), scans)?;
    let (arrow_schema, query) = new_table_columns(engine, session, &state, &create).await?;
    let meta = TableMeta { columns: TableMeta::new(&meta.format, &arrow_schema).columns, ..meta };
    let pending = files.new_table(&catalog, &schema, &table, meta).await?;
    let Some(logical) = query else {
        pending.publish().await?;
        return updated(update_type, 0, memory);
    };
    let target = Arc::new(pending.table().await.map_err(df_error)?);
    let insert = LogicalPlanBuilder::insert_into(logical, table.as_str(), provider_as_source(target), InsertOp::Append)
        .and_then(|b| b.build())
        .map_err(df_error)?;
    let count = run(engine, state, session, &insert).await?;
    pending.publish().await?;
    updated(update_type, count, memory)
}

/// A new table's columns: from its column list (DataFusion's own planning of the statement
/// gives the Arrow schema), or from its query, with the query's plan.
async fn new_table_columns(
    engine: &Engine,
    session: &SqlSession,
    state: &datafusion::execution::session_state::SessionState,
    create: &CreateTable,
) -> Result<(Schema, Option<LogicalPlan>), FlotillaError> {
    let Some(query) = create.query.clone() else {
        let mut columns_only = create.clone();
        columns_only.table_options = CreateTableOptions::None;
        let plan = state
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(Statement::CreateTable(
                columns_only,
            ))))
            .await
            .map_err(df_error)?;
        let arrow_schema = plan.schema().as_arrow().clone();
        if arrow_schema.fields().is_empty() {
            return Err(FlotillaError::new(ErrorCode::MissingColumnName, "A table needs at least one column"));
        }
        return Ok((arrow_schema, None));
    };
    let logical = engine.plan_logical(state, session, Statement::Query(query)).await?;
    let arrow_schema = logical.schema().as_arrow().clone();
    if let Some(position) = arrow_schema.fields().iter().position(|f| f.name().starts_with("_col")) {
        return Err(FlotillaError::new(
            ErrorCode::MissingColumnName,
            format!("Column name not specified at position {}", position + 1),
        ));
    }
    Ok((arrow_schema, Some(logical)))
}

/// `CREATE TABLE` in a blackhole catalog: the columns and Trino's blackhole properties; with
/// a query, its rows are counted and dropped.
async fn create_blackhole_table(
    engine: &Engine,
    session: &SqlSession,
    create: CreateTable,
    blackhole: &BlackholeCatalog,
    name: TableName,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    let generation = Generation::from_properties(&table_properties(&create.table_options)?)?;
    let state = engine.session_state_counting(session, memory.clone(), Arc::new(ScanCounters::default()))?;
    let (arrow_schema, query) = new_table_columns(engine, session, &state, &create).await?;
    if !blackhole.create_table(&name, Arc::new(arrow_schema), generation, create.if_not_exists)? {
        return updated("CREATE TABLE", 0, memory);
    }
    let Some(logical) = query else { return updated("CREATE TABLE", 0, memory) };
    let target =
        engine.resolve_table(session, &[name.catalog.clone(), name.schema.clone(), name.table.clone()]).await?;
    let insert =
        LogicalPlanBuilder::insert_into(logical, name.table.as_str(), provider_as_source(target), InsertOp::Append)
            .and_then(|b| b.build())
            .map_err(df_error)?;
    let count = run(engine, state, session, &insert).await?;
    updated("CREATE TABLE", count, memory)
}
