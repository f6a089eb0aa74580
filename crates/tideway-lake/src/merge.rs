//! Upsert by key with Delta's MERGE.

use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::merge::{MergeBuilder, MergeMetrics};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::{DeltaTable, DeltaTableError};

use crate::lake::Lake;

/// Quotes a column name for a Delta expression.
pub(crate) fn quote(column: &str) -> String {
    format!("\"{}\"", column.replace('"', "\"\""))
}

/// A MERGE of `source` into `table` on equal `keys` (aliases `source` and `target`), with the
/// lake's session and the commit and writer settings; and the source's column names.
fn merge_on_keys(
    lake: &Lake,
    table: DeltaTable,
    source: RecordBatch,
    keys: &[String],
    props: CommitProperties,
    writer_properties: Option<WriterProperties>,
) -> Result<(MergeBuilder, Vec<String>), DeltaTableError> {
    let ctx = lake.session();
    let columns: Vec<String> = source
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let df = ctx.read_batch(source)?;
    let predicate = keys
        .iter()
        .map(|k| format!("target.{q} = source.{q}", q = quote(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let mut builder = table
        .merge(df, predicate)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_session_state(Arc::new(ctx.state()))
        .with_commit_properties(props);
    if let Some(properties) = writer_properties {
        builder = builder.with_writer_properties(properties);
    }
    Ok((builder, columns))
}

/// Merges `source` (one row per key) into `table`: matched keys are updated, or deleted when
/// `delete_column` is true; new keys are inserted unless marked deleted.
pub(crate) async fn upsert(
    lake: &Lake,
    table: DeltaTable,
    source: RecordBatch,
    keys: &[String],
    delete_column: Option<&str>,
    kept_when_null: &[String],
    props: CommitProperties,
    writer_properties: Option<WriterProperties>,
) -> Result<(Option<u64>, MergeMetrics), DeltaTableError> {
    let (mut builder, mut columns) =
        merge_on_keys(lake, table, source, keys, props, writer_properties)?;
    columns.retain(|c| Some(c.as_str()) != delete_column);
    let set_all = |columns: &[String]| -> Vec<(String, String)> {
        columns
            .iter()
            .map(|c| (c.clone(), format!("source.{}", quote(c))))
            .collect()
    };
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| !keys.contains(c))
        .cloned()
        .collect();
    let update_all = |updates: &[String]| -> Vec<(String, String)> {
        set_all(updates)
            .into_iter()
            .map(|(c, e)| {
                if kept_when_null.contains(&c) {
                    let e = format!("coalesce({e}, target.{})", quote(&c));
                    (c, e)
                } else {
                    (c, e)
                }
            })
            .collect()
    };
    if let Some(marker) = delete_column {
        let marker = quote(marker);
        builder =
            builder.when_matched_delete(|d| d.predicate(format!("source.{marker} = true")))?;
        if !updates.is_empty() {
            builder = builder.when_matched_update(|mut u| {
                for (c, e) in update_all(&updates) {
                    u = u.update(c, e);
                }
                u
            })?;
        }
        builder = builder.when_not_matched_insert(|mut i| {
            i = i.predicate(format!("source.{marker} IS NOT TRUE"));
            for (c, e) in set_all(&columns) {
                i = i.set(c, e);
            }
            i
        })?;
    } else {
        if !updates.is_empty() {
            builder = builder.when_matched_update(|mut u| {
                for (c, e) in update_all(&updates) {
                    u = u.update(c, e);
                }
                u
            })?;
        }
        builder = builder.when_not_matched_insert(|mut i| {
            for (c, e) in set_all(&columns) {
                i = i.set(c, e);
            }
            i
        })?;
    }
    let (table, metrics) = builder.await?;
    Ok((table.version(), metrics))
}

/// Replaces groups of rows (see [`crate::WriteMode::Replace`]): upserts `source` by `keys`
/// and deletes the other rows of `groups`, in one commit.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn replace_groups(
    lake: &Lake,
    table: DeltaTable,
    source: RecordBatch,
    keys: &[String],
    group: &str,
    groups: &[String],
    props: CommitProperties,
    writer_properties: Option<WriterProperties>,
) -> Result<(Option<u64>, MergeMetrics), DeltaTableError> {
    let (mut builder, columns) =
        merge_on_keys(lake, table, source, keys, props, writer_properties)?;
    let members = groups
        .iter()
        .map(|g| format!("'{}'", g.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let in_groups = format!("target.{} IN ({members})", quote(group));
    let updates: Vec<&String> = columns.iter().filter(|c| !keys.contains(c)).collect();
    if !updates.is_empty() {
        builder = builder.when_matched_update(|mut u| {
            for c in &updates {
                u = u.update(c.as_str(), format!("source.{}", quote(c)));
            }
            u
        })?;
    }
    builder = builder
        .when_not_matched_insert(|mut i| {
            for c in &columns {
                i = i.set(c.as_str(), format!("source.{}", quote(c)));
            }
            i
        })?
        .when_not_matched_by_source_delete(|d| d.predicate(in_groups))?;
    let (table, metrics) = builder.await?;
    Ok((table.version(), metrics))
}
