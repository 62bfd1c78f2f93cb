//! The `files` connector: tables kept as Parquet, CSV or JSON files under one root directory
//! that every node sees at the same path (a shared or network file system), the way Trino's
//! Hive connector reads a warehouse directory, but without a metastore: the directories are
//! the metadata.
//!
//! ```text
//!   files.root/                    etc/catalog/lake.properties:
//!     sales/            schema       connector.name=files
//!       orders/         table        files.root=/data/lake
//!         part-0.parquet
//!         part-1.parquet
//!       regions.csv     table (one file)
//! ```
//!
//! A table is a directory of files of one format (by extension: `.parquet`, `.csv` with a
//! header row, `.json` with one object per line) or a single such file; its columns are
//! inferred from the files. Scans are DataFusion listing-table scans, so the distributed
//! planner splits their files across the workers, which read them at the same path.
//!
//! Flotilla writes tables too (CREATE SCHEMA, CREATE TABLE [AS], INSERT, DROP): those keep
//! their format, columns and committed files in a `_flotilla/` folder ([`super::files_table`]),
//! so readers only ever see committed data. A new table is built in a staging directory
//! (`SCHEMA/.staging/...`) and renamed into place when complete: of two racing creations one
//! wins, the other fails with TABLE_ALREADY_EXISTS. Object stores (`s3://`) are not
//! supported yet and are refused at start-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionStateBuilder;

use flotilla_proto::{ErrorCode, FlotillaError};

use super::files_table::{self, FilesTable, TableMeta};
use super::CatalogError;

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
/// digit. Entries named otherwise (hidden files, `_SUCCESS`, ...) are not tables or schemas.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn extension(path: &Path) -> Option<&str> {
    path.extension().and_then(|e| e.to_str()).filter(|e| FORMATS.contains(e))
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
    pub sql: String,
    pub catalog: String,
    pub schema: String,
}

/// Where a view keeps its definition, inside its directory.
const VIEW_FILE: &str = "view";

fn view_file(dir: &Path) -> PathBuf {
    dir.join(files_table::META_DIR).join(VIEW_FILE)
}

fn is_view(dir: &Path) -> bool {
    view_file(dir).is_file()
}

/// The catalog over `files.root`.
pub struct FilesCatalog {
    root: PathBuf,
    views: std::sync::OnceLock<ViewPlanner>,
}

impl std::fmt::Debug for FilesCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesCatalog").field("root", &self.root).finish_non_exhaustive()
    }
}

impl FilesCatalog {
    /// `root`: the `files.root` property.
    pub fn new(root: &str) -> Result<Self, CatalogError> {
        let invalid = |message: String| CatalogError::InvalidProperty { key: "files.root".into(), message };
        if let Some((scheme, _)) = root.split_once("://").filter(|(scheme, _)| *scheme != "file") {
            return Err(invalid(format!(
                "{scheme}:// object stores are not supported yet; use a directory every node sees at the same path"
            )));
        }
        let path = PathBuf::from(root.trim_start_matches("file://"));
        if !path.is_absolute() {
            return Err(invalid(format!("'{root}' must be an absolute path (every node resolves it alike)")));
        }
        if !path.is_dir() {
            return Err(invalid(format!("'{root}' is not a directory")));
        }
        Ok(Self { root: path, views: std::sync::OnceLock::new() })
    }

    /// How stored views get planned (once, by the engine).
    pub fn set_view_planner(&self, planner: ViewPlanner) {
        let _ = self.views.set(planner);
    }
}

/// The subdirectories and files of `dir` with valid names.
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(String, PathBuf)> = read
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| Some((entry.file_name().into_string().ok()?, entry.path())))
        .collect();
    found.sort();
    found
}

/// A new table being written in its schema's staging area; [`StagedTable::publish`] renames
/// it into place. Dropped unpublished, it is removed.
#[derive(Debug)]
pub struct StagedTable {
    area: PathBuf,
    dir: PathBuf,
    target: PathBuf,
    name: String,
}

impl StagedTable {
    /// The new table, to write into.
    pub fn table(&self) -> Result<FilesTable> {
        FilesTable::open(&self.dir)
    }

