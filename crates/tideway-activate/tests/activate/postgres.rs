//! The Postgres destination against a real server: upserts by key, absent fields kept and
//! explicit nulls stored, columns added and widened, a bad event found alone, deletes, events
//! appended once, the healthcheck, and the server stopped mid-load.
//!
//! Tests print why they are skipped when `TIDEWAY_POSTGRES` (a `postgres://` URL) is unset;
//! `source .ci/postgres.sh` starts a server and sets it. Each test writes its own tables, so
//! they can run at once; the one that stops its server mid-load has a server of its own
//! (`TIDEWAY_POSTGRES_FAULT`, stopped and started by the script `TIDEWAY_POSTGRES_FAULT_CTL`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tideway_activate::delivery::{Delivery, RetryPolicy};
use tideway_activate::destination::postgres::{self, Postgres, PostgresConfig, TableName};
use tideway_activate::destination::{Destination, Op, OutboundEvent, Outcome};
use tideway_core::config::Secret;

fn server() -> Option<String> {
    match std::env::var("TIDEWAY_POSTGRES") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: TIDEWAY_POSTGRES is unset; `source .ci/postgres.sh` starts a server and sets it"
            );
            None
        }
    }
}

/// A table name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn config(url: &str, table: &str) -> PostgresConfig {
    PostgresConfig::new(
        Secret::new(url),
        TableName::parse(table).unwrap(),
        &["user_id"],
    )
}

fn destination(config: PostgresConfig) -> Arc<Postgres> {
    Arc::new(postgres::build("app_db", config))
}

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the test connects");
    tokio::spawn(connection);
    client
}

fn identify(user: &str, traits: Value) -> OutboundEvent {
    OutboundEvent {
        origin: user.to_string(),
        op: Op::Upsert,
        event: json!({"type": "identify", "userId": user, "messageId": format!("m-{user}-{traits}"),
                      "traits": traits}),
    }
}

fn track(user: &str, message_id: &str) -> OutboundEvent {
    OutboundEvent {
        origin: message_id.to_string(),
        op: Op::Upsert,
        event: json!({"type": "track", "userId": user, "event": "Order Completed",
                      "messageId": message_id, "timestamp": "2026-12-01T10:00:00.000Z",
                      "properties": {"total": 12.5}, "context": {"ip": "203.0.113.7"}}),
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        base: Duration::from_millis(5),
        max: Duration::from_millis(200),
    }
}

