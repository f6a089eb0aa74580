//! Churn prediction: gradient-boosted trees over a customer feature table, with the metrics a
//! person needs to decide whether to trust the model.
//!
//! This module is pure Rust over plain vectors (no arrow, no DataFusion): the caller reads the
//! feature table from the lake, hands over the columns as [`Dataset`], and stores what comes
//! back. The trees come from [`forust_ml`] (histogram gradient boosting, log loss, learned
//! direction for missing values, early stopping on a held-out slice of the training rows).
//!
//! - [`train()`]: split the rows ([`Split`]), fit, score the test rows, return the [`Model`]
//!   and a [`Report`] (AUC, PR-AUC, log loss, Brier, calibration, feature importance).
//! - [`Model::score`]: probabilities for new rows, matching columns by name.
//! - [`metrics`]: the metrics on their own, computed as scikit-learn does (ties included).
//! - [`percentiles`]: rank percentiles (0–100) of scores, for "top 10% at risk" audiences.
//! - [`synthetic()`]: a deterministic synthetic churn table, for tests, the demo and the
//!   comparison with scikit-learn (`tests/compare_sklearn.py`).
//!
//! # The stored model
//!
//! [`Model::to_bytes`] gives UTF-8 JSON (so it fits a binary or a string column):
//!
//! ```json
//! {"format": "tideway-churn-model", "version": 1,
//!  "features": ["sessions_30d", "days_since_last_seen", ...],
//!  "booster": { ...forust-ml's own JSON for the trees... }}
//! ```
//!
//! `features` are the names, in order, of the columns the trees read. A reader refuses another
//! `format`, a `version` other than the ones it knows, and trees that point at a feature or a
//! node that does not exist. A new version is added only with a reader for the old ones.
//!
//! # Missing values
//!
//! `NaN` is missing, in training and in scoring; each split learns which side missing values
//! take. Infinite values are refused in training (they are almost always a division by zero
//! upstream) and follow the larger side when scoring.

mod error;
pub mod metrics;
mod model;
mod split;
pub mod synthetic;
mod train;

pub use error::PredictError;
pub use metrics::{Bin, auc, brier, calibration, log_loss, percentiles, pr_auc};
pub use model::Model;
pub use split::{Split, SplitRows, split_rows};
pub use synthetic::synthetic;
pub use train::{EARLY_STOPPING_MIN_ROWS, Report, TrainOptions, Trained, train};

/// Results of this module.
pub type Result<T, E = PredictError> = std::result::Result<T, E>;

/// A feature table: one row per customer, column-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    /// Feature names, one per column, unique.
    pub names: Vec<String>,
    /// Feature values, `columns[j][i]` is feature `j` of row `i`; `NaN` is missing.
    pub columns: Vec<Vec<f64>>,
    /// The label of each row: `1.0` churned, `0.0` retained. Empty when only scoring.
    pub labels: Vec<f64>,
    /// The customer id of each row, used by the seeded split and in error messages.
    pub ids: Vec<String>,
}

impl Dataset {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// The column named `name`, if any.
    pub fn column(&self, name: &str) -> Option<&[f64]> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|j| self.columns.get(j))
            .map(Vec::as_slice)
    }

    /// Checks that every column, the labels (unless empty) and the ids have the same length
    /// and that the names are unique.
    pub(crate) fn check_shape(&self, need_labels: bool) -> Result<()> {
        let rows = self.ids.len();
        if self.names.len() != self.columns.len() {
            return Err(PredictError::Shape(format!(
                "{} feature names but {} columns",
                self.names.len(),
                self.columns.len()
            )));
        }
        for (name, column) in self.names.iter().zip(&self.columns) {
            if column.len() != rows {
                return Err(PredictError::Shape(format!(
                    "column `{name}` has {} values but there are {rows} ids",
                    column.len()
                )));
            }
        }
        if (need_labels || !self.labels.is_empty()) && self.labels.len() != rows {
            return Err(PredictError::Shape(format!(
                "{} labels but {rows} ids",
                self.labels.len()
            )));
        }
        check_unique(&self.names)
    }
}

/// Refuses an empty or repeated feature name.
pub(crate) fn check_unique<S: AsRef<str>>(names: &[S]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        let name = name.as_ref();
        if name.is_empty() {
            return Err(PredictError::Shape("a feature has an empty name".into()));
        }
        if !seen.insert(name) {
            return Err(PredictError::DuplicateFeature(name.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
