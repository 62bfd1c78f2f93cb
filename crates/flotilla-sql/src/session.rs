//! The SQL session a statement runs in, and the session properties Flotilla honours, each
//! declared once with its type, default and description (`SHOW SESSION` lists them).

use std::collections::BTreeMap;

use flotilla_proto::{parse_duration, ErrorCode, FlotillaError};
use flotilla_protocol::ClientSession;

/// A table's (or view's) full name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub catalog: String,
    pub schema: String,
    pub table: String,
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.catalog, self.schema, self.table)
    }
}

/// What a statement needs from the client's session.
#[derive(Debug, Clone, Default)]
pub struct SqlSession {
    pub user: String,
    pub source: Option<String>,
    pub catalog: Option<String>,
    pub schema: Option<String>,
    pub time_zone: Option<String>,
    pub properties: BTreeMap<String, String>,
    pub prepared_statements: BTreeMap<String, String>,
    /// The query the statement belongs to, when a coordinator runs it (names its tasks on
    /// the workers).
    pub query_id: Option<String>,
}

impl From<&ClientSession> for SqlSession {
    fn from(client: &ClientSession) -> Self {
        SqlSession {
            user: client.user.clone(),
            source: client.source.clone(),
            catalog: client.catalog.clone(),
            schema: client.schema.clone(),
            time_zone: client.time_zone.clone(),
            properties: client.properties.clone(),
            prepared_statements: client.prepared_statements.clone(),
            query_id: None,
        }
    }
}

/// One session property.
#[derive(Debug)]
pub struct SessionProperty {
    pub name: &'static str,
    /// The Trino type `SHOW SESSION` reports.
    pub type_name: &'static str,
    pub default: fn() -> String,
    pub description: &'static str,
    validate: fn(&str) -> Result<(), String>,
}

fn validate_duration(value: &str) -> Result<(), String> {
    parse_duration(value).map(|_| ())
}

fn validate_positive_integer(value: &str) -> Result<(), String> {
    match value.parse::<u32>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(format!("'{value}' is not a positive integer")),
    }
}

/// A warehouse name, as `node.warehouse` accepts it.
fn validate_warehouse(value: &str) -> Result<(), String> {
    if flotilla_proto::config::valid_label(value) {
        Ok(())
    } else {
        Err(format!("'{value}' is not a valid warehouse name (letters, digits, '-', '_' and '.')"))
    }
}

/// A data size (`512MB`), or empty for "not set".
fn validate_optional_data_size(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    match flotilla_proto::parse_data_size(value)? {
        0 => Err("must be positive".into()),
        _ => Ok(()),
    }
}

/// A data size from 1kB to 1TB.
fn validate_split_size(value: &str) -> Result<(), String> {
    match flotilla_proto::parse_data_size(value)? {
        bytes if (1 << 10..=1 << 40).contains(&bytes) => Ok(()),
        _ => Err("must be from 1kB to 1TB".into()),
    }
}

/// `QUERY` or `NONE` (Trino's retry policies without `TASK`), or empty for "the
/// coordinator's `retry-policy`".
fn validate_retry_policy(value: &str) -> Result<(), String> {
    match value.to_ascii_uppercase().as_str() {
        "" | "QUERY" | "NONE" => Ok(()),
        "TASK" => Err("TASK is not supported (it needs spooled exchanges): use QUERY or NONE".into()),
        _ => Err(format!("'{value}' is not a retry policy (QUERY or NONE)")),
    }
}

/// The most parallel partitions per operator a session may ask for.
pub const MAX_TASK_CONCURRENCY: u32 = 256;

/// A power of two from 1 to [`MAX_TASK_CONCURRENCY`] (Trino requires a power of two too).
fn validate_task_concurrency(value: &str) -> Result<(), String> {
    match value.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && n <= MAX_TASK_CONCURRENCY => Ok(()),
        _ => Err(format!("'{value}' is not a power of two from 1 to {MAX_TASK_CONCURRENCY}")),
    }
}

