//! The one error type of churn prediction.

use tideway_core::{Fault, Faulty};

/// What went wrong in training, scoring or reading a model.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// The columns, labels and ids do not line up.
    #[error("the feature table is malformed: {0}")]
    Shape(String),
    /// Two columns share a name.
    #[error("feature `{0}` appears twice; feature names must be unique")]
    DuplicateFeature(String),
    /// There is nothing to train on.
    #[error("the feature table has no rows; churn training needs labelled customers")]
    NoRows,
    /// A label other than 0 or 1.
    #[error(
        "label of customer `{id}` (row {row}) is {value}; labels must be 0 (retained) or 1 (churned)"
    )]
    InvalidLabel { row: usize, id: String, value: f64 },
    /// An infinite feature value, usually a division by zero upstream.
    #[error("feature `{feature}` of customer `{id}` is {value}; use NaN for a missing value")]
    NonFiniteFeature {
        feature: String,
        id: String,
        value: f64,
    },
    /// A training option out of range.
    #[error("option `{option}` is {value}; it must be {expected}")]
    InvalidOption {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    /// The training split has only retained customers.
    #[error(
        "the training split has no churned customer (label 1) among its {rows} rows; a churn model needs both churned and retained customers"
    )]
    NoPositiveLabels { rows: usize },
    /// The training split has only churned customers.
    #[error(
        "the training split has no retained customer (label 0) among its {rows} rows; a churn model needs both churned and retained customers"
    )]
    NoNegativeLabels { rows: usize },
    /// Every feature is constant or missing in the training split.
    #[error(
        "every feature is constant or missing in the training split ({}); there is nothing to learn from",
        .0.join(", ")
    )]
    NoUsableFeatures(Vec<String>),
    /// The scoring data lacks a feature the model was trained on.
    #[error("the model needs feature `{feature}`, which the scoring data does not have; it has: {}", list(.available))]
    MissingFeature {
        feature: String,
        available: Vec<String>,
    },
    /// The stored model was written by a newer Tideway.
    #[error(
        "the stored model has format version {found}; this Tideway reads version {supported}: upgrade Tideway or retrain the model"
    )]
    UnsupportedModelVersion { found: u64, supported: u64 },
    /// The stored bytes are not a model this module wrote, or were damaged.
    #[error("the stored model cannot be read: {0}")]
    ModelFormat(String),
    /// The boosting library refused the data or the parameters.
    #[error("training failed in the boosting library: {0}")]
    Booster(String),
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "no columns".to_string()
    } else {
        names.join(", ")
    }
}

impl Faulty for PredictError {
    fn fault(&self) -> Fault {
        match self {
            PredictError::Shape(_)
            | PredictError::DuplicateFeature(_)
            | PredictError::NoRows
            | PredictError::InvalidLabel { .. }
            | PredictError::NonFiniteFeature { .. }
            | PredictError::InvalidOption { .. }
            | PredictError::NoPositiveLabels { .. }
            | PredictError::NoNegativeLabels { .. }
            | PredictError::NoUsableFeatures(_)
            | PredictError::MissingFeature { .. }
            | PredictError::UnsupportedModelVersion { .. } => Fault::User,
            // We wrote the model and we validated the data the library gets: either is a bug
            // (or a damaged table).
            PredictError::ModelFormat(_) | PredictError::Booster(_) => Fault::Internal,
        }
    }
}
