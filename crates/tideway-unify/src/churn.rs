//! Churn prediction over the lake (`tideway predict train|score`): features from a table or
//! model with one row per customer, a label from SQL, gradient-boosted trees ([`predict`]),
//! the model versioned in `_tideway.predict_models`, and scores written back as a Delta table
//! keyed by the customer's id and, through the identity map, as profile traits.
//!
//! ```toml
//! [predict.churn]
//! features = "marts.churn_features"   # one row per customer
//! id = "user_id"                      # its key
//! label = "churn_risk >= 20"          # SQL over the features: true = churned
//! exclude = ["churn_risk"]            # not features (the label is made from them)
//! output = "crm.realtime_churn_predictions"
//! id_type = "user_id"                 # also profiles.churn_scores, by profile
//! # time_column = "first_visit"       # test on the latest rows instead of a seeded split
//! # test_fraction = 0.2  seed = 42
//! ```
//!
//! Columns become features by type: numbers and booleans as they are, times as days since
//! the epoch, text that is numeric in nearly every row as numbers (`"231"` response times),
//! other text one-hot over its 20 most frequent values. The encoding is stored with the model
//! so scoring encodes the same way.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit};
use serde::{Deserialize, Serialize};
use tideway_core::config::{ConfigErrors, Diags, isolate, parse_collecting};
use tideway_lake::{Lake, SqlOutput, TableName};

use crate::error::{Result, UnifyError};
use crate::explain::literal;
use crate::predict::{self, Dataset, Model, Report, Split, TrainOptions};
use crate::run::{IDENTITY_MAP, table as unify_table};

/// How many values of a text column become one-hot features.
pub const MAX_CATEGORIES: usize = 20;
/// The table models are versioned in.
pub const MODELS: &str = "predict_models";
const LABEL: &str = "__tideway_label";

/// One `[predict.NAME]` block.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictConfig {
    /// The block's name (`churn`).
    pub name: String,
    /// The features table or model.
    pub features: String,
    /// Its key column.
    pub id: String,
    /// SQL boolean over the features table: true = positive (churned).
    pub label: String,
    /// Columns that are not features.
    pub exclude: Vec<String>,
    /// Where scores go, keyed by `id`.
    pub output: String,
    /// The identifier type of `id`, to write scores by profile too.
    pub id_type: Option<String>,
    /// Split by this time column instead of by a hash of the id.
    pub time_column: Option<String>,
    /// The share of rows tested.
    pub test_fraction: f64,
    /// The seed of the split and the trees.
    pub seed: u64,
}

#[derive(Deserialize, Default)]
struct Top {
    #[serde(default)]
    predict: BTreeMap<String, RawPredict>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPredict {
    features: String,
    id: String,
    label: String,
    #[serde(default)]
    exclude: Vec<String>,
    output: Option<String>,
    id_type: Option<String>,
    time_column: Option<String>,
    test_fraction: Option<f64>,
    seed: Option<u64>,
}

impl PredictConfig {
    /// Every `[predict.NAME]` block of `text` (the project file, named `file`).
    pub fn parse_all(
        text: &str,
        file: &str,
    ) -> std::result::Result<Vec<PredictConfig>, ConfigErrors> {
        let mut diags = Diags::new(text, file);
        let only = isolate(text, &["predict"]);
        let top = match parse_collecting::<Top>(&only) {
            Ok(t) => t,
            Err(errors) => {
                diags.extend(errors);
                return diags.finish(None);
            }
        };
        let mut out = Vec::new();
        for (name, raw) in top.predict {
            let test_fraction = raw.test_fraction.unwrap_or(0.2);
            if !(test_fraction > 0.0 && test_fraction < 1.0) {
                diags.at(
                    None,
                    format!(
                        "[predict.{name}] test_fraction {test_fraction} must be between 0 and 1"
                    ),
                );
            }
            for (key, table) in [
                ("features", Some(&raw.features)),
                ("output", raw.output.as_ref()),
            ] {
                if let Some(t) = table
                    && !t.contains('.')
                {
                    diags.at(
                        None,
                        format!("[predict.{name}] {key} `{t}` needs its schema: `schema.table`"),
                    );
                }
            }
            out.push(PredictConfig {
                output: raw
                    .output
                    .unwrap_or_else(|| format!("profiles.{name}_predictions")),
                name,
                features: raw.features,
                id: raw.id,
                label: raw.label,
                exclude: raw.exclude,
                id_type: raw.id_type,
                time_column: raw.time_column,
                test_fraction,
                seed: raw.seed.unwrap_or(42),
            });
        }
        diags.finish(Some(out))
    }
}

/// How one source column becomes features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Encoding {
    /// A number or boolean, as is.
    Number { column: String },
    /// A time, as days since the epoch.
    Time { column: String },
    /// Text holding numbers.
    NumericText { column: String },
    /// Text: one 0/1 feature per listed value.
    OneHot { column: String, values: Vec<String> },
}

