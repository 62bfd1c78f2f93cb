//! Recognises the statements Trino clients send that are not plain queries (`SHOW ...`,
//! `SET SESSION`, `USE`, `PREPARE ... FROM`, `EXECUTE`, `DESCRIBE OUTPUT`, transactions,
//! `EXPLAIN`), whose Trino syntax sqlparser does not cover, and hands everything else to
//! sqlparser as one statement.
//!
//! User input drives recursion here and in everything that walks a statement afterwards
//! (DataFusion's planner, sqlparser's visitors, even dropping the syntax tree), and a stack
//! overflow aborts the whole process. So a statement is parsed on a stack of its own
//! ([`PARSE_STACK_BYTES`], enough for the deepest tree a text of `query.max-length`
//! characters can produce), and a statement nested deeper than [`MAX_NESTING_DEPTH`]
//! (expressions, subqueries, set operations, joins) is refused with a syntax error before
//! anything else sees it. Statements that carry other statements (`PREPARE`, `EXPLAIN`,
//! `EXECUTE IMMEDIATE`) take one level only: a prepared statement cannot be another
//! `PREPARE`, `EXECUTE` or `DEALLOCATE`, as in Trino.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Statement, TableFactor, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};
use flotilla_proto::{ErrorCode, FlotillaError};

use crate::error::syntax_error;

/// A parsed statement.
#[derive(Debug, Clone)]
pub enum TrinoStatement {
    ShowCatalogs {
        like: Option<String>,
    },
    ShowSchemas {
        catalog: Option<String>,
        like: Option<String>,
    },
    ShowTables {
        schema: Vec<String>,
        like: Option<String>,
    },
    ShowColumns {
        table: Vec<String>,
    },
    ShowFunctions {
        like: Option<String>,
    },
    ShowSession {
        like: Option<String>,
    },
    SetSession {
        name: String,
        value: Expr,
    },
    ResetSession {
        name: String,
    },
    Use {
        catalog: Option<String>,
        schema: String,
    },
    Prepare {
        name: String,
        sql: String,
    },
    Execute {
        name: String,
        parameters: Vec<Expr>,
    },
    ExecuteImmediate {
        sql: String,
        parameters: Vec<Expr>,
    },
    Deallocate {
        name: String,
    },
    DescribeOutput {
        name: String,
    },
    DescribeInput {
        name: String,
    },
    StartTransaction,
    Commit,
    Rollback,
    Explain {
        analyze: bool,
        /// `TYPE LOGICAL`: the logical plan only; otherwise the plan as it runs, stages
        /// and all (Trino's default, `TYPE DISTRIBUTED`).
        logical: bool,
        sql: String,
    },
    /// `ALTER TABLE table EXECUTE procedure[(arguments)]` (Trino's table procedures, such
    /// as `optimize`); arguments by name (`name => value`) or position.
    AlterTableExecute {
        table: Vec<String>,
        procedure: String,
        arguments: Vec<(Option<String>, Expr)>,
    },
    /// Anything else, parsed by sqlparser.
    Other(Box<Statement>),
}

/// The deepest nesting of expressions, queries and table factors a statement may have.
/// Generated SQL (long `OR` chains, `UNION ALL` of many selects) stays well below it; every
/// later walk of the statement (planning, optimising, evaluating) stays well inside a
/// thread's stack with it.
pub const MAX_NESTING_DEPTH: usize = 1000;

/// The stack a statement is parsed on (reserved address space; only what is used is
/// touched). Dropping a refused, very deep syntax tree recurses once per level.
const PARSE_STACK_BYTES: usize = 256 << 20;

/// Statements a prepared statement may not be (Trino's rule), which also keeps `EXECUTE`
/// from running itself.
fn check_preparable(statement: &TrinoStatement) -> Result<(), FlotillaError> {
    let kind = match statement {
        TrinoStatement::Prepare { .. } => "PREPARE",
        TrinoStatement::Execute { .. } => "EXECUTE",
        TrinoStatement::ExecuteImmediate { .. } => "EXECUTE IMMEDIATE",
        TrinoStatement::Deallocate { .. } => "DEALLOCATE",
        _ => return Ok(()),
    };
    Err(FlotillaError::not_supported(format!("Invalid statement type for prepared statement: {kind}")))
}

