//! Errors of the lake, each knowing who is at fault.

use deltalake::DeltaTableError;
use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::error::DataFusionError;
use tideway_core::{Fault, Faulty};

/// A lake operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// A table name is not `schema.table` or breaks the naming rules.
    #[error("invalid table name `{name}`: {reason}")]
    InvalidTableName { name: String, reason: String },

    /// A query or a write named a table the lake does not have.
    #[error("table `{name}` does not exist{hint}; known tables: {known}")]
    UnknownTable {
        name: String,
        hint: String,
        known: String,
    },

    /// A table that must not exist already does.
    #[error("table `{0}` already exists")]
    TableExists(String),

    /// The lake location cannot be used (not writable, not a directory, bad URL).
    #[error("cannot use the lake at `{location}`: {reason}")]
    Location { location: String, reason: String },

    /// A merge was given no key columns, or keys that are not in the data.
    #[error("merge into `{table}`: {reason}")]
    InvalidMerge { table: String, reason: String },

    /// A SQL statement is wrong (syntax, unknown column, unsupported form).
    #[error("{0}")]
    Sql(String),

    /// An input file cannot be read or parsed.
    #[error("cannot import `{path}`: {reason}")]
    Import { path: String, reason: String },

    /// Writers kept conflicting with each other past the retry budget.
    #[error(
        "gave up committing to `{table}` after {attempts} attempts that conflicted with other writers: {last}"
    )]
    Contention {
        table: String,
        attempts: usize,
        last: String,
    },

    /// The storage under the lake failed (disk, object store).
    #[error("storage error on `{table}`: {source}")]
    Storage {
        table: String,
        #[source]
        source: DeltaTableError,
    },

    /// The Delta log or data failed in a way that is not the user's doing.
    #[error("delta error on `{table}`: {source}")]
    Delta {
        table: String,
        #[source]
        source: DeltaTableError,
    },

    /// A commit's own metadata (what a Tideway writer records in `commitInfo`) cannot be read.
    #[error(
        "the commit metadata `{key}` of `{table}` cannot be read ({message}); was the table written by something else?"
    )]
    CommitMetadata {
        table: String,
        key: String,
        message: String,
    },

    /// DataFusion failed while planning or running a query.
    #[error(transparent)]
    Query(#[from] DataFusionError),

    /// Arrow failed while reshaping a batch.
    #[error("arrow error: {0}")]
    Arrow(#[from] ArrowError),
}

impl LakeError {
    pub(crate) fn delta(table: impl ToString, source: DeltaTableError) -> LakeError {
        let table = table.to_string();
        match source {
            DeltaTableError::ObjectStore { .. } | DeltaTableError::Io { .. } => {
                LakeError::Storage { table, source }
            }
            source => LakeError::Delta { table, source },
        }
    }
}

/// A result of a lake operation.
pub type Result<T, E = LakeError> = std::result::Result<T, E>;

impl Faulty for LakeError {
    fn fault(&self) -> Fault {
        match self {
            LakeError::InvalidTableName { .. }
            | LakeError::UnknownTable { .. }
            | LakeError::TableExists(_)
            | LakeError::Location { .. }
            | LakeError::InvalidMerge { .. }
            | LakeError::Sql(_)
            | LakeError::Import { .. }
            | LakeError::CommitMetadata { .. } => Fault::User,
            LakeError::Contention { .. } | LakeError::Storage { .. } => Fault::External,
            LakeError::Query(e) => match e.find_root() {
                DataFusionError::Plan(_)
                | DataFusionError::SQL(..)
                | DataFusionError::SchemaError(..)
                | DataFusionError::NotImplemented(_) => Fault::User,
                DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => Fault::External,
                _ => Fault::Internal,
            },
            LakeError::Delta { .. } | LakeError::Arrow(_) => Fault::Internal,
        }
    }
}
