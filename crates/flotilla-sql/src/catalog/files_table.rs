//! Tables and views created through the `files` connector. A name's directory holds its
//! entry, versioned manifests and data files:
//!
//! ```text
//!   orders/
//!     _flotilla/table                 the entry: a table (id, format, columns, comments)
//!                                     or a view (id, its SQL) — JSON, as created
//!     _flotilla/<id>.entry.v00000001  revisions of the entry (COMMENT, CREATE OR REPLACE
//!                                     VIEW): the highest is the entry as it is now
//!     _flotilla/<id>.v00000001        manifest: the data files committed so far (JSON)
//!     _flotilla/<id>.v00000002        ... each commit writes the next version
//!     data/<id>-20261123_..._0.parquet  data files, named by the table and the writing query
//! ```
//!
//! Every change has one commit point, an object created only if absent (see
//! `files_store`): a commit creates the next manifest version, listing the files before
//! plus the new ones; of two concurrent commits one gets the version and the other reads
//! it and takes the next (both land). A new table's data and first manifest are written
//! under its new id before its entry exists; creating the entry publishes it whole, and
//! of two racing creations exactly one creates it. Readers take the highest version of the
//! entry's id, complete by construction; dropping a table deletes its entry first. Files
//! written by a query that fails never reach a manifest and are never read.
//!
//! The entry itself is never overwritten: a change to it is the next revision, created only
//! if absent like a manifest, so of two concurrent changes both land (the second is applied
//! to the first's result), and a change that finds the entry gone (or replaced by another
//! id: dropped, maybe created anew) afterwards takes its revision back and fails, so it
//! can never bring a dropped name back.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::ExecutionPlan;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode};
use serde::{Deserialize, Serialize};

use super::files::{format_of, ViewDefinition};
use super::files_store::{self, read_json, write_json};
use super::files_write::{FilesCommitExec, FilesWriteExec, WriteSpec};

/// The folder of a table or view directory holding Flotilla's metadata.
pub const META_DIR: &str = "_flotilla";
/// A table's data files, inside its directory.
pub const DATA_DIR: &str = "data";
const ENTRY_FILE: &str = "table";

/// What a name created through Flotilla is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    Table(TableMeta),
    View(ViewDefinition),
}

impl Entry {
    /// Tells this incarnation of the name from earlier and later ones.
    pub fn id(&self) -> &str {
        match self {
            Entry::Table(meta) => &meta.id,
            Entry::View(view) => &view.id,
        }
    }
}

