//! The SQL a batch becomes (golden-ish), and how events are merged, grouped and refused.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::plan::{Plan, Tables, Target, plan};
use super::schema::PgType;
use super::{Failure, TableName, is_transient, outcomes};
use crate::destination::{DeliveryError, Op, OutboundEvent, Outcome};

fn target(create: bool) -> Target {
    Target {
        table: TableName::parse("public.lead_scores").unwrap(),
        key: vec!["user_id".into()],
        events_table: None,
        create,
    }
}

fn identify(user: &str, traits: Value) -> OutboundEvent {
    OutboundEvent {
        origin: user.to_string(),
        op: Op::Upsert,
        event: json!({"type": "identify", "userId": user, "messageId": format!("m-{user}"), "traits": traits}),
    }
}

fn table(columns: &[(&str, PgType)]) -> Tables {
    let mut map: BTreeMap<String, PgType> = columns
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    map.insert("_tideway_message_id".into(), PgType::text());
    map.insert("_tideway_updated_at".into(), PgType::timestamptz());
    Tables {
        target: Some(map),
        events: false,
    }
}

fn existing() -> Tables {
    table(&[
        ("user_id", PgType::text()),
        ("plan", PgType::text()),
        ("score", PgType::bigint()),
    ])
}

#[test]
fn a_new_table_is_created_with_the_batch_columns() {
    let p = plan(
        &target(true),
        &Tables::default(),
        &[identify(
            "u1",
            json!({"plan": "pro", "score": 3, "seen": "2026-01-02T03:04:05Z", "tags": ["a"], "gone": null}),
        )],
    );
    assert_eq!(
        p.ddl,
        [
            "CREATE TABLE IF NOT EXISTS \"public\".\"lead_scores\" (\"user_id\" text NOT NULL, \
             \"plan\" text, \"score\" bigint, \"seen\" timestamp with time zone, \"tags\" jsonb, \
             \"_tideway_message_id\" text, \"_tideway_updated_at\" timestamptz NOT NULL DEFAULT now(), \
             PRIMARY KEY (\"user_id\"))"
        ]
    );
}

#[test]
fn the_sql_of_a_batch() {
    let batch = [
        identify("u1", json!({"plan": "pro", "score": 3})),
        identify("u2", json!({"plan": null})),
        identify("u1", json!({"score": 4})),
        OutboundEvent {
            op: Op::Delete,
            ..identify("u3", json!({"plan": "free"}))
        },
    ];
    let p = plan(&target(true), &existing(), &batch);
    assert_eq!(p.refused, [None, None, None, None]);
    assert!(p.ddl.is_empty(), "{:?}", p.ddl);
    assert_eq!(p.stages.len(), 1);
    assert_eq!(
        p.stages[0].create,
        "CREATE TEMP TABLE tideway_stage (_tideway_group int, \"user_id\" text, \"plan\" text, \
         \"score\" bigint, _tideway_message_id text) ON COMMIT DROP"
    );
    assert_eq!(p.stages[0].copy, "COPY tideway_stage FROM STDIN");
    // u1 merged (score 4 wins, plan kept), u2 sets plan to NULL, u3 deleted.
    assert_eq!(
        p.stages[0].data,
        "1\tu1\tpro\t4\tm-u1\n2\tu2\t\\N\t\\N\tm-u2\n0\tu3\t\\N\t\\N\t\\N\n"
    );
    assert_eq!(
        p.apply,
        [
            "DELETE FROM \"public\".\"lead_scores\" AS t USING tideway_stage AS s WHERE \
             s._tideway_group = 0 AND t.\"user_id\" = s.\"user_id\"",
            "INSERT INTO \"public\".\"lead_scores\" (\"user_id\", \"plan\", \"score\", \
             \"_tideway_message_id\", \"_tideway_updated_at\") SELECT \"user_id\", \"plan\", \
             \"score\", \"_tideway_message_id\", now() FROM tideway_stage WHERE _tideway_group = 1 \
             ORDER BY \"user_id\" ON CONFLICT (\"user_id\") DO UPDATE SET \"plan\" = EXCLUDED.\"plan\", \
             \"score\" = EXCLUDED.\"score\", \"_tideway_message_id\" = EXCLUDED.\"_tideway_message_id\", \
             \"_tideway_updated_at\" = EXCLUDED.\"_tideway_updated_at\"",
            // u2 carries only `plan`: its update leaves `score` alone.
            "INSERT INTO \"public\".\"lead_scores\" (\"user_id\", \"plan\", \"_tideway_message_id\", \
             \"_tideway_updated_at\") SELECT \"user_id\", \"plan\", \"_tideway_message_id\", now() \
             FROM tideway_stage WHERE _tideway_group = 2 ORDER BY \"user_id\" ON CONFLICT (\"user_id\") \
             DO UPDATE SET \"plan\" = EXCLUDED.\"plan\", \"_tideway_message_id\" = \
             EXCLUDED.\"_tideway_message_id\", \"_tideway_updated_at\" = EXCLUDED.\"_tideway_updated_at\"",
        ]
    );
}

