//! Impact analysis: what a change to the models does to the tables that are deployed.
//!
//! Every successful run records each model it built as *deployed* (`_tideway.deployed_models`:
//! its file's text, its output columns and its column lineage). `tideway plan` compiles the
//! project as it is now and compares:
//!
//! - models added, removed, modified (file text differs) and, downstream of those, to be
//!   recomputed (an edit to a filter, a join or the grain changes rows, not columns);
//! - per model, columns added, removed, renamed (a removed and an added column with the same
//!   type computed from the same inputs), retyped, narrowed (`BIGINT` to `INT`), widened, and
//!   made nullable;
//! - per removed, renamed, retyped or narrowed column, each downstream model that names it in
//!   its query, with the line. That change is **breaking** for that reader unless the reader
//!   changes in the same change-set too: then it was compiled against the new columns and
//!   passed (or its compile errors are reported). A column nobody names, or an added one, is
//!   not breaking; a column passed through `SELECT *` changes the reader's own output, which
//!   is checked against *its* readers in turn.
//!
//! A plan with breaking changes or compile errors is refused; `tideway run` refuses it too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tideway_lake::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use tideway_lake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tideway_lake::{Executed, Lake, LakeError, TableName};

use crate::compile::Compilation;
use crate::diagnostic::{Code, Diagnostic, Lines};
use crate::lineage::{ColumnRef, ModelLineage};

/// The table of deployed models: one row per model, the state its last successful run left.
pub const DEPLOYED_TABLE: &str = "_tideway.deployed_models";

/// A column as deployed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeployedColumn {
    pub name: String,
    /// Arrow's name of the type (`Int64`, `Utf8`, `Timestamp(µs, "UTC")`).
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

impl DeployedColumn {
    /// The columns of a schema, as they are recorded.
    pub fn of(schema: &tideway_lake::arrow::datatypes::SchemaRef) -> Vec<DeployedColumn> {
        schema
            .fields()
            .iter()
            .map(|f| DeployedColumn {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            })
            .collect()
    }
}

/// A model as its last successful run deployed it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployed {
    pub model: String,
    pub file: String,
    /// The model file's text.
    pub source: String,
    pub columns: Vec<DeployedColumn>,
    pub lineage: ModelLineage,
    pub deployed_at: DateTime<Utc>,
}

/// What happened to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    Added,
    Removed,
    /// Its file changed.
    Modified,
    /// Its file did not change, but an upstream did: its rows (and maybe columns) change.
    Recompute,
}

/// What happened to a column.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum ColumnChange {
    Added {
        column: String,
        r#type: String,
    },
    Removed {
        column: String,
        r#type: String,
    },
    Renamed {
        column: String,
        to: String,
    },
    /// A different kind of type.
    Retyped {
        column: String,
        from: String,
        to: String,
    },
    /// The same kind with a smaller range (`Int64` to `Int32`): values may not fit.
    Narrowed {
        column: String,
        from: String,
        to: String,
    },
    /// The same kind with a larger range: every old value fits.
    Widened {
        column: String,
        from: String,
        to: String,
    },
    /// NOT NULL before, nullable now.
    Nullable {
        column: String,
    },
}

impl ColumnChange {
    /// The (old) column the change is to.
    pub fn column(&self) -> &str {
        match self {
            ColumnChange::Added { column, .. }
            | ColumnChange::Removed { column, .. }
            | ColumnChange::Renamed { column, .. }
            | ColumnChange::Retyped { column, .. }
            | ColumnChange::Narrowed { column, .. }
            | ColumnChange::Widened { column, .. }
            | ColumnChange::Nullable { column } => column,
        }
    }

    /// Whether a query that names the column can break.
    pub fn breaks_readers(&self) -> bool {
        matches!(
            self,
            ColumnChange::Removed { .. }
                | ColumnChange::Renamed { .. }
                | ColumnChange::Retyped { .. }
                | ColumnChange::Narrowed { .. }
        )
    }

