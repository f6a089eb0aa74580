//! SQL behaviour as sqllogictest files, each run against a fresh lake.

use std::path::PathBuf;

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};
use tideway_lake::arrow::datatypes::DataType;
use tideway_lake::arrow::util::display::{ArrayFormatter, FormatOptions};
use tideway_lake::{Lake, LakeError, SqlOutput};

struct LakeDb {
    lake: Lake,
}

#[async_trait]
impl AsyncDB for LakeDb {
    type Error = LakeError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, LakeError> {
        match self.lake.sql(sql).await? {
            SqlOutput::Rows(result) => {
                let types = result
                    .schema
                    .fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        DataType::Int8
                        | DataType::Int16
                        | DataType::Int32
                        | DataType::Int64
                        | DataType::UInt64 => DefaultColumnType::Integer,
                        DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
                            DefaultColumnType::FloatingPoint
                        }
                        _ => DefaultColumnType::Text,
                    })
                    .collect();
                let options = FormatOptions::default().with_null("NULL");
                let mut rows = Vec::new();
                for batch in &result.batches {
                    let formatters: Vec<_> = batch
                        .columns()
                        .iter()
                        .map(|c| {
                            ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable")
                        })
                        .collect();
                    for row in 0..batch.num_rows() {
                        rows.push(
                            formatters
                                .iter()
                                .map(|f| {
                                    let v = f.value(row).to_string();
                                    if v.is_empty() {
                                        "(empty)".to_string()
                                    } else {
                                        v
                                    }
                                })
                                .collect(),
                        );
                    }
                }
                Ok(DBOutput::Rows { types, rows })
            }
            SqlOutput::Commit(c) => Ok(DBOutput::StatementComplete(
                c.rows.max(c.inserted + c.updated + c.deleted),
            )),
            SqlOutput::Done(_) => Ok(DBOutput::StatementComplete(0)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tideway"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_behaviour() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failures = Vec::new();
    for file in files {
        let scratch = tempfile::tempdir().unwrap();
        let location = scratch.path().join("lake").display().to_string();
        let mut runner = Runner::new(move || {
            let location = location.clone();
            async move {
                Ok(LakeDb {
                    lake: Lake::open(&location, Default::default()).await?,
                })
            }
        });
        if crate::bless() {
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap();
        } else if let Err(e) = runner.run_file_async(&file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
