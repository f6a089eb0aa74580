//! Golden files: expected output kept beside the input and compared as text;
//! `TIDEWAY_BLESS=1 cargo nextest run -p tideway-extract` rewrites them for review as a diff.

use std::path::{Path, PathBuf};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};

/// The folder of golden files for `area`.
pub fn dir(area: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(area)
}

/// Compares `actual` with the file `path`, or rewrites it when blessing.
pub fn check(path: &Path, actual: &str) {
    if std::env::var_os("TIDEWAY_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("{} is missing: run with TIDEWAY_BLESS=1", path.display()));
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}:\n  expected: {e}\n  actual:   {a}", i + 1))
            .collect();
        panic!(
            "{} differs ({} vs {} lines); first differences:\n{}\nrun with TIDEWAY_BLESS=1 to accept",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

/// A table as text: its schema, then each row's non-null values, one per line.
pub fn render(title: &str, batch: &RecordBatch) -> String {
    let mut out = format!("## {title} ({} rows)\n", batch.num_rows());
    let schema = batch.schema();
    for field in schema.fields() {
        out += &format!("  {}: {}\n", field.name(), field.data_type());
    }
    let options = FormatOptions::default();
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
        .collect();
    for row in 0..batch.num_rows() {
        out += &format!("- row {row}\n");
        for (i, field) in schema.fields().iter().enumerate() {
            if batch.column(i).is_valid(row) {
                out += &format!("    {} = {}\n", field.name(), formatters[i].value(row));
            }
        }
    }
    out
}
