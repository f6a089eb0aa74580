//! A trained churn model: the trees, the names of the features they read, and the stored form.

use super::{PredictError, Result, check_unique};
use forust_ml::{GradientBooster, Matrix};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The `format` tag of a stored model.
const FORMAT: &str = "tideway-churn-model";
/// The stored-model version this code writes and reads.
const VERSION: u64 = 1;

/// A trained churn model. Scores are probabilities of churn.
pub struct Model {
    features: Vec<String>,
    booster: GradientBooster,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("features", &self.features)
            .field("trees", &self.trees())
            .finish()
    }
}

/// The stored form; see the module docs.
#[derive(Serialize)]
struct Stored<'a> {
    format: &'a str,
    version: u64,
    features: &'a [String],
    booster: &'a GradientBooster,
}

#[derive(Deserialize)]
struct Header {
    format: String,
    version: u64,
}

#[derive(Deserialize)]
struct Loaded {
    features: Vec<String>,
    booster: GradientBooster,
}

impl Model {
    pub(crate) fn new(features: Vec<String>, mut booster: GradientBooster) -> Model {
        // Early stopping keeps the trees grown after the best iteration; drop them so the
        // stored model, the importances and scoring all use the same trees.
        if let Some(n) = booster.prediction_iteration {
            booster.trees.truncate(n);
        }
        Model { features, booster }
    }

    /// The features the model reads, in the order it reads them.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// Number of trees used for scoring.
    pub fn trees(&self) -> usize {
        self.booster.trees.len()
    }

    /// Churn probabilities for rows given as named columns (`columns[j]` holds feature
    /// `names[j]` for every row; `NaN` is missing). Columns are matched by name, in any order;
    /// columns the model does not read are ignored.
    pub fn score<S: AsRef<str>, C: AsRef<[f64]>>(
        &self,
        names: &[S],
        columns: &[C],
    ) -> Result<Vec<f64>> {
        if names.len() != columns.len() {
            return Err(PredictError::Shape(format!(
                "{} feature names but {} columns",
                names.len(),
                columns.len()
            )));
        }
        check_unique(names)?;
        let rows = columns.first().map_or(0, |c| c.as_ref().len());
        let mut picked = Vec::with_capacity(self.features.len());
        for feature in &self.features {
            let Some(j) = names.iter().position(|n| n.as_ref() == feature) else {
                return Err(PredictError::MissingFeature {
                    feature: feature.clone(),
                    available: names.iter().map(|n| n.as_ref().to_string()).collect(),
                });
            };
            let column = columns[j].as_ref();
            if column.len() != rows {
                return Err(PredictError::Shape(format!(
                    "column `{feature}` has {} values but column `{}` has {rows}",
                    column.len(),
                    names[0].as_ref()
                )));
            }
            picked.push(column);
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        Ok(self.score_columns(&picked, rows))
    }

    /// Scores columns already in the model's feature order.
    pub(crate) fn score_columns(&self, columns: &[&[f64]], rows: usize) -> Vec<f64> {
        let mut buffer = Vec::with_capacity(rows * columns.len());
        for column in columns {
            buffer.extend_from_slice(column);
        }
        let matrix = Matrix::new(&buffer, rows, columns.len());
        self.booster
            .predict(&matrix, true)
            .into_iter()
            .map(sigmoid)
            .collect()
    }

    /// Raw importance (total split gain, normalized to sum 1) of each feature the trees use.
    pub(crate) fn importance(&self) -> Vec<(String, f64)> {
        let by_index = self.booster.calculate_feature_importance(
            forust_ml::gradientbooster::ImportanceMethod::TotalGain,
            true,
        );
        let mut out: Vec<(String, f64)> = self
            .features
            .iter()
            .enumerate()
            .map(|(j, name)| {
                (
                    name.clone(),
                    by_index.get(&j).map_or(0.0, |&v| f64::from(v)),
                )
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// The stored form: UTF-8 JSON, specified in the module docs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = Stored {
            format: FORMAT,
            version: VERSION,
            features: &self.features,
            booster: &self.booster,
        };
        serde_json::to_vec(&stored)
            .expect("a model serializes to JSON: it holds only numbers, strings, maps and vectors")
    }

    /// Reads what [`Model::to_bytes`] wrote, checking the format, the version and that the
    /// trees only point at features and nodes that exist.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        let header: Header = serde_json::from_slice(bytes)
            .map_err(|e| PredictError::ModelFormat(format!("not a Tideway churn model ({e})")))?;
        if header.format != FORMAT {
            return Err(PredictError::ModelFormat(format!(
                "format is `{}`, expected `{FORMAT}`",
                header.format
            )));
        }
        if header.version != VERSION {
            return Err(PredictError::UnsupportedModelVersion {
                found: header.version,
                supported: VERSION,
            });
        }
        let loaded: Loaded = serde_json::from_slice(bytes)
            .map_err(|e| PredictError::ModelFormat(format!("version {VERSION} body: {e}")))?;
        check_unique(&loaded.features)
            .map_err(|e| PredictError::ModelFormat(format!("its feature list: {e}")))?;
        check_trees(&loaded.booster, loaded.features.len())?;
        Ok(Model::new(loaded.features, loaded.booster))
    }
}

/// Every split reads an existing feature and every child exists and comes after its parent, so
/// scoring a damaged model cannot index out of bounds or loop.
fn check_trees(booster: &GradientBooster, features: usize) -> Result<()> {
    if let Some(n) = booster.prediction_iteration
        && n > booster.trees.len()
    {
        return Err(PredictError::ModelFormat(format!(
            "it predicts with {n} trees but holds {}",
            booster.trees.len()
        )));
    }
    for (t, tree) in booster.trees.iter().enumerate() {
        if tree.nodes.is_empty() {
            return Err(PredictError::ModelFormat(format!("tree {t} has no nodes")));
        }
        let nodes = tree.nodes.len();
        // Children come after their parent, which also rules out cycles.
        let child_ok = |i: usize, c: usize| c > i && c < nodes;
        for (i, node) in tree.nodes.iter().enumerate().filter(|(_, n)| !n.is_leaf) {
            if node.split_feature >= features
                || !child_ok(i, node.left_child)
                || !child_ok(i, node.right_child)
                || !child_ok(i, node.missing_node)
            {
                return Err(PredictError::ModelFormat(format!(
                    "node {i} of tree {t} points outside the model ({features} features, {nodes} nodes)"
                )));
            }
        }
    }
    Ok(())
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
