//! The demo's Customer 360 step, the story users know from Customer 360 demos: clicks (user,
//! time, os, browser, a response time sent as text, product, url) and a CRM of customer
//! documents whose fields differ from one customer to the next land in the lake; analysts ask
//! for web performance by os, browser and url; the web visitors, app users, Kustomer and CRM
//! customers are stitched into profiles; a churn model is trained on clicks joined with the
//! CRM (`churn_risk >= 20`), and its scores are written back keyed by customer and by profile,
//! where the Profile API answers them.

use std::io::Write as _;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tideway_lake::{Lake, QueryResult, SqlOutput, TableName};
use tideway_unify::churn::{Scored, Trained};
use tideway_unify::explain::{Explanation, GraphReport};
use tideway_unify::run::RunReport;

use crate::project::Project;

/// The `[unify]` section the demo writes: the warehouse tables of `web` and `app` are sources
/// by default; Kustomer's customers and their e-mails are added.
pub const UNIFY_TOML: &str = r#"
[unify]
priority = ["user_id", "email", "kustomer_id", "phone", "anonymous_id"]

[[unify.sources]]   # the CRM's customer documents, keyed by the app's user id
table = "crm.customer_documents"
ids = { user_id = "id" }
key = "id"

[[unify.sources]]   # each Kustomer customer's e-mails (a child table of kustomer.customers)
table = "kustomer.customers__emails"
ids = { kustomer_id = "_tideway_parent_id", email = "email" }

[[unify.sources]]   # and its phones
table = "kustomer.customers__phones"
ids = { kustomer_id = "_tideway_parent_id", phone = "phone" }

[predict.churn]
features = "marts.churn_features"
id = "user_id"
label = "churn_risk >= 20"
exclude = ["churn_risk"]
output = "crm.realtime_churn_predictions"
id_type = "user_id"
"#;

/// The churn features: clicks per customer joined with the CRM documents.
pub const CHURN_FEATURES_SQL: &str = r#"/* tideway
description = "Per customer: click behaviour joined with the CRM's documents; churn_risk is the label's input."
[tests]
user_id = ["not_null", "unique"]
*/
select
    d.id                                          as user_id,
    d.persona,
    d.sentiment,
    d.churn_risk,
    count(c.user_id)                              as clicks,
    avg(cast(c.response_time_ms as double))       as avg_response_ms,
    max(cast(c.response_time_ms as double))       as max_response_ms,
    count(distinct c.product)                     as products,
    count(distinct c.url)                         as pages,
    sum(case when c.os = 'Android' or c.os = 'iOS' then 1 else 0 end) as mobile_clicks
from crm.customer_documents d
left join web.clicks c on c.user_id = d.id
group by d.id, d.persona, d.sentiment, d.churn_risk
"#;

const PERSONAS: &[&str] = &["analyst", "executive", "developer", "marketer"];
const OS: &[&str] = &["Windows", "macOS", "Linux", "Android", "iOS"];
const BROWSERS: &[&str] = &["Chrome", "Safari", "Firefox", "Edge"];
const PRODUCTS: &[&str] = &["sofa", "lamp", "desk", "chair", "rug", "shelf"];

/// Writes the CRM documents (fields differ per customer) and the clicks as NDJSON, imports
/// them, and writes the churn features model.
pub async fn prepare(project: &Project, lake: &Lake, customers: usize) -> Result<()> {
    let dir = project.dir.join("data");
    std::fs::create_dir_all(&dir)?;
    let mut rng = StdRng::seed_from_u64(360);
    let mut docs = std::io::BufWriter::new(std::fs::File::create(
        dir.join("customer_documents.ndjson"),
    )?);
    let mut clicks = std::io::BufWriter::new(std::fs::File::create(dir.join("clicks.ndjson"))?);
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").expect("a valid time");
    for n in 0..customers {
        let persona = PERSONAS[rng.random_range(0..PERSONAS.len())];
        let sentiment: f64 = (rng.random_range(-100..=100) as f64) / 100.0;
        // Slow pages, bad sentiment and executives' impatience raise the risk; noise blurs it.
        let slow: f64 = rng.random_range(0.0..1.0);
        let risk = (12.0 - 10.0 * sentiment
            + 14.0 * slow * slow
            + if persona == "executive" { 6.0 } else { 0.0 }
            + rng.random_range(-6.0..6.0))
        .clamp(0.0, 40.0)
        .round() as i64;
        let mut doc = json!({
            "id": format!("cus_{n:05}"),
            "name": format!("Customer {n}"),
            "first_visit": (start - chrono::TimeDelta::days(rng.random_range(0..700))).format("%Y-%m-%d").to_string(),
            "zip": format!("{:05}", rng.random_range(1000..99999)),
            "sentiment": sentiment,
            "persona": persona,
            "churn_risk": risk,
        });
        // Documents differ: some have a structured address, some a line of text, some none;
        // a few carry fields only they have.
        match n % 3 {
            // (An object here for some customers and text for others is what the case has;
            // `tideway lake import` cannot take that mix from NDJSON yet.)
            0 => doc["address"] = json!(format!("Storgata {}, Oslo", n % 90)),
            1 => doc["address"] = json!(format!("{} Main St, Springfield", n % 900)),
            _ => {}
        }
        if n % 7 == 0 {
            doc["twitter"] = json!(format!("@customer{n}"));
        }
        if n % 11 == 0 {
            doc["vip"] = json!(true);
        }
        writeln!(docs, "{doc}")?;
        let visits = ((30.0 - risk as f64 * 0.5) * rng.random_range(0.5..1.5)).max(1.0) as usize;
        for _ in 0..visits {
            let os = OS[rng.random_range(0..OS.len())];
            let base = 120.0 + 900.0 * slow * slow + if os == "Android" { 150.0 } else { 0.0 };
            let product = PRODUCTS[rng.random_range(0..PRODUCTS.len())];
            writeln!(
                clicks,
                "{}",
                json!({
                    "user_id": format!("cus_{n:05}"),
                    "datetime": (start + chrono::TimeDelta::seconds(rng.random_range(0..30 * 86_400))).to_rfc3339(),
                    "os": os,
                    "browser": BROWSERS[rng.random_range(0..BROWSERS.len())],
                    "response_time_ms": format!("{}", (base * rng.random_range(0.6..1.6)) as i64),
                    "product": product,
                    "url": format!("/products/{product}"),
                })
            )?;
        }
    }
    docs.flush()?;
    clicks.flush()?;
    drop((docs, clicks));
    lake.import(
        &[dir.join("customer_documents.ndjson")],
        &"crm.customer_documents".parse::<TableName>()?,
        true,
    )
    .await?;
    lake.import(
        &[dir.join("clicks.ndjson")],
        &"web.clicks".parse::<TableName>()?,
        true,
    )
    .await?;
    let path = project.dir.join("models/marts/churn_features.sql");
    std::fs::create_dir_all(path.parent().expect("a parent"))?;
    std::fs::write(&path, CHURN_FEATURES_SQL)?;
    Ok(())
}

