//! Integration tests of tideway-extract: one binary, one module per area.

mod config;
mod golden;
mod kustomer;
mod normalize;
mod rest;
