//! Redis: each event written to one key as hash fields, a string, a list item or a stream
//! entry; a batch is one pipeline (one round trip).
//!
//! ```toml
//! [destinations.cache]
//! type = "redis"
//! url = "${REDIS_URL}"            # redis:// or rediss:// (TLS); user and password in the URL
//! mode = "hash"                   # hash | string | list | stream
//! key = "profile:{userId}"
//! ttl = "7d"
//! ```
//!
//! A sync of the churn score into `mode = "hash"` with `key = "profile:{userId}"` makes
//! `HGET profile:42 churn_score` answer the score as soon as its batch is delivered.
//!
//! | mode     | `Op::Upsert`                                                          | `Op::Delete`           |
//! |----------|-----------------------------------------------------------------------|------------------------|
//! | `hash`   | `HSET key field value ...`, `HDEL key field ...` for `null` fields    | `DEL key`              |
//! | `string` | `SET key <event JSON> [EX ttl]`, or the `value` field; `null`: `DEL`  | `DEL key`              |
//! | `list`   | `RPUSH key <event JSON>`, `LTRIM key -max_len -1`                     | the same (the JSON carries `"tideway": {"op": "delete"}`) |
//! | `stream` | `XADD key [MAXLEN ~ max_len] * type T messageId M op upsert event <JSON>` | the same, `op delete` |
//!
//! With `ttl`, every write but a `DEL` is followed by `EXPIRE key <ttl seconds>` (strings use
//! `SET ... EX`), so a key lives `ttl` after its last event. Hash fields are the traits of
//! `identify` and `group` calls and the properties of `track`, `page` and `screen` calls: a
//! string is stored as it is, a number or boolean as its text, an object or array as JSON;
//! an event with no fields writes nothing (but refreshes the TTL).
//!
//! The key template (`profile:{userId}`) is filled from each event; an event that lacks a part
//! is refused alone, naming the field. Every event's commands go in the batch's pipeline; each
//! event's outcome comes from its own commands' replies: an error reply (`WRONGTYPE` on a key
//! of another type) refuses that event alone (its other commands may have run), a server that
//! is loading, out of memory or read-only retries it, and a lost connection or a timeout
//! retries the whole batch. Refused credentials (`NOAUTH`, `WRONGPASS`) and ACL refusals
//! (`NOPERM`) refuse the event with a message naming what to fix. The password never appears
//! in a message, a log line or the inspector.
//!
//! One multiplexed connection is shared by the pipelines in flight; it is made on the first
//! delivery or healthcheck and remade in the background when it drops.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{ErrorKind, RedisError, ServerError, Value as Reply};
use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::http::{Exchange, INSPECTED};
use super::{BatchLimits, DeliveryError, Destination, Op, OutboundEvent, Outcome};

mod config;
#[cfg(test)]
mod tests;

pub use config::{
    DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, EXAMPLE, FIELD_ROOTS, FieldPath, KeyTemplate,
    MAX_BATCH_SIZE, Mode, RedisConfig,
};

/// Bytes of serialized events per pipeline: Redis takes any size, this only bounds memory.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// How long connecting (and authenticating) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pipeline's replies may take.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a pipeline kept for the inspector.
const EXCERPT: usize = 2048;

/// One Redis command as sent: its name, then its arguments.
#[derive(Clone)]
pub struct Command(::redis::Cmd);

impl Command {
    fn new(name: &str, key: &str) -> Command {
        let mut cmd = ::redis::Cmd::with_capacity(4, 64);
        cmd.arg(name).arg(key);
        Command(cmd)
    }

    fn arg(mut self, arg: impl ::redis::ToRedisArgs) -> Command {
        self.0.arg(arg);
        self
    }

    /// The name and the arguments, as text.
    pub fn args(&self) -> Vec<String> {
        args(&self.0).collect()
    }
}

