//! Kustomer runs against the in-process fake of its API: full, incremental, faults, crashes,
//! the search cap.

use std::collections::BTreeMap;

use serde_json::Value;
use tideway_extract::fake::{FakeKustomer, Faults, TOKEN};
use tideway_extract::{ExtractError, Extractor, RunOptions, RunReport, SourceConfig};
use tideway_lake::{Lake, SqlOutput};

fn source(fake: &FakeKustomer, extra: &str) -> SourceConfig {
    let text = format!(
        "type = \"kustomer\"\napi_key = \"${{KUSTOMER_API_KEY}}\"\nbase_url = \"{}\"\nrequests_per_minute = 1000000\n{extra}",
        fake.base_url
    );
    let env = |v: &str| (v == "KUSTOMER_API_KEY").then(|| TOKEN.to_string());
    SourceConfig::parse(&text, "sources/kustomer.toml", &env).unwrap()
}

const RESOURCES: &str =
    "resources = [\"customers\", \"conversations\", \"messages\", \"notes\", \"users\"]\n";

async fn new_lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), Default::default())
        .await
        .unwrap();
    (dir, lake)
}

async fn run(
    lake: &Lake,
    source: SourceConfig,
    options: RunOptions,
) -> Result<RunReport, ExtractError> {
    Extractor::new(lake.clone(), source, options)?.run().await
}

async fn query(lake: &Lake, sql: &str) -> Vec<serde_json::Map<String, Value>> {
    match lake.sql(sql).await.unwrap() {
        SqlOutput::Rows(r) => {
            let mut w = deltalake::arrow::json::ArrayWriter::new(Vec::new());
            for b in &r.batches {
                w.write(b).unwrap();
            }
            w.finish().unwrap();
            let bytes = w.into_inner();
            if bytes.is_empty() {
                Vec::new()
            } else {
                serde_json::from_slice(&bytes).unwrap()
            }
        }
        other => panic!("{other:?}"),
    }
}

/// Every table of the source: its rows' ids and a fingerprint of chosen columns, sorted.
async fn snapshot(lake: &Lake) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for table in lake.tables().await.unwrap() {
        if table.schema() != "kustomer" {
            continue;
        }
        let schema = lake.schema(&table).await.unwrap();
        let columns: Vec<String> = [
            "_tideway_id",
            "_tideway_root_id",
            "rev",
            "status",
            "value",
            "email",
            "updated_at",
            "body",
        ]
        .iter()
        .filter(|c| schema.field_with_name(c).is_ok())
        .map(|c| format!("CAST(\"{c}\" AS VARCHAR) AS \"{c}\""))
        .collect();
        let rows = query(
            lake,
            &format!(
                "SELECT {} FROM {table} ORDER BY _tideway_id",
                columns.join(", ")
            ),
        )
        .await;
        out.insert(
            table.to_string(),
            rows.iter()
                .map(|r| Value::Object(r.clone()).to_string())
                .collect(),
        );
    }
    out
}

/// Two snapshots are equal; else the first differences, readably.
fn assert_same(a: &BTreeMap<String, Vec<String>>, b: &BTreeMap<String, Vec<String>>) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (table, rows) in a {
        let other = &b[table];
        if rows != other {
            let only_a: Vec<_> = rows.iter().filter(|r| !other.contains(r)).take(3).collect();
            let only_b: Vec<_> = other.iter().filter(|r| !rows.contains(r)).take(3).collect();
            panic!(
                "{table}: {} rows vs {} expected\nonly here: {only_a:#?}\nonly expected: {only_b:#?}",
                rows.len(),
                other.len()
            );
        }
    }
}

