//! Runs against a real lake, with a controllable clock: materializations, interval windows
//! (labels, catch-up, backfill), upstream gating, data tests, selectors, history.

use std::path::PathBuf;

use anyhow::Result;
use chrono::{DateTime, TimeZone, Utc};
use tideway_lake::arrow::array::Int64Array;
use tideway_lake::arrow::util::pretty::pretty_format_batches;
use tideway_lake::{Lake, SqlOutput, TableName};
use tideway_models::compile::compile;
use tideway_models::run::{self, ModelRun, RunOptions, Status};
use tideway_models::{Compilation, Models};

pub async fn lake() -> Result<(tempfile::TempDir, Lake)> {
    let dir = tempfile::tempdir()?;
    let lake = Lake::open(
        &dir.path().join("lake").display().to_string(),
        Default::default(),
    )
    .await?;
    Ok((dir, lake))
}

pub async fn compiled(lake: &Lake, files: &[(&str, &str)]) -> Result<Compilation> {
    let sources = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
    let (models, errors) = Models::from_sources(sources);
    let c = compile(models, errors, Some(lake)).await?;
    let shown: Vec<String> = c.diagnostics.iter().map(ToString::to_string).collect();
    assert!(c.is_ok(), "{}", shown.join("\n"));
    Ok(c)
}

pub async fn query(lake: &Lake, sql: &str) -> Result<String> {
    match lake.sql(sql).await? {
        SqlOutput::Rows(r) => Ok(pretty_format_batches(&r.batches)?.to_string()),
        other => anyhow::bail!("not rows: {other:?}"),
    }
}

pub async fn count(lake: &Lake, table: &str) -> Result<i64> {
    match lake
        .sql(&format!("SELECT count(*) AS n FROM {table}"))
        .await?
    {
        SqlOutput::Rows(r) => Ok(r.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("count is Int64")
            .value(0)),
        other => anyhow::bail!("not rows: {other:?}"),
    }
}

pub fn day(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, d, 0, 0, 0).unwrap()
}

fn at(now: DateTime<Utc>) -> RunOptions {
    RunOptions {
        now,
        ..RunOptions::default()
    }
}

pub async fn add_events(lake: &Lake, d: u32, users: &[&str]) -> Result<()> {
    let values: Vec<String> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            format!(
                "('{u}', TIMESTAMP '2025-06-{d:02} {:02}:00:00', {})",
                i % 24,
                i + 1
            )
        })
        .collect();
    lake.sql(&format!(
        "INSERT INTO events.clicks (user_id, ts, amount) VALUES {}",
        values.join(", ")
    ))
    .await?;
    Ok(())
}

const DAILY: &str = "/* tideway\nmaterialized = \"incremental\"\ntime_column = \"day\"\ninterval = \"1d\"\n*/\nselect date_trunc('day', ts) as day, user_id, count(*) as clicks, sum(amount) as amount\nfrom events.clicks group by 1, 2";

fn windows(runs: &[ModelRun], model: &str) -> Vec<(String, String, Status, u64)> {
    runs.iter()
        .filter(|r| r.model == model)
        .map(|r| {
            (
                r.window_start.format("%m-%d").to_string(),
                r.window_end.format("%m-%d").to_string(),
                r.status,
                r.rows,
            )
        })
        .collect()
}

