//! `tideway bench collect`: the collector end to end on loopback, with this machine's limits
//! on the same path measured in the same run (fsyncs/s of the disk, requests/s of an empty
//! handler).
//!
//! The collector is the real `tideway serve`, started in its own process on a scratch project;
//! the load generator runs in this process (both share the machine's cores). Every
//! acknowledged event is durable (fsync before the answer), as in production.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench_load::{self as load, Run};

/// How requests are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// `/v1/batch` with the workload's 100-event batch files.
    Batch,
    /// `/v1/track` with one event per request.
    Track,
}

pub struct Options {
    pub data: PathBuf,
    pub shape: Shape,
    pub events: usize,
    pub connections: usize,
    /// Requests per second in total (open loop); `None`: as fast as acknowledged.
    pub rate: Option<f64>,
    pub dir: PathBuf,
}

/// One request body and the events in it.
struct Body {
    bytes: bytes::Bytes,
    events: u64,
    /// Where each `messageId` value's closing quote is, so a body sent again gets new ids
    /// (a repeated id would be dropped as a duplicate, which is cheaper than storing it).
    id_ends: Vec<usize>,
}

impl Body {
    fn new(bytes: Vec<u8>, events: u64) -> Body {
        const KEY: &[u8] = b"\"messageId\":\"";
        let mut id_ends = Vec::new();
        let mut at = 0;
        while let Some(p) = find(&bytes[at..], KEY) {
            let start = at + p + KEY.len();
            let Some(len) = bytes[start..].iter().position(|b| *b == b'"') else {
                break;
            };
            if len >= 8 {
                id_ends.push(start + len);
            }
            at = start + len;
        }
        Body {
            bytes: bytes.into(),
            events,
            id_ends,
        }
    }

    /// The body for its `round`-th use: the last 8 characters of each id carry the round.
    fn for_round(&self, round: usize) -> bytes::Bytes {
        if round == 0 {
            return self.bytes.clone();
        }
        let mut b = self.bytes.to_vec();
        let tag = format!("{:08x}", round as u32);
        for end in &self.id_ends {
            b[end - 8..*end].copy_from_slice(tag.as_bytes());
        }
        b.into()
    }
}

/// Posts `bodies` round-robin to `url` (see [`load::drive`]).
async fn drive(
    url: &str,
    bodies: Arc<Vec<Body>>,
    total_requests: usize,
    connections: usize,
    rate: Option<f64>,
) -> Result<Run> {
    let url = url.to_string();
    load::drive(total_requests, connections, rate, move |client, i| {
        let body = &bodies[i % bodies.len()];
        let request = client
            .post(&url)
            .basic_auth("wk_bench", Some(""))
            .header("content-type", "application/json")
            .body(body.for_round(i / bodies.len()));
        (request, body.events)
    })
    .await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn load_bodies(data: &Path, shape: Shape, events: usize) -> Result<Vec<Body>> {
    let mut bodies = Vec::new();
    let mut total = 0usize;
    match shape {
        Shape::Batch => {
            let mut parts: Vec<PathBuf> = std::fs::read_dir(data.join("events/batch"))
                .with_context(|| {
                    format!(
                        "no events/batch in {} (run gen.py, see ../shared/bench/README.md)",
                        data.display()
                    )
                })?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()?;
            parts.sort();
            'outer: for part in parts {
                let mut files: Vec<PathBuf> = std::fs::read_dir(&part)?
                    .map(|e| e.map(|e| e.path()))
                    .collect::<std::io::Result<_>>()?;
                files.sort();
                for f in files {
                    let text = std::fs::read(&f)?;
                    let v: serde_json::Value = serde_json::from_slice(&text)?;
                    let n = v["batch"].as_array().map_or(0, Vec::len);
                    bodies.push(Body::new(text, n as u64));
                    total += n;
                    if total >= events {
                        break 'outer;
                    }
                }
            }
        }
        Shape::Track => {
            let mut parts: Vec<PathBuf> = std::fs::read_dir(data.join("events/ndjson"))
                .with_context(|| format!("no events/ndjson in {}", data.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()?;
            parts.sort();
            'outer2: for part in parts {
                let text = std::fs::read_to_string(&part)?;
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let mut v: serde_json::Value = serde_json::from_str(line)?;
                    if v["type"] != "track" {
                        continue;
                    }
                    v.as_object_mut().map(|o| o.remove("type"));
                    bodies.push(Body::new(serde_json::to_vec(&v)?, 1));
                    total += 1;
                    if total >= events {
                        break 'outer2;
                    }
                }
            }
        }
    }
    if bodies.is_empty() {
        bail!("no events found under {}", data.display());
    }
    Ok(bodies)
}

/// fdatasync()s per second of the disk under `dir`: 4 KiB appends, each synced.
fn fsync_rate(dir: &Path) -> Result<f64> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![0u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(rate)
}