/// The arguments of `cmd` (its name first), as text.
fn args(cmd: &::redis::Cmd) -> impl Iterator<Item = String> + '_ {
    cmd.args_iter().map(|arg| match arg {
        ::redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        // Only a cursor argument (SCAN) is anything else; no command here has one.
        _ => "<cursor>".to_string(),
    })
}

/// `HSET profile:42`: a command's name and key, for messages (the values are left out).
fn summary(cmd: &::redis::Cmd) -> String {
    args(cmd).take(2).collect::<Vec<_>>().join(" ")
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.args().join(" "))
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Command").field(&self.args()).finish()
    }
}

impl PartialEq for Command {
    fn eq(&self, other: &Self) -> bool {
        self.args() == other.args()
    }
}

/// A Redis destination. See the module docs.
pub struct Redis {
    name: String,
    config: RedisConfig,
    /// The server as messages name it: `redis://host:port/db`, never the password.
    server: String,
    client: Result<::redis::Client, String>,
    connection: OnceCell<ConnectionManager>,
    log: Mutex<VecDeque<Exchange>>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("mode", &self.config.mode)
            .field("key", &self.config.key.as_str())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// The destination named `name` (`[destinations.NAME]`) from a checked configuration; it
    /// connects on its first delivery or healthcheck, so this does not fail.
    pub fn new(name: &str, config: RedisConfig) -> Redis {
        let client = ::redis::Client::open(config.url.expose()).map_err(|_| {
            format!(
                "`url` of destination `{name}` is not a Redis URL; expected \
                 `redis://[user][:password@]host[:port][/db]` or `rediss://...`"
            )
        });
        let server = match &client {
            Ok(c) => {
                let info = c.get_connection_info();
                let scheme = config.url.expose().split("://").next().unwrap_or("redis");
                format!("{scheme}://{}/{}", info.addr(), info.redis_settings().db())
            }
            Err(_) => "an invalid URL".to_string(),
        };
        Redis {
            name: name.to_string(),
            config,
            server,
            client,
            connection: OnceCell::new(),
            log: Mutex::new(VecDeque::with_capacity(INSPECTED)),
        }
    }

    /// The configuration the destination was built with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The server, as messages name it (`redis://127.0.0.1:6379/0`): never the password.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The commands `event` becomes, or why it cannot be written (naming the missing or bad
    /// field).
    pub fn plan(&self, event: &OutboundEvent) -> Result<Vec<Command>, String> {
        plan(&self.config, event)
    }

    async fn connect(&self) -> Result<ConnectionManager, DeliveryError> {
        let client = self
            .client
            .as_ref()
            .map_err(|m| DeliveryError::refused(None, m.clone()))?;
        let manager = self
            .connection
            .get_or_try_init(|| async {
                install_tls_provider();
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map_err(|e| self.transport_error(&e))
            })
            .await?;
        Ok(manager.clone())
    }

    /// A failure to talk to the server: refused credentials are the configuration's fault,
    /// anything else (refused connection, timeout, dropped connection) the server's.
    fn transport_error(&self, error: &RedisError) -> DeliveryError {
        let code = error.code().unwrap_or_default();
        let text = match (error.code(), error.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            (Some(code), None) => code.to_string(),
            (None, _) => error.to_string(),
        };
        let text = self.scrub(&text);
        if error.kind() == ErrorKind::AuthenticationFailed || matches!(code, "NOAUTH" | "WRONGPASS")
        {
            return self.credentials_error(&text);
        }
        let what = if error.is_timeout() {
            "no answer in time from"
        } else {
            "cannot reach"
        };
        DeliveryError::external(None, format!("{what} Redis at {}: {text}", self.server))
    }

    fn credentials_error(&self, detail: &str) -> DeliveryError {
        DeliveryError::refused(
            None,
            format!(
                "Redis at {} refused the credentials ({detail}): check the user and password \
                 in `url` (redis://user:password@host:port)",
                self.server
            ),
        )
    }

