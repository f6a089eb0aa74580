//! The `[destinations.NAME]` table of a Redis destination (`type = "redis"`).
//!
//! ```toml
//! [destinations.cache]
//! type = "redis"
//! url = "${REDIS_URL}"            # redis:// or rediss:// (TLS); user and password in the URL
//! mode = "hash"                   # hash | string | list | stream
//! key = "profile:{userId}"        # {userId} {anonymousId} {groupId} {messageId} {type} {event}
//!                                 # {traits.x} {properties.x} {context.x.y}; {{ and }} are braces
//! # value = "traits.churn_score"  # string mode: store this one field, not the whole event
//! # ttl = "7d"                    # EXPIRE the key after each write: 30s, 15m, 12h, 7d, 2w
//! # max_len = 10000               # list: LTRIM to the newest N; stream: XADD MAXLEN ~ N
//! # batch_size = 1000             # events per pipeline (one round trip)
//! # concurrency = 4               # pipelines in flight at once
//! ```

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tideway_core::config::{Diags, Secret};
use toml::Spanned;

/// Events per pipeline, unless configured.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// The largest `batch_size`: a pipeline's replies are held in memory until the last one.
pub const MAX_BATCH_SIZE: usize = 100_000;
/// Pipelines in flight at once, unless configured.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// The first part of a field path a key template or `value` may name.
pub const FIELD_ROOTS: &[&str] = &[
    "userId",
    "anonymousId",
    "groupId",
    "messageId",
    "type",
    "event",
    "traits",
    "properties",
    "context",
];

/// The roots that hold objects: a path must go into them (`traits.email`, not `traits`).
const OBJECT_ROOTS: &[&str] = &["traits", "properties", "context"];

/// An example table, parsed by a test.
pub const EXAMPLE: &str = r#"
[destinations.cache]
type = "redis"
url = "${REDIS_URL}"
mode = "hash"
key = "profile:{userId}"
ttl = "7d"
batch_size = 1000
concurrency = 4
"#;

/// A checked `[destinations.NAME]` table with `type = "redis"`: writes events to one Redis
/// server as hashes, strings, lists or streams.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://[user][:password@]host[:port][/db]`, or `rediss://` for TLS; a secret, since it
    /// may hold the password.
    pub url: Secret,
    /// What each event writes.
    pub mode: Mode,
    /// The key each event writes to.
    pub key: KeyTemplate,
    /// String mode: the one field stored as the value (`traits.churn_score`); `None` stores the
    /// whole event as JSON.
    pub value: Option<FieldPath>,
    /// `EXPIRE` after each write: the key lives this long after its last event.
    pub ttl: Option<Duration>,
    /// List mode: `LTRIM` to the newest `max_len` items; stream mode: `XADD MAXLEN ~ max_len`.
    pub max_len: Option<u64>,
    /// Events per pipeline (one round trip).
    pub batch_size: usize,
    /// Pipelines in flight at once.
    pub concurrency: usize,
}

/// What each event writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `HSET` the event's traits (identify, group) or properties (track, page, screen) as hash
    /// fields; a `null` field is `HDEL`eted.
    #[default]
    Hash,
    /// `SET` the event as JSON, or one of its fields (`value`).
    String,
    /// `RPUSH` the event as JSON.
    List,
    /// `XADD` the event (fields `type`, `messageId`, `op`, `event`).
    Stream,
}

impl Mode {
    /// The mode as written in `tideway.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hash => "hash",
            Mode::String => "string",
            Mode::List => "list",
            Mode::Stream => "stream",
        }
    }
}

/// A path into the event: `userId`, `traits.churn_score`, `context.device.id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    /// Checks `text` against [`FIELD_ROOTS`]; `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        let parts: Vec<String> = text.split('.').map(str::to_string).collect();
        if parts.iter().any(|p| p.trim().is_empty()) {
            return Err(format!(
                "`{text}` is not a field path such as `traits.email`"
            ));
        }
        let root = parts[0].as_str();
        if !FIELD_ROOTS.contains(&root) {
            return Err(format!(
                "unknown field `{root}` in `{text}`; fields are {}",
                FIELD_ROOTS.join(", ")
            ));
        }
        let object = OBJECT_ROOTS.contains(&root);
        if object && parts.len() == 1 {
            return Err(format!(
                "`{text}` is an object; name one of its fields, e.g. `{root}.email`"
            ));
        }
        if !object && parts.len() > 1 {
            return Err(format!("`{root}` has no fields; use `{root}` alone"));
        }
        Ok(FieldPath(parts))
    }

    /// The value at the path in `event`, if present.
    pub fn get<'a>(&self, event: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(event, |v, k| v.get(k.as_str()))
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A key template: text with `{field.path}` parts filled from each event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(FieldPath),
}

