//! Tideway's collector: events in through a Segment-compatible HTTP API, durably into a log,
//! and from the log into the lake in the warehouse schema.
//!
//! ```text
//! SDK ──HTTP──► api (check, dedupe) ──append+fsync──► log ──► loader ──► <source>.tracks, ...
//!                        └─ 2xx only after the fsync          └─ offset committed with the data
//! ```
//!
//! - [`api`]: the HTTP endpoints; [`event`]: checking one event and its log record;
//!   [`dedupe`]: repeated `messageId`s within the window.
//! - [`log`]: the durable event log ([`log::EventLog`], [`log::FileLog`]).
//! - [`loader`]: the lake loader and the warehouse schema ([`warehouse`]).

pub mod api;
pub mod dedupe;
pub mod event;
pub mod loader;
pub mod log;
pub mod metrics;
pub mod service;
pub mod warehouse;
