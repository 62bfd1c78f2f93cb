//! The `system` catalog, as Trino tools expect it: `runtime.nodes` and `runtime.queries`
//! (from the node that plans the query, through [`RuntimeSource`]), Flotilla's
//! `runtime.worker_groups` and `runtime.warehouses` (the live workers by their labels, and
//! each warehouse's running and queued queries), `jdbc.*` for JDBC/ODBC
//! metadata calls, and `metadata.catalogs` / `metadata.table_comments`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use flotilla_proto::warehouses::WarehouseDefinition;

use super::information_schema::INFORMATION_SCHEMA;
use super::virtual_table::{optional_text, rows_to_table, text};

pub const SYSTEM_CATALOG: &str = "system";

/// A node as `system.runtime.nodes` lists it.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub node_id: String,
    pub http_uri: String,
    pub node_version: String,
    pub coordinator: bool,
    pub state: String,
    /// A worker's memory pool and what queries reserve in it now (none for other roles).
    pub memory_pool_bytes: Option<u64>,
    pub memory_reserved_bytes: Option<u64>,
    /// Where a worker belongs (`node.warehouse`, `node.worker-group`) and its load: tasks
    /// running, and CPU used by its process (a fraction of its machine). None for other roles.
    pub worker: Option<WorkerPlace>,
    /// Live (`active` or draining), as the resource managers see it.
    pub live: bool,
}

/// The workers a warehouse wants, for an external autoscaler: as many as it has while
/// nothing waits; with queries waiting, enough to run them too at the rate its workers
/// run queries now (one worker per waiting query without running ones).
fn desired_workers(workers: i64, running: i64, queued: i64) -> i64 {
    if queued == 0 {
        return workers;
    }
    if workers == 0 || running == 0 {
        return workers + queued;
    }
    (workers * (running + queued) + running - 1) / running
}

/// A worker's labels and load, for `system.runtime.worker_groups` and `warehouses`.
#[derive(Debug, Clone)]
pub struct WorkerPlace {
    pub warehouse: String,
    pub worker_group: String,
    pub running_tasks: u32,
    pub process_cpu_load: f64,
}

/// One worker group: the live workers announcing the same (warehouse, group) labels, or a
/// shared group (the load of the physical group it references).
#[derive(Debug, Default, Clone)]
struct GroupRow {
    kind: &'static str,
    referenced: Option<String>,
    workers: i64,
    running_tasks: i64,
    memory_pool_bytes: i64,
    memory_reserved_bytes: i64,
    cpu_load: f64,
}

/// Every worker group by (warehouse, group), sorted: the physical ones from the live
/// workers' labels and the definitions, and the definitions' shared ones.
fn worker_groups(nodes: &[NodeRow], definitions: &[WarehouseDefinition]) -> BTreeMap<(String, String), GroupRow> {
    let mut groups = BTreeMap::<(String, String), GroupRow>::new();
    for node in nodes.iter().filter(|n| n.live) {
        let Some(place) = &node.worker else { continue };
        let group = groups.entry((place.warehouse.clone(), place.worker_group.clone())).or_default();
        group.workers += 1;
        group.running_tasks += i64::from(place.running_tasks);
        group.memory_pool_bytes += node.memory_pool_bytes.unwrap_or_default() as i64;
        group.memory_reserved_bytes += node.memory_reserved_bytes.unwrap_or_default() as i64;
        group.cpu_load += place.process_cpu_load;
    }
    for group in groups.values_mut() {
        group.kind = "physical";
        group.cpu_load /= group.workers.max(1) as f64;
    }
    for warehouse in definitions {
        for group in &warehouse.worker_groups {
            let key = (warehouse.name.clone(), group.name.clone());
            let row = match &group.shared_from {
                None => groups.get(&key).cloned().unwrap_or(GroupRow { kind: "physical", ..Default::default() }),
                Some(from) => {
                    let physical = groups.get(&(from.warehouse.clone(), from.worker_group.clone())).cloned();
                    GroupRow {
                        kind: if group.lent { "lent" } else { "shared" },
                        referenced: Some(from.to_string()),
                        ..physical.unwrap_or_default()
                    }
                }
            };
            groups.insert(key, row);
        }
    }
    groups
}

/// A query as `system.runtime.queries` lists it.
#[derive(Debug, Clone)]
pub struct QueryRow {
    pub query_id: String,
    pub state: String,
    pub user: String,
    pub source: Option<String>,
    pub query: String,
    pub created: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub error_type: Option<String>,
    pub error_code: Option<String>,
    /// The warehouse the query runs in.
    pub warehouse: String,
}