/// Parses the text of a prepared statement (from `PREPARE`, the
/// `X-Trino-Prepared-Statement` header or `EXECUTE IMMEDIATE`) for running it: refused
/// when it is a kind a prepared statement cannot be.
pub fn parse_prepared(sql: &str) -> Result<TrinoStatement, FlotillaError> {
    let statement = parse_statement(sql)?;
    check_preparable(&statement)?;
    Ok(statement)
}

/// Counts how deep a statement nests; stops (Break) past [`MAX_NESTING_DEPTH`], so its own
/// recursion stays bounded too.
#[derive(Default)]
struct NestingDepth {
    depth: usize,
}

impl NestingDepth {
    fn enter(&mut self, levels: usize) -> ControlFlow<()> {
        self.depth += levels;
        if self.depth > MAX_NESTING_DEPTH {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn leave(&mut self, levels: usize) -> ControlFlow<()> {
        self.depth = self.depth.saturating_sub(levels);
        ControlFlow::Continue(())
    }
}

/// How deep the set operations of a query's body nest (`a UNION b UNION c` is a chain
/// sqlparser builds without recursion), counted without recursion.
fn set_operation_depth(body: &SetExpr) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(body, 1usize)];
    while let Some((expr, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        if depth > MAX_NESTING_DEPTH {
            break;
        }
        if let SetExpr::SetOperation { left, right, .. } = expr {
            pending.push((left, depth + 1));
            pending.push((right, depth + 1));
        }
    }
    deepest
}

impl Visitor for NestingDepth {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.enter(set_operation_depth(&query.body))
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.leave(set_operation_depth(&query.body))
    }

    fn pre_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<()> {
        self.enter(1)
    }

    fn post_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<()> {
        self.leave(1)
    }

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.enter(1)
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.leave(1)
    }
}

fn too_deep() -> FlotillaError {
    FlotillaError::new(
        ErrorCode::SyntaxError,
        format!("line 1:1: Statement is too large: it nests deeper than {MAX_NESTING_DEPTH} levels"),
    )
    .with_location(flotilla_proto::ErrorLocation { line: 1, column: 1 })
}

/// Refuses a statement nested deeper than [`MAX_NESTING_DEPTH`] (one built from parts
/// checked apart, such as a prepared statement with its parameters bound).
pub(crate) fn check_nesting(statement: &TrinoStatement) -> Result<(), FlotillaError> {
    stacker::grow(PARSE_STACK_BYTES, || check_depth(statement))
}

fn check_depth(statement: &TrinoStatement) -> Result<(), FlotillaError> {
    let mut depth = NestingDepth::default();
    let deep = match statement {
        TrinoStatement::Other(statement) => statement.visit(&mut depth).is_break(),
        TrinoStatement::SetSession { value, .. } => value.visit(&mut depth).is_break(),
        TrinoStatement::AlterTableExecute { arguments, .. } => {
            arguments.iter().any(|(_, v)| v.visit(&mut depth).is_break())
        }
        TrinoStatement::Execute { parameters, .. } | TrinoStatement::ExecuteImmediate { parameters, .. } => {
            parameters.iter().any(|p| p.visit(&mut depth).is_break())
        }
        _ => false,
    };
    if deep {
        return Err(too_deep());
    }
    Ok(())
}

pub(crate) fn dialect() -> GenericDialect {
    GenericDialect {}
}

/// Byte offset of a token's start in `sql`.
fn byte_offset(sql: &str, location: Location) -> usize {
    let mut line = 1u64;
    let mut column = 1u64;
    for (offset, ch) in sql.char_indices() {
        if line == location.line && column == location.column {
            return offset;
        }
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    sql.len()
}

/// A cursor over the significant tokens of a statement.
struct Cursor<'a> {
    sql: &'a str,
    tokens: Vec<TokenWithSpan>,
    position: usize,
}

impl<'a> Cursor<'a> {
    fn new(sql: &'a str) -> Result<Self, FlotillaError> {
        let dialect = dialect();
        let tokens = Tokenizer::new(&dialect, sql)
            .tokenize_with_location()
            .map_err(|e| syntax_error(&e.into()))?
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        Ok(Self { sql, tokens, position: 0 })
    }

