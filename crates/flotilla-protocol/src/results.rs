//! The JSON documents of `/v1/statement` responses, field for field as Trino sends them.

use flotilla_proto::FlotillaError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// One response of the statement protocol.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct QueryResults {
    pub id: String,
    pub info_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_cancel_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<Column>>,
    /// Never present without `columns`. Kept as raw JSON (an array of rows) so a server
    /// serialises each page once and a client parses it only when it reads the rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    pub stats: StatementStats,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<QueryError>,
    #[serde(default)]
    pub warnings: Vec<Warning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_count: Option<i64>,
}

impl QueryResults {
    /// The rows of `data`, parsed.
    pub fn rows(&self) -> Result<Vec<Vec<Value>>, serde_json::Error> {
        match &self.data {
            Some(raw) => serde_json::from_str(raw.get()),
            None => Ok(Vec::new()),
        }
    }
}

/// A result column: name, Trino type name and its structured signature.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub type_signature: Value,
}

/// Progress figures; clients show them and `cursor.stats` returns them.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatementStats {
    pub state: String,
    pub queued: bool,
    pub scheduled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_percentage: Option<f64>,
    pub nodes: u32,
    pub total_splits: u64,
    pub queued_splits: u64,
    pub running_splits: u64,
    pub completed_splits: u64,
    pub cpu_time_millis: u64,
    pub wall_time_millis: u64,
    pub queued_time_millis: u64,
    pub elapsed_time_millis: u64,
    pub processed_rows: u64,
    pub processed_bytes: u64,
    pub physical_input_bytes: u64,
    pub physical_written_bytes: u64,
    pub peak_memory_bytes: u64,
    pub spilled_bytes: u64,
    /// The stage tree of a distributed query (the coordinator's stage, with the workers'
    /// stages below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_stage: Option<StageStats>,
}

/// One stage of a query, as Trino's clients read it.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageStats {
    pub stage_id: String,
    pub state: String,
    pub done: bool,
    pub nodes: u32,
    pub total_splits: u64,
    pub queued_splits: u64,
    pub running_splits: u64,
    pub completed_splits: u64,
    pub cpu_time_millis: u64,
    pub wall_time_millis: u64,
    pub processed_rows: u64,
    pub processed_bytes: u64,
    pub physical_input_bytes: u64,
    pub failed_tasks: u32,
    pub coordinator_only: bool,
    pub sub_stages: Vec<StageStats>,
}

/// The `error` object, inside an HTTP 200 as Trino sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueryError {
    pub message: String,
    pub error_code: i32,
    pub error_name: String,
    pub error_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_location: Option<ErrorLocationJson>,
    pub failure_info: FailureInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorLocationJson {
    pub line_number: u32,
    pub column_number: u32,
}

/// Trino's `failureInfo`; clients read `type` and `message` from it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailureInfo {
    #[serde(rename = "type")]
    pub failure_type: String,
    pub message: String,
    #[serde(default)]
    pub suppressed: Vec<Value>,
    #[serde(default)]
    pub stack: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_location: Option<ErrorLocationJson>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    pub warning_code: Value,
    pub message: String,
}

impl From<&FlotillaError> for QueryError {
    fn from(error: &FlotillaError) -> Self {
        let location = error.location.map(|l| ErrorLocationJson { line_number: l.line, column_number: l.column });
        QueryError {
            message: error.message.clone(),
            error_code: error.code.code(),
            error_name: error.code.name().to_string(),
            error_type: error.code.error_type().as_str().to_string(),
            error_location: location.clone(),
            failure_info: FailureInfo {
                failure_type: format!("io.flotilla.{}", error.code.name()),
                message: error.message.clone(),
                suppressed: Vec::new(),
                stack: Vec::new(),
                error_location: location,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::{ErrorCode, ErrorLocation};

    #[test]
    fn error_serializes_with_trino_field_names() {
        let error = FlotillaError::new(ErrorCode::SyntaxError, "mismatched input")
            .with_location(ErrorLocation { line: 2, column: 7 });
        let json = serde_json::to_value(QueryError::from(&error)).unwrap();
        assert_eq!(json["errorCode"], 1);
        assert_eq!(json["errorName"], "SYNTAX_ERROR");
        assert_eq!(json["errorType"], "USER_ERROR");
        assert_eq!(json["errorLocation"]["lineNumber"], 2);
        assert_eq!(json["errorLocation"]["columnNumber"], 7);
        assert_eq!(json["failureInfo"]["message"], "mismatched input");
    }

    #[test]
    fn absent_optional_fields_are_omitted() {
        let results = QueryResults { id: "q".into(), info_uri: "u".into(), ..Default::default() };
        let json = serde_json::to_value(&results).unwrap();
        for absent in ["nextUri", "columns", "data", "error", "updateType", "updateCount"] {
            assert!(json.get(absent).is_none(), "{absent} present");
        }
        assert!(json["warnings"].as_array().unwrap().is_empty());
        assert_eq!(json["stats"]["state"], "");
    }
}
