//! `CALL` statements: the procedures of the `system` catalog Trino has, run through the
//! cluster ([`RuntimeSource`]), so they act on the whole cluster from any coordinator.
//!
//! Supported: `system.runtime.kill_query(query_id, message)`, and in every `files` catalog
//! `system.vacuum(schema_name, table_name[, retention])` (Trino's Delta Lake procedure; see
//! `crate::maintenance`). Any other procedure is `PROCEDURE_NOT_FOUND`.

use datafusion::sql::sqlparser::ast::{Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments};
use flotilla_proto::{ErrorCode, FlotillaError};

use crate::catalog::RuntimeSource;
use crate::engine::{literal_text, Engine};
use crate::SqlSession;

/// `system.runtime.kill_query`'s parameters, in order.
const KILL_QUERY_PARAMETERS: &[&str] = &["query_id", "message"];

/// A files catalog's `system.vacuum`'s parameters, in order.
const VACUUM_PARAMETERS: &[&str] = &["schema_name", "table_name", "retention"];

fn argument_error(message: String) -> FlotillaError {
    FlotillaError::new(ErrorCode::InvalidProcedureArgument, message)
}

/// The procedure's full name, with the session's catalog and schema filling what the
/// statement leaves out.
fn qualified_name(session: &SqlSession, procedure: &Function) -> Result<String, FlotillaError> {
    let parts: Vec<String> = procedure.name.0.iter().map(|p| p.to_string().trim_matches('"').to_lowercase()).collect();
    let missing =
        || FlotillaError::new(ErrorCode::ProcedureNotFound, format!("Procedure not registered: {}", procedure.name));
    let qualified = match parts.as_slice() {
        [catalog, schema, name] => format!("{catalog}.{schema}.{name}"),
        [schema, name] => format!("{}.{schema}.{name}", session.catalog.as_deref().ok_or_else(missing)?),
        [name] => format!(
            "{}.{}.{name}",
            session.catalog.as_deref().ok_or_else(missing)?,
            session.schema.as_deref().ok_or_else(missing)?
        ),
        _ => return Err(missing()),
    };
    Ok(qualified)
}

/// Binds named (`name => value`) or positional arguments to `parameters`; every value must
/// be a literal.
fn bind(procedure: &Function, parameters: &[&str]) -> Result<Vec<Option<String>>, FlotillaError> {
    let arguments = match &procedure.args {
        FunctionArguments::List(list) => list.args.as_slice(),
        FunctionArguments::None => &[],
        FunctionArguments::Subquery(_) => return Err(argument_error("procedure arguments must be values".into())),
    };
    let arguments = arguments
        .iter()
        .map(|argument| {
            let (name, value) = match argument {
                FunctionArg::Named { name, arg, .. } => (Some(name.value.to_lowercase()), arg),
                FunctionArg::Unnamed(arg) => (None, arg),
                FunctionArg::ExprNamed { .. } => return Err(argument_error("Invalid procedure argument".into())),
            };
            match value {
                FunctionArgExpr::Expr(expr) => Ok((name, expr.clone())),
                _ => Err(argument_error(format!("Invalid value for argument {}", name.unwrap_or_default()))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    bind_values(&arguments, parameters)
}

/// Binds arguments, by name or position (positional ones first), to `parameters`: the
/// literal text of each, in the parameters' order. Shared by `CALL` and
/// `ALTER TABLE ... EXECUTE`.
pub(crate) fn bind_values(
    arguments: &[(Option<String>, Expr)],
    parameters: &[&str],
) -> Result<Vec<Option<String>>, FlotillaError> {
    let mut values: Vec<Option<String>> = vec![None; parameters.len()];
    let mut seen_named = false;
    for (position, (name, expr)) in arguments.iter().enumerate() {
        let index = match name {
            Some(name) => {
                seen_named = true;
                parameters
                    .iter()
                    .position(|p| p == name)
                    .ok_or_else(|| argument_error(format!("Unknown argument name: {name}")))?
            }
            None if seen_named => return Err(argument_error("Named and positional arguments cannot be mixed".into())),
            None if position >= parameters.len() => {
                return Err(argument_error(format!("Too many arguments for procedure (at most {})", parameters.len())))
            }
            None => position,
        };
        if values[index].is_some() {
            return Err(argument_error(format!("Duplicate procedure argument: {}", parameters[index])));
        }
        let text = literal_text(expr)
            .ok_or_else(|| argument_error(format!("Argument {} must be a literal, got {expr}", parameters[index])))?;
        values[index] = Some(text);
    }
    Ok(values)
}

/// Runs one `CALL`.
pub(crate) async fn call(engine: &Engine, session: &SqlSession, procedure: &Function) -> Result<(), FlotillaError> {
    let runtime: &dyn RuntimeSource = engine.runtime.as_ref();
    let name = qualified_name(session, procedure)?;
    crate::access::check_procedure(&name)?;
    if let Some(catalog) = name.strip_suffix(".system.vacuum") {
        if engine.writable.contains_key(catalog) {
            crate::maintenance::vacuum(engine, catalog, bind(procedure, VACUUM_PARAMETERS)?).await?;
            return Ok(());
        }
    }
    match name.as_str() {
        "system.runtime.kill_query" => {
            let mut values = bind(procedure, KILL_QUERY_PARAMETERS)?.into_iter();
            let query_id = values
                .next()
                .flatten()
                .ok_or_else(|| argument_error("Required procedure argument 'query_id' is missing".into()))?;
            let message = values.next().flatten();
            runtime.kill_query(&session.user, &query_id, message.as_deref()).await
        }
        _ => Err(FlotillaError::new(ErrorCode::ProcedureNotFound, format!("Procedure not registered: {name}"))),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn procedure(sql: &str) -> Function {
        let statement = Parser::parse_sql(&crate::statement::dialect(), sql).unwrap().remove(0);
        let Statement::Call(function) = statement else { panic!("{sql} is not a CALL") };
        function
    }

    #[test]
    fn arguments_bind_by_name_or_position() {
        let named = procedure("CALL system.runtime.kill_query(message => 'bye', query_id => 'q1')");
        assert_eq!(bind(&named, KILL_QUERY_PARAMETERS).unwrap(), [Some("q1".into()), Some("bye".into())]);
        let positional = procedure("CALL system.runtime.kill_query('q1')");
        assert_eq!(bind(&positional, KILL_QUERY_PARAMETERS).unwrap(), [Some("q1".into()), None]);
        for bad in [
            "CALL system.runtime.kill_query(bogus => 'x')",
            "CALL system.runtime.kill_query('a', 'b', 'c')",
            "CALL system.runtime.kill_query(query_id => 'a', query_id => 'b')",
            "CALL system.runtime.kill_query(query_id => 'a', 'b')",
            "CALL system.runtime.kill_query(query_id => 1 + 1)",
        ] {
            let error = bind(&procedure(bad), KILL_QUERY_PARAMETERS).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidProcedureArgument, "{bad}");
        }
    }

    #[test]
    fn names_are_qualified_from_the_session() {
        let mut session = SqlSession::default();
        assert!(qualified_name(&session, &procedure("CALL runtime.kill_query('q')")).is_err());
        session.catalog = Some("system".into());
        session.schema = Some("runtime".into());
        for sql in ["CALL kill_query('q')", "CALL runtime.kill_query('q')", "CALL SYSTEM.RUNTIME.KILL_QUERY('q')"] {
            assert_eq!(qualified_name(&session, &procedure(sql)).unwrap(), "system.runtime.kill_query", "{sql}");
        }
    }
}
