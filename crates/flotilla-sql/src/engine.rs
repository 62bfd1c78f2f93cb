//! The engine: runs one statement for one session and hands back a stream of Arrow batches,
//! plus the session changes the statement made (for the protocol's response headers).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, TableProvider};
use datafusion::common::TableReference;
use datafusion::execution::memory_pool::UnboundedMemoryPool;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{collect, execute_stream, ExecutionPlan};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{visit_expressions, visit_expressions_mut, Expr, Statement, Value};
use datafusion_distributed::{display_plan_ascii, explain_analyze, DistributedMetricsFormat, SessionStateBuilderExt};
use flotilla_proto::access_control::{access_denied, AccessControl};
use flotilla_proto::{ErrorCode, FlotillaError};

use crate::access;
use crate::catalog::{Catalogs, RuntimeSource};
use crate::distributed::{is_distributable, with_flotilla_operators, Distributor};
use crate::error::from_datafusion;
use crate::functions::trino_functions;
use crate::memory::PeakMemoryPool;
use crate::progress::ScanCounters;
use crate::session::{session_property, SqlSession};
use crate::show;
use crate::statement::{parse_prepared, parse_statement, TrinoStatement};
use crate::types::TrinoTypePlanner;

/// Names DataFusion resolves unqualified tables against when the session has no catalog or
/// schema; errors naming them become Trino's `MISSING_CATALOG_NAME`/`MISSING_SCHEMA_NAME`.
const UNSET_CATALOG: &str = "$no_session_catalog";
const UNSET_SCHEMA: &str = "$no_session_schema";

/// How a statement changed the client's session; the protocol turns these into
/// `X-Trino-Set-*` response headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionChanges {
    pub set_catalog: Option<String>,
    pub set_schema: Option<String>,
    pub set_session: Vec<(String, String)>,
    pub clear_session: Vec<String>,
    pub added_prepare: Vec<(String, String)>,
    pub deallocated_prepare: Vec<String>,
    pub started_transaction_id: Option<String>,
    pub clear_transaction_id: bool,
}

/// A statement that has been planned and started.
pub struct StatementResult {
    pub schema: SchemaRef,
    pub stream: SendableRecordBatchStream,
    /// Trino's `updateType` for statements that are not queries (`SET SESSION`, `USE`, ...).
    pub update_type: Option<String>,
    pub update_count: Option<i64>,
    pub changes: SessionChanges,
    /// The physical plan, for progress figures; absent for metadata statements.
    pub plan: Option<Arc<dyn ExecutionPlan>>,
    pub memory: Arc<PeakMemoryPool>,
    /// Input read by the connectors so far.
    pub scans: Arc<ScanCounters>,
    /// Running it again returns the same rows in the same order
    /// ([`crate::ordering::totally_ordered`]); false for everything but queries.
    pub totally_ordered: bool,
}

impl std::fmt::Debug for StatementResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatementResult")
            .field("schema", &self.schema)
            .field("update_type", &self.update_type)
            .field("changes", &self.changes)
            .finish_non_exhaustive()
    }
}

/// Plans and runs statements over a fixed set of catalogs.
#[derive(Clone)]
pub struct Engine {
    catalogs: Arc<dyn CatalogProviderList>,
    base: SessionState,
    /// Places distributable statements on workers; without one, everything runs here.
    distributor: Option<Arc<dyn Distributor>>,
    /// The cluster this engine runs in (for `system.runtime` procedures).
    pub(crate) runtime: Arc<dyn RuntimeSource>,
    /// The catalogs statements may write to.
    pub(crate) writable: Arc<BTreeMap<String, Arc<crate::catalog::files::FilesCatalog>>>,
    pub(crate) blackholes: Arc<BTreeMap<String, Arc<crate::catalog::blackhole::BlackholeCatalog>>>,
    /// The object stores the catalogs' files are read and written through.
    object_stores: Arc<dyn ObjectStoreRegistry>,
    /// `access-control.name=file`: the rules every statement is checked against.
    access: Option<Arc<AccessControl>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("catalogs", &self.catalogs.catalog_names()).finish()
    }
}

