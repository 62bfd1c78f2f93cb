//! The two operators of a write into a `files` table. [`FilesWriteExec`] writes each input
//! partition to one data file of the table and outputs the file's name and row count; it
//! runs wherever its input runs (in a distributed plan, on the workers, which write to the
//! shared directory or bucket in parallel, through the object store their node registered
//! for the table's URL). [`FilesCommitExec`] gathers the names on the coordinator and
//! commits them in one manifest version (see `files_table`), then reports the rows written,
//! as DataFusion's `count`. A query that fails or is cancelled before the commit changes
//! nothing readers see: a file appears only when its upload completes, and is read only
//! once a manifest lists it.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties};
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// Where and how a write goes (what a worker needs to run its part).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteSpec {
    /// The URL of the table's data folder (`file:///...`, `s3://...`, ending in `/`): the
    /// same on every node.
    pub url: String,
    /// `parquet`, `csv` or `json`.
    pub format: String,
    /// Start of the data files' names (the write's own, so concurrent writes never collide).
    pub prefix: String,
}

fn written_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("file", DataType::Utf8, false), Field::new("rows", DataType::UInt64, false)]))
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("count", DataType::UInt64, false)]))
}

fn properties(schema: SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

/// The one input of an operator being rebuilt.
pub(crate) fn only_child(mut children: Vec<Arc<dyn ExecutionPlan>>, operator: &str) -> Result<Arc<dyn ExecutionPlan>> {
    match children.len() {
        1 => Ok(children.remove(0)),
        n => Err(DataFusionError::Internal(format!("{operator} has one input, not {n}"))),
    }
}

/// Writes each input partition to one file of the table.
#[derive(Debug)]
pub struct FilesWriteExec {
    input: Arc<dyn ExecutionPlan>,
    spec: WriteSpec,
    properties: Arc<PlanProperties>,
}

impl FilesWriteExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, spec: WriteSpec) -> Result<Self> {
        if super::files::format_of(&spec.format).is_none() {
            return Err(DataFusionError::Plan(format!("unknown table format {}", spec.format)));
        }
        let partitions = input.output_partitioning().partition_count();
        Ok(Self { input, spec, properties: properties(written_schema(), partitions) })
    }

    pub fn spec(&self) -> &WriteSpec {
        &self.spec
    }
}

impl DisplayAs for FilesWriteExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "FilesWriteExec: url={}, format={}", self.spec.url, self.spec.format)
    }
}

/// One data file being uploaded: it appears whole when finished, and never when dropped
/// before (a local upload removes its staging file, an S3 one is never completed).
enum Writer {
    Parquet(AsyncArrowWriter<BufWriter>),
    /// CSV (with a header row) or JSON lines, encoded a batch at a time.
    Rows {
        upload: BufWriter,
        csv: bool,
        first: bool,
    },
}

impl Writer {
    fn open(format: &str, store: Arc<dyn ObjectStore>, path: Path, schema: SchemaRef) -> Result<Self> {
        let upload = BufWriter::new(store, path);
        Ok(match format {
            "parquet" => Writer::Parquet(AsyncArrowWriter::try_new(upload, schema, None)?),
            format => Writer::Rows { upload, csv: format == "csv", first: true },
        })
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            Writer::Parquet(writer) => writer.write(batch).await?,
            Writer::Rows { upload, csv, first } => {
                let mut encoded = Vec::new();
                if *csv {
                    let mut writer =
                        datafusion::arrow::csv::WriterBuilder::new().with_header(*first).build(&mut encoded);
                    writer.write(batch)?;
                } else {
                    let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut encoded);
                    writer.write(batch)?;
                    writer.finish()?;
                }
                *first = false;
                upload.write_all(&encoded).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
            }
        }
        Ok(())
    }

    async fn finish(self) -> Result<()> {
        match self {
            Writer::Parquet(writer) => {
                writer.close().await?;
            }
            Writer::Rows { mut upload, .. } => {
                upload.shutdown().await.map_err(|e| DataFusionError::External(Box::new(e)))?;
            }
        }
        Ok(())
    }
}

impl ExecutionPlan for FilesWriteExec {
    fn name(&self) -> &str {
        "FilesWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(FilesWriteExec::new(only_child(children, self.name())?, self.spec.clone())?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let url = url::Url::parse(&self.spec.url)
            .map_err(|e| DataFusionError::Execution(format!("bad table URL {}: {e}", self.spec.url)))?;
        let store = context.runtime_env().object_store_registry.get_store(&url)?;
        let folder = Path::from_url_path(url.path())?;
        let mut input = self.input.execute(partition, context)?;
        let spec = self.spec.clone();
        let schema = self.input.schema();
        let output = futures::stream::once(async move {
            let name = format!("{}-{partition}-{:016x}.{}", spec.prefix, rand::random::<u64>(), spec.format);
            let path = folder.join(name.as_str());
            let mut writer: Option<Writer> = None;
            let mut rows = 0u64;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                if writer.is_none() {
                    writer = Some(Writer::open(&spec.format, store.clone(), path.clone(), schema.clone())?);
                }
                writer.as_mut().expect("opened").write(&batch).await?;
                rows += batch.num_rows() as u64;
            }
            let files: Vec<String> = match writer {
                Some(writer) => {
                    writer.finish().await?;
                    vec![format!("{}/{name}", super::files_table::DATA_DIR)]
                }
                None => Vec::new(),
            };
            let counts = vec![rows; files.len()];
            let columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(files)), Arc::new(UInt64Array::from(counts))];
            Ok(RecordBatch::try_new(written_schema(), columns)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(written_schema(), output)))
    }
}