#[tokio::test]
async fn interval_windows_are_labelled_caught_up_and_backfilled() -> Result<()> {
    let (_dir, lake) = lake().await?;
    lake.sql("CREATE TABLE events.clicks (user_id VARCHAR, ts TIMESTAMP, amount BIGINT)")
        .await?;
    for d in 1..=3 {
        add_events(&lake, d, &["a", "b", "a"]).await?;
    }
    let c = compiled(&lake, &[("models/daily/clicks.sql", DAILY)]).await?;
    // First run, on day 4 at 06:00: all of history up to the last window that is over.
    let runs = run::run(&lake, &c, &at(day(4) + chrono::Duration::hours(6)), |_| {}).await?;
    assert_eq!(
        windows(&runs, "daily.clicks"),
        [("01-01".into(), "06-04".into(), Status::Success, 6)]
    );
    assert_eq!(count(&lake, "daily.clicks").await?, 6);
    // Later the same day: the day-4 window is not over, so nothing runs.
    add_events(&lake, 4, &["c"]).await?;
    let runs = run::run(&lake, &c, &at(day(4) + chrono::Duration::hours(23)), |_| {}).await?;
    assert_eq!(runs[0].status, Status::UpToDate);
    assert_eq!(count(&lake, "daily.clicks").await?, 6);
    // Down for two days: on day 7 the missed windows run one by one, each with its label, and
    // only those windows are computed (a late change to day 2 is not picked up).
    add_events(&lake, 5, &["d", "d"]).await?;
    add_events(&lake, 6, &["e"]).await?;
    add_events(&lake, 2, &["late"]).await?;
    let runs = run::run(&lake, &c, &at(day(7)), |_| {}).await?;
    assert!(runs.iter().all(|r| r.error.is_none()), "{runs:#?}");
    assert_eq!(
        windows(&runs, "daily.clicks"),
        [
            ("06-04".into(), "06-05".into(), Status::Success, 1),
            ("06-05".into(), "06-06".into(), Status::Success, 1),
            ("06-06".into(), "06-07".into(), Status::Success, 1),
        ]
    );
    assert_eq!(
        count(&lake, "(SELECT * FROM daily.clicks WHERE user_id = 'late')").await?,
        0
    );
    // A backfill of day 2 recomputes that window only; running it twice stores it once.
    for _ in 0..2 {
        let backfill = RunOptions {
            window: Some((day(2), day(3))),
            ..at(day(7))
        };
        let runs = run::run(&lake, &c, &backfill, |_| {}).await?;
        assert_eq!(
            windows(&runs, "daily.clicks"),
            [("06-02".into(), "06-03".into(), Status::Success, 3)]
        );
    }
    assert_eq!(
        count(&lake, "(SELECT * FROM daily.clicks WHERE user_id = 'late')").await?,
        1
    );
    assert_eq!(count(&lake, "daily.clicks").await?, 10);
    // The backfill did not move the model back: the next due window is day 7.
    let runs = run::run(&lake, &c, &at(day(8)), |_| {}).await?;
    assert_eq!(
        windows(&runs, "daily.clicks"),
        [("06-07".into(), "06-08".into(), Status::Success, 0)]
    );
    // Every window is in the history, with its label.
    let history = query(
        &lake,
        "SELECT window_start, window_end, status, rows FROM _tideway.model_runs ORDER BY finished_at, window_start",
    )
    .await?;
    assert!(
        history.contains("| 2025-06-05T00:00:00Z | 2025-06-06T00:00:00Z | success    | 1    |"),
        "{history}"
    );
    assert!(history.contains("up_to_date"), "{history}");
    Ok(())
}

#[tokio::test]
async fn a_failed_model_skips_what_reads_it_and_failing_tests_show_rows() -> Result<()> {
    let (_dir, lake) = lake().await?;
    lake.sql("CREATE TABLE crm.people (id BIGINT, email VARCHAR, plan VARCHAR)")
        .await?;
    lake.sql("INSERT INTO crm.people VALUES (1, 'a@x.com', 'pro'), (2, NULL, 'free'), (3, 'c@x.com', 'gold'), (3, 'd@x.com', 'pro')")
        .await?;
    let c = compiled(
        &lake,
        &[
            (
                "models/marts/people.sql",
                "/* tideway\n[tests]\nemail = [\"not_null\"]\nid = [\"unique\"]\nplan = [{ accepted_values = [\"free\", \"pro\"] }]\n*/\nselect id, email, plan from crm.people",
            ),
            ("models/marts/downstream.sql", "select id from marts.people"),
            ("models/marts/independent.sql", "select count(*) as n from crm.people"),
        ],
    )
    .await?;
    let runs = run::run(&lake, &c, &at(day(2)), |_| {}).await?;
    let people = runs.iter().find(|r| r.model == "marts.people").unwrap();
    assert_eq!(people.status, Status::Failed);
    let tests: Vec<(&str, u64)> = people
        .failed_tests
        .iter()
        .map(|t| (t.test.as_str(), t.failing_rows))
        .collect();
    assert_eq!(
        tests,
        [
            ("not_null(email)", 1),
            ("unique(id)", 1),
            ("accepted_values(plan)", 1)
        ]
    );
    assert!(
        people.failed_tests[2].sample.contains("gold"),
        "{}",
        people.failed_tests[2].sample
    );
    let downstream = runs.iter().find(|r| r.model == "marts.downstream").unwrap();
    assert_eq!(downstream.status, Status::Skipped);
    assert!(
        downstream
            .error
            .as_deref()
            .unwrap()
            .contains("marts.people failed")
    );
    let independent = runs
        .iter()
        .find(|r| r.model == "marts.independent")
        .unwrap();
    assert_eq!(independent.status, Status::Success);
    Ok(())
}

