//! Tideway's shared vocabulary, used by every other crate and free of IO.
//!
//! - [`naming`]: the one set of rules that turns source field names (camelCase JSON keys, CSV
//!   headers, Kafka fields) into lake column and table names, used by every loader.
//! - [`warehouse`]: the names RudderStack's warehouse destinations give Segment-spec event
//!   fields and track events, for landing events under the names their users already query.
//! - [`error`]: who is at fault for an error ([`Fault`]) and whether retrying can help.
//! - [`time`]: the one parser for the instants sources send (ISO-8601 / RFC 3339 forms).
//! - [`config`]: the typed `tideway.toml` project file, validated in one pass that reports
//!   every problem with its line.

pub mod config;
pub mod error;
pub mod naming;
pub mod time;
pub mod warehouse;

pub use error::{Fault, Faulty};
