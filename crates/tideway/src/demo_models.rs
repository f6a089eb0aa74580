//! The demo's models step: warehouse-shaped source tables (billing, support, web and device
//! events, as `../shared/bench/gen.py` shapes them), the customer-health pipeline and a lead
//! score as SQL models written the way their authors wrote them for a warehouse, compiled and
//! run.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tideway_lake::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use tideway_lake::arrow::datatypes::{Field, Schema};
use tideway_lake::{Lake, TableName};
use tideway_models::run::{ModelRun, RunOptions};

use crate::project::Project;

/// The model files of the demo: (path under the project, text).
pub const MODELS: &[(&str, &str)] = &[
    (
        "models/staging/stg_billing_customers.sql",
        include_str!("demo_models/staging/stg_billing_customers.sql"),
    ),
    (
        "models/staging/stg_orders.sql",
        include_str!("demo_models/staging/stg_orders.sql"),
    ),
    (
        "models/staging/stg_invoices.sql",
        include_str!("demo_models/staging/stg_invoices.sql"),
    ),
    (
        "models/staging/stg_tickets.sql",
        include_str!("demo_models/staging/stg_tickets.sql"),
    ),
    (
        "models/staging/stg_ticket_metrics.sql",
        include_str!("demo_models/staging/stg_ticket_metrics.sql"),
    ),
    (
        "models/staging/stg_webevents.sql",
        include_str!("demo_models/staging/stg_webevents.sql"),
    ),
    (
        "models/staging/stg_deviceevents.sql",
        include_str!("demo_models/staging/stg_deviceevents.sql"),
    ),
    (
        "models/marts/lifetime_value.sql",
        include_str!("demo_models/marts/lifetime_value.sql"),
    ),
    (
        "models/marts/satisfaction.sql",
        include_str!("demo_models/marts/satisfaction.sql"),
    ),
    (
        "models/marts/engagement.sql",
        include_str!("demo_models/marts/engagement.sql"),
    ),
    (
        "models/marts/customer_health.sql",
        include_str!("demo_models/marts/customer_health.sql"),
    ),
    (
        "models/marts/lead_score.sql",
        include_str!("demo_models/marts/lead_score.sql"),
    ),
    (
        "models/marts/daily_activity.sql",
        include_str!("demo_models/marts/daily_activity.sql"),
    ),
    (
        "models/marts/customerio_leads.sql",
        include_str!("demo_models/marts/customerio_leads.sql"),
    ),
];

/// The instant the sample data ends: the models' "today" (they say `timestamp '2025-06-01'`).
const END_MICROS: i64 = 1_748_736_000_000_000;
const DAY: i64 = 86_400_000_000;

/// Writes the source tables and the model files, then compiles and runs every model.
pub async fn run(project: &Project, lake: &Lake, customers: usize) -> Result<Vec<ModelRun>> {
    write_sources(lake, customers).await?;
    write_models(&project.dir)?;
    let (compiled, _) = crate::models::compile_project(project).await?;
    if !compiled.is_ok() {
        let errors: Vec<String> = compiled
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        bail!("the demo's models do not compile:\n{}", errors.join("\n"));
    }
    let options = RunOptions {
        now: chrono::DateTime::from_timestamp_micros(END_MICROS).expect("a valid instant"),
        ..RunOptions::default()
    };
    let runs = tideway_models::run::run(lake, &compiled, &options, |_| {}).await?;
    if let Some(failed) = runs.iter().find(|r| r.error.is_some()) {
        bail!(
            "the demo model {} failed: {}",
            failed.model,
            failed.error.clone().unwrap_or_default()
        );
    }
    Ok(runs)
}

/// Compiles the project and runs the models `selectors` pick (after the demo changed a source).
pub async fn rebuild(project: &Project, lake: &Lake, selectors: &[&str]) -> Result<Vec<ModelRun>> {
    let (compiled, _) = crate::models::compile_project(project).await?;
    let options = RunOptions {
        now: chrono::DateTime::from_timestamp_micros(END_MICROS).expect("a valid instant"),
        select: selectors.iter().map(|s| s.to_string()).collect(),
        ..RunOptions::default()
    };
    let runs = tideway_models::run::run(lake, &compiled, &options, |_| {}).await?;
    if let Some(failed) = runs.iter().find(|r| r.error.is_some()) {
        bail!(
            "the demo model {} failed: {}",
            failed.model,
            failed.error.clone().unwrap_or_default()
        );
    }
    Ok(runs)
}

/// What the demo shows of lineage and impact analysis, on the models it deployed.
pub struct Insight {
    /// `tideway lineage marts.customer_health.health_score --upstream`, as text.
    pub lineage: String,
    /// `tideway plan` on the project with `lifetime_value` renamed in marts/lifetime_value.sql:
    /// the first breaking change, as the user sees it.
    pub breaking: String,
}