#[tokio::test]
async fn tables_views_and_merges() -> Result<()> {
    let (_dir, lake) = lake().await?;
    lake.sql("CREATE TABLE crm.people (id BIGINT, email VARCHAR, plan VARCHAR)")
        .await?;
    lake.sql("INSERT INTO crm.people VALUES (1, 'a@x.com', 'pro'), (2, 'b@y.com', 'free')")
        .await?;
    let files = [
        (
            "models/staging/people.sql",
            "/* tideway\nmaterialized = \"view\"\n*/\nselect id, lower(email) as email, plan from crm.people",
        ),
        (
            "models/marts/domains.sql",
            "select split_part(p.email, '@', 2) as domain, count(*) as people from staging.people p group by 1",
        ),
        (
            "models/marts/plans.sql",
            "{{ config(materialized='incremental', unique_key='id') }}\nselect id, plan, email from {{ ref('people') }}\n{% if is_incremental() %}where id > (select coalesce(max(id), 0) - 1 from {{ this }}){% endif %}",
        ),
    ];
    let c = compiled(&lake, &files).await?;
    let runs = run::run(&lake, &c, &at(day(2)), |_| {}).await?;
    assert!(
        runs.iter().all(|r| r.status == Status::Success),
        "{runs:#?}"
    );
    // The view is not stored; the model that reads it ran its query.
    assert!(
        lake.load(&"staging.people".parse::<TableName>()?)
            .await?
            .is_none()
    );
    assert_eq!(count(&lake, "marts.domains").await?, 2);
    // A table is replaced; an incremental model merges by its key.
    lake.sql("INSERT INTO crm.people VALUES (3, 'c@y.com', 'pro')")
        .await?;
    lake.sql("UPDATE crm.people SET plan = 'enterprise' WHERE id = 2")
        .await?;
    let runs = run::run(&lake, &c, &at(day(3)), |_| {}).await?;
    assert!(
        runs.iter().all(|r| r.status == Status::Success),
        "{runs:#?}"
    );
    assert_eq!(
        query(
            &lake,
            "SELECT domain, people FROM marts.domains ORDER BY domain"
        )
        .await?,
        "+--------+--------+\n| domain | people |\n+--------+--------+\n| x.com  | 1      |\n| y.com  | 2      |\n+--------+--------+"
    );
    assert_eq!(
        query(&lake, "SELECT id, plan FROM marts.plans ORDER BY id").await?,
        "+----+------------+\n| id | plan       |\n+----+------------+\n| 1  | pro        |\n| 2  | enterprise |\n| 3  | pro        |\n+----+------------+"
    );
    let plans = runs.iter().find(|r| r.model == "marts.plans").unwrap();
    assert_eq!(
        plans.rows, 2,
        "is_incremental() limited the query to ids 2 and 3"
    );
    Ok(())
}

