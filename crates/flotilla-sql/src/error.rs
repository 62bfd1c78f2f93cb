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

/// How a worker that cannot be reached is described (by the data plane's client), also
/// after the error has travelled through another worker as text: `REMOTE_HOST_GONE`.
pub const WORKER_GONE_PHRASE: &str = "is unreachable or gone";

/// A Flotilla error carried inside a DataFusion error (by a catalog, say), anywhere in its
/// chain of causes.
fn carried(error: &DataFusionError) -> Option<FlotillaError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(flotilla) = current.downcast_ref::<FlotillaError>() {
            return Some(flotilla.clone());
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
    let text = error.to_string();
    if let Some(at) = text.find("Worker ").filter(|_| text.contains(WORKER_GONE_PHRASE)) {
        return FlotillaError::new(ErrorCode::RemoteHostGone, text[at..].trim().to_string());
    }
    for (phrase, code) in [
        (crate::memory::CLUSTER_MEMORY_PHRASE, ErrorCode::ClusterOutOfMemory),
        (crate::memory::LOCAL_MEMORY_PHRASE, ErrorCode::ExceededLocalMemoryLimit),
    ] {
        if let Some(at) = text.find(phrase) {
            let message = text[at..].lines().next().unwrap_or_default().trim().to_string();
            return FlotillaError::new(code, message);
        }
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
            } else if lower.contains("more than one row") {
                ErrorCode::SubqueryMultipleRows
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

    #[test]
    fn arrow_errors_keep_their_meaning() {
        let error = DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None);
        assert_eq!(from_datafusion(&error).code, ErrorCode::DivisionByZero);
    }
}
