//! `lake import`: CSV, Parquet and NDJSON files (or folders of them) into one table, in one
//! commit, with their column names normalized by the shared naming rules.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{Field, Schema};
use deltalake::datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};
use tideway_core::naming::{NameMap, NamingRules};

use crate::error::{LakeError, Result};
use crate::lake::Lake;
use crate::name::TableName;
use crate::write::{Commit, WriteMode};

/// A file format `lake import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// Newline-delimited JSON, one object per line.
    NdJson,
}

/// The extensions `lake import` recognizes.
pub const IMPORT_EXTENSIONS: &[&str] = &["csv", "parquet", "ndjson", "jsonl", "json"];

impl FileFormat {
    /// The format of a file, by its extension.
    pub fn of(path: &Path) -> Option<FileFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(FileFormat::Csv),
            "parquet" => Some(FileFormat::Parquet),
            "ndjson" | "jsonl" | "json" => Some(FileFormat::NdJson),
            _ => None,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// Source column names that were renamed by the naming rules: (source, lake).
    pub renamed: Vec<(String, String)>,
    /// The commit.
    pub commit: Commit,
}

impl Lake {
    /// Imports `paths` (files, or folders searched recursively for files with a known
    /// extension) into `table`: appended, or replacing its rows and schema with `replace`.
    pub async fn import(
        &self,
        paths: &[PathBuf],
        table: &TableName,
        replace: bool,
    ) -> Result<ImportReport> {
        let files = expand(paths)?;
        let existing: Vec<String> = match self.load(table).await? {
            Some(t) if !replace => Lake::schema_of(table, &t)?
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
            _ => Vec::new(),
        };
        let mut names = NameMap::with_existing(NamingRules::default(), &existing);
        let mut renamed = Vec::new();
        let mut batches = Vec::new();
        for file in &files {
            for batch in self.read_file(file).await? {
                batches.push(rename(batch, &mut names, &mut renamed)?);
            }
        }
        let mode = if replace {
            WriteMode::Overwrite
        } else {
            WriteMode::Append
        };
        let commit = self
            .write(table, batches, mode)
            .with_metadata(
                "tideway.import",
                serde_json::json!(
                    files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                ),
            )
            .await?;
        Ok(ImportReport {
            files,
            renamed,
            commit,
        })
    }

    async fn read_file(&self, file: &Path) -> Result<Vec<RecordBatch>> {
        let fail = |reason: String| LakeError::Import {
            path: file.display().to_string(),
            reason,
        };
        let path = file
            .to_str()
            .ok_or_else(|| fail("the path is not valid UTF-8".into()))?;
        let ctx = self.session();
        let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
        let df = match FileFormat::of(file) {
            Some(FileFormat::Csv) => {
                ctx.read_csv(path, CsvReadOptions::new().file_extension(ext))
                    .await
            }
            Some(FileFormat::Parquet) => {
                ctx.read_parquet(path, ParquetReadOptions::default().file_extension(ext))
                    .await
            }
            Some(FileFormat::NdJson) => {
                ctx.read_json(path, JsonReadOptions::default().file_extension(ext))
                    .await
            }
            None => return Err(fail(unknown_extension())),
        }
        .map_err(|e| fail(e.to_string()))?;
        df.collect().await.map_err(|e| fail(e.to_string()))
    }
}

fn unknown_extension() -> String {
    format!(
        "unknown file type; known extensions: {}",
        IMPORT_EXTENSIONS.join(", ")
    )
}

/// The files to import: each path itself, or every file under a folder with a known
/// extension, sorted.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let fail = |reason: String| LakeError::Import {
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found).map_err(|e| fail(e.to_string()))?;
            if found.is_empty() {
                return Err(fail(format!(
                    "the folder has no files with a known extension ({})",
                    IMPORT_EXTENSIONS.join(", ")
                )));
            }
            found.sort();
            files.extend(found);
        } else if FileFormat::of(path).is_some() {
            files.push(path.clone());
        } else {
            return Err(fail(unknown_extension()));
        }
    }
    if files.is_empty() {
        return Err(LakeError::Import {
            path: String::new(),
            reason: "no files given".into(),
        });
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if FileFormat::of(&path).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

/// Renames a batch's columns to lake names.
fn rename(
    batch: RecordBatch,
    names: &mut NameMap,
    renamed: &mut Vec<(String, String)>,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let lake = names.name(f.name());
            if &lake != f.name() && !renamed.iter().any(|(s, _)| s == f.name()) {
                renamed.push((f.name().clone(), lake.clone()));
            }
            f.as_ref().clone().with_name(lake)
        })
        .collect();
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        batch.columns().to_vec(),
    )?)
}
