//! The Redis destination against a real server (`.ci/redis.sh` starts one and sets
//! `TIDEWAY_REDIS` to its `redis://127.0.0.1:PORT` URL).
//!
//! Tests that need the server print why they are skipped when `TIDEWAY_REDIS` is unset. Each
//! test writes its own keys, so they can run at once.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::redis::AsyncCommands;
use ::redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use tideway_activate::destination::redis::{FieldPath, KeyTemplate, Mode, Redis, RedisConfig};
use tideway_activate::destination::{Destination, Op, OutboundEvent, Outcome};
use tideway_core::Fault;
use tideway_core::config::Secret;

fn server() -> Option<String> {
    match std::env::var("TIDEWAY_REDIS") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: TIDEWAY_REDIS is unset; `source .ci/redis.sh` starts a server and sets it"
            );
            None
        }
    }
}

/// A prefix no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("tideway-test:{prefix}:{}-{nanos}", std::process::id())
}

async fn raw(url: &str) -> MultiplexedConnection {
    ::redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the test server answers")
}

fn destination(url: &str, mode: Mode, key: &str) -> RedisConfig {
    let mut config = RedisConfig::new(Secret::new(url), KeyTemplate::parse(key).unwrap());
    config.mode = mode;
    config
}

fn upsert(event: Value) -> OutboundEvent {
    OutboundEvent {
        origin: event["userId"].to_string(),
        op: Op::Upsert,
        event,
    }
}

fn identify(prefix: &str, user: &str, traits: Value) -> OutboundEvent {
    upsert(json!({ "type": "identify", "userId": format!("{prefix}{user}"), "traits": traits }))
}