/// Plans stored views' SQL as a query of this engine would be, in the view's catalog and
/// schema.
fn view_planner(base: SessionState) -> crate::catalog::files::ViewPlanner {
    Arc::new(move |sql: String, catalog: String, schema: String| {
        let mut state = base.clone();
        Box::pin(async move {
            let options = state.config_mut().options_mut();
            options.catalog.default_catalog = catalog;
            options.catalog.default_schema = schema;
            let mut statement = match parse_statement(&sql) {
                Ok(TrinoStatement::Other(statement)) if matches!(*statement, Statement::Query(_)) => *statement,
                Ok(_) => return Err(datafusion::error::DataFusionError::Plan("a view must be a query".into())),
                Err(error) => return Err(datafusion::error::DataFusionError::Plan(error.message)),
            };
            crate::rewrite::name_unnamed_columns(&mut statement);
            crate::rewrite::type_decimal_literals(&mut statement);
            state.statement_to_plan(DFStatement::Statement(Box::new(statement))).await
        })
    })
}

pub(crate) fn df_error(error: datafusion::error::DataFusionError) -> FlotillaError {
    from_datafusion(&error)
}

impl Engine {
    pub fn new(catalogs: &Catalogs, runtime: Arc<dyn RuntimeSource>) -> Self {
        let catalog_list = catalogs.provider_list(runtime.clone());
        let mut config = SessionConfig::new()
            .with_information_schema(false)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(UNSET_CATALOG, UNSET_SCHEMA);
        let options = config.options_mut();
        options.sql_parser.support_varchar_with_length = true;
        options.sql_parser.map_string_types_to_utf8view = false;
        options.execution.time_zone = Some("UTC".to_string());
        // Uncorrelated scalar subqueries become joins in one process too, as in distributed
        // statements (datafusion-distributed turns the option off): one form to plan and
        // check (`single_row`, `shared_aggregate`). DataFusion's own form types the
        // subquery's value with its column's nullability, so a subquery of no row over a
        // non-nullable column failed ("declared as non-nullable but contains null values").
        options.optimizer.enable_physical_uncorrelated_scalar_subquery = false;
        // DataFusion's physical optimizer rules, with better estimates of partly analysable
        // filters and selective joins moved down to the tables they filter before its join
        // selection reads the estimates, the build sides of joins over semi and anti joins
        // decided again by rows right after it, and last the filters' conjuncts in their
        // cheapest order, join filters on scans' rows and decimal arithmetic without checked
        // 128-bit multiplications.
        let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
        let at = rules.iter().position(|rule| rule.name() == "join_selection").unwrap_or(0);
        rules.insert(at, Arc::new(crate::selectivity::EstimateAnalysableConjuncts));
        rules.insert(at + 1, Arc::new(crate::join_order::SinkSelectiveJoins));
        rules.insert(at + 3, Arc::new(crate::join_sides::BuildSemiJoinsByRows));
        rules.push(Arc::new(crate::conjuncts::EvaluateCheapConjunctsFirst));
        rules.push(Arc::new(crate::join_filters::FilterRowsByJoinFilters::default()));
        rules.push(Arc::new(crate::decimal::DecimalArithmetic));
        // DataFusion's logical optimizer rules. Around its `scalar_subquery_to_join`: before
        // it, scalar subqueries that may return several rows checked to return one; after
        // it, a scalar subquery over a grouped result the query also reads computed from
        // that result once.
        let mut logical = datafusion::optimizer::Optimizer::new().rules;
        let at = logical.iter().position(|rule| rule.name() == "scalar_subquery_to_join").unwrap_or(logical.len());
        logical.insert((at + 1).min(logical.len()), Arc::new(crate::shared_aggregate::ScalarSubqueryAsWindow));
        logical.insert(at, Arc::new(crate::single_row::EnforceSingleRow));
        let mut base = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_catalog_list(catalog_list.clone())
            .with_type_planner(Arc::new(TrinoTypePlanner))
            .with_physical_optimizer_rules(rules)
            .with_optimizer_rules(logical)
            .build();
        for function in trino_functions() {
            // Replacing a built-in of the same name (version) is the point.
            let _ = datafusion::execution::FunctionRegistry::register_udf(&mut base, function);
        }
        let writable = catalogs.writable();
        for files in writable.values() {
            files.set_view_planner(view_planner(base.clone()));
        }
        Self {
            catalogs: catalog_list,
            base,
            distributor: None,
            runtime,
            writable: Arc::new(writable),
            blackholes: Arc::new(catalogs.blackholes()),
            object_stores: catalogs.object_stores(),
            access: None,
        }
    }

