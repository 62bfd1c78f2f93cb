//! Helpers shared by this crate's unit tests.

use std::path::PathBuf;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

/// `batch` written as one Parquet file and registered as table `t` in a DataFusion context
/// of `partitions` target partitions; the file's folder is removed when dropped, also when
/// the test fails.
pub(crate) struct ParquetTable {
    pub ctx: SessionContext,
    pub path: PathBuf,
    dir: PathBuf,
}

impl ParquetTable {
    pub async fn new(batch: &RecordBatch, partitions: usize) -> Self {
        let dir =
            std::env::temp_dir().join(format!("flotilla-parquet-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.parquet");
        let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
        ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
        Self { ctx, path, dir }
    }
}

impl Drop for ParquetTable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