    /// `removed`, `renamed to x`, `retyped Int64 -> Utf8`, ...
    pub fn describe(&self) -> String {
        match self {
            ColumnChange::Added { r#type, .. } => format!("added ({type})"),
            ColumnChange::Removed { r#type, .. } => format!("removed (was {type})"),
            ColumnChange::Renamed { to, .. } => format!("renamed to `{to}`"),
            ColumnChange::Retyped { from, to, .. } => format!("retyped {from} -> {to}"),
            ColumnChange::Narrowed { from, to, .. } => format!("narrowed {from} -> {to}"),
            ColumnChange::Widened { from, to, .. } => format!("widened {from} -> {to}"),
            ColumnChange::Nullable { .. } => "now nullable".to_string(),
        }
    }
}

/// A model in the plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelPlan {
    pub model: String,
    pub file: String,
    pub status: ModelStatus,
    pub columns: Vec<ColumnChange>,
    /// For `recompute`: the changed upstream models it reads (directly or not).
    pub because: Vec<String>,
}

/// A change to a column that a downstream model names, and that model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Impact {
    /// `schema.table.column` that changed.
    pub column: ColumnRef,
    pub change: ColumnChange,
    pub reader: String,
    pub reader_file: String,
    /// Where the reader names it (first place).
    pub line: usize,
    pub position_column: usize,
    /// The reader changed in this change-set too (and compiled against the new columns).
    pub reader_changed: bool,
}

/// The whole plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// When the newest deployed model was deployed; `None` if nothing was ever deployed.
    pub deployed_at: Option<DateTime<Utc>>,
    /// Models that change, in DAG order (removed ones last).
    pub models: Vec<ModelPlan>,
    /// Every change to a column some downstream model names.
    pub impacts: Vec<Impact>,
    /// The impacts that refuse the plan, as compiler-style messages at the reader's line.
    #[serde(skip)]
    pub breaking: Vec<Diagnostic>,
}

impl Plan {
    /// No breaking change.
    pub fn is_safe(&self) -> bool {
        self.breaking.is_empty()
    }

    /// The plan's models that change in `status`.
    pub fn count(&self, status: ModelStatus) -> usize {
        self.models.iter().filter(|m| m.status == status).count()
    }
}

/// Reads the deployed models; none if nothing was ever deployed.
pub async fn read_deployed(lake: &Lake) -> Result<HashMap<String, Deployed>, LakeError> {
    let name: TableName = DEPLOYED_TABLE.parse()?;
    if lake.load(&name).await?.is_none() {
        return Ok(HashMap::new());
    }
    let sql =
        format!("SELECT model, file, source, columns, lineage, deployed_at FROM {DEPLOYED_TABLE}");
    let Executed::Query(df) = lake.execute(&sql).await? else {
        return Ok(HashMap::new());
    };
    let corrupt = |what: String| LakeError::Sql(format!("{DEPLOYED_TABLE} is damaged: {what}"));
    let mut out = HashMap::new();
    for batch in df.collect().await? {
        let texts: Option<Vec<StringArray>> = (0..5).map(|i| text_column(&batch, i)).collect();
        let texts = texts.ok_or_else(|| corrupt("a text column is not text".into()))?;
        let [model, file, source, columns, lineage] = &texts[..] else {
            return Err(corrupt("it has fewer columns than it should".into()));
        };
        let at = batch
            .column(5)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| corrupt("deployed_at is not a timestamp".into()))?;
        for row in 0..batch.num_rows() {
            let name = model.value(row).to_string();
            let columns: Vec<DeployedColumn> = serde_json::from_str(columns.value(row))
                .map_err(|e| corrupt(format!("the columns of {name}: {e}")))?;
            let lineage: ModelLineage = serde_json::from_str(lineage.value(row))
                .map_err(|e| corrupt(format!("the lineage of {name}: {e}")))?;
            let deployed_at =
                DateTime::from_timestamp_micros(at.value(row)).unwrap_or(DateTime::UNIX_EPOCH);
            out.insert(
                name.clone(),
                Deployed {
                    model: name,
                    file: file.value(row).to_string(),
                    source: source.value(row).to_string(),
                    columns,
                    lineage,
                    deployed_at,
                },
            );
        }
    }
    Ok(out)
}

/// Column `i` of `batch` as Utf8 (text comes back from a query as Utf8View).
fn text_column(batch: &RecordBatch, i: usize) -> Option<StringArray> {
    let utf8 = tideway_lake::arrow::compute::cast(batch.column(i), &DataType::Utf8).ok()?;
    utf8.as_any().downcast_ref::<StringArray>().cloned()
}

