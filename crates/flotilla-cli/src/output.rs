//! Rendering results the way the Trino CLI does, and the live progress line.

use std::io::{IsTerminal, Write};

use comfy_table::{presets::ASCII_FULL_CONDENSED, ContentArrangement, Table};
use flotilla_protocol::StatementStats;
use serde_json::Value;

use crate::client::QueryOutcome;

/// `--output-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Aligned,
    Vertical,
    Csv,
    CsvHeader,
    Tsv,
    TsvHeader,
    Json,
    Null,
}

impl OutputFormat {
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text.to_ascii_uppercase().as_str() {
            "ALIGNED" => OutputFormat::Aligned,
            "VERTICAL" => OutputFormat::Vertical,
            "CSV" => OutputFormat::Csv,
            "CSV_HEADER" => OutputFormat::CsvHeader,
            "TSV" => OutputFormat::Tsv,
            "TSV_HEADER" => OutputFormat::TsvHeader,
            "JSON" => OutputFormat::Json,
            "NULL" => OutputFormat::Null,
            other => {
                return Err(format!(
                    "unknown output format '{other}' (ALIGNED, VERTICAL, CSV, CSV_HEADER, TSV, TSV_HEADER, JSON, NULL)"
                ))
            }
        })
    }
}

/// A value as text, the way the Trino CLI prints it (`NULL` for nulls in aligned output).
fn text(value: &Value, null: &str) -> String {
    match value {
        Value::Null => null.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn csv_field(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        other => format!("\"{}\"", text(other, "").replace('"', "\"\"")),
    }
}

fn tsv_field(value: &Value) -> String {
    text(value, "").replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n")
}

pub fn render(out: &mut impl Write, result: &QueryOutcome, format: OutputFormat) -> std::io::Result<()> {
    // Statements that are not queries print their update type, in aligned output only, as
    // the Trino CLI does.
    if let Some(update_type) = &result.update_type {
        if format == OutputFormat::Aligned {
            writeln!(out, "{update_type}")?;
        }
        return Ok(());
    }
    if result.columns.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = result.columns.iter().map(|c| c.name.as_str()).collect();
    match format {
        OutputFormat::Aligned => {
            let mut table = Table::new();
            table.load_preset(ASCII_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Disabled);
            table.set_header(names.clone());
            for row in &result.rows {
                table.add_row(row.iter().map(|v| text(v, "NULL")).collect::<Vec<_>>());
            }
            writeln!(out, "{table}")?;
            let count = result.rows.len();
            writeln!(out, "({count} row{})", if count == 1 { "" } else { "s" })?;
        }
        OutputFormat::Vertical => {
            let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
            for (index, row) in result.rows.iter().enumerate() {
                writeln!(out, "-[ RECORD {} ]-", index + 1)?;
                for (name, value) in names.iter().zip(row) {
                    writeln!(out, "{name:width$} | {}", text(value, "NULL"))?;
                }
            }
        }
        OutputFormat::Csv | OutputFormat::CsvHeader => {
            if format == OutputFormat::CsvHeader {
                writeln!(
                    out,
                    "{}",
                    names.iter().map(|n| format!("\"{}\"", n.replace('"', "\"\""))).collect::<Vec<_>>().join(",")
                )?;
            }
            for row in &result.rows {
                writeln!(out, "{}", row.iter().map(csv_field).collect::<Vec<_>>().join(","))?;
            }
        }
        OutputFormat::Tsv | OutputFormat::TsvHeader => {
            if format == OutputFormat::TsvHeader {
                writeln!(out, "{}", names.join("\t"))?;
            }
            for row in &result.rows {
                writeln!(out, "{}", row.iter().map(tsv_field).collect::<Vec<_>>().join("\t"))?;
            }
        }
        OutputFormat::Json => {
            for row in &result.rows {
                let object: serde_json::Map<String, Value> =
                    names.iter().map(|n| n.to_string()).zip(row.iter().cloned()).collect();
                writeln!(out, "{}", Value::Object(object))?;
            }
        }
        OutputFormat::Null => {}
    }
    Ok(())
}

/// The one-line progress display on stderr while a query runs.
pub struct Progress {
    enabled: bool,
    shown: bool,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Self { enabled: enabled && std::io::stderr().is_terminal(), shown: false }
    }

    pub fn update(&mut self, stats: &StatementStats) {
        if !self.enabled {
            return;
        }
        let line = format!(
            "\r{} splits {}/{} rows {} bytes {} {:.1}s",
            stats.state,
            stats.completed_splits,
            stats.total_splits,
            stats.processed_rows,
            stats.processed_bytes,
            stats.elapsed_time_millis as f64 / 1000.0
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{line}\x1b[K");
        let _ = err.flush();
        self.shown = true;
    }

    pub fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_protocol::Column;
    use serde_json::json;

    fn outcome() -> QueryOutcome {
        QueryOutcome {
            columns: vec![
                Column { name: "a".into(), type_name: "bigint".into(), type_signature: json!({}) },
                Column { name: "b".into(), type_name: "varchar".into(), type_signature: json!({}) },
            ],
            rows: vec![vec![json!(1), json!("x\"y")], vec![json!(null), json!("t\tz")]],
            ..Default::default()
        }
    }

    fn render_text(format: OutputFormat) -> String {
        let mut out = Vec::new();
        render(&mut out, &outcome(), format).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_and_escapes() {
        assert_eq!(render_text(OutputFormat::Csv), "\"1\",\"x\"\"y\"\n,\"t\tz\"\n");
        assert_eq!(render_text(OutputFormat::CsvHeader).lines().next(), Some("\"a\",\"b\""));
    }

    #[test]
    fn tsv_and_json() {
        assert_eq!(render_text(OutputFormat::Tsv), "1\tx\"y\n\tt\\tz\n");
        assert_eq!(render_text(OutputFormat::Json).lines().next(), Some("{\"a\":1,\"b\":\"x\\\"y\"}"));
    }

    #[test]
    fn aligned_shows_nulls_and_count() {
        let text = render_text(OutputFormat::Aligned);
        assert!(text.contains("NULL"));
        assert!(text.ends_with("(2 rows)\n"));
    }
}