#[test]
fn a_delete_then_an_upsert_of_one_key_deletes_then_inserts_afresh() {
    let batch = [
        identify("u1", json!({"plan": "pro"})),
        OutboundEvent {
            op: Op::Delete,
            ..identify("u1", json!({}))
        },
        identify("u1", json!({"score": 1})),
    ];
    let p = plan(&target(true), &existing(), &batch);
    assert_eq!(
        p.stages[0].data, "0\tu1\t\\N\t\\N\n1\tu1\t1\tm-u1\n",
        "the delete row, then the upsert of score only"
    );
}

#[test]
fn new_and_wider_columns_alter_the_table() {
    let batch = [
        identify("u1", json!({"score": 2.5, "city": "Oslo"})),
        identify("u2", json!({"score": 1})),
    ];
    let p = plan(&target(true), &existing(), &batch);
    assert_eq!(
        p.ddl,
        [
            "ALTER TABLE \"public\".\"lead_scores\" ADD COLUMN IF NOT EXISTS \"city\" text, \
          ALTER COLUMN \"score\" TYPE double precision"
        ]
    );
    assert!(p.stages[0].create.contains("\"score\" double precision"));
}

#[test]
fn without_create_a_misfit_is_refused_alone_naming_column_value_and_type() {
    let batch = [
        identify("u1", json!({"score": 1})),
        identify("u2", json!({"score": "high"})),
        identify("u3", json!({"score": 2.5})),
        identify("u4", json!({"city": "Oslo"})),
        identify("u5", json!({"plan": "pro"})),
    ];
    let p = plan(&target(false), &existing(), &batch);
    assert!(p.ddl.is_empty());
    assert_eq!(p.refused[0], None);
    assert_eq!(
        p.refused[1].as_deref(),
        Some("column `score` of public.lead_scores: \"high\" does not fit a column of type bigint")
    );
    assert_eq!(
        p.refused[2].as_deref(),
        Some(
            "column `score` of public.lead_scores: 2.5 does not fit its type bigint (with `create = true` it would be widened to double precision)"
        )
    );
    assert!(
        p.refused[3]
            .as_deref()
            .unwrap()
            .contains("column `city` does not exist")
    );
    assert_eq!(p.refused[4], None);
    assert_eq!(p.stages[0].data.lines().count(), 2);
    // With create, a string into bigint is still refused: a numeric column never turns into text.
    let p = plan(&target(true), &existing(), &batch);
    assert!(p.refused[1].is_some());
    assert_eq!(p.refused.iter().filter(|r| r.is_some()).count(), 1);
}

#[test]
fn events_without_a_key_or_of_unknown_types_are_refused() {
    let batch = [
        OutboundEvent {
            origin: "x".into(),
            op: Op::Upsert,
            event: json!({"type": "identify", "anonymousId": "a1", "traits": {"plan": "pro"}}),
        },
        OutboundEvent {
            origin: "x".into(),
            op: Op::Upsert,
            event: json!({"type": "alias", "userId": "u1", "previousId": "a1"}),
        },
        identify("u1", json!({"_tideway_x": 1})),
        identify("u1", json!({"user_id": "from-traits", "plan": "pro"})),
    ];
    let p = plan(&target(true), &existing(), &batch);
    assert!(
        p.refused[0]
            .as_deref()
            .unwrap()
            .contains("no `user_id` in `traits` and no `userId`")
    );
    assert!(
        p.refused[1]
            .as_deref()
            .unwrap()
            .contains("`alias` is not written")
    );
    assert!(p.refused[2].as_deref().unwrap().contains("bookkeeping"));
    assert_eq!(p.refused[3], None);
    assert!(
        p.stages[0].data.starts_with("1\tfrom-traits\tpro\t"),
        "{}",
        p.stages[0].data
    );
}

