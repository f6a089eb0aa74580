//! Extraction: pulling SaaS data into the lake, incrementally and exactly once.
//!
//! - [`config`]: source files (`sources/*.toml`): a declarative REST source or a built-in one.
//! - [`kustomer`]: Kustomer, built in (JSON:API, search by `updatedAt`, the 10,000-result cap).
//! - [`http`]: requests with authentication, a request budget, rate-limit waits and retries.
//! - [`page`]: pagination (JSON link, `Link` header, cursor token, offset, page number).
//! - [`normalize`]: nested JSON records to a parent table and child tables (the rules every
//!   loader of nested JSON shares).
//! - [`jsonapi`]: JSON:API resource objects unwrapped into plain records.
//! - [`run`]: a run of a source into the lake, with the cursor committed with the rows.
//! - [`kafka`], [`kafka_load`]: Kafka topics read from stored positions, and loaded into the
//!   lake with the positions committed with the rows.
//! - [`fake`]: an in-process server that speaks Kustomer's API, for tests and the demo.

pub mod config;
pub mod declared;
pub mod error;
pub mod fake;
pub mod http;
pub mod jsonapi;
pub mod kafka;
pub mod kafka_load;
pub mod kustomer;
pub mod normalize;
pub mod page;
pub mod run;

pub use config::{SourceConfig, SourceKind};
pub use error::{ExtractError, Result};
pub use kafka_load::KafkaLoader;
pub use run::{Extractor, RunOptions, RunProgress, RunReport};