impl Encoding {
    fn column(&self) -> &str {
        match self {
            Encoding::Number { column }
            | Encoding::Time { column }
            | Encoding::NumericText { column }
            | Encoding::OneHot { column, .. } => column,
        }
    }
}

/// Rows of the features table, read.
struct Table {
    batch: RecordBatch,
}

impl Table {
    async fn read(lake: &Lake, config: &PredictConfig, with_label: bool) -> Result<Table> {
        let label = if with_label {
            format!(", CAST(({}) AS BOOLEAN) AS {LABEL}", config.label)
        } else {
            String::new()
        };
        let sql = format!("SELECT *{label} FROM {}", config.features);
        let rows = match lake.sql(&sql).await {
            Ok(SqlOutput::Rows(r)) => r,
            Ok(_) => return Err(UnifyError::Internal("a SELECT gave no rows".into())),
            Err(e) => {
                return Err(UnifyError::User(format!(
                    "[predict.{}]: cannot read the features `{}` with label `{}`: {e}",
                    config.name, config.features, config.label
                )));
            }
        };
        let batch = deltalake::arrow::compute::concat_batches(&rows.schema, &rows.batches)?;
        if batch.schema().index_of(&config.id).is_err() {
            return Err(UnifyError::User(format!(
                "[predict.{}]: the features `{}` have no id column `{}`; they have: {}",
                config.name,
                config.features,
                config.id,
                names(&batch).join(", ")
            )));
        }
        Ok(Table { batch })
    }

    fn column(&self, name: &str) -> &ArrayRef {
        self.batch
            .column(self.batch.schema().index_of(name).expect("a known column"))
    }