/// A new table's or view's id.
pub fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// What a table is: its identity, format and columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMeta {
    /// Distinguishes this table's manifests and files from those of an earlier table of
    /// the same name.
    pub id: String,
    /// `parquet`, `csv` or `json` (the data files' extension).
    pub format: String,
    pub columns: Vec<ColumnMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The `read_warehouse` table property: where queries reading the table run (when the
    /// session and routing rules name no warehouse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_warehouse: Option<String>,
    /// The `write_warehouse` table property: where INSERTs into the table, and its
    /// compaction, run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_warehouse: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnMeta {
    pub name: String,
    /// Arrow's name of the type (`Int64`, `Decimal128(15, 2)`, `Utf8`, ...).
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl TableMeta {
    /// A new table (with a new id).
    pub fn new(format: &str, schema: &Schema) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| ColumnMeta {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: true,
                comment: None,
            })
            .collect();
        Self {
            id: new_id(),
            format: format.to_string(),
            columns,
            comment: None,
            read_warehouse: None,
            write_warehouse: None,
        }
    }

    pub fn schema(&self) -> Result<SchemaRef> {
        let fields = self
            .columns
            .iter()
            .map(|c| {
                let data_type: DataType = c.data_type.parse().map_err(|e| {
                    DataFusionError::Execution(format!("column {} has an unreadable type {}: {e}", c.name, c.data_type))
                })?;
                Ok(Field::new(&c.name, data_type, c.nullable))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// The committed files of a table, at one version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u64,
    /// Data file paths, relative to the table directory.
    pub files: Vec<String>,
}

/// Where the entry of the name at `dir` is.
pub fn entry_path(dir: &Path) -> Path {
    dir.clone().join(META_DIR).join(ENTRY_FILE)
}

fn revision_path(dir: &Path, id: &str, revision: u64) -> Path {
    dir.clone().join(META_DIR).join(format!("{id}.entry.v{revision:08}"))
}

/// The entry of the name at `dir` as it is now (its latest revision), with that revision's
/// number (0: as created); `None` when nothing was created there (or it was dropped).
pub async fn read_entry_revision(store: &dyn ObjectStore, dir: &Path) -> object_store::Result<Option<(Entry, u64)>> {
    let Some(created) = read_json::<Entry>(store, &entry_path(dir)).await? else { return Ok(None) };
    let (_, objects) = files_store::list_dir(store, &dir.clone().join(META_DIR)).await?;
    let prefix = format!("{}.entry.v", created.id());
    let latest =
        objects.iter().filter_map(|o| o.location.filename()?.strip_prefix(prefix.as_str())?.parse::<u64>().ok()).max();
    let Some(revision) = latest else { return Ok(Some((created, 0))) };
    match read_json::<Entry>(store, &revision_path(dir, created.id(), revision)).await? {
        Some(revised) if revised.id() == created.id() => Ok(Some((revised, revision))),
        // A revision goes away only with its entry (a drop, or a change that found the
        // entry gone).
        _ => Ok(None),
    }
}

/// The entry of the name at `dir` as it is now; `None` when nothing was created there (or
/// it was dropped).
pub async fn read_entry(store: &dyn ObjectStore, dir: &Path) -> object_store::Result<Option<Entry>> {
    Ok(read_entry_revision(store, dir).await?.map(|(entry, _)| entry))
}

/// Why [`revise_entry`] changed nothing.
#[derive(Debug)]
pub enum RevisionError {
    /// The name no longer has the entry of that id (dropped, maybe created anew).
    Gone,
    /// The change itself refused (a column that does not exist, say).
    Refused(flotilla_proto::FlotillaError),
    Store(object_store::Error),
}

impl From<object_store::Error> for RevisionError {
    fn from(error: object_store::Error) -> Self {
        RevisionError::Store(error)
    }
}

/// How often a change is re-applied to a revision that another change created first.
const REVISION_ATTEMPTS: usize = 64;

/// Changes the entry of id `id` at `dir` with `change`, applied to its latest revision, as
/// its next revision (see the module doc: nothing is lost to a concurrent change, and a
/// dropped name is never brought back).
pub async fn revise_entry(
    store: &dyn ObjectStore,
    dir: &Path,
    id: &str,
    change: impl Fn(&mut Entry) -> Result<(), flotilla_proto::FlotillaError>,
) -> Result<(), RevisionError> {
    for _ in 0..REVISION_ATTEMPTS {
        let Some((mut entry, revision)) = read_entry_revision(store, dir).await? else {
            return Err(RevisionError::Gone);
        };
        if entry.id() != id {
            return Err(RevisionError::Gone);
        }
        change(&mut entry).map_err(RevisionError::Refused)?;
        let path = revision_path(dir, id, revision + 1);
        match write_json(store, &path, &entry, PutMode::Create).await {
            Ok(()) => {}
            // Another change took this revision: apply this one to it.
            Err(object_store::Error::AlreadyExists { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
        return match read_json::<Entry>(store, &entry_path(dir)).await? {
            Some(created) if created.id() == id => Ok(()),
            _ => {
                let _ = store.delete(&path).await;
                Err(RevisionError::Gone)
            }
        };
    }
    Err(RevisionError::Store(object_store::Error::Generic {
        store: "flotilla",
        source: format!("{REVISION_ATTEMPTS} concurrent changes to {dir} in a row; try again").into(),
    }))
}

/// Creates the entry (`PutMode::Create` fails with `AlreadyExists` when taken).
pub async fn write_entry(
    store: &dyn ObjectStore,
    dir: &Path,
    entry: &Entry,
    mode: PutMode,
) -> object_store::Result<()> {
    write_json(store, &entry_path(dir), entry, mode).await
}

/// The comment of a table and of each of its columns, when the connector keeps them.
pub fn comments(table: &dyn TableProvider) -> Option<(Option<String>, Vec<Option<String>>)> {
    let table = (table as &dyn std::any::Any).downcast_ref::<FilesTable>()?;
    Some((table.meta.comment.clone(), table.meta.columns.iter().map(|c| c.comment.clone()).collect()))
}

fn manifest_path(dir: &Path, id: &str, version: u64) -> Path {
    dir.clone().join(META_DIR).join(format!("{id}.v{version:08}"))
}

/// Every object of the table `id` in `dir` (manifests and data files, committed or not),
/// by name: what dropping or moving the table concerns.
pub async fn objects_of(store: &dyn ObjectStore, dir: &Path, id: &str) -> object_store::Result<Vec<Path>> {
    let mut found = Vec::new();
    for folder in [META_DIR, DATA_DIR] {
        let (_, objects) = files_store::list_dir(store, &dir.clone().join(folder)).await?;
        found.extend(
            objects.into_iter().map(|o| o.location).filter(|p| p.filename().is_some_and(|n| n.starts_with(id))),
        );
    }
    Ok(found)
}

/// The latest committed manifest of table `id` (version 0, no files, before the first
/// commit).
pub async fn read_manifest(store: &dyn ObjectStore, dir: &Path, id: &str) -> Result<Manifest> {
    let (_, objects) = files_store::list_dir(store, &dir.clone().join(META_DIR)).await?;
    let prefix = format!("{id}.v");
    let latest =
        objects.iter().filter_map(|o| o.location.filename()?.strip_prefix(prefix.as_str())?.parse::<u64>().ok()).max();
    let Some(version) = latest else { return Ok(Manifest::default()) };
    let path = manifest_path(dir, id, version);
    read_json(store, &path)
        .await?
        .ok_or_else(|| DataFusionError::Execution(format!("manifest {path} disappeared while being read")))
}

/// Adds `added` to table `id`, and takes `removed` out of it, in one new manifest version;
/// returns that version. Files others committed meanwhile are kept (the change is applied to
/// the latest version); `removed` files that are no longer in it (another compaction
/// replaced them) refuse the whole change.
pub async fn commit(
    store: &dyn ObjectStore,
    dir: &Path,
    id: &str,
    added: &[String],
    removed: &[String],
) -> Result<u64> {
    let removed: std::collections::HashSet<&String> = removed.iter().collect();
    loop {
        let current = read_manifest(store, dir, id).await?;
        let mut files: Vec<String> = current.files.iter().filter(|f| !removed.contains(f)).cloned().collect();
        if current.files.len() - files.len() != removed.len() {
            return Err(super::view_expansion::carried(flotilla_proto::FlotillaError::new(
                flotilla_proto::ErrorCode::TransactionConflict,
                format!("Files of table {dir} being rewritten were replaced meanwhile (a concurrent optimize); nothing was changed"),
            )));
        }
        files.extend(added.iter().cloned());
        let next = Manifest { version: current.version + 1, files };
        match write_json(store, &manifest_path(dir, id, next.version), &next, PutMode::Create).await {
            Ok(()) => return Ok(next.version),
            // Another commit took this version: build on it.
            Err(object_store::Error::AlreadyExists { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// [`commit`] to a published table: after the new version is created, the table's entry
/// must still be there with the same id. A table dropped (or dropped and created anew)
/// meanwhile gets nothing: the version is deleted again and the statement fails, so no
/// acknowledged write is orphaned. (A drop deletes the entry before it lists what to
/// delete, so a version created before this check is either seen and deleted by the drop,
/// after a successful INSERT, or taken back here.)
pub async fn commit_to_published(
    store: &dyn ObjectStore,
    dir: &Path,
    id: &str,
    added: &[String],
    removed: &[String],
) -> Result<u64> {
    let version = commit(store, dir, id, added, removed).await?;
    // The entry as created is enough: its id is what a drop or a new table changes.
    match read_json::<Entry>(store, &entry_path(dir)).await? {
        Some(created) if created.id() == id => Ok(version),
        _ => {
            let _ = store.delete(&manifest_path(dir, id, version)).await;
            Err(super::view_expansion::carried(flotilla_proto::FlotillaError::new(
                flotilla_proto::ErrorCode::TableNotFound,
                format!("Table {dir} was dropped while the statement ran; nothing was written"),
            )))
        }
    }
}

/// What [`vacuum`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vacuumed {
    pub manifests: usize,
    pub data_files: usize,
}

/// Deletes what no reader of table `id` in `dir` can need any more: manifest versions
/// replaced by a newer one more than `retention` ago (the latest always stays), manifests
/// and entry revisions of earlier tables of the name older than `retention` (a drop that
/// did not finish), and data files that no remaining manifest lists and that are older than
/// `retention` (files compaction replaced, files of writers that failed or died before
/// their commit). A reader that started less than `retention` ago, and a writer that
/// started less than `retention` ago, lose nothing.
pub async fn vacuum(
    store: &Arc<dyn ObjectStore>,
    dir: &Path,
    id: &str,
    retention: std::time::Duration,
) -> Result<Vacuumed> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let (_, metadata) = files_store::list_dir(store.as_ref(), &dir.clone().join(META_DIR)).await?;
    let prefix = format!("{id}.v");
    let mut versions: Vec<(u64, chrono::DateTime<chrono::Utc>)> = metadata
        .iter()
        .filter_map(|o| Some((o.location.filename()?.strip_prefix(prefix.as_str())?.parse().ok()?, o.last_modified)))
        .collect();
    versions.sort();
    // A version stays while a reader may use it: it is the latest, or the one after it (which
    // replaced it) was made less than `retention` ago.
    let (mut kept, mut expired) = (Vec::new(), Vec::new());
    for (index, (version, _)) in versions.iter().enumerate() {
        match versions.get(index + 1) {
            Some((_, replaced_at)) if *replaced_at < cutoff => expired.push(manifest_path(dir, id, *version)),
            _ => kept.push(*version),
        }
    }
    // Manifests and revisions of earlier tables of this name (never the entry itself).
    let earlier = metadata.iter().filter(|o| {
        let name = o.location.filename().unwrap_or_default();
        name != ENTRY_FILE && !name.starts_with(id) && name.contains(".v") && o.last_modified < cutoff
    });
    expired.extend(earlier.map(|o| o.location.clone()));
    let mut referenced = std::collections::HashSet::new();
    for version in kept {
        let path = manifest_path(dir, id, version);
        if let Some(manifest) = read_json::<Manifest>(store.as_ref(), &path).await? {
            referenced.extend(manifest.files);
        }
    }
    let (_, data) = files_store::list_dir(store.as_ref(), &dir.clone().join(DATA_DIR)).await?;
    let unreferenced: Vec<Path> = data
        .into_iter()
        .filter(|o| o.last_modified < cutoff)
        .filter(|o| o.location.filename().is_some_and(|name| !referenced.contains(&format!("{DATA_DIR}/{name}"))))
        .map(|o| o.location)
        .collect();
    let done = Vacuumed { manifests: expired.len(), data_files: unreferenced.len() };
    // Manifests first: no manifest ever lists a file that is gone.
    files_store::delete_all(store, expired).await?;
    files_store::delete_all(store, unreferenced).await?;
    Ok(done)
}

/// A table the connector created, at its latest committed version.
#[derive(Debug)]
pub struct FilesTable {
    store: Arc<dyn ObjectStore>,
    dir: Path,
    /// The directory's URL, ending in `/`, as DataFusion reads it.
    url: String,
    meta: TableMeta,
    schema: SchemaRef,
    manifest: Manifest,
    /// Its entry exists (else it is a new table, written before it is published).
    published: bool,
    /// What a write into it replaces (a compaction's small files; empty for INSERT).
    replaces: Vec<String>,
}

impl FilesTable {
    /// The table `meta` describes, in `dir` of `root`, at its latest version; `published`:
    /// its entry exists (false for a table being created).
    pub async fn open(root: &super::files_store::Root, dir: Path, meta: TableMeta, published: bool) -> Result<Self> {
        let schema = meta.schema()?;
        let manifest = read_manifest(root.store().as_ref(), &dir, &meta.id).await?;
        let url = format!("{}/", root.url_of(&dir));
        Ok(Self { store: root.store().clone(), dir, url, meta, schema, manifest, published, replaces: Vec::new() })
    }

    pub fn meta(&self) -> &TableMeta {
        &self.meta
    }

    /// The store the table lives in.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The table's directory in its store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The committed data files smaller than `threshold` bytes, with their sizes.
    pub async fn small_files(&self, threshold: u64) -> Result<Vec<(String, u64)>> {
        let (_, objects) = files_store::list_dir(self.store.as_ref(), &self.dir.clone().join(DATA_DIR)).await?;
        let sizes: std::collections::HashMap<String, u64> = objects
            .into_iter()
            .filter_map(|o| Some((format!("{DATA_DIR}/{}", o.location.filename()?), o.size)))
            .collect();
        Ok(self
            .manifest
            .files
            .iter()
            .filter_map(|file| Some((file.clone(), *sizes.get(file)?)))
            .filter(|(_, size)| *size < threshold)
            .collect())
    }

    /// `files` of this table as a table of their own, whose writes replace them: a scan of
    /// it, written into it, rewrites those files (compaction).
    pub fn rewriting(&self, files: Vec<String>) -> FilesTable {
        FilesTable {
            store: self.store.clone(),
            dir: self.dir.clone(),
            url: self.url.clone(),
            meta: self.meta.clone(),
            schema: self.schema.clone(),
            manifest: Manifest { version: self.manifest.version, files: files.clone() },
            published: self.published,
            replaces: files,
        }
    }
}

#[async_trait]
impl TableProvider for FilesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Every filter reaches the scan (as for a listing table of the same files): Parquet row
    /// groups and pages its statistics rule out are skipped; the rows are still filtered
    /// above the scan (inexact).
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.manifest.files.is_empty() {
            return EmptyTable::new(self.schema.clone()).scan(state, projection, filters, limit).await;
        }
        let format = format_of(&self.meta.format)
            .ok_or_else(|| DataFusionError::Execution(format!("unknown table format {}", self.meta.format)))?;
        let urls = self
            .manifest
            .files
            .iter()
            .map(|file| ListingTableUrl::parse(format!("{}{file}", self.url)))
            .collect::<Result<Vec<_>>>()?;
        let options = ListingOptions::new(format).with_file_extension(format!(".{}", self.meta.format));
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(self.schema.clone());
        ListingTable::try_new(config)?.scan(state, projection, filters, limit).await
    }

    /// Each partition of `input` writes one data file of the table (on the worker running
    /// it); the files are committed together once every partition is done.
    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::NotImplemented(format!(
                "{insert_op} is not supported by the files connector"
            )));
        }
        let spec = WriteSpec {
            url: format!("{}{DATA_DIR}/", self.url),
            format: self.meta.format.clone(),
            prefix: format!(
                "{}-{}-{:08x}",
                self.meta.id,
                chrono::Utc::now().format("%Y%m%d_%H%M%S"),
                rand::random::<u32>()
            ),
        };
        let prefix = spec.prefix.clone();
        let writer = Arc::new(FilesWriteExec::new(input, spec)?);
        let coalesced = Arc::new(CoalescePartitionsExec::new(writer));
        let (store, dir, id) = (self.store.clone(), self.dir.clone(), self.meta.id.clone());
        let commit = FilesCommitExec::new(coalesced, store, dir, id, self.published, prefix);
        Ok(Arc::new(commit.replacing(self.replaces.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_all_land_in_order() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let dir = Path::from("sales/orders");
        let schema = Schema::new(vec![Field::new("a", DataType::Decimal128(15, 2), true)]);
        let meta = TableMeta::new("parquet", &schema);
        let entry = Entry::Table(meta.clone());
        write_entry(store.as_ref(), &dir, &entry, PutMode::Create).await.unwrap();
        let taken = write_entry(store.as_ref(), &dir, &entry, PutMode::Create).await;
        assert!(matches!(taken, Err(object_store::Error::AlreadyExists { .. })), "{taken:?}");
        let Some(Entry::Table(read)) = read_entry(store.as_ref(), &dir).await.unwrap() else { panic!("a table") };
        assert_eq!(read.schema().unwrap().field(0).data_type(), &DataType::Decimal128(15, 2));
        let commits: Vec<_> = (0..8)
            .map(|i| {
                let (store, dir, id) = (store.clone(), dir.clone(), meta.id.clone());
                tokio::spawn(
                    async move { commit(store.as_ref(), &dir, &id, &[format!("data/f{i}.parquet")], &[]).await },
                )
            })
            .collect();
        let mut versions = Vec::new();
        for commit in commits {
            versions.push(commit.await.unwrap().unwrap());
        }
        versions.sort();
        assert_eq!(versions, (1..=8).collect::<Vec<_>>(), "one version each, none lost");
        let manifest = read_manifest(store.as_ref(), &dir, &meta.id).await.unwrap();
        assert_eq!(manifest.version, 8);
        assert_eq!(manifest.files.len(), 8, "every commit's file: {manifest:?}");
        let other = read_manifest(store.as_ref(), &dir, "another-id").await.unwrap();
        assert_eq!(other, Manifest::default(), "an earlier table's manifests are not this one's");
        assert_eq!(objects_of(store.as_ref(), &dir, &meta.id).await.unwrap().len(), 8);
    }

    #[tokio::test]
    async fn a_commit_to_a_table_dropped_meanwhile_is_taken_back() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let dir = Path::from("sales/orders");
        let schema = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        let meta = TableMeta::new("parquet", &schema);
        write_entry(store.as_ref(), &dir, &Entry::Table(meta.clone()), PutMode::Create).await.unwrap();
        assert_eq!(
            commit_to_published(store.as_ref(), &dir, &meta.id, &["data/a.parquet".into()], &[]).await.unwrap(),
            1
        );
        // Dropped, then created anew under the same name: a late commit of the old id fails.
        store.delete(&entry_path(&dir)).await.unwrap();
        let error =
            commit_to_published(store.as_ref(), &dir, &meta.id, &["data/b.parquet".into()], &[]).await.unwrap_err();
        assert_eq!(crate::error::from_datafusion(&error).code, flotilla_proto::ErrorCode::TableNotFound);
        let newer = TableMeta::new("parquet", &schema);
        write_entry(store.as_ref(), &dir, &Entry::Table(newer), PutMode::Create).await.unwrap();
        assert!(commit_to_published(store.as_ref(), &dir, &meta.id, &["data/c.parquet".into()], &[]).await.is_err());
        let manifest = read_manifest(store.as_ref(), &dir, &meta.id).await.unwrap();
        assert_eq!(manifest.version, 1, "the refused versions were deleted: {manifest:?}");
    }

    fn comment_on(entry: &mut Entry, text: &str) -> Result<(), flotilla_proto::FlotillaError> {
        match entry {
            Entry::Table(meta) => {
                meta.comment = Some(match &meta.comment {
                    Some(before) => format!("{before},{text}"),
                    None => text.to_string(),
                });
                Ok(())
            }
            Entry::View(_) => Err(flotilla_proto::FlotillaError::user("a view")),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_revisions_all_land_and_none_revives_a_dropped_entry() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let dir = Path::from("sales/orders");
        let meta = TableMeta::new("parquet", &Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        write_entry(store.as_ref(), &dir, &Entry::Table(meta.clone()), PutMode::Create).await.unwrap();
        let changes: Vec<_> = (0..8)
            .map(|i| {
                let (store, dir, id) = (store.clone(), dir.clone(), meta.id.clone());
                tokio::spawn(
                    async move { revise_entry(store.as_ref(), &dir, &id, |e| comment_on(e, &i.to_string())).await },
                )
            })
            .collect();
        for change in changes {
            change.await.unwrap().unwrap();
        }
        let Some((Entry::Table(now), revision)) = read_entry_revision(store.as_ref(), &dir).await.unwrap() else {
            panic!("a table")
        };
        assert_eq!(revision, 8);
        let mut seen: Vec<&str> = now.comment.as_deref().unwrap().split(',').collect();
        seen.sort();
        assert_eq!(seen, ["0", "1", "2", "3", "4", "5", "6", "7"], "no change lost");
        // Dropped: a late change fails and leaves nothing; the name stays dropped.
        store.delete(&entry_path(&dir)).await.unwrap();
        let late = revise_entry(store.as_ref(), &dir, &meta.id, |e| comment_on(e, "late")).await;
        assert!(matches!(late, Err(RevisionError::Gone)), "{late:?}");
        assert!(read_entry(store.as_ref(), &dir).await.unwrap().is_none());
        // Created anew under another id: a change for the old id does not touch it.
        let newer = TableMeta::new("parquet", &Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        write_entry(store.as_ref(), &dir, &Entry::Table(newer.clone()), PutMode::Create).await.unwrap();
        let stale = revise_entry(store.as_ref(), &dir, &meta.id, |e| comment_on(e, "stale")).await;
        assert!(matches!(stale, Err(RevisionError::Gone)), "{stale:?}");
        assert_eq!(read_entry(store.as_ref(), &dir).await.unwrap(), Some(Entry::Table(newer)));
        let refused =
            revise_entry(store.as_ref(), &dir, &meta.id, |_| Err(flotilla_proto::FlotillaError::user("x"))).await;
        assert!(matches!(refused, Err(RevisionError::Gone)));
    }
}
