//! The one closed set of error codes, with Trino's numbers, names and types.

use std::fmt;

/// Trino's error classes; clients branch on them (`USER_ERROR` is not retried, for one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    UserError,
    InternalError,
    InsufficientResources,
    External,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::UserError => "USER_ERROR",
            ErrorType::InternalError => "INTERNAL_ERROR",
            ErrorType::InsufficientResources => "INSUFFICIENT_RESOURCES",
            ErrorType::External => "EXTERNAL",
        }
    }
}

/// Whether retrying the same request elsewhere may succeed; failover reads this, never the
/// code itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The same request will fail the same way (bad SQL, missing table).
    Never,
    /// A transient condition (a node going away, a full queue).
    Possible,
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = ($code:expr, $name:literal, $kind:ident, $retry:ident), )*) => {
        /// Every error Flotilla reports, with the number and name Trino gives it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, for tests and docs.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// Trino's numeric `errorCode`.
            pub fn code(self) -> i32 {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// Trino's `errorName`.
            pub fn name(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// Trino's `errorType`.
            pub fn error_type(self) -> ErrorType {
                match self { $(ErrorCode::$variant => ErrorType::$kind,)* }
            }

            /// Whether a retry elsewhere may help.
            pub fn retry(self) -> Retry {
                match self { $(ErrorCode::$variant => Retry::$retry,)* }
            }
        }
    };
}

