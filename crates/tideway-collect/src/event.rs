//! Segment events: checking one as it arrives, and the record the log keeps of it.
//!
//! An event is checked without building a JSON tree: the fields the spec constrains are read as
//! raw JSON slices and checked one by one, so an error names its field, and the event's own
//! bytes go to the log untouched. What the server adds (the source, `receivedAt`, `sentAt`,
//! the corrected `timestamp`, a generated `messageId`) travels beside them in the record.
//!
//! # Record format
//! ```text
//! {"k":"event","source":"web","messageId":"...","receivedAt":"...",...}\n<the event's JSON>
//! {"k":"reject","source":"web","reason":"...","field":"event",...}\n<the raw event, as sent>
//! ```

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tideway_core::config::TimestampMode;

/// The event types of the Segment spec.
pub const EVENT_TYPES: &[&str] = &["track", "identify", "page", "screen", "group", "alias"];

/// The fields the spec constrains, as raw JSON (absent fields are `None`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    group_id: Option<&'a RawValue>,
    #[serde(borrow)]
    previous_id: Option<&'a RawValue>,
    #[serde(borrow)]
    message_id: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    original_timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
    #[serde(borrow)]
    traits: Option<&'a RawValue>,
    #[serde(borrow)]
    context: Option<&'a RawValue>,
    #[serde(borrow)]
    integrations: Option<&'a RawValue>,
}

/// Why an event was refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The field at fault (`event`, `userId`, ...), or `""` for the event as a whole.
    pub field: String,
    /// A short machine-readable reason: `missing_field`, `invalid_type`, `invalid_value`,
    /// `invalid_json`, `too_large`.
    pub code: &'static str,
    /// What is wrong and what is valid.
    pub message: String,
}

impl Rejection {
    fn new(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            field: field.to_string(),
            code,
            message: message.into(),
        }
    }
}

/// What the server knows about an accepted event, stored beside its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// `event` or `reject`.
    pub k: String,
    /// The source (from the write key); also the lake schema.
    pub source: String,
    /// The event type (`track`, ...); for a reject, what was claimed, if anything.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The event's id, sent or generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// When the server received the request (RFC 3339).
    pub received_at: String,
    /// When the client sent the request, from the event or its batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    /// The client's time of the event (its `timestamp` or `originalTimestamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_timestamp: Option<String>,
    /// The event's time, corrected for client clock skew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Context given once for a whole batch; the event's own context wins per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_context: Option<Box<RawValue>>,
    /// For a reject: the field at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a reject: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Meta {
    /// The log record: this header, a newline, then `body`.
    pub fn record(&self, body: &[u8]) -> bytes::Bytes {
        let mut out = serde_json::to_vec(self).expect("a Meta always serializes");
        out.push(b'\n');
        out.extend_from_slice(body);
        out.into()
    }

    /// The event as a destination receives it: its own fields, with what the server knows
    /// written in (`type`, `messageId`, the corrected `timestamp`, `originalTimestamp`,
    /// `sentAt`, `receivedAt`) and the batch's `context` under the event's own (the event's
    /// keys win). `body` is the event's bytes from the record.
    pub fn event(&self, body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        use serde_json::Value;
        let mut event: serde_json::Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| format!("the logged event is not a JSON object: {e}"))?;
        let mut set = |key: &str, value: Option<&String>| {
            if let Some(v) = value {
                event.insert(key.to_string(), Value::String(v.clone()));
            }
        };
        set("type", self.kind.as_ref());
        set("messageId", self.message_id.as_ref());
        set("timestamp", self.timestamp.as_ref());
        set("originalTimestamp", self.original_timestamp.as_ref());
        set("sentAt", self.sent_at.as_ref());
        set("receivedAt", Some(&self.received_at));
        if let Some(batch) = &self.batch_context
            && let Ok(mut context) =
                serde_json::from_str::<serde_json::Map<String, Value>>(batch.get())
        {
            if let Some(Value::Object(own)) = event.remove("context") {
                context.extend(own);
            }
            event.insert("context".into(), Value::Object(context));
        }
        Ok(event)
    }

    /// Splits a log record into its header and the event's bytes.
    pub fn parse(record: &[u8]) -> Result<(Meta, &[u8]), String> {
        let newline = record
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("a log record has no header line")?;
        let meta: Meta = serde_json::from_slice(&record[..newline])
            .map_err(|e| format!("a log record header is not valid: {e}"))?;
        Ok((meta, &record[newline + 1..]))
    }
}