/// Lineage of the health score, and the plan a column rename would get (in memory: the model
/// files are not touched).
pub async fn insight(project: &Project, lake: &Lake) -> Result<Insight> {
    let (compiled, _) = crate::models::compile_project(project).await?;
    let graph = tideway_models::lineage::Graph::new(&compiled);
    let start = graph
        .resolve("marts.customer_health.health_score")
        .map_err(anyhow::Error::msg)?;
    let lineage = graph
        .trace(
            "marts.customer_health.health_score",
            start,
            tideway_models::lineage::Direction::Upstream,
        )
        .to_text();
    let sources: Vec<(std::path::PathBuf, String)> = compiled
        .models
        .models
        .iter()
        .map(|m| {
            let text = if m.name.to_string() == "marts.lifetime_value" {
                m.source.replace("as lifetime_value,", "as ltv,")
            } else {
                m.source.clone()
            };
            (m.file.clone(), text)
        })
        .collect();
    let (models, errors) = tideway_models::Models::from_sources(sources);
    let changed = tideway_models::compile::compile(models, errors, Some(lake)).await?;
    let deployed = tideway_models::plan::read_deployed(lake).await?;
    let plan = tideway_models::plan::plan(&changed, &deployed);
    let breaking = plan
        .breaking
        .first()
        .map(ToString::to_string)
        .context("renaming lifetime_value should break marts.customer_health")?;
    Ok(Insight { lineage, breaking })
}

/// Writes the demo's model files into `dir/models`.
pub fn write_models(dir: &Path) -> Result<()> {
    for (path, text) in MODELS {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a model file is in a folder"))?;
        std::fs::write(path, text)?;
    }
    Ok(())
}

fn ts(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

fn ts_opt(values: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("columns match their fields")
}

fn pick<'a>(rng: &mut StdRng, values: &[&'a str], weights: &[u32]) -> &'a str {
    let total: u32 = weights.iter().sum();
    let mut x = rng.random_range(0..total);
    for (v, w) in values.iter().zip(weights) {
        if x < *w {
            return v;
        }
        x -= w;
    }
    values[values.len() - 1]
}

