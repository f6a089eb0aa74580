//! `tideway demo`: the whole product on sample data it generates, in a throwaway project.
//!
//! Each capability Tideway gains adds a step here, so the demo always shows all of it.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tideway_lake::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use tideway_lake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tideway_lake::{Lake, SqlOutput, TableName, Txn};

use crate::demo_streams::Servers;
use crate::output::{self, Format};
use crate::project::Project;

/// Marks a directory as a demo, so a later `tideway demo` may replace it.
const MARKER: &str = ".tideway-demo";

const PLANS: &[&str] = &["free", "starter", "pro", "enterprise"];
const COUNTRIES: &[&str] = &["US", "DE", "FR", "GB", "BR", "IN", "JP", "CA"];
const EVENTS: &[&str] = &[
    "Page Viewed",
    "Product Viewed",
    "Product Added",
    "Order Completed",
    "Signed In",
];
const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Ken", "Radia", "Tim", "Margaret",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Thompson",
    "Perlman",
    "Berners-Lee",
    "Hamilton",
];

/// Two days of a small company's customer data: day 1, then day 2's changes.
pub async fn run(dir: &Path, customers: usize, servers: &Servers) -> Result<()> {
    let started = Instant::now();
    prepare(dir)?;
    let bar = ProgressBar::new(13);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("a valid template"),
    );

    bar.set_message("scaffolding the project");
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "a project made by `tideway demo`; safe to delete\n",
    )?;
    let (customerio, salesforce) = crate::demo_sync::start().await?;
    let live_hook = crate::demo_traffic::start_hook().await?;
    std::fs::write(
        dir.join("tideway.toml"),
        crate::scaffold::PROJECT_TOML.replace("{name}", "tideway-demo")
            + crate::demo_traffic::COLLECT_TOML
            + &crate::demo_sync::destinations_toml(&customerio, &salesforce)
            + &crate::demo_traffic::connections_toml(&live_hook)
            + &servers.toml()
            + crate::demo_unify::UNIFY_TOML,
    )?;
    // The demo's variables: the stand-ins' credentials and the servers given to it.
    let env = |v: &str| {
        servers
            .env(v)
            .or_else(|| crate::demo_sync::env(v, &salesforce))
    };
    let project = Project::open(dir)?;
    let lake = project.lake().await?;
    bar.inc(1);

    let mut rng = StdRng::seed_from_u64(20261125);
    let customers_table: TableName = "crm.customers".parse()?;
    let tracks: TableName = "events.tracks".parse()?;

    bar.set_message("day 1: loading customers (merge by id)");
    let day1 = customer_batch(&mut rng, 0..customers, 0);
    let c1 = lake
        .merge(&customers_table, vec![day1], &["id"])
        .with_txn(Txn::new("demo:crm", 1))
        .await?;
    bar.inc(1);

    bar.set_message("day 1: loading events (append, exactly once)");
    let events = event_batch(&mut rng, customers, customers * 10, false);
    let e1 = lake
        .append(&tracks, vec![events.clone()])
        .with_txn(Txn::new("demo:events", 1))
        .await?;
    // A loader that crashed after committing retries the same batch: it lands once.
    let retry = lake
        .append(&tracks, vec![events])
        .with_txn(Txn::new("demo:events", 1))
        .await?;
    bar.inc(1);

    bar.set_message("day 2: 2% of customers changed, 1% new (merge)");
    let mut changed = customer_batch(&mut rng, 0..customers / 50, 1);
    let new = customer_batch(&mut rng, customers..customers + customers / 100, 1);
    changed =
        tideway_lake::arrow::compute::concat_batches(&changed.schema(), &[changed.clone(), new])?;
    let c2 = lake
        .merge(&customers_table, vec![changed], &["id"])
        .with_txn(Txn::new("demo:crm", 2))
        .await?;
    bar.inc(1);

    bar.set_message("day 2: events with a new field and a type change (schema evolution)");
    let evolved = event_batch(&mut rng, customers, customers * 2, true);
    let e2 = lake
        .append(&tracks, vec![evolved])
        .with_txn(Txn::new("demo:events", 2))
        .await?;
    bar.inc(1);

    bar.set_message("compacting and checkpointing");
    lake.optimize(&tracks, None).await?;
    bar.inc(1);

    bar.set_message("querying across schemas");
    let report = lake
        .sql(
            "SELECT c.plan, count(DISTINCT c.id) AS customers, count(t.message_id) AS events, \
             round(sum(t.properties__revenue), 2) AS revenue \
             FROM crm.customers c LEFT JOIN events.tracks t ON t.user_id = c.id \
             GROUP BY c.plan ORDER BY revenue DESC",
        )
        .await?;
    bar.inc(1);

    bar.set_message("collecting web and app traffic through the HTTP API");
    let in_kafka = servers.prepare().await?;
    let traffic =
        crate::demo_traffic::run(&project, lake.clone(), customers, &live_hook, &env).await?;
    let mut streamed = crate::demo_streams::Streamed {
        kafka: crate::demo_streams::kafka_added(servers, in_kafka).await?,
        ..Default::default()
    };
    let collected = lake
        .sql(
            "SELECT 'web' AS source, 'pages' AS table_name, count(*) AS rows FROM web.pages \
             UNION ALL SELECT 'web', 'identifies', count(*) FROM web.identifies \
             UNION ALL SELECT 'web', 'users', count(*) FROM web.users \
             UNION ALL SELECT 'app', 'tracks', count(*) FROM app.tracks \
             UNION ALL SELECT 'app', 'order_completed', count(*) FROM app.order_completed \
             UNION ALL SELECT '_tideway', 'dead_letters', count(*) FROM _tideway.dead_letters",
        )
        .await?;
    let top_pages = lake
        .sql(
            "SELECT context_page_path AS path, count(*) AS views, count(DISTINCT anonymous_id) AS visitors \
             FROM web.pages GROUP BY 1 ORDER BY views DESC LIMIT 5",
        )
        .await?;
    bar.inc(1);

    bar.set_message(
        "extracting Kustomer (a local Kustomer-shaped API): day 1 in full, day 2 incrementally",
    );
    let kustomer = crate::demo_extract::run(&project, &lake, customers).await?;
    let support = lake
        .sql(
            "SELECT c.custom__plan_str AS plan, count(DISTINCT c.id) AS customers, \
             count(DISTINCT v.id) AS conversations, count(m.id) AS messages \
             FROM kustomer.customers c \
             LEFT JOIN kustomer.conversations v ON v.customer_id = c.id \
             LEFT JOIN kustomer.messages m ON m._conversations_id = v.id \
             GROUP BY 1 ORDER BY customers DESC",
        )
        .await?;
    bar.inc(1);

    bar.set_message("Customer 360 data: clicks and CRM documents with differing fields");
    crate::demo_unify::prepare(&project, &lake, customers).await?;

    bar.set_message("models: compiling and running the customer-health pipeline and a lead score");
    let model_runs = crate::demo_models::run(&project, &lake, customers).await?;
    let insight = crate::demo_models::insight(&project, &lake).await?;
    let health = lake
        .sql(
            "SELECT health_bucket, count(*) AS customers, round(avg(health_score), 1) AS avg_score, \
             round(avg(lifetime_value), 2) AS avg_ltv FROM marts.customer_health GROUP BY 1 ORDER BY 3 DESC",
        )
        .await?;
    let leads = lake
        .sql(
            "SELECT customer_id, email, plan, lead_score, lead_grade, lead_rank FROM marts.lead_score \
             ORDER BY lead_rank, customer_id LIMIT 5",
        )
        .await?;
    bar.inc(1);

    bar.set_message("syncs: the lead score to Customer.io, changed accounts to Salesforce");
    let synced = crate::demo_sync::run(&project, &lake, &customerio, &salesforce, &env).await?;
    bar.inc(1);

    bar.set_message(
        "unify: stitching web visitors, app users and Kustomer customers into profiles",
    );
    let unified = crate::demo_unify::run(&project, &lake).await?;
    bar.inc(1);

    bar.set_message("streams: the churn score to Redis, the lead score to Postgres");
    crate::demo_streams::sync(&project, &lake, servers, &env, &mut streamed).await?;
    bar.inc(1);
    bar.finish_and_clear();

    println!(
        "Tideway demo: a project with two days of customer data, in {:.1?}\n",
        started.elapsed()
    );
    println!(
        "  crm.customers   day 1: {} customers merged by id (version {})",
        c1.inserted,
        show(c1.version)
    );
    println!(
        "                  day 2: {} updated, {} inserted (version {})",
        c2.updated,
        c2.inserted,
        show(c2.version)
    );
    println!(
        "  events.tracks   day 1: {} events appended (version {})",
        e1.rows,
        show(e1.version)
    );
    println!(
        "                  the same batch retried: {} (exactly once, by Delta transaction id)",
        if retry.skipped {
            "skipped"
        } else {
            "WRITTEN TWICE"
        }
    );
    println!(
        "                  day 2: {} events; new columns {}",
        e2.rows,
        e2.added_columns.join(", ")
    );
    for (column, variant) in &e2.variant_columns {
        println!(
            "                  `{column}` arrived as text: kept in `{variant}`, nothing dropped"
        );
    }
    println!("\nRevenue by plan (events joined with the CRM):");
    if let SqlOutput::Rows(rows) = report {
        output::print_rows(&rows)?;
    }
    println!(
        "\nCollected through the Segment-compatible API (`tideway serve`): {} requests, {} events, \
         {} rejected to _tideway.dead_letters",
        traffic.requests, traffic.events, traffic.rejected
    );
    if let SqlOutput::Rows(rows) = collected {
        output::print_rows(&rows)?;
    }
    println!(
        "Forwarded live (connection `app_orders`, source app -> a local webhook): {} \"Order Completed\" \
         events, in order per user, as they arrived; {} of them by the time the last request was answered",
        traffic.forwarded, traffic.forwarded_during
    );
    println!("\nTop pages (web.pages, loaded from the event log):");
    if let SqlOutput::Rows(rows) = top_pages {
        output::print_rows(&rows)?;
    }
    println!("\nExtracted from Kustomer (sources/kustomer.toml), day 1 in full:");
    crate::extract::print_report(&kustomer.day1);
    println!("Day 2, incrementally (only new and changed records; child rows replaced):");
    crate::extract::print_report(&kustomer.day2);
    println!("Customers, conversations and messages by plan (nested JSON flattened into tables):");
    if let SqlOutput::Rows(rows) = support {
        output::print_rows(&rows)?;
    }
    println!(
        "\nModels (models/**/*.sql: Datacoral, dbt and native headers), compiled against their upstreams, then run:"
    );
    crate::models::print_runs(&model_runs);
    println!("Customer health (marts.customer_health):");
    if let SqlOutput::Rows(rows) = health {
        output::print_rows(&rows)?;
    }
    println!("Top leads (marts.lead_score):");
    if let SqlOutput::Rows(rows) = leads {
        output::print_rows(&rows)?;
    }
    crate::demo_sync::print(&synced);
    crate::demo_unify::print(&unified);
    crate::demo_streams::print(&streamed);
    println!(
        "Where the health score comes from (tideway lineage marts.customer_health.health_score --upstream):"
    );
    print!("{}", insight.lineage);
    println!(
        "\nRenaming `lifetime_value` in models/marts/lifetime_value.sql is refused by `tideway plan`, at the reader's line:"
    );
    println!("{}", insight.breaking);
    println!("\nTables:");
    output::print_tables(&lake.infos().await?, Format::Table)?;
    print_next(dir, &lake);
    Ok(())
}

