//! Golden tests of schema evolution: each `tests/golden/evolve/NAME.case` is a sequence of
//! appends (NDJSON rows, with optional declared types), and `NAME.out` is the table's schema,
//! its rows and what each commit did.
//!
//! Case format:
//! ```text
//! # a comment
//! append n:int32 s:string      <- declared types; other columns are inferred from the JSON
//! {"n": 1, "s": "a"}
//! merge id                     <- upsert by the key column(s)
//! {"id": 1, "n": 2}
//! ```

use std::fmt::Write as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tideway_lake::arrow::array::RecordBatch;
use tideway_lake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tideway_lake::arrow::json::ReaderBuilder;
use tideway_lake::arrow::json::reader::infer_json_schema_from_iterator;
use tideway_lake::{Lake, SqlOutput, TableName};

fn declared(name: &str) -> DataType {
    match name {
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "string" => DataType::Utf8,
        "bool" => DataType::Boolean,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "uint64" => DataType::UInt64,
        other => panic!("unknown declared type `{other}`"),
    }
}

fn batch(types: &[(String, DataType)], lines: &[String]) -> RecordBatch {
    let values: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let inferred = infer_json_schema_from_iterator(values.iter().map(Ok)).unwrap();
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| match types.iter().find(|(n, _)| n == f.name()) {
            Some((_, t)) => Field::new(f.name(), t.clone(), true),
            None => f.as_ref().clone(),
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let text = lines.join("\n");
    let mut reader = ReaderBuilder::new(schema.clone())
        .build(Cursor::new(text.into_bytes()))
        .unwrap();
    reader
        .next()
        .unwrap_or_else(|| Ok(RecordBatch::new_empty(schema)))
        .unwrap()
}

async fn run_case(case: &Path) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let lake = Lake::open(&scratch.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let table: TableName = "golden.t".parse().unwrap();
    let text = std::fs::read_to_string(case).unwrap();
    let mut out = String::new();
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('{') {
            steps
                .last_mut()
                .expect("rows before any step")
                .1
                .push(line.to_string());
        } else {
            steps.push((line.to_string(), Vec::new()));
        }
    }
    writeln!(out, "commits:").unwrap();
    for (i, (header, rows)) in steps.iter().enumerate() {
        let mut words = header.split_whitespace();
        let verb = words.next().unwrap();
        let args: Vec<&str> = words.collect();
        let (types, keys): (Vec<(String, DataType)>, Vec<&str>) = match verb {
            "append" => (
                args.iter()
                    .map(|a| {
                        let (n, t) = a.split_once(':').expect("name:type");
                        (n.to_string(), declared(t))
                    })
                    .collect(),
                Vec::new(),
            ),
            "merge" => (Vec::new(), args.clone()),
            other => panic!("unknown step `{other}`"),
        };
        let b = batch(&types, rows);
        let result = if verb == "append" {
            lake.append(&table, vec![b]).await
        } else {
            lake.merge(&table, vec![b], &keys).await
        };
        match result {
            Ok(c) => {
                write!(out, "  {}: {verb} {} row(s)", i + 1, c.rows).unwrap();
                if !c.added_columns.is_empty() {
                    write!(out, "; added {}", c.added_columns.join(", ")).unwrap();
                }
                if !c.widened_columns.is_empty() {
                    write!(out, "; widened {}", c.widened_columns.join(", ")).unwrap();
                }
                for (col, variant) in &c.variant_columns {
                    write!(out, "; {col} -> {variant}").unwrap();
                }
                if verb == "merge" {
                    write!(out, "; {} inserted, {} updated", c.inserted, c.updated).unwrap();
                }
                writeln!(out).unwrap();
            }
            Err(e) => writeln!(out, "  {}: {verb} failed: {e}", i + 1).unwrap(),
        }
    }
    let schema = lake.schema(&table).await.unwrap();
    writeln!(out, "schema:").unwrap();
    for f in schema.fields() {
        writeln!(out, "  {}: {}", f.name(), f.data_type()).unwrap();
    }
    let first = if schema.field_with_name("id").is_ok() {
        "id".to_string()
    } else {
        schema.field(0).name().clone()
    };
    let SqlOutput::Rows(rows) = lake
        .sql(&format!("SELECT * FROM golden.t ORDER BY \"{first}\""))
        .await
        .unwrap()
    else {
        panic!("a query returns rows")
    };
    writeln!(out, "rows:").unwrap();
    let mut buf = Vec::new();
    {
        let mut w = tideway_lake::arrow::json::LineDelimitedWriter::new(&mut buf);
        for b in &rows.batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }
    for line in String::from_utf8(buf).unwrap().lines() {
        writeln!(out, "  {line}").unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_evolution_golden() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/evolve");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in cases {
        let actual = run_case(&case).await;
        let expected_path = case.with_extension("out");
        if crate::bless() {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                case.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch (TIDEWAY_BLESS=1 regenerates):\n{}",
        failures.join("\n")
    );
}