/// The processors, rounded down to a power of two.
fn default_task_concurrency() -> String {
    let processors = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as u32;
    let power_of_two = 1u32 << (31 - processors.max(1).leading_zeros());
    power_of_two.min(MAX_TASK_CONCURRENCY).to_string()
}

/// How the batches tasks send each other are compressed: the session property
/// `exchange_compression_codec` (Trino's name, plus AUTO), any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeCodec {
    /// None when all the statement's workers are on one host, LZ4 across hosts.
    Auto,
    None,
    Lz4,
    Zstd,
}

impl std::str::FromStr for ExchangeCodec {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.to_ascii_uppercase().as_str() {
            "AUTO" => Ok(Self::Auto),
            "NONE" => Ok(Self::None),
            "LZ4" => Ok(Self::Lz4),
            "ZSTD" => Ok(Self::Zstd),
            _ => Err(format!("'{value}' is not a compression codec (AUTO, NONE, LZ4 or ZSTD)")),
        }
    }
}

fn validate_exchange_compression(value: &str) -> Result<(), String> {
    value.parse::<ExchangeCodec>().map(|_| ())
}

/// Every session property Flotilla honours.
pub const SESSION_PROPERTIES: &[SessionProperty] = &[
    SessionProperty {
        name: "query_max_run_time",
        type_name: "varchar",
        default: || "100d".to_string(),
        description: "Maximum run time of a query, queued time included (EXCEEDED_TIME_LIMIT past it)",
        validate: validate_duration,
    },
    SessionProperty {
        name: "query_max_memory",
        type_name: "varchar",
        default: String::new,
        description: "Lowers query.max-memory for this session: the most the query may reserve across the cluster (EXCEEDED_GLOBAL_MEMORY_LIMIT past it)",
        validate: validate_optional_data_size,
    },
    SessionProperty {
        name: "query_max_memory_per_node",
        type_name: "varchar",
        default: String::new,
        description: "Lowers query.max-memory-per-node for this session: the most the query may reserve on one node",
        validate: validate_optional_data_size,
    },
    SessionProperty {
        name: "max_split_size",
        type_name: "varchar",
        default: || "16MB".to_string(),
        description: "Bytes of files one partition of a distributed scan reads: a scan of a files table gets a task per task_concurrency such pieces (smaller: more tasks)",
        validate: validate_split_size,
    },
    SessionProperty {
        name: "query_priority",
        type_name: "integer",
        default: || "1".to_string(),
        description:
            "Priority of the query in resource groups with schedulingPolicy query_priority (higher runs first)",
        validate: validate_positive_integer,
    },
    SessionProperty {
        name: "task_concurrency",
        type_name: "integer",
        default: default_task_concurrency,
        description: "Parallel partitions per operator (DataFusion target_partitions): a power of two up to 256; default the processors, rounded down to a power of two",
        validate: validate_task_concurrency,
    },
    SessionProperty {
        name: "warehouse",
        type_name: "varchar",
        default: || "default".to_string(),
        description: "Warehouse whose workers run the query (node.warehouse of the workers)",
        validate: validate_warehouse,
    },
    SessionProperty {
        name: "retry_policy",
        type_name: "varchar",
        default: String::new,
        description: "QUERY: run the query again when a worker it used is lost, before any row was returned; NONE: fail it (empty: the coordinator's retry-policy)",
        validate: validate_retry_policy,
    },
    SessionProperty {
        name: "exchange_compression_codec",
        type_name: "varchar",
        default: || "AUTO".to_string(),
        description: "Compression of the Arrow batches tasks send each other: NONE, LZ4, ZSTD, or AUTO: none when all the query's workers are on one host (compressing costs CPU and saves nothing there), LZ4 across hosts",
        validate: validate_exchange_compression,
    },
];

