//! The `files` connector: tables kept as Parquet, CSV or JSON files under one root — a
//! directory every node sees at the same path, or an S3 bucket (AWS or S3-compatible, such
//! as MinIO) — the way Trino's Hive connector reads a warehouse directory, but without a
//! metastore: the directories (object name prefixes) are the metadata.
//!
//! ```text
//!   files.root/                    etc/catalog/lake.properties:
//!     sales/            schema       connector.name=files
//!       orders/         table        files.root=/data/lake   (or s3://bucket/prefix,
//!         part-0.parquet                                      with s3.endpoint=... )
//!         part-1.parquet
//!       regions.csv     table (one file)
//! ```
//!
//! A table is a directory of files of one format (by extension: `.parquet`, `.csv` with a
//! header row, `.json` with one object per line) or a single such file; its columns are
//! inferred from the files. Scans are DataFusion listing-table scans, so the distributed
//! planner splits their files across the workers, which read them through the same store.
//!
//! Flotilla writes tables and views too (CREATE SCHEMA, CREATE TABLE [AS], INSERT, DROP,
//! CREATE VIEW, ...): those are described by an entry in their directory's `_flotilla/`
//! folder, and every change to them commits by creating one object that must not exist yet
//! ([`super::files_table`]), so readers only ever see whole, committed data, and of two
//! racing creations of one name exactly one wins. All I/O goes through [`super::files_store`].

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionStateBuilder;
use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;

use flotilla_proto::{ErrorCode, FlotillaError};

mod ddl;

pub use ddl::PendingTable;

use super::files_store::{self, Root};
use super::files_table::{self, Entry, FilesTable, RevisionError, TableMeta};
use super::{view_expansion, CatalogError, Properties};

/// The file formats a table may have, by file extension.
const FORMATS: [&str; 3] = ["parquet", "csv", "json"];

pub(super) fn format_of(extension: &str) -> Option<Arc<dyn FileFormat>> {
    match extension {
        "parquet" => Some(Arc::new(ParquetFormat::default())),
        "csv" => Some(Arc::new(CsvFormat::default().with_has_header(true))),
        "json" => Some(Arc::new(JsonFormat::default())),
        _ => None,
    }
}

/// A name as Trino would show it: lowercase letters, digits and `_`, not starting with a
/// digit. Entries named otherwise (hidden files, `_SUCCESS`, `_flotilla`, ...) are not
/// tables or schemas.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The table format of a file, by its extension.
fn extension(file_name: &str) -> Option<&'static str> {
    let (_, extension) = file_name.rsplit_once('.')?;
    FORMATS.into_iter().find(|f| *f == extension)
}

/// Plans a view's SQL in its catalog and schema (set by the engine, which owns the SQL
/// dialect and the catalogs the view may read).
pub type ViewPlanner = Arc<
    dyn Fn(String, String, String) -> futures::future::BoxFuture<'static, Result<datafusion::logical_expr::LogicalPlan>>
        + Send
        + Sync,
>;

/// A stored view: its SQL and the catalog and schema its names resolve in.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ViewDefinition {
    /// This incarnation of the view (its entry's revisions carry it).
    pub id: String,
    pub sql: String,
    pub catalog: String,
    pub schema: String,
}

/// What `CREATE SCHEMA` leaves in the schema's directory (object stores have no empty
/// directories).
const SCHEMA_MARKER: &str = "schema";

fn schema_marker(schema_dir: &Path) -> Path {
    schema_dir.clone().join(files_table::META_DIR).join(SCHEMA_MARKER)
}