    /// Checks every statement against `rules` ([`crate::access`]).
    pub fn with_access_control(mut self, rules: Option<Arc<AccessControl>>) -> Self {
        self.access = rules;
        self
    }

    /// Runs statements that read only worker-readable tables across the workers that
    /// `distributor` picks.
    pub fn with_distributor(mut self, distributor: Arc<dyn Distributor>) -> Self {
        self.distributor = Some(distributor);
        self
    }

    /// The object stores the catalogs' files are read and written through (what this
    /// node's workers need too).
    pub fn object_stores(&self) -> &Arc<dyn ObjectStoreRegistry> {
        &self.object_stores
    }

    pub fn catalog_list(&self) -> &Arc<dyn CatalogProviderList> {
        &self.catalogs
    }

    /// A DataFusion session for one statement of `session`.
    fn session_state(&self, session: &SqlSession, memory: Arc<PeakMemoryPool>) -> Result<SessionState, FlotillaError> {
        self.session_state_counting(session, memory, Arc::new(ScanCounters::default()))
    }

    pub(crate) fn session_state_counting(
        &self,
        session: &SqlSession,
        memory: Arc<PeakMemoryPool>,
        scans: Arc<ScanCounters>,
    ) -> Result<SessionState, FlotillaError> {
        // Parquet footers stay cached across statements, as in a DataFusion context that
        // lives on (each entry is checked against its file's size and modification time);
        // listings and statistics are taken afresh by each statement. The planner sizes
        // Parquet scans' tasks from them too (`distributed::ParquetFooters`).
        let footers = self.base.runtime_env().cache_manager.get_file_metadata_cache();
        let mut config = self
            .base
            .config()
            .clone()
            .with_extension(scans)
            .with_extension(Arc::new(crate::distributed::ParquetFooters(footers.clone())));
        let options = config.options_mut();
        options.catalog.default_catalog = session.catalog.clone().unwrap_or_else(|| UNSET_CATALOG.to_string());
        options.catalog.default_schema = session.schema.clone().unwrap_or_else(|| UNSET_SCHEMA.to_string());
        if let Some(zone) = &session.time_zone {
            options.execution.time_zone = Some(zone.clone());
        }
        let partitions: usize = session.property("task_concurrency")?.parse().map_err(|_| {
            FlotillaError::new(ErrorCode::InvalidSessionProperty, "task_concurrency must be a positive integer")
        })?;
        options.execution.target_partitions = partitions;
        // Planned for this process; a distributed statement divides the budget by its tasks.
        crate::distributed::set_broadcast_budget(options, 1);
        let caches = datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
            .with_file_metadata_cache(Some(footers));
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .with_memory_pool(memory)
            .with_object_store_registry(self.object_stores.clone())
            .build_arc()
            .map_err(df_error)?;
        let mut state = SessionStateBuilder::new_from_existing(self.base.clone())
            .with_config(config)
            .with_runtime_env(runtime)
            .build();
        // Fixes now()/current_timestamp for the statement, as DataFusion's own SQL entry does.
        state.mark_start_execution();
        Ok(state)
    }

    /// Parses, plans and starts one statement.
    pub async fn execute(&self, session: &SqlSession, sql: &str) -> Result<StatementResult, FlotillaError> {
        session.validate()?;
        let scope = self.access.as_ref().map(|control| access::AccessScope::new(&session.user, control.rules()));
        access::within(scope, async {
            access::check_statement(session.properties.keys().cloned())?;
            let statement = parse_statement(sql)?;
            self.execute_parsed(session, statement).await
        })
        .await
    }

