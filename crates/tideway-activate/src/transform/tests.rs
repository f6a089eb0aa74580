use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;

const WAREHOUSE_UTILS: &str =
    include_str!("../../tests/fixtures/transformations/warehouseActionsUtils.js");
const OLD_NEW_TRUTH: &str = include_str!("../../tests/fixtures/transformations/old_new_truth.js");

fn source(name: &str, text: &str) -> Source {
    Source {
        name: name.to_string(),
        file: format!("transformations/{name}.js"),
        text: text.to_string(),
    }
}

fn load(text: &str) -> Transformation {
    Transformation::load(&source("t", text), &[], Limits::default()).expect("loads")
}

fn metadata() -> Value {
    json!({
        "sourceId": "src_2x", "sourceName": "accounts warehouse", "sourceType": "snowflake",
        "destinationId": "dst_9q", "destinationType": "SALESFORCE", "messageId": "m-1",
    })
}

fn run_one(t: &mut Transformation, event: Value) -> Result<Output, TransformError> {
    t.run(&[(event, metadata())]).remove(0)
}

fn truth_row(new_truth: Value, old_truth: Value) -> Value {
    json!({
        "type": "identify",
        "messageId": "retl-0015g00000XyZab-42",
        "anonymousId": "0015g00000XyZabAAB",
        "timestamp": "2026-03-02T10:00:00.000Z",
        "traits": {
            "account_id": "0015g00000XyZabAAB",
            "new_truth": new_truth,
            "old_truth": old_truth,
        },
        "context": {
            "library": { "name": "tideway", "version": "0.1.0" },
            "sources": { "job_id": "sync_accounts", "task_run_id": "run_42" },
        },
    })
}

fn seed() -> Transformation {
    Transformation::load(
        &source("old_new_truth", OLD_NEW_TRUTH),
        &[
            source("warehouseActionsUtils", WAREHOUSE_UTILS),
            source("unused", "this is not even javascript"),
        ],
        Limits::default(),
    )
    .expect("seed transformation loads")
}

#[test]
fn seed_unchanged_truths_drop_the_event_with_a_log_line() {
    let mut t = seed();
    // The same traits in three shapes warehouses produce: a JSON string, pairs, an object.
    let row = truth_row(
        json!(
            r#"[{"key":"plan","value":"pro"},{"key":"seats","value":120},{"key":"tags","value":["a","b"]}]"#
        ),
        json!({ "tags": ["a", "b"], "seats": 120, "plan": "pro", "churn_risk": null }),
    );
    let out = run_one(&mut t, row).expect("runs");
    assert_eq!(out.events, Vec::<Value>::new());
    assert_eq!(
        out.logs,
        vec![
            r#"unchanged, dropped: {"account":"0015g00000XyZabAAB","source":"accounts warehouse"}"#
        ]
    );
}

#[test]
fn seed_changed_truths_become_a_salesforce_group_call() {
    let mut t = seed();
    let row = truth_row(
        json!([
            { "key": "plan", "value": "enterprise" },
            { "key": "seats", "value": 120 },
            { "key": "owner", "value": { "name": "Ada", "email": "ada@example.com" } },
        ]),
        json!([
            { "KEY": "plan", "VALUE": "pro" },
            { "KEY": "seats", "VALUE": 120 },
            { "KEY": "owner", "VALUE": { "email": "ada@example.com", "name": "Ada" } },
            { "KEY": "trial_ends", "VALUE": "2026-01-31" },
        ]),
    );
    let out = run_one(&mut t, row).expect("runs");
    assert_eq!(
        out.events,
        vec![json!({
            "type": "group",
            "messageId": "retl-0015g00000XyZab-42",
            "groupId": "0015g00000XyZabAAB",
            "anonymousId": "0015g00000XyZabAAB",
            "timestamp": "2026-03-02T10:00:00.000Z",
            "traits": { "plan": "enterprise", "trial_ends": null },
            "context": {
                "library": { "name": "tideway", "version": "0.1.0" },
                "sources": { "job_id": "sync_accounts", "task_run_id": "run_42" },
                "externalId": [
                    { "type": "Salesforce-Account", "id": "0015g00000XyZabAAB", "identifierType": "Id" }
                ],
            },
            "integrations": { "All": false, "Salesforce": true },
        })]
    );
    assert_eq!(
        out.logs,
        vec![r#"account 0015g00000XyZabAAB changed: ["plan","trial_ends"]"#]
    );
}

#[test]
fn seed_row_without_account_id_names_the_line_that_threw() {
    let mut t = seed();
    let mut row = truth_row(json!({"plan": "pro"}), json!({}));
    row["traits"].as_object_mut().unwrap().remove("account_id");
    let err = run_one(&mut t, row).unwrap_err();
    let line = OLD_NEW_TRUTH
        .lines()
        .position(|l| l.contains("throw new Error"))
        .unwrap() as u32
        + 1;
    assert_eq!(
        err.to_string(),
        format!(
            "transformations/old_new_truth.js:{line}: Error: no account id in the row; looked for account_id, accountId, sfdc_account_id, salesforce_account_id"
        )
    );
}

#[test]
fn returning_an_array_sends_each_event() {
    let mut t = load(
        "export function transformEvent(e) {
           return [{ ...e, event: 'a' }, null, { ...e, event: 'b' }];
         }",
    );
    let out = run_one(&mut t, json!({"type": "track"})).unwrap();
    assert_eq!(
        out.events,
        vec![
            json!({"type": "track", "event": "a"}),
            json!({"type": "track", "event": "b"})
        ]
    );
}