/// Commits what the writers wrote, in one manifest version of the table; outputs the row
/// count.
#[derive(Debug)]
pub struct FilesCommitExec {
    input: Arc<dyn ExecutionPlan>,
    /// The catalog's store, the table's directory in it, and the table's id.
    store: Arc<dyn ObjectStore>,
    dir: Path,
    id: String,
    /// The table is published (an INSERT): the commit must still find its entry, with its
    /// id. A new table's (CREATE TABLE AS) is published after its commit instead.
    published: bool,
    /// Start of the names of the data files this write makes ([`WriteSpec::prefix`]): what
    /// is deleted when it does not commit.
    prefix: String,
    /// Committed files the written ones replace (a compaction); empty for INSERT.
    replaces: Vec<String>,
    properties: Arc<PlanProperties>,
}

impl FilesCommitExec {
    /// The same commit, replacing `files` with what it writes.
    pub fn replacing(self, files: Vec<String>) -> Self {
        Self { replaces: files, ..self }
    }

    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        store: Arc<dyn ObjectStore>,
        dir: Path,
        id: String,
        published: bool,
        prefix: String,
    ) -> Self {
        Self {
            input,
            store,
            dir,
            id,
            published,
            prefix,
            replaces: Vec::new(),
            properties: properties(count_schema(), 1),
        }
    }
}

/// Deletes the data files of a write that did not commit (it failed, was cancelled, or lost
/// a worker): dropped armed, it sweeps the files named with the write's prefix, now and again
/// after writers cancelled elsewhere may have finished an upload in flight.
struct Uncommitted {
    store: Arc<dyn ObjectStore>,
    data: Path,
    prefix: String,
    armed: bool,
}

impl Drop for Uncommitted {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (store, data, prefix) = (self.store.clone(), self.data.clone(), self.prefix.clone());
        super::files_store::sweep_later(move || {
            let (store, data, prefix) = (store.clone(), data.clone(), prefix.clone());
            async move {
                let Ok((_, objects)) = super::files_store::list_dir(store.as_ref(), &data).await else { return };
                let written: Vec<Path> = objects
                    .into_iter()
                    .map(|o| o.location)
                    .filter(|p| p.filename().is_some_and(|name| name.starts_with(prefix.as_str())))
                    .collect();
                let _ = super::files_store::delete_all(&store, written).await;
            }
        });
    }
}

impl DisplayAs for FilesCommitExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "FilesCommitExec: table={}", self.dir)
    }
}

impl ExecutionPlan for FilesCommitExec {
    fn name(&self) -> &str {
        "FilesCommitExec"
    }

    /// One stream of the writers' results: the planner keeps (or puts) a coalesce under the
    /// commit, which is where the distributed planner cuts the stage, so the writers run on
    /// the workers.
    fn required_input_distribution(&self) -> Vec<datafusion::physical_plan::Distribution> {
        vec![datafusion::physical_plan::Distribution::SinglePartition]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child(children, self.name())?;
        Ok(Arc::new(
            FilesCommitExec::new(
                input,
                self.store.clone(),
                self.dir.clone(),
                self.id.clone(),
                self.published,
                self.prefix.clone(),
            )
            .replacing(self.replaces.clone()),
        ))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("FilesCommitExec has one partition, not {partition}")));
        }
        let input = self.input.clone();
        let (store, dir, id, published) = (self.store.clone(), self.dir.clone(), self.id.clone(), self.published);
        let replaces = self.replaces.clone();
        let data = dir.clone().join(super::files_table::DATA_DIR);
        let uncommitted = Uncommitted { store: store.clone(), data, prefix: self.prefix.clone(), armed: true };
        let output = futures::stream::once(async move {
            // The guard lives (and is dropped) with this future: a cancelled write drops it.
            let mut uncommitted = uncommitted;
            let batches = datafusion::physical_plan::collect(input, context).await?;
            let mut files = Vec::new();
            let mut rows = 0u64;
            for batch in &batches {
                let names = batch.column(0).as_any().downcast_ref::<StringArray>().expect("file names");
                let counts = batch.column(1).as_any().downcast_ref::<UInt64Array>().expect("row counts");
                for i in 0..batch.num_rows() {
                    files.push(names.value(i).to_string());
                    rows += counts.value(i);
                }
            }
            if !files.is_empty() {
                let committed = match published {
                    true => super::files_table::commit_to_published(store.as_ref(), &dir, &id, &files, &replaces).await,
                    false => super::files_table::commit(store.as_ref(), &dir, &id, &files, &replaces).await,
                };
                if let Err(error) = committed {
                    // Refused: nothing refers to what this statement wrote. It goes before the
                    // statement answers (and `uncommitted` sweeps again for stragglers).
                    let written = files.iter().map(|file| Path::from(format!("{dir}/{file}")));
                    let _ = super::files_store::delete_all(&store, written.collect()).await;
                    return Err(error);
                }
            }
            uncommitted.armed = false;
            Ok(RecordBatch::try_new(count_schema(), vec![Arc::new(UInt64Array::from(vec![rows])) as ArrayRef])?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(count_schema(), output)))
    }
}
