//! How results are printed: a table for people, CSV and JSON for tools.

use std::io::Write as _;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Result;
use chrono::SecondsFormat;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tideway_lake::arrow::array::RecordBatch;
use tideway_lake::arrow::util::display::{ArrayFormatter, FormatOptions};
use tideway_lake::datafusion::dataframe::DataFrame;
use tideway_lake::{Commit, ImportReport, QueryResult, TableInfo};

/// Output format for query results and listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Json,
}

/// Prints a query's rows: streamed for CSV and JSON (any size), collected for a table.
pub async fn print_query(df: DataFrame, format: Format) -> Result<()> {
    if format == Format::Table {
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        return print_rows(&QueryResult { schema, batches });
    }
    let schema = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::new(stdout.lock());
    if format == Format::Csv {
        let mut writer = tideway_lake::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(out);
        let mut wrote = false;
        while let Some(batch) = stream.next().await {
            writer.write(&batch?)?;
            wrote = true;
        }
        if !wrote {
            writer.write(&RecordBatch::new_empty(schema))?;
        }
    } else {
        let mut writer = tideway_lake::arrow::json::LineDelimitedWriter::new(out);
        while let Some(batch) = stream.next().await {
            writer.write(&batch?)?;
        }
        writer.finish()?;
    }
    Ok(())
}

/// Prints rows as an aligned table, with a row count.
pub fn print_rows(rows: &QueryResult) -> Result<()> {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(rows.schema.fields().iter().map(|f| f.name().clone()));
    let options = FormatOptions::default().with_null("NULL");
    for batch in &rows.batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            table.add_row(formatters.iter().map(|f| f.value(row).to_string()));
        }
    }
    let n = rows.num_rows();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "{table}")?;
    writeln!(out, "{n} row{}", if n == 1 { "" } else { "s" })?;
    Ok(())
}

pub fn print_commit(commit: &Commit, format: Format) -> Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string(commit)?);
        return Ok(());
    }
    let version = commit.version.map_or("-".to_string(), |v| v.to_string());
    let mut parts = vec![format!("{}: version {version}", commit.table)];
    if commit.skipped {
        parts.push("skipped (this transaction already committed)".into());
    }
    if commit.inserted + commit.updated + commit.deleted > 0 {
        parts.push(format!(
            "{} inserted, {} updated, {} deleted",
            commit.inserted, commit.updated, commit.deleted
        ));
    } else if commit.rows > 0 {
        parts.push(format!("{} row(s) written", commit.rows));
    }
    if !commit.added_columns.is_empty() {
        parts.push(format!("added columns {}", commit.added_columns.join(", ")));
    }
    if !commit.widened_columns.is_empty() {
        parts.push(format!("widened {}", commit.widened_columns.join(", ")));
    }
    for (column, variant) in &commit.variant_columns {
        parts.push(format!(
            "values of `{column}` with another type went to `{variant}`"
        ));
    }
    println!("{}", parts.join("; "));
    Ok(())
}

pub fn print_tables(tables: &[TableInfo], format: Format) -> Result<()> {
    match format {
        Format::Json => {
            for t in tables {
                println!("{}", serde_json::to_string(t)?);
            }
        }
        Format::Csv => {
            println!("table,rows,version,last_commit,size_bytes,files,columns");
            for t in tables {
                println!(
                    "{},{},{},{},{},{},{}",
                    t.name,
                    t.rows,
                    t.version,
                    t.last_commit
                        .map(|c| c.to_rfc3339_opts(SecondsFormat::Millis, true))
                        .unwrap_or_default(),
                    t.size_bytes,
                    t.files,
                    t.columns
                );
            }
        }
        Format::Table => {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header([
                "table",
                "rows",
                "version",
                "last commit",
                "size",
                "files",
                "columns",
            ]);
            for t in tables {
                table.add_row([
                    t.name.clone(),
                    t.rows.to_string(),
                    t.version.to_string(),
                    t.last_commit
                        .map(|c| c.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                        .unwrap_or_default(),
                    human_bytes(t.size_bytes),
                    t.files.to_string(),
                    t.columns.to_string(),
                ]);
            }
            println!("{table}");
            println!(
                "{} table{}",
                tables.len(),
                if tables.len() == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}

pub fn print_import(report: &ImportReport, took: Duration) {
    let c = &report.commit;
    println!(
        "imported {} row(s) from {} file(s) into {} (version {}) in {:.1?}",
        c.rows,
        report.files.len(),
        c.table,
        c.version.map_or("-".into(), |v| v.to_string()),
        took
    );
    for (from, to) in &report.renamed {
        println!("  column `{from}` is named `{to}` in the lake");
    }
    if !c.added_columns.is_empty() {
        println!("  added columns: {}", c.added_columns.join(", "));
    }
    for (column, variant) in &c.variant_columns {
        println!("  values of `{column}` with another type went to `{variant}`");
    }
}

pub fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid template"),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