impl KeyTemplate {
    /// Parses `profile:{userId}`; `{{` and `}}` stand for braces. `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<KeyTemplate, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(format!(
                                    "`{text}` has a `{{` without its `}}` (write `{{{{` for a brace)"
                                ));
                            }
                        }
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(FieldPath::parse(name.trim())?));
                }
                '}' => {
                    return Err(format!(
                        "`{text}` has a `}}` without its `{{` (write `}}}}` for a brace)"
                    ));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if parts.is_empty() {
            return Err("`key` is empty; e.g. `key = \"profile:{userId}\"`".to_string());
        }
        Ok(KeyTemplate {
            text: text.to_string(),
            parts,
        })
    }

    /// The key of `event`, or why it has none (naming the missing field).
    pub fn render(&self, event: &Value) -> Result<String, String> {
        let mut key = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => key.push_str(t),
                Part::Field(path) => match path.get(event) {
                    Some(Value::String(s)) if !s.is_empty() => key.push_str(s),
                    Some(Value::Number(n)) => key.push_str(&n.to_string()),
                    Some(Value::Bool(b)) => key.push_str(if *b { "true" } else { "false" }),
                    Some(Value::Object(_) | Value::Array(_)) => {
                        return Err(format!(
                            "`{path}` is not a string or a number, so it cannot fill the key `{}`",
                            self.text
                        ));
                    }
                    _ => {
                        return Err(format!(
                            "the event has no `{path}` for the key `{}`",
                            self.text
                        ));
                    }
                },
            }
        }
        Ok(key)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The table as written; see the module docs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(rename = "type")]
    _kind: String,
    url: Spanned<String>,
    mode: Option<Spanned<Mode>>,
    key: Spanned<String>,
    value: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
    max_len: Option<Spanned<u64>>,
    batch_size: Option<Spanned<usize>>,
    concurrency: Option<Spanned<usize>>,
}

