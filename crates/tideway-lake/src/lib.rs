//! The Tideway lake: Delta Lake tables addressed `schema.table`, on local disk or object
//! storage, all visible to one DataFusion session.
//!
//! Everything Tideway stores goes through here: collected events, extracted records, model
//! outputs, and Tideway's own state (cursors, offsets, sync snapshots, under the `_tideway`
//! schema). The guarantees every caller relies on:
//!
//! - **One write, one commit.** [`Lake::append`], [`Lake::overwrite`] and [`Lake::merge`] each
//!   make exactly one atomic Delta commit (a lossless column widening adds one before it).
//! - **Exactly once.** A write with a [`Txn`] (application id, version) is skipped if that
//!   application already committed that version; the `txn` is recorded in the same commit as
//!   the rows, so a crash at any point then a retry gives no duplicate and no gap.
//! - **Concurrent writers.** Two processes writing one table both succeed: conflicts are
//!   retried against the new table version (optimistic concurrency), and no row is lost.
//! - **Schemas evolve, data is never dropped** (see [`evolve`]): new columns are added,
//!   lossless widening applied, conflicting values land in variant columns.
//!
//! On disk a lake is a directory (or bucket prefix) with one Delta table per
//! `<schema>/<table>/` folder; any Delta reader (Spark, DuckDB, Polars, delta-rs) can open a
//! table by that path.

pub mod catalog;
pub mod dead_letters;
pub mod error;
pub mod evolve;
pub mod import;
mod lake;
pub mod maintenance;
mod merge;
pub mod name;
pub mod sql;
mod stage;
pub mod write;

pub use deltalake;
pub use deltalake::arrow;
pub use deltalake::datafusion;
pub use error::{LakeError, Result};
pub use import::{FileFormat, ImportReport};
pub use lake::{Lake, TableInfo, closest};
pub use maintenance::{DEFAULT_RETENTION, OptimizeReport, VacuumReport};
pub use name::{SYSTEM_SCHEMA, TableName};
pub use sql::{Executed, QueryResult, SqlOutput};
pub use stage::Staged;
pub use write::{Commit, Txn, Write, WriteMode};