    fn execute_parsed<'a>(
        &'a self,
        session: &'a SqlSession,
        statement: TrinoStatement,
    ) -> futures::future::BoxFuture<'a, Result<StatementResult, FlotillaError>> {
        Box::pin(async move {
            let memory = Arc::new(PeakMemoryPool::new(Arc::new(UnboundedMemoryPool::default())));
            match statement {
                TrinoStatement::Other(statement) => match *statement {
                    Statement::Call(procedure) => {
                        crate::procedures::call(self, session, &procedure).await?;
                        done("CALL", SessionChanges::default(), memory)
                    }
                    statement @ (Statement::CreateSchema { .. }
                    | Statement::Drop { .. }
                    | Statement::CreateTable(_)
                    | Statement::CreateView(_)
                    | Statement::AlterTable(_)
                    | Statement::Comment { .. }
                    | Statement::ShowCreate { .. }
                    | Statement::Insert(_)) => crate::writes::execute(self, session, statement, memory).await,
                    statement => self.run_query(session, statement, memory).await,
                },
                TrinoStatement::AlterTableExecute { table, procedure, arguments } => {
                    crate::maintenance::alter_table_execute(self, session, &table, &procedure, &arguments, memory).await
                }
                TrinoStatement::Explain { analyze, logical, sql } => {
                    self.explain(session, &sql, analyze, logical, memory).await
                }
                TrinoStatement::ShowCatalogs { like } => rows(show::catalogs(&self.catalogs, like.as_deref())?, memory),
                TrinoStatement::ShowSchemas { catalog, like } => {
                    rows(show::schemas(&self.catalogs, session, catalog.as_deref(), like.as_deref()).await?, memory)
                }
                TrinoStatement::ShowTables { schema, like } => {
                    rows(show::tables(&self.catalogs, session, &schema, like.as_deref()).await?, memory)
                }
                TrinoStatement::ShowColumns { table } => {
                    let name = session.qualify(&table)?;
                    if !access::table_visible(&name.catalog, &name.schema, &name.table) {
                        return Err(access_denied(format!("Cannot show columns of table {name}")));
                    }
                    let provider = self.resolve_table(session, &table).await?;
                    rows(show::columns(provider.as_ref()), memory)
                }
                TrinoStatement::ShowFunctions { like } => rows(show::functions(&self.base, like.as_deref())?, memory),
                TrinoStatement::ShowSession { like } => rows(show::session(session, like.as_deref())?, memory),
                TrinoStatement::SetSession { name, value } => {
                    access::check_session_property(&name)?;
                    set_session(name, &value, memory)
                }
                TrinoStatement::ResetSession { name } => {
                    session_property(&name)?;
                    done("RESET SESSION", SessionChanges { clear_session: vec![name], ..Default::default() }, memory)
                }
                TrinoStatement::Use { catalog, schema } => self.use_schema(session, catalog, schema, memory).await,
                TrinoStatement::Prepare { name, sql } => {
                    done("PREPARE", SessionChanges { added_prepare: vec![(name, sql)], ..Default::default() }, memory)
                }
                TrinoStatement::Deallocate { name } => {
                    prepared(session, &name)?;
                    done("DEALLOCATE", SessionChanges { deallocated_prepare: vec![name], ..Default::default() }, memory)
                }
                // A prepared statement is never itself EXECUTE (parse_prepared refuses it), so
                // this recursion is one level deep.
                TrinoStatement::Execute { name, parameters } => {
                    let sql = prepared(session, &name)?.to_string();
                    self.execute_parsed(session, bind_parameters(parse_prepared(&sql)?, &parameters)?).await
                }
                TrinoStatement::ExecuteImmediate { sql, parameters } => {
                    self.execute_parsed(session, bind_parameters(parse_prepared(&sql)?, &parameters)?).await
                }
                TrinoStatement::DescribeOutput { name } => self.describe_output(session, &name, memory).await,
                TrinoStatement::DescribeInput { name } => self.describe_input(session, &name, memory).await,
                TrinoStatement::StartTransaction => {
                    let id = format!("{:032x}", rand::random::<u128>());
                    let changes = SessionChanges { started_transaction_id: Some(id), ..Default::default() };
                    done("START TRANSACTION", changes, memory)
                }
                // Every statement autocommits: the transaction id is only echoed.
                TrinoStatement::Commit => end_transaction("COMMIT", memory),
                TrinoStatement::Rollback => end_transaction("ROLLBACK", memory),
            }
        })
    }

    /// `USE [catalog.]schema`: the schema must exist.
    async fn use_schema(
        &self,
        session: &SqlSession,
        catalog: Option<String>,
        schema: String,
        memory: Arc<PeakMemoryPool>,
    ) -> Result<StatementResult, FlotillaError> {
        let catalog_name = match catalog {
            Some(catalog) => catalog,
            None => session.catalog_or_error()?,
        };
        let provider = self.catalogs.catalog(&catalog_name).ok_or_else(|| catalog_not_found(&catalog_name))?;
        if crate::catalog::listing::schema(provider.as_ref(), &schema).await.is_none() {
            return Err(schema_not_found(&catalog_name, &schema));
        }
        let changes =
            SessionChanges { set_catalog: Some(catalog_name), set_schema: Some(schema), ..Default::default() };
        done("USE", changes, memory)
    }

    /// `DESCRIBE OUTPUT name`: the columns a prepared statement returns.
    async fn describe_output(
        &self,
        session: &SqlSession,
        name: &str,
        memory: Arc<PeakMemoryPool>,
    ) -> Result<StatementResult, FlotillaError> {
        let sql = prepared(session, name)?.to_string();
        let schema = self.output_schema(session, &sql, memory.clone()).await?;
        rows(show::describe_output(&schema), memory)
    }

    /// `DESCRIBE INPUT name`: the parameters a prepared statement takes, with their types.
    async fn describe_input(
        &self,
        session: &SqlSession,
        name: &str,
        memory: Arc<PeakMemoryPool>,
    ) -> Result<StatementResult, FlotillaError> {
        let sql = prepared(session, name)?.to_string();
        let statement = numbered_placeholders(parse_prepared(&sql)?)?;
        let TrinoStatement::Other(statement) = statement else {
            return rows(show::describe_input(&BTreeMap::new()), memory);
        };
        let state = self.session_state(session, memory.clone())?;
        let plan = self.plan_logical(&state, session, *statement).await?;
        let types = plan.get_parameter_types().map_err(df_error)?;
        rows(show::describe_input(&types.into_iter().collect()), memory)
    }

    pub(crate) async fn plan_logical(
        &self,
        state: &SessionState,
        session: &SqlSession,
        mut statement: Statement,
    ) -> Result<datafusion::logical_expr::LogicalPlan, FlotillaError> {
        crate::rewrite::name_unnamed_columns(&mut statement);
        crate::rewrite::type_decimal_literals(&mut statement);
        if !matches!(statement, Statement::Query(_) | Statement::Insert(_)) {
            let kind = statement.to_string().split_whitespace().take(2).collect::<Vec<_>>().join(" ").to_uppercase();
            return Err(FlotillaError::not_supported(format!("This statement is not supported: {kind}")));
        }
        let target = match &statement {
            Statement::Insert(insert) => crate::writes::insert_target(session, insert),
            _ => None,
        };
        let statement = DFStatement::Statement(Box::new(statement));
        check_qualified(state, session, &statement)?;
        let (planned, read) = access::recording(state.statement_to_plan(statement)).await;
        match planned {
            Ok(plan) => {
                access::check_reads(&read, target.as_ref())?;
                Ok(plan)
            }
            Err(error) => Err(self.refine_not_found(df_error(error), session).await),
        }
    }

    /// DataFusion reports a missing catalog or schema as a missing table; name what is
    /// actually missing, as Trino does.
    async fn refine_not_found(&self, error: FlotillaError, session: &SqlSession) -> FlotillaError {
        if error.code != ErrorCode::TableNotFound {
            return error;
        }
        let Some(name) = error.message.split('\'').nth(1) else { return error };
        let parts: Vec<&str> = name.split('.').collect();
        let (catalog, schema) = match parts.as_slice() {
            [catalog, schema, _] => (Some(catalog.to_string()), Some(schema.to_string())),
            [schema, _] => (session.catalog.clone(), Some(schema.to_string())),
            _ => (session.catalog.clone(), session.schema.clone()),
        };
        let (Some(catalog), Some(schema)) = (catalog, schema) else { return error };
        match self.catalogs.catalog(&catalog) {
            None => catalog_not_found(&catalog),
            Some(provider) => match crate::catalog::listing::schema(provider.as_ref(), &schema).await {
                None => schema_not_found(&catalog, &schema),
                Some(_) => error,
            },
        }
    }

    /// Plans a query for execution: across the workers when it reads only tables they can
    /// read and a distributor is set, else here. Returns the session it must run in.
    async fn plan_physical(
        &self,
        state: SessionState,
        session: &SqlSession,
        statement: Statement,
    ) -> Result<(SessionState, Arc<dyn ExecutionPlan>), FlotillaError> {
        let logical = self.plan_logical(&state, session, statement).await?;
        self.physical_from_logical(state, session, &logical).await
    }

    /// [`Engine::plan_physical`] from a logical plan.
    pub(crate) async fn physical_from_logical(
        &self,
        state: SessionState,
        session: &SqlSession,
        logical: &datafusion::logical_expr::LogicalPlan,
    ) -> Result<(SessionState, Arc<dyn ExecutionPlan>), FlotillaError> {
        let (state, local) = match &self.distributor {
            Some(distributor) if is_distributable(logical) => {
                match distributor.distribute(SessionStateBuilder::new_from_existing(state.clone()), session)? {
                    Some(mut builder) => {
                        if let Some(config) = builder.config() {
                            crate::distributed::plan_joins_for_tasks(config);
                        }
                        crate::distributed::with_join_rules(&mut builder);
                        (with_flotilla_operators(builder).with_distributed_planner().build(), Some(state))
                    }
                    None => (state, None),
                }
            }
            _ => (state, None),
        };
        // Optimized once: the distributed session differs from the local one only in what it
        // plans physically (its join thresholds, rules and planner), so a statement planned
        // again for this process below reuses the optimized logical plan.
        let optimized = state.optimize(logical).map_err(df_error)?;
        let mut plan = state.query_planner().create_physical_plan(&optimized, &state).await.map_err(df_error)?;
        let Some(local) = local else { return Ok((state, plan)) };
        if !crate::distributed::runs_distributed(&plan).map_err(df_error)? {
            // Every stage came out as one task in this process: planned again as one process
            // plans, since the distributed session planned its joins for tasks on workers
            // (LEFT/ANTI joins partitioned where one process collects them: TPC-H q22
            // repartitioned all 1.5M orders in the coordinator).
            let plan = local.query_planner().create_physical_plan(&optimized, &local).await.map_err(df_error)?;
            return Ok((local, plan));
        }
        plan = crate::distributed::read_small_build_sides_in_place(plan).map_err(df_error)?;
        let workers: Vec<String> =
            crate::distributed::statement_workers(state.config()).iter().map(|url| url.to_string()).collect();
        plan = crate::cross_stage_filters::share_join_filters_across_stages(plan, &workers).map_err(df_error)?;
        Ok((state, plan))
    }

    async fn run_query(
        &self,
        session: &SqlSession,
        statement: Statement,
        memory: Arc<PeakMemoryPool>,
    ) -> Result<StatementResult, FlotillaError> {
        let scans = Arc::new(ScanCounters::default());
        let state = self.session_state_counting(session, memory.clone(), scans.clone())?;
        let logical = self.plan_logical(&state, session, statement).await?;
        let totally_ordered = crate::ordering::totally_ordered(&logical);
        let (state, plan) = self.physical_from_logical(state, session, &logical).await?;
        let stream = execute_stream(plan.clone(), state.task_ctx()).map_err(df_error)?;
        Ok(StatementResult {
            schema: plan.schema(),
            stream,
            update_type: None,
            update_count: None,
            changes: SessionChanges::default(),
            plan: Some(plan),
            memory,
            scans,
            totally_ordered,
        })
    }

    async fn output_schema(
        &self,
        session: &SqlSession,
        sql: &str,
        memory: Arc<PeakMemoryPool>,
    ) -> Result<SchemaRef, FlotillaError> {
        let TrinoStatement::Other(statement) = numbered_placeholders(parse_prepared(sql)?)? else {
            return Ok(Arc::new(Schema::empty()));
        };
        let state = self.session_state(session, memory)?;
        let plan = self.plan_logical(&state, session, *statement).await?;
        Ok(Arc::new(plan.schema().as_arrow().clone()))
    }

    async fn explain(
        &self,
        session: &SqlSession,
        sql: &str,
        analyze: bool,
        logical_only: bool,
        memory: Arc<PeakMemoryPool>,
    ) -> Result<StatementResult, FlotillaError> {
        let TrinoStatement::Other(statement) = parse_statement(sql)? else {
            return Err(FlotillaError::not_supported("EXPLAIN supports queries only"));
        };
        let state = self.session_state(session, memory.clone())?;
        let text = if logical_only {
            let logical = self.plan_logical(&state, session, *statement).await?;
            state.optimize(&logical).map_err(df_error)?.display_indent().to_string()
        } else {
            let (state, physical) = self.plan_physical(state, session, *statement).await?;
            if analyze {
                collect(physical.clone(), state.task_ctx()).await.map_err(df_error)?;
                explain_analyze(physical, DistributedMetricsFormat::Aggregated).await.map_err(df_error)?
            } else {
                display_plan_ascii(physical.as_ref(), false)
            }
        };
        let schema = Arc::new(Schema::new(vec![Field::new("Query Plan", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![text])) as ArrayRef])
            .map_err(|e| FlotillaError::internal(e.to_string()))?;
        rows(batch, memory)
    }

    pub(crate) async fn resolve_table(
        &self,
        session: &SqlSession,
        name: &[String],
    ) -> Result<Arc<dyn TableProvider>, FlotillaError> {
        let crate::session::TableName { catalog, schema, table } = session.qualify(name)?;
        let catalog_provider = self.catalogs.catalog(&catalog).ok_or_else(|| catalog_not_found(&catalog))?;
        let schema_provider = crate::catalog::listing::schema(catalog_provider.as_ref(), &schema)
            .await
            .ok_or_else(|| schema_not_found(&catalog, &schema))?;
        schema_provider.table(&table).await.map_err(df_error)?.ok_or_else(|| {
            FlotillaError::new(ErrorCode::TableNotFound, format!("Table '{catalog}.{schema}.{table}' does not exist"))
        })
    }
}