/// Looks a property up, or fails as Trino does for an unknown name.
pub fn session_property(name: &str) -> Result<&'static SessionProperty, FlotillaError> {
    SESSION_PROPERTIES.iter().find(|p| p.name == name).ok_or_else(|| {
        FlotillaError::new(ErrorCode::InvalidSessionProperty, format!("Session property '{name}' does not exist"))
    })
}

impl SessionProperty {
    pub fn validate(&self, value: &str) -> Result<(), FlotillaError> {
        (self.validate)(value).map_err(|message| {
            FlotillaError::new(ErrorCode::InvalidSessionProperty, format!("{} is invalid: {message}", self.name))
        })
    }
}

/// Trino's error for a name that needs the session's catalog when it has none.
pub fn missing_catalog() -> FlotillaError {
    FlotillaError::new(ErrorCode::MissingCatalogName, "Catalog must be specified when session catalog is not set")
}

/// Trino's error for a name that needs the session's schema when it has none.
pub fn missing_schema() -> FlotillaError {
    FlotillaError::new(ErrorCode::MissingSchemaName, "Schema must be specified when session schema is not set")
}

impl SqlSession {
    /// The session's catalog, or Trino's error when it has none.
    pub fn catalog_or_error(&self) -> Result<String, FlotillaError> {
        self.catalog.clone().ok_or_else(missing_catalog)
    }

    /// `[catalog.]schema` completed with the session's catalog.
    pub fn qualify_schema(&self, name: &[String]) -> Result<(String, String), FlotillaError> {
        match name {
            [schema] => Ok((self.catalog_or_error()?, schema.clone())),
            [catalog, schema] => Ok((catalog.clone(), schema.clone())),
            _ => Err(FlotillaError::new(
                ErrorCode::SyntaxError,
                format!("too many dots in schema name '{}'", name.join(".")),
            )),
        }
    }

    /// `[[catalog.]schema.]name` completed with the session's catalog and schema.
    pub fn qualify(&self, name: &[String]) -> Result<TableName, FlotillaError> {
        let full =
            |catalog: String, schema: String, table: &String| TableName { catalog, schema, table: table.clone() };
        match name {
            [table] => Ok(full(self.catalog_or_error()?, self.schema.clone().ok_or_else(missing_schema)?, table)),
            [schema, table] => Ok(full(self.catalog_or_error()?, schema.clone(), table)),
            [catalog, schema, table] => Ok(full(catalog.clone(), schema.clone(), table)),
            _ => Err(FlotillaError::new(
                ErrorCode::SyntaxError,
                format!("too many dots in table name '{}'", name.join(".")),
            )),
        }
    }

    /// The effective value of a property: the session's, else the default.
    pub fn property(&self, name: &str) -> Result<String, FlotillaError> {
        let property = session_property(name)?;
        match self.properties.get(name) {
            Some(value) => {
                property.validate(value)?;
                Ok(value.clone())
            }
            None => Ok((property.default)()),
        }
    }

    /// The session's `exchange_compression_codec`.
    pub fn exchange_codec(&self) -> Result<ExchangeCodec, FlotillaError> {
        self.property("exchange_compression_codec")?
            .parse()
            .map_err(|message| FlotillaError::new(ErrorCode::InvalidSessionProperty, message))
    }

    /// A data size property, when set.
    pub fn data_size(&self, name: &str) -> Result<Option<u64>, FlotillaError> {
        let value = self.property(name)?;
        if value.is_empty() {
            return Ok(None);
        }
        flotilla_proto::parse_data_size(&value)
            .map(Some)
            .map_err(|m| FlotillaError::new(ErrorCode::InvalidSessionProperty, format!("{name} is invalid: {m}")))
    }

    /// `query_max_run_time`.
    pub fn max_run_time(&self) -> Result<std::time::Duration, FlotillaError> {
        let value = self.property("query_max_run_time")?;
        parse_duration(&value).map_err(|m| FlotillaError::new(ErrorCode::InvalidSessionProperty, m))
    }