fn show(version: Option<u64>) -> String {
    version.map_or("-".into(), |v| v.to_string())
}

fn print_next(dir: &Path, lake: &Lake) {
    let p = dir.display();
    println!(
        "\nThe lake is at {} (Delta tables: any Delta reader opens them).",
        lake.root()
    );
    println!("Try next:");
    println!("  tideway -p {p} tables");
    println!(
        "  tideway -p {p} sql \"SELECT event, count(*) FROM events.tracks GROUP BY event ORDER BY 2 DESC\""
    );
    println!(
        "  tideway -p {p} sql \"SELECT id, plan, mrr FROM crm.customers ORDER BY mrr DESC LIMIT 5\""
    );
    println!(
        "  tideway -p {p} sql --format json \"SELECT * FROM events.tracks WHERE properties__revenue__v_text IS NOT NULL LIMIT 3\""
    );
    println!("  tideway -p {p} compile marts.customer_health    # its inferred schema");
    println!("  tideway -p {p} run +marts.lead_score            # it and everything it reads");
    println!("  tideway -p {p} status                           # each model's freshness");
    println!(
        "  tideway -p {p} plan                             # after editing a model: what it changes"
    );
    println!("  tideway -p {p} lineage billingdb.orders.amount --downstream --format mermaid");
    println!("  tideway -p {p} compile --watch                  # re-checks as you edit");
    println!(
        "  tideway -p {p} sql \"SELECT model, window_start, window_end, status, rows FROM _tideway.model_runs\""
    );
    println!(
        "  tideway -p {p} sync status                      # each sync's last run and rows held"
    );
    println!(
        "  tideway -p {p} sql \"SELECT key, op, status, message FROM _tideway.sync_log LIMIT 10\""
    );
    println!(
        "  {}=demo-track-key tideway -p {p} sync plan leads_to_customerio   # what a run would send",
        crate::demo_sync::KEY_VAR
    );
    println!(
        "  tideway -p {p} transform test old_new_truth --event '{{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{{\"account_id\":\"0015g0000000001AAA\",\"new_truth\":\"[[\\\"plan\\\",\\\"pro\\\"]]\"}}}}'"
    );
    println!("  tideway -p {p} lake import <your.csv> --table raw.my_table");
    println!(
        "  tideway -p {p} serve    # then: curl -u wk_demo_web: localhost:8080/v1/track -d '{{\"userId\":\"u1\",\"event\":\"Signed Up\"}}'"
    );
    println!(
        "  tideway -p {p} sql \"SELECT event_text, count(*) FROM app.tracks GROUP BY 1 ORDER BY 2 DESC\""
    );
}