pub(crate) fn catalog_not_found(name: &str) -> FlotillaError {
    FlotillaError::new(ErrorCode::CatalogNotFound, format!("Catalog '{name}' not found"))
}

pub(crate) fn schema_not_found(catalog: &str, schema: &str) -> FlotillaError {
    FlotillaError::new(ErrorCode::SchemaNotFound, format!("Schema '{catalog}.{schema}' does not exist"))
}

/// `SET SESSION name = literal`: a known property and a valid value.
fn set_session(name: String, value: &Expr, memory: Arc<PeakMemoryPool>) -> Result<StatementResult, FlotillaError> {
    let property = session_property(&name)?;
    let value = literal_text(value).ok_or_else(|| {
        FlotillaError::new(ErrorCode::InvalidSessionProperty, format!("value of {name} must be a literal"))
    })?;
    property.validate(&value)?;
    done("SET SESSION", SessionChanges { set_session: vec![(name, value)], ..Default::default() }, memory)
}

/// `COMMIT` or `ROLLBACK`.
fn end_transaction(kind: &str, memory: Arc<PeakMemoryPool>) -> Result<StatementResult, FlotillaError> {
    done(kind, SessionChanges { clear_transaction_id: true, ..Default::default() }, memory)
}

/// Trino's "must be specified" errors, before planning: a table the statement names without
/// the catalog (or schema) when the session has none.
fn check_qualified(state: &SessionState, session: &SqlSession, statement: &DFStatement) -> Result<(), FlotillaError> {
    if session.catalog.is_some() && session.schema.is_some() {
        return Ok(());
    }
    for reference in state.resolve_table_references(statement).map_err(df_error)? {
        let (needs_catalog, needs_schema) = match reference {
            TableReference::Full { .. } => (false, false),
            TableReference::Partial { .. } => (true, false),
            TableReference::Bare { .. } => (true, true),
        };
        if needs_catalog && session.catalog.is_none() {
            return Err(crate::session::missing_catalog());
        }
        if needs_schema && session.schema.is_none() {
            return Err(crate::session::missing_schema());
        }
    }
    Ok(())
}

