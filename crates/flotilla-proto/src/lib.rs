//! Wire types shared by every Flotilla role.
//!
//! Anything that crosses a process boundary and is not specific to one protocol lives here:
//! the closed set of error codes ([`ErrorCode`]) that every transport maps once, the
//! [`FlotillaError`] that carries such a code across hops, and the identifiers whose shape
//! other roles rely on ([`QueryId`], [`CoordinatorId`]).
//!
//! ```text
//!   engine / coordinator ──FlotillaError{code, message, location}──▶ protocol (Trino JSON)
//!                                                               └──▶ HTTP status (REST)
//! ```

mod duration;
mod error;
mod query_id;

pub use duration::parse_duration;
pub use error::{ErrorCode, ErrorLocation, ErrorType, FlotillaError, Retry};
pub use query_id::{CoordinatorId, QueryId, QueryIdGenerator, QueryIdParseError};

/// The version every node reports in `/v1/info` and `SELECT version()`.
pub const FLOTILLA_VERSION: &str = env!("CARGO_PKG_VERSION");