/// Where the runtime tables get their rows: the coordinator implements it.
#[async_trait]
pub trait RuntimeSource: std::fmt::Debug + Send + Sync {
    fn nodes(&self) -> Vec<NodeRow>;
    fn queries(&self) -> Vec<QueryRow>;
    /// The warehouse definitions the cluster schedules by (none: every warehouse is the
    /// workers that announce it).
    fn warehouses(&self) -> Vec<WarehouseDefinition> {
        Vec::new()
    }
    /// Kills a running query of any coordinator of the cluster
    /// (`CALL system.runtime.kill_query`) on behalf of `user`, who must be the query's user
    /// or an admin (else PERMISSION_DENIED): it fails with `ADMINISTRATIVELY_KILLED`.
    async fn kill_query(
        &self,
        user: &str,
        query_id: &str,
        message: Option<&str>,
    ) -> std::result::Result<(), flotilla_proto::FlotillaError>;
}

type CatalogListing = Arc<Vec<(String, String, Arc<dyn CatalogProvider>)>>;

/// The `system` catalog.
#[derive(Debug)]
pub struct SystemCatalog {
    catalogs: CatalogListing,
    runtime: Arc<dyn RuntimeSource>,
}

impl SystemCatalog {
    pub fn new(catalogs: CatalogListing, runtime: Arc<dyn RuntimeSource>) -> Self {
        Self { catalogs, runtime }
    }
}

const SCHEMAS: &[(&str, &[&str])] = &[
    ("jdbc", &["catalogs", "schemas", "table_types", "tables"]),
    ("metadata", &["catalogs", "materialized_views", "table_comments"]),
    ("runtime", &["nodes", "queries", "warehouses", "worker_groups"]),
];

impl CatalogProvider for SystemCatalog {
    fn schema_names(&self) -> Vec<String> {
        SCHEMAS.iter().map(|(name, _)| name.to_string()).collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let (schema_name, tables) = SCHEMAS.iter().find(|(n, _)| *n == name)?;
        Some(Arc::new(SystemSchema {
            name: schema_name,
            tables,
            catalogs: self.catalogs.clone(),
            runtime: self.runtime.clone(),
        }))
    }
}

#[derive(Debug)]
struct SystemSchema {
    name: &'static str,
    tables: &'static [&'static str],
    catalogs: CatalogListing,
    runtime: Arc<dyn RuntimeSource>,
}

fn varchar(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn timestamp(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true)
}

fn timestamp_value(value: Option<DateTime<Utc>>) -> ScalarValue {
    ScalarValue::TimestampMillisecond(value.map(|v| v.timestamp_millis()), Some("UTC".into()))
}

impl SystemSchema {
    /// All catalog names, `system` included, sorted.
    fn catalog_names(&self) -> Vec<(String, String)> {
        let mut names: Vec<(String, String)> = self
            .catalogs
            .iter()
            .filter(|(name, _, _)| crate::access::catalog_visible(name))
            .map(|(name, connector, _)| (name.clone(), connector.clone()))
            .collect();
        names.push((SYSTEM_CATALOG.to_string(), SYSTEM_CATALOG.to_string()));
        names.sort();
        names
    }

    /// (catalog, schema, table, kind, comment) for every table of the non-system catalogs.
    async fn all_tables(&self) -> Result<Vec<(String, String, String, TableType, Option<String>)>> {
        let mut tables = Vec::new();
        for (catalog_name, _, catalog) in
            self.catalogs.iter().filter(|(name, _, _)| crate::access::catalog_visible(name))
        {
            for (schema_name, table_name, table) in super::catalog_tables(catalog.as_ref()).await? {
                let comment = super::files_table::comments(table.as_ref()).and_then(|(comment, _)| comment);
                tables.push((catalog_name.clone(), schema_name, table_name, table.table_type(), comment));
            }
        }
        Ok(tables)
    }

