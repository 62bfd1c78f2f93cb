//! Tables and views created through the `files` connector. A name's directory holds its
//! entry, versioned manifests and data files:
//!
//! ```text
//!   orders/
//!     _flotilla/table                 the entry: a table (id, format, columns, comments)
//!                                     or a view (its SQL) — JSON
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

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::ExecutionPlan;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode};
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
        Self { id: format!("{:016x}", rand::random::<u64>()), format: format.to_string(), columns, comment: None }
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

/// The entry of the name at `dir`; `None` when nothing was created there (or it was
/// dropped).
pub async fn read_entry(store: &dyn ObjectStore, dir: &Path) -> object_store::Result<Option<Entry>> {
    read_json(store, &entry_path(dir)).await
}

/// Creates or replaces the entry (`PutMode::Create` fails with `AlreadyExists` when taken).
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

/// Adds `files` to table `id` in one new manifest version; returns that version.
pub async fn commit(store: &dyn ObjectStore, dir: &Path, id: &str, files: &[String]) -> Result<u64> {
    loop {
        let current = read_manifest(store, dir, id).await?;
        let next =
            Manifest { version: current.version + 1, files: current.files.iter().chain(files).cloned().collect() };
        match write_json(store, &manifest_path(dir, id, next.version), &next, PutMode::Create).await {
            Ok(()) => return Ok(next.version),
            // Another commit took this version: build on it.
            Err(object_store::Error::AlreadyExists { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
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
}

impl FilesTable {
    /// The table `meta` describes, in `dir` of `root`, at its latest version.
    pub async fn open(root: &super::files_store::Root, dir: Path, meta: TableMeta) -> Result<Self> {
        let schema = meta.schema()?;
        let manifest = read_manifest(root.store().as_ref(), &dir, &meta.id).await?;
        let url = format!("{}/", root.url_of(&dir));
        Ok(Self { store: root.store().clone(), dir, url, meta, schema, manifest })
    }

    pub fn meta(&self) -> &TableMeta {
        &self.meta
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
        let writer = Arc::new(FilesWriteExec::new(input, spec)?);
        let coalesced = Arc::new(CoalescePartitionsExec::new(writer));
        Ok(Arc::new(FilesCommitExec::new(coalesced, self.store.clone(), self.dir.clone(), self.meta.id.clone())))
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
                tokio::spawn(async move { commit(store.as_ref(), &dir, &id, &[format!("data/f{i}.parquet")]).await })
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
}
