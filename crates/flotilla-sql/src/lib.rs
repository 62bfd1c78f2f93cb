//! flotilla-sql
