//! The statement front-parser (and sqlparser behind it) on any text: it must answer, never
//! crash or overflow its stack, however deep or long the statement.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sql = String::from_utf8_lossy(data);
    let _ = flotilla_sql::statement::parse_statement(&sql);
    let _ = flotilla_sql::statement::parse_prepared(&sql);
});