    async fn build(&self, table: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let (schema, rows): (SchemaRef, Vec<Vec<ScalarValue>>) = match (self.name, table) {
            ("runtime", "nodes") => (
                Arc::new(Schema::new(vec![
                    varchar("node_id"),
                    varchar("http_uri"),
                    varchar("node_version"),
                    Field::new("coordinator", DataType::Boolean, true),
                    varchar("state"),
                    Field::new("memory_pool_bytes", DataType::Int64, true),
                    Field::new("memory_reserved_bytes", DataType::Int64, true),
                ])),
                self.runtime
                    .nodes()
                    .into_iter()
                    .map(|n| {
                        vec![
                            text(n.node_id),
                            text(n.http_uri),
                            text(n.node_version),
                            ScalarValue::Boolean(Some(n.coordinator)),
                            text(n.state),
                            ScalarValue::Int64(n.memory_pool_bytes.map(|b| b as i64)),
                            ScalarValue::Int64(n.memory_reserved_bytes.map(|b| b as i64)),
                        ]
                    })
                    .collect(),
            ),
            ("runtime", "worker_groups") => (
                Arc::new(Schema::new(vec![
                    varchar("warehouse"),
                    varchar("worker_group"),
                    varchar("kind"),
                    varchar("referenced_group"),
                    Field::new("workers", DataType::Int64, false),
                    Field::new("running_tasks", DataType::Int64, false),
                    Field::new("memory_pool_bytes", DataType::Int64, false),
                    Field::new("memory_reserved_bytes", DataType::Int64, false),
                    Field::new("cpu_load", DataType::Float64, false),
                ])),
                worker_groups(&self.runtime.nodes(), &self.runtime.warehouses())
                    .into_iter()
                    .map(|((warehouse, group), row)| {
                        vec![
                            text(warehouse),
                            text(group),
                            text(row.kind),
                            optional_text(row.referenced),
                            ScalarValue::Int64(Some(row.workers)),
                            ScalarValue::Int64(Some(row.running_tasks)),
                            ScalarValue::Int64(Some(row.memory_pool_bytes)),
                            ScalarValue::Int64(Some(row.memory_reserved_bytes)),
                            ScalarValue::Float64(Some(row.cpu_load)),
                        ]
                    })
                    .collect(),
            ),
            ("runtime", "warehouses") => {
                let definitions = self.runtime.warehouses();
                let groups = worker_groups(&self.runtime.nodes(), &definitions);
                let mut warehouses = BTreeMap::<String, (i64, i64, i64, i64, i64)>::new();
                for definition in &definitions {
                    warehouses.entry(definition.name.clone()).or_default();
                }
                for ((warehouse, _), row) in &groups {
                    let entry = warehouses.entry(warehouse.clone()).or_default();
                    entry.0 += 1;
                    entry.1 += row.workers;
                    entry.2 += row.running_tasks;
                }
                for query in self.runtime.queries() {
                    let queued = query.state == "QUEUED";
                    let running = matches!(query.state.as_str(), "PLANNING" | "RUNNING");
                    if running || queued {
                        let entry = warehouses.entry(query.warehouse.clone()).or_default();
                        if running {
                            entry.3 += 1;
                        } else {
                            entry.4 += 1;
                        }
                    }
                }
                let definition = |name: &str| definitions.iter().find(|d| d.name == name);
                let limit = |value: Option<u32>| ScalarValue::Int64(value.map(i64::from));
                (
                    Arc::new(Schema::new(vec![
                        varchar("warehouse"),
                        varchar("type"),
                        Field::new("worker_groups", DataType::Int64, false),
                        Field::new("workers", DataType::Int64, false),
                        Field::new("running_tasks", DataType::Int64, false),
                        Field::new("running_queries", DataType::Int64, false),
                        Field::new("queued_queries", DataType::Int64, false),
                        Field::new("max_concurrent_queries", DataType::Int64, true),
                        Field::new("max_queued", DataType::Int64, true),
                        Field::new("desired_workers", DataType::Int64, false),
                    ])),
                    warehouses
                        .into_iter()
                        .map(|(name, (groups, workers, tasks, running, queued))| {
                            let defined = definition(&name);
                            vec![
                                optional_text(Some(name.clone())),
                                optional_text(defined.map(|d| d.kind.as_str())),
                                ScalarValue::Int64(Some(groups)),
                                ScalarValue::Int64(Some(workers)),
                                ScalarValue::Int64(Some(tasks)),
                                ScalarValue::Int64(Some(running)),
                                ScalarValue::Int64(Some(queued)),
                                limit(defined.and_then(|d| d.max_concurrent_queries)),
                                limit(defined.and_then(|d| d.max_queued)),
                                ScalarValue::Int64(Some(desired_workers(workers, running, queued))),
                            ]
                        })
                        .collect(),
                )
            }
            ("runtime", "queries") => (
                Arc::new(Schema::new(vec![
                    varchar("query_id"),
                    varchar("state"),
                    varchar("user"),
                    varchar("source"),
                    varchar("query"),
                    timestamp("created"),
                    timestamp("started"),
                    timestamp("end"),
                    varchar("error_type"),
                    varchar("error_code"),
                    varchar("warehouse"),
                ])),
                self.runtime
                    .queries()
                    .into_iter()
                    .filter(|q| crate::access::query_visible(&q.user))
                    .map(|q| {
                        vec![
                            text(q.query_id),
                            text(q.state),
                            text(q.user),
                            optional_text(q.source),
                            text(q.query),
                            timestamp_value(Some(q.created)),
                            timestamp_value(q.started),
                            timestamp_value(q.end),
                            optional_text(q.error_type),
                            optional_text(q.error_code),
                            text(q.warehouse),
                        ]
                    })
                    .collect(),
            ),
            ("jdbc", "catalogs") | ("metadata", "catalogs") => {
                let names = self.catalog_names();
                if self.name == "jdbc" {
                    (
                        Arc::new(Schema::new(vec![varchar("table_cat")])),
                        names.into_iter().map(|(name, _)| vec![text(name)]).collect(),
                    )
                } else {
                    (
                        Arc::new(Schema::new(vec![
                            varchar("catalog_name"),
                            varchar("connector_id"),
                            varchar("connector_name"),
                        ])),
                        names
                            .into_iter()
                            .map(|(name, connector)| vec![text(name.clone()), text(name), text(connector)])
                            .collect(),
                    )
                }
            }
            ("jdbc", "schemas") => {
                let mut rows = Vec::new();
                let visible = self.catalogs.iter().filter(|(name, _, _)| crate::access::catalog_visible(name));
                for (catalog_name, _, catalog) in visible {
                    let mut names = super::listing::schema_names(catalog.as_ref()).await;
                    names.push(INFORMATION_SCHEMA.to_string());
                    names.sort();
                    for name in names {
                        rows.push(vec![text(name), text(catalog_name.clone())]);
                    }
                }
                (Arc::new(Schema::new(vec![varchar("table_schem"), varchar("table_catalog")])), rows)
            }
            ("jdbc", "table_types") => {
                (Arc::new(Schema::new(vec![varchar("table_type")])), vec![vec![text("TABLE")], vec![text("VIEW")]])
            }
            ("jdbc", "tables") => {
                let rows = self
                    .all_tables()
                    .await?
                    .into_iter()
                    .map(|(catalog, schema, table, kind, comment)| {
                        let none = || optional_text(None::<String>);
                        let kind = if kind == TableType::View { "VIEW" } else { "TABLE" };
                        vec![
                            text(catalog),
                            text(schema),
                            text(table),
                            text(kind),
                            optional_text(comment),
                            none(),
                            none(),
                            none(),
                            none(),
                            none(),
                        ]
                    })
                    .collect();
                (
                    Arc::new(Schema::new(vec![
                        varchar("table_cat"),
                        varchar("table_schem"),
                        varchar("table_name"),
                        varchar("table_type"),
                        varchar("remarks"),
                        varchar("type_cat"),
                        varchar("type_schem"),
                        varchar("type_name"),
                        varchar("self_referencing_col_name"),
                        varchar("ref_generation"),
                    ])),
                    rows,
                )
            }
            // No connector has materialized views: Trino's columns, no rows (dbt-trino and
            // other tools join with it).
            ("metadata", "materialized_views") => (
                Arc::new(Schema::new(
                    [
                        "catalog_name",
                        "schema_name",
                        "name",
                        "storage_catalog",
                        "storage_schema",
                        "storage_table",
                        "freshness",
                        "owner",
                        "comment",
                        "definition",
                    ]
                    .map(varchar)
                    .to_vec(),
                )),
                Vec::new(),
            ),
            ("metadata", "table_comments") => {
                let rows = self
                    .all_tables()
                    .await?
                    .into_iter()
                    .map(|(catalog, schema, table, _, comment)| {
                        vec![text(catalog), text(schema), text(table), optional_text(comment)]
                    })
                    .collect();
                (
                    Arc::new(Schema::new(vec![
                        varchar("catalog_name"),
                        varchar("schema_name"),
                        varchar("table_name"),
                        varchar("comment"),
                    ])),
                    rows,
                )
            }
            _ => return Ok(None),
        };
        rows_to_table(schema, rows).map(Some)
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if !self.tables.contains(&name) {
            return Ok(None);
        }
        self.build(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains(&name)
    }
}
