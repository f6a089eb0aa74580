//! The demo's collect step: simulated web and app traffic sent through the real HTTP API, as
//! analytics.js and a mobile SDK send it, then loaded into the lake by the real loader.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tideway_activate::fake::webhook::{SinkOptions, WebhookSink};
use tideway_collect::service::Service;
use tideway_lake::Lake;

use crate::project::Project;

/// The demo's collect settings, appended to the scaffold's tideway.toml, which ends in its
/// `[collect]` section.
pub const COLLECT_TOML: &str = r#"load_batch_seconds = 0.5

[collect.sources.web]
write_key = "wk_demo_web"

[collect.sources.app]
write_key = "wk_demo_app"
"#;

const PAGES: &[(&str, &str)] = &[
    ("/", "Home"),
    ("/pricing", "Pricing"),
    ("/docs", "Docs"),
    ("/blog/launch", "Launch"),
    ("/signup", "Sign Up"),
];
const APP_EVENTS: &[&str] = &[
    "Workout Started",
    "Workout Completed",
    "Goal Set",
    "Order Completed",
];

/// A local webhook receiver standing in for the tool the live connection feeds.
pub async fn start_hook() -> Result<WebhookSink> {
    WebhookSink::start(SinkOptions::default())
        .await
        .context("cannot start the local webhook receiver")
}

/// The live connection of the demo: the app's orders, forwarded as they arrive.
pub fn connections_toml(hook: &WebhookSink) -> String {
    format!(
        "\n# A local webhook receiver started by `tideway demo` (gone when it ends).\n\
         [destinations.live_hook]\ntype = \"webhook\"\nurl = \"{}\"\n\n\
         # Live forwarding: every \"Order Completed\" the app sends, on to the webhook within seconds.\n\
         [connections.app_orders]\nsource = \"app\"\ndestination = \"live_hook\"\ntypes = [\"track\"]\n\
         events = [\"Order Completed\"]\nstart = \"earliest\"\n",
        hook.url
    )
}

/// What was sent.
#[derive(Debug, Default)]
pub struct Traffic {
    pub requests: u64,
    pub events: u64,
    pub rejected: u64,
    /// Events the live connection delivered to the webhook.
    pub forwarded: u64,
    /// Of those, delivered before the last request was answered.
    pub forwarded_during: u64,
}

