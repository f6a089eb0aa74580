//! Customer 360: every identifier a customer leaves (anonymous browser ids, user ids,
//! e-mails, phones, CRM ids) stitched into one stable profile.
//!
//! - [`rules`]: identifier types, normalization, blocked values, limits (merge protection).
//! - [`graph`]: the identity graph itself, in memory: union-find over interned identifiers,
//!   deterministic and incremental.
//! - [`config`]: the `[unify]` section of `tideway.toml`.
//! - [`run`]: a unify run over the lake: read what changed, stitch, write `profiles.*`.
//! - [`explain`]: why a profile holds the identifiers it holds, and the graph's shape.
//!
//! ```no_run
//! # async fn demo(lake: tideway_lake::Lake) -> Result<(), tideway_unify::UnifyError> {
//! let config = tideway_unify::config::UnifyConfig::parse(
//!     "[unify]\n[[unify.sources]]\ntable = \"crm.contacts\"\nids = { email = \"email\" }\n",
//!     "tideway.toml",
//! )?;
//! let report = tideway_unify::run::run(&lake, &config, &["web".to_string()], &()).await?;
//! println!("{} profiles, {} merges", report.profiles, report.merges);
//! # Ok(()) }
//! ```

pub mod churn;
pub mod config;
pub mod error;
pub mod explain;
pub mod graph;
pub mod index;
pub mod predict;
pub mod rules;
pub mod run;

pub use error::{Result, UnifyError};
