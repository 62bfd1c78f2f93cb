//! Tables the `files` connector created: their metadata and committed files live in the
//! table directory's `_flotilla/` folder, so readers see only committed data.
//!
//! ```text
//!   orders/
//!     _flotilla/table          format, columns, comment (JSON)
//!     _flotilla/v00000001      manifest: the data files committed so far (JSON)
//!     _flotilla/v00000002      ... each commit writes the next version
//!     20261123_..._w0.parquet  data files, named by the writing query
//! ```
//!
//! A commit writes the next manifest version, listing the files before plus the new ones,
//! to a temporary name and hard-links it to `vNNNNNNNN`: linking fails if that version
//! exists, so of two concurrent commits one gets the version and the other reads it and
//! tries the next one (both land). Readers take the highest version, complete by
//! construction. Files written by a query that fails never reach a manifest: they are never
//! read (and are removed by the query when it can).

use std::path::{Path, PathBuf};
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
use serde::{Deserialize, Serialize};

use super::files::format_of;
use super::files_write::{FilesCommitExec, FilesWriteExec, WriteSpec};

/// The folder of a table directory holding Flotilla's metadata.
pub const META_DIR: &str = "_flotilla";
const TABLE_FILE: &str = "table";

/// What a table is: its format and columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMeta {
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
        Self { format: format.to_string(), columns, comment: None }
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
    /// Data file names, relative to the table directory.
    pub files: Vec<String>,
}

fn io_error(what: &str, path: &Path, error: std::io::Error) -> DataFusionError {
    DataFusionError::Execution(format!("{what} {}: {error}", path.display()))
}

/// Whether `dir` is a table the connector created.
pub fn is_managed(dir: &Path) -> bool {
    dir.join(META_DIR).join(TABLE_FILE).is_file()
}

/// Creates the metadata of a new, empty table in `dir` (which must exist).
pub fn create(dir: &Path, meta: &TableMeta) -> Result<()> {
    let meta_dir = dir.join(META_DIR);
    std::fs::create_dir_all(&meta_dir).map_err(|e| io_error("cannot create", &meta_dir, e))?;
    let text = serde_json::to_vec_pretty(meta).map_err(|e| DataFusionError::Execution(e.to_string()))?;
    let path = meta_dir.join(TABLE_FILE);
    std::fs::write(&path, text).map_err(|e| io_error("cannot write", &path, e))?;
    commit(dir, &[]).map(|_| ())
}

/// Replaces the table's metadata (its comments) atomically.
pub fn write_meta(dir: &Path, meta: &TableMeta) -> Result<()> {
    let meta_dir = dir.join(META_DIR);
    let temporary = meta_dir.join(format!(".table-{:016x}", rand::random::<u64>()));
    let text = serde_json::to_vec_pretty(meta).map_err(|e| DataFusionError::Execution(e.to_string()))?;
    std::fs::write(&temporary, text).map_err(|e| io_error("cannot write", &temporary, e))?;
    std::fs::rename(&temporary, meta_dir.join(TABLE_FILE)).map_err(|e| io_error("cannot replace", &meta_dir, e))
}

/// The comment of a table and of each of its columns, when the connector keeps them.
pub fn comments(table: &dyn TableProvider) -> Option<(Option<String>, Vec<Option<String>>)> {
    let table = (table as &dyn std::any::Any).downcast_ref::<FilesTable>()?;
    Some((table.meta.comment.clone(), table.meta.columns.iter().map(|c| c.comment.clone()).collect()))
}

pub fn read_meta(dir: &Path) -> Result<TableMeta> {
    let path = dir.join(META_DIR).join(TABLE_FILE);
    let text = std::fs::read(&path).map_err(|e| io_error("cannot read", &path, e))?;
    serde_json::from_slice(&text).map_err(|e| DataFusionError::Execution(format!("{}: {e}", path.display())))
}

fn version_name(version: u64) -> String {
    format!("v{version:08}")
}