    fn ids(&self, config: &PredictConfig) -> Result<Vec<String>> {
        let ids = cast(self.column(&config.id), &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        Ok((0..ids.len())
            .map(|i| {
                if ids.is_valid(i) {
                    ids.value(i).to_string()
                } else {
                    String::new()
                }
            })
            .collect())
    }
}

fn names(b: &RecordBatch) -> Vec<String> {
    b.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

fn floats(a: &ArrayRef) -> Result<Vec<f64>> {
    let a = cast(a, &DataType::Float64)?;
    let a = a.as_primitive::<Float64Type>();
    Ok((0..a.len())
        .map(|i| if a.is_valid(i) { a.value(i) } else { f64::NAN })
        .collect())
}

/// Chooses how each column is encoded, from the training rows.
fn choose(table: &Table, config: &PredictConfig) -> Vec<Encoding> {
    let skip: Vec<&str> = [config.id.as_str(), LABEL]
        .into_iter()
        .chain(config.exclude.iter().map(String::as_str))
        .chain(config.time_column.as_deref())
        .collect();
    let mut out = Vec::new();
    for f in table.batch.schema().fields() {
        let column = f.name().clone();
        if skip.contains(&column.as_str()) {
            continue;
        }
        let dt = f.data_type();
        if dt.is_numeric() || *dt == DataType::Boolean {
            out.push(Encoding::Number { column });
        } else if matches!(
            dt,
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
        ) {
            out.push(Encoding::Time { column });
        } else if matches!(
            dt,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            let Ok(text) = cast(table.column(&column), &DataType::Utf8) else {
                continue;
            };
            let text = text.as_string::<i32>();
            let mut counts: HashMap<&str, usize> = HashMap::new();
            let (mut present, mut numeric) = (0usize, 0usize);
            for i in 0..text.len() {
                if text.is_valid(i) {
                    let v = text.value(i);
                    present += 1;
                    if v.trim().parse::<f64>().is_ok() {
                        numeric += 1;
                    }
                    *counts.entry(v).or_default() += 1;
                }
            }
            if present > 0 && numeric * 100 >= present * 95 {
                out.push(Encoding::NumericText { column });
            } else if counts.len() > 1 {
                let mut values: Vec<(&str, usize)> = counts.into_iter().collect();
                values.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                values.truncate(MAX_CATEGORIES);
                out.push(Encoding::OneHot {
                    column,
                    values: values.into_iter().map(|(v, _)| v.to_string()).collect(),
                });
            }
        }
    }
    out
}

/// The feature columns of `table` under `encodings`.
fn encode(
    table: &Table,
    encodings: &[Encoding],
    config: &PredictConfig,
) -> Result<(Vec<String>, Vec<Vec<f64>>)> {
    let have = names(&table.batch);
    let (mut names_out, mut columns) = (Vec::new(), Vec::new());
    for e in encodings {
        if !have.iter().any(|h| h == e.column()) {
            return Err(UnifyError::User(format!(
                "[predict.{}]: the model was trained with column `{}`, which `{}` no longer has; retrain with `tideway predict train {}`",
                config.name,
                e.column(),
                config.features,
                config.name
            )));
        }
        let a = table.column(e.column());
        match e {
            Encoding::Number { column } => {
                let a = if *a.data_type() == DataType::Boolean {
                    cast(a, &DataType::Int8)?
                } else {
                    a.clone()
                };
                names_out.push(column.clone());
                columns.push(floats(&a)?);
            }
            Encoding::Time { column } => {
                let t = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
                let t = cast(&t, &DataType::Int64)?;
                let t = t.as_primitive::<Int64Type>();
                names_out.push(column.clone());
                columns.push(
                    (0..t.len())
                        .map(|i| {
                            if t.is_valid(i) {
                                t.value(i) as f64 / 86_400e6
                            } else {
                                f64::NAN
                            }
                        })
                        .collect(),
                );
            }
            Encoding::NumericText { column } => {
                let s = cast(a, &DataType::Utf8)?;
                let s = s.as_string::<i32>();
                names_out.push(column.clone());
                columns.push(
                    (0..s.len())
                        .map(|i| {
                            if s.is_valid(i) {
                                s.value(i).trim().parse().unwrap_or(f64::NAN)
                            } else {
                                f64::NAN
                            }
                        })
                        .collect(),
                );
            }
            Encoding::OneHot { column, values } => {
                let s = cast(a, &DataType::Utf8)?;
                let s = s.as_string::<i32>();
                for v in values {
                    names_out.push(format!("{column}={v}"));
                    columns.push(
                        (0..s.len())
                            .map(|i| f64::from(s.is_valid(i) && s.value(i) == v))
                            .collect(),
                    );
                }
            }
        }
    }
    Ok((names_out, columns))
}

fn options(config: &PredictConfig, table: &Table) -> Result<TrainOptions> {
    let split = match &config.time_column {
        None => Split::Seeded,
        Some(t) => {
            if table.batch.schema().index_of(t).is_err() {
                return Err(UnifyError::User(format!(
                    "[predict.{}]: time_column `{t}` is not a column of `{}`",
                    config.name, config.features
                )));
            }
            let ts = cast(
                table.column(t),
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?;
            let ts = cast(&ts, &DataType::Int64)?;
            let ts = ts.as_primitive::<Int64Type>();
            Split::ByTime(
                (0..ts.len())
                    .map(|i| {
                        if ts.is_valid(i) {
                            ts.value(i)
                        } else {
                            i64::MIN
                        }
                    })
                    .collect(),
            )
        }
    };
    Ok(TrainOptions {
        seed: config.seed,
        test_fraction: config.test_fraction,
        split,
        ..TrainOptions::default()
    })
}

/// A trained and stored model.
#[derive(Debug, Clone, Serialize)]
pub struct Trained {
    /// Its version in `_tideway.predict_models`.
    pub version: i64,
    /// Rows it was trained and tested on.
    pub rows: usize,
    /// How well it did on the test rows.
    pub report: Report,
    /// How columns became features.
    pub encodings: Vec<Encoding>,
}

/// The dataset of `config` as it would be trained: features encoded, labels, ids.
pub async fn dataset(
    lake: &Lake,
    config: &PredictConfig,
) -> Result<(Dataset, Vec<Encoding>, TrainOptions)> {
    let table = Table::read(lake, config, true).await?;
    let encodings = choose(&table, config);
    let (names, columns) = encode(&table, &encodings, config)?;
    let label = table.column(LABEL);
    let label = cast(label, &DataType::Boolean)?;
    let label = label.as_boolean();
    let labels = (0..label.len())
        .map(|i| f64::from(label.is_valid(i) && label.value(i)))
        .collect();
    let ids = table.ids(config)?;
    let options = options(config, &table)?;
    Ok((
        Dataset {
            names,
            columns,
            labels,
            ids,
        },
        encodings,
        options,
    ))
}

/// Trains the model of `config` and stores it as the next version.
pub async fn train(lake: &Lake, config: &PredictConfig) -> Result<Trained> {
    let (data, encodings, options) = dataset(lake, config).await?;
    let rows = data.rows();
    let trained = tokio::task::spawn_blocking(move || predict::train(&data, &options))
        .await
        .map_err(|e| UnifyError::Internal(format!("training panicked: {e}")))?
        .map_err(|e| UnifyError::User(format!("[predict.{}]: {e}", config.name)))?;
    let version = latest_version(lake, &config.name).await?.unwrap_or(0) + 1;
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("version", DataType::Int64, false),
        Field::new(
            "trained_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("features_table", DataType::Utf8, false),
        Field::new("encodings", DataType::Utf8, false),
        Field::new("report", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
    ]));
    let model = String::from_utf8(trained.model.to_bytes())
        .map_err(|e| UnifyError::Internal(format!("a model that is not UTF-8 JSON: {e}")))?;
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![config.name.as_str()])),
            Arc::new(Int64Array::from(vec![version])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![chrono::Utc::now().timestamp_micros()])
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec![config.features.as_str()])),
            Arc::new(StringArray::from(vec![
                serde_json::to_string(&encodings).expect("encodings serialize"),
            ])),
            Arc::new(StringArray::from(vec![
                serde_json::to_string(&trained.report).expect("reports serialize"),
            ])),
            Arc::new(StringArray::from(vec![model])),
        ],
    )?;
    lake.append(&models_table(), vec![batch])
        .with_txn(tideway_lake::Txn::new(
            format!("predict:{}", config.name),
            version,
        ))
        .await?;
    Ok(Trained {
        version,
        rows,
        report: trained.report,
        encodings,
    })
}

