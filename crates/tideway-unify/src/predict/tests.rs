//! Training, scoring and the stored model, end to end on synthetic data.

use super::*;
use tideway_core::{Fault, Faulty};

fn small() -> Dataset {
    synthetic(3_000, 11)
}

fn quick() -> TrainOptions {
    TrainOptions {
        iterations: 60,
        ..TrainOptions::default()
    }
}

#[test]
fn trains_a_useful_model_and_reports_it() {
    let data = small();
    let trained = train(&data, &quick()).unwrap();
    let r = &trained.report;
    assert_eq!(r.rows_train + r.rows_test, 3_000);
    // Below the early-stopping threshold, every tree is grown.
    assert_eq!((r.rows_validation, r.trees), (0, 60));
    let auc = r.auc.unwrap();
    assert!(auc > 0.75 && auc < 0.97, "AUC {auc}");
    assert!(r.pr_auc.unwrap() > 0.4);
    assert!(r.log_loss.unwrap() < 0.6);
    assert!(r.brier.unwrap() < 0.2);
    assert_eq!(
        r.calibration.iter().map(|b| b.count).sum::<usize>(),
        r.rows_test
    );
    assert_eq!(r.top_features.len(), synthetic::FEATURES.len());
    assert!(r.top_features.windows(2).all(|w| w[0].1 >= w[1].1));
    assert_eq!(r.top_features[0].0, "days_since_last_seen");
    assert!((r.top_features.iter().map(|f| f.1).sum::<f64>() - 1.0).abs() < 1e-3);
    let text = r.to_string();
    assert!(text.contains("test: AUC 0."), "{text}");
    assert!(
        text.contains("top features (share of split gain): days_since_last_seen"),
        "{text}"
    );
}

#[test]
fn training_is_deterministic() {
    let data = small();
    let a = train(&data, &quick()).unwrap();
    let b = train(&data, &quick()).unwrap();
    assert_eq!(a.model.to_bytes(), b.model.to_bytes());
    assert_eq!(a.report.auc, b.report.auc);
}

#[test]
fn early_stopping_holds_out_part_of_the_training_split() {
    let data = synthetic(15_000, 2);
    let trained = train(&data, &TrainOptions::default()).unwrap();
    let r = &trained.report;
    assert!(
        r.rows_validation > 1_000 && r.rows_validation < 1_400,
        "{r:?}"
    );
    assert!(
        r.trees < 500,
        "early stopping should end before 500 trees: {}",
        r.trees
    );
}

#[test]
fn stored_model_scores_identically() {
    let data = small();
    let trained = train(&data, &quick()).unwrap();
    let bytes = trained.model.to_bytes();
    let loaded = Model::from_bytes(&bytes).unwrap();
    assert_eq!(loaded.features(), trained.model.features());
    let before = trained.model.score(&data.names, &data.columns).unwrap();
    let after = loaded.score(&data.names, &data.columns).unwrap();
    assert_eq!(before, after);
    assert!(before.iter().all(|p| (0.0..=1.0).contains(p)));
    assert_eq!(loaded.to_bytes(), bytes);
}

#[test]
fn scoring_matches_columns_by_name_in_any_order() {
    let data = small();
    let trained = train(&data, &quick()).unwrap();
    let expected = trained.model.score(&data.names, &data.columns).unwrap();
    let mut names: Vec<&str> = data.names.iter().map(String::as_str).collect();
    let mut columns: Vec<&[f64]> = data.columns.iter().map(Vec::as_slice).collect();
    names.reverse();
    columns.reverse();
    names.push("an_extra_column");
    let extra = vec![0.0; data.rows()];
    columns.push(&extra);
    assert_eq!(trained.model.score(&names, &columns).unwrap(), expected);
}

#[test]
fn scoring_names_the_missing_feature() {
    let data = small();
    let trained = train(&data, &quick()).unwrap();
    let names = ["sessions_30d", "plan"];
    let columns = [vec![1.0], vec![0.0]];
    let err = trained.model.score(&names, &columns).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the model needs feature `days_since_last_seen`, which the scoring data does not have; it has: sessions_30d, plan"
    );
    assert_eq!(err.fault(), Fault::User);
}

#[test]
fn a_label_other_than_zero_or_one_names_the_customer() {
    let mut data = small();
    data.labels[17] = 2.0;
    let err = train(&data, &quick()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "label of customer `cust_0000017` (row 17) is 2; labels must be 0 (retained) or 1 (churned)"
    );
    data.labels[17] = f64::NAN;
    assert!(matches!(
        train(&data, &quick()),
        Err(PredictError::InvalidLabel { row: 17, .. })
    ));
}