    /// `text` without the URL's password, in case a message repeats it.
    fn scrub(&self, text: &str) -> String {
        let password = self
            .client
            .as_ref()
            .ok()
            .and_then(|c| c.get_connection_info().redis_settings().password());
        match password {
            Some(p) if !p.is_empty() => text.replace(p, "***"),
            _ => text.to_string(),
        }
    }

    /// The outcome of `command`'s error reply.
    fn reply_outcome(&self, error: &ServerError, command: &::redis::Cmd) -> Outcome {
        let code = error.code();
        let text = match error.details() {
            Some(detail) => format!("{code} {detail}"),
            None => code.to_string(),
        };
        let text = self.scrub(&text);
        let what = summary(command);
        let refused = |message: String| Outcome::Rejected(DeliveryError::refused(None, message));
        match code {
            "LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "READONLY" | "OOM"
            | "MISCONF" | "NOREPLICAS" => Outcome::Retry {
                after: None,
                error: DeliveryError::external(
                    None,
                    format!("Redis at {} cannot take `{what}` now: {text}", self.server),
                ),
            },
            "NOAUTH" | "WRONGPASS" => Outcome::Rejected(self.credentials_error(&text)),
            "NOPERM" => refused(format!(
                "the Redis user of `url` may not run `{what}` ({text}): grant it with `ACL \
                 SETUSER`, or use another user"
            )),
            "MOVED" | "ASK" => refused(format!(
                "`{what}` belongs to another node of a Redis Cluster ({text}); this destination \
                 writes to one server: point `url` at a standalone server or a cluster proxy"
            )),
            _ => refused(format!("Redis refused `{what}`: {text}")),
        }
    }

    /// Sends `pipe` (made with `ignore_errors`): one reply per command, error replies
    /// included.
    async fn run(&self, pipe: &::redis::Pipeline) -> Result<Vec<Reply>, DeliveryError> {
        let mut connection = self.connect().await?;
        let replies: Vec<Reply> = pipe
            .query_async(&mut connection)
            .await
            .map_err(|e| self.transport_error(&e))?;
        if replies.len() != pipe.len() {
            return Err(DeliveryError::external(
                None,
                format!(
                    "Redis at {} answered {} replies to {} commands",
                    self.server,
                    replies.len(),
                    pipe.len()
                ),
            ));
        }
        Ok(replies)
    }

    fn inspect_record(
        &self,
        pipe: &::redis::Pipeline,
        answer: &Result<Vec<Reply>, DeliveryError>,
        started: Instant,
    ) {
        let mut request = String::new();
        for command in pipe.cmd_iter() {
            if request.len() >= EXCERPT {
                break;
            }
            request.push_str(&args(command).collect::<Vec<_>>().join(" "));
            request.push('\n');
        }
        let (status, response) = match answer {
            Ok(replies) => {
                let errors: Vec<String> = replies
                    .iter()
                    .zip(pipe.cmd_iter())
                    .filter_map(|(r, c)| match r {
                        Reply::ServerError(e) => Some(format!(
                            "{}: {} {}",
                            summary(c),
                            e.code(),
                            e.details().unwrap_or_default()
                        )),
                        _ => None,
                    })
                    .collect();
                let mut text = format!("{} replies, {} errors", replies.len(), errors.len());
                for e in errors {
                    text.push('\n');
                    text.push_str(&e);
                }
                (200, self.scrub(&text))
            }
            Err(e) => (0, e.message.clone()),
        };
        let exchange = Exchange {
            at: chrono::Utc::now(),
            method: "PIPELINE".to_string(),
            url: self.server.clone(),
            status,
            millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            request: excerpt(request),
            response: excerpt(response),
        };
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == INSPECTED {
            log.pop_front();
        }
        log.push_back(exchange);
    }
}