fn peak_rss_mib(status: &str) -> f64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub async fn run(o: Options) -> Result<()> {
    let bodies = Arc::new(load_bodies(&o.data, o.shape, o.events)?);
    let per_body = bodies.iter().map(|b| b.events).sum::<u64>() as f64 / bodies.len() as f64;
    let total_requests = (o.events as f64 / per_body).ceil() as usize;
    let bytes: usize = bodies.iter().map(|b| b.bytes.len()).sum();
    println!(
        "collect bench: {} events as {} {:?} requests ({:.0} B/request), {} connections{}",
        o.events,
        total_requests,
        o.shape,
        bytes as f64 / bodies.len() as f64,
        o.connections,
        o.rate
            .map_or(String::new(), |r| format!(", paced at {r:.0} requests/s"))
    );

    std::fs::create_dir_all(&o.dir)?;
    let fsyncs = fsync_rate(&o.dir)?;

    // The empty handler: the HTTP stack alone, same client, same concurrency.
    let empty = axum::Router::new().route(
        "/v1/batch",
        axum::routing::post(|| async { "{\"success\":true}" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let empty_url = format!("http://{}/v1/batch", listener.local_addr()?);
    let empty_server = tokio::spawn(async move { axum::serve(listener, empty).await });
    let empty_requests = total_requests.min(200_000);
    let empty_run = drive(
        &empty_url,
        bodies.clone(),
        empty_requests,
        o.connections,
        None,
    )
    .await?;
    empty_server.abort();

    // The collector under test: the real `tideway serve`, in its own process, so that its
    // memory is measured apart from the load generator's.
    let project = o.dir.join("project");
    std::fs::create_dir_all(&project)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    std::fs::write(
        project.join("tideway.toml"),
        format!(
            "[collect]\nlisten = \"{addr}\"\nlog_budget_mb = 8192\nload_batch_seconds = 2\n\n[collect.sources.bench]\nwrite_key = \"wk_bench\"\n"
        ),
    )?;
    let mut server = std::process::Command::new(std::env::current_exe()?)
        .arg("--project")
        .arg(&project)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(o.dir.join("serve.log"))?)
        .spawn()
        .context("cannot start `tideway serve`")?;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let health = |client: reqwest::Client, base: String| async move {
        let v: serde_json::Value = client
            .get(format!("{base}/health"))
            .send()
            .await?
            .json()
            .await?;
        Ok::<_, anyhow::Error>(v)
    };
    let up = Instant::now();
    while health(client.clone(), base.clone()).await.is_err() {
        if up.elapsed() > Duration::from_secs(60) {
            let _ = server.kill();
            bail!(
                "`tideway serve` did not come up; see {}",
                o.dir.join("serve.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = match o.shape {
        Shape::Batch => "/v1/batch",
        Shape::Track => "/v1/track",
    };
    let fsync_before = fsync_count(&client, &base).await;
    let run = drive(
        &format!("{base}{path}"),
        bodies.clone(),
        total_requests,
        o.connections,
        o.rate,
    )
    .await?;
    let acked_at = Instant::now();
    let syncs = fsync_count(&client, &base)
        .await
        .saturating_sub(fsync_before);
    loop {
        let h = health(client.clone(), base.clone()).await?;
        if h["loader_offset"].as_u64() >= h["log_end"].as_u64() {
            break;
        }
        if acked_at.elapsed() > Duration::from_secs(600) {
            bail!("the loader did not catch up within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lag = acked_at.elapsed();
    let server_rss = peak_rss_mib(&format!("/proc/{}/status", server.id()));
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()?;
    anyhow::ensure!(stopped.success(), "cannot stop the collector");
    let exit = server.wait()?;
    anyhow::ensure!(
        exit.success(),
        "`tideway serve` failed: {exit}; see {}",
        o.dir.join("serve.log").display()
    );

    let secs = run.elapsed.as_secs_f64();
    let rps = run.requests as f64 / secs;
    let eps = run.events as f64 / secs;
    let empty_rps = empty_run.requests as f64 / empty_run.elapsed.as_secs_f64();
    println!();
    println!("machine limits (same run):");
    println!("  disk fdatasync rate           {fsyncs:>10.0} /s");
    println!(
        "  empty HTTP handler            {empty_rps:>10.0} requests/s  (p50 {:.2?}, p99 {:.2?})",
        empty_run.percentile(0.5),
        empty_run.percentile(0.99)
    );
    println!("tideway collect:");
    println!(
        "  accepted                      {eps:>10.0} events/s   ({} events in {secs:.2} s, {} failed requests)",
        run.events, run.failed
    );
    println!(
        "  requests                      {rps:>10.0} /s         ({:.0}% of the empty handler)",
        100.0 * rps / empty_rps
    );
    println!(
        "  ack latency                   p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        run.percentile(0.5),
        run.percentile(0.99),
        run.percentile(1.0)
    );
    if syncs > 0 {
        println!(
            "  group commit                  {:.1} requests per fdatasync ({syncs} syncs; {:.0}% of the disk's sync rate used)",
            run.requests as f64 / syncs as f64,
            100.0 * syncs as f64 / secs / fsyncs
        );
    }
    println!("  lag, last ack to in the lake  {lag:.2?}");
    println!(
        "  peak RSS of `tideway serve`   {server_rss:.0} MiB  (load generator: {:.0} MiB)",
        peak_rss_mib("/proc/self/status")
    );
    Ok(())
}

/// fdatasync calls the collector's log made so far (its metrics histogram count).
async fn fsync_count(client: &reqwest::Client, base: &str) -> u64 {
    let Ok(resp) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find(|l| {
            l.starts_with(&format!(
                "{}_count",
                tideway_collect::metrics::LOG_FSYNC_SECONDS
            ))
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}
