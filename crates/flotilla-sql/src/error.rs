//! Classifies DataFusion's and the SQL parser's errors into Flotilla's closed set of codes,
//! once, so every statement reports a Trino error name a client can act on.

use datafusion::arrow::error::ArrowError;
use datafusion::common::{DataFusionError, SchemaError};
use datafusion::sql::sqlparser::parser::ParserError;
use flotilla_proto::{ErrorCode, ErrorLocation, FlotillaError};

/// Finds `Line: N, Column: M` in a parser message.
fn location_in(message: &str) -> Option<ErrorLocation> {
    let at = message.rfind("Line: ")?;
    let rest = &message[at + "Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some(ErrorLocation { line: line.trim().parse().ok()?, column: column.parse().ok()? })
}

/// Drops the ` at Line: N, Column: M` suffix, which travels as `errorLocation` instead.
fn without_location(message: &str) -> String {
    match message.rfind(" at Line: ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// A syntax error from sqlparser.
pub fn syntax_error(error: &ParserError) -> FlotillaError {
    let message = match error {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m.clone(),
        ParserError::RecursionLimitExceeded => "statement is too deeply nested".to_string(),
    };
    let location = location_in(&message).unwrap_or(ErrorLocation { line: 1, column: 1 });
    FlotillaError::new(
        ErrorCode::SyntaxError,
        format!("line {}:{}: {}", location.line, location.column, without_location(&message)),
    )
    .with_location(location)
}

fn classify_arrow(error: &ArrowError) -> ErrorCode {
    match error {
        ArrowError::DivideByZero => ErrorCode::DivisionByZero,
        ArrowError::CastError(_) | ArrowError::ParseError(_) => ErrorCode::InvalidCastArgument,
        ArrowError::ArithmeticOverflow(_) => ErrorCode::NumericValueOutOfRange,
        ArrowError::InvalidArgumentError(_) | ArrowError::ComputeError(_) => ErrorCode::InvalidFunctionArgument,
        ArrowError::MemoryError(_) => ErrorCode::ExceededLocalMemoryLimit,
        _ => ErrorCode::GenericInternalError,
    }
}

/// A Flotilla error inside a DataFusion error, in the form that survives the worker data
/// plane: datafusion-distributed sends an `External` error as its `Display`, which for this
/// is the error's wire text ([`FlotillaError::to_wire`]); [`from_datafusion`] reads it back
/// on the other side, however many workers it went through.
#[derive(Debug)]
pub struct Carried(pub FlotillaError);

impl std::fmt::Display for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_wire())
    }
}

impl std::error::Error for Carried {}

/// `error` as a DataFusion error that keeps its code across processes.
pub fn carry(error: FlotillaError) -> DataFusionError {
    DataFusionError::External(Box::new(Carried(error)))
}

/// `error` as the message of a `ResourcesExhausted` error (what a memory pool must refuse
/// with, so operators that can spill do), keeping its code across processes.
pub fn carry_exhausted(error: &FlotillaError) -> DataFusionError {
    DataFusionError::ResourcesExhausted(error.to_wire())
}

/// A Flotilla error carried inside a DataFusion error (by a catalog, a memory pool, the data
/// plane's client, or another process through the data plane), anywhere in its chain of
/// causes.
fn carried(error: &DataFusionError) -> Option<FlotillaError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(flotilla) = current.downcast_ref::<FlotillaError>() {
            return Some(flotilla.clone());
        }
        if let Some(Carried(flotilla)) = current.downcast_ref::<Carried>() {
            return Some(flotilla.clone());
        }
        let wire = match current.downcast_ref::<DataFusionError>() {
            // DataFusion wraps a refusal it got in a refusal of its own (an aggregate that
            // cannot spill): memory refusals quote no user value, so the quote is ours.
            Some(DataFusionError::ResourcesExhausted(message)) => FlotillaError::quoted_in(message),
            // After a hop, a `Carried` is a generic error whose text is the wire form.
            Some(_) => None,
            None => FlotillaError::from_wire(&current.to_string()),
        };
        if wire.is_some() {
            return wire;
        }
        cause = current.source();
    }
    None
}

