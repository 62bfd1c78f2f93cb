//! Maintenance of `files` tables: compaction (`ALTER TABLE t EXECUTE optimize`, Trino's
//! syntax) and vacuum (`CALL catalog.system.vacuum('schema', 'table')`, Trino's Delta Lake
//! procedure).
//!
//! Compaction is a write like INSERT: it reads the table's small data files, writes them
//! again as files of about `files.target-file-size`, and commits one manifest version that
//! replaces the small files with the new ones (`files_table::commit`), applied to the
//! latest version, so INSERTs that commit meanwhile all stay; a concurrent compaction of the
//! same files makes the second one fail with `TRANSACTION_CONFLICT` and change nothing. It
//! is distributed like any write, so it runs in the table's write warehouse (see
//! [`crate::placement`]) on the workers the scheduler picks, and is run again elsewhere
//! when a worker dies (its uncommitted files are deleted).
//!
//! Vacuum deletes what no reader can need any more (`files_table::vacuum`): manifests
//! replaced more than `files.manifest-retention` ago and data files no remaining manifest
//! lists that are older than that (compacted-away files, files of writers that died).

use std::sync::Arc;

use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::sql::sqlparser::ast::Expr;
use flotilla_proto::access_control::TablePrivilege;
use flotilla_proto::{ErrorCode, FlotillaError};

use crate::access;
use crate::catalog::files::FilesCatalog;
use crate::catalog::files_table;
use crate::engine::{df_error, Engine, StatementResult};
use crate::memory::PeakMemoryPool;
use crate::procedures::bind_values;
use crate::progress::ScanCounters;
use crate::session::{SqlSession, TableName};
use crate::writes::{run, updated, writable};

/// Most files one compaction writes.
const MAX_OUTPUT_FILES: u64 = 256;

fn argument_error(message: String) -> FlotillaError {
    FlotillaError::new(ErrorCode::InvalidProcedureArgument, message)
}

/// `ALTER TABLE table EXECUTE procedure(arguments)`.
pub(crate) async fn alter_table_execute(
    engine: &Engine,
    session: &SqlSession,
    table: &[String],
    procedure: &str,
    arguments: &[(Option<String>, Expr)],
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    if procedure != "optimize" {
        return Err(FlotillaError::new(
            ErrorCode::ProcedureNotFound,
            format!("Table procedure '{procedure}' is not supported (only optimize)"),
        ));
    }
    let name = session.qualify(table)?;
    // Rewriting a table's files inserts and deletes the same rows.
    access::check_table(&name, TablePrivilege::Insert, Some("optimize"))?;
    access::check_table(&name, TablePrivilege::Delete, Some("optimize"))?;
    let files = writable(engine, &name.catalog, "table procedures")?.clone();
    let threshold = match bind_values(arguments, &["file_size_threshold"])?.remove(0) {
        Some(text) => {
            flotilla_proto::parse_data_size(&text).map_err(|e| argument_error(format!("file_size_threshold: {e}")))?
        }
        None => files.settings().target_file_size,
    };
    let rewritten = optimize(engine, session, &files, &name, threshold, memory.clone()).await?;
    updated("ALTER TABLE EXECUTE", rewritten, memory)
}

/// Rewrites the data files of `name` smaller than `threshold` into files of about the
/// catalog's target size; returns the rows rewritten (0 when fewer than two files are small).
async fn optimize(
    engine: &Engine,
    session: &SqlSession,
    files: &FilesCatalog,
    name: &TableName,
    threshold: u64,
    memory: Arc<PeakMemoryPool>,
) -> Result<u64, FlotillaError> {
    let table = files.open_table(&name.schema, &name.table).await?.ok_or_else(|| {
        FlotillaError::new(
            ErrorCode::TableNotFound,
            format!("Table '{name}' does not exist (or is not a table created through Flotilla)"),
        )
    })?;
    let small = table.small_files(threshold).await.map_err(df_error)?;
    if small.len() < 2 {
        return Ok(0);
    }
    let total: u64 = small.iter().map(|(_, size)| size).sum();
    let target = files.settings().target_file_size;
    let outputs = total.div_ceil(target).clamp(1, MAX_OUTPUT_FILES.min(small.len() as u64 - 1)) as usize;
    tracing::info!(table = %name, files = small.len(), bytes = total, outputs, "compacting small data files");
    let rewriting = Arc::new(table.rewriting(small.into_iter().map(|(file, _)| file).collect()));
    let reference =
        datafusion::common::TableReference::full(name.catalog.as_str(), name.schema.as_str(), name.table.as_str());
    let plan = LogicalPlanBuilder::scan(reference.clone(), provider_as_source(rewriting.clone()), None)
        .and_then(|scan| scan.build())
        .and_then(|scan| {
            LogicalPlanBuilder::insert_into(scan, reference, provider_as_source(rewriting), InsertOp::Append)
        })
        .and_then(|insert| insert.build())
        .map_err(df_error)?;
    let scans = Arc::new(ScanCounters::default());
    let state = engine.session_state_counting(session, memory, scans)?;
    // One output file per partition of the scan.
    let mut config = state.config().clone();
    config.options_mut().execution.target_partitions = outputs;
    let state =
        datafusion::execution::session_state::SessionStateBuilder::new_from_existing(state).with_config(config).build();
    run(engine, state, session, &plan).await
}

/// `CALL catalog.system.vacuum(schema_name, table_name[, retention])`: `retention` (a
/// duration, at least the catalog's `files.manifest-retention`, which it defaults to).
pub(crate) async fn vacuum(
    engine: &Engine,
    catalog: &str,
    values: Vec<Option<String>>,
) -> Result<files_table::Vacuumed, FlotillaError> {
    let mut values = values.into_iter();
    let mut required = |parameter: &str| {
        values
            .next()
            .flatten()
            .ok_or_else(|| argument_error(format!("Required procedure argument '{parameter}' is missing")))
    };
    let schema = required("schema_name")?.to_lowercase();
    let table = required("table_name")?.to_lowercase();
    let files = writable(engine, catalog, "vacuum")?;
    let minimum = files.settings().manifest_retention;
    let retention = match values.next().flatten() {
        Some(text) => {
            let retention =
                flotilla_proto::parse_duration(&text).map_err(|e| argument_error(format!("retention: {e}")))?;
            if retention < minimum {
                return Err(argument_error(format!(
                    "Retention specified ({text}) is shorter than the minimum retention configured in the catalog \
                     (files.manifest-retention = {}s)",
                    minimum.as_secs()
                )));
            }
            retention
        }
        None => minimum,
    };
    let name = TableName { catalog: catalog.to_string(), schema, table };
    access::check_table(&name, TablePrivilege::Delete, Some("vacuum"))?;
    let table = files.open_table(&name.schema, &name.table).await?.ok_or_else(|| {
        FlotillaError::new(
            ErrorCode::TableNotFound,
            format!("Table '{name}' does not exist (or is not a table created through Flotilla)"),
        )
    })?;
    let id = table.meta().id.clone();
    let vacuumed = files_table::vacuum(table.store(), table.dir(), &id, retention).await.map_err(df_error)?;
    tracing::info!(table = %name, manifests = vacuumed.manifests, data_files = vacuumed.data_files, "vacuumed");
    Ok(vacuumed)
}
