//! Writes: append, overwrite and merge, each one atomic Delta commit, with schema evolution,
//! exactly-once transaction identifiers and retries against concurrent writers.
//!
//! ```no_run
//! # async fn demo(lake: tideway_lake::Lake, batches: Vec<deltalake::arrow::array::RecordBatch>)
//! # -> Result<(), tideway_lake::LakeError> {
//! use tideway_lake::Txn;
//! let table = "events.tracks".parse()?;
//! // Retrying this exact call after a crash is a no-op once it has committed.
//! let commit = lake.append(&table, batches).with_txn(Txn::new("collect:web", 42)).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deltalake::DeltaTableError;
use deltalake::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use deltalake::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::operations::write::SchemaMode;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::SaveMode;
use tracing::{debug, info};

use crate::error::{LakeError, Result};
use crate::evolve::Evolution;
use crate::lake::Lake;
use crate::name::TableName;

/// Rows handed to the Parquet encoder at a time. delta-rs defaults to 1024, which costs a
/// third of the append throughput in per-call overhead on wide tables (BENCHMARKS.md); a data
/// file overshoots its target size by at most one such slice.
const WRITE_BATCH_ROWS: usize = 65_536;

/// Rows per Parquet row group in the files the lake writes. A row group is the unit a scan
/// splits among cores: with the Parquet default (1,048,576 rows) a table of a million rows is
/// one row group and every query of it decodes on one core. 131,072 rows (DuckDB writes
/// 122,880) keeps a group's columns large enough to compress well.
pub const ROW_GROUP_ROWS: usize = 131_072;

/// The Parquet settings of the lake's data files unless a write asks for others: Snappy, and
/// row groups of [`ROW_GROUP_ROWS`].
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_created_by(format!("tideway {}", env!("CARGO_PKG_VERSION")))
        .set_compression(deltalake::parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

/// How many times a write is attempted when it conflicts with concurrent writers.
const MAX_ATTEMPTS: usize = 30;

/// A transaction identifier: an application id and a version that only grows.
///
/// A commit that carries a `Txn` records it in the table (Delta's `txn` action). A later write
/// whose `Txn` has the same application id and a version at or below the recorded one is
/// skipped: a loader that crashed after committing and retries the same batch writes it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// Who is writing, e.g. `collect:web` or `extract:kustomer:customers`.
    pub app_id: String,
    /// The position of this write in that application's sequence (an offset, a batch number).
    pub version: i64,
}

impl Txn {
    /// A transaction identifier.
    pub fn new(app_id: impl Into<String>, version: i64) -> Self {
        Txn {
            app_id: app_id.into(),
            version,
        }
    }
}

/// What a write does with the table's existing rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Add the rows.
    Append,
    /// Replace every row, and the schema, with the new ones.
    Overwrite,
    /// Upsert by key: rows whose key exists replace the old row, others are inserted. With a
    /// delete column, a row whose delete column is true deletes the row with its key instead.
    Merge {
        /// The key columns.
        keys: Vec<String>,
        /// A boolean column that marks deletions; it is not stored.
        delete_column: Option<String>,
        /// Columns whose null means "unchanged": a matched row keeps its value there.
        kept_when_null: Vec<String>,
    },
    /// Replace groups of rows: every existing row whose `group` column holds one of `groups`
    /// and whose key is not in the input is deleted, and the input rows are upserted by
    /// `keys`. Reloading records replaces their child rows this way (group = the root id), so
    /// a list that shrank loses its old elements. Repeating the write changes nothing.
    Replace {
        /// The key columns of a row.
        keys: Vec<String>,
        /// The column that says which group a row belongs to.
        group: String,
        /// The groups being replaced (a group may have no rows in the input).
        groups: Vec<String>,
    },
    /// Replace the rows that match `predicate` (SQL over the table's columns) with the input
    /// rows, which must all match it too, in one commit. An incremental model rewrites one
    /// time window this way, so running a window twice leaves one copy of its rows.
    ReplaceWhere {
        /// A SQL predicate, e.g. `ts >= TIMESTAMP '2025-06-01' AND ts < TIMESTAMP '2025-06-02'`.
        predicate: String,
    },
}