    /// Makes the table visible, whole; TABLE_ALREADY_EXISTS when another got there first.
    pub fn publish(self) -> Result<(), FlotillaError> {
        match std::fs::rename(&self.dir, &self.target) {
            Ok(()) => Ok(()),
            Err(_) if self.target.exists() => {
                Err(FlotillaError::new(ErrorCode::TableAlreadyExists, format!("Table '{}' already exists", self.name)))
            }
            Err(error) => Err(FlotillaError::internal(format!("cannot publish table {}: {error}", self.name))),
        }
    }
}

impl Drop for StagedTable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.area);
    }
}

fn fs_error(what: &str, path: &Path, error: std::io::Error) -> FlotillaError {
    FlotillaError::internal(format!("cannot {what} {}: {error}", path.display()))
}

/// What writing statements do to a `files` catalog.
impl FilesCatalog {
    fn schema_dir(&self, catalog: &str, schema: &str) -> Result<PathBuf, FlotillaError> {
        let dir = self.root.join(schema);
        if valid_name(schema) && dir.is_dir() {
            Ok(dir)
        } else {
            Err(FlotillaError::new(ErrorCode::SchemaNotFound, format!("Schema '{catalog}.{schema}' does not exist")))
        }
    }

    /// `CREATE SCHEMA`: a new directory. `Ok(false)`: it existed (with IF NOT EXISTS).
    pub fn create_schema(&self, catalog: &str, schema: &str, if_not_exists: bool) -> Result<bool, FlotillaError> {
        if !valid_name(schema) {
            return Err(FlotillaError::new(
                ErrorCode::NotSupported,
                format!("Invalid schema name '{schema}': use lowercase letters, digits and '_'"),
            ));
        }
        let dir = self.root.join(schema);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => match if_not_exists {
                true => Ok(false),
                false => Err(FlotillaError::new(
                    ErrorCode::SchemaAlreadyExists,
                    format!("Schema '{catalog}.{schema}' already exists"),
                )),
            },
            Err(error) => Err(fs_error("create", &dir, error)),
        }
    }

    /// `DROP SCHEMA`: only an empty one (no tables). `Ok(false)`: absent (with IF EXISTS).
    pub fn drop_schema(&self, catalog: &str, schema: &str, if_exists: bool) -> Result<bool, FlotillaError> {
        let dir = match self.schema_dir(catalog, schema) {
            Ok(dir) => dir,
            Err(_) if if_exists => return Ok(false),
            Err(error) => return Err(error),
        };
        if !FilesSchema::at(dir.clone()).table_names().is_empty() {
            return Err(FlotillaError::new(
                ErrorCode::SchemaNotEmpty,
                format!("Cannot drop non-empty schema '{schema}'"),
            ));
        }
        let _ = std::fs::remove_dir_all(dir.join(STAGING));
        std::fs::remove_dir(&dir).map_err(|e| fs_error("remove", &dir, e))?;
        Ok(true)
    }

    /// Whether the table exists (a schema that does not is an error).
    pub fn table_exists(&self, catalog: &str, schema: &str, table: &str) -> Result<bool, FlotillaError> {
        let dir = self.schema_dir(catalog, schema)?;
        Ok(FilesSchema::at(dir).locate(table).is_some())
    }

    /// Starts a new table: its metadata in a staging directory, to be written into and
    /// published.
    pub fn stage_table(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
        meta: &TableMeta,
    ) -> Result<StagedTable, FlotillaError> {
        if !valid_name(table) {
            return Err(FlotillaError::new(
                ErrorCode::NotSupported,
                format!("Invalid table name '{table}': use lowercase letters, digits and '_'"),
            ));
        }
        let schema_dir = self.schema_dir(catalog, schema)?;
        let area = staging_area(&schema_dir)?;
        let dir = area.join(table);
        std::fs::create_dir(&dir).map_err(|e| fs_error("create", &dir, e))?;
        let staged =
            StagedTable { area, dir, target: schema_dir.join(table), name: format!("{catalog}.{schema}.{table}") };
        files_table::create(&staged.dir, meta).map_err(|e| FlotillaError::internal(e.to_string()))?;
        Ok(staged)
    }

    /// `DROP TABLE`: the directory disappears at once (renamed away, then removed).
    /// `Ok(false)`: absent (with IF EXISTS).
    pub fn drop_table(&self, catalog: &str, schema: &str, table: &str, if_exists: bool) -> Result<bool, FlotillaError> {
        let schema_dir = self.schema_dir(catalog, schema)?;
        let Some((path, kind)) = FilesSchema::at(schema_dir.clone()).locate(table) else {
            return match if_exists {
                true => Ok(false),
                false => Err(FlotillaError::new(
                    ErrorCode::TableNotFound,
                    format!("Table '{catalog}.{schema}.{table}' does not exist"),
                )),
            };
        };
        if kind == Kind::View {
            return Err(FlotillaError::not_supported(format!("'{catalog}.{schema}.{table}' is a view: use DROP VIEW")));
        }
        remove(&schema_dir, &path)
    }

    /// `ALTER TABLE ... RENAME TO`: the directory (or file) moves; TABLE_ALREADY_EXISTS
    /// when the new name is taken.
    pub fn rename_table(
        &self,
        catalog: &str,
        from: (&str, &str),
        to: (&str, &str),
        if_exists: bool,
    ) -> Result<bool, FlotillaError> {
        let from_dir = self.schema_dir(catalog, from.0)?;
        let to_dir = self.schema_dir(catalog, to.0)?;
        let Some((path, kind)) = FilesSchema::at(from_dir).locate(from.1).filter(|(_, kind)| *kind != Kind::View)
        else {
            return match if_exists {
                true => Ok(false),
                false => Err(FlotillaError::new(
                    ErrorCode::TableNotFound,
                    format!("Table '{catalog}.{}.{}' does not exist", from.0, from.1),
                )),
            };
        };
        if !valid_name(to.1) {
            return Err(FlotillaError::not_supported(format!("Invalid table name '{}'", to.1)));
        }
        let taken = || {
            FlotillaError::new(
                ErrorCode::TableAlreadyExists,
                format!("Table '{catalog}.{}.{}' already exists", to.0, to.1),
            )
        };
        if FilesSchema::at(to_dir.clone()).locate(to.1).is_some() {
            return Err(taken());
        }
        let target = match kind {
            Kind::Files(extension) if path.is_file() => to_dir.join(format!("{}.{extension}", to.1)),
            _ => to_dir.join(to.1),
        };
        if target.exists() {
            return Err(taken());
        }
        std::fs::rename(&path, &target).map_err(|e| fs_error("rename", &path, e))?;
        Ok(true)
    }

    /// `CREATE [OR REPLACE] VIEW`: the definition in the view's directory, replaced
    /// atomically; TABLE_ALREADY_EXISTS when a table (or, without OR REPLACE, a view) has
    /// the name.
    pub fn create_view(
        &self,
        catalog: &str,
        schema: &str,
        view: &str,
        definition: &ViewDefinition,
        or_replace: bool,
    ) -> Result<(), FlotillaError> {
        let schema_dir = self.schema_dir(catalog, schema)?;
        if !valid_name(view) {
            return Err(FlotillaError::not_supported(format!("Invalid view name '{view}'")));
        }
        let text = serde_json::to_vec_pretty(definition).map_err(|e| FlotillaError::internal(e.to_string()))?;
        let taken = || {
            FlotillaError::new(
                ErrorCode::TableAlreadyExists,
                format!("Table '{catalog}.{schema}.{view}' already exists"),
            )
        };
        match FilesSchema::at(schema_dir.clone()).locate(view) {
            Some((dir, Kind::View)) if or_replace => {
                let temporary = dir.join(files_table::META_DIR).join(format!(".view-{:016x}", rand::random::<u64>()));
                std::fs::write(&temporary, &text).map_err(|e| fs_error("write", &temporary, e))?;
                std::fs::rename(&temporary, view_file(&dir)).map_err(|e| fs_error("replace", &dir, e))
            }
            Some(_) => Err(taken()),
            None => {
                let area = staging_area(&schema_dir)?;
                let staged = area.join(view);
                let meta = staged.join(files_table::META_DIR);
                std::fs::create_dir_all(&meta).map_err(|e| fs_error("create", &meta, e))?;
                std::fs::write(view_file(&staged), &text).map_err(|e| fs_error("write", &staged, e))?;
                let published = std::fs::rename(&staged, schema_dir.join(view));
                let _ = std::fs::remove_dir_all(&area);
                published.map_err(|_| taken())
            }
        }
    }

    /// `DROP VIEW`. `Ok(false)`: absent (with IF EXISTS).
    pub fn drop_view(&self, catalog: &str, schema: &str, view: &str, if_exists: bool) -> Result<bool, FlotillaError> {
        let schema_dir = self.schema_dir(catalog, schema)?;
        match FilesSchema::at(schema_dir.clone()).locate(view) {
            Some((path, Kind::View)) => remove(&schema_dir, &path),
            _ if if_exists => Ok(false),
            _ => Err(FlotillaError::new(
                ErrorCode::TableNotFound,
                format!("View '{catalog}.{schema}.{view}' does not exist"),
            )),
        }
    }
    /// `COMMENT ON TABLE` (`column`: None) or `COMMENT ON COLUMN`; `comment` None removes it.
    pub fn set_comment(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
        column: Option<&str>,
        comment: Option<String>,
    ) -> Result<(), FlotillaError> {
        let schema_dir = self.schema_dir(catalog, schema)?;
        let not_found = || {
            FlotillaError::new(ErrorCode::TableNotFound, format!("Table '{catalog}.{schema}.{table}' does not exist"))
        };
        let (dir, kind) = FilesSchema::at(schema_dir).locate(table).ok_or_else(not_found)?;
        if kind != Kind::Managed {
            return Err(FlotillaError::not_supported(format!(
                "Comments are kept only for tables created through Flotilla; '{catalog}.{schema}.{table}' is not one"
            )));
        }
        let mut meta = files_table::read_meta(&dir).map_err(|e| FlotillaError::internal(e.to_string()))?;
        match column {
            None => meta.comment = comment,
            Some(name) => {
                let column = meta.columns.iter_mut().find(|c| c.name == name).ok_or_else(|| {
                    FlotillaError::new(ErrorCode::ColumnNotFound, format!("Column '{name}' does not exist"))
                })?;
                column.comment = comment;
            }
        }
        files_table::write_meta(&dir, &meta).map_err(|e| FlotillaError::internal(e.to_string()))
    }
}

