//! The collector's integration tests: one binary.

mod http;
mod log;