fn strings(values: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

/// Billing, support, web and device tables for `n` customers, shaped like the shared
/// workload's `warehouse/` tables.
pub async fn write_sources(lake: &Lake, n: usize) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(20250601);
    let plans = ["free", "starter", "growth", "business", "enterprise"];
    let countries = ["US", "GB", "DE", "FR", "CA", "IN", "JP", "BR"];
    let history = 2 * 365 * DAY;
    let created: Vec<i64> = (0..n)
        .map(|_| END_MICROS - rng.random_range(DAY..history))
        .collect();
    let plan_of: Vec<usize> = (0..n).map(|_| rng.random_range(0..plans.len())).collect();
    let ids: Vec<i64> = (1..=n as i64).collect();
    let customers = batch(vec![
        ("id", Arc::new(Int64Array::from(ids.clone()))),
        (
            "email",
            strings(
                ids.iter()
                    .map(|i| {
                        format!(
                            "user{i}@{}",
                            ["acme.com", "globex.io", "initech.net", "umbrella.org"]
                                [*i as usize % 4]
                        )
                    })
                    .collect(),
            ),
        ),
        (
            "name",
            strings(ids.iter().map(|i| format!("Customer {i}")).collect()),
        ),
        ("created_at", ts(created.clone())),
        (
            "plan",
            strings(plan_of.iter().map(|&p| plans[p].to_string()).collect()),
        ),
        (
            "country",
            strings(
                (0..n)
                    .map(|_| countries[rng.random_range(0..countries.len())].to_string())
                    .collect(),
            ),
        ),
        (
            "industry",
            strings(
                (0..n)
                    .map(|_| {
                        ["software", "retail", "finance", "health"][rng.random_range(0..4)]
                            .to_string()
                    })
                    .collect(),
            ),
        ),
        (
            "employees",
            Arc::new(Int64Array::from(
                (0..n)
                    .map(|_| [1, 5, 20, 50, 200, 1000, 5000][rng.random_range(0..7)])
                    .collect::<Vec<i64>>(),
            )),
        ),
        (
            "mrr",
            Arc::new(Float64Array::from(
                plan_of
                    .iter()
                    .map(|&p| [0.0, 29.0, 99.0, 499.0, 2499.0][p])
                    .collect::<Vec<f64>>(),
            )),
        ),
        (
            "is_active",
            Arc::new(BooleanArray::from(
                (0..n).map(|_| rng.random_bool(0.85)).collect::<Vec<bool>>(),
            )),
        ),
    ]);
    // Orders and their invoices: about two per customer.
    let orders_n = n * 2;
    let (mut o_cust, mut o_created, mut o_amount, mut o_status) = (vec![], vec![], vec![], vec![]);
    let (mut i_due, mut i_paid, mut i_status) = (vec![], vec![], vec![]);
    for _ in 0..orders_n {
        let c = rng.random_range(0..n);
        let at = created[c] + rng.random_range(0..(END_MICROS - created[c]).max(1));
        o_cust.push(c as i64 + 1);
        o_created.push(at);
        o_amount.push(
            (([15.0, 40.0, 120.0, 600.0, 3000.0][plan_of[c]] * rng.random_range(0.5..2.0))
                * 100.0_f64)
                .round()
                / 100.0,
        );
        o_status.push(
            pick(
                &mut rng,
                &["completed", "refunded", "cancelled", "pending"],
                &[86, 6, 5, 3],
            )
            .to_string(),
        );
        let due = at + 30 * DAY;
        let paid = rng.random_bool(0.9);
        i_due.push(due);
        i_paid.push(paid.then(|| at + rng.random_range(0..40 * DAY)));
        i_status.push(
            if paid {
                "paid"
            } else if due < END_MICROS {
                "overdue"
            } else {
                "open"
            }
            .to_string(),
        );
    }
    let order_ids: Vec<i64> = (1..=orders_n as i64).collect();
    let orders = batch(vec![
        ("order_id", Arc::new(Int64Array::from(order_ids.clone()))),
        ("customer_id", Arc::new(Int64Array::from(o_cust.clone()))),
        ("created_at", ts(o_created.clone())),
        ("amount", Arc::new(Float64Array::from(o_amount.clone()))),
        ("currency", strings(vec!["USD".to_string(); orders_n])),
        ("status", strings(o_status)),
        (
            "channel",
            strings(
                (0..orders_n)
                    .map(|_| {
                        pick(
                            &mut rng,
                            &["web", "app", "sales", "partner"],
                            &[55, 25, 15, 5],
                        )
                        .to_string()
                    })
                    .collect(),
            ),
        ),
        (
            "item_count",
            Arc::new(Int64Array::from(
                (0..orders_n)
                    .map(|_| rng.random_range(1..8))
                    .collect::<Vec<i64>>(),
            )),
        ),
    ]);
    let invoices = batch(vec![
        (
            "invoice_id",
            Arc::new(Int64Array::from(
                order_ids
                    .iter()
                    .map(|i| i + 10_000_000_000)
                    .collect::<Vec<i64>>(),
            )),
        ),
        ("order_id", Arc::new(Int64Array::from(order_ids))),
        ("customer_id", Arc::new(Int64Array::from(o_cust))),
        ("issued_at", ts(o_created)),
        ("due_at", ts(i_due)),
        ("paid_at", ts_opt(i_paid)),
        (
            "amount",
            Arc::new(Float64Array::from(
                o_amount
                    .iter()
                    .map(|a| (a * 108.0_f64).round() / 100.0)
                    .collect::<Vec<f64>>(),
            )),
        ),
        ("status", strings(i_status)),
    ]);
    // Support tickets and their metrics: about 0.6 per customer.
    let tickets_n = n * 6 / 10;
    let (mut t_req, mut t_created, mut t_status, mut t_priority, mut t_sat) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut m_reply, mut m_first, mut m_full, mut m_reopens) = (vec![], vec![], vec![], vec![]);
    for _ in 0..tickets_n {
        let c = rng.random_range(0..n);
        t_req.push(c as i64 + 1);
        t_created.push(created[c] + rng.random_range(0..(END_MICROS - created[c]).max(1)));
        let status = pick(
            &mut rng,
            &["new", "open", "pending", "solved", "closed"],
            &[5, 5, 5, 25, 60],
        );
        let solved = status == "solved" || status == "closed";
        t_status.push(status.to_string());
        t_priority.push(
            pick(
                &mut rng,
                &["low", "normal", "high", "urgent"],
                &[20, 55, 20, 5],
            )
            .to_string(),
        );
        t_sat.push(
            if solved {
                pick(
                    &mut rng,
                    &["good", "bad", "offered", "unoffered"],
                    &[30, 8, 22, 40],
                )
            } else {
                "unoffered"
            }
            .to_string(),
        );
        let full: i64 = rng.random_range(30..5000);
        m_reply.push(rng.random_range(1..600));
        m_first.push(solved.then(|| full * rng.random_range(20..100) / 100));
        m_full.push(solved.then_some(full));
        m_reopens.push(
            pick(&mut rng, &["0", "1", "2"], &[85, 12, 3])
                .parse::<i64>()
                .expect("a number"),
        );
    }
    let ticket_ids: Vec<i64> = (1..=tickets_n as i64).collect();
    let tickets = batch(vec![
        ("id", Arc::new(Int64Array::from(ticket_ids.clone()))),
        ("requester_id", Arc::new(Int64Array::from(t_req))),
        ("created_at", ts(t_created.clone())),
        ("status", strings(t_status)),
        ("priority", strings(t_priority)),
        ("satisfaction_rating_score", strings(t_sat)),
    ]);
    let metrics = batch(vec![
        (
            "id",
            Arc::new(Int64Array::from(
                ticket_ids
                    .iter()
                    .map(|i| i + 500_000_000)
                    .collect::<Vec<i64>>(),
            )),
        ),
        ("ticket_id", Arc::new(Int64Array::from(ticket_ids))),
        ("created_at", ts(t_created)),
        (
            "reply_time_in_minutes_calendar",
            Arc::new(Int64Array::from(m_reply)),
        ),
        (
            "first_resolution_time_in_minutes_calendar",
            Arc::new(Int64Array::from(m_first)),
        ),
        (
            "full_resolution_time_in_minutes_calendar",
            Arc::new(Int64Array::from(m_full)),
        ),
        ("reopens", Arc::new(Int64Array::from(m_reopens))),
        (
            "replies",
            Arc::new(Int64Array::from(
                (0..tickets_n)
                    .map(|_| rng.random_range(1..12))
                    .collect::<Vec<i64>>(),
            )),
        ),
    ]);
    // Web (60%) and device (40%) events over the last 90 days.
    let events_n = n * 20;
    let web_n = events_n * 6 / 10;
    let paths = [
        "/",
        "/pricing",
        "/docs/start",
        "/docs/api",
        "/blog",
        "/app",
        "/signup",
    ];
    let (mut w_cust, mut w_session, mut w_ts) = (vec![], vec![], vec![]);
    for _ in 0..web_n {
        let c = rng.random_range(0..n) as i64 + 1;
        let known = rng.random_bool(0.6);
        let t = END_MICROS - rng.random_range(1..90 * DAY);
        w_cust.push(known.then_some(c));
        w_session.push(c * 1000 + (t / (30 * 60_000_000)) % 1000);
        w_ts.push(t);
    }
    let webevents = batch(vec![
        (
            "event_id",
            Arc::new(Int64Array::from((1..=web_n as i64).collect::<Vec<i64>>())),
        ),
        ("customer_id", Arc::new(Int64Array::from(w_cust))),
        ("session_id", Arc::new(Int64Array::from(w_session))),
        (
            "event_type",
            strings(
                (0..web_n)
                    .map(|_| {
                        pick(
                            &mut rng,
                            &[
                                "page_view",
                                "click",
                                "form_submit",
                                "login",
                                "signup",
                                "feature_use",
                                "search",
                            ],
                            &[45, 20, 5, 8, 2, 15, 5],
                        )
                        .to_string()
                    })
                    .collect(),
            ),
        ),
        (
            "path",
            strings(
                (0..web_n)
                    .map(|_| paths[rng.random_range(0..paths.len())].to_string())
                    .collect(),
            ),
        ),
        (
            "referrer",
            strings(
                (0..web_n)
                    .map(|_| {
                        ["", "google.com", "news.ycombinator.com", "twitter.com"]
                            [rng.random_range(0..4)]
                        .to_string()
                    })
                    .collect(),
            ),
        ),
        ("ts", ts(w_ts)),
    ]);
    let dev_n = events_n - web_n;
    let devices = (n / 2).max(1);
    let dev: Vec<usize> = (0..dev_n).map(|_| rng.random_range(0..devices)).collect();
    let deviceevents = batch(vec![
        (
            "device_id",
            strings(dev.iter().map(|d| format!("dev-{d}")).collect()),
        ),
        (
            "customer_id",
            Arc::new(Int64Array::from(
                dev.iter()
                    .map(|d| (d * 2 % n) as i64 + 1)
                    .collect::<Vec<i64>>(),
            )),
        ),
        (
            "ts",
            ts((0..dev_n)
                .map(|_| END_MICROS - rng.random_range(1..90 * DAY))
                .collect()),
        ),
        (
            "event_type",
            strings(
                (0..dev_n)
                    .map(|_| {
                        pick(
                            &mut rng,
                            &["heartbeat", "error", "boot", "update"],
                            &[90, 4, 4, 2],
                        )
                        .to_string()
                    })
                    .collect(),
            ),
        ),
    ]);
    for (name, rows) in [
        ("billingdb.customers", customers),
        ("billingdb.orders", orders),
        ("billingdb.invoices", invoices),
        ("zendesk.tickets", tickets),
        ("zendesk.ticket_metrics", metrics),
        ("events.webevents", webevents),
        ("events.deviceevents", deviceevents),
    ] {
        let table: TableName = name.parse()?;
        lake.overwrite(&table, vec![rows]).await?;
    }
    Ok(())
}