#[test]
fn returning_null_or_nothing_drops_the_event() {
    let mut t = load(
        "export function transformEvent(e) {
           if (e.event === 'null') return null;
           if (e.event === 'empty') return [];
         }",
    );
    let inputs: Vec<_> = ["null", "undefined", "empty"]
        .iter()
        .map(|n| (json!({"event": n}), json!({})))
        .collect();
    for result in t.run(&inputs) {
        assert_eq!(result.unwrap(), Output::default());
    }
}

#[test]
fn returning_something_else_is_a_bad_return() {
    let mut t = load(
        "export function transformEvent(e) {
           return e.event === 'n' ? 42 : e.event === 's' ? 'hello' : [e, 7];
         }",
    );
    let inputs: Vec<_> = ["n", "s", "a"]
        .iter()
        .map(|n| (json!({"event": n}), json!({})))
        .collect();
    let errors: Vec<String> = t
        .run(&inputs)
        .into_iter()
        .map(|r| r.unwrap_err().to_string())
        .collect();
    let prefix = "transformations/t.js: transformEvent must return an event object, an array of event objects or nothing; it returned ";
    assert_eq!(
        errors,
        vec![
            format!("{prefix}a number (42)"),
            format!("{prefix}a string (\"hello\")"),
            format!("{prefix}an array whose item 1 is a number (7)"),
        ]
    );
}

#[test]
fn a_throw_names_file_and_line_and_the_next_event_runs() {
    let lib = source(
        "helpers",
        "export function dig(e) {\n  return e.context.page.url;\n}\n",
    );
    let main = source(
        "enrich",
        "import { dig } from 'helpers';\n\nexport function transformEvent(e) {\n  if (e.event === 'boom') throw new RangeError('bad ' + e.event);\n  if (e.event === 'dig') dig(e);\n  if (e.event === 'str') throw 'plain';\n  return e;\n}\n",
    );
    let mut t = Transformation::load(&main, &[lib], Limits::default()).unwrap();
    let inputs: Vec<_> = ["boom", "dig", "str", "ok"]
        .iter()
        .map(|n| (json!({"event": n}), json!({})))
        .collect();
    let results = t.run(&inputs);
    let errors: Vec<String> = results[..3]
        .iter()
        .map(|r| r.as_ref().unwrap_err().to_string())
        .collect();
    assert_eq!(
        errors,
        vec![
            "transformations/enrich.js:4: RangeError: bad boom",
            "transformations/helpers.js:2: TypeError: cannot read property 'page' of undefined",
            "transformations/enrich.js: uncaught exception: \"plain\"",
        ]
    );
    let TransformError::Thrown { stack, .. } = results[1].as_ref().unwrap_err() else {
        panic!("not thrown: {:?}", results[1]);
    };
    assert!(stack.contains("transformations/enrich.js:5"), "{stack}");
    assert_eq!(
        results[3].as_ref().unwrap().events,
        vec![json!({"event": "ok"})]
    );
}