/// Records `built` (model indexes that ran successfully) as deployed, and, when `removed` is
/// given, forgets the deployed models that are no longer in the project.
pub async fn record_deployed(
    lake: &Lake,
    compilation: &Compilation,
    built: &[usize],
    removed: &[String],
    now: DateTime<Utc>,
) -> Result<(), LakeError> {
    /// One row of the deployed table: model, file, source, columns, lineage, removed.
    struct Row(String, String, String, String, String, bool);
    let mut rows: Vec<Row> = Vec::new();
    for &i in built {
        let (Some(c), m) = (&compilation.compiled[i], &compilation.models.models[i]) else {
            continue;
        };
        let columns = DeployedColumn::of(&c.schema);
        rows.push(Row(
            m.name.to_string(),
            m.file.display().to_string(),
            m.source.clone(),
            serde_json::to_string(&columns).expect("columns serialize"),
            serde_json::to_string(&*c.lineage).expect("lineage serializes"),
            false,
        ));
    }
    for name in removed {
        rows.push(Row(
            name.clone(),
            String::new(),
            String::new(),
            "[]".into(),
            "{}".into(),
            true,
        ));
    }
    if rows.is_empty() {
        return Ok(());
    }
    let utc = Some(Arc::<str>::from("UTC"));
    let schema = Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("file", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("columns", DataType::Utf8, false),
        Field::new("lineage", DataType::Utf8, false),
        Field::new(
            "deployed_at",
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
            false,
        ),
        Field::new("_removed", DataType::Boolean, false),
    ]));
    let text = |f: fn(&Row) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        text(|r| &r.0),
        text(|r| &r.1),
        text(|r| &r.2),
        text(|r| &r.3),
        text(|r| &r.4),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|_| now.timestamp_micros()),
            )
            .with_timezone_opt(utc),
        ),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.5)))),
    ];
    let batch = RecordBatch::try_new(schema, columns)
        .map_err(|e| LakeError::Sql(format!("building the deployed models: {e}")))?;
    let name: TableName = DEPLOYED_TABLE.parse()?;
    lake.merge(&name, vec![batch], &["model"])
        .with_delete_column("_removed")
        .await?;
    Ok(())
}