/// What a committed (or skipped) write did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Commit {
    /// `schema.table`.
    pub table: String,
    /// The Delta version of the commit; `None` if the write was skipped.
    pub version: Option<u64>,
    /// True if the transaction identifier had already committed, so nothing was written.
    pub skipped: bool,
    /// Rows in the input.
    pub rows: u64,
    /// Merge only: rows inserted, updated and deleted.
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Columns the write added to the table.
    pub added_columns: Vec<String>,
    /// Columns the write widened.
    pub widened_columns: Vec<String>,
    /// Columns whose conflicting values went to variant columns: (column, variant).
    pub variant_columns: Vec<(String, String)>,
    /// How many times the commit was attempted (more than one under contention).
    pub attempts: usize,
}

/// A pending write; `.await` it to commit.
#[derive(Debug)]
#[must_use = "a write does nothing until it is awaited"]
pub struct Write {
    lake: Lake,
    table: TableName,
    batches: Vec<RecordBatch>,
    mode: WriteMode,
    txn: Option<Txn>,
    metadata: HashMap<String, serde_json::Value>,
    writer_properties: Option<WriterProperties>,
}

impl Lake {
    /// Appends `batches` to `table`, creating it if needed.
    pub fn append(&self, table: &TableName, batches: Vec<RecordBatch>) -> Write {
        self.write(table, batches, WriteMode::Append)
    }

    /// Replaces the rows and schema of `table` with `batches`, creating it if needed.
    pub fn overwrite(&self, table: &TableName, batches: Vec<RecordBatch>) -> Write {
        self.write(table, batches, WriteMode::Overwrite)
    }

    /// Upserts `batches` into `table` by the `keys` columns, creating it if needed. Within the
    /// input, the last row of each key wins.
    pub fn merge(&self, table: &TableName, batches: Vec<RecordBatch>, keys: &[&str]) -> Write {
        let keys = keys.iter().map(|k| k.to_string()).collect();
        self.write(
            table,
            batches,
            WriteMode::Merge {
                keys,
                delete_column: None,
                kept_when_null: Vec::new(),
            },
        )
    }

    /// Replaces the rows of `groups` (by the `group` column) with `batches`, upserting by
    /// `keys`; see [`WriteMode::Replace`].
    pub fn replace_groups(
        &self,
        table: &TableName,
        batches: Vec<RecordBatch>,
        keys: &[&str],
        group: &str,
        groups: Vec<String>,
    ) -> Write {
        let keys = keys.iter().map(|k| k.to_string()).collect();
        let group = group.to_string();
        self.write(
            table,
            batches,
            WriteMode::Replace {
                keys,
                group,
                groups,
            },
        )
    }

    /// Replaces the rows of `table` matching `predicate` with `batches` (see
    /// [`WriteMode::ReplaceWhere`]), creating the table if needed.
    pub fn replace_where(
        &self,
        table: &TableName,
        batches: Vec<RecordBatch>,
        predicate: impl Into<String>,
    ) -> Write {
        let predicate = predicate.into();
        self.write(table, batches, WriteMode::ReplaceWhere { predicate })
    }

    /// A write in any [`WriteMode`].
    pub fn write(&self, table: &TableName, batches: Vec<RecordBatch>, mode: WriteMode) -> Write {
        Write {
            lake: self.clone(),
            table: table.clone(),
            batches,
            mode,
            txn: None,
            metadata: HashMap::new(),
            writer_properties: Some(writer_properties()),
        }
    }
}

impl Write {
    /// Makes the write exactly-once under `txn` (see [`Txn`]).
    pub fn with_txn(mut self, txn: Txn) -> Self {
        self.txn = Some(txn);
        self
    }

