//! Tideway's SQL models: each `models/**/*.sql` file is one query that builds one table.
//!
//! - [`project`] reads the files, names each model's table and orders the DAG that the
//!   tables named in the SQL make;
//! - [`header`] reads each model's configuration (native TOML header, Datacoral annotations,
//!   dbt `config()`), and [`template`] renders the dbt Jinja models bring with them;
//! - [`dialect`] makes warehouse SQL (Snowflake, Redshift, DuckDB functions) run on DataFusion;
//! - [`compile`] type-checks every model against its upstreams, in DAG order, without reading a
//!   row, and reports every problem at once as a [`Diagnostic`] with file, line and column;
//! - [`lineage`] reads off each plan where every output column comes from and which input
//!   columns the query names, and where;
//! - [`plan`] compares the project with what its last runs deployed: models and columns
//!   added, removed, renamed, retyped, and which downstream reader each change breaks;
//! - [`schedule`] keeps every model fresh on its interval (a window runs when it is over and
//!   its upstreams succeeded for it) and tells how fresh each is;
//! - [`watch`] keeps a project compiled while its files change, re-checking only what an edit
//!   reaches;
//! - [`run`] executes the selected models upstreams first (table, view, incremental by window
//!   or by key), checks their data tests and records each run.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tideway_models::{Models, compile};
//! let (models, errors) = Models::load(std::path::Path::new("."));
//! let lake = tideway_lake::Lake::open(".tideway/lake", Default::default()).await?;
//! let compiled = compile::compile(models, errors, Some(&lake)).await?;
//! for d in &compiled.diagnostics {
//!     eprintln!("{d}");
//! }
//! # Ok(()) }
//! ```

pub mod compile;
pub mod diagnostic;
pub mod dialect;
pub mod header;
pub mod lineage;
pub mod plan;
pub mod project;
pub mod run;
pub mod schedule;
pub mod template;
pub mod watch;

pub use compile::{Compilation, CompiledModel};
pub use diagnostic::{Code, Diagnostic, Position};
pub use header::{ColumnTest, Materialized, ModelConfig};
pub use project::{Model, Models};
