//! Training: check the table, split it, fit the trees, measure them on the test rows.

use super::metrics::{self, Bin};
use super::split::{check_fraction, split_rows, unit_hash};
use super::{Dataset, Model, PredictError, Result, Split};
use forust_ml::gradientbooster::GrowPolicy;
use forust_ml::{GradientBooster, Matrix};
use serde::Serialize;
use std::fmt;
use std::time::Instant;

/// Early stopping holds out part of the training split only above this many training rows,
/// as scikit-learn's `early_stopping="auto"` does.
pub const EARLY_STOPPING_MIN_ROWS: usize = 10_000;

/// How to train. [`TrainOptions::default`] suits a churn table of a few thousand to a few
/// million customers; the defaults mirror scikit-learn's `HistGradientBoostingClassifier`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Seeds the split, the early-stopping hold-out and the library.
    pub seed: u64,
    /// Share of rows kept out of training to measure the model. Default 0.2.
    pub test_fraction: f64,
    /// How rows are assigned to test. Default [`Split::Seeded`].
    pub split: Split,
    /// Most trees to grow. Default 500 (early stopping usually ends sooner).
    pub iterations: usize,
    /// Shrinkage of each tree. Default 0.1.
    pub learning_rate: f64,
    /// Most leaves per tree (trees grow best-first). Default 31.
    pub max_leaves: usize,
    /// Stop when the log loss on the hold-out has not improved for this many trees.
    /// Default `Some(10)`; applies above [`EARLY_STOPPING_MIN_ROWS`] training rows.
    pub early_stopping_rounds: Option<usize>,
    /// Share of the training split held out for early stopping. Default 0.1.
    pub validation_fraction: f64,
    /// Threads to train with; `None` uses every core.
    pub threads: Option<usize>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            seed: 0,
            test_fraction: 0.2,
            split: Split::Seeded,
            iterations: 500,
            learning_rate: 0.1,
            max_leaves: 31,
            early_stopping_rounds: Some(10),
            validation_fraction: 0.1,
            threads: None,
        }
    }
}

impl TrainOptions {
    fn check(&self) -> Result<()> {
        check_fraction("test_fraction", self.test_fraction)?;
        check_fraction("validation_fraction", self.validation_fraction)?;
        let invalid = |option, value: String, expected| {
            Err(PredictError::InvalidOption {
                option,
                value,
                expected,
            })
        };
        if self.iterations == 0 {
            return invalid("iterations", "0".into(), "at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return invalid("learning_rate", self.learning_rate.to_string(), "in (0, 1]");
        }
        if self.max_leaves < 2 {
            return invalid("max_leaves", self.max_leaves.to_string(), "at least 2");
        }
        if self.early_stopping_rounds == Some(0) {
            return invalid("early_stopping_rounds", "0".into(), "at least 1, or none");
        }
        Ok(())
    }
}

/// A model and how well it did on the rows it did not see.
#[derive(Debug)]
pub struct Trained {
    pub model: Model,
    pub report: Report,
}

/// How a training went. Metrics are on the test rows; `None` where undefined (no test rows,
/// or a test split with a single class).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Rows in the training split, including those held out for early stopping.
    pub rows_train: usize,
    /// Rows of the training split held out for early stopping (0 when it was off).
    pub rows_validation: usize,
    pub rows_test: usize,
    pub positives_train: usize,
    pub positives_test: usize,
    /// Trees in the model.
    pub trees: usize,
    /// Area under the ROC curve.
    pub auc: Option<f64>,
    /// Average precision.
    pub pr_auc: Option<f64>,
    pub log_loss: Option<f64>,
    pub brier: Option<f64>,
    /// Predicted against observed churn in 10 equal-width bins (empty bins left out).
    pub calibration: Vec<Bin>,
    /// Every feature the model reads with its share of the total split gain, largest first.
    pub top_features: Vec<(String, f64)>,
    /// Problems with the data that did not stop training, one sentence each.
    pub warnings: Vec<String>,
    /// Wall time of the whole training, in seconds.
    pub seconds: f64,
}

