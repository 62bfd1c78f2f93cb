//! SQL behaviour pinned in golden files (`tests/sql/*.slt`, sqllogictest format), each file
//! run in its own client session against a real coordinator, through the protocol, so the
//! expected values are what Trino clients receive.
//!
//! Regenerate the expectations after an intended change with
//! `FLOTILLA_SLT_UPDATE=1 cargo nextest run -E 'test(golden)'`, then review the diff.

use std::path::PathBuf;

use flotilla_cli::{Client, ClientError};
use serde_json::Value;
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::harness::TestCluster;

struct FlotillaDb {
    client: Client,
}

fn column_type(trino_type: &str) -> DefaultColumnType {
    match trino_type {
        "tinyint" | "smallint" | "integer" | "bigint" => DefaultColumnType::Integer,
        t if t == "double" || t == "real" || t.starts_with("decimal") => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_string(),
        Value::String(s) if s.is_empty() => "(empty)".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for FlotillaDb {
    type Error = ClientError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let outcome = self.client.run(sql, |_| {}).await?;
        if outcome.update_type.is_some() {
            return Ok(DBOutput::StatementComplete(outcome.update_count.unwrap_or(0) as u64));
        }
        Ok(DBOutput::Rows {
            types: outcome.columns.iter().map(|c| column_type(&c.type_name)).collect(),
            rows: outcome.rows.iter().map(|row| row.iter().map(text).collect()).collect(),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "flotilla"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_sql_files() {
    let cluster = TestCluster::start_default().await;
    let directory = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/sql"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", directory.display());
    let update = std::env::var_os("FLOTILLA_SLT_UPDATE").is_some();
    let mut failures = Vec::new();
    for file in &files {
        let url = cluster.url();
        let mut runner = sqllogictest::Runner::new(move || {
            let url = url.clone();
            async move { Ok(FlotillaDb { client: Client::new(&url, "slt")? }) }
        });
        if update {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::strict_column_validator,
                )
                .await
                .unwrap();
        } else if let Err(error) = runner.run_file_async(file).await {
            failures.push(format!("{}: {error}", file.display()));
        }
    }
    cluster.shutdown().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