fn models_table() -> TableName {
    TableName::new(tideway_lake::SYSTEM_SCHEMA, MODELS).expect("a valid name")
}

async fn latest_version(lake: &Lake, name: &str) -> Result<Option<i64>> {
    if lake.load(&models_table()).await?.is_none() {
        return Ok(None);
    }
    let rows = crate::explain::text_rows(
        lake,
        &format!(
            "SELECT max(version) FROM {} WHERE name = {}",
            models_table(),
            literal(name)
        ),
    )
    .await?;
    Ok(rows
        .first()
        .and_then(|r| r[0].as_deref())
        .and_then(|v| v.parse().ok()))
}

/// What scoring wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    /// The model version used.
    pub version: i64,
    /// Rows scored and written to the output table.
    pub rows: usize,
    /// The output table.
    pub output: String,
    /// Profiles given a score in `profiles.<name>_scores`, if `id_type` is set.
    pub profiles: Option<usize>,
}

/// Scores every row of the features with the latest model and writes the scores.
pub async fn score(lake: &Lake, config: &PredictConfig) -> Result<Scored> {
    let Some(version) = latest_version(lake, &config.name).await? else {
        return Err(UnifyError::User(format!(
            "no trained `{}` model yet: run `tideway predict train {}` first",
            config.name, config.name
        )));
    };
    let rows = crate::explain::text_rows(
        lake,
        &format!(
            "SELECT encodings, model FROM {} WHERE name = {} AND version = {version}",
            models_table(),
            literal(&config.name)
        ),
    )
    .await?;
    let (encodings, model) = match rows.first() {
        Some(r) => (
            r[0].clone().unwrap_or_default(),
            r[1].clone().unwrap_or_default(),
        ),
        None => {
            return Err(UnifyError::Internal(format!(
                "model {} v{version} vanished",
                config.name
            )));
        }
    };
    let encodings: Vec<Encoding> = serde_json::from_str(&encodings).map_err(|e| {
        UnifyError::Internal(format!(
            "unreadable encodings of {} v{version}: {e}",
            config.name
        ))
    })?;
    let model = Model::from_bytes(model.as_bytes()).map_err(|e| {
        UnifyError::Internal(format!("unreadable model {} v{version}: {e}", config.name))
    })?;
    let table = Table::read(lake, config, false).await?;
    let (names, columns) = encode(&table, &encodings, config)?;
    let ids = table.ids(config)?;
    let probabilities = tokio::task::spawn_blocking(move || model.score(&names, &columns))
        .await
        .map_err(|e| UnifyError::Internal(format!("scoring panicked: {e}")))?
        .map_err(|e| UnifyError::User(format!("[predict.{}]: {e}", config.name)))?;
    let percentiles = predict::percentiles(&probabilities);
    let now = chrono::Utc::now().timestamp_micros();
    let n = ids.len();
    let schema = Arc::new(Schema::new(vec![
        Field::new(config.id.clone(), DataType::Utf8, false),
        Field::new(
            format!("{}_probability", config.name),
            DataType::Float64,
            false,
        ),
        Field::new(
            format!("{}_percentile", config.name),
            DataType::Float64,
            false,
        ),
        Field::new("model_version", DataType::Int64, false),
        Field::new(
            "scored_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(Float64Array::from(probabilities)),
            Arc::new(Float64Array::from(percentiles)),
            Arc::new(Int64Array::from(vec![version; n])),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        ],
    )?;
    let output: TableName = config.output.parse()?;
    lake.overwrite(&output, vec![batch]).await?;
    // By profile: the highest score among the profile's ids of `id_type`.
    let mut profiles = None;
    if let Some(kind) = &config.id_type
        && lake.load(&unify_table(IDENTITY_MAP)).await?.is_some()
    {
        let p = format!("{}_probability", config.name);
        let q = format!("{}_percentile", config.name);
        let sql = format!(
            "SELECT m.profile_id, max(s.\"{p}\") AS \"{p}\", max(s.\"{q}\") AS \"{q}\", \
             max(s.model_version) AS model_version, max(s.scored_at) AS scored_at \
             FROM {output} s JOIN {} m ON m.id_type = {} AND m.id_value = s.\"{}\" \
             GROUP BY m.profile_id",
            unify_table(IDENTITY_MAP),
            literal(kind),
            config.id
        );
        if let SqlOutput::Rows(rows) = lake.sql(&sql).await? {
            profiles = Some(rows.num_rows());
            let target = unify_table(&format!("{}_scores", config.name));
            lake.overwrite(&target, rows.batches).await?;
        }
    }
    Ok(Scored {
        version,
        rows: n,
        output: config.output.clone(),
        profiles,
    })
}

/// Writes the dataset of `config` as CSV (encoded features, `label`, `split`), for comparing
/// with another library on the same rows and split.
pub async fn export_csv(lake: &Lake, config: &PredictConfig, path: &std::path::Path) -> Result<()> {
    use std::io::Write as _;
    let (data, _, options) = dataset(lake, config).await?;
    let split = predict::split_rows(&data, &options.split, options.seed, options.test_fraction)
        .map_err(|e| UnifyError::User(e.to_string()))?;
    let mut side = vec!["train"; data.rows()];
    for &i in &split.test {
        side[i] = "test";
    }
    let file = std::fs::File::create(path)
        .map_err(|e| UnifyError::User(format!("cannot write `{}`: {e}", path.display())))?;
    let mut w = std::io::BufWriter::new(file);
    let io =
        |e: std::io::Error| UnifyError::User(format!("cannot write `{}`: {e}", path.display()));
    let header: Vec<String> = std::iter::once("id".to_string())
        .chain(
            data.names
                .iter()
                .map(|n| format!("\"{}\"", n.replace('"', "\"\""))),
        )
        .chain(["label".to_string(), "split".to_string()])
        .collect();
    writeln!(w, "{}", header.join(",")).map_err(io)?;
    for i in 0..data.rows() {
        let mut line = format!("\"{}\"", data.ids[i].replace('"', "\"\""));
        for c in &data.columns {
            if c[i].is_nan() {
                line.push(',');
            } else {
                line.push_str(&format!(",{}", c[i]));
            }
        }
        line.push_str(&format!(",{},{}", data.labels[i], side[i]));
        writeln!(w, "{line}").map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(())
}