impl RedisConfig {
    /// A configuration with every default: hash mode, no TTL.
    pub fn new(url: Secret, key: KeyTemplate) -> Self {
        RedisConfig {
            url,
            mode: Mode::default(),
            key,
            value: None,
            ttl: None,
            max_len: None,
            batch_size: DEFAULT_BATCH_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Checks `[destinations.NAME]` of `only` (a text where everything else is blanked),
    /// reporting every problem into `diags` at its key; `${VAR}` is read from `env`.
    pub fn parse(
        name: &str,
        only: &str,
        diags: &mut Diags<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<RedisConfig> {
        let raw: Raw = crate::config::parse_one(only, name, diags)?;
        let url = diags.plain(&raw.url, env);
        if let Some(problem) = url
            .as_deref()
            .and_then(|u| url_problem(raw.url.get_ref(), u))
        {
            diags.at(Some(raw.url.span()), problem);
        }
        let key = match KeyTemplate::parse(raw.key.get_ref()) {
            Ok(key) => key,
            Err(message) => {
                diags.at(Some(raw.key.span()), message);
                KeyTemplate::parse("invalid").expect("a literal key parses")
            }
        };
        let mut config = RedisConfig::new(Secret::new(url.unwrap_or_default()), key);
        config.mode = raw.mode.as_ref().map_or(Mode::Hash, |m| *m.get_ref());
        let mode = config.mode;
        let only_in = |key: &str, modes: &str| {
            format!(
                "`{key}` applies to {modes} only; this destination's mode is `{}`",
                mode.as_str()
            )
        };
        if let Some(value) = &raw.value {
            if mode != Mode::String {
                diags.at(Some(value.span()), only_in("value", "`mode = \"string\"`"));
            }
            match FieldPath::parse(value.get_ref()) {
                Ok(path) => config.value = Some(path),
                Err(message) => diags.at(Some(value.span()), format!("`value`: {message}")),
            }
        }
        if let Some(ttl) = &raw.ttl {
            match tideway_core::time::parse_interval(ttl.get_ref()) {
                Some(d) => config.ttl = Some(d),
                None => diags.at(
                    Some(ttl.span()),
                    format!(
                        "`ttl` `{}` is not a duration; write a number and a unit: 30s, 15m, 12h, \
                         7d, 2w",
                        ttl.get_ref()
                    ),
                ),
            }
        }
        if let Some(max_len) = &raw.max_len {
            if !matches!(mode, Mode::List | Mode::Stream) {
                diags.at(
                    Some(max_len.span()),
                    only_in("max_len", "the list and stream modes"),
                );
            } else if *max_len.get_ref() == 0 {
                diags.at(
                    Some(max_len.span()),
                    "`max_len` 0 would keep nothing; leave it out to keep everything",
                );
            }
            config.max_len = Some(*max_len.get_ref());
        }
        if let Some(n) = &raw.batch_size {
            config.batch_size = *n.get_ref();
            if !(1..=MAX_BATCH_SIZE).contains(n.get_ref()) {
                diags.at(
                    Some(n.span()),
                    format!(
                        "`batch_size` {} is the events per pipeline, from 1 to {MAX_BATCH_SIZE}",
                        n.get_ref()
                    ),
                );
            }
        }
        if let Some(n) = &raw.concurrency {
            config.concurrency = *n.get_ref();
            if !(1..=64).contains(n.get_ref()) {
                diags.at(
                    Some(n.span()),
                    format!("`concurrency` {} must be from 1 to 64", n.get_ref()),
                );
            }
        }
        Some(config)
    }
}

/// What is wrong with the URL `url` (`written` as it is in the file, before `${VAR}`s are
/// replaced), if anything. Never repeats the URL itself, which may hold a password.
fn url_problem(written: &str, url: &str) -> Option<String> {
    let shape = "expected `redis://[user][:password@]host[:port][/db]` or `rediss://...` for TLS";
    let Some(parsed) = ::redis::parse_redis_url(url) else {
        return Some(format!("`url` `{written}` is not a Redis URL; {shape}"));
    };
    if ::redis::Client::open(url).is_err() {
        return Some(format!(
            "`url` `{written}` is not a usable Redis URL; {shape}"
        ));
    }
    if parsed.password().is_some() && !written.contains("${") {
        return Some(
            "`url` holds a password: read the URL from the environment, e.g. \
             `url = \"${REDIS_URL}\"`"
                .to_string(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<RedisConfig, Vec<String>> {
        let env = |name: &str| {
            (name == "REDIS_URL").then(|| "redis://:s3cret@127.0.0.1:6379/2".to_string())
        };
        let mut diags = Diags::new(text, "tideway.toml");
        let config = RedisConfig::parse("cache", text, &mut diags, &env);
        diags
            .finish(config)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    fn table(lines: &str) -> String {
        format!("[destinations.cache]\ntype = \"redis\"\n{lines}")
    }

    #[test]
    fn the_example_parses() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.url.expose(), "redis://:s3cret@127.0.0.1:6379/2");
        assert_eq!(config.mode, Mode::Hash);
        assert_eq!(config.key.as_str(), "profile:{userId}");
        assert_eq!(config.ttl, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(config.batch_size, 1000);
        assert_eq!(config.concurrency, 4);
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "the password is never shown"
        );
    }

    #[test]
    fn defaults() {
        let config = parse(&table(
            "url = \"redis://127.0.0.1\"\nkey = \"p:{userId}\"\n",
        ))
        .unwrap();
        assert_eq!(
            config,
            RedisConfig::new(
                Secret::new("redis://127.0.0.1"),
                KeyTemplate::parse("p:{userId}").unwrap()
            )
        );
        assert_eq!(config.mode, Mode::Hash);
        assert_eq!(
            (config.ttl, config.max_len, config.value),
            (None, None, None)
        );
    }

    #[test]
    fn string_list_and_stream_options() {
        let config = parse(&table(
            "url = \"rediss://cache.example.com:6380\"\nmode = \"string\"\n\
             key = \"churn:{userId}\"\nvalue = \"traits.churn_score\"\nttl = \"12h\"\n",
        ))
        .unwrap();
        assert_eq!(config.mode, Mode::String);
        assert_eq!(
            config.value,
            Some(FieldPath::parse("traits.churn_score").unwrap())
        );
        assert_eq!(config.ttl, Some(Duration::from_secs(12 * 3600)));
        let config = parse(&table(
            "url = \"${REDIS_URL}\"\nmode = \"stream\"\nkey = \"events:{type}\"\nmax_len = 500\n",
        ))
        .unwrap();
        assert_eq!((config.mode, config.max_len), (Mode::Stream, Some(500)));
    }

    #[test]
    fn every_problem_is_reported_at_its_line() {
        let text = table(
            r#"url = "http://127.0.0.1:6379"
mode = "hash"
key = "profile:{user.id}"
value = "traits.score"
ttl = "a week"
max_len = 10
batch_size = 0
concurrency = 100
"#,
        );
        let problems = parse(&text).unwrap_err();
        assert_eq!(problems.len(), 7, "{problems:#?}");
        assert!(
            problems[0].starts_with("tideway.toml:3:7: `url` `http://127.0.0.1:6379` is not a Redis URL; expected `redis://"),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with(
                "tideway.toml:5:7: unknown field `user` in `user.id`; fields are userId, anonymousId"
            ),
            "{problems:#?}"
        );
        assert!(
            problems[2]
                .starts_with("tideway.toml:6:9: `value` applies to `mode = \"string\"` only")
        );
        assert!(problems[3].starts_with("tideway.toml:7:7: `ttl` `a week` is not a duration"));
        assert!(
            problems[4].starts_with(
                "tideway.toml:8:11: `max_len` applies to the list and stream modes only"
            )
        );
        assert!(problems[5].starts_with("tideway.toml:9:14: `batch_size` 0"));
        assert!(problems[6].starts_with("tideway.toml:10:15: `concurrency` 100"));
    }

    #[test]
    fn unknown_keys_and_modes_are_refused() {
        let text = table(
            "url = \"redis://127.0.0.1\"\nkey = \"p:{userId}\"\nmode = \"set\"\nexpire = \"1d\"\n",
        );
        let problems = parse(&text).unwrap_err().join("\n");
        assert!(
            problems.contains(
                "tideway.toml:5:8: unknown variant `set`, expected one of `hash`, `string`, `list`, `stream`"
            ),
            "{problems}"
        );
        assert!(
            problems.contains("tideway.toml:6:1: unknown field `expire`"),
            "{problems}"
        );
    }

    #[test]
    fn a_password_in_clear_or_a_missing_variable_is_refused() {
        let problems = parse(&table(
            "url = \"redis://:hunter2@127.0.0.1\"\nkey = \"p:{userId}\"\n",
        ))
        .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("`url` holds a password: read the URL from the environment"));
        assert!(!problems[0].contains("hunter2"), "{problems:#?}");
        let problems =
            parse(&table("url = \"${NO_SUCH_URL}\"\nkey = \"p:{userId}\"\n")).unwrap_err();
        assert!(problems[0].contains("NO_SUCH_URL"), "{problems:#?}");
    }

    #[test]
    fn bad_key_templates_say_why() {
        for (key, expected) in [
            ("", "`key` is empty"),
            ("p:{userId", "without its `}`"),
            ("p:userId}", "without its `{`"),
            (
                "p:{traits}",
                "`traits` is an object; name one of its fields",
            ),
            ("p:{userId.x}", "`userId` has no fields"),
            ("p:{}", "is not a field path"),
        ] {
            let err = KeyTemplate::parse(key).unwrap_err();
            assert!(err.contains(expected), "{key}: {err}");
        }
    }

    #[test]
    fn key_templates_render_from_the_event() {
        let key =
            KeyTemplate::parse("{type}:{{{userId}}}:{traits.plan}:{context.device.id}").unwrap();
        let event = json!({
            "type": "identify", "userId": 42, "traits": { "plan": "pro" },
            "context": { "device": { "id": "d-1" } }
        });
        assert_eq!(key.render(&event).unwrap(), "identify:{42}:pro:d-1");
        let key = KeyTemplate::parse("profile:{userId}").unwrap();
        for (event, expected) in [
            (
                json!({ "anonymousId": "a" }),
                "the event has no `userId` for the key `profile:{userId}`",
            ),
            (json!({ "userId": "" }), "the event has no `userId`"),
            (json!({ "userId": null }), "the event has no `userId`"),
            (
                json!({ "userId": { "id": 1 } }),
                "`userId` is not a string or a number",
            ),
        ] {
            let err = key.render(&event).unwrap_err();
            assert!(err.contains(expected), "{event}: {err}");
        }
        let nested = KeyTemplate::parse("d:{context.device.id}").unwrap();
        assert_eq!(
            nested.render(&json!({ "context": {} })).unwrap_err(),
            "the event has no `context.device.id` for the key `d:{context.device.id}`"
        );
    }
}
