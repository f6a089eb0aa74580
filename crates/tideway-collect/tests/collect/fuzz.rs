//! Bad input, generated: every request gets a clear answer (never a 5xx, never a crash), every
//! bad event becomes a dead letter, and no valid event of the same batch is lost.

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use tideway_collect::log::{EventLog, FileLogOptions};

use crate::http::{Server, config, start};

#[derive(Debug, Clone)]
enum Item {
    Valid(&'static str),
    /// A field with a value of the wrong type.
    WrongType(&'static str, &'static str),
    /// A string far over the event limit.
    Huge(usize),
    /// Properties nested this deep (within JSON parsers' limits), a valid event.
    Deep(usize),
    /// Bytes that are not UTF-8 inside a string.
    InvalidUtf8,
    UnknownType,
    NotAnObject(&'static str),
    /// A number no parser can hold as a double: accepted by the API (it is valid JSON), then
    /// a dead letter at load.
    HugeNumber,
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        6 => prop::sample::select(vec!["track", "identify", "page", "screen", "group", "alias"]).prop_map(Item::Valid),
        3 => (
            prop::sample::select(vec!["event", "userId", "properties", "traits", "context", "timestamp", "sentAt", "groupId"]),
            prop::sample::select(vec!["123.5", "{\"a\":1}", "[1,2]", "true", "\"not a time\""]),
        ).prop_map(|(f, v)| Item::WrongType(f, v)),
        1 => (40_000usize..200_000).prop_map(Item::Huge),
        1 => (11usize..100).prop_map(Item::Deep),
        1 => Just(Item::InvalidUtf8),
        1 => Just(Item::UnknownType),
        1 => prop::sample::select(vec!["1", "\"x\"", "null", "[]", "true"]).prop_map(Item::NotAnObject),
        1 => Just(Item::HugeNumber),
    ]
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// What should become of an item.
#[derive(Debug, PartialEq)]
enum Fate {
    Stored(String),
    Rejected,
    DeadAtLoad,
}

/// The bytes of one item, and what should become of it.
fn render(item: &Item) -> (Vec<u8>, Fate) {
    let id = format!("f{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let base = |kind: &str| {
        let extra = match kind {
            "track" => r#","event":"Fuzzed""#,
            "group" => r#","groupId":"g1""#,
            "alias" => r#","previousId":"p1""#,
            _ => "",
        };
        format!(r#"{{"type":"{kind}","userId":"u-{id}","messageId":"{id}"{extra}"#)
    };
    match item {
        Item::Valid(kind) => (format!("{}}}", base(kind)).into_bytes(), Fate::Stored(id)),
        Item::HugeNumber => (
            format!(r#"{},"properties":{{"n":1e999}}}}"#, base("track")).into_bytes(),
            Fate::DeadAtLoad,
        ),
        Item::Deep(depth) => {
            let inner = format!("{}1{}", "{\"a\":".repeat(*depth), "}".repeat(*depth));
            (
                format!(r#"{},"properties":{{"deep":{inner}}}}}"#, base("track")).into_bytes(),
                Fate::Stored(id),
            )
        }
        Item::WrongType(field, value) => {
            let kind = if *field == "groupId" {
                "group"
            } else {
                "track"
            };
            let mut text =
                format!(r#"{{"type":"{kind}","anonymousId":"a-{id}","messageId":"{id}""#);
            if *field != "event" && kind == "track" {
                text.push_str(r#","event":"E""#);
            }
            text.push_str(&format!(r#","{field}":{value}}}"#));
            // Some combinations are fine: ids may be numbers or strings, an object where an
            // object belongs, a string as the event name.
            let valid = match *field {
                "userId" | "groupId" => matches!(*value, "123.5" | "\"not a time\""),
                "properties" | "traits" | "context" => *value == "{\"a\":1}",
                "event" => *value == "\"not a time\"",
                _ => false,
            };
            (
                text.into_bytes(),
                if valid {
                    Fate::Stored(id)
                } else {
                    Fate::Rejected
                },
            )
        }
        Item::Huge(n) => (
            format!(
                r#"{},"properties":{{"s":"{}"}}}}"#,
                base("track"),
                "x".repeat(*n)
            )
            .into_bytes(),
            Fate::Rejected,
        ),
        Item::InvalidUtf8 => {
            let mut b = format!(r#"{},"properties":{{"s":""#, base("track")).into_bytes();
            b.extend_from_slice(b"\xff\xfe\xc3");
            b.extend_from_slice(b"\"}}");
            (b, Fate::Rejected)
        }
        Item::UnknownType => (
            format!(r#"{{"type":"trak","userId":"u","messageId":"{id}"}}"#).into_bytes(),
            Fate::Rejected,
        ),
        Item::NotAnObject(v) => (v.as_bytes().to_vec(), Fate::Rejected),
    }
}

async fn send(s: &Server, items: &[Item]) -> (u16, serde_json::Value, Vec<String>, usize, usize) {
    let mut body = b"{\"batch\":[".to_vec();
    let mut valid = Vec::new();
    let mut bad = 0;
    let mut dead_at_load = 0;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let (bytes, fate) = render(item);
        body.extend_from_slice(&bytes);
        match fate {
            Fate::Stored(id) => valid.push(id),
            Fate::Rejected => bad += 1,
            Fate::DeadAtLoad => dead_at_load += 1,
        }
    }
    body.extend_from_slice(b"]}");
    let resp = s
        .client
        .post(format!("{}/v1/batch", s.url))
        .basic_auth("wk_test_server", Some(""))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
    (status, answer, valid, bad, dead_at_load)
}

#[test]
fn fuzzed_batches_lose_no_valid_event() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut cfg = config();
    cfg.max_event_bytes = 32 * 1024;
    cfg.max_request_bytes = 4 << 20;
    let server = rt.block_on(start(cfg, FileLogOptions::default()));
    let all_valid: std::cell::RefCell<Vec<String>> = Default::default();
    let all_bad = std::cell::Cell::new(0usize);
    let all_dead_at_load = std::cell::Cell::new(0usize);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(item(), 1..12), |items| {
            let (status, answer, valid, bad, dead_at_load) = rt.block_on(send(&server, &items));
            if valid.is_empty() && dead_at_load == 0 {
                prop_assert_eq!(status, 400, "{:?} {}", items, answer);
                prop_assert!(answer["code"].is_string() && answer["message"].is_string());
            } else {
                prop_assert_eq!(status, 200, "{:?} {}", items, answer);
                let rejected = answer["rejected"].as_array().map_or(0, Vec::len);
                prop_assert_eq!(rejected, bad, "{}", answer);
            }
            all_valid.borrow_mut().extend(valid);
            all_bad.set(all_bad.get() + bad);
            all_dead_at_load.set(all_dead_at_load.get() + dead_at_load);
            Ok(())
        })
        .unwrap();
    rt.block_on(async {
        server.load().await;
        let mut stored = std::collections::BTreeSet::new();
        for table in [
            "tracks",
            "identifies",
            "pages",
            "screens",
            "groups",
            "aliases",
        ] {
            if server
                .lake
                .tables()
                .await
                .unwrap()
                .iter()
                .any(|t| t.to_string() == format!("server.{table}"))
            {
                for row in server
                    .query(&format!("SELECT id FROM server.{table}"))
                    .await
                {
                    assert!(
                        stored.insert(row["id"].as_str().unwrap().to_string()),
                        "duplicate {row:?}"
                    );
                }
            }
        }
        let all_valid = all_valid.borrow().clone();
        let missing: Vec<&String> = all_valid
            .iter()
            .filter(|id| !stored.contains(*id))
            .collect();
        assert!(missing.is_empty(), "valid events lost: {missing:?}");
        let dead = server
            .query("SELECT count(*) AS n FROM _tideway.dead_letters WHERE stage = 'collect'")
            .await;
        assert_eq!(dead[0]["n"].as_u64().unwrap() as usize, all_bad.get());
        let dead = server
            .query("SELECT count(*) AS n FROM _tideway.dead_letters WHERE stage = 'load'")
            .await;
        assert_eq!(
            dead[0]["n"].as_u64().unwrap() as usize,
            all_dead_at_load.get()
        );
        assert!(server.log.stats().end > 0);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Arbitrary bytes, and valid bodies cut anywhere: a 4xx, never a 5xx.
    #[test]
    fn arbitrary_bodies_get_a_clear_4xx(bytes in prop::collection::vec(any::<u8>(), 0..300), cut in 0usize..120) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let s = start(config(), FileLogOptions::default()).await;
            let valid = r#"{"batch":[{"type":"track","userId":"u","event":"E","properties":{"a":[1,2,{"b":null}]}}],"sentAt":"2026-11-25T00:00:00Z"}"#;
            for (path, body) in [
                ("/v1/batch", bytes.clone()),
                ("/v1/track", bytes.clone()),
                ("/v1/batch", valid.as_bytes()[..cut.min(valid.len() - 1)].to_vec()),
            ] {
                let resp = s.client.post(format!("{}{path}", s.url)).basic_auth("wk_test_server", Some("")).body(body).send().await.unwrap();
                let status = resp.status().as_u16();
                assert!((400..500).contains(&status), "{path}: {status}");
            }
        });
    }
}