#[test]
fn an_endless_loop_times_out_and_the_next_call_works() {
    let limits = Limits {
        timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let mut t = Transformation::load(
        &source(
            "spin",
            "export function transformEvent(e) {
               if (e.spin) { try { for (;;) {} } catch (err) { return { caught: true }; } }
               return e;
             }",
        ),
        &[],
        limits,
    )
    .unwrap();
    let started = Instant::now();
    let results = t.run(&[
        (json!({"n": 1}), json!({})),
        (json!({"spin": true}), json!({})),
        (json!({"n": 3}), json!({})),
    ]);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(results[0].as_ref().unwrap().events, vec![json!({"n": 1})]);
    assert_eq!(
        results[1].as_ref().unwrap_err(),
        &TransformError::Timeout {
            file: "transformations/spin.js".into(),
            millis: 100
        }
    );
    assert_eq!(results[2].as_ref().unwrap().events, vec![json!({"n": 3})]);
    // And a later call, too.
    let again = run_one(&mut t, json!({"n": 4})).unwrap();
    assert_eq!(again.events, vec![json!({"n": 4})]);
}

#[test]
fn an_endless_async_loop_times_out_and_the_next_call_works() {
    let limits = Limits {
        timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let mut t = Transformation::load(
        &source(
            "spin",
            "export async function transformEvent(e) {
               while (e.spin) await null;
               return e;
             }",
        ),
        &[],
        limits,
    )
    .unwrap();
    let results = t.run(&[
        (json!({"spin": true}), json!({})),
        (json!({"n": 2}), json!({})),
    ]);
    assert_eq!(
        results[0].as_ref().unwrap_err(),
        &TransformError::Timeout {
            file: "transformations/spin.js".into(),
            millis: 100
        }
    );
    assert_eq!(results[1].as_ref().unwrap().events, vec![json!({"n": 2})]);
}

#[test]
fn a_transformation_moves_between_threads() {
    let mut t = load("export function transformEvent(e) { e.n += 1; return e; }");
    for n in 0..3 {
        t = std::thread::spawn(move || {
            let out = run_one(&mut t, json!({"n": n})).unwrap();
            assert_eq!(out.events, vec![json!({"n": n + 1})]);
            t
        })
        .join()
        .unwrap();
    }
}

#[test]
fn a_top_level_endless_loop_times_out_at_load() {
    let limits = Limits {
        timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let err = Transformation::load(&source("spin", "for (;;) {}"), &[], limits).unwrap_err();
    assert_eq!(
        err,
        TransformError::Timeout {
            file: "transformations/spin.js".into(),
            millis: 50
        }
    );
}

#[test]
fn a_memory_bomb_is_out_of_memory_and_the_next_call_works() {
    let limits = Limits {
        memory_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    };
    let mut t = Transformation::load(
        &source(
            "bomb",
            "const keep = [];
             export function transformEvent(e) {
               if (e.bomb) { const a = []; for (;;) a.push(new Array(100000).fill(e.bomb)); }
               if (e.leak) { for (;;) keep.push('x'.repeat(1 << 16) + keep.length); }
               return e;
             }",
        ),
        &[],
        limits,
    )
    .unwrap();
    let results = t.run(&[
        (json!({"bomb": 1}), json!({})),
        (json!({"n": 2}), json!({})),
    ]);
    assert_eq!(
        results[0].as_ref().unwrap_err(),
        &TransformError::OutOfMemory {
            file: "transformations/bomb.js".into(),
            limit_mib: 16
        }
    );
    assert_eq!(results[1].as_ref().unwrap().events, vec![json!({"n": 2})]);
    // Memory that stays reachable after the throw: later events may fail too, but never crash.
    let leak = run_one(&mut t, json!({"leak": true})).unwrap_err();
    assert_eq!(
        leak.to_string(),
        "transformations/bomb.js: ran out of memory; the limit is 16 MiB"
    );
    let _ = run_one(&mut t, json!({"n": 3}));
}

#[test]
fn a_syntax_error_is_a_compile_error_with_line_and_column() {
    let err = Transformation::load(
        &source(
            "broken",
            "export function transformEvent(e) {\n  const x = ;\n  return e;\n}\n",
        ),
        &[],
        Limits::default(),
    )
    .unwrap_err();
    let TransformError::Compile {
        file, line, column, ..
    } = &err
    else {
        panic!("not a compile error: {err:?}");
    };
    assert_eq!((file.as_str(), *line), ("transformations/broken.js", 2));
    assert!(*column > 0, "{err}");
    assert!(
        err.to_string().starts_with("transformations/broken.js:2:"),
        "{err}"
    );
}

#[test]
fn a_syntax_error_in_a_library_names_the_library() {
    let err = Transformation::load(
        &source(
            "main",
            "import { f } from 'lib';\nexport function transformEvent(e) { return f(e); }",
        ),
        &[source("lib", "export function f(e) {\n  return e +;\n}\n")],
        Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, TransformError::Compile { file, line: 2, .. } if file == "transformations/lib.js"),
        "{err:?}"
    );
}