fn table_rows(report: &RunReport, resource: &str) -> u64 {
    report
        .resources
        .iter()
        .find(|r| r.resource == resource)
        .map_or(0, |r| r.records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_then_incremental_reads_only_changes_and_equals_a_fresh_load() {
    let fake = FakeKustomer::start(300, 200, 7).await.unwrap();
    let (_d, lake) = new_lake().await;
    let first = run(&lake, source(&fake, RESOURCES), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(table_rows(&first, "customers"), 300);
    assert_eq!(table_rows(&first, "conversations"), 200);
    assert_eq!(table_rows(&first, "users"), 5);
    let messages: usize = fake
        .store
        .lock()
        .unwrap()
        .messages
        .values()
        .map(Vec::len)
        .sum();
    assert_eq!(table_rows(&first, "messages") as usize, messages);
    let counts = query(&lake, "SELECT count(*) AS n FROM kustomer.customers").await;
    assert_eq!(counts[0]["n"], 300);

    // Day 2: 10 updated and 5 new of each; lists shrink and grow.
    fake.advance(10, 5, 8);
    let before = fake.requests.load(std::sync::atomic::Ordering::Relaxed);
    let second = run(&lake, source(&fake, RESOURCES), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(table_rows(&second, "customers"), 15, "{second:#?}");
    assert_eq!(table_rows(&second, "conversations"), 15);
    assert_eq!(second.resources[0].mode, "incremental");
    // Only the changed conversations' messages are read again.
    assert_eq!(
        second
            .resources
            .iter()
            .find(|r| r.resource == "messages")
            .unwrap()
            .pages,
        15
    );
    let requests = fake.requests.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(requests < 60, "an incremental run made {requests} requests");

    // The incremental result is exactly what a fresh load of the day-2 data gives.
    let (_d2, fresh) = new_lake().await;
    run(&fresh, source(&fake, RESOURCES), RunOptions::default())
        .await
        .unwrap();
    let (a, b) = (snapshot(&lake).await, snapshot(&fresh).await);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_same(&a, &b);
    assert!(a.contains_key("kustomer.customers__emails"));
    // A field that is text in some records and a number in others: both kept.
    let conversations = lake
        .schema(&"kustomer.conversations".parse().unwrap())
        .await
        .unwrap();
    for column in [
        "custom__order_number_str",
        "custom__order_number_str__v_bigint",
        "customer_id",
    ] {
        assert!(
            conversations.field_with_name(column).is_ok(),
            "{column}: {conversations:?}"
        );
    }

    // A third run with nothing new reads nothing and commits nothing.
    let third = run(&lake, source(&fake, RESOURCES), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(table_rows(&third, "customers"), 0);
    assert_eq!(third.resources[0].commits, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_429s_and_500s_are_survived_with_nothing_lost() {
    let fake = FakeKustomer::start(250, 120, 11).await.unwrap();
    let (_d, clean) = new_lake().await;
    run(&clean, source(&fake, RESOURCES), RunOptions::default())
        .await
        .unwrap();
    fake.set_faults(Faults {
        every_429: Some(5),
        every_500: Some(7),
        dead_after: None,
    });
    let (_d2, faulty) = new_lake().await;
    let report = run(&faulty, source(&fake, RESOURCES), RunOptions::default())
        .await
        .unwrap();
    assert!(report.rate_limited > 0 && report.retried > 0, "{report:#?}");
    assert_same(&snapshot(&clean).await, &snapshot(&faulty).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_pages_then_a_rerun_gives_the_rows_of_an_uninterrupted_run() {
    let fake = FakeKustomer::start(400, 150, 3).await.unwrap();
    let (_d, clean) = new_lake().await;
    let small = RunOptions {
        flush_records: 60,
        ..RunOptions::default()
    };
    let report = run(&clean, source(&fake, RESOURCES), small.clone())
        .await
        .unwrap();
    assert_eq!(table_rows(&report, "notes"), 134);

    // The API dies part-way through the customers: the run stops after some commits.
    let (_d2, crashed) = new_lake().await;
    let before = fake.requests.load(std::sync::atomic::Ordering::Relaxed);
    fake.set_faults(Faults {
        // The first page of customers, the notes of its 100 customers, its commit, then half
        // of the next batch's notes.
        dead_after: Some(before + 150),
        ..Faults::default()
    });
    let mut src = source(&fake, RESOURCES);
    src.rest_mut().unwrap().max_attempts = 2;
    let err = run(&crashed, src, small.clone()).await.unwrap_err();
    assert!(
        matches!(err, ExtractError::RetriesExhausted { .. }),
        "{err}"
    );
    let partial = query(&crashed, "SELECT count(*) AS n FROM kustomer.customers").await;
    let n = partial[0]["n"].as_u64().unwrap();
    assert!(n > 0 && n < 400, "{n} customers after the crash");

    fake.set_faults(Faults::default());
    let rerun = run(&crashed, source(&fake, RESOURCES), small)
        .await
        .unwrap();
    assert_eq!(table_rows(&rerun, "customers"), 400 - n, "{rerun:#?}");
    assert_same(&snapshot(&clean).await, &snapshot(&crashed).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_cap_restarts_at_the_last_timestamp_with_no_gap_and_no_duplicate() {
    // 12,000 customers, 7 per updatedAt: the 10,000th falls inside a tie.
    let fake = FakeKustomer::start(12_000, 0, 5).await.unwrap();
    let (_d, lake) = new_lake().await;
    let report = run(
        &lake,
        source(&fake, "resources = [\"customers\"]\npage_size = 1000\n"),
        RunOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(table_rows(&report, "customers"), 12_000, "{report:#?}");
    let rows = query(
        &lake,
        "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM kustomer.customers",
    )
    .await;
    assert_eq!(rows[0]["n"], 12_000);
    assert_eq!(rows[0]["ids"], 12_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_names_the_source_and_what_to_check() {
    let fake = FakeKustomer::start(3, 0, 1).await.unwrap();
    let text = format!(
        "type = \"kustomer\"\napi_key = \"${{KUSTOMER_API_KEY}}\"\nbase_url = \"{}\"\n",
        fake.base_url
    );
    let env = |_: &str| Some("wrong".to_string());
    let source = SourceConfig::parse(&text, "sources/kustomer.toml", &env).unwrap();
    let (_d, lake) = new_lake().await;
    let err = run(&lake, source, RunOptions::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("kustomer: the API at http://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("answered 401: the credentials were refused; check the token (or the Kustomer `api_key`)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_is_an_error_after_the_retry_budget() {
    let text = "type = \"kustomer\"\napi_key = \"${K}\"\nbase_url = \"http://127.0.0.1:9/v1\"\nresources = [\"users\"]\n";
    let env = |_: &str| Some("k".to_string());
    let mut source = SourceConfig::parse(text, "sources/kustomer.toml", &env).unwrap();
    source.rest_mut().unwrap().max_attempts = 2;
    let (_d, lake) = new_lake().await;
    let err = run(&lake, source, RunOptions::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("kustomer: GET http://127.0.0.1:9/v1/users?pageSize=100 failed 2 times, last: cannot connect"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_reads_everything_again_and_equals_a_fresh_load() {
    let fake = FakeKustomer::start(150, 60, 21).await.unwrap();
    let (_d, lake) = new_lake().await;
    run(&lake, source(&fake, RESOURCES), RunOptions::default())
        .await
        .unwrap();
    fake.advance(5, 3, 4);
    let refresh = RunOptions {
        full_refresh: true,
        ..RunOptions::default()
    };
    let report = run(&lake, source(&fake, RESOURCES), refresh).await.unwrap();
    assert_eq!(report.resources[0].mode, "full");
    assert_eq!(table_rows(&report, "customers"), 153);
    let (_d2, fresh) = new_lake().await;
    run(&fresh, source(&fake, RESOURCES), RunOptions::default())
        .await
        .unwrap();
    assert_same(&snapshot(&lake).await, &snapshot(&fresh).await);
}