#[test]
fn a_training_split_with_one_class_is_refused() {
    let mut data = small();
    data.labels.iter_mut().for_each(|y| *y = 0.0);
    let err = train(&data, &quick()).unwrap_err();
    assert!(
        matches!(err, PredictError::NoPositiveLabels { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("no churned customer (label 1)"),
        "{err}"
    );
    data.labels.iter_mut().for_each(|y| *y = 1.0);
    let err = train(&data, &quick()).unwrap_err();
    assert!(
        matches!(err, PredictError::NoNegativeLabels { .. }),
        "{err}"
    );
    assert_eq!(err.fault(), Fault::User);
    assert!(!err.retryable());
}

#[test]
fn constant_and_empty_features_warn_and_are_left_out() {
    let mut data = small();
    let rows = data.rows();
    data.names.push("country_count".into());
    data.columns.push(vec![1.0; rows]);
    data.names.push("never_filled".into());
    data.columns.push(vec![f64::NAN; rows]);
    let trained = train(&data, &quick()).unwrap();
    let w = &trained.report.warnings;
    assert!(
        w.iter()
            .any(|w| w.contains("`country_count` is 1 in every training row")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("`never_filled` is missing in every training row")),
        "{w:?}"
    );
    assert!(!trained.model.features().iter().any(|f| f == "never_filled"));
    // Scoring does not need the left-out features.
    let original = small();
    trained
        .model
        .score(&original.names, &original.columns)
        .unwrap();
}

#[test]
fn all_features_unusable_is_an_error() {
    let data = Dataset {
        names: vec!["a".into()],
        columns: vec![vec![5.0; 4]],
        labels: vec![0.0, 1.0, 0.0, 1.0],
        ids: (0..4).map(|i| i.to_string()).collect(),
    };
    let err = train(&data, &quick()).unwrap_err();
    assert!(matches!(err, PredictError::NoUsableFeatures(_)), "{err}");
}

#[test]
fn shape_and_value_errors_say_what_is_wrong() {
    let mut data = small();
    data.columns[2].pop();
    let err = train(&data, &quick()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the feature table is malformed: column `response_time_ms` has 2999 values but there are 3000 ids"
    );
    let mut data = small();
    data.names[1] = "sessions_30d".into();
    let err = train(&data, &quick()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "feature `sessions_30d` appears twice; feature names must be unique"
    );
    let mut data = small();
    data.columns[0][5] = f64::INFINITY;
    let err = train(&data, &quick()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "feature `sessions_30d` of customer `cust_0000005` is inf; use NaN for a missing value"
    );
    let err = train(&Dataset::default(), &quick()).unwrap_err();
    assert!(matches!(err, PredictError::NoRows));
    let options = TrainOptions {
        learning_rate: 0.0,
        ..quick()
    };
    let err = train(&small(), &options).unwrap_err();
    assert_eq!(
        err.to_string(),
        "option `learning_rate` is 0; it must be in (0, 1]"
    );
}

#[test]
fn time_split_tests_on_the_latest_rows() {
    let data = small();
    let times: Vec<i64> = (0..data.rows() as i64).collect();
    let options = TrainOptions {
        split: Split::ByTime(times),
        ..quick()
    };
    let trained = train(&data, &options).unwrap();
    assert_eq!(trained.report.rows_test, 600);
    let rows = split_rows(&data, &options.split, 0, 0.2).unwrap();
    assert_eq!(rows.test, (2_400..3_000).collect::<Vec<_>>());
}

#[test]
fn damaged_or_foreign_models_are_refused() {
    let err = Model::from_bytes(b"not json").unwrap_err();
    assert!(matches!(err, PredictError::ModelFormat(_)));
    assert_eq!(err.fault(), Fault::Internal);
    let err = Model::from_bytes(br#"{"format": "onnx", "version": 1}"#).unwrap_err();
    assert!(err.to_string().contains("format is `onnx`"), "{err}");
    let err = Model::from_bytes(br#"{"format": "tideway-churn-model", "version": 2}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the stored model has format version 2; this Tideway reads version 1: upgrade Tideway or retrain the model"
    );
    // A model whose trees read a feature it does not list.
    let trained = train(&small(), &quick()).unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&trained.model.to_bytes()).unwrap();
    json["features"] = serde_json::json!(["only_one"]);
    let err = Model::from_bytes(&serde_json::to_vec(&json).unwrap()).unwrap_err();
    assert!(
        err.to_string().contains("points outside the model"),
        "{err}"
    );
}

#[test]
fn percentiles_of_model_scores_span_zero_to_hundred() {
    let data = small();
    let trained = train(&data, &quick()).unwrap();
    let scores = trained.model.score(&data.names, &data.columns).unwrap();
    let pct = percentiles(&scores);
    let max = pct.iter().cloned().fold(f64::MIN, f64::max);
    let min = pct.iter().cloned().fold(f64::MAX, f64::min);
    assert_eq!((min, max), (0.0, 100.0));
}

/// Writes the synthetic table and its split to CSV and trains on it, for
/// `tests/compare_sklearn.py`. Run with
/// `PREDICT_CSV=/tmp/churn.csv PREDICT_ROWS=100000 cargo test --release -p tideway-unify -- --ignored export_for_sklearn --nocapture`.
#[test]
#[ignore = "writes a CSV for the scikit-learn comparison; run by tests/compare_sklearn.py"]
fn export_for_sklearn() {
    let path = std::env::var("PREDICT_CSV").unwrap_or_else(|_| "churn.csv".into());
    let rows: usize = std::env::var("PREDICT_ROWS")
        .map_or(100_000, |v| v.parse().expect("PREDICT_ROWS is a number"));
    let data = synthetic(rows, 42);
    let options = TrainOptions::default();
    let split = split_rows(&data, &options.split, options.seed, options.test_fraction).unwrap();
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    synthetic::write_csv(&data, &split.test, file).unwrap();
    let trained = train(&data, &options).unwrap();
    print!("{}", trained.report);
    println!("tideway_test_auc={:.6}", trained.report.auc.unwrap());
    println!("tideway_seconds={:.3}", trained.report.seconds);
}
