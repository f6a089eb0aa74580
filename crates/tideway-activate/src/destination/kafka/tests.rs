//! What events become as records (no broker needed).

use serde_json::{Value, json};

use super::*;

fn kafka(topic: &str, key: KeyChoice) -> Kafka {
    let mut config = KafkaConfig::new(["127.0.0.1:9"], TopicTemplate::parse(topic).unwrap());
    config.key = key;
    build("bus", config)
}

fn event(op: Op, event: Value) -> OutboundEvent {
    OutboundEvent {
        origin: "test".to_string(),
        op,
        event,
    }
}

#[test]
fn an_event_is_its_json_keyed_by_user_with_headers() {
    let e = json!({"type": "track", "event": "Order Completed", "userId": "u1",
                   "anonymousId": "a1", "messageId": "m1", "properties": {"total": 3}});
    let record = kafka("events.{type}", KeyChoice::User)
        .record(&event(Op::Upsert, e.clone()))
        .unwrap();
    assert_eq!(record.topic, "events.track");
    assert_eq!(record.key.as_deref(), Some("u1"));
    let value: Value = serde_json::from_slice(record.value.as_ref().unwrap()).unwrap();
    assert_eq!(value, e);
    assert_eq!(
        record.headers,
        [
            ("messageId", "m1".to_string()),
            ("type", "track".to_string())
        ]
    );
}

#[test]
fn an_anonymous_event_is_keyed_by_its_anonymous_id_and_a_keyless_one_has_no_key() {
    let k = kafka("clicks", KeyChoice::User);
    let anonymous = k
        .record(&event(
            Op::Upsert,
            json!({"type": "page", "anonymousId": "a9"}),
        ))
        .unwrap();
    assert_eq!(anonymous.key.as_deref(), Some("a9"));
    let keyless = k
        .record(&event(Op::Upsert, json!({"type": "page"})))
        .unwrap();
    assert_eq!(keyless.key, None);
    assert_eq!(keyless.headers, [("type", "page".to_string())]);
}

#[test]
fn a_delete_with_a_key_is_a_tombstone() {
    let record = kafka(
        "people",
        KeyChoice::Path(vec!["traits".into(), "account_id".into()]),
    )
    .record(&event(
        Op::Delete,
        json!({"type": "identify", "messageId": "m2", "traits": {"account_id": 7}}),
    ))
    .unwrap();
    assert_eq!(record.key.as_deref(), Some("7"));
    assert_eq!(record.value, None);
    assert!(record.headers.contains(&("op", "delete".to_string())));
}

#[test]
fn a_delete_without_a_key_is_the_event_marked_as_a_delete() {
    let record = kafka("people", KeyChoice::User)
        .record(&event(
            Op::Delete,
            json!({"type": "identify", "traits": {}}),
        ))
        .unwrap();
    assert_eq!(record.key, None);
    let value: Value = serde_json::from_slice(record.value.as_ref().unwrap()).unwrap();
    assert_eq!(
        value,
        json!({"type": "identify", "traits": {}, "tideway": {"op": "delete"}})
    );
}

#[test]
fn an_event_missing_a_topic_part_is_refused_naming_it() {
    let error = kafka("events.{event}", KeyChoice::User)
        .record(&event(
            Op::Upsert,
            json!({"type": "identify", "userId": "u"}),
        ))
        .unwrap_err();
    assert!(error.contains("needs `event`"), "{error}");
}

#[test]
fn the_producer_is_idempotent_and_compressed() {
    let config = kafka("t", KeyChoice::User).client_config();
    assert_eq!(config.get("enable.idempotence"), Some("true"));
    assert_eq!(config.get("acks"), Some("all"));
    assert_eq!(
        config.get("max.in.flight.requests.per.connection"),
        Some("5")
    );
    assert_eq!(config.get("compression.type"), Some("lz4"));
    assert_eq!(config.get("partitioner"), Some("murmur2_random"));
}

#[test]
fn errors_are_sorted_by_who_can_fix_them() {
    assert!(is_permanent(RDKafkaErrorCode::MessageSizeTooLarge));
    assert!(is_permanent(RDKafkaErrorCode::TopicAuthorizationFailed));
    assert!(!is_permanent(RDKafkaErrorCode::MessageTimedOut));
    assert!(!is_permanent(RDKafkaErrorCode::NotEnoughReplicas));
    assert!(!is_permanent(RDKafkaErrorCode::BrokerTransportFailure));
}
