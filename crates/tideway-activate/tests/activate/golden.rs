//! Golden tests of the differ. Each `tests/golden/diff/NAME.case` is a sync file and a series
//! of runs:
//!
//! ```text
//! -- sync                          the sync file (destination = "rec", a recording destination)
//! source = "crm.people"
//! key = "id"
//! -- transformation: NAME          a transformations/NAME.js file, up to the next marker
//! -- fixture: NAME                 tests/fixtures/transformations/NAME.js as transformations/NAME.js
//! -- run: what changed             SQL run against the lake, then a sync run
//! CREATE TABLE crm.people (id BIGINT, name VARCHAR); INSERT INTO crm.people VALUES (1, 'Ann')
//! -- refuse: 2 3                   keys the destination refuses from the next run on
//! -- fail: 4                       keys it cannot take (503) from the next run on
//! -- clock: 2026-01-03T00:00:00Z   the start time of the next runs (default: now)
//! ```
//!
//! `NAME.out` holds, per run, the counts, every event delivered (sorted by key; times and
//! message ids left out), the problems reported and the dead letters written. `TIDEWAY_BLESS=1` rewrites it.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use tideway_activate::delivery::RetryPolicy;
use tideway_activate::transform::Source;
use tideway_activate::{RunOptions, SyncConfig, SyncJob};
use tideway_lake::Lake;

use crate::support::{Recorder, dead_letters, stable};

enum Step {
    Run { title: String, sql: String },
    Refuse(Vec<String>),
    Fail(Vec<String>),
    Clock(chrono::DateTime<chrono::Utc>),
}