/// Maps a DataFusion error to a Flotilla error with the closest Trino code.
pub fn from_datafusion(error: &DataFusionError) -> FlotillaError {
    if let Some(error) = carried(error) {
        return error;
    }
    let location = error
        .diagnostic()
        .and_then(|d| d.span)
        .map(|span| ErrorLocation { line: span.start.line as u32, column: span.start.column as u32 });
    let root = error.find_root();
    let message = root.message().trim().to_string();
    let lower = message.to_ascii_lowercase();
    let code = match root {
        DataFusionError::SQL(parser_error, _) => return syntax_error(parser_error),
        DataFusionError::ArrowError(arrow, _) => classify_arrow(arrow),
        DataFusionError::NotImplemented(_) => ErrorCode::NotSupported,
        DataFusionError::ResourcesExhausted(_) => ErrorCode::ExceededLocalMemoryLimit,
        DataFusionError::SchemaError(schema_error, _) => match schema_error.as_ref() {
            SchemaError::FieldNotFound { .. } => ErrorCode::ColumnNotFound,
            SchemaError::AmbiguousReference { .. } => ErrorCode::AmbiguousName,
            _ => ErrorCode::GenericUserError,
        },
        DataFusionError::Plan(_) => {
            if lower.starts_with("failed to resolve catalog") {
                ErrorCode::CatalogNotFound
            } else if lower.starts_with("failed to resolve schema") {
                ErrorCode::SchemaNotFound
            } else if lower.starts_with("table '") && lower.ends_with("not found") {
                ErrorCode::TableNotFound
            } else if lower.starts_with("invalid function") {
                ErrorCode::FunctionNotFound
            } else if lower.contains("no function matches")
                || lower.contains("coercion")
                || lower.contains("cannot infer common")
            {
                ErrorCode::TypeMismatch
            } else if lower.contains("must appear in the group by clause")
                || lower.contains("projection references non-aggregate")
            {
                ErrorCode::ExpressionNotAggregate
            } else {
                ErrorCode::GenericUserError
            }
        }
        DataFusionError::Execution(_) => {
            if lower.contains("divide by zero") || lower.contains("division by zero") {
                ErrorCode::DivisionByZero
            } else if lower.contains("overflow") {
                ErrorCode::NumericValueOutOfRange
            } else if lower.contains("cast") || lower.contains("cannot parse") {
                ErrorCode::InvalidCastArgument
            } else {
                ErrorCode::GenericUserError
            }
        }
        DataFusionError::Configuration(_) => ErrorCode::InvalidSessionProperty,
        _ => ErrorCode::GenericInternalError,
    };
    let message = match code {
        ErrorCode::CatalogNotFound => format!("Catalog '{}' not found", quoted_name(&message, "catalog: ")),
        ErrorCode::SchemaNotFound => format!("Schema '{}' does not exist", quoted_name(&message, "schema: ")),
        ErrorCode::TableNotFound => match message.split('\'').nth(1) {
            Some(table) => format!("Table '{table}' does not exist"),
            None => message,
        },
        _ => message,
    };
    let message = match location {
        Some(l) => format!("line {}:{}: {message}", l.line, l.column),
        None => message,
    };
    let mut converted = FlotillaError::new(code, message);
    converted.location = location;
    converted
}

fn quoted_name(message: &str, after: &str) -> String {
    message.split_once(after).map(|(_, name)| name.trim().to_string()).unwrap_or_else(|| message.to_string())
}