/// What a files catalog's properties set besides its store.
#[derive(Debug, Clone, PartialEq)]
pub struct FilesSettings {
    /// `files.read-warehouse`: where queries reading the catalog's tables run when nothing
    /// else (session, routing rules, the table's `read_warehouse`) names a warehouse.
    pub read_warehouse: Option<String>,
    /// `files.write-warehouse`: the same for INSERT, CREATE TABLE AS and compaction.
    pub write_warehouse: Option<String>,
    /// `files.target-file-size`: the size compaction merges small data files into.
    pub target_file_size: u64,
    /// `files.manifest-retention`: how long a manifest replaced by a newer one (and the
    /// data files only it lists) is kept for readers that started before, and how old an
    /// unreferenced data file must be before vacuum deletes it.
    pub manifest_retention: std::time::Duration,
    /// `files.maintenance-interval`: how often each table is compacted (when it has
    /// `files.compaction-min-files` small files) and vacuumed in the background; `None`: only
    /// on demand.
    pub maintenance_interval: Option<std::time::Duration>,
    /// `files.compaction-min-files`: small files (below the target size) that make a table's
    /// scheduled compaction worth running.
    pub compaction_min_files: usize,
}

/// `files.target-file-size` by default.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;
/// `files.manifest-retention` by default.
pub const DEFAULT_MANIFEST_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Default for FilesSettings {
    fn default() -> Self {
        Self {
            read_warehouse: None,
            write_warehouse: None,
            target_file_size: DEFAULT_TARGET_FILE_SIZE,
            manifest_retention: DEFAULT_MANIFEST_RETENTION,
            maintenance_interval: None,
            compaction_min_files: 10,
        }
    }
}

impl FilesSettings {
    /// Takes the settings' properties out of `properties`.
    fn take(properties: &mut Properties) -> Result<Self, CatalogError> {
        let invalid = |key: &str, message: String| CatalogError::InvalidProperty { key: key.to_string(), message };
        let mut settings = Self::default();
        for (key, slot) in [
            ("files.read-warehouse", &mut settings.read_warehouse),
            ("files.write-warehouse", &mut settings.write_warehouse),
        ] {
            if let Some(value) = properties.remove(key) {
                if !flotilla_proto::config::valid_label(&value) {
                    return Err(invalid(key, format!("'{value}' is not a valid warehouse name")));
                }
                *slot = Some(value);
            }
        }
        if let Some(value) = properties.remove("files.target-file-size") {
            settings.target_file_size = flotilla_proto::parse_data_size(&value)
                .ok()
                .filter(|size| *size > 0)
                .ok_or_else(|| invalid("files.target-file-size", format!("'{value}' is not a data size above 0B")))?;
        }
        if let Some(value) = properties.remove("files.maintenance-interval") {
            let every = flotilla_proto::parse_duration(&value).map_err(|e| invalid("files.maintenance-interval", e))?;
            if every < std::time::Duration::from_secs(1) {
                return Err(invalid("files.maintenance-interval", format!("'{value}' is shorter than 1s")));
            }
            settings.maintenance_interval = Some(every);
        }
        if let Some(value) = properties.remove("files.compaction-min-files") {
            settings.compaction_min_files = value.parse().ok().filter(|count| *count >= 2).ok_or_else(|| {
                invalid("files.compaction-min-files", format!("'{value}' is not a count of at least 2"))
            })?;
        }
        if let Some(value) = properties.remove("files.manifest-retention") {
            settings.manifest_retention =
                flotilla_proto::parse_duration(&value).map_err(|e| invalid("files.manifest-retention", e))?;
        }
        Ok(settings)
    }
}

/// The catalog over `files.root`.
pub struct FilesCatalog {
    /// The catalog's name (views are named `catalog.schema.view` while they are expanded).
    name: String,
    root: Arc<Root>,
    settings: FilesSettings,
    views: OnceLock<ViewPlanner>,
    listed: Arc<parking_lot::Mutex<Listed>>,
}

impl std::fmt::Debug for FilesCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesCatalog").field("root", &self.root).finish_non_exhaustive()
    }
}

impl FilesCatalog {
    /// `root`: the `files.root` property; the S3 properties are taken from `properties`.
    pub fn new(name: &str, root: &str, properties: &mut Properties) -> Result<Self, CatalogError> {
        Ok(Self {
            name: name.to_string(),
            root: Arc::new(Root::new(root, properties)?),
            settings: FilesSettings::take(properties)?,
            views: OnceLock::new(),
            listed: Default::default(),
        })
    }

