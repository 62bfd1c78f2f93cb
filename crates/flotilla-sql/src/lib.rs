//! Flotilla's SQL layer: Trino's SQL surface on Apache DataFusion.
//!
//! ```text
//!  SQL text ─▶ statement::parse_statement ─┬─ SHOW / SET SESSION / USE / PREPARE / ... ─▶ show, session
//!                                          └─ query (sqlparser AST) ─▶ DataFusion plan ─▶ stream
//!                         catalogs: tpch (generated), system, information_schema per catalog
//! ```
//!
//! [`Engine::execute`] is the entry point: it runs one statement for one [`SqlSession`] and
//! returns a [`StatementResult`] (an Arrow stream plus the session changes for the protocol's
//! response headers). Errors are [`flotilla_proto::FlotillaError`]s with Trino's codes,
//! classified once in [`error`]. Catalogs are configured Trino-style ([`catalog::Catalogs`]).

pub mod access;
pub mod catalog;
pub mod conjuncts;
pub mod cross_stage_filters;
pub mod decimal;
pub mod distributed;
mod engine;
pub mod error;
mod functions;
pub mod join_filters;
pub mod join_order;
pub mod join_sides;
mod maintenance;
pub mod memory;
pub mod ordering;
mod placement;
mod procedures;
pub mod progress;
mod rewrite;
pub mod selectivity;
pub mod session;
pub mod shared_aggregate;
mod show;
pub mod single_row;
pub mod statement;
#[cfg(test)]
mod test_support;
mod types;
mod writes;

pub use distributed::Distributor;
pub use engine::{bind_parameters, Engine, SessionChanges, StatementResult};
pub use memory::{MemoryWaits, PeakMemoryPool};
pub use progress::{plan_progress, stage_tree, PlanProgress, ScanCounters, StageProgress, TaskFigures};
pub use session::{SqlSession, TableName};
