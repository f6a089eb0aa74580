//! Golden compile and lineage tests. Each `tests/golden/{compile,lineage}/NAME.sql` is a
//! small project:
//!
//! ```text
//! -- lake: billing.orders (order_id BIGINT, amount DOUBLE)   a lake table the models read
//! -- file: models/marts/revenue.sql                           a model file, up to the next marker
//! select ...
//! ```
//!
//! It is compiled and the result is compared with `NAME.out` (compile: each model's inferred
//! schema and upstreams, every diagnostic as a user sees it, the models not checked) or with
//! `NAME.json` (lineage: each model's column lineage and reads, as `tideway lineage` and
//! `tideway plan` see them). `TIDEWAY_BLESS=1` rewrites the expected files; review the diff.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use tideway_lake::Lake;
use tideway_models::{Compilation, Models, compile::compile};

struct Case {
    lake: Vec<String>,
    files: Vec<(PathBuf, String)>,
}

fn parse_case(text: &str) -> Case {
    let mut case = Case {
        lake: Vec::new(),
        files: Vec::new(),
    };
    for line in text.lines() {
        if let Some(ddl) = line.strip_prefix("-- lake: ") {
            case.lake.push(ddl.to_string());
        } else if let Some(path) = line.strip_prefix("-- file: ") {
            case.files.push((PathBuf::from(path.trim()), String::new()));
        } else if let Some((_, body)) = case.files.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    case
}

/// Compiles a case's project.
async fn compile_case(text: &str) -> Result<Compilation> {
    let case = parse_case(text);
    let dir = tempfile::tempdir()?;
    let lake = Lake::open(
        &dir.path().join("lake").display().to_string(),
        Default::default(),
    )
    .await?;
    for ddl in &case.lake {
        lake.sql(&format!("CREATE TABLE {ddl}")).await?;
    }
    let (models, errors) = Models::from_sources(case.files);
    Ok(compile(models, errors, Some(&lake)).await?)
}

/// Compiles a case and prints what a reviewer reads.
pub async fn run_case(text: &str) -> Result<String> {
    let compiled = compile_case(text).await?;
    let mut out = String::new();
    for &i in &compiled.order {
        let Some(c) = &compiled.compiled[i] else {
            continue;
        };
        let m = &compiled.models.models[i];
        let mut reads: Vec<String> = c
            .upstream_models
            .iter()
            .map(|&u| compiled.models.models[u].name.to_string())
            .collect();
        reads.extend(c.upstream_sources.iter().cloned());
        writeln!(
            out,
            "== {} ({:?}, {}) reads: {}",
            m.name,
            m.config.materialized,
            m.file.display(),
            if reads.is_empty() {
                "-".to_string()
            } else {
                reads.join(", ")
            }
        )?;
        for f in c.schema.fields() {
            writeln!(
                out,
                "   {} {}{}",
                f.name(),
                f.data_type(),
                if f.is_nullable() { "" } else { " NOT NULL" }
            )?;
        }
    }
    for d in &compiled.diagnostics {
        writeln!(out, "{d}\n")?;
    }
    for (i, because) in &compiled.not_checked {
        writeln!(
            out,
            "not checked: {} (upstream {} has errors)",
            compiled.models.models[*i].name, compiled.models.models[*because].name
        )?;
    }
    Ok(out)
}

/// Compiles a case and writes each model's lineage as JSON (and any diagnostic, which a
/// lineage case should not have).
async fn lineage_case(text: &str) -> Result<String> {
    let compiled = compile_case(text).await?;
    let mut models = Vec::new();
    for &i in &compiled.order {
        if let Some(c) = &compiled.compiled[i] {
            models.push(serde_json::json!({
                "model": compiled.models.models[i].name.to_string(),
                "columns": c.lineage.columns,
                "reads": c.lineage.reads,
            }));
        }
    }
    let mut out = serde_json::to_string_pretty(&models)? + "\n";
    for d in &compiled.diagnostics {
        writeln!(out, "{d}\n")?;
    }
    Ok(out)
}

/// Runs every case in `tests/golden/<kind>` and compares it with its `.<ext>` file.
async fn golden<F, Fut>(kind: &str, ext: &str, render: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<String>>,
{
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(kind);
    let bless = std::env::var_os("TIDEWAY_BLESS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    cases.retain(|p| p.extension().is_some_and(|e| e == "sql"));
    cases.sort();
    assert!(
        cases.len() >= 3,
        "golden cases missing in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for case in cases {
        let actual = render(std::fs::read_to_string(&case)?).await?;
        let expected_path = case.with_extension(ext);
        if bless {
            std::fs::write(&expected_path, &actual)?;
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{} differs from {}:\n--- actual ---\n{actual}",
                case.display(),
                expected_path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(TIDEWAY_BLESS=1 regenerates)",
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn compile_cases_match_the_golden_files() -> Result<()> {
    golden(
        "compile",
        "out",
        |text| async move { run_case(&text).await },
    )
    .await
}

#[tokio::test]
async fn lineage_cases_match_the_golden_files() -> Result<()> {
    golden("lineage", "json", |text| async move {
        lineage_case(&text).await
    })
    .await
}