#[tokio::test]
async fn selectors_pick_models_and_their_neighbours() -> Result<()> {
    let (_dir, lake) = lake().await?;
    let c = compiled(
        &lake,
        &[
            ("models/a/root.sql", "select 1 as x"),
            ("models/b/mid.sql", "select x from a.root"),
            ("models/b/leaf.sql", "select x from b.mid"),
            ("models/c/other.sql", "select 2 as y"),
        ],
    )
    .await?;
    let names = |sel: &[&str]| -> Result<Vec<String>> {
        let sel: Vec<String> = sel.iter().map(|s| s.to_string()).collect();
        Ok(run::select(&c, &sel)?
            .into_iter()
            .map(|i| c.models.models[i].name.to_string())
            .collect())
    };
    assert_eq!(names(&["mid"])?, ["b.mid"]);
    assert_eq!(names(&["+b.mid"])?, ["a.root", "b.mid"]);
    assert_eq!(names(&["mid+"])?, ["b.mid", "b.leaf"]);
    let mut some = names(&["b.*", "other"])?;
    some.sort();
    assert_eq!(some, ["b.leaf", "b.mid", "c.other"]);
    assert_eq!(names(&["+leaf"])?.len(), 3);
    let e = run::select(&c, &["leef".to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown model `leef`") && e.contains("did you mean `b.leaf`"),
        "{e}"
    );
    Ok(())
}

/// Distinct counts are run through a faster rewrite (one join per distinct column): the rows
/// are the ones the query as written gives, NULL group keys and NULL values included.
#[tokio::test]
async fn distinct_counts_give_what_the_query_as_written_gives() -> Result<()> {
    let (_dir, lake) = lake().await?;
    lake.sql("CREATE TABLE raw.t (g VARCHAR, k BIGINT, a VARCHAR, b BIGINT)")
        .await?;
    lake.sql(
        "INSERT INTO raw.t VALUES ('x', 1, 'p', 1), ('x', 1, 'p', 2), ('x', 2, 'q', NULL), \
         (NULL, 1, 'p', 1), (NULL, 1, NULL, 1), ('y', NULL, NULL, NULL), ('y', NULL, 'r', 5), ('z', 3, 's', -1)",
    )
    .await?;
    let model_sql = "select g, k, count(*) as n, count(distinct a) as da, count(distinct b) as db, \
                 count(distinct a) + 10 as da10, sum(b) as total\nfrom raw.t t\nwhere coalesce(b, 0) >= 0\ngroup by 1, t.k";
    let c = compiled(&lake, &[("models/marts/m.sql", model_sql)]).await?;
    let runs = run::run(&lake, &c, &RunOptions::default(), |_| {}).await?;
    assert!(runs.iter().all(|r| r.status == Status::Success), "{runs:?}");
    let order = "ORDER BY g NULLS FIRST, k NULLS FIRST";
    let built = query(&lake, &format!("SELECT * FROM marts.m {order}")).await?;
    let direct = query(&lake, &format!("SELECT * FROM ({model_sql}) AS q {order}")).await?;
    assert_eq!(built, direct);
    assert!(
        built.contains("| x | 1 | 2 | 1  | 2  | 11   | 3     |"),
        "{built}"
    );
    // The rewrite applied (the join is there), and leaves a plain query alone.
    let mut statement = tideway_lake::datafusion::sql::sqlparser::parser::Parser::parse_sql(
        &tideway_lake::datafusion::sql::sqlparser::dialect::GenericDialect {},
        model_sql,
    )?
    .remove(0);
    assert!(tideway_models::dialect::rewrite_distinct_counts(
        &mut statement
    ));
    assert!(
        statement.to_string().contains("IS NOT DISTINCT FROM"),
        "{statement}"
    );
    let mut plain = tideway_lake::datafusion::sql::sqlparser::parser::Parser::parse_sql(
        &tideway_lake::datafusion::sql::sqlparser::dialect::GenericDialect {},
        "select g, count(*) from raw.t group by g having count(distinct a) > 1",
    )?
    .remove(0);
    assert!(!tideway_models::dialect::rewrite_distinct_counts(
        &mut plain
    ));
    Ok(())
}