    /// The same catalog with its store wrapped (a test's slow store, say).
    #[cfg(test)]
    pub(crate) fn with_store_wrapped(
        self,
        wrap: impl FnOnce(Arc<dyn object_store::ObjectStore>) -> Arc<dyn object_store::ObjectStore>,
    ) -> Self {
        let root = Arc::try_unwrap(self.root).expect("a new catalog's root is not shared");
        Self { root: Arc::new(root.with_store_wrapped(wrap)), ..self }
    }

    /// What the catalog's properties set besides its store.
    pub fn settings(&self) -> &FilesSettings {
        &self.settings
    }

    /// Where the catalog keeps its objects.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// How stored views get planned (once, by the engine).
    pub fn set_view_planner(&self, planner: ViewPlanner) {
        let _ = self.views.set(planner);
    }
}

/// What a name in a schema is.
#[derive(Debug)]
enum Found {
    /// Created through Flotilla: a table or a view, described by the entry in `dir`.
    Entry { dir: Path, entry: Entry },
    /// Plain data files of one format: a directory of them (`folder`) or one file.
    Files { path: Path, extension: &'static str, folder: bool },
}

/// What `name` is in the schema at `schema_dir`: an entry, else a directory with data files
/// right in it, else a single data file.
async fn locate(root: &Root, schema_dir: &Path, name: &str) -> object_store::Result<Option<Found>> {
    if !valid_name(name) {
        return Ok(None);
    }
    let store = root.store().as_ref();
    let dir = schema_dir.clone().join(name);
    if let Some(entry) = files_table::read_entry(store, &dir).await? {
        return Ok(Some(Found::Entry { dir, entry }));
    }
    let (_, objects) = files_store::list_dir(store, &dir).await?;
    if let Some(extension) = objects.iter().find_map(|o| extension(o.location.filename()?)) {
        return Ok(Some(Found::Files { path: dir, extension, folder: true }));
    }
    for extension in FORMATS {
        let path = schema_dir.clone().join(format!("{name}.{extension}"));
        match store.head(&path).await {
            Ok(_) => return Ok(Some(Found::Files { path, extension, folder: false })),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

async fn schema_names(root: &Root) -> object_store::Result<Vec<String>> {
    let (dirs, _) = files_store::list_dir(root.store().as_ref(), &Path::default()).await?;
    Ok(dirs.into_iter().filter(|name| valid_name(name)).collect())
}

/// The tables and views of the schema at `schema_dir`, sorted. `tolerant`: a name that
/// cannot be looked up (an unreadable entry, a failed request) is left out and logged
/// rather than failing the listing (for listings shown to clients, not for decisions).
async fn table_names(root: &Arc<Root>, schema_dir: &Path, tolerant: bool) -> object_store::Result<Vec<String>> {
    let (dirs, objects) = files_store::list_dir(root.store().as_ref(), schema_dir).await?;
    let mut names: Vec<String> = objects
        .iter()
        .filter_map(|o| {
            let file = o.location.filename()?;
            extension(file)?;
            let (stem, _) = file.rsplit_once('.')?;
            valid_name(stem).then(|| stem.to_string())
        })
        .collect();
    // A directory is a table when something is there (a pending or dropped one is not).
    let (root, schema_dir) = (root.clone(), schema_dir.clone());
    let found: Vec<Option<String>> = futures::stream::iter(dirs.into_iter().filter(|d| valid_name(d)))
        .map(move |name| {
            let (root, schema_dir) = (root.clone(), schema_dir.clone());
            async move {
                match locate(&root, &schema_dir, &name).await {
                    Ok(found) => Ok(found.map(|_| name)),
                    Err(error) if tolerant => {
                        tracing::warn!(%error, "{schema_dir}/{name} is left out of the listing");
                        Ok(None)
                    }
                    Err(error) => Err(error),
                }
            }
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<object_store::Result<_>>()?;
    names.extend(found.into_iter().flatten());
    names.sort();
    names.dedup();
    Ok(names)
}

fn store_error(what: &str, error: object_store::Error) -> FlotillaError {
    FlotillaError::internal(format!("cannot {what}: {error}"))
}

fn table_exists_error(catalog: &str, schema: &str, table: &str) -> FlotillaError {
    FlotillaError::new(ErrorCode::TableAlreadyExists, format!("Table '{catalog}.{schema}.{table}' already exists"))
}

fn table_not_found(catalog: &str, schema: &str, table: &str) -> FlotillaError {
    FlotillaError::new(ErrorCode::TableNotFound, format!("Table '{catalog}.{schema}.{table}' does not exist"))
}

/// What the last asynchronous listings found, for DataFusion's synchronous listing methods
/// (which cannot wait for a store): Flotilla's own code lists through
/// [`super::listing`], which asks the store and refreshes this.
#[derive(Debug, Default)]
struct Listed {
    schemas: Vec<String>,
    tables: std::collections::HashMap<String, Vec<String>>,
}

impl FilesCatalog {
    /// The catalog's schemas, from the store.
    pub(crate) async fn list_schemas(&self) -> object_store::Result<Vec<String>> {
        let names = schema_names(&self.root).await?;
        let mut listed = self.listed.lock();
        listed.tables.retain(|schema, _| names.contains(schema));
        listed.schemas = names.clone();
        Ok(names)
    }

    /// Whether schema `name` exists, from the store.
    pub(crate) async fn has_schema(&self, name: &str) -> object_store::Result<bool> {
        Ok(valid_name(name) && self.list_schemas().await?.iter().any(|s| s == name))
    }

    fn schema_provider(&self, name: &str) -> FilesSchema {
        FilesSchema {
            catalog: self.name.clone(),
            root: self.root.clone(),
            dir: Path::from(name),
            views: self.views.get().cloned(),
            listed: self.listed.clone(),
        }
    }
}

/// DataFusion's view of the catalog. Nothing here touches the store: planning resolves the
/// tables a statement names through the asynchronous [`SchemaProvider::table`] before it
/// plans, and the listings are the last ones taken asynchronously.
impl CatalogProvider for FilesCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.listed.lock().schemas.clone()
    }

    /// A schema of any valid name, unchecked: whether it exists is found out when one of its
    /// tables is looked up (asynchronously), or by [`super::listing::schema`].
    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        valid_name(name).then(|| Arc::new(self.schema_provider(name)) as Arc<dyn SchemaProvider>)
    }

    fn register_schema(&self, name: &str, _schema: Arc<dyn SchemaProvider>) -> Result<Option<Arc<dyn SchemaProvider>>> {
        Err(DataFusionError::NotImplemented(format!("Cannot register schema {name}: use CREATE SCHEMA")))
    }
}

/// One schema: a directory under the root.
pub(crate) struct FilesSchema {
    catalog: String,
    root: Arc<Root>,
    dir: Path,
    views: Option<ViewPlanner>,
    listed: Arc<parking_lot::Mutex<Listed>>,
}

impl std::fmt::Debug for FilesSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesSchema").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl FilesSchema {
    /// The schema's tables and views, from the store (sorted; a name that cannot be looked
    /// up is left out and logged).
    pub(crate) async fn list_tables(&self) -> object_store::Result<Vec<String>> {
        let names = table_names(&self.root, &self.dir, true).await?;
        self.listed.lock().tables.insert(self.dir.to_string(), names.clone());
        Ok(names)
    }
}

#[async_trait]
impl SchemaProvider for FilesSchema {
    /// The last listing taken asynchronously (see [`FilesSchema::list_tables`]).
    fn table_names(&self) -> Vec<String> {
        self.listed.lock().tables.get(self.dir.as_ref()).cloned().unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let (path, extension, folder) = match locate(&self.root, &self.dir, name).await? {
            None => return Ok(None),
            Some(Found::Entry { dir, entry: Entry::Table(meta) }) => {
                return Ok(Some(Arc::new(FilesTable::open(&self.root, dir, meta, true).await?)))
            }
            Some(Found::Entry { entry: Entry::View(view), .. }) => return self.view(name, view).await,
            Some(Found::Files { path, extension, folder }) => (path, extension, folder),
        };
        let format = format_of(extension).expect("a known format");
        let mut location = self.root.url_of(&path);
        if folder {
            location.push('/');
        }
        let url = ListingTableUrl::parse(&location)?;
        let options = ListingOptions::new(format).with_file_extension(format!(".{extension}"));
        // The files' own schema; reading them needs nothing from a session but the store.
        let state = SessionStateBuilder::new().with_runtime_env(self.root.runtime().clone()).build();
        let schema = options.infer_schema(&state, &url).await?;
        let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
        Ok(Some(Arc::new(ListingTable::try_new(config)?)))
    }

    /// Whether the last listing taken asynchronously had `name`.
    fn table_exist(&self, name: &str) -> bool {
        self.table_names().iter().any(|table| table == name)
    }
}

impl FilesSchema {
    /// A stored view, planned in its own catalog and schema (refused when it reaches
    /// itself); in a listing, one that cannot be planned is listed as invalid.
    async fn view(&self, name: &str, view: ViewDefinition) -> Result<Option<Arc<dyn TableProvider>>> {
        let planner =
            self.views.clone().ok_or_else(|| DataFusionError::Plan(format!("view {name} cannot be planned here")))?;
        let qualified = format!("{}.{}.{name}", self.catalog, self.dir);
        let tolerate = view_expansion::tolerate_invalid_views();
        let planning = planner(view.sql.clone(), view.catalog, view.schema);
        let error = match view_expansion::expand(qualified.clone(), planning).await {
            Ok(plan) => return Ok(Some(Arc::new(datafusion::catalog::view::ViewTable::new(plan, Some(view.sql))))),
            Err(error) => view_expansion::failed_view(&qualified, &error),
        };
        if tolerate {
            tracing::warn!(view = %qualified, %error, "a stored view cannot be planned; listed as invalid");
            return Ok(Some(Arc::new(view_expansion::InvalidView::new(view.sql, error))));
        }
        Err(view_expansion::carried(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root() -> std::path::PathBuf {
        let unique = format!(
            "flotilla-files-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        );
        let root = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(root.join("sales/orders")).unwrap();
        std::fs::write(root.join("sales/orders/part-0.csv"), "id,amount\n1,10\n2,20\n").unwrap();
        std::fs::write(root.join("sales/orders/part-1.csv"), "id,amount\n3,30\n").unwrap();
        std::fs::write(root.join("sales/regions.json"), "{\"id\":1,\"name\":\"north\"}\n").unwrap();
        std::fs::write(root.join("sales/.hidden.csv"), "x\n1\n").unwrap();
        std::fs::write(root.join("sales/notes.txt"), "not a table").unwrap();
        std::fs::create_dir_all(root.join("Mixed Case")).unwrap();
        root
    }

    #[tokio::test]
    async fn schemas_are_directories_and_tables_are_directories_or_files() {
        let root = temp_root();
        let catalog = FilesCatalog::new("lake", root.to_str().unwrap(), &mut Properties::new()).unwrap();
        assert_eq!(super::super::listing::schema_names(&catalog).await, vec!["sales"]);
        let schema = super::super::listing::schema(&catalog, "sales").await.unwrap();
        assert_eq!(super::super::listing::table_names(schema.as_ref()).await, vec!["orders", "regions"]);
        let orders = schema.table("orders").await.unwrap().unwrap();
        let columns: Vec<String> = orders.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(columns, vec!["id", "amount"]);
        let context = datafusion::prelude::SessionContext::new();
        let rows = context.read_table(orders).unwrap().count().await.unwrap();
        assert_eq!(rows, 3, "both files of the table");
        assert!(schema.table("regions").await.unwrap().is_some());
        assert!(schema.table("notes").await.unwrap().is_none());
        assert!(super::super::listing::schema(&catalog, "missing").await.is_none());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_local_root_must_be_an_existing_directory() {
        for bad in ["relative/path", "/definitely/not/here"] {
            assert!(FilesCatalog::new("lake", bad, &mut Properties::new()).is_err(), "{bad}");
        }
        assert!(FilesCatalog::new(
            "lake",
            &format!("file://{}", std::env::temp_dir().display()),
            &mut Properties::new()
        )
        .is_ok());
    }
}
