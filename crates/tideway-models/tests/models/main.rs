//! Model tests: golden cases (SQL in; inferred schemas, lineage, or the expected errors out),
//! runs against a real lake, and impact analysis.

mod golden;
mod plan;
mod run;
mod schedule;
mod watch;