#[test]
fn an_unknown_import_names_the_libraries() {
    let err = Transformation::load(
        &source(
            "main",
            "import { f } from 'lib';\nexport function transformEvent(e) { return f(e); }",
        ),
        &[
            source(
                "lib",
                "import { g } from './warehouseUtils';\nexport const f = g;",
            ),
            source("warehouseActionsUtils", WAREHOUSE_UTILS),
        ],
        Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "transformations/lib.js: unknown import `./warehouseUtils`; available libraries: lib, warehouseActionsUtils"
    );
}

#[test]
fn a_module_without_entry_points_is_missing() {
    let err = Transformation::load(
        &source("empty", "export const x = 1;"),
        &[],
        Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        TransformError::Missing {
            file: "transformations/empty.js".into()
        }
    );
}

#[test]
fn metadata_is_a_function_and_carries_its_fields() {
    let mut t = load(
        "export function transformEvent(e, metadata) {
           e.called = metadata(e).previous;
           e.direct = metadata.previous;
           e.source = metadata(e).sourceId;
           const { destinationType } = metadata;
           e.destinationType = destinationType;
           e.name = metadata.name;
           return e;
         }",
    );
    let meta = json!({
        "sourceId": "src_1", "destinationType": "SALESFORCE", "previous": {"plan": "pro"},
        "name": "a field named like a function property",
    });
    let out = t.run(&[(json!({}), meta)]).remove(0).unwrap();
    assert_eq!(
        out.events,
        vec![json!({
            "called": {"plan": "pro"}, "direct": {"plan": "pro"}, "source": "src_1",
            "destinationType": "SALESFORCE", "name": "a field named like a function property",
        })]
    );
}

#[test]
fn log_writes_strings_as_is_and_the_rest_as_json() {
    let mut t = load(
        "export function transformEvent(e) {
           log('event', e.event, 1, true, null, undefined, { a: [1] });
           console.log('second');
           return e;
         }",
    );
    let out = run_one(&mut t, json!({"event": "x"})).unwrap();
    assert_eq!(
        out.logs,
        vec![r#"event x 1 true null undefined {"a":[1]}"#, "second"]
    );
}

#[test]
fn transform_batch_runs_once_over_all_events() {
    let mut t = load(
        "let calls = 0;
         export function transformBatch(events, metadata) {
           calls += 1;
           log('batch of', events.length, 'call', calls);
           const out = [];
           for (const e of events) {
             if (e.drop) continue;
             e.source = metadata(e).sourceId;
             out.push(e);
           }
           out.push({ messageId: 'm2', type: 'track', event: 'extra', first: metadata.sourceId });
           return out;
         }",
    );
    let inputs = vec![
        (json!({"messageId": "m1"}), json!({"sourceId": "a"})),
        (json!({"messageId": "m2"}), json!({"sourceId": "b"})),
        (
            json!({"messageId": "m3", "drop": true}),
            json!({"sourceId": "c"}),
        ),
    ];
    let results: Vec<Output> = t.run(&inputs).into_iter().map(Result::unwrap).collect();
    assert_eq!(
        results,
        vec![
            Output {
                events: vec![json!({"messageId": "m1", "source": "a"})],
                logs: vec!["batch of 3 call 1".into()],
            },
            Output {
                events: vec![
                    json!({"messageId": "m2", "source": "b"}),
                    json!({"messageId": "m2", "type": "track", "event": "extra", "first": "a"}),
                ],
                logs: vec![],
            },
            Output::default(),
        ]
    );
}

