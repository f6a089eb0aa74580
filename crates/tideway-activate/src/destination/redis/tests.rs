//! What events become, without a server; against a real server, see the integration tests
//! (`tests/activate/redis.rs`).

use std::time::Duration;

use serde_json::{Value, json};
use tideway_core::Fault;
use tideway_core::config::Secret;

use super::*;

fn config(mode: Mode, key: &str) -> RedisConfig {
    let mut config = RedisConfig::new(
        Secret::new("redis://127.0.0.1:6379"),
        KeyTemplate::parse(key).unwrap(),
    );
    config.mode = mode;
    config
}

fn event(op: Op, event: Value) -> OutboundEvent {
    OutboundEvent {
        origin: "row-1".into(),
        op,
        event,
    }
}

fn upsert(value: Value) -> OutboundEvent {
    event(Op::Upsert, value)
}

/// The commands as text, one per line, for a readable comparison.
fn commands(config: &RedisConfig, e: &OutboundEvent) -> String {
    plan(config, e)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn identify() -> OutboundEvent {
    upsert(json!({
        "type": "identify", "userId": "42", "messageId": "m-1",
        "traits": {
            "churn_score": 0.93, "plan": "pro", "seats": 5, "trial": false,
            "address": { "city": "Lyon" }, "tags": ["a", "b"], "phone": null
        }
    }))
}

#[test]
fn hash_mode_sets_traits_and_deletes_nulls() {
    let mut config = config(Mode::Hash, "profile:{userId}");
    assert_eq!(
        commands(&config, &identify()),
        "HSET profile:42 address {\"city\":\"Lyon\"} churn_score 0.93 plan pro seats 5 tags \
         [\"a\",\"b\"] trial false\n\
         HDEL profile:42 phone"
    );
    config.ttl = Some(Duration::from_secs(7 * 86_400));
    let planned = plan(&config, &identify()).unwrap();
    assert_eq!(planned.len(), 3);
    assert_eq!(planned[2].args(), ["EXPIRE", "profile:42", "604800"]);
    // A value with spaces stays one argument.
    let spaced =
        upsert(json!({ "type": "identify", "userId": "7", "traits": { "name": "Jane Doe" } }));
    assert_eq!(
        plan(&config, &spaced).unwrap()[0].args(),
        ["HSET", "profile:7", "name", "Jane Doe"]
    );
}

#[test]
fn hash_mode_takes_properties_of_track_page_and_screen() {
    let config = config(Mode::Hash, "last:{userId}:{event}");
    let track = upsert(json!({
        "type": "track", "userId": 42, "event": "purchase",
        "properties": { "total": 19.5, "currency": "EUR" }
    }));
    assert_eq!(
        commands(&config, &track),
        "HSET last:42:purchase currency EUR total 19.5"
    );
    let config = self::config(Mode::Hash, "page:{anonymousId}");
    let page =
        upsert(json!({ "type": "page", "anonymousId": "a-1", "properties": { "path": "/" } }));
    assert_eq!(commands(&config, &page), "HSET page:a-1 path /");
    let group = upsert(json!({ "type": "group", "groupId": "acme", "traits": { "seats": 50 } }));
    let config = self::config(Mode::Hash, "company:{groupId}");
    assert_eq!(commands(&config, &group), "HSET company:acme seats 50");
}

#[test]
fn an_event_without_fields_writes_nothing_but_the_ttl() {
    let mut config = config(Mode::Hash, "profile:{userId}");
    let bare = upsert(json!({ "type": "identify", "userId": "42" }));
    assert_eq!(plan(&config, &bare).unwrap(), Vec::<Command>::new());
    config.ttl = Some(Duration::from_secs(60));
    assert_eq!(commands(&config, &bare), "EXPIRE profile:42 60");
}

#[test]
fn deletes_remove_the_key_of_a_hash_or_a_string() {
    let gone = event(Op::Delete, json!({ "type": "identify", "userId": "42" }));
    for mode in [Mode::Hash, Mode::String] {
        let mut config = config(mode, "profile:{userId}");
        config.ttl = Some(Duration::from_secs(60));
        assert_eq!(commands(&config, &gone), "DEL profile:42", "{mode:?}");
    }
}

#[test]
fn string_mode_stores_the_event_or_one_field() {
    let mut config = config(Mode::String, "event:{messageId}");
    let e = upsert(json!({ "type": "track", "messageId": "m-1", "event": "x" }));
    assert_eq!(
        plan(&config, &e).unwrap()[0].args(),
        [
            "SET",
            "event:m-1",
            r#"{"event":"x","messageId":"m-1","type":"track"}"#
        ]
    );
    config.key = KeyTemplate::parse("churn:{userId}").unwrap();
    config.value = Some(FieldPath::parse("traits.churn_score").unwrap());
    config.ttl = Some(Duration::from_secs(3600));
    assert_eq!(commands(&config, &identify()), "SET churn:42 0.93 EX 3600");
    // null removes the value; an absent field refuses the event.
    let null =
        upsert(json!({ "type": "identify", "userId": "42", "traits": { "churn_score": null } }));
    assert_eq!(commands(&config, &null), "DEL churn:42");
    let absent = upsert(json!({ "type": "identify", "userId": "42", "traits": {} }));
    assert_eq!(
        plan(&config, &absent).unwrap_err(),
        "the event has no `traits.churn_score`, the value of the key `churn:42`"
    );
}

#[test]
fn list_mode_pushes_and_trims() {
    let mut config = config(Mode::List, "feed:{userId}");
    config.max_len = Some(100);
    config.ttl = Some(Duration::from_secs(86_400));
    let e = upsert(json!({ "type": "track", "userId": "42", "event": "x" }));
    assert_eq!(
        commands(&config, &e),
        "RPUSH feed:42 {\"event\":\"x\",\"type\":\"track\",\"userId\":\"42\"}\n\
         LTRIM feed:42 -100 -1\n\
         EXPIRE feed:42 86400"
    );
    // A delete is appended like any event, marked as the webhook marks it.
    let gone = event(Op::Delete, json!({ "type": "identify", "userId": "42" }));
    assert_eq!(
        plan(&config, &gone).unwrap()[0].args()[2],
        r#"{"tideway":{"op":"delete"},"type":"identify","userId":"42"}"#
    );
}

#[test]
fn stream_mode_adds_an_entry_with_maxlen() {
    let mut config = config(Mode::Stream, "events");
    let e = upsert(json!({ "type": "track", "userId": "42", "event": "x", "messageId": "m-1" }));
    assert_eq!(
        plan(&config, &e).unwrap()[0].args(),
        [
            "XADD",
            "events",
            "*",
            "type",
            "track",
            "messageId",
            "m-1",
            "op",
            "upsert",
            "event",
            r#"{"event":"x","messageId":"m-1","type":"track","userId":"42"}"#
        ]
    );
    config.max_len = Some(10_000);
    let gone = event(Op::Delete, json!({ "type": "identify", "userId": "42" }));
    let planned = plan(&config, &gone).unwrap();
    assert_eq!(
        planned[0].args()[..10],
        [
            "XADD", "events", "MAXLEN", "~", "10000", "*", "type", "identify", "op", "delete"
        ]
    );
}

#[test]
fn events_that_cannot_be_written_say_why() {
    let hash = config(Mode::Hash, "profile:{userId}");
    let cases = [
        (
            json!({ "type": "identify", "anonymousId": "a" }),
            "the event has no `userId` for the key `profile:{userId}`",
        ),
        (
            json!({ "type": "identify", "userId": "42", "traits": [1] }),
            "`traits` must be an object",
        ),
        (
            json!({ "type": "alias", "userId": "42", "previousId": "7" }),
            "`alias` has no traits or properties",
        ),
        (
            json!({ "type": "idenitfy", "userId": "42" }),
            "unknown message type `idenitfy`; known types",
        ),
        (json!({ "userId": "42" }), "the event has no `type`"),
    ];
    for (value, expected) in cases {
        let err = plan(&hash, &upsert(value.clone())).unwrap_err();
        assert!(err.contains(expected), "{value}: {err}");
    }
}

#[test]
fn deliver_refuses_unwritable_events_without_a_server() {
    // A closed port: nothing is sent when no event can be written, so nothing is retried.
    let redis = Redis::new("cache", config(Mode::Hash, "profile:{userId}"));
    let outcomes = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(redis.deliver(&[
            upsert(json!({ "type": "identify", "anonymousId": "a" })),
            upsert(json!({ "type": "identify", "userId": "42" })),
        ]));
    match &outcomes[0] {
        Outcome::Rejected(e) => {
            assert_eq!(e.fault, Fault::User);
            assert!(e.message.contains("no `userId`"), "{}", e.message);
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(
        outcomes[1],
        Outcome::Delivered,
        "no fields, no TTL: nothing to write"
    );
    assert!(redis.inspect().is_empty());
}

#[test]
fn the_server_is_named_without_the_password() {
    let mut config = config(Mode::Hash, "p:{userId}");
    config.url = Secret::new("redis://app:hunter2@cache.internal:6380/3");
    let redis = Redis::new("cache", config);
    assert_eq!(redis.server(), "redis://cache.internal:6380/3");
    assert_eq!(redis.scrub("WRONGPASS hunter2"), "WRONGPASS ***");
    assert!(!format!("{redis:?}").contains("hunter2"));
}

#[test]
fn limits() {
    let mut config = config(Mode::Hash, "p:{userId}");
    config.batch_size = 500;
    config.concurrency = 8;
    let limits = Redis::new("cache", config).limits();
    assert_eq!(limits.max_events, 500);
    assert_eq!(limits.concurrency, 8);
    assert_eq!(limits.requests_per_second, None);
    assert_eq!(limits.max_bytes, MAX_BATCH_BYTES);
}

/// The outcome of an error reply to `HSET profile:42`, parsed from the wire as Redis sends it.
fn reply(line: &str) -> Outcome {
    let mut config = config(Mode::Hash, "p:{userId}");
    config.url = Secret::new("redis://app:hunter2@127.0.0.1:6379");
    let redis = Redis::new("cache", config);
    let command = Command::new("HSET", "profile:42").arg("score").arg("1");
    match ::redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap() {
        ::redis::Value::ServerError(e) => redis.reply_outcome(&e, &command.0),
        other => panic!("not an error reply: {other:?}"),
    }
}

#[test]
fn error_replies_refuse_or_retry_by_code() {
    let retried = [
        "LOADING Redis is loading the dataset in memory",
        "OOM command not allowed when used memory > 'maxmemory'.",
        "READONLY You can't write against a read only replica.",
        "BUSY Redis is busy running a script.",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
    ];
    for line in retried {
        match reply(line) {
            Outcome::Retry { after: None, error } => {
                assert_eq!(error.fault, Fault::External);
                assert!(
                    error.message.starts_with(
                        "Redis at redis://127.0.0.1:6379/0 cannot take `HSET profile:42` now"
                    ),
                    "{}",
                    error.message
                );
            }
            other => panic!("{line}: expected Retry, got {other:?}"),
        }
    }
    let refused = [
        (
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "Redis refused `HSET profile:42`: WRONGTYPE Operation against a key",
        ),
        (
            "ERR wrong number of arguments for 'hset' command",
            "Redis refused `HSET profile:42`: ERR wrong",
        ),
        (
            "NOAUTH Authentication required.",
            "refused the credentials (NOAUTH Authentication required.)",
        ),
        (
            "WRONGPASS invalid username-password pair or user is disabled.",
            "check the user and password in `url`",
        ),
        (
            "NOPERM User app has no permissions to run the 'hset' command",
            "grant it with `ACL SETUSER`",
        ),
        (
            "MOVED 3999 127.0.0.1:6381",
            "point `url` at a standalone server or a cluster proxy",
        ),
    ];
    for (line, expected) in refused {
        match reply(line) {
            Outcome::Rejected(error) => {
                assert_eq!(error.fault, Fault::User);
                assert!(
                    error.message.contains(expected),
                    "{line}: {}",
                    error.message
                );
                assert!(!error.message.contains("hunter2"), "{}", error.message);
                assert!(
                    !error.message.contains("score"),
                    "values are left out: {}",
                    error.message
                );
            }
            other => panic!("{line}: expected Rejected, got {other:?}"),
        }
    }
}