pub fn options() -> RunOptions {
    RunOptions {
        retry: RetryPolicy {
            max_attempts: 2,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
        chunk_rows: 4,
        ..Default::default()
    }
}

async fn run_case(text: &str) -> Result<String> {
    let mut sync = String::new();
    let mut scripts: Vec<Source> = Vec::new();
    let mut steps = Vec::new();
    enum Into {
        Sync,
        Script,
        Run,
        Nothing,
    }
    let mut into = Into::Nothing;
    for line in text.lines() {
        if line == "-- sync" {
            into = Into::Sync;
        } else if let Some(name) = line.strip_prefix("-- fixture: ") {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/transformations")
                .join(format!("{}.js", name.trim()));
            scripts.push(Source {
                name: name.trim().to_string(),
                file: format!("transformations/{}.js", name.trim()),
                text: std::fs::read_to_string(path)?,
            });
            into = Into::Nothing;
        } else if let Some(name) = line.strip_prefix("-- transformation: ") {
            scripts.push(Source {
                name: name.trim().to_string(),
                file: format!("transformations/{}.js", name.trim()),
                text: String::new(),
            });
            into = Into::Script;
        } else if let Some(title) = line.strip_prefix("-- run: ") {
            steps.push(Step::Run {
                title: title.to_string(),
                sql: String::new(),
            });
            into = Into::Run;
        } else if let Some(keys) = line.strip_prefix("-- refuse:") {
            steps.push(Step::Refuse(
                keys.split_whitespace().map(str::to_string).collect(),
            ));
            into = Into::Nothing;
        } else if let Some(at) = line.strip_prefix("-- clock:") {
            steps.push(Step::Clock(at.trim().parse()?));
            into = Into::Nothing;
        } else if let Some(keys) = line.strip_prefix("-- fail:") {
            steps.push(Step::Fail(
                keys.split_whitespace().map(str::to_string).collect(),
            ));
            into = Into::Nothing;
        } else {
            match (&into, steps.last_mut()) {
                (Into::Sync, _) => writeln!(sync, "{line}")?,
                (Into::Script, _) => {
                    let s = scripts.last_mut().expect("a script is open");
                    s.text.push_str(line);
                    s.text.push('\n');
                }
                (Into::Run, Some(Step::Run { sql, .. })) => {
                    sql.push_str(line);
                    sql.push('\n');
                }
                _ => {}
            }
        }
    }
    let names: Vec<String> = scripts.iter().map(|s| s.name.clone()).collect();
    let config = SyncConfig::parse(&sync, "syncs/case.toml", &["rec".to_string()], &names)?;
    let dir = tempfile::tempdir()?;
    let lake = Lake::open(&dir.path().display().to_string(), Default::default()).await?;
    let recorder = Arc::new(Recorder::new());
    let job = SyncJob::new(config, recorder.clone(), &scripts, Default::default())?;
    let mut out = String::new();
    let mut options = options();
    let mut dead_so_far: Vec<(String, String)> = Vec::new();
    for step in steps {
        match step {
            Step::Clock(at) => options.started = Some(at),
            Step::Refuse(keys) => *recorder.refuse.lock().unwrap() = keys.into_iter().collect(),
            Step::Fail(keys) => *recorder.fail.lock().unwrap() = keys.into_iter().collect(),
            Step::Run { title, sql } => {
                if !sql.trim().is_empty() {
                    lake.sql(&sql).await?;
                }
                let report = job.run(&lake, &options, &|_| {}).await?;
                let c = &report.counts;
                writeln!(out, "== run {}: {title}", report.run)?;
                writeln!(
                    out,
                    "added {} changed {} removed {} invalid {} | delivered {} filtered {} skipped {} refused {} failed {} dead {}",
                    c.added,
                    c.changed,
                    c.removed,
                    c.invalid,
                    c.delivered,
                    c.filtered,
                    c.skipped,
                    c.rejected,
                    c.failed,
                    c.dead
                )?;
                let mut events = recorder.take();
                let ids: std::collections::BTreeSet<_> = events
                    .iter()
                    .map(|e| e.event["messageId"].as_str().unwrap_or("").to_string())
                    .collect();
                assert_eq!(ids.len(), events.len(), "every event has its own messageId");
                events.sort_by(|a, b| a.origin.cmp(&b.origin));
                for e in events {
                    writeln!(out, "{:?} {}", e.op, stable(&e.event))?;
                }
                let mut problems = report.problems.clone();
                problems.sort();
                for (key, message) in problems {
                    writeln!(out, "! {key}: {message}")?;
                }
                if lake
                    .load(&"_tideway.dead_letters".parse()?)
                    .await?
                    .is_some()
                {
                    let mut old = std::mem::take(&mut dead_so_far);
                    for letter in dead_letters(&lake).await {
                        match old.iter().position(|l| *l == letter) {
                            Some(at) => {
                                old.remove(at);
                            }
                            None => writeln!(out, "dead letter ({}): {}", letter.0, letter.1)?,
                        }
                        dead_so_far.push(letter);
                    }
                }
            }
        }
    }
    Ok(out)
}

#[tokio::test]
async fn the_differ_matches_the_golden_files() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/diff");
    let bless = std::env::var_os("TIDEWAY_BLESS").is_some();
    let mut failures = Vec::new();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    cases.sort();
    for case in cases
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
    {
        let actual = run_case(&std::fs::read_to_string(case)?).await?;
        let expected_path = case.with_extension("out");
        if bless {
            std::fs::write(&expected_path, &actual)?;
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{} differs (TIDEWAY_BLESS=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() >= 4, "the golden cases are there");
    Ok(())
}

#[tokio::test]
async fn an_event_table_sync_stamps_each_event_with_its_rows_time() {
    let sync = "source = \"logs.e\"\nkey = \"id\"\ndestination = \"rec\"\ntype = \"track\"\nevent_column = \"name\"\ntime_column = \"at\"\n";
    let config = SyncConfig::parse(sync, "syncs/e.toml", &["rec".to_string()], &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    lake.sql("CREATE TABLE logs.e (id BIGINT, name VARCHAR, at TIMESTAMP)")
        .await
        .unwrap();
    lake.sql("INSERT INTO logs.e VALUES (1, 'Signed Up', TIMESTAMP '2026-11-30 10:00:00'), (2, 'Paid', NULL)")
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::new());
    let job = SyncJob::new(config, recorder.clone(), &[], Default::default()).unwrap();
    let report = job.run(&lake, &options(), &|_| {}).await.unwrap();
    assert_eq!(report.counts.delivered, 2);
    let sent = recorder.take();
    let by_name = |n: &str| {
        sent.iter()
            .find(|e| e.event["event"] == n)
            .unwrap()
            .event
            .clone()
    };
    assert_eq!(
        by_name("Signed Up")["timestamp"],
        "2026-11-30T10:00:00.000Z"
    );
    assert_eq!(
        by_name("Signed Up")["properties"].get("name"),
        None,
        "the name column is not a property"
    );
    let run_time = by_name("Paid")["timestamp"].as_str().unwrap().to_string();
    assert!(
        run_time.starts_with("20") && run_time != "2026-11-30T10:00:00.000Z",
        "a row without a time gets the run's: {run_time}"
    );
}

/// The differ over more rows than one scan batch (8,192) and more than one file: a key's two
/// copies far apart are both invalid; `metadata.previous` holds the accepted values of exactly
/// the rows that changed; refusals keep the accepted values for the next try.
#[tokio::test]
async fn the_differ_spans_batches_and_files_and_reads_previous_values_for_changed_rows() {
    let sync = "source = \"crm.big\"\nkey = \"id\"\ndestination = \"rec\"\ntype = \"identify\"\ntransformations = [\"prev\"]\n";
    let script = Source {
        name: "prev".into(),
        file: "transformations/prev.js".into(),
        text: "export function transformEvent(event, metadata) {\n  const p = metadata(event).previous;\n  event.traits.was = p ? p.name : null;\n  return event;\n}\n".into(),
    };
    let config = SyncConfig::parse(
        sync,
        "syncs/big.toml",
        &["rec".to_string()],
        &["prev".to_string()],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    lake.sql("CREATE TABLE crm.big AS SELECT value AS id, concat('n', CAST(value AS VARCHAR)) AS name FROM range(20000)")
        .await
        .unwrap();
    lake.sql("INSERT INTO crm.big VALUES (7, 'again')")
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::new());
    let job = SyncJob::new(config, recorder.clone(), &[script], Default::default()).unwrap();
    let options = RunOptions {
        chunk_rows: 5_000,
        ..options()
    };
    let report = job.run(&lake, &options, &|_| {}).await.unwrap();
    assert_eq!(
        (
            report.counts.added,
            report.counts.invalid,
            report.counts.delivered
        ),
        (19_999, 2, 19_999),
        "{:?}",
        report.counts
    );
    assert!(
        report
            .problems
            .iter()
            .any(|(k, m)| k == "7" && m.contains("2 rows have it")),
        "{:?}",
        report.problems
    );
    let sent = recorder.take();
    assert!(sent.iter().all(|e| e.event["traits"]["was"].is_null()));

    lake.sql("DELETE FROM crm.big WHERE name = 'again'")
        .await
        .unwrap();
    lake.sql("UPDATE crm.big SET name = concat(name, '!') WHERE id IN (3, 9000, 19999)")
        .await
        .unwrap();
    lake.sql("DELETE FROM crm.big WHERE id IN (4, 12000)")
        .await
        .unwrap();
    let report = job.run(&lake, &options, &|_| {}).await.unwrap();
    assert_eq!(
        (
            report.counts.added,
            report.counts.changed,
            report.counts.removed,
            report.counts.invalid
        ),
        (1, 3, 2, 0),
        "{:?}",
        report.counts
    );
    let mut was: Vec<(String, Value)> = recorder
        .take()
        .into_iter()
        .filter(|e| e.op == tideway_activate::destination::Op::Upsert)
        .map(|e| (e.origin.clone(), e.event["traits"]["was"].clone()))
        .collect();
    was.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        was,
        vec![
            ("19999".to_string(), json!("n19999")),
            ("3".to_string(), json!("n3")),
            ("7".to_string(), Value::Null),
            ("9000".to_string(), json!("n9000")),
        ]
    );

    // Refused changes keep the accepted values: the retry still sees them as `previous`.
    *recorder.refuse.lock().unwrap() = ["3".to_string()].into_iter().collect();
    lake.sql("UPDATE crm.big SET name = 'x' WHERE id = 3")
        .await
        .unwrap();
    let report = job.run(&lake, &options, &|_| {}).await.unwrap();
    assert_eq!(report.counts.rejected, 1, "{:?}", report.counts);
    recorder.refuse.lock().unwrap().clear();
    lake.sql("UPDATE crm.big SET name = 'y' WHERE id = 3")
        .await
        .unwrap();
    let report = job.run(&lake, &options, &|_| {}).await.unwrap();
    assert_eq!(report.counts.delivered, 1, "{:?}", report.counts);
    let sent = recorder.take();
    assert_eq!(sent[0].event["traits"]["was"], json!("n3!"));
    assert_eq!(sent[0].event["traits"]["name"], json!("y"));
}