#[test]
fn transform_batch_throwing_fails_every_input() {
    let mut t = load("export function transformBatch(events) { throw new Error('nope'); }");
    let results = t.run(&[(json!({}), json!({})), (json!({}), json!({}))]);
    for r in results {
        assert_eq!(
            r.unwrap_err().to_string(),
            "transformations/t.js:1: Error: nope"
        );
    }
}

#[test]
fn async_transform_event_is_awaited() {
    let mut t = load(
        "const later = (v) => Promise.resolve(v);
         export async function transformEvent(e) {
           log('before', e.n);
           const n = await later(e.n * 2);
           log('after', n);
           if (n === 4) throw new Error('four');
           return { ...e, n };
         }",
    );
    let results = t.run(&[
        (json!({"n": 1}), json!({})),
        (json!({"n": 2}), json!({})),
        (json!({"n": 3}), json!({})),
    ]);
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Output {
            events: vec![json!({"n": 2})],
            logs: vec!["before 1".into(), "after 2".into()],
        }
    );
    assert!(
        results[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .ends_with("Error: four")
    );
    assert_eq!(results[2].as_ref().unwrap().events, vec![json!({"n": 6})]);
}

#[test]
fn many_events_keep_their_order() {
    let mut t = load(
        "export function transformEvent(e) { e.properties.x = e.properties.i * 2; return e; }",
    );
    let inputs: Vec<_> = (0..3000).map(|i| (track_event(i), metadata())).collect();
    let results = t.run(&inputs);
    assert_eq!(results.len(), 3000);
    for (i, r) in results.into_iter().enumerate() {
        let out = r.unwrap();
        assert_eq!(out.events[0]["properties"]["x"], json!(i * 2));
    }
}

#[test]
fn events_come_back_as_json_stringify_writes_them() {
    let mut t = load(
        "class Money { constructor(c) { this.cents = c; } toJSON() { return this.cents / 100; } }
         export function transformEvent(e) {
           return {
             ...e,
             at: new Date(Date.UTC(2026, 2, 2, 10, 0, 0)),
             skipped: undefined, fn() {}, [Symbol('s')]: 1,
             list: [undefined, () => 1, NaN, Infinity, 2.0, 2.5, -0],
             big: 2 ** 60, price: new Money(1999), tags: new Set(['a']), nothing: null,
           };
         }",
    );
    let event = json!({"__proto__": {"kept": true}, "nested": {"a": [1, {"b": "c"}]}, "n": 1.5});
    let out = run_one(&mut t, event).unwrap();
    assert_eq!(
        out.events,
        vec![json!({
            "__proto__": {"kept": true}, "nested": {"a": [1, {"b": "c"}]}, "n": 1.5,
            "at": "2026-03-02T10:00:00.000Z",
            "list": [null, null, null, null, 2, 2.5, 0],
            "big": 1_152_921_504_606_846_976_u64, "price": 19.99, "tags": {}, "nothing": null,
        })]
    );
}

#[test]
fn an_event_json_cannot_write_is_a_bad_return() {
    let mut t = load(
        "export function transformEvent(e) {
           if (e.kind === 'bigint') return { n: 10n };
           if (e.kind === 'getter') return { get x() { throw new Error('no x'); } };
           const a = {}; a.self = a; return a;
         }",
    );
    let results = t.run(&[
        (json!({"kind": "bigint"}), json!({})),
        (json!({"kind": "getter"}), json!({})),
        (json!({"kind": "cycle"}), json!({})),
        (json!({"kind": "bigint"}), json!({})),
    ]);
    let errors: Vec<String> = results
        .into_iter()
        .map(|r| r.unwrap_err().to_string())
        .collect();
    let prefix = "transformations/t.js: transformEvent must return an event object, an array of event objects or nothing; it returned an event that cannot be written as JSON: ";
    assert_eq!(
        errors,
        vec![
            format!("{prefix}a bigint"),
            format!("{prefix}threw Error: no x"),
            format!("{prefix}nested deeper than 256 levels, or cyclic"),
            format!("{prefix}a bigint"),
        ]
    );
}

#[test]
fn a_promise_that_never_settles_is_a_bad_return() {
    let mut t = load("export function transformEvent(e) { return new Promise(() => {}); }");
    let err = run_one(&mut t, json!({})).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("it returned a promise that never settled"),
        "{err}"
    );
}