/// `SELECT <columns as text> FROM table ORDER BY 1`, NULL as `None`.
async fn rows(url: &str, table: &str, columns: &str) -> Vec<Vec<Option<String>>> {
    let client = sql(url).await;
    client
        .query(&format!("SELECT {columns} FROM {table} ORDER BY 1"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[tokio::test]
async fn upserting_twice_by_key_keeps_one_row_with_the_latest_values() {
    let Some(url) = server() else { return };
    let table = unique("upsert");
    let dest = destination(config(&url, &table));
    dest.healthcheck()
        .await
        .expect("create = true passes without the table");
    let out = dest
        .deliver(&[identify("u1", json!({"plan": "free", "score": 1}))])
        .await;
    assert_eq!(out, [Outcome::Delivered]);
    let out = dest
        .deliver(&[
            identify("u1", json!({"plan": "pro", "score": 2})),
            identify("u2", json!({"plan": "team", "score": 5})),
            identify("u2", json!({"plan": "enterprise", "score": 6})),
        ])
        .await;
    assert_eq!(out, Outcome::Delivered.all(3));
    assert_eq!(
        rows(&url, &table, "user_id, plan, score::text").await,
        [
            vec![s("u1"), s("pro"), s("2")],
            vec![s("u2"), s("enterprise"), s("6")]
        ]
    );
    let stamped = rows(
        &url,
        &table,
        "_tideway_message_id, _tideway_updated_at::text",
    )
    .await;
    assert!(
        stamped.iter().all(|r| r[0].is_some() && r[1].is_some()),
        "{stamped:?}"
    );
    dest.healthcheck().await.expect("the table we made passes");
}

#[tokio::test]
async fn an_absent_field_keeps_its_value_and_an_explicit_null_clears_it() {
    let Some(url) = server() else { return };
    let table = unique("absent");
    let dest = destination(config(&url, &table));
    let first = [
        identify("u1", json!({"plan": "pro", "score": 7, "city": "Oslo"})),
        identify("u2", json!({"plan": "free", "score": 1, "city": "Lima"})),
    ];
    assert_eq!(dest.deliver(&first).await, Outcome::Delivered.all(2));
    let second = [
        identify("u1", json!({"score": 8})),
        identify("u2", json!({"city": null})),
    ];
    assert_eq!(dest.deliver(&second).await, Outcome::Delivered.all(2));
    assert_eq!(
        rows(&url, &table, "user_id, plan, score::text, city").await,
        [
            vec![s("u1"), s("pro"), s("8"), s("Oslo")],
            vec![s("u2"), s("free"), s("1"), None]
        ]
    );
}

#[tokio::test]
async fn a_new_trait_adds_a_column_and_a_float_widens_a_bigint_column() {
    let Some(url) = server() else { return };
    let table = unique("evolve");
    let dest = destination(config(&url, &table));
    let batch = [identify("u1", json!({"score": 3}))];
    assert_eq!(dest.deliver(&batch).await, [Outcome::Delivered]);
    let batch = [
        identify(
            "u2",
            json!({"score": 4, "address": {"city": "Oslo"}, "vip": true}),
        ),
        identify(
            "u3",
            json!({"score": 2.5, "signed_up": "2026-11-25T14:03:00Z"}),
        ),
    ];
    assert_eq!(dest.deliver(&batch).await, Outcome::Delivered.all(2));
    let types: Vec<Vec<Option<String>>> = sql(&url)
        .await
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_name = $1",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| vec![r.get(0), r.get(1)])
        .collect();
    let ty = |c: &str| {
        types
            .iter()
            .find(|r| r[0].as_deref() == Some(c))
            .and_then(|r| r[1].clone())
    };
    assert_eq!(ty("score"), s("double precision"), "{types:?}");
    assert_eq!(ty("address"), s("jsonb"));
    assert_eq!(ty("vip"), s("boolean"));
    assert_eq!(ty("signed_up"), s("timestamp with time zone"));
    assert_eq!(
        rows(&url, &table, "user_id, score::text, address->>'city'").await,
        [
            vec![s("u1"), s("3"), None],
            vec![s("u2"), s("4"), s("Oslo")],
            vec![s("u3"), s("2.5"), None]
        ]
    );
}

#[tokio::test]
async fn a_bad_event_is_rejected_alone_after_splitting_and_the_others_delivered() {
    let Some(url) = server() else { return };
    let table = unique("strict");
    sql(&url)
        .await
        .batch_execute(&format!(
            "CREATE TABLE {table} (user_id text PRIMARY KEY, score bigint, account uuid)"
        ))
        .await
        .unwrap();
    let mut config = config(&url, &table);
    config.create = false;
    config.batch_size = 8;
    let dest = destination(config);
    dest.healthcheck().await.expect("the table fits");
    let mut events: Vec<OutboundEvent> = (0..20)
        .map(|i| identify(&format!("u{i:02}"), json!({"score": i})))
        .collect();
    // Seen before sending: a string for a bigint column.
    events[5] = identify("u05", json!({"score": "abc"}));
    // Seen only by Postgres (SQLSTATE 22P02): not a uuid. In the same call as the other, so
    // that one is refused before sending and this one by Postgres.
    events[3] = identify("u03", json!({"score": 3, "account": "not-a-uuid"}));
    let out = Delivery::new(dest.clone(), fast())
        .deliver(&events, &|_| {})
        .await;
    for (i, d) in out.iter().enumerate() {
        match i {
            5 => assert!(
                matches!(&d.outcome, Outcome::Rejected(e) if e.message.contains("column `score`")
                    && e.message.contains("\"abc\"") && e.message.contains("bigint")),
                "{d:?}"
            ),
            3 => assert!(
                matches!(&d.outcome, Outcome::Rejected(e) if e.message.contains("22P02")
                    && e.message.contains("uuid")),
                "{d:?}"
            ),
            _ => assert_eq!(d.outcome, Outcome::Delivered, "event {i}: {d:?}"),
        }
    }
    let stored = rows(&url, &table, "user_id").await;
    assert_eq!(stored.len(), 18, "{stored:?}");
    assert!(!stored.contains(&vec![s("u05")]) && !stored.contains(&vec![s("u03")]));
}

#[tokio::test]
async fn a_delete_removes_the_row() {
    let Some(url) = server() else { return };
    let table = unique("delete");
    let dest = destination(config(&url, &table));
    let batch = [
        identify("u1", json!({"plan": "pro"})),
        identify("u2", json!({"plan": "free"})),
    ];
    assert_eq!(dest.deliver(&batch).await, Outcome::Delivered.all(2));
    let delete = OutboundEvent {
        op: Op::Delete,
        ..identify("u1", json!({"plan": "pro"}))
    };
    assert_eq!(dest.deliver(&[delete]).await, [Outcome::Delivered]);
    assert_eq!(
        rows(&url, &table, "user_id, plan").await,
        [vec![s("u2"), s("free")]]
    );
}

#[tokio::test]
async fn events_are_appended_once_however_often_they_are_delivered() {
    let Some(url) = server() else { return };
    let table = unique("people");
    let events_table = unique("events");
    let mut config = config(&url, &table);
    config.events_table = Some(TableName::parse(&events_table).unwrap());
    let dest = destination(config);
    let batch = [track("u1", "m-1"), track("u1", "m-2"), track("u2", "m-3")];
    assert_eq!(dest.deliver(&batch).await, Outcome::Delivered.all(3));
    // Redelivered, as after a commit whose answer was lost, and once more within one batch.
    let again = [
        track("u1", "m-2"),
        track("u2", "m-3"),
        track("u2", "m-3"),
        track("u3", "m-4"),
    ];
    assert_eq!(dest.deliver(&again).await, Outcome::Delivered.all(4));
    assert_eq!(
        rows(
            &url,
            &events_table,
            "message_id, type, event, user_id, \"timestamp\"::text, properties->>'total', context->>'ip'"
        )
        .await,
        [
            vec![s("m-1"), s("track"), s("Order Completed"), s("u1"), s("2026-12-01 10:00:00+00"), s("12.5"), s("203.0.113.7")],
            vec![s("m-2"), s("track"), s("Order Completed"), s("u1"), s("2026-12-01 10:00:00+00"), s("12.5"), s("203.0.113.7")],
            vec![s("m-3"), s("track"), s("Order Completed"), s("u2"), s("2026-12-01 10:00:00+00"), s("12.5"), s("203.0.113.7")],
            vec![s("m-4"), s("track"), s("Order Completed"), s("u3"), s("2026-12-01 10:00:00+00"), s("12.5"), s("203.0.113.7")],
        ]
    );
    dest.healthcheck().await.expect("both tables pass");
}

#[tokio::test]
async fn the_healthcheck_says_what_is_wrong() {
    let Some(url) = server() else { return };
    let missing = unique("missing");
    let mut strict = config(&url, &missing);
    strict.create = false;
    let err = destination(strict).healthcheck().await.unwrap_err();
    assert!(
        err.message.contains("does not exist") && err.message.contains("create = false"),
        "{err}"
    );

    let keyless = unique("keyless");
    sql(&url)
        .await
        .batch_execute(&format!("CREATE TABLE {keyless} (user_id text, plan text)"))
        .await
        .unwrap();
    let err = destination(config(&url, &keyless))
        .healthcheck()
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("no primary key or unique index on (user_id)"),
        "{err}"
    );

    let wrong = url.replace("tideway-secret", "wrong-password");
    assert_ne!(
        wrong, url,
        "the CI URL carries the password `tideway-secret`"
    );
    let err = destination(config(&wrong, &missing))
        .healthcheck()
        .await
        .unwrap_err();
    assert!(err.message.contains("28P01"), "{err}");
    assert!(!err.message.contains("wrong-password"), "{err}");

    let closed = "postgres://tideway:tideway-secret@127.0.0.1:1/tideway";
    let err = destination(config(closed, &missing))
        .healthcheck()
        .await
        .unwrap_err();
    assert!(err.message.contains("127.0.0.1:1/tideway"), "{err}");
    assert!(!err.message.contains("tideway-secret"), "{err}");
    let out = destination(config(closed, &missing))
        .deliver(&[identify("u1", json!({"a": 1}))])
        .await;
    assert!(
        matches!(out[0], Outcome::Retry { .. }),
        "unreachable is retried: {out:?}"
    );
}

/// `TIDEWAY_POSTGRES_TLS_ROOT`: the CA of the server's certificate for `localhost`
/// (`.ci/postgres.sh` makes one when openssl is there).
#[tokio::test]
async fn tls_is_used_as_the_url_says() {
    let Some(url) = server() else { return };
    let Ok(root) = std::env::var("TIDEWAY_POSTGRES_TLS_ROOT") else {
        eprintln!("skipped: TIDEWAY_POSTGRES_TLS_ROOT is unset; `source .ci/postgres.sh` sets it");
        return;
    };
    let table = unique("tls");
    let name = unique("tideway_tls");
    // Is the destination's pooled connection (named by `application_name`) encrypted?
    let encrypted = async |url: &str, mode: &str| {
        let dest = destination(config(
            &format!("{url}?sslmode={mode}&application_name={name}"),
            &table,
        ));
        dest.healthcheck().await.map_err(|e| e.message)?;
        let row = sql(url)
            .await
            .query_one(
                "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
                &[&name],
            )
            .await
            .unwrap();
        drop(dest);
        Ok::<_, String>(row.get::<_, Option<bool>>(0))
    };
    assert_eq!(encrypted(&url, "require").await, Ok(Some(true)));
    assert_eq!(encrypted(&url, "disable").await, Ok(Some(false)));
    // verify-full checks the certificate: against the server's CA it passes (for the name on
    // it, localhost) ...
    let localhost = url.replace("127.0.0.1", "localhost");
    let verified = format!("verify-full&sslrootcert={root}");
    assert_eq!(encrypted(&localhost, &verified).await, Ok(Some(true)));
    // ... against the Mozilla roots it does not.
    let err = encrypted(&localhost, "verify-full").await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
}

/// The fault test: the server is stopped (`pg_ctl stop -m fast`) while a load is being
/// delivered, then started again; the delivery layer retries, and at the end every key is
/// present once with its last value and every event is in the events table once.
#[tokio::test]
async fn a_server_stopped_mid_load_loses_nothing_and_stores_nothing_twice() {
    let (Ok(url), Ok(ctl)) = (
        std::env::var("TIDEWAY_POSTGRES_FAULT"),
        std::env::var("TIDEWAY_POSTGRES_FAULT_CTL"),
    ) else {
        eprintln!(
            "skipped: TIDEWAY_POSTGRES_FAULT(_CTL) is unset; `source .ci/postgres.sh` starts a \
             server this test may stop and sets them"
        );
        return;
    };
    let table = unique("fault");
    let events_table = unique("fault_events");
    let mut config = config(&url, &table);
    config.events_table = Some(TableName::parse(&events_table).unwrap());
    config.batch_size = 600;
    let dest = destination(config);
    // 100 keys per batch, each with 5 versions and one track event: a key's versions share a
    // batch, so "last" does not depend on the order in which concurrent batches commit.
    const KEYS: usize = 8_000;
    const VERSIONS: usize = 5;
    let mut events = Vec::new();
    for chunk in 0..KEYS / 100 {
        let keys = chunk * 100..(chunk + 1) * 100;
        for v in 0..VERSIONS {
            for k in keys.clone() {
                events.push(identify(
                    &format!("k{k:05}"),
                    json!({"version": v, "name": format!("n{k}-{v}")}),
                ));
            }
        }
        for k in keys {
            events.push(track(&format!("k{k:05}"), &format!("t-{k}")));
        }
    }
    let done = Arc::new(AtomicUsize::new(0));
    let stop_at = events.len() / 5;
    let restarted = {
        let done = done.clone();
        tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < stop_at {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let run = |what: &'static str| {
                let ctl = ctl.clone();
                async move {
                    let status = tokio::process::Command::new(&ctl).arg(what).status().await;
                    assert!(status.is_ok_and(|s| s.success()), "{ctl} {what}");
                }
            };
            run("stop").await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            run("start").await;
        })
    };
    let policy = RetryPolicy {
        max_attempts: 60,
        base: Duration::from_millis(20),
        max: Duration::from_millis(500),
    };
    let out = Delivery::new(dest, policy)
        .deliver(&events, &|n| {
            done.fetch_add(n, Ordering::SeqCst);
        })
        .await;
    restarted.await.unwrap();
    let retried = out.iter().filter(|d| d.attempts > 1).count();
    assert!(
        retried > 0,
        "the stop came after the load: nothing was retried"
    );
    for (d, e) in out.iter().zip(&events) {
        assert_eq!(d.outcome, Outcome::Delivered, "{}: {d:?}", e.origin);
    }
    let client = sql(&url).await;
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT user_id), count(*) FILTER (WHERE version = {last} \
                 AND name = 'n' || substr(user_id, 2)::int || '-{last}') FROM {table}",
                last = VERSIONS - 1
            ),
            &[],
        )
        .await
        .unwrap();
    let (rows, distinct, last): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (rows, distinct, last),
        (KEYS as i64, KEYS as i64, KEYS as i64)
    );
    let row = client
        .query_one(
            &format!("SELECT count(*), count(DISTINCT message_id) FROM {events_table}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (KEYS as i64, KEYS as i64)
    );
    eprintln!("{retried} events were retried across the restart");
}