    /// For a merge: rows whose `column` is true delete the row with their key.
    pub fn with_delete_column(mut self, column: impl Into<String>) -> Self {
        if let WriteMode::Merge { delete_column, .. } = &mut self.mode {
            *delete_column = Some(column.into());
        }
        self
    }

    /// For a merge: a null in `column` leaves a matched row's value as it is (a writer that
    /// does not know the current value need not read it to keep it).
    pub fn with_kept_when_null(mut self, column: impl Into<String>) -> Self {
        if let WriteMode::Merge { kept_when_null, .. } = &mut self.mode {
            kept_when_null.push(column.into());
        }
        self
    }

    /// Parquet writer settings (compression, row group size) for the data files.
    pub fn with_writer_properties(mut self, properties: WriterProperties) -> Self {
        self.writer_properties = Some(properties);
        self
    }

    /// Adds a key to the commit's `commitInfo` (who wrote, which run).
    pub fn with_metadata(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    async fn execute(self) -> Result<Commit> {
        let rows: u64 = self.batches.iter().map(|b| b.num_rows() as u64).sum();
        let mut last_conflict = String::new();
        // Schema changes made in commits of their own before the write (see `attempt`).
        let (mut added, mut widened) = (Vec::new(), Vec::new());
        for attempt in 1..=MAX_ATTEMPTS {
            match self.attempt().await {
                Ok(mut commit) => {
                    commit.rows = rows;
                    commit.attempts = attempt;
                    added.append(&mut commit.added_columns);
                    widened.append(&mut commit.widened_columns);
                    commit.added_columns = added;
                    commit.widened_columns = widened;
                    self.lake.inner.catalog.add_table(&self.table);
                    info!(table = %self.table, version = ?commit.version, rows, skipped = commit.skipped, attempt, "committed");
                    return Ok(commit);
                }
                Err(Attempt::Conflict(e)) => {
                    debug!(table = %self.table, attempt, error = %e, "commit conflicted with another writer; retrying");
                    last_conflict = e;
                    let jitter = rand_jitter(attempt);
                    tokio::time::sleep(jitter).await;
                }
                Err(Attempt::Evolved {
                    added: a,
                    widened: w,
                }) => {
                    added.extend(a);
                    widened.extend(w);
                }
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        Err(LakeError::Contention {
            table: self.table.to_string(),
            attempts: MAX_ATTEMPTS,
            last: last_conflict,
        })
    }

    /// The first write of a merge or replace: the table does not exist, so it is an append.
    async fn create(
        &self,
        table: deltalake::DeltaTable,
        source: RecordBatch,
        session: Arc<deltalake::datafusion::execution::context::SessionState>,
        props: CommitProperties,
    ) -> std::result::Result<Option<u64>, DeltaTableError> {
        let mut write = table
            .write(vec![source])
            .with_save_mode(SaveMode::Append)
            .with_table_name(self.table.table())
            .with_session_state(session)
            .with_write_batch_size(WRITE_BATCH_ROWS)
            .with_commit_properties(props);
        if let Some(properties) = &self.writer_properties {
            write = write.with_writer_properties(properties.clone());
        }
        write.await.map(|t| t.version())
    }

    async fn attempt(&self) -> std::result::Result<Commit, Attempt> {
        let name = &self.table;
        let table = self.lake.load_or_new(name).await?;
        let exists = table.version().is_some();
        let mut commit = Commit {
            table: name.to_string(),
            ..Commit::default()
        };

        if let (Some(txn), true) = (&self.txn, exists) {
            let state = table.snapshot().map_err(|e| LakeError::delta(name, e))?;
            let done = state
                .transaction_version(table.log_store().as_ref(), &txn.app_id)
                .await
                .map_err(|e| LakeError::delta(name, e))?;
            if done.is_some_and(|v| v >= txn.version) {
                commit.skipped = true;
                return Ok(commit);
            }
        }

        let table_schema: Option<SchemaRef> = match (&self.mode, exists) {
            (WriteMode::Overwrite, _) | (_, false) => None,
            _ => Some(Lake::schema_of(name, &table)?),
        };
        let delete_column = match &self.mode {
            WriteMode::Merge { delete_column, .. } => delete_column.as_deref(),
            _ => None,
        };
        let (input, deletes) = split_column(&self.batches, delete_column)?;
        let (evolution, batches) = evolve_all(table_schema.as_deref(), &input)?;
        commit.added_columns = evolution.added.clone();
        commit.widened_columns = evolution.widened.iter().map(|(c, ..)| c.clone()).collect();
        commit.variant_columns = evolution.variants.clone();

        let is_merge = matches!(
            self.mode,
            WriteMode::Merge { .. } | WriteMode::Replace { .. } | WriteMode::ReplaceWhere { .. }
        );
        if exists && !evolution.widened.is_empty() && self.mode != WriteMode::Overwrite {
            // Widen first, in its own commit, then write against the widened table.
            crate::maintenance::rewrite_with_schema(
                &self.lake,
                name,
                table,
                evolution.target.clone(),
            )
            .await
            .map_err(classify)?;
            return Err(Attempt::Evolved {
                added: Vec::new(),
                widened: commit.widened_columns,
            });
        }
        if exists && is_merge && !evolution.added.is_empty() {
            // A merge (or a predicate overwrite) reads and writes the table's own schema: add the
            // new columns first.
            crate::maintenance::add_columns(name, table, &evolution.target, &evolution.added)
                .await
                .map_err(classify)?;
            return Err(Attempt::Evolved {
                added: commit.added_columns,
                widened: Vec::new(),
            });
        }

        let batches = if batches.is_empty() {
            vec![RecordBatch::new_empty(evolution.target.clone())]
        } else {
            batches
        };
        if evolution.target.fields().is_empty() {
            return Err(Attempt::Failed(LakeError::Sql(format!(
                "nothing to write to `{name}`: the input has no columns with values"
            ))));
        }

        let mut props = CommitProperties::default().with_max_retries(10);
        if let Some(txn) = &self.txn {
            props = props.with_application_transaction(Transaction::new(&txn.app_id, txn.version));
        }
        if !self.metadata.is_empty() {
            props = props.with_metadata(self.metadata.clone());
        }
        let session = Arc::new(self.lake.session().state());

        let result = match &self.mode {
            WriteMode::Append | WriteMode::Overwrite => {
                let (save, schema) = if self.mode == WriteMode::Append {
                    (SaveMode::Append, SchemaMode::Merge)
                } else {
                    (SaveMode::Overwrite, SchemaMode::Overwrite)
                };
                let mut write = table
                    .write(batches)
                    .with_save_mode(save)
                    .with_schema_mode(schema)
                    .with_session_state(session)
                    .with_write_batch_size(WRITE_BATCH_ROWS)
                    .with_commit_properties(props);
                if !exists {
                    write = write.with_table_name(name.table());
                }
                if let Some(properties) = &self.writer_properties {
                    write = write.with_writer_properties(properties.clone());
                }
                write.await.map(|t| t.version())
            }
            WriteMode::ReplaceWhere { predicate } => {
                let mut write = table
                    .write(batches)
                    .with_session_state(session)
                    .with_write_batch_size(WRITE_BATCH_ROWS)
                    .with_commit_properties(props);
                write = if exists {
                    write
                        .with_save_mode(SaveMode::Overwrite)
                        .with_replace_where(predicate.clone())
                } else {
                    write
                        .with_save_mode(SaveMode::Append)
                        .with_table_name(name.table())
                };
                if let Some(properties) = &self.writer_properties {
                    write = write.with_writer_properties(properties.clone());
                }
                write.await.map(|t| t.version())
            }
            WriteMode::Replace { groups, .. } if exists && groups.is_empty() => Ok(table.version()),
            WriteMode::Replace {
                keys,
                group,
                groups,
            } => {
                let source = dedupe_by_key(name, &batches, keys)?;
                commit.inserted = source.num_rows() as u64;
                if !exists {
                    self.create(table, source, session, props).await
                } else {
                    crate::merge::replace_groups(
                        &self.lake,
                        table,
                        source,
                        keys,
                        group,
                        groups,
                        props,
                        self.writer_properties.clone(),
                    )
                    .await
                    .map(|(version, m)| {
                        commit.inserted = m.num_target_rows_inserted as u64;
                        commit.updated = m.num_target_rows_updated as u64;
                        commit.deleted = m.num_target_rows_deleted as u64;
                        version
                    })
                }
            }
            WriteMode::Merge {
                keys,
                delete_column,
                kept_when_null,
            } => {
                let batches = attach_column(batches, delete_column.as_deref(), deletes)?;
                let source = dedupe_by_key(name, &batches, keys)?;
                if !exists {
                    let source = drop_deleted(source, delete_column.as_deref())?;
                    commit.inserted = source.num_rows() as u64;
                    self.create(table, source, session, props).await
                } else {
                    let n = source.num_rows() as u64;
                    let merged = crate::merge::upsert(
                        &self.lake,
                        table,
                        source,
                        keys,
                        delete_column.as_deref(),
                        kept_when_null,
                        props,
                        self.writer_properties.clone(),
                    )
                    .await;
                    match merged {
                        Ok((version, m)) => {
                            commit.inserted = m.num_target_rows_inserted as u64;
                            commit.updated = m.num_target_rows_updated as u64;
                            commit.deleted = m.num_target_rows_deleted as u64;
                            debug!(table = %name, rows = n, "merged");
                            Ok(version)
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        };
        match result {
            Ok(version) => {
                commit.version = version;
                Ok(commit)
            }
            Err(e) => Err(classify_delta(name, e)),
        }
    }
}

/// Plans the evolution for every distinct batch schema and reshapes each batch to the final
/// target schema.
pub(crate) fn evolve_all(
    table: Option<&Schema>,
    batches: &[RecordBatch],
) -> Result<(Evolution, Vec<RecordBatch>)> {
    let Some(first) = batches.first() else {
        let schema = table.cloned().unwrap_or_else(Schema::empty);
        return Ok((Evolution::plan(Some(&schema), &schema), Vec::new()));
    };
    let mut evolution = Evolution::plan(table, &first.schema());
    let mut per_schema: Vec<(SchemaRef, Evolution)> = vec![(first.schema(), evolution.clone())];
    for batch in &batches[1..] {
        if per_schema.iter().any(|(s, _)| s == &batch.schema()) {
            continue;
        }
        let cumulative = evolution.target.clone();
        let next = Evolution::plan(Some(&cumulative), &batch.schema());
        let mut merged = next.clone();
        merged.added = [evolution.added.clone(), next.added.clone()].concat();
        // Only columns the table already has need a rewrite; a column an earlier batch of this
        // write added is simply created with the wider type.
        let in_table = |c: &str| table.is_some_and(|t| t.field_with_name(c).is_ok());
        let widened_here = next.widened.iter().filter(|(c, ..)| in_table(c)).cloned();
        merged.widened = evolution
            .widened
            .iter()
            .cloned()
            .chain(widened_here)
            .collect();
        merged.variants = [evolution.variants.clone(), next.variants.clone()].concat();
        per_schema.push((batch.schema(), next));
        evolution = merged;
    }
    let target = evolution.target.clone();
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let (_, e) = per_schema
            .iter()
            .find(|(s, _)| s == &batch.schema())
            .expect("planned above");
        let shaped = e.conform(batch)?;
        let shaped = if shaped.schema() == target {
            shaped
        } else {
            Evolution::plan(Some(&target), &shaped.schema()).conform(&shaped)?
        };
        out.push(shaped);
    }
    Ok((evolution, out))
}

/// Concatenates `batches` and keeps the last row of each key; a null key is an error.
fn dedupe_by_key(
    table: &TableName,
    batches: &[RecordBatch],
    keys: &[String],
) -> Result<RecordBatch> {
    let invalid = |reason: String| LakeError::InvalidMerge {
        table: table.to_string(),
        reason,
    };
    if keys.is_empty() {
        return Err(invalid(
            "no key columns given; name the columns that identify a row".into(),
        ));
    }
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    let all = concat_batches(&schema, batches)?;
    let mut columns = Vec::with_capacity(keys.len());
    for key in keys {
        let Ok(i) = schema.index_of(key) else {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(invalid(format!(
                "key column `{key}` is not in the data; columns are: {}",
                names.join(", ")
            )));
        };
        let column = all.column(i).clone();
        if column.null_count() > 0 {
            return Err(invalid(format!(
                "{} row(s) have a null `{key}`; every row needs a key",
                column.null_count()
            )));
        }
        columns.push(column);
    }
    let converter = RowConverter::new(
        columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(&columns)?;
    let mut last: HashMap<_, u32> = HashMap::with_capacity(rows.num_rows());
    for (i, row) in rows.iter().enumerate() {
        last.insert(row, i as u32);
    }
    if last.len() == all.num_rows() {
        return Ok(all);
    }
    let mut keep: Vec<u32> = last.into_values().collect();
    keep.sort_unstable();
    Ok(take_record_batch(&all, &UInt32Array::from(keep))?)
}

/// Takes `column` (the merge's delete marker) out of each batch, so that it is not evolved
/// into the table; [`attach_column`] puts it back after the batches are reshaped.
fn split_column(
    batches: &[RecordBatch],
    column: Option<&str>,
) -> Result<(Vec<RecordBatch>, Option<Vec<ArrayRef>>)> {
    let Some(column) = column else {
        return Ok((batches.to_vec(), None));
    };
    let mut rest = Vec::with_capacity(batches.len());
    let mut markers = Vec::with_capacity(batches.len());
    for batch in batches {
        let schema = batch.schema();
        let Ok(i) = schema.index_of(column) else {
            return Err(LakeError::InvalidMerge {
                table: String::new(),
                reason: format!("the delete column `{column}` is not in the data"),
            });
        };
        let marker = batch.column(i).clone();
        if marker.data_type() != &DataType::Boolean {
            return Err(LakeError::InvalidMerge {
                table: String::new(),
                reason: format!(
                    "the delete column `{column}` is {}, not boolean",
                    marker.data_type()
                ),
            });
        }
        let mut batch = batch.clone();
        batch.remove_column(i);
        rest.push(batch);
        markers.push(marker);
    }
    Ok((rest, Some(markers)))
}

fn attach_column(
    batches: Vec<RecordBatch>,
    column: Option<&str>,
    markers: Option<Vec<ArrayRef>>,
) -> Result<Vec<RecordBatch>> {
    let (Some(column), Some(markers)) = (column, markers) else {
        return Ok(batches);
    };
    batches
        .into_iter()
        .zip(markers)
        .map(|(batch, marker)| {
            let mut fields: Vec<FieldRef> = batch.schema().fields().iter().cloned().collect();
            fields.push(Arc::new(Field::new(column, DataType::Boolean, true)));
            let mut columns = batch.columns().to_vec();
            columns.push(marker);
            Ok(RecordBatch::try_new(
                Arc::new(Schema::new(fields)),
                columns,
            )?)
        })
        .collect()
}

/// For a merge into a table that does not exist yet: rows marked deleted are dropped, and so
/// is the marker column.
fn drop_deleted(batch: RecordBatch, column: Option<&str>) -> Result<RecordBatch> {
    let Some(column) = column else {
        return Ok(batch);
    };
    let i = batch.schema().index_of(column)?;
    let marker = batch.column(i).as_boolean().clone();
    // Keep rows whose marker is false or null.
    let keep = deltalake::arrow::compute::kernels::cmp::distinct(
        &marker,
        &BooleanArray::new_scalar(true),
    )?;
    let mut batch = filter_record_batch(&batch, &keep)?;
    batch.remove_column(i);
    Ok(batch)
}

/// Why an attempt to write did not commit.
enum Attempt {
    /// Another writer committed first: try again from the new version.
    Conflict(String),
    /// The table's schema was changed in a commit of its own first: write again against it.
    Evolved {
        added: Vec<String>,
        widened: Vec<String>,
    },
    /// The write cannot succeed.
    Failed(LakeError),
}

impl From<LakeError> for Attempt {
    fn from(e: LakeError) -> Self {
        Attempt::Failed(e)
    }
}

fn classify(e: LakeError) -> Attempt {
    match &e {
        LakeError::Delta { source, .. } if is_conflict(source) => Attempt::Conflict(e.to_string()),
        _ => Attempt::Failed(e),
    }
}

fn classify_delta(table: &TableName, e: DeltaTableError) -> Attempt {
    if is_conflict(&e) {
        Attempt::Conflict(e.to_string())
    } else {
        Attempt::Failed(LakeError::delta(table, e))
    }
}

/// Whether a Delta error means another writer committed first (so a fresh attempt can work).
fn is_conflict(e: &DeltaTableError) -> bool {
    match e {
        DeltaTableError::VersionAlreadyExists(_) | DeltaTableError::VersionMismatch(..) => true,
        DeltaTableError::Transaction { source } => matches!(
            source,
            TransactionError::VersionAlreadyExists(_)
                | TransactionError::CommitConflict(_)
                | TransactionError::MaxCommitAttempts(_)
        ),
        // A table created concurrently: the first commit's metadata races.
        DeltaTableError::NotATable(_) => true,
        _ => false,
    }
}

fn rand_jitter(attempt: usize) -> Duration {
    let base = 5u64 << attempt.min(6);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    Duration::from_millis(base + nanos % base.max(1))
}

impl IntoFuture for Write {
    type Output = Result<Commit>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int32Array, Int64Array};

    fn batch(name: &str, array: ArrayRef) -> RecordBatch {
        let schema = Schema::new(vec![Field::new(name, array.data_type().clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![array]).unwrap()
    }

    #[test]
    fn a_column_added_and_widened_within_one_write_needs_no_table_rewrite() {
        let table = Schema::new(vec![Field::new("id", DataType::Int64, true)]);
        let batches = [
            batch("n", Arc::new(Int32Array::from(vec![1]))),
            batch("n", Arc::new(Int64Array::from(vec![1i64 << 40]))),
        ];
        let (evolution, shaped) = evolve_all(Some(&table), &batches).unwrap();
        assert!(evolution.widened.is_empty(), "{:?}", evolution.widened);
        assert_eq!(evolution.added, vec!["n"]);
        assert!(
            shaped
                .iter()
                .all(|b| b.schema().field_with_name("n").unwrap().data_type() == &DataType::Int64)
        );
    }

    #[test]
    fn a_table_column_widened_by_a_later_batch_is_recorded() {
        let table = Schema::new(vec![Field::new("n", DataType::Int32, true)]);
        let batches = [
            batch("n", Arc::new(Int32Array::from(vec![1]))),
            batch("n", Arc::new(Int64Array::from(vec![1i64 << 40]))),
        ];
        let (evolution, _) = evolve_all(Some(&table), &batches).unwrap();
        assert_eq!(evolution.widened.len(), 1, "{:?}", evolution.widened);
    }
}
