//! The scheduler with a controllable clock: a window runs when it is over and its upstreams
//! succeeded for it; catch-up keeps each window's label; a failed upstream holds its readers
//! back until a retry succeeds; freshness says who is behind and why.

use anyhow::Result;
use chrono::{DateTime, TimeZone, Utc};
use tideway_models::run::{ModelRun, Status};
use tideway_models::schedule::{Freshness, freshness, recent_failures, tick};

use crate::run::{add_events, compiled, count, day, lake};

const HOURLY: &str = "/* tideway\nmaterialized = \"incremental\"\ntime_column = \"hour\"\ninterval = \"1h\"\n[tests]\nuser_id = [\"not_null\"]\n*/\nselect date_trunc('hour', ts) as hour, user_id, count(*) as clicks\nfrom staging.clicks group by 1, 2";
const VIEW: &str = "/* tideway\nmaterialized = \"view\"\n*/\nselect user_id, ts from events.clicks";
const DAILY: &str = "/* tideway\nmaterialized = \"table\"\ninterval = \"1d\"\n*/\nselect date_trunc('day', hour) as day, sum(clicks) as clicks\nfrom marts.hourly group by 1";

fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, d, h, m, 0).unwrap()
}

fn of<'a>(f: &'a [Freshness], model: &str) -> &'a Freshness {
    f.iter()
        .find(|m| m.model == model)
        .expect("the model is listed")
}

fn windows(runs: &[ModelRun], model: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>, Status)> {
    runs.iter()
        .filter(|r| r.model == model)
        .map(|r| (r.window_start, r.window_end, r.status))
        .collect()
}

#[tokio::test]
async fn windows_run_when_over_and_when_their_upstreams_succeeded() -> Result<()> {
    let (_dir, lake) = lake().await?;
    lake.sql("CREATE TABLE events.clicks (user_id VARCHAR, ts TIMESTAMP, amount BIGINT)")
        .await?;
    add_events(&lake, 1, &["a", "b", "c"]).await?;
    let c = compiled(
        &lake,
        &[
            ("models/staging/clicks.sql", VIEW),
            ("models/marts/hourly.sql", HOURLY),
            ("models/marts/daily.sql", DAILY),
        ],
    )
    .await?;

    // Nothing ran yet: both never built, the daily one waits on the hourly one; the view over
    // a lake table is always current.
    let f = freshness(&lake, &c, at(2, 0, 30)).await?;
    assert_eq!(of(&f, "marts.hourly").windows_behind, -1);
    assert_eq!(
        of(&f, "marts.daily").waiting_on,
        vec!["marts.hourly".to_string()]
    );
    assert_eq!(of(&f, "staging.clicks").windows_behind, 0);
    assert!(of(&f, "marts.hourly").waiting_on.is_empty());

    // 00:30 on day 2: the hourly model's first run covers history up to 00:00; then the
    // daily window [day 1, day 2) is over and its upstream has succeeded for it.
    let runs = tick(&lake, &c, at(2, 0, 30)).await?;
    assert_eq!(
        windows(&runs, "marts.hourly"),
        vec![(DateTime::<Utc>::UNIX_EPOCH, day(2), Status::Success)]
    );
    assert_eq!(
        windows(&runs, "marts.daily"),
        vec![(day(1), day(2), Status::Success)]
    );
    // Nothing is due again in the same hour.
    assert!(tick(&lake, &c, at(2, 0, 45)).await?.is_empty());
    let f = freshness(&lake, &c, at(2, 0, 45)).await?;
    assert!(
        f.iter()
            .all(|m| m.windows_behind == 0 && m.waiting_on.is_empty()),
        "{f:?}"
    );

    // Down until 03:10: the hourly model catches up one labelled window per hour; the daily
    // model's next window is not over.
    add_events(&lake, 2, &["a", "b", "c", "d"]).await?;
    let f = freshness(&lake, &c, at(2, 3, 10)).await?;
    assert_eq!(of(&f, "marts.hourly").windows_behind, 3);
    let runs = tick(&lake, &c, at(2, 3, 10)).await?;
    assert_eq!(
        windows(&runs, "marts.hourly"),
        (0..3)
            .map(|h| (at(2, h, 0), at(2, h + 1, 0), Status::Success))
            .collect::<Vec<_>>()
    );
    assert!(windows(&runs, "marts.daily").is_empty());
    assert_eq!(count(&lake, "marts.hourly").await?, 6);

    // A row that fails the hourly model's test: the hourly run fails, the daily one waits.
    lake.sql("INSERT INTO events.clicks VALUES (NULL, TIMESTAMP '2025-06-02 05:10:00', 1)")
        .await?;
    let runs = tick(&lake, &c, at(3, 0, 10)).await?;
    let hourly = windows(&runs, "marts.hourly");
    assert_eq!(
        hourly.last().map(|w| w.2),
        Some(Status::Failed),
        "{hourly:?}"
    );
    assert!(windows(&runs, "marts.daily").is_empty(), "{runs:?}");
    let f = freshness(&lake, &c, at(3, 0, 20)).await?;
    assert!(of(&f, "marts.hourly").failed);
    assert_eq!(
        of(&f, "marts.daily").waiting_on,
        vec!["marts.hourly".to_string()]
    );
    assert_eq!(of(&f, "marts.daily").windows_behind, 1);
    let failures = recent_failures(&lake, 5).await?;
    assert_eq!(failures[0]["model"], "marts.hourly");
    assert!(failures[0]["error"].contains("data test"), "{failures:?}");

    // Still failing: retried each tick, daily still waits.
    let runs = tick(&lake, &c, at(3, 0, 30)).await?;
    assert_eq!(
        windows(&runs, "marts.hourly").last().map(|w| w.2),
        Some(Status::Failed)
    );
    assert!(windows(&runs, "marts.daily").is_empty());

    // The source is fixed: the retry replaces everything since the last success in one
    // batch, and the daily window for day 2 runs after it.
    lake.sql("DELETE FROM events.clicks WHERE user_id IS NULL")
        .await?;
    let runs = tick(&lake, &c, at(3, 0, 40)).await?;
    assert_eq!(
        windows(&runs, "marts.hourly"),
        vec![(at(2, 3, 0), day(3), Status::Success)]
    );
    assert_eq!(
        windows(&runs, "marts.daily"),
        vec![(day(2), day(3), Status::Success)]
    );
    let f = freshness(&lake, &c, at(3, 0, 50)).await?;
    assert!(
        f.iter().all(|m| m.windows_behind == 0 && !m.failed),
        "{f:?}"
    );
    // Day 1's and day 2's clicks, each once.
    let total = crate::run::query(&lake, "SELECT sum(clicks) AS n FROM marts.daily").await?;
    assert!(total.contains("| 7 "), "{total}");
    Ok(())
}