fn excerpt(mut text: String) -> String {
    if text.len() > EXCERPT {
        let mut end = EXCERPT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// `rediss://` needs a rustls crypto provider; the process may not have chosen one.
fn install_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one first: either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[async_trait]
impl Destination for Redis {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    /// Connects (authenticating with the URL's user and password), `PING`s, and checks with
    /// `COMMAND INFO` that the server knows the mode's commands (streams need Redis 5). Writes
    /// nothing.
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        let mut connection = self.connect().await?;
        ::redis::cmd("PING")
            .query_async::<Reply>(&mut connection)
            .await
            .map_err(|e| self.transport_error(&e))?;
        let names: &[&str] = match self.config.mode {
            Mode::Hash => &["HSET", "HDEL", "DEL", "EXPIRE"],
            Mode::String => &["SET", "DEL"],
            Mode::List => &["RPUSH", "LTRIM", "EXPIRE"],
            Mode::Stream => &["XADD", "EXPIRE"],
        };
        // A provider may disable or rename COMMAND: then the commands cannot be checked here.
        let Ok(info) = ::redis::cmd("COMMAND")
            .arg("INFO")
            .arg(names)
            .query_async::<Vec<Reply>>(&mut connection)
            .await
        else {
            return Ok(());
        };
        if let Some((name, _)) = names
            .iter()
            .zip(&info)
            .find(|(_, reply)| matches!(reply, Reply::Nil))
        {
            return Err(DeliveryError::refused(
                None,
                format!(
                    "Redis at {} does not know `{name}`, which `mode = \"{}\"` needs (streams \
                     came with Redis 5.0)",
                    self.server,
                    self.config.mode.as_str()
                ),
            ));
        }
        Ok(())
    }

    async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        // Each event's position in the batch and how many commands it sent.
        let mut planned: Vec<(usize, usize)> = Vec::with_capacity(batch.len());
        let mut pipe = ::redis::Pipeline::with_capacity(2 * batch.len());
        pipe.ignore_errors();
        for (i, event) in batch.iter().enumerate() {
            match plan(&self.config, event) {
                Ok(commands) if commands.is_empty() => outcomes[i] = Some(Outcome::Delivered),
                Ok(commands) => {
                    planned.push((i, commands.len()));
                    for command in commands {
                        pipe.add_command(command.0);
                    }
                }
                Err(message) => {
                    outcomes[i] = Some(Outcome::Rejected(DeliveryError::refused(None, message)));
                }
            }
        }
        if !planned.is_empty() {
            let started = Instant::now();
            let answer = self.run(&pipe).await;
            self.inspect_record(&pipe, &answer, started);
            match answer {
                Ok(replies) => {
                    let mut replies = replies.iter().zip(pipe.cmd_iter());
                    for &(i, n) in &planned {
                        let mut outcome = Outcome::Delivered;
                        for (reply, command) in replies.by_ref().take(n) {
                            if let (Outcome::Delivered, Reply::ServerError(e)) = (&outcome, reply) {
                                outcome = self.reply_outcome(e, command);
                            }
                        }
                        outcomes[i] = Some(outcome);
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        destination = %self.name,
                        server = %self.server,
                        events = planned.len(),
                        error = %error.message,
                        "redis pipeline failed"
                    );
                    let outcome = if error.fault == tideway_core::Fault::User {
                        Outcome::Rejected(error)
                    } else {
                        Outcome::Retry { after: None, error }
                    };
                    for &(i, _) in &planned {
                        outcomes[i] = Some(outcome.clone());
                    }
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("deliver gives every event an outcome: planned, refused or sent"))
            .collect()
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: self.config.batch_size.max(1),
            max_bytes: MAX_BATCH_BYTES,
            requests_per_second: None,
            rate_window: None,
            concurrency: self.config.concurrency.max(1),
        }
    }

    fn inspect(&self) -> Vec<Exchange> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().cloned().collect()
    }
}

// ----- mapping -----