    fn peek_word(&self, offset: usize) -> Option<String> {
        match self.tokens.get(self.position + offset).map(|t| &t.token) {
            Some(Token::Word(word)) if word.quote_style.is_none() => Some(word.value.to_ascii_uppercase()),
            _ => None,
        }
    }

    /// Consumes the given keywords if they come next, in order.
    fn keywords(&mut self, words: &[&str]) -> bool {
        let matches = words.iter().enumerate().all(|(i, w)| self.peek_word(i).as_deref() == Some(*w));
        if matches {
            self.position += words.len();
        }
        matches
    }

    fn at_end(&self) -> bool {
        self.tokens[self.position..].iter().all(|t| matches!(t.token, Token::SemiColon | Token::EOF))
    }

    /// Where the current token starts; past the last token, where that one ends (so
    /// [`Cursor::rest`] is empty there, never the whole statement again).
    fn here(&self) -> Location {
        match self.tokens.get(self.position) {
            Some(token) => token.span.start,
            None => self.tokens.last().map(|t| t.span.end).unwrap_or(Location { line: 1, column: 1 }),
        }
    }

    fn error(&self, message: &str) -> FlotillaError {
        let location = self.here();
        let found = self.tokens.get(self.position).map(|t| t.token.to_string()).unwrap_or_default();
        syntax_error(&datafusion::sql::sqlparser::parser::ParserError::ParserError(format!(
            "{message}, found: {found} at Line: {}, Column: {}",
            location.line, location.column
        )))
    }

    fn expect_end(&self) -> Result<(), FlotillaError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.error("Expected: end of statement"))
        }
    }

    /// An identifier (quoted or not); unquoted ones are lowercased as Trino does.
    fn identifier(&mut self) -> Result<String, FlotillaError> {
        match self.tokens.get(self.position).map(|t| &t.token) {
            Some(Token::Word(word)) => {
                self.position += 1;
                Ok(if word.quote_style.is_some() { word.value.clone() } else { word.value.to_ascii_lowercase() })
            }
            _ => Err(self.error("Expected: identifier")),
        }
    }

    /// `a`, `a.b` or `a.b.c`.
    fn qualified_name(&mut self) -> Result<Vec<String>, FlotillaError> {
        let mut parts = vec![self.identifier()?];
        while matches!(self.tokens.get(self.position).map(|t| &t.token), Some(Token::Period)) {
            self.position += 1;
            parts.push(self.identifier()?);
        }
        Ok(parts)
    }

    fn string_literal(&mut self) -> Result<String, FlotillaError> {
        match self.tokens.get(self.position).map(|t| &t.token) {
            Some(Token::SingleQuotedString(text)) => {
                self.position += 1;
                Ok(text.clone())
            }
            _ => Err(self.error("Expected: string literal")),
        }
    }

    /// `[LIKE 'pattern' [ESCAPE 'c']]`, then the end.
    fn optional_like(&mut self) -> Result<Option<String>, FlotillaError> {
        let like = if self.keywords(&["LIKE"]) { Some(self.string_literal()?) } else { None };
        if like.is_some() && self.keywords(&["ESCAPE"]) {
            let _ = self.string_literal()?;
            return Err(FlotillaError::not_supported("LIKE ... ESCAPE is not supported in SHOW statements"));
        }
        self.expect_end()?;
        Ok(like)
    }

    /// The statement text from the current token on, without a trailing semicolon.
    fn rest(&self) -> &'a str {
        let start = byte_offset(self.sql, self.here());
        self.sql[start..].trim().trim_end_matches(';').trim_end()
    }

    /// Parses the rest as comma-separated expressions.
    fn expressions(&self) -> Result<Vec<Expr>, FlotillaError> {
        let dialect = dialect();
        let mut parser = Parser::new(&dialect).try_with_sql(self.rest()).map_err(|e| syntax_error(&e))?;
        let expressions = parser.parse_comma_separated(Parser::parse_expr).map_err(|e| syntax_error(&e))?;
        let trailing = parser.peek_token();
        if !matches!(trailing.token, Token::EOF | Token::SemiColon) {
            return Err(syntax_error(&datafusion::sql::sqlparser::parser::ParserError::ParserError(format!(
                "Expected: end of statement, found: {}",
                trailing.token
            ))));
        }
        Ok(expressions)
    }
}

