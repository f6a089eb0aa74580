//! The collector's integration tests: one binary.

mod fuzz;
mod http;
mod log;