/// Compares the compiled project with what is deployed.
pub fn plan(compilation: &Compilation, deployed: &HashMap<String, Deployed>) -> Plan {
    let models = &compilation.models;
    let n = models.len();
    let names: Vec<String> = models.models.iter().map(|m| m.name.to_string()).collect();
    // Each model's status before recompute marks.
    let mut status: Vec<Option<ModelStatus>> = vec![None; n];
    let mut changes: Vec<Vec<ColumnChange>> = vec![Vec::new(); n];
    for (i, m) in models.models.iter().enumerate() {
        let Some(d) = deployed.get(&names[i]) else {
            status[i] = Some(ModelStatus::Added);
            continue;
        };
        if d.source != m.source {
            status[i] = Some(ModelStatus::Modified);
        }
        if let Some(c) = &compilation.compiled[i] {
            changes[i] = diff_columns(d, c);
        }
    }
    let changed: Vec<bool> = status.iter().map(|s| s.is_some()).collect();
    // Downstream of a change: recompute (through every model that reads a changed one).
    let mut because: Vec<BTreeSet<String>> = vec![BTreeSet::new(); n];
    for &i in &compilation.order {
        let Some(c) = &compilation.compiled[i] else {
            continue;
        };
        for &u in &c.upstream_models {
            if changed[u] || !because[u].is_empty() {
                let from = if changed[u] {
                    BTreeSet::from([names[u].clone()])
                } else {
                    because[u].clone()
                };
                because[i].extend(from);
            }
        }
        if status[i].is_none() && (!because[i].is_empty() || !changes[i].is_empty()) {
            status[i] = Some(ModelStatus::Recompute);
        }
    }
    // Deployed models whose file is gone, and the models that still read their tables.
    let mut removed: Vec<&Deployed> = deployed
        .values()
        .filter(|d| models.find(&d.model).is_none())
        .collect();
    removed.sort_by(|a, b| a.model.cmp(&b.model));

    let mut impacts = Vec::new();
    let mut breaking = Vec::new();
    for (u, column_changes) in changes.iter().enumerate() {
        for change in column_changes.iter().filter(|c| c.breaks_readers()) {
            let column = ColumnRef::new(names[u].clone(), change.column());
            for (r, reader) in models.models.iter().enumerate() {
                // What the reader names as deployed (for an unchanged file, the same lines),
                // and as compiled now (for a changed one, the lines to show).
                let before = deployed
                    .get(&names[r])
                    .and_then(|d| d.lineage.read(&column));
                let now = compilation.compiled[r]
                    .as_ref()
                    .and_then(|c| c.lineage.read(&column));
                let reader_changed =
                    matches!(status[r], Some(ModelStatus::Added | ModelStatus::Modified));
                let read = if reader_changed {
                    now.or(before)
                } else {
                    before.or(now)
                };
                let Some(read) = read else {
                    continue;
                };
                let at = read.at.first().copied().unwrap_or_default();
                let impact = Impact {
                    column: column.clone(),
                    change: change.clone(),
                    reader: names[r].clone(),
                    reader_file: reader.file.display().to_string(),
                    line: at.line,
                    position_column: at.column,
                    reader_changed,
                };
                if !reader_changed {
                    breaking.push(breaking_diagnostic(reader, &impact));
                }
                impacts.push(impact);
            }
        }
    }
    for d in &removed {
        for (r, reader) in models.models.iter().enumerate() {
            let reads = compilation.compiled[r]
                .as_ref()
                .is_some_and(|c| c.upstream_sources.iter().any(|s| s == &d.model));
            if reads && !matches!(status[r], Some(ModelStatus::Added | ModelStatus::Modified)) {
                let at = reader.source.find(d.model.as_str()).unwrap_or(0);
                let lines = Lines::new(&reader.source);
                breaking.push(
                    Diagnostic::at(
                        Code::Breaking,
                        &reader.file,
                        &reader.source,
                        lines.position(at),
                        d.model.chars().count(),
                        format!(
                            "`{}` reads `{}`, whose model ({}) is removed: the table would no longer be built",
                            names[r], d.model, d.file
                        ),
                    )
                    .with_help(format!(
                        "change `{}` in the same change-set, or keep the model that builds `{}`",
                        names[r], d.model
                    )),
                );
            }
        }
    }

    let mut planned: Vec<ModelPlan> = compilation
        .order
        .iter()
        .copied()
        .chain((0..n).filter(|i| !compilation.order.contains(i)))
        .filter_map(|i| {
            status[i].map(|s| ModelPlan {
                model: names[i].clone(),
                file: models.models[i].file.display().to_string(),
                status: s,
                columns: changes[i].clone(),
                because: because[i].iter().cloned().collect(),
            })
        })
        .collect();
    planned.extend(removed.iter().map(|d| ModelPlan {
        model: d.model.clone(),
        file: d.file.clone(),
        status: ModelStatus::Removed,
        columns: Vec::new(),
        because: Vec::new(),
    }));
    Plan {
        deployed_at: deployed.values().map(|d| d.deployed_at).max(),
        models: planned,
        impacts,
        breaking,
    }
}

fn breaking_diagnostic(reader: &crate::project::Model, impact: &Impact) -> Diagnostic {
    let name = impact.change.column();
    let position = crate::diagnostic::Position {
        line: impact.line.max(1),
        column: impact.position_column.max(1),
    };
    let message = format!(
        "`{}` is {}, and `{}` reads it",
        impact.column,
        impact.change.describe(),
        impact.reader
    );
    let help = match &impact.change {
        ColumnChange::Renamed { to, .. } => format!(
            "change `{}` in the same change-set to read `{to}`, or keep the name `{name}`",
            impact.reader
        ),
        ColumnChange::Removed { .. } => format!(
            "change `{}` in the same change-set so it no longer reads `{name}`, or keep the column",
            impact.reader
        ),
        _ => format!(
            "change `{}` in the same change-set (cast `{name}` where it is read), or keep the type",
            impact.reader
        ),
    };
    Diagnostic::at(
        Code::Breaking,
        &reader.file,
        &reader.source,
        position,
        name.chars().count(),
        message,
    )
    .with_help(help)
}

