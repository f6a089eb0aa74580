//! The HTTP API: what the official SDKs send (tests/fixtures/sdk) and every error answer.
//!
//! Fixture requests are replayed against a real server; the rows they become are compared with
//! `tests/golden/http/<fixture>.out` (`TIDEWAY_BLESS=1` rewrites them; review the diff).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use tideway_collect::api::{Collector, router};
use tideway_collect::dedupe::Dedupe;
use tideway_collect::loader::{Loader, LoaderOptions};
use tideway_collect::log::{EventLog, FileLog, FileLogOptions};
use tideway_core::config::{CollectConfig, CollectSource, Secret};
use tideway_lake::{Lake, SqlOutput};

pub struct Server {
    pub url: String,
    pub log: Arc<FileLog>,
    pub lake: Lake,
    pub _dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

pub fn config() -> CollectConfig {
    let mut c = CollectConfig::default();
    for (name, key) in [("web", "wk_test_web"), ("server", "wk_test_server")] {
        c.sources.insert(
            name.into(),
            CollectSource {
                write_key: Secret::new(key),
            },
        );
    }
    c
}

pub async fn start(config: CollectConfig, log_options: FileLogOptions) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(FileLog::open(dir.path().join("log"), log_options).unwrap());
    let lake = Lake::open(
        dir.path().join("lake").to_str().unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    let collector = Collector::new(config, log.clone(), Dedupe::new(86_400, 1_000_000));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(Arc::new(collector))).await });
    Server {
        url,
        log,
        lake,
        _dir: dir,
        client: reqwest::Client::new(),
    }
}

impl Server {
    pub async fn load(&self) {
        let mut loader = Loader::new(
            self.lake.clone(),
            self.log.clone(),
            LoaderOptions::default(),
        )
        .await
        .unwrap();
        loader.drain().await.unwrap();
    }

    pub async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.url))
            .body(body.to_string());
        if let Some(k) = key {
            req = req.basic_auth(k, Some(""));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn query(&self, sql: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        match self.lake.sql(sql).await.unwrap() {
            SqlOutput::Rows(r) => {
                let mut out = Vec::new();
                let mut w = deltalake::arrow::json::ArrayWriter::new(Vec::new());
                for b in &r.batches {
                    w.write(b).unwrap();
                }
                w.finish().unwrap();
                let bytes = w.into_inner();
                if !bytes.is_empty() {
                    out = serde_json::from_slice(&bytes).unwrap();
                }
                out
            }
            other => panic!("{other:?}"),
        }
    }
}

