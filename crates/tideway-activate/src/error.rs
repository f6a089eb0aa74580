//! The crate's error type.

use tideway_core::config::ConfigErrors;
use tideway_core::{Fault, Faulty};

/// Everything that can stop a sync or a transformation from running.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// A sync file or a destination table is wrong.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A destination that a sync or a connection sends to reads variables this environment
    /// does not set.
    #[error(
        "{user} sends to destination `{destination}`, which reads {}, not set in this environment: set {} to run it",
        variables.iter().map(|v| format!("${{{v}}}")).collect::<Vec<_>>().join(", "),
        if variables.len() == 1 { "it" } else { "them" }
    )]
    UnsetVariables {
        user: String,
        destination: String,
        variables: Vec<String>,
    },
    /// No sync of that name.
    #[error("unknown sync `{name}`; {known}")]
    UnknownSync { name: String, known: String },
    /// The source table is missing or lacks a column the sync names.
    #[error("sync `{sync}`: {message}")]
    Source { sync: String, message: String },
    /// A file could not be read.
    #[error("cannot read `{path}`")]
    Io {
        path: String,
        #[source]
        error: std::io::Error,
    },
    /// A transformation does not load (syntax error, unknown import).
    #[error(transparent)]
    Transform(Box<crate::transform::TransformError>),
    /// The destination refused the credentials or cannot be reached.
    #[error("destination `{destination}`: {message}")]
    Destination {
        destination: String,
        message: String,
    },
    /// The lake failed.
    #[error(transparent)]
    Lake(Box<tideway_lake::LakeError>),
    /// A query over the lake failed.
    #[error(transparent)]
    Query(Box<deltalake::datafusion::error::DataFusionError>),
    /// The collector's event log failed (live connections read it).
    #[error("the event log: {0}")]
    EventLog(#[from] tideway_collect::log::LogError),
    /// An invariant of Tideway's own broke.
    #[error("internal error (likely a bug in Tideway, please report it): {0}")]
    Internal(String),
}

impl From<tideway_lake::LakeError> for ActivateError {
    fn from(e: tideway_lake::LakeError) -> Self {
        ActivateError::Lake(Box::new(e))
    }
}

impl From<deltalake::arrow::error::ArrowError> for ActivateError {
    fn from(e: deltalake::arrow::error::ArrowError) -> Self {
        ActivateError::Internal(format!("arrow: {e}"))
    }
}

impl From<deltalake::datafusion::error::DataFusionError> for ActivateError {
    fn from(e: deltalake::datafusion::error::DataFusionError) -> Self {
        ActivateError::Query(Box::new(e))
    }
}

impl From<crate::transform::TransformError> for ActivateError {
    fn from(e: crate::transform::TransformError) -> Self {
        ActivateError::Transform(Box::new(e))
    }
}

impl Faulty for ActivateError {
    fn fault(&self) -> Fault {
        match self {
            ActivateError::Config(_)
            | ActivateError::UnknownSync { .. }
            | ActivateError::UnsetVariables { .. }
            | ActivateError::Source { .. }
            | ActivateError::Transform(_) => Fault::User,
            ActivateError::Io { .. } | ActivateError::Destination { .. } => Fault::External,
            ActivateError::Lake(e) => e.fault(),
            ActivateError::Query(_) => Fault::External,
            ActivateError::EventLog(e) => e.fault(),
            ActivateError::Internal(_) => Fault::Internal,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = ActivateError> = std::result::Result<T, E>;
