//! The crate's error type.

use tideway_core::config::ConfigErrors;
use tideway_core::{Fault, Faulty};

/// Everything that can stop a unify run, an explanation or a prediction.
#[derive(Debug, thiserror::Error)]
pub enum UnifyError {
    /// The `[unify]` section is wrong.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A source table, column or identifier the user named is wrong.
    #[error("{0}")]
    User(String),
    /// The lake failed.
    #[error(transparent)]
    Lake(Box<tideway_lake::LakeError>),
    /// A query over the lake failed.
    #[error(transparent)]
    Query(Box<deltalake::datafusion::error::DataFusionError>),
    /// Building a table failed.
    #[error(transparent)]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    /// An invariant of Tideway's own broke.
    #[error("internal error (likely a bug in Tideway, please report it): {0}")]
    Internal(String),
}

impl From<tideway_lake::LakeError> for UnifyError {
    fn from(e: tideway_lake::LakeError) -> Self {
        UnifyError::Lake(Box::new(e))
    }
}

impl From<deltalake::datafusion::error::DataFusionError> for UnifyError {
    fn from(e: deltalake::datafusion::error::DataFusionError) -> Self {
        UnifyError::Query(Box::new(e))
    }
}

impl Faulty for UnifyError {
    fn fault(&self) -> Fault {
        match self {
            UnifyError::Config(_) | UnifyError::User(_) => Fault::User,
            UnifyError::Lake(e) => e.fault(),
            UnifyError::Query(_) => Fault::External,
            UnifyError::Arrow(_) | UnifyError::Internal(_) => Fault::Internal,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = UnifyError> = std::result::Result<T, E>;