/// The column changes of a model from its deployed columns to its compiled ones.
fn diff_columns(deployed: &Deployed, compiled: &crate::CompiledModel) -> Vec<ColumnChange> {
    let now = DeployedColumn::of(&compiled.schema);
    let old: BTreeMap<&str, &DeployedColumn> = deployed
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let new: BTreeMap<&str, &DeployedColumn> = now.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut out = Vec::new();
    let mut removed: Vec<&DeployedColumn> = Vec::new();
    for c in &deployed.columns {
        match new.get(c.name.as_str()) {
            None => removed.push(c),
            Some(n) => {
                if n.data_type != c.data_type {
                    out.push(type_change(&c.name, &c.data_type, &n.data_type));
                } else if n.nullable && !c.nullable {
                    out.push(ColumnChange::Nullable {
                        column: c.name.clone(),
                    });
                }
            }
        }
    }
    let mut added: Vec<&DeployedColumn> = now
        .iter()
        .filter(|c| !old.contains_key(c.name.as_str()))
        .collect();
    // A removed and an added column of the same type, computed from the same inputs: a rename
    // (for columns computed from no input, like `count(*)`, only when it is the one candidate).
    for r in removed {
        let from_old = deployed.lineage.column(&r.name).map(|l| &l.from);
        let candidates: Vec<usize> = added
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                a.data_type == r.data_type
                    && from_old.is_some_and(|f| {
                        compiled.lineage.column(&a.name).map(|l| &l.from) == Some(f)
                    })
            })
            .map(|(k, _)| k)
            .collect();
        let renamed = match (
            from_old.is_some_and(|f| f.is_empty()),
            candidates.as_slice(),
        ) {
            (false, [k, ..]) | (true, [k]) => Some(*k),
            _ => None,
        };
        match renamed {
            Some(k) => {
                let a = added.remove(k);
                out.push(ColumnChange::Renamed {
                    column: r.name.clone(),
                    to: a.name.clone(),
                });
            }
            None => out.push(ColumnChange::Removed {
                column: r.name.clone(),
                r#type: r.data_type.clone(),
            }),
        }
    }
    out.extend(added.into_iter().map(|a| ColumnChange::Added {
        column: a.name.clone(),
        r#type: a.data_type.clone(),
    }));
    out
}

/// Retyped, narrowed or widened, by the kind and width of the two types.
fn type_change(column: &str, from: &str, to: &str) -> ColumnChange {
    let (column, from_s, to_s) = (column.to_string(), from.to_string(), to.to_string());
    match (width(from), width(to)) {
        (Some((kf, wf)), Some((kt, wt))) if kf == kt && wt < wf => ColumnChange::Narrowed {
            column,
            from: from_s,
            to: to_s,
        },
        (Some((kf, wf)), Some((kt, wt))) if kf == kt && wt >= wf => ColumnChange::Widened {
            column,
            from: from_s,
            to: to_s,
        },
        // A signed integer wide enough for every unsigned value, or a float for any int.
        (Some(("uint", wf)), Some(("int", wt))) if wt > wf => ColumnChange::Widened {
            column,
            from: from_s,
            to: to_s,
        },
        _ => ColumnChange::Retyped {
            column,
            from: from_s,
            to: to_s,
        },
    }
}

/// A type's kind and how much it holds, for the types where "narrower" means something.
fn width(data_type: &str) -> Option<(&'static str, u32)> {
    let int = |s: &str, prefix: &str| s.strip_prefix(prefix).and_then(|b| b.parse::<u32>().ok());
    if let Some(bits) = int(data_type, "Int") {
        return Some(("int", bits));
    }
    if let Some(bits) = int(data_type, "UInt") {
        return Some(("uint", bits));
    }
    if let Some(bits) = int(data_type, "Float") {
        return Some(("float", bits));
    }
    if let Some(args) = data_type
        .strip_prefix("Decimal128(")
        .or_else(|| data_type.strip_prefix("Decimal256("))
        .and_then(|a| a.strip_suffix(')'))
    {
        // Digits before the point: a decimal holds another when it has as many and as many
        // after; ordering by (integer digits, scale) keeps the common cases right.
        let mut parts = args.split(',').map(|p| p.trim().parse::<i64>().ok());
        let (precision, scale) = (parts.next()??, parts.next()??);
        return Some((
            "decimal",
            ((precision - scale).max(0) * 100 + scale.max(0)) as u32,
        ));
    }
    match data_type {
        "Utf8" | "Utf8View" => Some(("text", 32)),
        "LargeUtf8" => Some(("text", 64)),
        "Date32" => Some(("date", 32)),
        "Date64" => Some(("date", 64)),
        _ => None,
    }
}
