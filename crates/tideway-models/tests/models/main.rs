//! Model compiler tests: golden cases (SQL in; inferred schemas, or the expected errors, out).

mod golden;
mod run;