/// Empties `dir` if it is an earlier demo; refuses to touch anything else.
fn prepare(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if dir.join(MARKER).exists() {
        return std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot remove the earlier demo in `{}`", dir.display()));
    }
    if std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "`{}` exists and is not an earlier demo; pass --dir with a new or empty directory",
            dir.display()
        );
    }
    Ok(())
}

fn customer_batch(rng: &mut StdRng, ids: std::ops::Range<usize>, day: i64) -> RecordBatch {
    let n = ids.len();
    let base = 1_764_000_000_000_000i64 + day * 86_400_000_000;
    let id: Vec<String> = ids.clone().map(|i| format!("user_{i:06}")).collect();
    let first: Vec<&str> = (0..n)
        .map(|_| FIRST[rng.random_range(0..FIRST.len())])
        .collect();
    let last: Vec<&str> = (0..n)
        .map(|_| LAST[rng.random_range(0..LAST.len())])
        .collect();
    let email: Vec<String> = ids
        .clone()
        .zip(&first)
        .map(|(i, f)| format!("{}.{i}@example.com", f.to_lowercase()))
        .collect();
    let plan: Vec<&str> = (0..n)
        .map(|_| PLANS[rng.random_range(0..PLANS.len())])
        .collect();
    let country: Vec<&str> = (0..n)
        .map(|_| COUNTRIES[rng.random_range(0..COUNTRIES.len())])
        .collect();
    let mrr: Vec<f64> = plan
        .iter()
        .map(|p| match *p {
            "free" => 0.0,
            "starter" => 29.0,
            "pro" => 99.0,
            _ => 499.0 + f64::from(rng.random_range(0..1000)),
        })
        .collect();
    let churn: Vec<i64> = (0..n).map(|_| rng.random_range(0..100)).collect();
    let created: Vec<i64> = (0..n)
        .map(|_| base - rng.random_range(0..365 * 86_400_000_000i64))
        .collect();
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("first_name", DataType::Utf8, true),
        Field::new("last_name", DataType::Utf8, true),
        Field::new("plan", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("mrr", DataType::Float64, true),
        Field::new("churn_risk", DataType::Int64, true),
        Field::new("created_at", ts, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(id)),
        Arc::new(StringArray::from(email)),
        Arc::new(StringArray::from(first)),
        Arc::new(StringArray::from(last)),
        Arc::new(StringArray::from(plan)),
        Arc::new(StringArray::from(country)),
        Arc::new(Float64Array::from(mrr)),
        Arc::new(Int64Array::from(churn)),
        Arc::new(TimestampMicrosecondArray::from(created).with_timezone("UTC")),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("columns match the schema")
}

/// Track events; `evolved` adds a campaign field and sends revenue as text, as a client that
/// changed its tracking plan would.
fn event_batch(rng: &mut StdRng, customers: usize, n: usize, evolved: bool) -> RecordBatch {
    let base = 1_764_000_000_000_000i64 + if evolved { 86_400_000_000 } else { 0 };
    let message_id: Vec<String> = (0..n)
        .map(|_| format!("{:032x}", rng.random::<u128>()))
        .collect();
    let user: Vec<String> = (0..n)
        .map(|_| format!("user_{:06}", rng.random_range(0..customers)))
        .collect();
    let event: Vec<&str> = (0..n)
        .map(|_| EVENTS[rng.random_range(0..EVENTS.len())])
        .collect();
    let ts: Vec<i64> = (0..n)
        .map(|_| base + rng.random_range(0..86_400_000_000i64))
        .collect();
    let revenue: Vec<Option<f64>> = event
        .iter()
        .map(|e| {
            (*e == "Order Completed").then(|| f64::from(rng.random_range(500..50_000)) / 100.0)
        })
        .collect();
    let tsty = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new("message_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("event", DataType::Utf8, true),
        Field::new("timestamp", tsty, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(message_id)),
        Arc::new(StringArray::from(user)),
        Arc::new(StringArray::from(event)),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
    ];
    if evolved {
        fields.push(Field::new("properties__revenue", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(
            revenue
                .iter()
                .map(|r| r.map(|v| format!("{v:.2}")))
                .collect::<Vec<_>>(),
        )));
        fields.push(Field::new("context__campaign__name", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(
            (0..n)
                .map(|i| ["spring_sale", "newsletter", "retargeting"][i % 3])
                .collect::<Vec<_>>(),
        )));
    } else {
        fields.push(Field::new("properties__revenue", DataType::Float64, true));
        columns.push(Arc::new(Float64Array::from(revenue)));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match the schema")
}
