//! `flotilla tpch-gen`: the TPC-H tables as Parquet files, straight from tpchgen (one
//! generator part, no Flotilla scan code involved), so an independent engine can answer the
//! same queries over the same data.

use std::fs::File;
use std::path::Path;

use datafusion::parquet::arrow::ArrowWriter;
use flotilla_sql::catalog::tpch::TpchTable;

pub fn write_parquet(scale: f64, output: &Path) -> Result<(), String> {
    if !(scale > 0.0 && scale.is_finite()) {
        return Err(format!("scale must be positive, got {scale}"));
    }
    std::fs::create_dir_all(output).map_err(|e| format!("failed to create {}: {e}", output.display()))?;
    for table in TpchTable::ALL {
        let path = output.join(format!("{}.parquet", table.name()));
        let file = File::create(&path).map_err(|e| format!("failed to create {}: {e}", path.display()))?;
        let mut writer: Option<ArrowWriter<File>> = None;
        let mut failure: Option<String> = None;
        let mut file = Some(file);
        table
            .generate(scale, 1, 1, |batch| {
                if writer.is_none() {
                    match ArrowWriter::try_new(file.take().expect("file is used once"), batch.schema(), None) {
                        Ok(created) => writer = Some(created),
                        Err(e) => {
                            failure = Some(e.to_string());
                            return false;
                        }
                    }
                }
                if let Some(w) = writer.as_mut() {
                    if let Err(e) = w.write(&batch) {
                        failure = Some(e.to_string());
                        return false;
                    }
                }
                true
            })
            .map_err(|e| e.to_string())?;
        if let Some(message) = failure {
            return Err(format!("failed to write {}: {message}", path.display()));
        }
        if let Some(w) = writer {
            w.close().map_err(|e| format!("failed to finish {}: {e}", path.display()))?;
        }
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