error_codes! {
    /// A user error with no more specific code.
    GenericUserError = (0, "GENERIC_USER_ERROR", UserError, Never),
    /// The SQL text does not parse.
    SyntaxError = (1, "SYNTAX_ERROR", UserError, Never),
    /// The client stopped polling and the query was abandoned.
    AbandonedQuery = (2, "ABANDONED_QUERY", UserError, Never),
    /// The client cancelled the query.
    UserCanceled = (3, "USER_CANCELED", UserError, Never),
    /// The caller may not do this.
    PermissionDenied = (4, "PERMISSION_DENIED", UserError, Never),
    /// A named object (prepared statement, query) does not exist.
    NotFound = (5, "NOT_FOUND", UserError, Never),
    /// A function name is unknown.
    FunctionNotFound = (6, "FUNCTION_NOT_FOUND", UserError, Never),
    /// A function got an argument it cannot handle.
    InvalidFunctionArgument = (7, "INVALID_FUNCTION_ARGUMENT", UserError, Never),
    /// Division by zero at run time.
    DivisionByZero = (8, "DIVISION_BY_ZERO", UserError, Never),
    /// A value could not be cast to the target type.
    InvalidCastArgument = (9, "INVALID_CAST_ARGUMENT", UserError, Never),
    /// A stored view cannot be planned (what it reads is gone, or views nest too deeply).
    InvalidView = (11, "INVALID_VIEW", UserError, Never),
    /// The statement is valid SQL that Flotilla does not support.
    NotSupported = (13, "NOT_SUPPORTED", UserError, Never),
    /// `SET SESSION` named an unknown property or gave a bad value.
    InvalidSessionProperty = (14, "INVALID_SESSION_PROPERTY", UserError, Never),
    /// A numeric value does not fit its type.
    NumericValueOutOfRange = (19, "NUMERIC_VALUE_OUT_OF_RANGE", UserError, Never),
    /// A scalar subquery returned more than one row.
    SubqueryMultipleRows = (28, "SUBQUERY_MULTIPLE_ROWS", UserError, Never),
    /// `CALL` named a procedure that does not exist.
    ProcedureNotFound = (29, "PROCEDURE_NOT_FOUND", UserError, Never),
    /// A procedure got a missing, unknown or invalid argument.
    InvalidProcedureArgument = (30, "INVALID_PROCEDURE_ARGUMENT", UserError, Never),
    /// The query was rejected before running (e.g. an empty statement).
    QueryRejected = (31, "QUERY_REJECTED", UserError, Never),
    /// The SQL text is larger than the coordinator accepts.
    QueryTextTooLarge = (35, "QUERY_TEXT_TOO_LARGE", UserError, Never),
    /// An operator killed the query.
    AdministrativelyKilled = (38, "ADMINISTRATIVELY_KILLED", UserError, Never),
    /// A type name is unknown.
    TypeNotFound = (43, "TYPE_NOT_FOUND", UserError, Never),
    /// A catalog name is unknown.
    CatalogNotFound = (44, "CATALOG_NOT_FOUND", UserError, Never),
    /// A schema name is unknown.
    SchemaNotFound = (45, "SCHEMA_NOT_FOUND", UserError, Never),
    /// A table name is unknown.
    TableNotFound = (46, "TABLE_NOT_FOUND", UserError, Never),
    /// A column name is unknown.
    ColumnNotFound = (47, "COLUMN_NOT_FOUND", UserError, Never),
    /// A schema of that name already exists.
    SchemaAlreadyExists = (49, "SCHEMA_ALREADY_EXISTS", UserError, Never),
    /// A table of that name already exists.
    TableAlreadyExists = (50, "TABLE_ALREADY_EXISTS", UserError, Never),
    /// A schema to drop still has tables.
    SchemaNotEmpty = (34, "SCHEMA_NOT_EMPTY", UserError, Never),
    /// A table property is unknown or has a bad value.
    InvalidTableProperty = (18, "INVALID_TABLE_PROPERTY", UserError, Never),
    /// A concurrent change to the same data won (Trino's code for write conflicts).
    TransactionConflict = (17, "TRANSACTION_CONFLICT", UserError, Never),
    /// A column of a new table has no name.
    MissingColumnName = (55, "MISSING_COLUMN_NAME", UserError, Never),
    /// No catalog was given and the session has none.
    MissingCatalogName = (56, "MISSING_CATALOG_NAME", UserError, Never),
    /// No schema was given and the session has none.
    MissingSchemaName = (57, "MISSING_SCHEMA_NAME", UserError, Never),
    /// Operand or argument types do not match.
    TypeMismatch = (58, "TYPE_MISMATCH", UserError, Never),
    /// A literal cannot be parsed for its type.
    InvalidLiteral = (59, "INVALID_LITERAL", UserError, Never),
    /// A column reference is ambiguous.
    AmbiguousName = (62, "AMBIGUOUS_NAME", UserError, Never),
    /// A column is neither grouped nor aggregated.
    ExpressionNotAggregate = (73, "EXPRESSION_NOT_AGGREGATE", UserError, Never),
    /// Wrong number or kind of statement parameters.
    InvalidParameterUsage = (80, "INVALID_PARAMETER_USAGE", UserError, Never),
    /// A view reads itself, directly or through other views.
    ViewIsRecursive = (82, "VIEW_IS_RECURSIVE", UserError, Never),
    /// A bug or unexpected state inside Flotilla.
    GenericInternalError = (65536, "GENERIC_INTERNAL_ERROR", InternalError, Possible),
    /// No node can run the work.
    NoNodesAvailable = (65541, "NO_NODES_AVAILABLE", InternalError, Possible),
    /// The node is shutting down.
    ServerShuttingDown = (65545, "SERVER_SHUTTING_DOWN", InternalError, Possible),
    /// The node is still starting.
    ServerStartingUp = (65548, "SERVER_STARTING_UP", InternalError, Possible),
    /// A remote node went away while working on the query.
    RemoteHostGone = (65558, "REMOTE_HOST_GONE", InternalError, Possible),
    /// Configuration is invalid.
    ConfigurationInvalid = (65559, "CONFIGURATION_INVALID", InternalError, Never),
    /// Out of resources, no more specific code.
    GenericInsufficientResources = (131072, "GENERIC_INSUFFICIENT_RESOURCES", InsufficientResources, Possible),
    /// The query used more memory than `query.max-memory` across the cluster.
    ExceededGlobalMemoryLimit = (131073, "EXCEEDED_GLOBAL_MEMORY_LIMIT", InsufficientResources, Never),
    /// The queue the query was sent to is full.
    QueryQueueFull = (131074, "QUERY_QUEUE_FULL", InsufficientResources, Possible),
    /// The query ran longer than allowed.
    ExceededTimeLimit = (131075, "EXCEEDED_TIME_LIMIT", InsufficientResources, Never),
    /// The cluster ran out of memory and chose this query to kill.
    ClusterOutOfMemory = (131076, "CLUSTER_OUT_OF_MEMORY", InsufficientResources, Possible),
    /// A task used more memory than `query.max-memory-per-node`.
    ExceededLocalMemoryLimit = (131079, "EXCEEDED_LOCAL_MEMORY_LIMIT", InsufficientResources, Never),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where in the SQL text an error is, 1-based as Trino reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorLocation {
    pub line: u32,
    pub column: u32,
}

/// An error with its code, as it travels between Flotilla's layers and processes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FlotillaError {
    pub code: ErrorCode,
    pub message: String,
    pub location: Option<ErrorLocation>,
    /// The node the error is about, when it is one (the data URL of a worker that could
    /// not be reached): the scheduler stops placing tasks there.
    pub remote_host: Option<String>,
}

