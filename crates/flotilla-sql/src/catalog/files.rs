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
use std::time::Duration;

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
use object_store::{ObjectStore, ObjectStoreExt, PutMode};

use flotilla_proto::{ErrorCode, FlotillaError};

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

/// The catalog over `files.root`.
pub struct FilesCatalog {
    /// The catalog's name (views are named `catalog.schema.view` while they are expanded).
    name: String,
    root: Arc<Root>,
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
        Ok(Self { name: name.to_string(), root: Arc::new(Root::new(root, properties)?), views: OnceLock::new(), listed: Default::default() })
    }

    /// The same catalog with its store wrapped (a test's slow store, say).
    #[cfg(test)]
    pub(crate) fn with_store_wrapped(self, wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>) -> Self {
        let root = Arc::try_unwrap(self.root).expect("a new catalog's root is not shared");
        Self { root: Arc::new(root.with_store_wrapped(wrap)), ..self }
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

/// A new table being written under its own id; [`PendingTable::publish`] creates its entry,
/// making it visible whole. Dropped unpublished, what was written for it is deleted.
#[derive(Debug)]
pub struct PendingTable {
    root: Arc<Root>,
    dir: Path,
    meta: TableMeta,
    name: crate::session::TableName,
    /// The marker of the schema (created by CREATE SCHEMA) when it had one: it must still
    /// be there once the table is published, else the schema was dropped meanwhile.
    schema_marker: Option<Path>,
    published: bool,
}

impl PendingTable {
    /// The new table, to write into.
    pub async fn table(&self) -> Result<FilesTable> {
        FilesTable::open(&self.root, self.dir.clone(), self.meta.clone(), false).await
    }

    /// Makes the table visible, whole; TABLE_ALREADY_EXISTS when another got there first,
    /// SCHEMA_NOT_FOUND when its schema was dropped while it was written (DROP SCHEMA takes
    /// the schema's marker away before it looks for tables one last time, so either it sees
    /// this table and keeps the schema, or this sees the marker gone and takes the table
    /// back).
    pub async fn publish(mut self) -> Result<(), FlotillaError> {
        let entry = Entry::Table(self.meta.clone());
        let store = self.root.store().clone();
        match files_table::write_entry(store.as_ref(), &self.dir, &entry, PutMode::Create).await {
            Ok(()) => {
                if let Some(marker) = &self.schema_marker {
                    if let Err(object_store::Error::NotFound { .. }) = store.head(marker).await {
                        let _ = store.delete(&files_table::entry_path(&self.dir)).await;
                        let crate::session::TableName { catalog, schema, table } = &self.name;
                        return Err(FlotillaError::new(
                            ErrorCode::SchemaNotFound,
                            format!("Schema '{catalog}.{schema}' was dropped while table '{table}' was created"),
                        ));
                    }
                }
                self.published = true;
                Ok(())
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                let crate::session::TableName { catalog, schema, table } = &self.name;
                Err(table_exists_error(catalog, schema, table))
            }
            Err(error) => Err(store_error(&format!("create table {}", self.name.table), error)),
        }
    }
}

/// When what a failed write left is swept again: writers on other nodes that were cancelled
/// with the query may still finish an upload already in flight, or remove its staging file,
/// just after the first sweep (found in `writes_racing_drops_lose_nothing_acknowledged`:
/// empty directories of a dropped schema stayed behind and listed it again).
const STRAGGLER_SWEEPS: [Duration; 3] = [Duration::ZERO, Duration::from_secs(2), Duration::from_secs(10)];

impl Drop for PendingTable {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        let (root, dir, id) = (self.root.clone(), self.dir.clone(), self.meta.id.clone());
        let marker = self.schema_marker.clone();
        files_store::spawn(async move {
            for delay in STRAGGLER_SWEEPS {
                tokio::time::sleep(delay).await;
                if let Ok(objects) = files_table::objects_of(root.store().as_ref(), &dir, &id).await {
                    let _ = files_store::delete_all(root.store(), objects).await;
                }
                root.prune(&dir);
                // The schema was dropped while this table was written: what this left of its
                // directory goes too (a directory is a schema on a local root).
                if let Some(marker) = &marker {
                    if let Err(object_store::Error::NotFound { .. }) = root.store().head(marker).await {
                        let schema_dir: Path = dir.parts().take(dir.parts().count().saturating_sub(1)).collect();
                        root.prune(&schema_dir);
                    }
                }
            }
        });
    }
}