fn prepared<'a>(session: &'a SqlSession, name: &str) -> Result<&'a str, FlotillaError> {
    session
        .prepared_statements
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| FlotillaError::new(ErrorCode::NotFound, format!("Prepared statement not found: {name}")))
}

/// The text of a literal (`'1h'`, `4`, `true`) for `SET SESSION`.
pub(crate) fn literal_text(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.to_string()),
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        Expr::UnaryOp { op, expr } => literal_text(expr).map(|v| format!("{op}{v}")),
        _ => None,
    }
}

fn is_positional_placeholder(expr: &Expr) -> bool {
    matches!(expr, Expr::Value(v) if matches!(&v.value, Value::Placeholder(p) if p == "?"))
}

/// Replaces each `?` of a statement, in order, with the given expressions.
pub fn bind_parameters(statement: TrinoStatement, parameters: &[Expr]) -> Result<TrinoStatement, FlotillaError> {
    let TrinoStatement::Other(mut statement) = statement else {
        if parameters.is_empty() {
            return Ok(statement);
        }
        return Err(FlotillaError::new(ErrorCode::InvalidParameterUsage, "only queries take parameters"));
    };
    let mut expected = 0usize;
    let _ = visit_expressions(statement.as_ref(), |expr| {
        if is_positional_placeholder(expr) {
            expected += 1;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    if expected != parameters.len() {
        return Err(FlotillaError::new(
            ErrorCode::InvalidParameterUsage,
            format!("Incorrect number of parameters: expected {expected} but found {}", parameters.len()),
        ));
    }
    let mut next = parameters.iter();
    let _ = visit_expressions_mut(statement.as_mut(), |expr| {
        if is_positional_placeholder(expr) {
            if let Some(parameter) = next.next() {
                *expr = Expr::Nested(Box::new(parameter.clone()));
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    // Each parameter and the statement were checked apart; together they may nest deeper.
    let statement = TrinoStatement::Other(statement);
    crate::statement::check_nesting(&statement)?;
    Ok(statement)
}

/// Renames `?` placeholders to `$1..$n`, so DataFusion can infer their types.
fn numbered_placeholders(statement: TrinoStatement) -> Result<TrinoStatement, FlotillaError> {
    let TrinoStatement::Other(mut statement) = statement else { return Ok(statement) };
    let mut index = 0;
    let _ = visit_expressions_mut(statement.as_mut(), |expr| {
        if let Expr::Value(value) = expr {
            if let Value::Placeholder(p) = &mut value.value {
                if p == "?" {
                    index += 1;
                    *p = format!("${index}");
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    Ok(TrinoStatement::Other(statement))
}

pub(crate) fn rows(batch: RecordBatch, memory: Arc<PeakMemoryPool>) -> Result<StatementResult, FlotillaError> {
    let schema = batch.schema();
    let stream = MemoryStream::try_new(vec![batch], schema.clone(), None).map_err(df_error)?;
    Ok(StatementResult {
        schema,
        stream: Box::pin(stream),
        update_type: None,
        update_count: None,
        changes: SessionChanges::default(),
        plan: None,
        memory,
        scans: Arc::new(ScanCounters::default()),
        totally_ordered: false,
    })
}

/// A statement that only changes the session: Trino answers with one `result` row, `true`.
pub(crate) fn done(
    update_type: &str,
    changes: SessionChanges,
    memory: Arc<PeakMemoryPool>,
) -> Result<StatementResult, FlotillaError> {
    let schema = Arc::new(Schema::new(vec![Field::new("result", DataType::Boolean, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(BooleanArray::from(vec![true])) as ArrayRef])
        .map_err(|e| FlotillaError::internal(e.to_string()))?;
    let mut result = rows(batch, memory)?;
    result.update_type = Some(update_type.to_string());
    result.changes = changes;
    Ok(result)
}