/// Starts the collector on a free loopback port, sends traffic, stops it (which loads what
/// it received into the lake).
pub async fn run(
    project: &Project,
    lake: Lake,
    customers: usize,
    hook: &WebhookSink,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Traffic> {
    let config = project.config.collect.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = Service::start(lake, &config, &project.dir.join(&config.log_dir)).await?;
    let log = service.log();
    let (connections, running) = crate::sync::start_connections(project, log.clone(), env).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(service.serve(listener, async {
        let _ = stopped.await;
    }));
    let mut traffic = send(addr, customers).await;
    if let Ok(t) = &mut traffic {
        t.forwarded_during = hook.event_count() as u64;
        // Every connection catches up with what was accepted.
        let end = log.stats().end;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while running.iter().any(|c| c.position() < end) {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the live connection did not catch up within 60 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        t.forwarded = hook.event_count() as u64;
    }
    connections.iter().for_each(|c| c.abort());
    let _ = stop.send(());
    serving.await.context("the collector task failed")??;
    traffic
}

async fn send(addr: SocketAddr, customers: usize) -> Result<Traffic> {
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut rng = StdRng::seed_from_u64(7);
    let mut t = Traffic::default();
    let now = chrono::Utc::now();
    let visitors = (customers / 4).max(10);
    // Web: analytics.js posts one event per request, `text/plain`, the write key in the body.
    for v in 0..visitors {
        let anon = format!("anon-{v:05}");
        // A third of the visitors log in as customer n, whose e-mail is the one Kustomer has
        // for its customer n: unify joins them.
        let n = (v % 3 == 0).then(|| rng.random_range(0..customers));
        let user = n.map(|n| format!("cus_{n:05}"));
        for _ in 0..rng.random_range(1..6) {
            let (path, title) = PAGES[rng.random_range(0..PAGES.len())];
            let sent = now - chrono::TimeDelta::seconds(rng.random_range(0..86_400));
            let body = json!({
                "type": "page", "anonymousId": anon, "userId": user, "name": title,
                "properties": {"path": path, "url": format!("https://shop.example{path}"), "title": title},
                "context": {"library": {"name": "analytics.js", "version": "next-1.84.1"},
                            "page": {"path": path, "url": format!("https://shop.example{path}")},
                            "userAgent": "Mozilla/5.0 (Macintosh)", "locale": "en-US"},
                "messageId": format!("ajs-next-{}", uuid::Uuid::new_v4().simple()),
                "timestamp": sent.to_rfc3339(), "sentAt": sent.to_rfc3339(),
                "writeKey": "wk_demo_web",
            });
            post(
                &client,
                &format!("{base}/v1/p"),
                body.to_string().into_bytes(),
                None,
                &mut t,
                1,
            )
            .await?;
        }
        if let Some(user) = &user {
            let plan = ["free", "pro"][v % 2];
            let body = json!({
                "type": "identify", "anonymousId": anon, "userId": user,
                "traits": {"email": format!("Customer{}@Example.com", n.unwrap_or_default()), "plan": plan},
                "writeKey": "wk_demo_web",
            });
            post(
                &client,
                &format!("{base}/v1/i"),
                body.to_string().into_bytes(),
                None,
                &mut t,
                1,
            )
            .await?;
        }
    }
    // App: a mobile SDK sends gzip batches to /v1/b with the key in the body.
    // One event a buggy client sent without its name: stored as a dead letter, not lost,
    // while the rest of its batch is accepted.
    let mut batch =
        vec![json!({"type": "track", "userId": "cus_00001", "properties": {"oops": true}})];
    for i in 0..customers * 2 {
        let user = format!("cus_{:05}", rng.random_range(0..customers));
        let event = APP_EVENTS[rng.random_range(0..APP_EVENTS.len())];
        let mut properties = json!({"duration_min": rng.random_range(5..90)});
        if event == "Order Completed" {
            properties = json!({"revenue": (rng.random_range(500..20_000) as f64) / 100.0, "currency": "USD"});
        }
        batch.push(json!({
            "type": "track", "userId": user, "event": event, "properties": properties,
            "context": {"library": {"name": "analytics-kotlin", "version": "1.24.1"},
                        "os": {"name": "Android", "version": "15"}, "app": {"version": "3.2.0"}},
            "messageId": uuid::Uuid::new_v4().to_string(),
            "timestamp": (now - chrono::TimeDelta::seconds(i as i64)).to_rfc3339(),
        }));
        if batch.len() == 100 {
            send_batch(&client, &base, std::mem::take(&mut batch), &mut t).await?;
        }
    }
    if !batch.is_empty() {
        send_batch(&client, &base, batch, &mut t).await?;
    }
    Ok(t)
}

async fn send_batch(
    client: &reqwest::Client,
    base: &str,
    batch: Vec<serde_json::Value>,
    t: &mut Traffic,
) -> Result<()> {
    let n = batch.len() as u64;
    let body = json!({"batch": batch, "sentAt": chrono::Utc::now().to_rfc3339(), "writeKey": "wk_demo_app"});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body.to_string().as_bytes())?;
    post(
        client,
        &format!("{base}/v1/b"),
        gz.finish()?,
        Some("gzip"),
        t,
        n,
    )
    .await
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    encoding: Option<&str>,
    t: &mut Traffic,
    events: u64,
) -> Result<()> {
    let mut req = client
        .post(url)
        .header("content-type", "text/plain")
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "POST {url}: {status} {answer}");
    let rejected = answer["rejected"].as_array().map_or(0, |r| r.len() as u64);
    t.requests += 1;
    t.events += events - rejected;
    t.rejected += rejected;
    Ok(())
}