/// Moves `objects` (under `from`) to the same places under `to`: copies them, then `commit`
/// (which makes the copy the real one, or refuses), then deletes the originals.
async fn copy_under(
    store: &Arc<dyn ObjectStore>,
    objects: &[Path],
    from: &Path,
    to: &Path,
) -> object_store::Result<Vec<Path>> {
    let targets: Vec<(Path, Path)> = objects
        .iter()
        .map(|object| {
            let target = match object.prefix_match(from) {
                Some(parts) => parts.fold(to.clone(), |path, part| path.join(part)),
                None => to.clone(),
            };
            (object.clone(), target)
        })
        .collect();
    let store = store.clone();
    futures::stream::iter(targets.clone())
        .map(move |(object, target)| {
            let store = store.clone();
            async move { store.copy(&object, &target).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<object_store::Result<Vec<()>>>()?;
    Ok(targets.into_iter().map(|(_, target)| target).collect())
}

/// What writing statements do to a `files` catalog.
impl FilesCatalog {
    async fn schema_dir(&self, catalog: &str, schema: &str) -> Result<Path, FlotillaError> {
        let names = schema_names(&self.root).await.map_err(|e| store_error("list schemas", e))?;
        if valid_name(schema) && names.iter().any(|name| name == schema) {
            Ok(Path::from(schema))
        } else {
            Err(FlotillaError::new(ErrorCode::SchemaNotFound, format!("Schema '{catalog}.{schema}' does not exist")))
        }
    }

    async fn locate(&self, schema_dir: &Path, name: &str) -> Result<Option<Found>, FlotillaError> {
        locate(&self.root, schema_dir, name).await.map_err(|e| store_error(&format!("look up {name}"), e))
    }

    /// `CREATE SCHEMA`: a new directory. `Ok(false)`: it existed (with IF NOT EXISTS).
    pub async fn create_schema(&self, catalog: &str, schema: &str, if_not_exists: bool) -> Result<bool, FlotillaError> {
        if !valid_name(schema) {
            return Err(FlotillaError::new(
                ErrorCode::NotSupported,
                format!("Invalid schema name '{schema}': use lowercase letters, digits and '_'"),
            ));
        }
        let exists = || match if_not_exists {
            true => Ok(false),
            false => Err(FlotillaError::new(
                ErrorCode::SchemaAlreadyExists,
                format!("Schema '{catalog}.{schema}' already exists"),
            )),
        };
        if self.schema_dir(catalog, schema).await.is_ok() {
            return exists();
        }
        let marker = schema_marker(&Path::from(schema));
        let store = self.root.store();
        match files_store::write_json(store, &marker, &serde_json::Map::new(), PutMode::Create).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => exists(),
            Err(error) => Err(store_error(&format!("create schema {schema}"), error)),
        }
    }

    /// `DROP SCHEMA`: only an empty one (no tables). `Ok(false)`: absent (with IF EXISTS).
    pub async fn drop_schema(&self, catalog: &str, schema: &str, if_exists: bool) -> Result<bool, FlotillaError> {
        let dir = match self.schema_dir(catalog, schema).await {
            Ok(dir) => dir,
            Err(_) if if_exists => return Ok(false),
            Err(error) => return Err(error),
        };
        let not_empty =
            || FlotillaError::new(ErrorCode::SchemaNotEmpty, format!("Cannot drop non-empty schema '{schema}'"));
        let listed = || async { table_names(&self.root, &dir, false).await.map_err(|e| store_error("list tables", e)) };
        if !listed().await?.is_empty() {
            return Err(not_empty());
        }
        // The marker goes first, then the tables are looked for once more: a CREATE TABLE
        // AS publishing meanwhile either is seen here (the schema stays) or finds the marker
        // gone (and takes its table back).
        let store = self.root.store();
        let marker = schema_marker(&dir);
        let had_marker = match store.delete(&marker).await {
            Ok(()) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(error) => return Err(store_error(&format!("drop schema {schema}"), error)),
        };
        if !listed().await?.is_empty() {
            if had_marker {
                let restored = files_store::write_json(store, &marker, &serde_json::Map::new(), PutMode::Create).await;
                if let Err(error) = restored.or_else(|e| match e {
                    object_store::Error::AlreadyExists { .. } => Ok(()),
                    other => Err(other),
                }) {
                    tracing::warn!(%error, schema, "could not restore the marker of a schema that stays");
                }
            }
            return Err(not_empty());
        }
        // What is left: remains of failed writes.
        let objects = files_store::list_all(store, &dir).await.map_err(|e| store_error("list", e))?;
        let paths = objects.into_iter().map(|o| o.location).collect();
        files_store::delete_all(store, paths).await.map_err(|e| store_error(&format!("drop schema {schema}"), e))?;
        self.root.remove_remains(&dir);
        Ok(true)
    }

    /// Whether the table exists (a schema that does not is an error).
    pub async fn table_exists(&self, catalog: &str, schema: &str, table: &str) -> Result<bool, FlotillaError> {
        let dir = self.schema_dir(catalog, schema).await?;
        Ok(self.locate(&dir, table).await?.is_some())
    }

    /// Starts a new table, to be written into and published.
    pub async fn new_table(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
        meta: TableMeta,
    ) -> Result<PendingTable, FlotillaError> {
        if !valid_name(table) {
            return Err(FlotillaError::new(
                ErrorCode::NotSupported,
                format!("Invalid table name '{table}': use lowercase letters, digits and '_'"),
            ));
        }
        let schema_dir = self.schema_dir(catalog, schema).await?;
        let marker = schema_marker(&schema_dir);
        let schema_marker = match self.root.store().head(&marker).await {
            Ok(_) => Some(marker),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(error) => return Err(store_error(&format!("create table {table}"), error)),
        };
        let dir = schema_dir.join(table);
        let name = crate::session::TableName { catalog: catalog.into(), schema: schema.into(), table: table.into() };
        Ok(PendingTable { root: self.root.clone(), dir, meta, name, schema_marker, published: false })
    }

    /// `DROP TABLE`: the entry goes first (the table disappears at once), then its files.
    /// `Ok(false)`: absent (with IF EXISTS).
    pub async fn drop_table(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
        if_exists: bool,
    ) -> Result<bool, FlotillaError> {
        let schema_dir = self.schema_dir(catalog, schema).await?;
        let store = self.root.store();
        let dropped = |e| store_error(&format!("drop table {table}"), e);
        let objects = match self.locate(&schema_dir, table).await? {
            None if if_exists => return Ok(false),
            None => return Err(table_not_found(catalog, schema, table)),
            Some(Found::Entry { entry: Entry::View(_), .. }) => {
                return Err(FlotillaError::not_supported(format!(
                    "'{catalog}.{schema}.{table}' is a view: use DROP VIEW"
                )))
            }
            Some(Found::Entry { dir, entry: Entry::Table(meta) }) => {
                store.delete(&files_table::entry_path(&dir)).await.map_err(dropped)?;
                files_table::objects_of(store, &dir, &meta.id).await.map_err(dropped)?
            }
            Some(Found::Files { path, folder: true, .. }) => {
                files_store::list_all(store, &path).await.map_err(dropped)?.into_iter().map(|o| o.location).collect()
            }
            Some(Found::Files { path, .. }) => vec![path],
        };
        files_store::delete_all(store, objects).await.map_err(dropped)?;
        self.root.prune(&schema_dir.clone().join(table));
        Ok(true)
    }

    /// `ALTER TABLE ... RENAME TO`: the table's files are copied to the new name (hard links
    /// locally, server-side copies on S3), the new name's entry is created (the commit:
    /// TABLE_ALREADY_EXISTS when taken), then the old name goes.
    pub async fn rename_table(
        &self,
        catalog: &str,
        from: (&str, &str),
        to: (&str, &str),
        if_exists: bool,
    ) -> Result<bool, FlotillaError> {
        let from_dir = self.schema_dir(catalog, from.0).await?;
        let to_dir = self.schema_dir(catalog, to.0).await?;
        // (A view is not a table to rename.)
        let found = match self.locate(&from_dir, from.1).await? {
            Some(Found::Entry { entry: Entry::View(_), .. }) | None if if_exists => return Ok(false),
            Some(Found::Entry { entry: Entry::View(_), .. }) | None => {
                return Err(table_not_found(catalog, from.0, from.1))
            }
            Some(found) => found,
        };
        if !valid_name(to.1) {
            return Err(FlotillaError::not_supported(format!("Invalid table name '{}'", to.1)));
        }
        if self.locate(&to_dir, to.1).await?.is_some() {
            return Err(table_exists_error(catalog, to.0, to.1));
        }
        let store = self.root.store();
        let failed = |e| store_error(&format!("rename table {}", from.1), e);
        match found {
            Found::Entry { entry: Entry::View(_), .. } => return Err(table_not_found(catalog, from.0, from.1)),
            Found::Entry { dir, entry: Entry::Table(meta) } => {
                let target = to_dir.join(to.1);
                let objects = files_table::objects_of(store, &dir, &meta.id).await.map_err(failed)?;
                let copies = copy_under(store, &objects, &dir, &target).await.map_err(failed)?;
                let entry = Entry::Table(meta);
                match files_table::write_entry(store, &target, &entry, PutMode::Create).await {
                    Ok(()) => {}
                    Err(error) => {
                        let _ = files_store::delete_all(store, copies).await;
                        return Err(match error {
                            object_store::Error::AlreadyExists { .. } => table_exists_error(catalog, to.0, to.1),
                            error => failed(error),
                        });
                    }
                }
                store.delete(&files_table::entry_path(&dir)).await.map_err(failed)?;
                files_store::delete_all(store, objects).await.map_err(failed)?;
                self.root.prune(&dir);
            }
            Found::Files { path, extension, folder } => {
                let (objects, target) = match folder {
                    true => {
                        let objects = files_store::list_all(store, &path).await.map_err(failed)?;
                        (objects.into_iter().map(|o| o.location).collect::<Vec<_>>(), to_dir.join(to.1))
                    }
                    false => (vec![path.clone()], to_dir.join(format!("{}.{extension}", to.1))),
                };
                copy_under(store, &objects, &path, &target).await.map_err(failed)?;
                files_store::delete_all(store, objects).await.map_err(failed)?;
                self.root.prune(&path);
            }
        }
        Ok(true)
    }

    /// `CREATE [OR REPLACE] VIEW`: the definition as the name's entry (a new entry, or the
    /// next revision of the view's); TABLE_ALREADY_EXISTS when a table (or, without OR
    /// REPLACE, a view) has the name.
    pub async fn create_view(
        &self,
        catalog: &str,
        schema: &str,
        view: &str,
        definition: &ViewDefinition,
        or_replace: bool,
    ) -> Result<(), FlotillaError> {
        let schema_dir = self.schema_dir(catalog, schema).await?;
        if !valid_name(view) {
            return Err(FlotillaError::not_supported(format!("Invalid view name '{view}'")));
        }
        let dir = schema_dir.clone().join(view);
        let store = self.root.store().as_ref();
        let failed = |error| store_error(&format!("create view {view}"), error);
        match self.locate(&schema_dir, view).await? {
            Some(Found::Entry { entry: Entry::View(existing), .. }) if or_replace => {
                let replacement = Entry::View(ViewDefinition { id: existing.id.clone(), ..definition.clone() });
                let replace = |entry: &mut Entry| {
                    *entry = replacement.clone();
                    Ok(())
                };
                match files_table::revise_entry(store, &dir, &existing.id, replace).await {
                    Ok(()) => return Ok(()),
                    // Dropped meanwhile: create it anew, below.
                    Err(RevisionError::Gone) => {}
                    Err(RevisionError::Refused(error)) => return Err(error),
                    Err(RevisionError::Store(error)) => return Err(failed(error)),
                }
            }
            Some(_) => return Err(table_exists_error(catalog, schema, view)),
            None => {}
        }
        match files_table::write_entry(store, &dir, &Entry::View(definition.clone()), PutMode::Create).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(table_exists_error(catalog, schema, view)),
            Err(error) => Err(failed(error)),
        }
    }

    /// `DROP VIEW`. `Ok(false)`: absent (with IF EXISTS).
    pub async fn drop_view(
        &self,
        catalog: &str,
        schema: &str,
        view: &str,
        if_exists: bool,
    ) -> Result<bool, FlotillaError> {
        let schema_dir = self.schema_dir(catalog, schema).await?;
        match self.locate(&schema_dir, view).await? {
            Some(Found::Entry { dir, entry: Entry::View(definition) }) => {
                let store = self.root.store();
                let failed = |e| store_error(&format!("drop view {view}"), e);
                store.delete(&files_table::entry_path(&dir)).await.map_err(failed)?;
                // Its revisions.
                let objects = files_table::objects_of(store.as_ref(), &dir, &definition.id).await.map_err(failed)?;
                files_store::delete_all(store, objects).await.map_err(failed)?;
                self.root.prune(&dir);
                Ok(true)
            }
            _ if if_exists => Ok(false),
            _ => Err(FlotillaError::new(
                ErrorCode::TableNotFound,
                format!("View '{catalog}.{schema}.{view}' does not exist"),
            )),
        }
    }

    /// `COMMENT ON TABLE` (`column`: None) or `COMMENT ON COLUMN`; `comment` None removes it.
    pub async fn set_comment(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
        column: Option<&str>,
        comment: Option<String>,
    ) -> Result<(), FlotillaError> {
        let schema_dir = self.schema_dir(catalog, schema).await?;
        let (dir, id) = match self.locate(&schema_dir, table).await? {
            Some(Found::Entry { dir, entry: Entry::Table(meta) }) => (dir, meta.id),
            None => return Err(table_not_found(catalog, schema, table)),
            Some(_) => {
                return Err(FlotillaError::not_supported(format!(
                "Comments are kept only for tables created through Flotilla; '{catalog}.{schema}.{table}' is not one"
            )))
            }
        };
        let set = |entry: &mut Entry| {
            let Entry::Table(meta) = entry else { return Err(table_not_found(catalog, schema, table)) };
            match column {
                None => meta.comment = comment.clone(),
                Some(name) => {
                    let column = meta.columns.iter_mut().find(|c| c.name == name).ok_or_else(|| {
                        FlotillaError::new(ErrorCode::ColumnNotFound, format!("Column '{name}' does not exist"))
                    })?;
                    column.comment = comment.clone();
                }
            }
            Ok(())
        };
        match files_table::revise_entry(self.root.store().as_ref(), &dir, &id, set).await {
            Ok(()) => Ok(()),
            Err(RevisionError::Gone) => Err(table_not_found(catalog, schema, table)),
            Err(RevisionError::Refused(error)) => Err(error),
            Err(RevisionError::Store(error)) => Err(store_error(&format!("comment on {table}"), error)),
        }
    }
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
        self.listed.lock().schemas = names.clone();
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