/// How a [`FlotillaError`] is written when it must travel as text inside another system's
/// error (DataFusion's `External` errors cross the worker data plane as their `Display`):
/// this tag, then the error as JSON, and nothing else.
pub const WIRE_TAG: &str = "flotilla-error:";

/// The JSON of [`FlotillaError::to_wire`].
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireError {
    error_name: String,
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    location: Option<(u32, u32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remote_host: Option<String>,
}

impl FlotillaError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), location: None, remote_host: None }
    }

    pub fn with_location(mut self, location: ErrorLocation) -> Self {
        self.location = Some(location);
        self
    }

    pub fn with_remote_host(mut self, remote_host: impl Into<String>) -> Self {
        self.remote_host = Some(remote_host.into());
        self
    }

    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotSupported, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::GenericInternalError, message)
    }

    pub fn user(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::GenericUserError, message)
    }

    /// The error as text that [`FlotillaError::from_wire`] reads back whole.
    pub fn to_wire(&self) -> String {
        let wire = WireError {
            error_name: self.code.name().to_string(),
            message: self.message.clone(),
            location: self.location.map(|l| (l.line, l.column)),
            remote_host: self.remote_host.clone(),
        };
        format!("{WIRE_TAG}{}", serde_json::to_string(&wire).expect("an error serialises"))
    }

    /// The error `text` is, when it is exactly what [`FlotillaError::to_wire`] wrote (not
    /// when it merely contains it: a message quoting a user's value must not become a code).
    pub fn from_wire(text: &str) -> Option<Self> {
        Self::decode(serde_json::from_str(text.strip_prefix(WIRE_TAG)?).ok()?)
    }

    /// The error whose wire text `text` quotes, where it may only be quoted by Flotilla
    /// itself (an engine's memory refusal that wraps the refusal it got: no user value is
    /// ever part of such a message).
    pub fn quoted_in(text: &str) -> Option<Self> {
        let at = text.find(WIRE_TAG)?;
        let mut values = serde_json::Deserializer::from_str(&text[at + WIRE_TAG.len()..]).into_iter::<WireError>();
        Self::decode(values.next()?.ok()?)
    }

    fn decode(wire: WireError) -> Option<Self> {
        Some(Self {
            code: ErrorCode::from_name(&wire.error_name)?,
            message: wire.message,
            location: wire.location.map(|(line, column)| ErrorLocation { line, column }),
            remote_host: wire.remote_host,
        })
    }
}

impl ErrorCode {
    /// The code Trino names `name`.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|code| code.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_and_names_are_unique() {
        let codes: HashSet<i32> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn codes_match_trino_ranges() {
        for code in ErrorCode::ALL {
            let expected = match code.code() {
                0..=65535 => ErrorType::UserError,
                65536..=131071 => ErrorType::InternalError,
                _ => ErrorType::InsufficientResources,
            };
            assert_eq!(code.error_type(), expected, "{code}");
        }
        assert_eq!(ErrorCode::TableNotFound.code(), 46);
        assert_eq!(ErrorCode::SyntaxError.name(), "SYNTAX_ERROR");
    }

    #[test]
    fn errors_read_back_from_their_wire_text_and_only_from_it() {
        for code in ErrorCode::ALL {
            let error = FlotillaError::new(*code, "it \"broke\"\nflotilla-error:{}").with_remote_host("http://w:1");
            assert_eq!(FlotillaError::from_wire(&error.to_wire()), Some(error.clone()), "{code}");
        }
        let located =
            FlotillaError::new(ErrorCode::SyntaxError, "x").with_location(ErrorLocation { line: 2, column: 3 });
        assert_eq!(FlotillaError::from_wire(&located.to_wire()), Some(located.clone()));
        // Quoted inside another message (a user's value), or cut, it is not an error.
        assert_eq!(FlotillaError::from_wire(&format!("Cannot cast '{}'", located.to_wire())), None);
        let wire = located.to_wire();
        assert_eq!(FlotillaError::from_wire(&wire[..wire.len() - 1]), None);
        assert_eq!(FlotillaError::from_wire(&format!("{wire} trailing")), None);
        let unknown = wire.replace("SYNTAX_ERROR", "NO_SUCH_ERROR");
        assert_eq!(FlotillaError::from_wire(&unknown), None);
        // Quoted by an engine message that wraps it, it is found.
        let wrapped = format!("Failed to reserve memory for sort during spill: Resources exhausted: {wire}");
        assert_eq!(FlotillaError::quoted_in(&wrapped), Some(located));
        assert_eq!(FlotillaError::quoted_in("Resources exhausted: flotilla-error:{"), None);
    }
}