impl From<crate::catalog::CatalogError> for FlotillaError {
    fn from(error: crate::catalog::CatalogError) -> Self {
        FlotillaError::new(ErrorCode::ConfigurationInvalid, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::plan_datafusion_err;

    #[test]
    fn parser_locations_become_error_locations() {
        let error = syntax_error(&ParserError::ParserError(
            "Expected: an expression, found: FROM at Line: 2, Column: 8".into(),
        ));
        assert_eq!(error.code, ErrorCode::SyntaxError);
        assert_eq!(error.location, Some(ErrorLocation { line: 2, column: 8 }));
        assert_eq!(error.message, "line 2:8: Expected: an expression, found: FROM");
    }

    #[test]
    fn planning_errors_get_trino_names() {
        let missing_table = from_datafusion(&plan_datafusion_err!("table 'tpch.tiny.nope' not found"));
        assert_eq!(missing_table.code, ErrorCode::TableNotFound);
        assert_eq!(missing_table.message, "Table 'tpch.tiny.nope' does not exist");
        let missing_catalog = from_datafusion(&plan_datafusion_err!("failed to resolve catalog: nope"));
        assert_eq!(missing_catalog.code, ErrorCode::CatalogNotFound);
        assert_eq!(missing_catalog.message, "Catalog 'nope' not found");
        let missing_schema = from_datafusion(&plan_datafusion_err!("failed to resolve schema: nope"));
        assert_eq!(missing_schema.code, ErrorCode::SchemaNotFound);
    }

    #[test]
    fn carried_flotilla_errors_keep_their_code() {
        let original = FlotillaError::new(ErrorCode::ViewIsRecursive, "View 'c.s.v' is recursive");
        let error = DataFusionError::External(Box::new(original.clone())).context("planning");
        assert_eq!(from_datafusion(&error), original);
    }

    /// What datafusion-distributed does to an error crossing the data plane: an `External`
    /// error becomes a generic one holding its `Display` (its `DataFusionErrorProto`), other
    /// variants keep their own text; the receiving worker may wrap it again.
    fn across_a_hop(error: &DataFusionError) -> DataFusionError {
        #[derive(Debug)]
        struct Generic(String);
        impl std::fmt::Display for Generic {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for Generic {}
        match error {
            DataFusionError::External(inner) => DataFusionError::External(Box::new(Generic(inner.to_string()))),
            DataFusionError::Context(context, inner) => across_a_hop(inner).context(context.clone()),
            DataFusionError::ResourcesExhausted(message) => DataFusionError::ResourcesExhausted(message.clone()),
            other => DataFusionError::Execution(other.to_string()),
        }
    }

    #[test]
    fn remote_errors_keep_their_code_across_hops_whatever_their_words() {
        let gone = FlotillaError::new(ErrorCode::RemoteHostGone, "Worker http://127.0.0.1:9/ went away")
            .with_remote_host("http://127.0.0.1:9/");
        let killed = FlotillaError::new(ErrorCode::ClusterOutOfMemory, "Killed: the cluster is full");
        for (error, expected) in [
            (carry(gone.clone()), &gone),
            (carry(gone.clone()).context("exchange"), &gone),
            (carry_exhausted(&killed), &killed),
            // An aggregate that could not spill wraps the refusal in one of its own.
            (
                DataFusionError::ResourcesExhausted(format!(
                    "Failed to reserve memory for sort during spill: {}",
                    carry_exhausted(&killed)
                )),
                &killed,
            ),
        ] {
            let two_hops = across_a_hop(&across_a_hop(&error));
            assert_eq!(&from_datafusion(&two_hops), expected, "{two_hops}");
        }
        // A per-node limit is typed by its variant, whatever its text.
        let local = across_a_hop(&DataFusionError::ResourcesExhausted("over the limit".into()));
        assert_eq!(from_datafusion(&local).code, ErrorCode::ExceededLocalMemoryLimit);
        // A user's value quoting the wire form in an ordinary error is not a code.
        let forged = DataFusionError::Execution(format!("Cannot cast '{}' to INT", gone.to_wire()));
        assert_eq!(from_datafusion(&across_a_hop(&forged)).code, ErrorCode::InvalidCastArgument);
    }

    #[test]
    fn arrow_errors_keep_their_meaning() {
        let error = DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None);
        assert_eq!(from_datafusion(&error).code, ErrorCode::DivisionByZero);
    }
}