/// A fresh, private directory in the schema's staging area.
fn staging_area(schema_dir: &Path) -> Result<PathBuf, FlotillaError> {
    let area = schema_dir.join(STAGING).join(format!("{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&area).map_err(|e| fs_error("create", &area, e))?;
    Ok(area)
}

/// Makes a table or view disappear at once (moved to the staging area), then removes it.
fn remove(schema_dir: &Path, path: &Path) -> Result<bool, FlotillaError> {
    let area = staging_area(schema_dir)?;
    let trash = area.join("dropped");
    let moved = std::fs::rename(path, &trash).map_err(|e| fs_error("drop", path, e));
    let _ = std::fs::remove_dir_all(&area);
    moved.map(|()| true)
}

/// A schema's area for tables being created and dropped (hidden: not a valid table name).
const STAGING: &str = ".staging";

impl CatalogProvider for FilesCatalog {
    fn schema_names(&self) -> Vec<String> {
        entries(&self.root)
            .into_iter()
            .filter(|(name, path)| valid_name(name) && path.is_dir())
            .map(|(n, _)| n)
            .collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let dir = self.root.join(name);
        let views = self.views.get().cloned();
        (valid_name(name) && dir.is_dir()).then(|| Arc::new(FilesSchema { dir, views }) as Arc<dyn SchemaProvider>)
    }

    fn register_schema(&self, name: &str, _schema: Arc<dyn SchemaProvider>) -> Result<Option<Arc<dyn SchemaProvider>>> {
        Err(DataFusionError::NotImplemented(format!("Cannot register schema {name}: use CREATE SCHEMA")))
    }
}

/// One schema: a directory under the root.
struct FilesSchema {
    dir: PathBuf,
    views: Option<ViewPlanner>,
}

impl std::fmt::Debug for FilesSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesSchema").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// What a name in a schema is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A stored view.
    View,
    /// A table created through Flotilla (its format is in its metadata).
    Managed,
    /// Plain data files of this format (a directory of them, or one file).
    Files(&'static str),
}

impl FilesSchema {
    fn at(dir: PathBuf) -> Self {
        Self { dir, views: None }
    }

    /// Where `name` lives and what it is. Looks at directory entries only (no file is
    /// read), as listings call it for every name.
    fn locate(&self, name: &str) -> Option<(PathBuf, Kind)> {
        if !valid_name(name) {
            return None;
        }
        let dir = self.dir.join(name);
        if dir.is_dir() {
            if is_view(&dir) {
                return Some((dir, Kind::View));
            }
            if files_table::is_managed(&dir) {
                return Some((dir, Kind::Managed));
            }
            let found = entries(&dir).into_iter().find_map(|(_, path)| extension(&path).map(str::to_string))?;
            let format = FORMATS.into_iter().find(|f| *f == found)?;
            return Some((dir, Kind::Files(format)));
        }
        FORMATS
            .into_iter()
            .map(|f| (self.dir.join(format!("{name}.{f}")), Kind::Files(f)))
            .find(|(path, _)| path.is_file())
    }
}

#[async_trait]
impl SchemaProvider for FilesSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = entries(&self.dir)
            .into_iter()
            .filter_map(|(name, path)| {
                let table = if path.is_dir() { name } else { path.file_stem()?.to_str()?.to_string() };
                (path.is_dir() || extension(&path).is_some()).then_some(table)
            })
            .filter(|name| self.locate(name).is_some())
            .collect();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some((path, kind)) = self.locate(name) else { return Ok(None) };
        let extension = match kind {
            Kind::Files(extension) => extension,
            Kind::Managed => {
                return match FilesTable::open(&path) {
                    Ok(table) => Ok(Some(Arc::new(table))),
                    // Dropped or renamed meanwhile (listings race with DROP and RENAME).
                    Err(_) if !path.exists() => Ok(None),
                    Err(error) => Err(error),
                };
            }
            Kind::View => return self.view(name, &path).await,
        };
        let format = format_of(extension).expect("a known format");
        let mut location = path.to_string_lossy().to_string();
        if path.is_dir() && !location.ends_with('/') {
            location.push('/');
        }
        let url = ListingTableUrl::parse(&location)?;
        let options = ListingOptions::new(format).with_file_extension(format!(".{extension}"));
        // The files' own schema; reading local files needs nothing from a session but its
        // runtime (no functions, no catalogs).
        let state = SessionStateBuilder::new().build();
        let schema = options.infer_schema(&state, &url).await?;
        let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
        Ok(Some(Arc::new(ListingTable::try_new(config)?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.locate(name).is_some()
    }
}

impl FilesSchema {
    /// A stored view, planned in its own catalog and schema.
    async fn view(&self, name: &str, path: &Path) -> Result<Option<Arc<dyn TableProvider>>> {
        let text = match std::fs::read(view_file(path)) {
            Ok(text) => text,
            Err(_) if !path.exists() => return Ok(None),
            Err(e) => return Err(DataFusionError::Execution(format!("cannot read view {name}: {e}"))),
        };
        let view: ViewDefinition = serde_json::from_slice(&text)
            .map_err(|e| DataFusionError::Execution(format!("view {name} is unreadable: {e}")))?;
        let planner =
            self.views.clone().ok_or_else(|| DataFusionError::Plan(format!("view {name} cannot be planned here")))?;
        let plan = planner(view.sql.clone(), view.catalog, view.schema).await?;
        Ok(Some(Arc::new(datafusion::catalog::view::ViewTable::new(plan, Some(view.sql)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root() -> PathBuf {
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
        let catalog = FilesCatalog::new(root.to_str().unwrap()).unwrap();
        assert_eq!(catalog.schema_names(), vec!["sales"]);
        let schema = catalog.schema("sales").unwrap();
        assert_eq!(schema.table_names(), vec!["orders", "regions"]);
        let orders = schema.table("orders").await.unwrap().unwrap();
        let columns: Vec<String> = orders.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(columns, vec!["id", "amount"]);
        let context = datafusion::prelude::SessionContext::new();
        let rows = context.read_table(orders).unwrap().count().await.unwrap();
        assert_eq!(rows, 3, "both files of the table");
        assert!(schema.table("regions").await.unwrap().is_some());
        assert!(schema.table("notes").await.unwrap().is_none());
        assert!(catalog.schema("missing").is_none());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_root_must_be_an_existing_local_directory() {
        for bad in ["s3://bucket/lake", "relative/path", "/definitely/not/here"] {
            assert!(FilesCatalog::new(bad).is_err(), "{bad}");
        }
        assert!(FilesCatalog::new(&format!("file://{}", std::env::temp_dir().display())).is_ok());
    }
}
