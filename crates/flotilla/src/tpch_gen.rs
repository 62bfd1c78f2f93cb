//! `flotilla tpch-gen`: the TPC-H tables as Parquet files, straight from tpchgen (one
//! generator part, no Flotilla scan code involved), so an independent engine can answer the
//! same queries over the same data.

use std::fs::File;
use std::path::Path;

use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use flotilla_sql::catalog::tpch::TpchTable;

pub fn write_parquet(scale: f64, output: &Path) -> Result<(), String> {
    if !(scale > 0.0 && scale.is_finite()) {
        return Err(format!("scale must be positive, got {scale}"));
    }
    std::fs::create_dir_all(output).map_err(|e| format!("failed to create {}: {e}", output.display()))?;
    for table in TpchTable::ALL {
        let path = output.join(format!("{}.parquet", table.name()));
        let file = File::create(&path).map_err(|e| format!("failed to create {}: {e}", path.display()))?;
        // Snappy, as tpchgen-cli writes them; row groups of ArrowWriter's default size
        // (1,048,576 rows) with page statistics, so readers can prune.
        let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let mut writer = ArrowWriter::try_new(file, table.standard_schema(), Some(properties))
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
        let mut failure: Option<String> = None;
        table
            .generate(scale, 1, 1, |batch| match writer.write(&batch) {
                Ok(()) => true,
                Err(e) => {
                    failure = Some(e.to_string());
                    false
                }
            })
            .map_err(|e| e.to_string())?;
        if let Some(message) = failure {
            return Err(format!("failed to write {}: {message}", path.display()));
        }
        writer.close().map_err(|e| format!("failed to finish {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