#[test]
fn group_keys_come_from_group_id_and_tracks_append_to_the_events_table() {
    let mut t = target(true);
    t.events_table = Some(TableName::parse("tideway_events").unwrap());
    let batch = [
        OutboundEvent {
            origin: "g".into(),
            op: Op::Upsert,
            event: json!({"type": "group", "userId": "u1", "groupId": "acme", "traits": {"plan": "team"}}),
        },
        OutboundEvent {
            origin: "t".into(),
            op: Op::Upsert,
            event: json!({"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-9",
                          "timestamp": "2026-12-01T10:00:00Z", "properties": {"plan": "pro\tx"}}),
        },
    ];
    let p: Plan = plan(&t, &existing(), &batch);
    assert_eq!(p.refused, [None, None]);
    assert!(p.ddl[0].starts_with(
        "CREATE TABLE IF NOT EXISTS \"tideway_events\" (\"message_id\" text PRIMARY KEY"
    ));
    assert!(p.stages[0].data.starts_with("1\tacme\tteam\t"));
    assert_eq!(
        p.stages[1].data,
        "m-9\ttrack\tSigned Up\tu1\t\\N\t2026-12-01T10:00:00+00:00\t{\"plan\":\"pro\\\\tx\"}\t\\N\n"
    );
    assert_eq!(
        p.apply[1],
        "INSERT INTO \"tideway_events\" (\"message_id\", \"type\", \"event\", \"user_id\", \
         \"anonymous_id\", \"timestamp\", \"properties\", \"context\") SELECT \"message_id\", \
         \"type\", \"event\", \"user_id\", \"anonymous_id\", \"timestamp\", \"properties\", \
         \"context\" FROM tideway_stage_events ON CONFLICT (\"message_id\") DO NOTHING"
    );
}

#[test]
fn outcomes_follow_the_transaction() {
    let refused = [None, Some("bad".to_string()), None];
    let ok = outcomes(&refused, Ok(()));
    assert_eq!(ok[0], Outcome::Delivered);
    assert!(matches!(&ok[1], Outcome::Rejected(e) if e.message == "bad"));
    // Postgres refused the data while one event was refused before: the others are retried
    // (without it), so that a repeat of the error is split by the delivery layer.
    let data = outcomes(
        &refused,
        Err(Failure::Refused(DeliveryError::refused(None, "22P02"))),
    );
    assert!(matches!(data[0], Outcome::Retry { .. }), "{data:?}");
    let all = outcomes(
        &[None, None],
        Err(Failure::Refused(DeliveryError::refused(None, "22P02"))),
    );
    assert!(matches!(all[0], Outcome::Rejected(_)) && all[0] == all[1]);
    let down = outcomes(
        &[None],
        Err(Failure::Retry(DeliveryError::external(None, "57P01"))),
    );
    assert!(matches!(down[0], Outcome::Retry { .. }));
}

#[test]
fn transient_sqlstates() {
    for code in [
        "08006", "57P01", "57P03", "40001", "40P01", "53300", "55P03",
    ] {
        assert!(is_transient(code), "{code}");
    }
    for code in ["22P02", "23505", "42703", "42P10", "28P01"] {
        assert!(!is_transient(code), "{code}");
    }
}

#[test]
fn an_integer_key_column_takes_string_ids_and_merges_them_with_numbers() {
    let tables = table(&[("user_id", PgType::bigint()), ("plan", PgType::text())]);
    let batch = [
        identify("42", json!({"plan": "free"})),
        identify("x", json!({"user_id": 42, "plan": "pro"})),
        identify("abc", json!({"plan": "team"})),
    ];
    let p = plan(&target(false), &tables, &batch);
    assert_eq!(p.refused[..2], [None, None]);
    assert!(
        p.refused[2]
            .as_deref()
            .unwrap()
            .contains("\"abc\" does not fit a column of type bigint")
    );
    assert_eq!(
        p.stages[0].data, "1\t42\tpro\tm-x\n",
        "one row: the two events are one key"
    );
}
