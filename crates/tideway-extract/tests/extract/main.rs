//! Integration tests of tideway-extract: one binary, one module per area.

mod config;
mod golden;
mod kafka_load;
mod kafka_reader;
mod kustomer;
mod normalize;
mod rest;