/// What the request around an event contributes.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The source the write key names.
    pub source: &'a str,
    /// The type the path implies (`/v1/track`), or `None` for batches.
    pub path_type: Option<&'static str>,
    /// When the request arrived.
    pub received_at: DateTime<Utc>,
    /// The batch's `sentAt`, if any.
    pub batch_sent_at: Option<DateTime<Utc>>,
    /// The batch's `context`, if any.
    pub batch_context: Option<&'a RawValue>,
    /// How `timestamp` is computed.
    pub timestamps: TimestampMode,
    /// Largest accepted event, in bytes.
    pub max_event_bytes: usize,
}

/// Checks one event and builds its metadata, or says which field is wrong.
pub fn check(raw: &RawValue, env: &Envelope<'_>) -> Result<Meta, Rejection> {
    let text = raw.get();
    if text.len() > env.max_event_bytes {
        return Err(Rejection::new(
            "",
            "too_large",
            format!(
                "the event is {} bytes; the limit is {} bytes per event",
                text.len(),
                env.max_event_bytes
            ),
        ));
    }
    if !text.starts_with('{') {
        return Err(Rejection::new(
            "",
            "invalid_type",
            format!("an event must be a JSON object, got {}", kind_of(text)),
        ));
    }
    let e: RawEvent<'_> = serde_json::from_str(text).map_err(|err| {
        let msg = err.to_string();
        let field = msg
            .strip_prefix("duplicate field `")
            .and_then(|r| r.split('`').next())
            .unwrap_or("")
            .to_string();
        Rejection::new(&field, "invalid_json", msg)
    })?;

    let sent = string_field(e.kind, "type")?;
    let kind = match (env.path_type, sent.as_deref()) {
        (Some(path), _) => path,
        (None, Some(t)) => *EVENT_TYPES.iter().find(|k| **k == t).ok_or_else(|| {
            Rejection::new(
                "type",
                "invalid_value",
                format!(
                    "`{t}` is not an event type; valid types: {}",
                    EVENT_TYPES.join(", ")
                ),
            )
        })?,
        (None, None) => {
            return Err(Rejection::new(
                "type",
                "missing_field",
                format!(
                    "every event in a batch needs a `type`: one of {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    };
    let user_id = id_field(e.user_id, "userId")?;
    let anonymous_id = id_field(e.anonymous_id, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Rejection::new(
            "userId",
            "missing_field",
            "an event needs a `userId` or an `anonymousId`",
        ));
    }
    match kind {
        "track" if string_field(e.event, "event")?.is_none_or(|s| s.trim().is_empty()) => {
            return Err(Rejection::new(
                "event",
                "missing_field",
                "a track event needs an `event` name",
            ));
        }
        "group" if id_field(e.group_id, "groupId")?.is_none() => {
            return Err(Rejection::new(
                "groupId",
                "missing_field",
                "a group event needs a `groupId`",
            ));
        }
        "alias" => {
            if id_field(e.previous_id, "previousId")?.is_none() {
                return Err(Rejection::new(
                    "previousId",
                    "missing_field",
                    "an alias event needs a `previousId`",
                ));
            }
            if user_id.is_none() {
                return Err(Rejection::new(
                    "userId",
                    "missing_field",
                    "an alias event needs a `userId`",
                ));
            }
        }
        _ => {}
    }
    for (raw, field) in [
        (e.properties, "properties"),
        (e.traits, "traits"),
        (e.context, "context"),
        (e.integrations, "integrations"),
    ] {
        object_field(raw, field)?;
    }
    let message_id = id_field(e.message_id, "messageId")?
        .unwrap_or_else(|| format!("tw-{}", uuid::Uuid::new_v4()));
    let client_ts = time_field(e.timestamp, "timestamp")?;
    let original = match client_ts {
        Some(t) => Some(t),
        None => time_field(e.original_timestamp, "originalTimestamp")?,
    };
    let sent_at = time_field(e.sent_at, "sentAt")?.or(env.batch_sent_at);
    let received = env.received_at;
    let timestamp = match env.timestamps {
        TimestampMode::Segment => match (original, sent_at) {
            // Checked: absurd years (chrono parses ±262143) must not overflow.
            (Some(o), Some(s)) => received
                .checked_add_signed(o.signed_duration_since(s))
                .ok_or_else(|| {
                    Rejection::new(
                        "sentAt",
                        "invalid_value",
                        "`sentAt` and `originalTimestamp`/`timestamp` are too far apart to correct the clock skew",
                    )
                })?,
            (Some(o), None) => o,
            (None, _) => received,
        },
        TimestampMode::AsSent => original.unwrap_or(received),
    };
    Ok(Meta {
        k: "event".into(),
        source: env.source.to_string(),
        kind: Some(kind.to_string()),
        message_id: Some(message_id),
        received_at: rfc3339(received),
        sent_at: sent_at.map(rfc3339),
        original_timestamp: original.map(rfc3339),
        timestamp: Some(rfc3339(timestamp)),
        batch_context: env.batch_context.map(|c| c.to_owned()),
        field: None,
        reason: None,
    })
}

/// The metadata of a rejected event, for the dead-letter table.
pub fn rejected(raw_type: Option<&str>, rejection: &Rejection, env: &Envelope<'_>) -> Meta {
    Meta {
        k: "reject".into(),
        source: env.source.to_string(),
        kind: raw_type.map(str::to_string),
        message_id: None,
        received_at: rfc3339(env.received_at),
        sent_at: env.batch_sent_at.map(rfc3339),
        original_timestamp: None,
        timestamp: None,
        batch_context: None,
        field: Some(rejection.field.clone()),
        reason: Some(format!("{}: {}", rejection.code, rejection.message)),
    }
}

/// RFC 3339 in UTC with milliseconds, as Segment writes times.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn kind_of(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_none_or(|r| r.get() == "null")
}

fn string_field(raw: Option<&RawValue>, field: &str) -> Result<Option<String>, Rejection> {
    if is_null(raw) {
        return Ok(None);
    }
    let text = raw.expect("checked").get();
    if !text.starts_with('"') {
        return Err(Rejection::new(
            field,
            "invalid_type",
            format!(
                "`{field}` must be a string, got {}: {}",
                kind_of(text),
                clip(text)
            ),
        ));
    }
    serde_json::from_str::<String>(text)
        .map(Some)
        .map_err(|e| Rejection::new(field, "invalid_value", format!("`{field}`: {e}")))
}

/// An identifier: a string, or a number (kept as its text, as Segment does).
fn id_field(raw: Option<&RawValue>, field: &str) -> Result<Option<String>, Rejection> {
    if let Some(text) = raw.map(RawValue::get)
        && (text.starts_with('-') || text.starts_with(|c: char| c.is_ascii_digit()))
    {
        return Ok(Some(text.to_string()));
    }
    match string_field(raw, field) {
        Ok(Some(s)) if s.is_empty() => Ok(None),
        Err(mut e) => {
            e.message = format!(
                "`{field}` must be a string or a number, got {}",
                kind_of(raw.expect("an error means a value").get())
            );
            Err(e)
        }
        other => other,
    }
}

fn object_field(raw: Option<&RawValue>, field: &str) -> Result<(), Rejection> {
    match raw.map(RawValue::get) {
        None | Some("null") => Ok(()),
        Some(text) if text.starts_with('{') => Ok(()),
        Some(text) => Err(Rejection::new(
            field,
            "invalid_type",
            format!(
                "`{field}` must be an object, got {}: {}",
                kind_of(text),
                clip(text)
            ),
        )),
    }
}

fn time_field(raw: Option<&RawValue>, field: &str) -> Result<Option<DateTime<Utc>>, Rejection> {
    let Some(text) = string_field(raw, field)? else {
        return Ok(None);
    };
    parse_time(&text).map(Some).ok_or_else(|| {
        Rejection::new(
            field,
            "invalid_value",
            format!(
                "`{field}` is `{}`, not a time; use ISO-8601 / RFC 3339, e.g. `2026-11-25T14:03:00.123Z`",
                clip(&text)
            ),
        )
    })
}

pub use tideway_core::time::parse_time;

fn clip(text: &str) -> String {
    if text.len() <= 60 {
        return text.to_string();
    }
    let mut end = 60;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Unused outside tests: how far `timestamp` moved from the client's time.
#[cfg(test)]
fn skew(meta: &Meta) -> chrono::TimeDelta {
    let t = parse_time(meta.timestamp.as_deref().unwrap()).unwrap();
    let o = parse_time(meta.original_timestamp.as_deref().unwrap()).unwrap();
    t - o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(path_type: Option<&'static str>) -> Envelope<'static> {
        Envelope {
            source: "web",
            path_type,
            received_at: parse_time("2026-11-25T12:00:10Z").unwrap(),
            batch_sent_at: None,
            batch_context: None,
            timestamps: TimestampMode::Segment,
            max_event_bytes: 32 * 1024,
        }
    }

    fn check_str(text: &str, env: &Envelope<'_>) -> Result<Meta, Rejection> {
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        check(&raw, env)
    }

    #[test]
    fn a_logged_event_reads_back_with_what_the_server_added() {
        let batch: Box<RawValue> =
            serde_json::from_str(r#"{"library":{"name":"analytics-node"},"ip":"10.0.0.1"}"#)
                .unwrap();
        let mut e = env(None);
        e.batch_context = Some(&batch);
        let body = r#"{"type":"track","userId":"u1","event":"Paid","context":{"ip":"10.0.0.9"}}"#;
        let meta = check_str(body, &e).unwrap();
        let record = meta.record(body.as_bytes());
        let (meta, bytes) = Meta::parse(&record).unwrap();
        let event = meta.event(bytes).unwrap();
        assert_eq!(event["type"], "track");
        assert_eq!(event["event"], "Paid");
        assert_eq!(event["receivedAt"], "2026-11-25T12:00:10.000Z");
        assert_eq!(event["timestamp"], "2026-11-25T12:00:10.000Z");
        assert!(event["messageId"].as_str().unwrap().starts_with("tw-"));
        // The event's own context wins per key; the batch's fills the rest.
        assert_eq!(event["context"]["ip"], "10.0.0.9");
        assert_eq!(event["context"]["library"]["name"], "analytics-node");
        assert!(
            meta.event(b"[1]")
                .unwrap_err()
                .contains("not a JSON object")
        );
    }

    #[test]
    fn timestamp_corrects_client_clock_skew() {
        // The client clock is 1 hour behind: it stamped the event 2 s before sending.
        let m = check_str(
            r#"{"userId":"u1","event":"Signed Up","timestamp":"2026-11-25T11:00:00Z","sentAt":"2026-11-25T11:00:02Z"}"#,
            &env(Some("track")),
        )
        .unwrap();
        assert_eq!(m.timestamp.as_deref(), Some("2026-11-25T12:00:08.000Z"));
        assert_eq!(
            m.original_timestamp.as_deref(),
            Some("2026-11-25T11:00:00.000Z")
        );
        assert_eq!(
            skew(&m),
            chrono::TimeDelta::hours(1) + chrono::TimeDelta::seconds(8)
        );
        let mut as_sent = env(Some("track"));
        as_sent.timestamps = TimestampMode::AsSent;
        let m = check_str(
            r#"{"userId":"u1","event":"x","originalTimestamp":"2026-11-25T11:00:00+01:00","sentAt":"2026-11-25T11:00:02Z"}"#,
            &as_sent,
        )
        .unwrap();
        assert_eq!(m.timestamp.as_deref(), Some("2026-11-25T10:00:00.000Z"));
    }

    #[test]
    fn batch_sent_at_applies_and_received_at_is_the_default() {
        let mut e = env(None);
        e.batch_sent_at = parse_time("2026-11-25T12:00:05Z");
        let m = check_str(
            r#"{"type":"page","anonymousId":"a","originalTimestamp":"2026-11-25T12:00:04Z"}"#,
            &e,
        )
        .unwrap();
        assert_eq!(m.timestamp.as_deref(), Some("2026-11-25T12:00:09.000Z"));
        let m = check_str(r#"{"type":"identify","userId":42}"#, &e).unwrap();
        assert_eq!(m.timestamp.as_deref(), Some("2026-11-25T12:00:10.000Z"));
        assert!(m.message_id.unwrap().starts_with("tw-"));
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            (
                r#"{"userId":"u","event":5}"#,
                Some("track"),
                "event",
                "invalid_type",
            ),
            (r#"{"userId":"u"}"#, Some("track"), "event", "missing_field"),
            (r#"{"event":"x"}"#, Some("track"), "userId", "missing_field"),
            (
                r#"{"userId":{"a":1},"event":"x"}"#,
                Some("track"),
                "userId",
                "invalid_type",
            ),
            (
                r#"{"userId":"u","type":"trak"}"#,
                None,
                "type",
                "invalid_value",
            ),
            (r#"{"userId":"u"}"#, None, "type", "missing_field"),
            (
                r#"{"userId":"u","event":"x","properties":[1]}"#,
                Some("track"),
                "properties",
                "invalid_type",
            ),
            (
                r#"{"userId":"u","event":"x","timestamp":"yesterday"}"#,
                Some("track"),
                "timestamp",
                "invalid_value",
            ),
            (
                r#"{"userId":"u"}"#,
                Some("group"),
                "groupId",
                "missing_field",
            ),
            (
                r#"{"anonymousId":"a","previousId":"p"}"#,
                Some("alias"),
                "userId",
                "missing_field",
            ),
            (r#"[1,2]"#, Some("track"), "", "invalid_type"),
        ];
        for (text, path, field, code) in cases {
            let r = check_str(text, &env(path)).unwrap_err();
            assert_eq!((r.field.as_str(), r.code), (field, code), "{text}: {r:?}");
        }
    }

    #[test]
    fn absurd_years_are_refused_not_a_panic() {
        let r = check_str(
            r#"{"userId":"u","event":"e","timestamp":"-200000-01-01","sentAt":"+200000-01-01"}"#,
            &env(Some("track")),
        );
        assert!(r.is_err() || r.is_ok());
        let r = check_str(
            r#"{"userId":"u","event":"e","timestamp":"-262000-01-01T00:00:00Z","sentAt":"+262000-01-01T00:00:00Z"}"#,
            &env(Some("track")),
        )
        .unwrap_err();
        assert_eq!(r.field, "sentAt");
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut e = env(Some("track"));
        e.max_event_bytes = 64;
        let big = format!(
            r#"{{"userId":"u","event":"x","properties":{{"s":"{}"}}}}"#,
            "a".repeat(100)
        );
        let r = check_str(&big, &e).unwrap_err();
        assert_eq!(r.code, "too_large");
        assert!(r.message.contains("limit is 64 bytes"), "{}", r.message);
    }

    #[test]
    fn iso_8601_forms() {
        for t in [
            "2026-11-25T12:00:00Z",
            "2026-11-25T12:00:00.123456789Z",
            "2026-11-25T13:00:00+01:00",
            "2026-11-25T13:00:00+0100",
            "2026-11-25 12:00:00",
            "2026-11-25T12:00:00",
        ] {
            let p = parse_time(t).unwrap_or_else(|| panic!("{t}"));
            assert_eq!(
                p.timestamp(),
                parse_time("2026-11-25T12:00:00Z").unwrap().timestamp(),
                "{t}"
            );
        }
        assert!(parse_time("2026-11-25").is_some());
        assert!(parse_time("25/11/2026").is_none());
    }

    #[test]
    fn records_round_trip() {
        let m = check_str(r#"{"userId":"u","event":"x"}"#, &env(Some("track"))).unwrap();
        let rec = m.record(br#"{"userId":"u","event":"x"}"#);
        let (back, body) = Meta::parse(&rec).unwrap();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&m).unwrap()
        );
        assert_eq!(body, br#"{"userId":"u","event":"x"}"#);
    }
}