/// Parses one statement (on a stack of its own; refused when nested too deeply).
pub fn parse_statement(sql: &str) -> Result<TrinoStatement, FlotillaError> {
    stacker::grow(PARSE_STACK_BYTES, || {
        let statement = parse_unchecked(sql)?;
        // A refused statement is dropped here, on the big stack.
        check_depth(&statement)?;
        Ok(statement)
    })
}

/// The rest of `ALTER TABLE table EXECUTE`: `procedure[(arguments)]`.
fn alter_table_execute(cursor: &Cursor<'_>, table: Vec<String>) -> Result<TrinoStatement, FlotillaError> {
    use datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArgOperator, FunctionArguments};
    let mut call = cursor.expressions()?;
    let (procedure, arguments) = match call.as_mut_slice() {
        [Expr::Identifier(name)] => (name.value.to_lowercase(), Vec::new()),
        [Expr::Function(function)] if function.name.0.len() == 1 => {
            let procedure = crate::writes::parts(&function.name).remove(0);
            let list = match std::mem::replace(&mut function.args, FunctionArguments::None) {
                FunctionArguments::None => Vec::new(),
                FunctionArguments::List(list) if list.duplicate_treatment.is_none() && list.clauses.is_empty() => {
                    list.args
                }
                _ => return Err(cursor.error("Expected: procedure arguments")),
            };
            let arguments = list
                .into_iter()
                .map(|argument| match argument {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(value)) => Ok((None, value)),
                    FunctionArg::Named {
                        name,
                        arg: FunctionArgExpr::Expr(value),
                        operator: FunctionArgOperator::RightArrow,
                    } => Ok((Some(name.value.to_lowercase()), value)),
                    other => Err(FlotillaError::new(
                        ErrorCode::SyntaxError,
                        format!("Unsupported procedure argument: {other}"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            (procedure, arguments)
        }
        _ => return Err(cursor.error("Expected: a procedure name")),
    };
    Ok(TrinoStatement::AlterTableExecute { table, procedure, arguments })
}

/// Parses one statement without the depth check (the caller checks).
fn parse_unchecked(sql: &str) -> Result<TrinoStatement, FlotillaError> {
    let mut cursor = Cursor::new(sql)?;
    if cursor.at_end() {
        return Err(FlotillaError::new(ErrorCode::SyntaxError, "line 1:1: statement is empty"));
    }
    if cursor.keywords(&["SHOW", "CATALOGS"]) {
        return Ok(TrinoStatement::ShowCatalogs { like: cursor.optional_like()? });
    }
    if cursor.keywords(&["SHOW", "SCHEMAS"]) {
        let catalog =
            if cursor.keywords(&["FROM"]) || cursor.keywords(&["IN"]) { Some(cursor.identifier()?) } else { None };
        return Ok(TrinoStatement::ShowSchemas { catalog, like: cursor.optional_like()? });
    }
    if cursor.keywords(&["SHOW", "TABLES"]) {
        let schema =
            if cursor.keywords(&["FROM"]) || cursor.keywords(&["IN"]) { cursor.qualified_name()? } else { vec![] };
        return Ok(TrinoStatement::ShowTables { schema, like: cursor.optional_like()? });
    }
    if cursor.keywords(&["SHOW", "COLUMNS", "FROM"]) || cursor.keywords(&["SHOW", "COLUMNS", "IN"]) {
        let table = cursor.qualified_name()?;
        cursor.expect_end()?;
        return Ok(TrinoStatement::ShowColumns { table });
    }
    if cursor.keywords(&["SHOW", "FUNCTIONS"]) {
        return Ok(TrinoStatement::ShowFunctions { like: cursor.optional_like()? });
    }
    if cursor.keywords(&["SHOW", "SESSION"]) {
        return Ok(TrinoStatement::ShowSession { like: cursor.optional_like()? });
    }
    if cursor.keywords(&["SET", "SESSION"]) {
        let name = cursor.qualified_name()?.join(".");
        if !matches!(cursor.tokens.get(cursor.position).map(|t| &t.token), Some(Token::Eq)) {
            return Err(cursor.error("Expected: ="));
        }
        cursor.position += 1;
        let mut values = cursor.expressions()?;
        if values.len() != 1 {
            return Err(cursor.error("Expected: one value"));
        }
        return Ok(TrinoStatement::SetSession { name, value: values.remove(0) });
    }
    if cursor.keywords(&["RESET", "SESSION"]) {
        let name = cursor.qualified_name()?.join(".");
        cursor.expect_end()?;
        return Ok(TrinoStatement::ResetSession { name });
    }
    let start = cursor.position;
    if cursor.keywords(&["ALTER", "TABLE"]) {
        let table = cursor.qualified_name()?;
        if cursor.keywords(&["EXECUTE"]) {
            return alter_table_execute(&cursor, table);
        }
        cursor.position = start;
    }
    if cursor.keywords(&["USE"]) {
        let mut parts = cursor.qualified_name()?;
        cursor.expect_end()?;
        return match parts.len() {
            1 => Ok(TrinoStatement::Use { catalog: None, schema: parts.remove(0) }),
            2 => {
                let schema = parts.remove(1);
                Ok(TrinoStatement::Use { catalog: Some(parts.remove(0)), schema })
            }
            _ => Err(FlotillaError::new(ErrorCode::SyntaxError, "USE takes a schema or catalog.schema")),
        };
    }
    if cursor.keywords(&["PREPARE"]) {
        let name = cursor.identifier()?;
        if !cursor.keywords(&["FROM"]) {
            return Err(cursor.error("Expected: FROM"));
        }
        // Decided before parsing what follows, so `PREPARE a FROM PREPARE b FROM ...` is
        // never parsed level by level.
        for (words, kind) in [
            (&["PREPARE"][..], "PREPARE"),
            (&["EXECUTE"][..], "EXECUTE"),
            (&["DEALLOCATE", "PREPARE"][..], "DEALLOCATE"),
        ] {
            if words.iter().enumerate().all(|(i, w)| cursor.peek_word(i).as_deref() == Some(*w)) {
                return Err(FlotillaError::not_supported(format!(
                    "Invalid statement type for prepared statement: {kind}"
                )));
            }
        }
        let sql = cursor.rest().to_string();
        // The statement must itself parse; errors surface at PREPARE time, as in Trino.
        check_preparable(&parse_unchecked(&sql)?)?;
        return Ok(TrinoStatement::Prepare { name, sql });
    }
    if cursor.keywords(&["EXECUTE", "IMMEDIATE"]) {
        let sql = cursor.string_literal()?;
        let parameters =
            if cursor.keywords(&["USING"]) { cursor.expressions()? } else { cursor.expect_end().map(|_| vec![])? };
        return Ok(TrinoStatement::ExecuteImmediate { sql, parameters });
    }
    if cursor.keywords(&["EXECUTE"]) {
        let name = cursor.identifier()?;
        let parameters =
            if cursor.keywords(&["USING"]) { cursor.expressions()? } else { cursor.expect_end().map(|_| vec![])? };
        return Ok(TrinoStatement::Execute { name, parameters });
    }
    if cursor.keywords(&["DEALLOCATE", "PREPARE"]) {
        let name = cursor.identifier()?;
        cursor.expect_end()?;
        return Ok(TrinoStatement::Deallocate { name });
    }
    if cursor.keywords(&["DESCRIBE", "OUTPUT"]) {
        let name = cursor.identifier()?;
        cursor.expect_end()?;
        return Ok(TrinoStatement::DescribeOutput { name });
    }
    if cursor.keywords(&["DESCRIBE", "INPUT"]) {
        let name = cursor.identifier()?;
        cursor.expect_end()?;
        return Ok(TrinoStatement::DescribeInput { name });
    }
    if cursor.keywords(&["DESCRIBE"]) || cursor.keywords(&["DESC"]) {
        let table = cursor.qualified_name()?;
        cursor.expect_end()?;
        return Ok(TrinoStatement::ShowColumns { table });
    }
    if cursor.keywords(&["START", "TRANSACTION"]) {
        // Isolation level and access mode are accepted: every statement autocommits.
        let _ = cursor.rest();
        return Ok(TrinoStatement::StartTransaction);
    }
    if cursor.keywords(&["COMMIT"]) {
        let _ = cursor.keywords(&["WORK"]);
        cursor.expect_end()?;
        return Ok(TrinoStatement::Commit);
    }
    if cursor.keywords(&["ROLLBACK"]) {
        let _ = cursor.keywords(&["WORK"]);
        cursor.expect_end()?;
        return Ok(TrinoStatement::Rollback);
    }
    if cursor.keywords(&["EXPLAIN"]) {
        let analyze = cursor.keywords(&["ANALYZE"]);
        let _verbose = cursor.keywords(&["VERBOSE"]);
        let mut logical = false;
        if matches!(cursor.tokens.get(cursor.position).map(|t| &t.token), Some(Token::LParen)) {
            // `(TYPE ..., FORMAT ...)`: only the text format of the distributed/logical plan
            // exists; other options are rejected rather than ignored.
            cursor.position += 1;
            loop {
                let option = cursor.peek_word(0).unwrap_or_default();
                let value = cursor.peek_word(1).unwrap_or_default();
                let accepted = matches!(
                    (option.as_str(), value.as_str()),
                    ("FORMAT", "TEXT") | ("TYPE", "LOGICAL") | ("TYPE", "DISTRIBUTED")
                );
                if !accepted {
                    return Err(FlotillaError::not_supported(format!(
                        "EXPLAIN option {option} {value} is not supported"
                    )));
                }
                logical |= (option.as_str(), value.as_str()) == ("TYPE", "LOGICAL");
                cursor.position += 2;
                match cursor.tokens.get(cursor.position).map(|t| &t.token) {
                    Some(Token::Comma) => cursor.position += 1,
                    Some(Token::RParen) => {
                        cursor.position += 1;
                        break;
                    }
                    _ => return Err(cursor.error("Expected: , or )")),
                }
            }
        }
        return Ok(TrinoStatement::Explain { analyze, logical, sql: cursor.rest().to_string() });
    }

    // Trino's `CREATE [OR REPLACE] VIEW name SECURITY {DEFINER | INVOKER} AS ...`: without
    // access control both mean the same, and sqlparser does not know the clause: drop it
    // (once: Trino's grammar has one such clause).
    let mut without_security = None;
    if cursor.keywords(&["CREATE", "OR", "REPLACE", "VIEW"]) || cursor.keywords(&["CREATE", "VIEW"]) {
        let word = |i: usize| match cursor.tokens.get(i).map(|t| &t.token) {
            Some(Token::Word(word)) if word.quote_style.is_none() => word.value.to_ascii_uppercase(),
            _ => String::new(),
        };
        let mut clauses = (cursor.position..cursor.tokens.len())
            .take_while(|&i| word(i) != "AS")
            .filter(|&i| word(i) == "SECURITY" && matches!(word(i + 1).as_str(), "DEFINER" | "INVOKER"));
        if let Some(i) = clauses.next() {
            if let Some(second) = clauses.next() {
                cursor.position = second;
                return Err(cursor.error("Expected: AS"));
            }
            let from = byte_offset(sql, cursor.tokens[i].span.start);
            let to = byte_offset(sql, cursor.tokens[i + 1].span.end);
            without_security = Some(format!("{}{}", &sql[..from], &sql[to..]));
        }
    }

    let dialect = dialect();
    let text = without_security.as_deref().unwrap_or(sql);
    let mut statements = Parser::parse_sql(&dialect, text).map_err(|e| syntax_error(&e))?;
    match statements.len() {
        1 => Ok(TrinoStatement::Other(Box::new(statements.remove(0)))),
        0 => Err(FlotillaError::new(ErrorCode::SyntaxError, "line 1:1: statement is empty")),
        _ => Err(FlotillaError::new(ErrorCode::SyntaxError, "only one statement may be submitted at a time")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> TrinoStatement {
        parse_statement(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    #[test]
    fn recognises_show_statements() {
        assert!(matches!(parse("SHOW CATALOGS"), TrinoStatement::ShowCatalogs { like: None }));
        assert!(
            matches!(parse("show schemas from tpch like 't%'"), TrinoStatement::ShowSchemas { catalog: Some(c), like: Some(l) } if c == "tpch" && l == "t%")
        );
        assert!(
            matches!(parse("SHOW TABLES IN tpch.tiny"), TrinoStatement::ShowTables { schema, .. } if schema == ["tpch", "tiny"])
        );
        assert!(
            matches!(parse("DESCRIBE tpch.tiny.nation"), TrinoStatement::ShowColumns { table } if table.len() == 3)
        );
        assert!(
            matches!(parse("SHOW COLUMNS FROM \"Nation\""), TrinoStatement::ShowColumns { table } if table == ["Nation"])
        );
    }

    #[test]
    fn recognises_session_and_prepared_statements() {
        assert!(
            matches!(parse("SET SESSION query_max_run_time = '1h'"), TrinoStatement::SetSession { name, .. } if name == "query_max_run_time")
        );
        assert!(matches!(parse("USE tpch.tiny"), TrinoStatement::Use { catalog: Some(_), schema } if schema == "tiny"));
        match parse("PREPARE st1 FROM SELECT ? + 1") {
            TrinoStatement::Prepare { name, sql } => {
                assert_eq!(name, "st1");
                assert_eq!(sql, "SELECT ? + 1");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(parse("EXECUTE st1 USING 1, 'a'"), TrinoStatement::Execute { parameters, .. } if parameters.len() == 2)
        );
        assert!(
            matches!(parse("EXECUTE IMMEDIATE 'SELECT ''x'', ?' USING 2"), TrinoStatement::ExecuteImmediate { sql, parameters } if sql == "SELECT 'x', ?" && parameters.len() == 1)
        );
        assert!(matches!(parse("DEALLOCATE PREPARE st1"), TrinoStatement::Deallocate { .. }));
        assert!(matches!(parse("DESCRIBE OUTPUT st1"), TrinoStatement::DescribeOutput { .. }));
        assert!(matches!(parse("START TRANSACTION ISOLATION LEVEL READ COMMITTED"), TrinoStatement::StartTransaction));
        assert!(
            matches!(parse("EXPLAIN (TYPE DISTRIBUTED) SELECT 1"), TrinoStatement::Explain { analyze: false, logical: false, sql } if sql == "SELECT 1")
        );
    }

    #[test]
    fn statements_that_end_early_are_errors_not_loops() {
        // Found by the `statement` fuzz target: past the last token the rest of the text
        // was the whole statement again, so `PREPARE p FROM` parsed itself forever.
        for sql in ["PREPARE p FROM", "PREPARE p FROM  ", "prepare p from -- nothing\n", "EXPLAIN", "EXPLAIN ANALYZE"] {
            let parsed = parse_statement(sql);
            assert!(!matches!(parsed, Ok(TrinoStatement::Prepare { .. })), "{sql}: {parsed:?}");
            if let Ok(TrinoStatement::Explain { sql: inner, .. }) = &parsed {
                assert!(inner.is_empty(), "{sql}: {inner}");
            }
        }
        assert!(parse_statement("PREPARE p FROM").is_err());
    }

    #[test]
    fn queries_go_to_sqlparser() {
        assert!(matches!(parse("SELECT 1;"), TrinoStatement::Other(_)));
        assert!(matches!(parse("-- comment\nWITH x AS (SELECT 1) SELECT * FROM x"), TrinoStatement::Other(_)));
    }

    #[test]
    fn syntax_errors_carry_a_location() {
        let error = parse_statement("SELECT (1\nFROM t").unwrap_err();
        assert_eq!(error.code, ErrorCode::SyntaxError);
        assert_eq!(error.location.map(|l| l.line), Some(2));
        let error = parse_statement("SET SESSION x 1").unwrap_err();
        assert_eq!(error.code, ErrorCode::SyntaxError);
        assert!(parse_statement("   ").is_err());
        assert!(parse_statement("SELECT 1; SELECT 2").is_err());
        assert_eq!(parse_statement("EXPLAIN (FORMAT GRAPHVIZ) SELECT 1").unwrap_err().code, ErrorCode::NotSupported);
    }
}