/// The latest committed manifest (version 0, no files, before the first commit).
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let meta_dir = dir.join(META_DIR);
    let read = std::fs::read_dir(&meta_dir).map_err(|e| io_error("cannot list", &meta_dir, e))?;
    let latest = read
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_prefix('v')?.parse::<u64>().ok())
        .max();
    let Some(version) = latest else { return Ok(Manifest::default()) };
    let path = meta_dir.join(version_name(version));
    let text = std::fs::read(&path).map_err(|e| io_error("cannot read", &path, e))?;
    serde_json::from_slice(&text).map_err(|e| DataFusionError::Execution(format!("{}: {e}", path.display())))
}

/// Adds `files` to the table in one new manifest version; returns that version.
pub fn commit(dir: &Path, files: &[String]) -> Result<u64> {
    let meta_dir = dir.join(META_DIR);
    loop {
        let current = read_manifest(dir)?;
        let next =
            Manifest { version: current.version + 1, files: current.files.iter().chain(files).cloned().collect() };
        let temporary = meta_dir.join(format!(".{}-{}", version_name(next.version), rand::random::<u64>()));
        let text = serde_json::to_vec(&next).map_err(|e| DataFusionError::Execution(e.to_string()))?;
        std::fs::write(&temporary, text).map_err(|e| io_error("cannot write", &temporary, e))?;
        let linked = std::fs::hard_link(&temporary, meta_dir.join(version_name(next.version)));
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Ok(()) => return Ok(next.version),
            // Another commit took this version: build on it.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(io_error("cannot commit to", &meta_dir, error)),
        }
    }
}

/// A table the connector created, at its latest committed version.
#[derive(Debug)]
pub struct FilesTable {
    dir: PathBuf,
    meta: TableMeta,
    schema: SchemaRef,
    manifest: Manifest,
}

impl FilesTable {
    pub fn open(dir: &Path) -> Result<Self> {
        let meta = read_meta(dir)?;
        let schema = meta.schema()?;
        let manifest = read_manifest(dir)?;
        Ok(Self { dir: dir.to_path_buf(), meta, schema, manifest })
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
            .map(|file| ListingTableUrl::parse(self.dir.join(file).to_string_lossy()))
            .collect::<Result<Vec<_>>>()?;
        let options = ListingOptions::new(format).with_file_extension(format!(".{}", self.meta.format));
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(self.schema.clone());
        ListingTable::try_new(config)?.scan(state, projection, filters, limit).await
    }

    /// Each partition of `input` writes one file into the table directory (on the worker
    /// running it); the files are committed together once every partition is done.
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
            dir: self.dir.to_string_lossy().to_string(),
            format: self.meta.format.clone(),
            prefix: format!("{}-{:08x}", chrono::Utc::now().format("%Y%m%d_%H%M%S"), rand::random::<u32>()),
        };
        let writer = Arc::new(FilesWriteExec::new(input, spec)?);
        Ok(Arc::new(FilesCommitExec::new(Arc::new(CoalescePartitionsExec::new(writer)), self.dir.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_commits_all_land_in_order() {
        let dir = std::env::temp_dir().join(format!("flotilla-manifest-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let schema = Schema::new(vec![Field::new("a", DataType::Decimal128(15, 2), true)]);
        create(&dir, &TableMeta::new("parquet", &schema)).unwrap();
        assert_eq!(read_meta(&dir).unwrap().schema().unwrap().field(0).data_type(), &DataType::Decimal128(15, 2));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let dir = dir.clone();
                std::thread::spawn(move || commit(&dir, &[format!("f{i}.parquet")]).unwrap())
            })
            .collect();
        let mut versions: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        versions.sort();
        assert_eq!(versions, (2..=9).collect::<Vec<_>>(), "one version each, none lost");
        let manifest = read_manifest(&dir).unwrap();
        assert_eq!(manifest.version, 9);
        assert_eq!(manifest.files.len(), 8, "every commit's file: {manifest:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