/// The commands `event` becomes under `config`; `Err` says why it cannot be written.
pub fn plan(config: &RedisConfig, event: &OutboundEvent) -> Result<Vec<Command>, String> {
    let key = config.key.render(&event.event)?;
    event.op.upsert_or_delete("redis")?;
    if event.op == Op::Delete && matches!(config.mode, Mode::Hash | Mode::String) {
        return Ok(vec![Command::new("DEL", &key)]);
    }
    let mut commands = match config.mode {
        Mode::Hash => hash(&key, event)?,
        Mode::String => return Ok(vec![string(config, &key, event)?]),
        Mode::List => {
            let mut commands = vec![Command::new("RPUSH", &key).arg(event_json(event))];
            if let Some(n) = config.max_len {
                commands.push(Command::new("LTRIM", &key).arg(format!("-{n}")).arg("-1"));
            }
            commands
        }
        Mode::Stream => {
            let mut xadd = Command::new("XADD", &key);
            if let Some(n) = config.max_len {
                xadd = xadd.arg("MAXLEN").arg("~").arg(n);
            }
            xadd = xadd.arg(&["*", "type", event.kind()]);
            if let Some(id) = event.id_field("messageId") {
                xadd = xadd.arg("messageId").arg(id);
            }
            vec![
                xadd.arg(&["op", event.op.name(), "event"])
                    .arg(event_json(event)),
            ]
        }
    };
    if let Some(ttl) = config.ttl {
        commands.push(Command::new("EXPIRE", &key).arg(ttl.as_secs().max(1)));
    }
    Ok(commands)
}

/// `HSET` of the event's non-null fields and `HDEL` of its null ones.
fn hash(key: &str, event: &OutboundEvent) -> Result<Vec<Command>, String> {
    let known = "known types: identify, group (traits), track, page, screen (properties)";
    let source = match event.kind() {
        "identify" | "group" => "traits",
        "track" | "page" | "screen" => "properties",
        "" => return Err(format!("the event has no `type`; {known}")),
        "alias" => {
            return Err(format!(
                "`alias` has no traits or properties to store in a hash; {known}"
            ));
        }
        other => return Err(format!("unknown message type `{other}`; {known}")),
    };
    let fields = match event.event.get(source) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(fields)) => fields,
        Some(_) => return Err(format!("`{source}` must be an object")),
    };
    let mut set = Command::new("HSET", key);
    let mut deleted = Vec::new();
    for (name, value) in fields {
        set = match value {
            Value::Null => {
                deleted.push(name.as_str());
                continue;
            }
            Value::String(text) => set.arg(name.as_str()).arg(text.as_str()),
            value => set.arg(name.as_str()).arg(value.to_string()),
        };
    }
    let mut commands = Vec::with_capacity(3);
    if deleted.len() < fields.len() {
        commands.push(set);
    }
    if !deleted.is_empty() {
        commands.push(Command::new("HDEL", key).arg(deleted));
    }
    Ok(commands)
}

/// `SET key value [EX ttl]`, or `DEL key` when the `value` field is `null`.
fn string(config: &RedisConfig, key: &str, event: &OutboundEvent) -> Result<Command, String> {
    let value = match &config.value {
        None => event.event.to_string(),
        Some(path) => match path.get(&event.event) {
            None => {
                return Err(format!(
                    "the event has no `{path}`, the value of the key `{key}`"
                ));
            }
            Some(Value::Null) => return Ok(Command::new("DEL", key)),
            Some(value) => text(value),
        },
    };
    let set = Command::new("SET", key).arg(value);
    Ok(match config.ttl {
        Some(ttl) => set.arg("EX").arg(ttl.as_secs().max(1)),
        None => set,
    })
}

/// A field's value as Redis stores it: strings as they are, numbers and booleans as text,
/// objects and arrays as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The event as list items and stream entries carry it: a delete has
/// `"tideway": {"op": "delete"}` (as the webhook sends it).
fn event_json(event: &OutboundEvent) -> String {
    if event.op == Op::Delete
        && let Some(map) = event.event.as_object()
    {
        let mut map = map.clone();
        map.insert("tideway".into(), serde_json::json!({ "op": "delete" }));
        return Value::Object(map).to_string();
    }
    event.event.to_string()
}