#[test]
fn only_internal_errors_are_tideways_fault() {
    use tideway_core::{Fault, Faulty};
    let user = TransformError::Timeout {
        file: "transformations/t.js".into(),
        millis: 1,
    };
    let ours = TransformError::Internal {
        message: "x".into(),
    };
    assert_eq!((user.fault(), user.retryable()), (Fault::User, false));
    assert_eq!(ours.fault(), Fault::Internal);
}

#[test]
fn parse_frame_reads_quickjs_stack_lines() {
    assert_eq!(
        parse_frame("    at transformEvent (transformations/a.js:12:9)"),
        Some(("transformations/a.js", 12, 9))
    );
    assert_eq!(
        parse_frame("    at transformations/a.js:3:14"),
        Some(("transformations/a.js", 3, 14))
    );
    assert_eq!(parse_frame("    at <anonymous>"), None);
}

/// A Segment track event with a full context, about 1 KB as JSON.
fn track_event(i: usize) -> Value {
    json!({
        "type": "track",
        "event": "Order Completed",
        "messageId": format!("msg-{i:08}-4f1c-9a2e-7d3b0c1e5a6f"),
        "anonymousId": "3f7c2a10-8e4b-4a1d-9c7e-2b5d6f8a9c0e",
        "userId": format!("user_{i}"),
        "timestamp": "2026-03-02T10:00:00.000Z",
        "sentAt": "2026-03-02T10:00:00.120Z",
        "originalTimestamp": "2026-03-02T09:59:59.870Z",
        "properties": {
            "i": i, "order_id": "ord_5521", "total": 129.95, "revenue": 119.95, "currency": "EUR",
            "coupon": "SPRING26", "products": [
                { "product_id": "sku-1", "name": "Trail Shoe", "price": 89.95, "quantity": 1 },
                { "product_id": "sku-2", "name": "Socks", "price": 15.0, "quantity": 2 }
            ]
        },
        "context": {
            "ip": "203.0.113.24",
            "locale": "de-DE",
            "timezone": "Europe/Berlin",
            "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
            "library": { "name": "analytics.js", "version": "4.1.0" },
            "page": { "path": "/checkout/complete", "referrer": "https://shop.example.com/cart", "title": "Thank you", "url": "https://shop.example.com/checkout/complete" },
            "campaign": { "name": "spring_sale", "source": "newsletter", "medium": "email" },
            "screen": { "width": 1512, "height": 982, "density": 2 }
        },
        "integrations": { "All": true }
    })
}

/// `cargo test --release -- --ignored throughput --nocapture`
#[test]
#[ignore = "a measurement, run with --release"]
fn throughput() {
    let mut t = load("export function transformEvent(e){ e.properties.x = 1; return e; }");
    let inputs: Vec<_> = (0..20_000).map(|i| (track_event(i), metadata())).collect();
    let bytes = serde_json::to_vec(&inputs[0].0).unwrap().len();
    t.run(&inputs[..1000]);
    // On-CPU time of this thread (Linux), so that other load on the machine counts less.
    let cpu = || -> Option<Duration> {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        Some(Duration::from_nanos(
            stat.split_whitespace().next()?.parse().ok()?,
        ))
    };
    for _ in 0..3 {
        let (started, cpu_start) = (Instant::now(), cpu());
        let results = t.run(&inputs);
        let elapsed = started.elapsed();
        let on_cpu = cpu().zip(cpu_start).map(|(b, a)| b - a);
        assert!(results.iter().all(Result::is_ok));
        let n = inputs.len() as f64;
        println!(
            "{n} events of {bytes} bytes: {:.0} events/s wall ({elapsed:.2?}), {:.0} events/s on cpu",
            n / elapsed.as_secs_f64(),
            on_cpu.map_or(f64::NAN, |c| n / c.as_secs_f64()),
        );
    }
}

/// `cargo test --release -- --ignored load_time --nocapture`
#[test]
#[ignore = "a measurement, run with --release"]
fn load_time() {
    let started = Instant::now();
    for _ in 0..100 {
        seed();
    }
    println!(
        "seed transformation loads in {:.2?}",
        started.elapsed() / 100
    );
}