struct Fixture {
    gzip: bool,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn parse_fixture(text: &str) -> Fixture {
    let mut gzip = false;
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.peek() {
        if l.starts_with('#') {
            gzip |= l.trim() == "# gzip: true";
            lines.next();
        } else {
            break;
        }
    }
    let request = lines.next().unwrap();
    let (method, path) = request.split_once(' ').unwrap();
    let mut headers = Vec::new();
    for l in lines.by_ref() {
        if l.trim().is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let body: Vec<&str> = lines.collect();
    Fixture {
        gzip,
        method: method.to_string(),
        path: path.trim().to_string(),
        headers,
        body: body.join("\n"),
    }
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdk");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "http"))
        .collect();
    files.sort();
    files
}

/// Columns whose values depend on when the test ran.
const VOLATILE: &[&str] = &["received_at", "uuid_ts", "timestamp"];

#[tokio::test]
async fn sdk_payloads_land_in_the_warehouse_schema() {
    let bless = std::env::var_os("TIDEWAY_BLESS").is_some();
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/http");
    std::fs::create_dir_all(&golden_dir).unwrap();
    let mut failures = Vec::new();
    for path in fixtures() {
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let f = parse_fixture(&std::fs::read_to_string(&path).unwrap());
        let server = start(config(), FileLogOptions::default()).await;
        let mut req = server.client.request(
            f.method.parse().unwrap(),
            format!("{}{}", server.url, f.path),
        );
        for (k, v) in &f.headers {
            if !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("host") {
                req = req.header(k, v);
            }
        }
        let body = if f.gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(f.body.as_bytes()).unwrap();
            e.finish().unwrap()
        } else {
            f.body.clone().into_bytes()
        };
        let resp = req.body(body).send().await.unwrap();
        let status = resp.status().as_u16();
        let answer = resp
            .text()
            .await
            .unwrap()
            .replace(server.url.trim_start_matches("http://"), "<host>");
        let mut out = format!("{} {}\n=> {status} {answer}\n", f.method, f.path);
        if f.method == "POST" {
            server.load().await;
            let mut tables: BTreeMap<String, String> = BTreeMap::new();
            for t in server.lake.tables().await.unwrap() {
                tables.insert(t.to_string(), t.to_string());
            }
            for t in tables.keys() {
                out.push_str(&format!("\n-- {t}\n"));
                let rows = server.query(&format!("SELECT * FROM {t}")).await;
                let schema = server.lake.schema(&t.parse().unwrap()).await.unwrap();
                let cols: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| {
                        format!(
                            "{} {}",
                            f.name(),
                            tideway_lake::evolve::type_label(f.data_type())
                        )
                    })
                    .collect();
                out.push_str(&format!("columns: {}\n", cols.join(", ")));
                let mut lines: Vec<String> = rows
                    .into_iter()
                    .map(|mut r| {
                        for v in VOLATILE {
                            if r.contains_key(*v) {
                                r.insert(v.to_string(), "<now>".into());
                            }
                        }
                        r.remove("failed_at");
                        if let Some(serde_json::Value::String(id)) = r.get("id")
                            && id.starts_with("tw-")
                        {
                            r.insert("id".into(), "<generated>".into());
                        }
                        serde_json::to_string(&r).unwrap()
                    })
                    .collect();
                lines.sort();
                for l in lines {
                    out.push_str(&l);
                    out.push('\n');
                }
            }
        }
        let golden = golden_dir.join(format!("{name}.out"));
        if bless {
            std::fs::write(&golden, &out).unwrap();
        } else {
            let want = std::fs::read_to_string(&golden).unwrap_or_default();
            if want != out {
                failures.push(format!(
                    "{name}: output differs from {}\n--- got:\n{out}",
                    golden.display()
                ));
            }
        }
        assert!(
            f.method != "POST" || status == 200,
            "{name}: every SDK payload is accepted, got {status} {answer}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} (TIDEWAY_BLESS=1 regenerates)",
        failures.join("\n")
    );
}

fn b64(key: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
}

#[tokio::test]
async fn every_error_answer() {
    let mut config = config();
    config.max_request_bytes = 64 * 1024;
    config.max_event_bytes = 2048;
    let s = start(config, FileLogOptions::default()).await;
    let k = Some("wk_test_server");
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        ("/v1/track", None, r#"{"userId":"u","event":"x"}"#.into(), 401, "missing_write_key"),
        ("/v1/track", Some("nope"), r#"{"userId":"u","event":"x"}"#.into(), 401, "invalid_write_key"),
        ("/v1/track", None, r#"{"writeKey":"nope","userId":"u","event":"x"}"#.into(), 401, "invalid_write_key"),
        ("/v1/track", k, r#"{"userId":"u","event":"#.into(), 400, "invalid_json"),
        ("/v1/track", k, r#"[1,2,3]"#.into(), 400, "invalid_json"),
        ("/v1/track", k, r#"{"userId":"u"}"#.into(), 400, "missing_field"),
        ("/v1/track", k, r#"{"userId":"u","event":{"a":1}}"#.into(), 400, "invalid_type"),
        ("/v1/identify", k, r#"{"traits":{}}"#.into(), 400, "missing_field"),
        ("/v1/group", k, r#"{"userId":"u"}"#.into(), 400, "missing_field"),
        ("/v1/alias", k, r#"{"userId":"u"}"#.into(), 400, "missing_field"),
        ("/v1/page", k, r#"{"userId":"u","properties":"x"}"#.into(), 400, "invalid_type"),
        ("/v1/screen", k, r#"{"anonymousId":"a","timestamp":"soon"}"#.into(), 400, "invalid_value"),
        ("/v1/batch", k, r#"{"sentAt":"2026-11-25T00:00:00Z"}"#.into(), 400, "missing_field"),
        ("/v1/batch", k, r#"{"batch":[{"type":"trak","userId":"u"}]}"#.into(), 400, "invalid_value"),
        ("/v1/track", k, format!(r#"{{"userId":"u","event":"x","properties":{{"s":"{}"}}}}"#, "a".repeat(3000)), 400, "too_large"),
        ("/v1/batch", k, format!(r#"{{"batch":[{}]}}"#, vec![r#"{"type":"track","userId":"u","event":"x","properties":{"s":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}"#; 1000].join(",")), 413, "request_too_large"),
        ("/v1/track", k, format!("{}{}", "[".repeat(200), "]".repeat(200)), 400, "invalid_json"),
    ];
    for (path, key, body, status, code) in cases {
        let (got, answer) = s.post(path, key, &body).await;
        assert_eq!(
            got,
            status,
            "{path} {}: {answer}",
            &body[..body.len().min(80)]
        );
        assert_eq!(answer["code"], code, "{path}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }
    // The message of a field error names the field.
    let (_, answer) = s.post("/v1/track", k, r#"{"userId":"u","event":5}"#).await;
    assert!(
        answer["message"].as_str().unwrap().contains("`event`"),
        "{answer}"
    );

    // Invalid UTF-8 is a clear 400.
    let resp = s
        .client
        .post(format!("{}/v1/track", s.url))
        .header("authorization", format!("Basic {}", b64("wk_test_server")))
        .body(b"{\"userId\":\"\xff\xfe\",\"event\":\"x\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // An unknown encoding and a body that is not gzip.
    let resp = s
        .client
        .post(format!("{}/v1/track", s.url))
        .header("authorization", format!("Basic {}", b64("wk_test_server")))
        .header("content-encoding", "br")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let resp = s
        .client
        .post(format!("{}/v1/track", s.url))
        .header("authorization", format!("Basic {}", b64("wk_test_server")))
        .header("content-encoding", "gzip")
        .body("not gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // A gzip bomb stops at the limit.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![b' '; 10 << 20]).unwrap();
    let resp = s
        .client
        .post(format!("{}/v1/batch", s.url))
        .header("authorization", format!("Basic {}", b64("wk_test_server")))
        .header("content-encoding", "gzip")
        .body(e.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    // Nothing above reached the lake except dead letters of rejected events.
    s.load().await;
    let tables: Vec<String> = s
        .lake
        .tables()
        .await
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(tables, vec!["_tideway.dead_letters"]);
}

#[tokio::test]
async fn a_partly_invalid_batch_stores_the_valid_events_and_dead_letters_the_rest() {
    let s = start(config(), FileLogOptions::default()).await;
    let body = r#"{"batch":[
        {"type":"track","userId":"u1","event":"Signed Up","messageId":"m1"},
        {"type":"track","userId":"u2","messageId":"m2"},
        {"type":"identify","userId":"u3","traits":{"plan":"pro"},"messageId":"m3"},
        {"type":"nope","userId":"u4","messageId":"m4"},
        "not an event"
    ],"sentAt":"2026-11-25T12:00:00Z"}"#;
    let (status, answer) = s.post("/v1/batch", Some("wk_test_server"), body).await;
    assert_eq!(status, 200, "{answer}");
    let rejected: Vec<(u64, String)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        vec![(1, "event".into()), (3, "type".into()), (4, "".into())]
    );
    s.load().await;
    let tracks = s.query("SELECT id FROM server.tracks").await;
    assert_eq!(tracks.len(), 1);
    let users = s.query("SELECT id, plan FROM server.users").await;
    assert_eq!(users[0]["plan"], "pro");
    let dead = s
        .query("SELECT code, field, payload FROM _tideway.dead_letters ORDER BY log_offset")
        .await;
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert_eq!(dead[0]["field"], "event");
    assert!(dead[0]["payload"].as_str().unwrap().contains("\"m2\""));
    assert_eq!(dead[2]["payload"], "\"not an event\"");
}

#[tokio::test]
async fn repeated_message_ids_are_stored_once() {
    let s = start(config(), FileLogOptions::default()).await;
    let body = r#"{"batch":[{"type":"track","userId":"u1","event":"A","messageId":"same"}]}"#;
    for _ in 0..3 {
        let (status, _) = s.post("/v1/batch", Some("wk_test_server"), body).await;
        assert_eq!(status, 200);
    }
    // The other source's id space is its own.
    let (status, _) = s.post("/v1/batch", Some("wk_test_web"), body).await;
    assert_eq!(status, 200);
    s.load().await;
    assert_eq!(s.query("SELECT * FROM server.tracks").await.len(), 1);
    assert_eq!(s.query("SELECT * FROM web.tracks").await.len(), 1);
}

#[tokio::test]
async fn a_full_log_answers_429_with_retry_after() {
    let s = start(
        config(),
        FileLogOptions {
            segment_bytes: 1 << 20,
            budget_bytes: 2000,
            max_group_bytes: 1 << 20,
        },
    )
    .await;
    let body = r#"{"userId":"u1","event":"A","properties":{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let resp = s
            .client
            .post(format!("{}/v1/track", s.url))
            .basic_auth("wk_test_server", Some(""))
            .body(body)
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            assert_eq!(resp.headers()["retry-after"], "5");
        }
        statuses.push(resp.status().as_u16());
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );
    let accepted = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(
        s.log.stats().end,
        accepted,
        "a refused request stored nothing"
    );
}

#[tokio::test]
async fn settings_cors_health_and_metrics() {
    let s = start(config(), FileLogOptions::default()).await;
    let resp = s
        .client
        .get(format!("{}/v1/projects/wk_test_web/settings", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let settings: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        settings["integrations"]["Segment.io"]["apiKey"],
        "wk_test_web"
    );
    assert!(
        settings["integrations"]["Segment.io"]["apiHost"]
            .as_str()
            .unwrap()
            .ends_with("/v1")
    );
    assert_eq!(settings["metrics"]["sampleRate"], 0);
    let resp = s
        .client
        .get(format!("{}/v1/projects/wrong/settings", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let resp = s
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/v1/t", s.url))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-retry-count",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for want in ["authorization", "content-type", "x-retry-count"] {
        assert!(allowed.contains(want), "{allowed}");
    }

    let (status, _) = s.post("/v1/m", None, r#"{"series":[]}"#).await;
    assert_eq!(status, 200);
    let health: serde_json::Value = s
        .client
        .get(format!("{}/health", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let (status, _) = s
        .post(
            "/v1/track",
            Some("wk_test_web"),
            r#"{"userId":"u","event":"E"}"#,
        )
        .await;
    assert_eq!(status, 200);
    let metrics = s
        .client
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "tideway_collect_requests_total",
        "tideway_collect_events_received_total",
        "tideway_log_fsync_seconds",
        "tideway_log_bytes",
        "tideway_collect_request_seconds",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn every_path_accepts_its_event() {
    let s = start(config(), FileLogOptions::default()).await;
    let cases = [
        (
            "/v1/track",
            r#"{"userId":"u","event":"Clicked","messageId":"p1"}"#,
            "tracks",
        ),
        (
            "/v1/t",
            r#"{"userId":"u","event":"Clicked","messageId":"p2"}"#,
            "tracks",
        ),
        (
            "/v1/identify",
            r#"{"userId":"u","traits":{"a":1},"messageId":"p3"}"#,
            "identifies",
        ),
        (
            "/v1/i",
            r#"{"userId":"u","traits":{"a":2},"messageId":"p4"}"#,
            "identifies",
        ),
        (
            "/v1/page",
            r#"{"anonymousId":"a","name":"Home","messageId":"p5"}"#,
            "pages",
        ),
        (
            "/v1/p",
            r#"{"anonymousId":"a","name":"Home","messageId":"p6"}"#,
            "pages",
        ),
        (
            "/v1/screen",
            r#"{"anonymousId":"a","name":"Feed","messageId":"p7"}"#,
            "screens",
        ),
        (
            "/v1/s",
            r#"{"anonymousId":"a","name":"Feed","messageId":"p8"}"#,
            "screens",
        ),
        (
            "/v1/group",
            r#"{"userId":"u","groupId":"g","messageId":"p9"}"#,
            "groups",
        ),
        (
            "/v1/g",
            r#"{"userId":"u","groupId":"g","messageId":"p10"}"#,
            "groups",
        ),
        (
            "/v1/alias",
            r#"{"userId":"u","previousId":"a","messageId":"p11"}"#,
            "aliases",
        ),
        (
            "/v1/a",
            r#"{"userId":"u","previousId":"a","messageId":"p12"}"#,
            "aliases",
        ),
        (
            "/v1/batch",
            r#"{"batch":[{"type":"track","userId":"u","event":"Clicked","messageId":"p13"}]}"#,
            "tracks",
        ),
        (
            "/v1/b",
            r#"{"batch":[{"type":"screen","userId":"u","name":"X","messageId":"p14"}]}"#,
            "screens",
        ),
        (
            "/v1/import",
            r#"{"batch":[{"type":"page","userId":"u","messageId":"p15","timestamp":"2020-01-01T00:00:00Z"}]}"#,
            "pages",
        ),
        (
            "/beacon/v1/batch?writeKey=wk_test_server",
            r#"{"batch":[{"type":"group","userId":"u","groupId":"g2","messageId":"p16"}]}"#,
            "groups",
        ),
    ];
    for (path, body, _) in cases {
        let key = (!path.contains("writeKey")).then_some("wk_test_server");
        let (status, answer) = s.post(path, key, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(answer["success"], true, "{path}");
    }
    s.load().await;
    for (path, body, table) in cases {
        let id = body
            .split("\"messageId\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let rows = s
            .query(&format!("SELECT id FROM server.{table} WHERE id = '{id}'"))
            .await;
        assert_eq!(rows.len(), 1, "{path}: {id} not in server.{table}");
    }
    // /v1/import keeps the client's historical time.
    let rows = s
        .query("SELECT CAST(timestamp AS VARCHAR) AS t FROM server.pages WHERE id = 'p15'")
        .await;
    assert!(
        rows[0]["t"].as_str().unwrap().starts_with("2020-01-01"),
        "{rows:?}"
    );
}

#[tokio::test]
async fn the_dedupe_window_survives_a_restart() {
    use tideway_collect::service::Service;
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        dir.path().join("lake").to_str().unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    let log_dir = dir.path().join("log");
    let client = reqwest::Client::new();
    let body = r#"{"batch":[{"type":"track","userId":"u1","event":"A","messageId":"once"}]}"#;
    // Three lives: a clean stop (snapshot written), then a start without the snapshot (as
    // after a crash before the first snapshot: rebuilt from the log), then a normal one.
    for life in 0..3 {
        if life == 2 {
            std::fs::remove_file(log_dir.join("dedupe.snapshot")).unwrap();
        }
        let service = Service::start(lake.clone(), &config(), &log_dir)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/batch", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(service.serve(listener, async {
            let _ = stopped.await;
        }));
        let resp = client
            .post(&url)
            .basic_auth("wk_test_server", Some(""))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let _ = stop.send(());
        serving.await.unwrap().unwrap();
    }
    let rows = match lake.sql("SELECT id FROM server.tracks").await.unwrap() {
        SqlOutput::Rows(r) => r.num_rows(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        rows, 1,
        "the same messageId was stored more than once across restarts"
    );
}

/// Regression: folding a batch with thousands of users into `users` overflowed the stack
/// (an `IN` list of every id became a deeply nested delta-rs predicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_keep_the_latest_non_null_trait_over_thousands_of_users() {
    let s = start(config(), FileLogOptions::default()).await;
    let n = 3000;
    let batch = |day: u32| {
        let events: Vec<String> = (0..n)
            .map(|i| {
                let traits = if day == 1 {
                    format!(r#"{{"email":"u{i}@x.io","plan":"free","admin":false}}"#)
                } else {
                    r#"{"plan":"pro"}"#.to_string()
                };
                format!(r#"{{"type":"identify","userId":"u{i}","messageId":"d{day}-{i}","traits":{traits}}}"#)
            })
            .collect();
        format!(r#"{{"batch":[{}]}}"#, events.join(","))
    };
    for day in 1..=2 {
        let (status, answer) = s
            .post("/v1/batch", Some("wk_test_server"), &batch(day))
            .await;
        assert_eq!(status, 200, "{answer}");
        s.load().await;
    }
    let rows = s
        .query("SELECT count(*) AS n, count(email) AS emails, sum(CASE WHEN plan = 'pro' THEN 1 ELSE 0 END) AS pro, count(admin) AS admins FROM server.users")
        .await;
    assert_eq!(rows[0]["n"], n);
    assert_eq!(rows[0]["emails"], n, "day 2 had no email: day 1's stays");
    assert_eq!(rows[0]["pro"], n, "day 2's plan wins");
    assert_eq!(rows[0]["admins"], n, "boolean traits survive the fold");
    let dead = s
        .lake
        .tables()
        .await
        .unwrap()
        .iter()
        .any(|t| t.to_string() == "_tideway.dead_letters");
    assert!(!dead, "no conflicts, no dead letters");
}

/// A source whose events carry ever-new keys cannot grow a table without bound: past
/// MAX_TABLE_COLUMNS, new fields go to one JSON column, and no value is lost.
#[tokio::test]
async fn fields_past_the_column_limit_overflow_into_json() {
    use tideway_collect::loader::{MAX_TABLE_COLUMNS, OVERFLOW_COLUMN};
    let s = start(config(), FileLogOptions::default()).await;
    let events: Vec<String> = (0..40)
        .map(|e| {
            let props: Vec<String> = (0..30).map(|k| format!(r#""k{e}_{k}":{k}"#)).collect();
            format!(
                r#"{{"type":"track","userId":"u","event":"Wide","messageId":"w{e}","properties":{{{}}}}}"#,
                props.join(",")
            )
        })
        .collect();
    let (status, answer) = s
        .post(
            "/v1/batch",
            Some("wk_test_server"),
            &format!(r#"{{"batch":[{}]}}"#, events.join(",")),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    s.load().await;
    let schema = s
        .lake
        .schema(&"server.wide".parse().unwrap())
        .await
        .unwrap();
    assert!(
        schema.fields().len() <= MAX_TABLE_COLUMNS + 1,
        "{} columns",
        schema.fields().len()
    );
    assert!(schema.index_of(OVERFLOW_COLUMN).is_ok());
    let rows = s
        .query(&format!(
            "SELECT {OVERFLOW_COLUMN} AS o FROM server.wide WHERE id = 'w39'"
        ))
        .await;
    let overflow: serde_json::Value = serde_json::from_str(rows[0]["o"].as_str().unwrap()).unwrap();
    assert_eq!(overflow["k39_29"], 29, "{overflow}");
    // Every field is somewhere: a column or the overflow.
    let columns = schema.fields().len();
    let all = s
        .query(&format!("SELECT {OVERFLOW_COLUMN} AS o FROM server.wide"))
        .await;
    let overflowed: usize = all
        .iter()
        .filter_map(|r| r.get("o").and_then(|o| o.as_str()))
        .map(|o| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(o)
                .unwrap()
                .len()
        })
        .sum();
    let standard = 11; // id, user_id, event, event_text, the times, uuid_ts, context_*...
    assert!(
        columns + overflowed >= 1200 + standard - 5,
        "{columns} + {overflowed}"
    );
}