/// The admin token the demo's Profile API takes.
const TOKEN: &str = "demo-admin-token";

pub struct Unified {
    pub performance: QueryResult,
    pub trained: Trained,
    pub scored: Scored,
    pub run: RunReport,
    pub report: GraphReport,
    pub explained: Explanation,
    pub api: serde_json::Value,
    pub api_ms: f64,
}

pub async fn run(project: &Project, lake: &Lake) -> Result<Unified> {
    let SqlOutput::Rows(performance) = lake
        .sql(
            "SELECT os, browser, url, count(*) AS clicks, \
             round(avg(cast(response_time_ms AS double)), 0) AS avg_ms, \
             round(approx_percentile_cont(cast(response_time_ms AS double), 0.95), 0) AS p95_ms \
             FROM web.clicks GROUP BY os, browser, url ORDER BY avg_ms DESC LIMIT 6",
        )
        .await?
    else {
        anyhow::bail!("the web performance query gave no rows");
    };
    let run = crate::unify::run(project, true).await?;
    let churn = crate::unify::predict_config(project, Some("churn"))?;
    let trained = tideway_unify::churn::train(lake, &churn).await?;
    let scored = tideway_unify::churn::score(lake, &churn).await?;
    let report = tideway_unify::explain::report(lake).await?;
    // A web visitor who logged in: their profile holds the anonymous id, the user id, the
    // e-mail, and (through the e-mail) the Kustomer customer.
    let pick = tideway_unify::explain::text_rows(
        lake,
        "SELECT m.id_type || ':' || m.id_value FROM profiles.identity_map m \
         JOIN profiles.profiles p ON p.profile_id = m.profile_id \
         WHERE m.id_type = 'email' AND p.kustomer_id_count > 0 AND p.anonymous_id_count > 0 \
         AND p.user_id_count > 0 \
         ORDER BY p.identifiers DESC, m.id_value LIMIT 1",
    )
    .await?;
    let id = pick
        .first()
        .and_then(|r| r[0].clone())
        .context("no profile joined the web and Kustomer")?;
    let config = crate::unify::config(project)?;
    let explained = tideway_unify::explain::explain(lake, &config, &id).await?;

    // The Profile API, on a local port, as `tideway serve` runs it.
    let (routes, refresh) = crate::profile_api::routes(
        lake.clone(),
        TOKEN.into(),
        std::time::Duration::from_secs(60),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, routes).await });
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let api: serde_json::Value = client
        .get(format!("http://{addr}/v1/profiles/{id}"))
        .basic_auth(TOKEN, Some(""))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let api_ms = started.elapsed().as_secs_f64() * 1000.0;
    server.abort();
    refresh.abort();
    Ok(Unified {
        performance,
        trained,
        scored,
        run,
        report,
        explained,
        api,
        api_ms,
    })
}

pub fn print(u: &Unified) {
    println!("\nWeb performance by os, browser and url (web.clicks, response times sent as text):");
    crate::output::print_rows(&u.performance).ok();
    println!("\nCustomer 360 (tideway unify):");
    crate::unify::print_report(&u.run);
    print!("{}", u.report);
    println!(
        "Churn model (tideway predict train churn: marts.churn_features, label churn_risk >= 20), version {}:",
        u.trained.version
    );
    print!("{}", u.trained.report);
    println!(
        "Scored {} customers into {}{}",
        u.scored.rows,
        u.scored.output,
        u.scored
            .profiles
            .map(|p| format!(" and {p} profiles into profiles.churn_scores"))
            .unwrap_or_default()
    );
    println!("One profile, explained (tideway unify explain):");
    print!("{}", u.explained);
    println!(
        "The same profile from the Profile API (GET /v1/profiles/{}, {:.1} ms):",
        u.explained
            .members
            .first()
            .map(|m| m.id.to_string())
            .unwrap_or_default(),
        u.api_ms
    );
    let mut shown = u.api.clone();
    if let Some(ids) = shown.get_mut("identifiers").and_then(|v| v.as_array_mut()) {
        ids.truncate(6);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&shown).unwrap_or_default()
    );
}