    /// Checks every property the client sent, and its time zone, so a bad one fails the
    /// query up front.
    pub fn validate(&self) -> Result<(), FlotillaError> {
        for name in self.properties.keys() {
            self.property(name)?;
        }
        if let Some(zone) = &self.time_zone {
            let known = zone.parse::<chrono_tz::Tz>().is_ok() || zone.parse::<chrono::FixedOffset>().is_ok();
            if !known {
                return Err(FlotillaError::user(format!("Time zone not supported: {zone}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_invalid_properties_are_rejected() {
        let mut session = SqlSession::default();
        session.properties.insert("nope".into(), "1".into());
        assert_eq!(session.validate().unwrap_err().code, ErrorCode::InvalidSessionProperty);
        let mut session = SqlSession::default();
        session.properties.insert("task_concurrency".into(), "0".into());
        assert_eq!(session.validate().unwrap_err().code, ErrorCode::InvalidSessionProperty);
        for bad in ["4294967295", "3", "512", "-2", "1e3"] {
            session.properties.insert("task_concurrency".into(), bad.into());
            assert_eq!(session.validate().unwrap_err().code, ErrorCode::InvalidSessionProperty, "{bad}");
        }
        for good in ["1", "2", "64", "256"] {
            session.properties.insert("task_concurrency".into(), good.into());
            assert!(session.validate().is_ok(), "{good}");
        }
        for codec in ["AUTO", "none", "Lz4", "ZSTD"] {
            session.properties.insert("task_concurrency".into(), "2".into());
            session.properties.insert("exchange_compression_codec".into(), codec.into());
            assert!(session.validate().is_ok(), "{codec}");
        }
        session.properties.insert("exchange_compression_codec".into(), "Lz4".into());
        assert_eq!(session.exchange_codec().unwrap(), ExchangeCodec::Lz4);
        for bad in ["", "gzip", "LZ4 ", "snappy", &"z".repeat(100_000)] {
            session.properties.insert("exchange_compression_codec".into(), bad.into());
            assert_eq!(session.validate().unwrap_err().code, ErrorCode::InvalidSessionProperty, "{bad}");
            assert_eq!(session.exchange_codec().unwrap_err().code, ErrorCode::InvalidSessionProperty, "{bad}");
        }
        session.properties.remove("exchange_compression_codec");
        assert!(validate_task_concurrency(&default_task_concurrency()).is_ok());
        let mut session = SqlSession::default();
        for bad in ["TASK", "always", "QUERY ", &"Q".repeat(100_000)] {
            session.properties.insert("retry_policy".into(), bad.to_string());
            assert_eq!(
                session.validate().unwrap_err().code,
                ErrorCode::InvalidSessionProperty,
                "{}",
                &bad[..5.min(bad.len())]
            );
        }
        for good in ["QUERY", "none", ""] {
            session.properties.insert("retry_policy".into(), good.into());
            assert!(session.validate().is_ok(), "{good}");
        }
    }

    #[test]
    fn time_zones_are_checked() {
        let mut session = SqlSession { time_zone: Some("Europe/Berlin".into()), ..Default::default() };
        assert!(session.validate().is_ok());
        session.time_zone = Some("+05:30".into());
        assert!(session.validate().is_ok());
        session.time_zone = Some("Mars/Olympus".into());
        assert_eq!(session.validate().unwrap_err().message, "Time zone not supported: Mars/Olympus");
    }

    #[test]
    fn defaults_apply_when_unset() {
        let session = SqlSession::default();
        assert_eq!(session.max_run_time().unwrap(), std::time::Duration::from_secs(100 * 86_400));
        let mut session = SqlSession::default();
        session.properties.insert("query_max_run_time".into(), "2s".into());
        assert_eq!(session.max_run_time().unwrap(), std::time::Duration::from_secs(2));
    }
}
