//! Wire types shared by every Flotilla role.
//!
//! Anything that crosses a process boundary and is not specific to one protocol lives here:
//! the closed set of error codes ([`ErrorCode`]) that every transport maps once, the
//! [`FlotillaError`] that carries such a code across hops, and the identifiers whose shape
//! other roles rely on ([`QueryId`], [`CoordinatorId`]); the cluster's control messages
//! ([`cluster`]), the node-level settings ([`config`]), internal-call authentication
//! ([`internal_auth`]) and how internal calls fail ([`CallError`], with typed refusals such as
//! [`admission::LeaseRefusal`]).
//!
//! ```text
//!   engine / coordinator ──FlotillaError{code, message, location}──▶ protocol (Trino JSON)
//!                                                               └──▶ HTTP status (REST)
//! ```

pub mod access_control;
pub mod admission;
pub mod adoption;
mod call;
pub mod cluster;
pub mod config;
mod data_size;
mod duration;
mod error;
pub mod internal_auth;
pub mod jobs;
mod query_id;
pub mod warehouses;

pub use call::CallError;
pub use config::{AuthenticationType, ConfigError, HttpsConfig, NodeConfig, SecurityConfig, Setting, NODE_SETTINGS};
pub use data_size::parse_data_size;
pub use duration::parse_duration;
pub use error::{ErrorCode, ErrorLocation, ErrorType, FlotillaError, Retry};
pub use internal_auth::{InternalAuth, InternalAuthError, INTERNAL_BEARER_HEADER, PRINCIPAL_HEADER};
pub use query_id::{random_hex, CoordinatorId, QueryId, QueryIdGenerator, QueryIdParseError};

/// Trino's query types, as `queryType` selectors (resource groups, warehouse routing rules)
/// name them.
pub const QUERY_TYPES: &[&str] = &[
    "SELECT",
    "EXPLAIN",
    "DESCRIBE",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "ANALYZE",
    "DATA_DEFINITION",
    "ALTER_TABLE_EXECUTE",
];

/// The longest user name accepted (`X-Trino-User`, admin lists): user names are copied
/// into every heartbeat, query listing and log line, so they are bounded.
pub const MAX_USER_LENGTH: usize = 256;
/// The longest client source accepted (`X-Trino-Source`), for the same reason.
pub const MAX_SOURCE_LENGTH: usize = 256;

/// The version every node reports in `/v1/info` and `SELECT version()`.
pub const FLOTILLA_VERSION: &str = env!("CARGO_PKG_VERSION");