/// Trains a churn model on `data` (labels 0/1, `NaN` for missing features) and measures it on
/// the test split.
pub fn train(data: &Dataset, options: &TrainOptions) -> Result<Trained> {
    let started = Instant::now();
    options.check()?;
    data.check_shape(true)?;
    let n = data.rows();
    if n == 0 {
        return Err(PredictError::NoRows);
    }
    check_values(data)?;

    let split = split_rows(data, &options.split, options.seed, options.test_fraction)?;
    let positives = |rows: &[usize]| rows.iter().filter(|&&i| data.labels[i] == 1.0).count();
    let positives_train = positives(&split.train);
    if positives_train == 0 {
        return Err(PredictError::NoPositiveLabels {
            rows: split.train.len(),
        });
    }
    if positives_train == split.train.len() {
        return Err(PredictError::NoNegativeLabels {
            rows: split.train.len(),
        });
    }

    // Features that cannot split the training rows are left out, with a warning.
    let mut warnings = Vec::new();
    let mut used = Vec::new();
    for (j, name) in data.names.iter().enumerate() {
        match variability(&data.columns[j], &split.train) {
            Variability::AllMissing => warnings.push(format!(
                "feature `{name}` is missing in every training row; it was left out of the model"
            )),
            Variability::Constant(v) => warnings.push(format!(
                "feature `{name}` is {v} in every training row; it was left out of the model"
            )),
            Variability::Varies => used.push(j),
        }
    }
    if used.is_empty() {
        return Err(PredictError::NoUsableFeatures(data.names.clone()));
    }

    // The early-stopping hold-out: part of the training split, by the same kind of hash.
    let (fit_rows, validation_rows) = match options.early_stopping_rounds {
        Some(_) if split.train.len() > EARLY_STOPPING_MIN_ROWS => {
            let (validation, fit): (Vec<usize>, Vec<usize>) = split.train.iter().partition(|&&i| {
                unit_hash(options.seed, b"validation", &data.ids[i]) < options.validation_fraction
            });
            let fit_positives = positives(&fit);
            if validation.is_empty() || fit_positives == 0 || fit_positives == fit.len() {
                (split.train.clone(), Vec::new())
            } else {
                (fit, validation)
            }
        }
        _ => (split.train.clone(), Vec::new()),
    };

    let gather = |rows: &[usize]| -> Vec<f64> {
        let mut buffer = Vec::with_capacity(rows.len() * used.len());
        for &j in &used {
            let column = &data.columns[j];
            buffer.extend(rows.iter().map(|&i| column[i]));
        }
        buffer
    };
    let labels_of = |rows: &[usize]| -> Vec<f64> { rows.iter().map(|&i| data.labels[i]).collect() };

    let fit_x = gather(&fit_rows);
    let fit_y = labels_of(&fit_rows);
    let fit_w = vec![1.0; fit_rows.len()];
    let validation_x = gather(&validation_rows);
    let validation_y = labels_of(&validation_rows);
    let validation_w = vec![1.0; validation_rows.len()];

    let mut booster = GradientBooster::default()
        .set_iterations(options.iterations)
        .set_learning_rate(options.learning_rate as f32)
        .set_max_leaves(options.max_leaves)
        .set_max_depth(usize::MAX)
        .set_min_leaf_weight(1.0)
        .set_nbins(256)
        .set_seed(options.seed)
        .set_num_threads(options.threads)
        .set_initialize_base_score(true)
        .set_tiled_histograms(true);
    // Best-first growth bounded by leaves, as scikit-learn and LightGBM grow trees.
    booster.grow_policy = GrowPolicy::LossGuide;
    let evaluation = if validation_rows.is_empty() {
        None
    } else {
        booster = booster.set_early_stopping_rounds(options.early_stopping_rounds);
        Some(vec![(
            Matrix::new(&validation_x, validation_rows.len(), used.len()),
            validation_y.as_slice(),
            validation_w.as_slice(),
        )])
    };
    let fit_matrix = Matrix::new(&fit_x, fit_rows.len(), used.len());
    booster
        .fit(&fit_matrix, &fit_y, &fit_w, evaluation)
        .map_err(|e| PredictError::Booster(e.to_string()))?;
    drop((fit_x, validation_x));

    let features: Vec<String> = used.iter().map(|&j| data.names[j].clone()).collect();
    let model = Model::new(features, booster);

    // Measure on the test rows.
    let test_columns: Vec<Vec<f64>> = used
        .iter()
        .map(|&j| split.test.iter().map(|&i| data.columns[j][i]).collect())
        .collect();
    let test_refs: Vec<&[f64]> = test_columns.iter().map(Vec::as_slice).collect();
    let test_y = labels_of(&split.test);
    let scores = if split.test.is_empty() {
        warnings.push("the test split is empty; there are no test metrics".into());
        Vec::new()
    } else {
        model.score_columns(&test_refs, split.test.len())
    };
    let positives_test = positives(&split.test);
    if !split.test.is_empty() && (positives_test == 0 || positives_test == split.test.len()) {
        warnings.push(format!(
            "the test split has only {} customers; AUC is undefined",
            if positives_test == 0 {
                "retained"
            } else {
                "churned"
            }
        ));
    }

    let report = Report {
        rows_train: split.train.len(),
        rows_validation: validation_rows.len(),
        rows_test: split.test.len(),
        positives_train,
        positives_test,
        trees: model.trees(),
        auc: metrics::auc(&test_y, &scores),
        pr_auc: metrics::pr_auc(&test_y, &scores),
        log_loss: metrics::log_loss(&test_y, &scores),
        brier: metrics::brier(&test_y, &scores),
        calibration: metrics::calibration(&test_y, &scores, 10),
        top_features: model.importance(),
        warnings,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(Trained { model, report })
}

/// Labels are 0 or 1 and features are finite or `NaN`, in every row.
fn check_values(data: &Dataset) -> Result<()> {
    if let Some(row) = data.labels.iter().position(|&y| y != 0.0 && y != 1.0) {
        return Err(PredictError::InvalidLabel {
            row,
            id: data.ids[row].clone(),
            value: data.labels[row],
        });
    }
    for (name, column) in data.names.iter().zip(&data.columns) {
        if let Some(row) = column.iter().position(|v| v.is_infinite()) {
            return Err(PredictError::NonFiniteFeature {
                feature: name.clone(),
                id: data.ids[row].clone(),
                value: column[row],
            });
        }
    }
    Ok(())
}

enum Variability {
    AllMissing,
    Constant(f64),
    Varies,
}

fn variability(column: &[f64], rows: &[usize]) -> Variability {
    let mut first = None;
    for &i in rows {
        let v = column[i];
        if v.is_nan() {
            continue;
        }
        match first {
            None => first = Some(v),
            Some(f) if f != v => return Variability::Varies,
            Some(_) => {}
        }
    }
    first.map_or(Variability::AllMissing, Variability::Constant)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let share = |p: usize, n: usize| {
            if n == 0 {
                0.0
            } else {
                100.0 * p as f64 / n as f64
            }
        };
        let metric = |m: Option<f64>| m.map_or("n/a".to_string(), |v| format!("{v:.4}"));
        writeln!(
            f,
            "churn model: {} trees, trained in {:.2} s",
            self.trees, self.seconds
        )?;
        writeln!(
            f,
            "  rows: {} train ({:.1}% churned, {} of them held out for early stopping), {} test ({:.1}% churned)",
            self.rows_train,
            share(self.positives_train, self.rows_train),
            self.rows_validation,
            self.rows_test,
            share(self.positives_test, self.rows_test)
        )?;
        writeln!(
            f,
            "  test: AUC {}  PR-AUC {}  log loss {}  Brier {}",
            metric(self.auc),
            metric(self.pr_auc),
            metric(self.log_loss),
            metric(self.brier)
        )?;
        if !self.calibration.is_empty() {
            writeln!(f, "  calibration (predicted -> observed churn, rows):")?;
            for b in &self.calibration {
                writeln!(
                    f,
                    "    ({:.1}, {:.1}]  {:.3} -> {:.3}  ({})",
                    b.lower, b.upper, b.mean_predicted, b.observed_rate, b.count
                )?;
            }
        }
        let top: Vec<String> = self
            .top_features
            .iter()
            .take(8)
            .map(|(name, share)| format!("{name} {:.1}%", 100.0 * share))
            .collect();
        writeln!(
            f,
            "  top features (share of split gain): {}",
            top.join(", ")
        )?;
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        Ok(())
    }
}
