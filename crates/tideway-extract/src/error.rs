//! What can go wrong in an extraction, and who is at fault.

use tideway_core::config::ConfigErrors;
use tideway_core::{Fault, Faulty};
use tideway_lake::LakeError;

use crate::normalize::NormalizeError;

/// An extraction error. Every variant names the source (and the resource or URL) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The source file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// No source of that name.
    #[error("unknown source `{name}`; sources in {dir}: {known}")]
    UnknownSource {
        name: String,
        dir: String,
        known: String,
    },
    /// The API refused the credentials.
    #[error(
        "{source_name}: the API at {url} answered {status}: the credentials were refused; check {hint}"
    )]
    Unauthorized {
        source_name: String,
        url: String,
        status: u16,
        hint: String,
    },
    /// The API answered with an error a retry cannot fix (400, 404...).
    #[error("{source_name}: {method} {url} answered {status}: {body}")]
    Rejected {
        source_name: String,
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    /// The API kept failing (429, 5xx, timeouts, refused connections) through every attempt.
    #[error(
        "{source_name}: {method} {url} failed {attempts} times, last: {last}; the API may be down or the rate limit too tight (set `requests_per_minute`)"
    )]
    RetriesExhausted {
        source_name: String,
        method: &'static str,
        url: String,
        attempts: u32,
        last: String,
    },
    /// A page that is not what the source file says.
    #[error("{source_name}: resource `{resource}`: {message} (page {url})")]
    Page {
        source_name: String,
        resource: String,
        url: String,
        message: String,
    },
    /// More records share one cursor value than one query can return.
    #[error(
        "{source_name}: resource `{resource}`: more than {cap} records share the cursor value `{value}`, more than one query can return; no cursor restart can page past them"
    )]
    TooManyTies {
        source_name: String,
        resource: String,
        cap: u64,
        value: String,
    },
    /// A record the normalizer could not take.
    #[error("{source_name}: resource `{resource}`: {error}")]
    Record {
        source_name: String,
        resource: String,
        error: NormalizeError,
    },
    /// A Kafka source's brokers, topics or stored positions.
    #[error("{source_name}: {error}")]
    Kafka {
        source_name: String,
        error: crate::kafka::KafkaError,
    },
    /// A Kafka source's checkpoint in the lake cannot be read.
    #[error(
        "{source_name}: the checkpoint in the newest commit of `{table}` cannot be read ({message}); was the table written by something else?"
    )]
    Checkpoint {
        source_name: String,
        table: String,
        message: String,
    },
    /// The lake failed.
    #[error(transparent)]
    Lake(Box<LakeError>),
    /// Tideway is wrong.
    #[error("internal error (please report it): {0}")]
    Internal(String),
    /// Reading a source file failed.
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

impl Faulty for ExtractError {
    fn fault(&self) -> Fault {
        match self {
            ExtractError::Config(_)
            | ExtractError::UnknownSource { .. }
            | ExtractError::Unauthorized { .. }
            | ExtractError::Rejected { .. }
            | ExtractError::TooManyTies { .. }
            | ExtractError::Record { .. }
            | ExtractError::Page { .. } => Fault::User,
            ExtractError::RetriesExhausted { .. } | ExtractError::Io { .. } => Fault::External,
            ExtractError::Kafka { error, .. } => match error.fault() {
                crate::kafka::KafkaFault::User => Fault::User,
                crate::kafka::KafkaFault::External => Fault::External,
                crate::kafka::KafkaFault::Internal => Fault::Internal,
            },
            ExtractError::Checkpoint { .. } => Fault::User,
            ExtractError::Internal(_) => Fault::Internal,
            ExtractError::Lake(e) => e.fault(),
        }
    }
}

impl From<LakeError> for ExtractError {
    fn from(e: LakeError) -> Self {
        ExtractError::Lake(Box::new(e))
    }
}

/// Results of this crate.
pub type Result<T, E = ExtractError> = std::result::Result<T, E>;