fn rejected(outcome: &Outcome) -> &tideway_activate::destination::DeliveryError {
    match outcome {
        Outcome::Rejected(e) => e,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_synced_churn_score_answers_hget_with_a_ttl_and_null_deletes() {
    let Some(url) = server() else { return };
    let p = unique("hash");
    let mut config = destination(&url, Mode::Hash, "profile:{userId}");
    config.ttl = Some(Duration::from_secs(7 * 86_400));
    let redis = Redis::new("cache", config);
    redis.healthcheck().await.expect("the server is healthy");

    let started = Instant::now();
    let outcomes = redis
        .deliver(&[
            identify(
                &p,
                "42",
                json!({ "churn_score": 0.93, "plan": "pro", "phone": "+33" }),
            ),
            identify(
                &p,
                "43",
                json!({ "churn_score": 0.12, "address": { "city": "Lyon" } }),
            ),
        ])
        .await;
    assert_eq!(outcomes, Outcome::Delivered.all(2));
    let mut con = raw(&url).await;
    let score: String = con
        .hget(format!("profile:{p}42"), "churn_score")
        .await
        .unwrap();
    assert_eq!(score, "0.93");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "within seconds of the delivery"
    );
    let city: String = con.hget(format!("profile:{p}43"), "address").await.unwrap();
    assert_eq!(city, r#"{"city":"Lyon"}"#);
    let ttl: i64 = con.ttl(format!("profile:{p}42")).await.unwrap();
    assert!((7 * 86_400 - 5..=7 * 86_400).contains(&ttl), "ttl {ttl}");

    // A null trait deletes the field; the others stay.
    let outcomes = redis
        .deliver(&[identify(
            &p,
            "42",
            json!({ "phone": null, "churn_score": 0.95 }),
        )])
        .await;
    assert_eq!(outcomes, vec![Outcome::Delivered]);
    let fields: std::collections::BTreeMap<String, String> =
        con.hgetall(format!("profile:{p}42")).await.unwrap();
    assert_eq!(
        fields.into_iter().collect::<Vec<_>>(),
        [
            ("churn_score".to_string(), "0.95".to_string()),
            ("plan".to_string(), "pro".to_string())
        ]
    );
    // The inspector shows the pipeline, not a password.
    let exchanges = redis.inspect();
    assert_eq!(exchanges.len(), 2);
    assert!(
        exchanges[0]
            .request
            .starts_with(&format!("HSET profile:{p}42 "))
    );
    assert_eq!(exchanges[0].status, 200);
}

#[tokio::test]
async fn string_mode_stores_one_field_and_a_delete_removes_the_key() {
    let Some(url) = server() else { return };
    let p = unique("string");
    let mut config = destination(&url, Mode::String, "churn:{userId}");
    config.value = Some(FieldPath::parse("traits.churn_score").unwrap());
    config.ttl = Some(Duration::from_secs(3600));
    let redis = Redis::new("cache", config);
    let outcomes = redis
        .deliver(&[
            identify(&p, "1", json!({ "churn_score": 0.5 })),
            identify(&p, "2", json!({ "churn_score": 0.7 })),
            identify(&p, "3", json!({ "plan": "pro" })),
        ])
        .await;
    assert_eq!(outcomes[..2], [Outcome::Delivered, Outcome::Delivered]);
    assert!(
        rejected(&outcomes[2])
            .message
            .contains("no `traits.churn_score`")
    );
    let mut con = raw(&url).await;
    let value: String = con.get(format!("churn:{p}1")).await.unwrap();
    assert_eq!(value, "0.5");
    let ttl: i64 = con.ttl(format!("churn:{p}1")).await.unwrap();
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");

    // The row is gone at the source, on_delete = "delete": the key goes too.
    let gone = OutboundEvent {
        origin: "1".into(),
        op: Op::Delete,
        event: json!({ "type": "identify", "userId": format!("{p}1") }),
    };
    assert_eq!(redis.deliver(&[gone]).await, vec![Outcome::Delivered]);
    let exists: bool = con.exists(format!("churn:{p}1")).await.unwrap();
    assert!(!exists);
    let other: bool = con.exists(format!("churn:{p}2")).await.unwrap();
    assert!(other, "only the deleted row's key is removed");
}

#[tokio::test]
async fn list_mode_keeps_the_newest_max_len_events() {
    let Some(url) = server() else { return };
    let p = unique("list");
    let mut config = destination(&url, Mode::List, "feed:{userId}");
    config.max_len = Some(3);
    let redis = Redis::new("cache", config);
    let events: Vec<OutboundEvent> = (0..5)
        .map(|i| upsert(json!({ "type": "track", "userId": p, "event": format!("e{i}") })))
        .collect();
    assert_eq!(redis.deliver(&events).await, Outcome::Delivered.all(5));
    let mut con = raw(&url).await;
    let items: Vec<String> = con.lrange(format!("feed:{p}"), 0, -1).await.unwrap();
    let names: Vec<String> = items
        .iter()
        .map(|i| {
            serde_json::from_str::<Value>(i).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["e2", "e3", "e4"]);
}

#[tokio::test]
async fn stream_mode_adds_entries_capped_by_maxlen() {
    let Some(url) = server() else { return };
    let p = unique("stream");
    let mut config = destination(&url, Mode::Stream, "events:{type}");
    config.max_len = Some(10);
    let redis = Redis::new("cache", config);
    redis.healthcheck().await.expect("XADD is known");
    let events: Vec<OutboundEvent> = (0..250)
        .map(|i| {
            upsert(json!({
                "type": format!("{p}track"), "userId": "42", "event": "x", "messageId": format!("m-{i}")
            }))
        })
        .collect();
    assert_eq!(redis.deliver(&events).await, Outcome::Delivered.all(250));
    let mut con = raw(&url).await;
    let key = format!("events:{p}track");
    let len: usize = ::redis::cmd("XLEN")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    // MAXLEN ~ trims whole nodes only: about 10 entries remain, never all 250.
    assert!((10..250).contains(&len), "len {len}");
    let last: Vec<(String, Vec<String>)> = ::redis::cmd("XREVRANGE")
        .arg(&[key.as_str(), "+", "-", "COUNT", "1"])
        .query_async(&mut con)
        .await
        .unwrap();
    let fields = &last[0].1;
    let field = |name: &str| {
        let at = fields.iter().position(|f| f == name).expect(name);
        fields[at + 1].clone()
    };
    assert_eq!(fields.len(), 8, "type, messageId, op, event: {fields:?}");
    assert_eq!(field("type"), format!("{p}track"));
    assert_eq!(field("messageId"), "m-249");
    assert_eq!(field("op"), "upsert");
    let event: Value = serde_json::from_str(&field("event")).unwrap();
    assert_eq!(event["messageId"], "m-249");
}

#[tokio::test]
async fn a_wrongtype_key_refuses_only_its_event() {
    let Some(url) = server() else { return };
    let p = unique("wrongtype");
    let mut con = raw(&url).await;
    let _: () = con
        .set(format!("profile:{p}bad"), "a string")
        .await
        .unwrap();
    let redis = Redis::new("cache", destination(&url, Mode::Hash, "profile:{userId}"));
    let events = [
        identify(&p, "1", json!({ "score": 1 })),
        identify(&p, "bad", json!({ "score": 2 })),
        identify(&p, "3", json!({ "score": 3 })),
        upsert(json!({ "type": "identify", "traits": { "score": 4 } })),
    ];
    let outcomes = redis.deliver(&events).await;
    assert_eq!(outcomes[0], Outcome::Delivered);
    let error = rejected(&outcomes[1]);
    assert_eq!(error.fault, Fault::User);
    assert!(
        error
            .message
            .starts_with(&format!("Redis refused `HSET profile:{p}bad`: WRONGTYPE")),
        "{}",
        error.message
    );
    assert_eq!(outcomes[2], Outcome::Delivered);
    assert!(rejected(&outcomes[3]).message.contains("no `userId`"));
    for (user, score) in [("1", "1"), ("3", "3")] {
        let stored: String = con
            .hget(format!("profile:{p}{user}"), "score")
            .await
            .unwrap();
        assert_eq!(stored, score);
    }
    let untouched: String = con.get(format!("profile:{p}bad")).await.unwrap();
    assert_eq!(untouched, "a string");
    assert!(redis.inspect()[0].response.contains("1 errors"));
}

#[tokio::test]
async fn a_stopped_server_is_retried_never_refused() {
    // A port that was free a moment ago: connecting is refused. Needs no server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("redis://:pw-123@{address}");
    let redis = Redis::new("cache", destination(&url, Mode::Hash, "profile:{userId}"));
    let events: Vec<OutboundEvent> = (0..3)
        .map(|i| identify("", &i.to_string(), json!({ "score": i })))
        .collect();
    let outcomes = redis.deliver(&events).await;
    for outcome in &outcomes {
        match outcome {
            Outcome::Retry { after: None, error } => {
                assert_eq!(error.fault, Fault::External);
                assert!(
                    error
                        .message
                        .contains(&format!("cannot reach Redis at redis://{address}/0")),
                    "{}",
                    error.message
                );
                assert!(!error.message.contains("pw-123"), "{}", error.message);
            }
            other => panic!("expected Retry, got {other:?}"),
        }
    }
    let error = redis.healthcheck().await.unwrap_err();
    assert_eq!(error.fault, Fault::External);
    assert_eq!(redis.inspect()[0].status, 0);
}

#[tokio::test]
async fn a_wrong_password_fails_the_healthcheck_naming_the_credentials() {
    let Some(url) = server() else { return };
    let user = unique("user").replace(':', "-");
    let mut con = raw(&url).await;
    let _: () = ::redis::cmd("ACL")
        .arg(&["SETUSER", &user, "on", ">right-password", "~*", "+@all"])
        .query_async(&mut con)
        .await
        .unwrap();
    let with = |password: &str| url.replacen("redis://", &format!("redis://{user}:{password}@"), 1);

    let good = Redis::new(
        "cache",
        destination(&with("right-password"), Mode::Hash, "p:{userId}"),
    );
    good.healthcheck().await.expect("the right password passes");

    let wrong = Redis::new(
        "cache",
        destination(&with("wrong-password"), Mode::Hash, "p:{userId}"),
    );
    let error = wrong.healthcheck().await.unwrap_err();
    assert_eq!(error.fault, Fault::User);
    assert!(
        error.message.contains("refused the credentials"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("user and password in `url`"),
        "{}",
        error.message
    );
    assert!(
        !error.message.contains("wrong-password"),
        "{}",
        error.message
    );
    let outcomes = wrong
        .deliver(&[identify("x", "1", json!({ "a": 1 }))])
        .await;
    assert!(
        rejected(&outcomes[0])
            .message
            .contains("refused the credentials")
    );

    let _: () = ::redis::cmd("ACL")
        .arg(&["DELUSER", &user])
        .query_async(&mut con)
        .await
        .unwrap();
}

/// `TIDEWAY_REDIS_TLS`: a `rediss://` URL of a server whose certificate the machine trusts
/// (`SSL_CERT_FILE` may name the CA). `.ci/redis.sh` does not start one; run by hand.
#[tokio::test]
async fn rediss_connects_over_tls() {
    let Ok(url) = std::env::var("TIDEWAY_REDIS_TLS") else {
        eprintln!("skipped: TIDEWAY_REDIS_TLS (a rediss:// URL) is unset");
        return;
    };
    let p = unique("tls");
    let redis = Redis::new("cache", destination(&url, Mode::Hash, "profile:{userId}"));
    redis
        .healthcheck()
        .await
        .expect("TLS handshake, AUTH and PING");
    let outcomes = redis
        .deliver(&[identify(&p, "1", json!({ "score": 1 }))])
        .await;
    assert_eq!(outcomes, vec![Outcome::Delivered]);
    assert!(redis.server().starts_with("rediss://"));
}

/// A server of a test's own, stopped when dropped (also when the test fails).
struct OwnServer(std::process::Child);

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `redis-server` (installed by `.ci/redis.sh`) on `port`, with `extra` arguments.
fn start_server(port: u16, dir: &std::path::Path, extra: &[&str]) -> OwnServer {
    let child = std::process::Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    OwnServer(child)
}

/// A free port and a temporary folder for a server of a test's own.
fn own_place(name: &str) -> (u16, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(unique(name).replace(':', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (port, dir)
}

#[tokio::test]
async fn a_server_that_wants_a_password_names_the_credentials() {
    if server().is_none() {
        return;
    }
    let (port, dir) = own_place("noauth");
    let _server = start_server(port, &dir, &["--requirepass", "the-password"]);
    let url = format!("redis://127.0.0.1:{port}");
    let redis = Redis::new("cache", destination(&url, Mode::Hash, "profile:{userId}"));
    let error = redis.healthcheck().await.unwrap_err();
    assert_eq!(error.fault, Fault::User);
    assert!(
        error.message.starts_with(&format!(
            "Redis at redis://127.0.0.1:{port}/0 refused the credentials (NOAUTH"
        )),
        "{}",
        error.message
    );
    let outcomes = redis.deliver(&[identify("", "1", json!({ "a": 1 }))]).await;
    assert!(
        rejected(&outcomes[0])
            .message
            .contains("user and password in `url`")
    );

    let with_password = format!("redis://:the-password@127.0.0.1:{port}");
    let redis = Redis::new(
        "cache",
        destination(&with_password, Mode::Hash, "p:{userId}"),
    );
    redis.healthcheck().await.expect("the password is sent");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_restarted_server_is_reconnected_to() {
    if server().is_none() {
        return;
    }
    let (port, dir) = own_place("restart");
    let url = format!("redis://127.0.0.1:{port}");
    let first = start_server(port, &dir, &[]);
    let redis = Redis::new("cache", destination(&url, Mode::Hash, "profile:{userId}"));
    let event = identify("", "1", json!({ "score": 1 }));
    assert_eq!(
        redis.deliver(std::slice::from_ref(&event)).await,
        vec![Outcome::Delivered]
    );

    drop(first);
    let outcomes = redis.deliver(&[event.clone(), event.clone()]).await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Retry { .. })),
        "{outcomes:?}"
    );

    let _second = start_server(port, &dir, &[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match &redis.deliver(std::slice::from_ref(&event)).await[0] {
            Outcome::Delivered => break,
            Outcome::Retry { .. } if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("expected delivery after the restart, got {other:?}"),
        }
    }
    let mut con = raw(&url).await;
    let score: String = con.hget("profile:1", "score").await.unwrap();
    assert_eq!(score, "1");
    let _ = std::fs::remove_dir_all(&dir);
}
