//! `tideway bench profile-api`: the Profile API of `tideway serve` under a steady request
//! rate on loopback, next to an empty handler at the same rate (the HTTP stack alone).
//!
//! The lake is made first: `bench.contacts`, one row per person with a `user_id`, an e-mail
//! and an anonymous id, stitched by a real unify run into profiles, plus a trait table
//! `profiles.bench_scores` (a churn score and a plan per profile) that the API answers as
//! traits. Requests look up random people by e-mail, as a call-center portal would.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use tideway_lake::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use tideway_lake::arrow::datatypes::{DataType, Field, Schema};
use tideway_lake::{Lake, SqlOutput, TableName};

use crate::bench_load::{self as load, Run};

pub struct Options {
    pub profiles: usize,
    pub rate: f64,
    pub seconds: f64,
    pub connections: usize,
}

const TOKEN: &str = "bench-admin-token";

fn email(i: usize) -> String {
    format!("person{i}@example.com")
}

fn text(values: impl Iterator<Item = String>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// `bench.contacts` and the profiles unify makes of it.
async fn make_lake(lake: &Lake, people: usize) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, false),
        Field::new("anonymous_id", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
    ]));
    let plans = ["free", "pro", "enterprise"];
    let mut batches = Vec::new();
    for start in (0..people).step_by(100_000) {
        let range = start..(start + 100_000).min(people);
        batches.push(RecordBatch::try_new(
            schema.clone(),
            vec![
                text(range.clone().map(|i| format!("c{i}"))),
                text(range.clone().map(|i| format!("u{i}"))),
                text(range.clone().map(email)),
                text(range.clone().map(|i| format!("anon-{i:08x}"))),
                text(range.clone().map(|i| plans[i % 3].to_string())),
                Arc::new(
                    range
                        .map(|i| (i * 7919 % 1000) as f64 / 1000.0)
                        .collect::<Float64Array>(),
                ),
            ],
        )?);
    }
    lake.append(&TableName::new("bench", "contacts")?, batches)
        .await?;
    let config = tideway_unify::config::UnifyConfig::parse(
        "[unify]\ndefaults = false\n[[unify.sources]]\ntable = \"bench.contacts\"\n\
         ids = { user_id = \"user_id\", email = \"email\", anonymous_id = \"anonymous_id\" }\nkey = \"id\"\n",
        "tideway.toml",
    )?;
    let report = tideway_unify::run::run(lake, &config, &[], &()).await?;
    ensure!(
        report.profiles as usize == people,
        "unify made {} profiles of {people} people",
        report.profiles
    );
    let SqlOutput::Rows(rows) = lake
        .sql(
            "SELECT m.profile_id, c.plan, c.score AS churn_probability \
             FROM bench.contacts c JOIN profiles.identity_map m \
             ON m.id_type = 'user_id' AND m.id_value = c.user_id",
        )
        .await?
    else {
        anyhow::bail!("the trait query gave no rows");
    };
    lake.overwrite(&TableName::new("profiles", "bench_scores")?, rows.batches)
        .await?;
    Ok(())
}

/// Looks up random people (a fixed sequence) by e-mail at `base`.
async fn lookups(base: String, people: usize, o: &Options, total: usize) -> Result<Run> {
    load::drive(total, o.connections, Some(o.rate), move |client, i| {
        // A fixed pseudo-random walk over the people (no shared state between connections).
        let person = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % people as u64;
        let request = client
            .get(format!(
                "{base}/v1/profiles/email:{}",
                email(person as usize)
            ))
            .bearer_auth(TOKEN);
        (request, 1)
    })
    .await
}

fn line(name: &str, run: &Run) {
    println!(
        "  {name:<14} {:>6.0} requests/s  from due: p50 {:>7.2?} p99 {:>7.2?} p99.9 {:>7.2?}  \
         from send: p50 {:>7.2?} p99 {:>7.2?} p99.9 {:>7.2?}  max {:>7.2?}  failed {}",
        run.rate(),
        run.percentile(0.5),
        run.percentile(0.99),
        run.percentile(0.999),
        run.service_percentile(0.5),
        run.service_percentile(0.99),
        run.service_percentile(0.999),
        run.percentile(1.0),
        run.failed
    );
}

pub async fn run(o: Options, dir: &Path) -> Result<()> {
    let lake = Lake::open(&dir.join("lake").display().to_string(), Default::default()).await?;
    let made = Instant::now();
    make_lake(&lake, o.profiles).await?;
    println!(
        "profile API bench: {} profiles (3 identifiers and 2 trait tables each) made in {:.1?}; \
         {:.0} requests/s for {:.0} s over {} connections",
        o.profiles,
        made.elapsed(),
        o.rate,
        o.seconds,
        o.connections
    );
    let total = (o.rate * o.seconds) as usize;

    // The HTTP stack alone: an empty handler on the same route shape, same client, same rate.
    let empty = axum::Router::new().route(
        "/v1/profiles/{key}",
        axum::routing::get(|| async { "{\"profile_id\":\"\"}" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let empty_base = format!("http://{}", listener.local_addr()?);
    let empty_server = tokio::spawn(async move { axum::serve(listener, empty).await });
    let empty_run = lookups(empty_base, o.profiles, &o, total).await?;
    empty_server.abort();

    let loaded = Instant::now();
    let (api, refresh) =
        crate::profile_api::routes(lake.clone(), TOKEN.to_string(), Duration::from_secs(3600))
            .await?;
    let index_seconds = loaded.elapsed();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, api).await });
    // Every person answers with their profile (checked once before the timed run).
    let check: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{base}/v1/profiles/email:{}",
            email(o.profiles / 2)
        ))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(
        check["traits"]["bench_scores"]["churn_probability"].is_number(),
        "the Profile API did not answer the trait table: {check}"
    );
    let api_run = lookups(base, o.profiles, &o, total).await?;
    server.abort();
    refresh.abort();

    println!("  index built from the lake in {index_seconds:.2?}");
    line("empty handler", &empty_run);
    line("Profile API", &api_run);
    println!(
        "  p99 from due: Profile API {:.2?} vs the empty handler's {:.2?}; from send {:.2?} vs {:.2?} \
         (target under 5 ms at 10,000 requests/s)",
        api_run.percentile(0.99),
        empty_run.percentile(0.99),
        api_run.service_percentile(0.99),
        empty_run.service_percentile(0.99)
    );
    ensure!(
        api_run.failed == 0,
        "{} Profile API requests failed",
        api_run.failed
    );
    Ok(())
}
