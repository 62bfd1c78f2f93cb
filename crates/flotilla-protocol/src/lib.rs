//! The Trino client REST protocol, v1: what goes over the wire between a Trino client and a
//! coordinator, and nothing about how queries run.
//!
//! ```text
//!  request headers ──▶ ClientSession::from_headers ──▶ (engine runs the statement)
//!                                                          │ Arrow RecordBatches
//!                                       TrinoType::from_arrow ▼ encode_batch
//!  QueryResults { columns, data, stats, error, nextUri } ◀────┘
//! ```
//!
//! Entry points: [`QueryResults`] and friends ([`results`]), [`TrinoType`] (Arrow type to
//! Trino type name and `typeSignature`), [`encode_batch`] (Arrow values to the JSON values
//! Trino clients parse) and [`ClientSession`] (the `X-Trino-*` request headers).

pub mod headers;
mod query_type;
pub mod results;
mod types;
pub mod uris;
mod values;

pub use headers::{ClientSession, HeaderError};
pub use query_type::{is_read_only, query_type};
pub use results::{
    Column, ErrorLocationJson, FailureInfo, QueryError, QueryResults, StageStats, StatementStats, Warning,
};
pub use types::{TrinoType, TypeError};
pub use values::{encode_batch, EncodeError};
