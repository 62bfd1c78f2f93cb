//! Trino's query type of a statement (`SELECT`, `INSERT`, `DATA_DEFINITION`, ...), as its
//! resource group selectors match it, read from the statement's first keywords: known
//! before the statement is parsed, by a gateway as well as a coordinator.

/// Trino's query type of a statement, from its first keywords.
pub fn query_type(sql: &str) -> &'static str {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == '(')
        .filter(|w| !w.is_empty())
        .take(6)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let first = words.first().map(String::as_str).unwrap_or("");
    match first {
        "SELECT" | "WITH" | "VALUES" | "TABLE" | "" => "SELECT",
        "EXPLAIN" => "EXPLAIN",
        "SHOW" | "DESCRIBE" | "DESC" => "DESCRIBE",
        "INSERT" => "INSERT",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        "MERGE" => "MERGE",
        "ANALYZE" => "ANALYZE",
        "CREATE" if words.iter().any(|w| w == "AS") && words.iter().any(|w| w == "TABLE") => "INSERT",
        "ALTER" if words.iter().any(|w| w == "EXECUTE") => "ALTER_TABLE_EXECUTE",
        _ => "DATA_DEFINITION",
    }
}

/// Whether running the statement again changes nothing: a query or a description. Anything
/// else (writes, DDL, `CALL`, `SET SESSION`, `EXPLAIN ANALYZE`) is treated as a write.
pub fn is_read_only(sql: &str) -> bool {
    matches!(query_type(sql), "SELECT" | "DESCRIBE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_types_follow_trino() {
        assert_eq!(query_type("  select 1"), "SELECT");
        assert_eq!(query_type("WITH x AS (SELECT 1) SELECT * FROM x"), "SELECT");
        assert_eq!(query_type("EXPLAIN SELECT 1"), "EXPLAIN");
        assert_eq!(query_type("SHOW TABLES"), "DESCRIBE");
        assert_eq!(query_type("CREATE TABLE t AS SELECT 1"), "INSERT");
        assert_eq!(query_type("CREATE TABLE t (a int)"), "DATA_DEFINITION");
        assert_eq!(query_type("SET SESSION a = 1"), "DATA_DEFINITION");
    }

    #[test]
    fn only_queries_and_descriptions_are_read_only() {
        assert!(is_read_only("WITH x AS (SELECT 1) SELECT * FROM x"));
        assert!(is_read_only("SHOW SCHEMAS"));
        for write in [
            "INSERT INTO t VALUES 1",
            "CREATE TABLE t AS SELECT 1",
            "CALL system.runtime.kill_query('x')",
            "EXPLAIN ANALYZE INSERT INTO t VALUES 1",
            "-- comment\nSELECT 1",
        ] {
            assert!(!is_read_only(write), "{write}");
        }
    }
}
