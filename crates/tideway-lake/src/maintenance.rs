//! Keeping tables healthy: compaction of small files, vacuum, checkpoints; and the schema
//! changes that need their own commit (adding columns before a merge, widening a column).

use std::sync::Arc;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::checkpoints::create_checkpoint;
use deltalake::datafusion::prelude::{cast, col};
use deltalake::kernel::StructField;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;

use crate::error::{LakeError, Result};
use crate::lake::Lake;
use crate::name::TableName;

/// What `optimize` did to one table.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct OptimizeReport {
    pub table: String,
    pub files_removed: u64,
    pub files_added: u64,
    pub version: u64,
}

/// What `vacuum` removed (or would remove, in a dry run) from one table.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct VacuumReport {
    pub table: String,
    pub dry_run: bool,
    pub files_deleted: usize,
}

/// The default retention of `vacuum`: Delta's own default, one week, so that readers of older
/// versions (time travel, long queries) keep their files.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Lake {
    /// Compacts small files into files of about `target_size` bytes (Delta's default when
    /// `None`), then writes a checkpoint.
    pub async fn optimize(
        &self,
        name: &TableName,
        target_size: Option<u64>,
    ) -> Result<OptimizeReport> {
        let table = self.table(name).await?;
        let mut builder = table
            .optimize()
            .with_writer_properties(crate::write::writer_properties())
            .with_session_state(Arc::new(self.session().state()));
        if let Some(size) = target_size.and_then(std::num::NonZeroU64::new) {
            builder = builder.with_target_size(size);
        }
        let (table, metrics) = builder.await.map_err(|e| LakeError::delta(name, e))?;
        create_checkpoint(&table, None)
            .await
            .map_err(|e| LakeError::delta(name, e))?;
        Ok(OptimizeReport {
            table: name.to_string(),
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
            version: table.version().unwrap_or_default(),
        })
    }

    /// Deletes data files that no version within `retention` needs, including files left by
    /// failed writes. A retention below one week is honored (readers of older versions lose
    /// them), which is what a user asking for it wants.
    pub async fn vacuum(
        &self,
        name: &TableName,
        retention: Duration,
        dry_run: bool,
    ) -> Result<VacuumReport> {
        let table = self.table(name).await?;
        let retention = chrono::Duration::from_std(retention)
            .map_err(|e| LakeError::Sql(format!("retention out of range: {e}")))?;
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .with_dry_run(dry_run)
            .await
            .map_err(|e| LakeError::delta(name, e))?;
        Ok(VacuumReport {
            table: name.to_string(),
            dry_run,
            files_deleted: metrics.files_deleted.len(),
        })
    }

    /// Writes a checkpoint of the table's current version, so readers need not replay its log.
    pub async fn checkpoint(&self, name: &TableName) -> Result<u64> {
        let table = self.table(name).await?;
        create_checkpoint(&table, None)
            .await
            .map_err(|e| LakeError::delta(name, e))?;
        Ok(table.version().unwrap_or_default())
    }
}

/// Adds `added` columns (typed as in `target`) to the table, in one commit.
pub(crate) async fn add_columns(
    name: &TableName,
    table: DeltaTable,
    target: &Schema,
    added: &[String],
) -> Result<()> {
    let mut fields: Vec<StructField> = Vec::with_capacity(added.len());
    for column in added {
        let field = target.field_with_name(column)?;
        let field: StructField = field.try_into_kernel().map_err(|e| {
            LakeError::Sql(format!(
                "column `{column}` has a type Delta cannot store: {e}"
            ))
        })?;
        fields.push(field);
    }
    table
        .add_columns()
        .with_fields(fields)
        .await
        .map_err(|e| LakeError::delta(name, e))?;
    Ok(())
}

/// Rewrites the whole table with the column types of `target` (a lossless widening), in one
/// commit.
pub(crate) async fn rewrite_with_schema(
    lake: &Lake,
    name: &TableName,
    table: DeltaTable,
    target: SchemaRef,
) -> Result<()> {
    let ctx = lake.session();
    let provider = table.table_provider().await?;
    let df = ctx.read_table(provider)?;
    let current = df.schema().clone();
    let exprs = target
        .fields()
        .iter()
        .filter(|f| current.field_with_unqualified_name(f.name()).is_ok())
        .map(|f| cast(col(format!("\"{}\"", f.name())), f.data_type().clone()).alias(f.name()))
        .collect::<Vec<_>>();
    let df = df.select(exprs)?;
    let (_, plan) = df.into_parts();
    table
        .write(Vec::new())
        .with_input_plan(plan)
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(SchemaMode::Overwrite)
        .with_session_state(Arc::new(ctx.state()))
        .await
        .map_err(|e| LakeError::delta(name, e))?;
    Ok(())
}
