//! Sync files (`syncs/*.toml`) and the `[destinations.NAME]` tables of `tideway.toml`.
//!
//! A sync sends the new and changed rows of a lake table or model to a destination as events:
//!
//! ```toml
//! # syncs/lead_score_to_customerio.toml
//! source = "marts.lead_score"          # a lake table or a model's table
//! key = "user_id"                      # or ["account_id", "user_id"]: unique per row
//! destination = "customerio"           # a [destinations.NAME] in tideway.toml
//! type = "identify"                    # identify | track | group
//! # mode = "upsert"                    # identify, group: upsert | update | insert | mirror
//! # event = "Lead Scored"              # track: the event name
//! # user_id = "user_id"                # the column giving userId (default: the key)
//! # group_id = "account_id"            # group: the column giving groupId (default: the key)
//! # anonymous_id = "anonymous_id"
//! transformations = []                 # transformations/NAME.js, run in order
//! backfill = "all"                     # first run: all | skip_existing | since:2025-01-01T00:00:00Z
//! # time_column = "updated_at"         # the row time `since:` compares with
//! on_delete = "ignore"                 # ignore | delete | clear_fields | event:<name>
//! dead_letter_after = 5                # refusals before a row is dead-lettered, or a time: "3d", "12h"
//!
//! [mapping]
//! include = ["FIRSTNAME", "LASTNAME", "SCORE", "CITY"]   # default: every column
//! exclude = []
//! rename = { FIRSTNAME = "first_name", LASTNAME = "last_name", CITY = "address.city" }
//! constants = { lead_source = "tideway" }
//!
//! [schedule]                           # optional: runs by itself in `tideway serve`
//! interval = "24h"                     # or cron = "0 6 * * *" (+ timezone), after = "marts.lead_score", continuous = true
//! ```
//!
//! `mode` says how an identify or group sync writes the destination's records: `upsert` (the
//! default) creates or updates; `update` only updates records that exist (a row whose record is
//! missing is refused, nothing is created); `insert` only creates: new rows go out, changed
//! rows are recorded and skipped, and a row the destination already holds is refused; `mirror`
//! upserts and deletes the records of removed rows (`on_delete = "delete"`). The destination
//! must support the mode (`tideway compile` says which it does).
//!
//! Mapped columns go into `traits` (identify, group) or `properties` (track). A renamed
//! target is a dotted path inside them (`address.city`), or an absolute path into the event
//! when it starts with `traits.`, `properties.` or `context.`. Every problem of every file is
//! reported at once with its line and the valid choices; columns are checked against the
//! source's schema by [`SyncConfig::check_columns`].

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tideway_core::config::{ConfigErrors, Diagnostic, Diags, isolate, parse_collecting};
use toml::Spanned;

use crate::destination::{DESTINATION_TYPES, DestinationConfig};

/// The event a row becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventType {
    Identify,
    Track { event: String },
    Group,
}

impl EventType {
    /// The Segment `type`.
    pub fn name(&self) -> &'static str {
        match self {
            EventType::Identify => "identify",
            EventType::Track { .. } => "track",
            EventType::Group => "group",
        }
    }

    /// Where mapped columns go: `traits` or `properties`.
    pub fn payload_field(&self) -> &'static str {
        match self {
            EventType::Track { .. } => "properties",
            _ => "traits",
        }
    }
}

/// What the first run sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backfill {
    /// Every row.
    All,
    /// Nothing: the rows there now are recorded as sent; later changes go out.
    SkipExisting,
    /// Rows whose `time_column` is at or after this instant.
    Since(chrono::DateTime<chrono::Utc>),
}

/// How an identify or group sync writes the destination's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Create or update.
    #[default]
    Upsert,
    /// Update records that exist; never create one.
    Update,
    /// Create records for new rows; changed rows are skipped.
    Insert,
    /// Upsert, and delete the records of removed rows.
    Mirror,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Upsert, Mode::Update, Mode::Insert, Mode::Mirror];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Upsert => "upsert",
            Mode::Update => "update",
            Mode::Insert => "insert",
            Mode::Mirror => "mirror",
        }
    }

    fn parse(text: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == text)
    }
}

/// What happens when a row that was sent disappears from the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnDelete {
    /// Nothing is sent; the row is forgotten (if it comes back it is new).
    Ignore,
    /// The destination deletes the record.
    Delete,
    /// The same event type with every mapped field set to null.
    ClearFields,
    /// A `track` event of this name, with the last values sent as properties.
    Event(String),
}

/// One column's journey into the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The source column.
    pub column: String,
    /// The path in the event (`traits.first_name`, `traits.address.city`).
    pub path: Vec<String>,
}

/// A checked sync file.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    /// The file stem.
    pub name: String,
    pub file: String,
    /// `schema.table`.
    pub source: String,
    pub key: Vec<String>,
    pub destination: String,
    pub event: EventType,
    /// How records are written (identify and group syncs).
    pub mode: Mode,
    /// A `track` sync of an event table: each row's event name comes from this column (and
    /// the column is not sent as a property).
    pub event_column: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub group_id: Option<String>,
    pub transformations: Vec<String>,
    pub backfill: Backfill,
    pub time_column: Option<String>,
    pub on_delete: OnDelete,
    pub dead_letter_after: DeadLetterAfter,
    /// `include`; empty = every column.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub rename: BTreeMap<String, String>,
    pub constants: BTreeMap<String, serde_json::Value>,
    /// When it runs by itself in `tideway serve`.
    pub schedule: crate::schedule::Schedule,
    /// Where each name lives in the file, for [`SyncConfig::check_columns`].
    spans: BTreeMap<String, Range<usize>>,
    source_span: Range<usize>,
    on_delete_span: Option<Range<usize>>,
    mode_span: Option<Range<usize>>,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    source: Spanned<String>,
    key: Spanned<OneOrMany>,
    destination: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    mode: Option<Spanned<String>>,
    event: Option<Spanned<String>>,
    event_column: Option<Spanned<String>>,
    user_id: Option<Spanned<String>>,
    anonymous_id: Option<Spanned<String>>,
    group_id: Option<Spanned<String>>,
    #[serde(default)]
    transformations: Vec<Spanned<String>>,
    backfill: Option<Spanned<String>>,
    time_column: Option<Spanned<String>>,
    on_delete: Option<Spanned<String>>,
    dead_letter_after: Option<Spanned<RunsOrTime>>,
    #[serde(default)]
    mapping: RawMapping,
    schedule: Option<Spanned<RawSchedule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    interval: Option<String>,
    cron: Option<String>,
    timezone: Option<String>,
    after: Option<String>,
    #[serde(default)]
    continuous: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    rename: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    constants: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RunsOrTime {
    Runs(i64),
    Time(String),
}

/// When a row the destination keeps refusing is given up on and dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterAfter {
    /// At its `n`th refusal in a row (`dead_letter_after = 5`).
    Runs(u32),
    /// At its first refusal once this long has passed since the first refusal of the streak
    /// (`dead_letter_after = "3d"`): a sync on a short interval retries for days, not minutes.
    Age(std::time::Duration),
}

impl DeadLetterAfter {
    /// Whether a row refused for the `tries`th time in a row, first refused at
    /// `first_refused` (micros), is dead at `now` (micros).
    pub fn is_dead(self, tries: i64, first_refused: i64, now: i64) -> bool {
        match self {
            DeadLetterAfter::Runs(n) => tries >= n as i64,
            DeadLetterAfter::Age(age) => {
                now.saturating_sub(first_refused) >= age.as_micros().min(i64::MAX as u128) as i64
            }
        }
    }
}

impl std::fmt::Display for DeadLetterAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadLetterAfter::Runs(n) => write!(f, "{n} refusals"),
            DeadLetterAfter::Age(age) => {
                let secs = age.as_secs();
                match [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")]
                    .into_iter()
                    .find(|(unit, _)| secs % unit == 0)
                {
                    Some((unit, suffix)) => write!(f, "{}{suffix}", secs / unit),
                    None => write!(f, "{secs}s"),
                }
            }
        }
    }
}

/// The event types a sync can send.
pub const EVENT_TYPES: &[&str] = &["identify", "track", "group"];
/// The default of `dead_letter_after`.
pub const DEAD_LETTER_AFTER: DeadLetterAfter = DeadLetterAfter::Runs(5);

impl SyncConfig {
    /// Parses and checks the sync file `file`; `destinations` are the names defined in
    /// `tideway.toml`, `transformations` the files in `transformations/` (stems).
    pub fn parse(
        text: &str,
        file: &str,
        destinations: &[String],
        transformations: &[String],
    ) -> Result<SyncConfig, ConfigErrors> {
        let name = std::path::Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut diags = Diags::new(text, file);
        let raw = match parse_collecting::<RawSync>(text) {
            Ok(raw) => raw,
            Err(errors) => {
                diags.extend(errors);
                return diags.finish(None);
            }
        };
        let mut spans: BTreeMap<String, Range<usize>> = BTreeMap::new();
        fn note(spans: &mut BTreeMap<String, Range<usize>>, name: &Spanned<String>) {
            spans
                .entry(name.get_ref().clone())
                .or_insert_with(|| name.span());
        }
        let source = raw.source.get_ref().trim().to_string();
        let source_span = raw.source.span();
        if source.split('.').count() != 2 || source.split('.').any(str::is_empty) {
            diags.at(
                Some(raw.source.span()),
                format!("`source = \"{source}\"` is not a table name; write `schema.table`, e.g. `marts.lead_score`"),
            );
        }
        let key = match raw.key.get_ref() {
            OneOrMany::One(k) => vec![k.clone()],
            OneOrMany::Many(ks) => ks.clone(),
        };
        if key.is_empty() || key.iter().any(String::is_empty) {
            diags.at(
                Some(raw.key.span()),
                "`key` names the column (or columns) that identify a row, e.g. `key = \"user_id\"`",
            );
        }
        for k in &key {
            spans.entry(k.clone()).or_insert_with(|| raw.key.span());
        }
        let destination = raw.destination.get_ref().clone();
        if !destinations.contains(&destination) {
            let known = if destinations.is_empty() {
                "none is defined: add a [destinations.NAME] table to tideway.toml".to_string()
            } else {
                format!("defined in tideway.toml: {}", destinations.join(", "))
            };
            let hint = tideway_lake::closest(&destination, destinations)
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            diags.at(
                Some(raw.destination.span()),
                format!("unknown destination `{destination}`; {hint}{known}"),
            );
        }
        let event = match raw.kind.get_ref().as_str() {
            "identify" => Some(EventType::Identify),
            "group" => Some(EventType::Group),
            "track" => match (&raw.event, &raw.event_column) {
                (Some(e), None) if !e.get_ref().trim().is_empty() => Some(EventType::Track {
                    event: e.get_ref().clone(),
                }),
                (None, Some(_)) => Some(EventType::Track {
                    event: String::new(),
                }),
                (Some(e), Some(_)) => {
                    diags.at(
                        Some(e.span()),
                        "a `track` sync takes its event name from `event` (one name for every row) or `event_column` (a column holding each row's name), not both",
                    );
                    None
                }
                _ => {
                    diags.at(
                        Some(raw.kind.span()),
                        "a `track` sync needs the event name: add `event = \"Lead Scored\"`, or `event_column = \"event\"` to take each row's name from a column",
                    );
                    None
                }
            },
            other => {
                diags.at(
                    Some(raw.kind.span()),
                    format!(
                        "unknown event type `{other}`; a sync sends one of: {}",
                        EVENT_TYPES.join(", ")
                    ),
                );
                None
            }
        };
        if let (Some(e), Some(EventType::Identify | EventType::Group)) = (&raw.event_column, &event)
        {
            diags.at(
                Some(e.span()),
                "`event_column` names the column holding a `track` sync's event names; this sync sends another type",
            );
        }
        if let (Some(e), Some(EventType::Identify | EventType::Group)) = (&raw.event, &event) {
            diags.at(
                Some(e.span()),
                "`event` names the event of a `track` sync; this sync sends another type",
            );
        }
        let mut column = |c: &Option<Spanned<String>>| {
            c.as_ref().map(|c| {
                note(&mut spans, c);
                c.get_ref().clone()
            })
        };
        let event_column = column(&raw.event_column);
        let user_id = column(&raw.user_id);
        let anonymous_id = column(&raw.anonymous_id);
        let group_id = column(&raw.group_id);
        let time_column = column(&raw.time_column);
        let mut transformation_names = Vec::new();
        for t in &raw.transformations {
            let stem = t.get_ref().trim_end_matches(".js").to_string();
            if !transformations.contains(&stem) {
                let hint = tideway_lake::closest(&stem, transformations)
                    .map(|c| format!("did you mean `{c}`? "))
                    .unwrap_or_default();
                diags.at(
                    Some(t.span()),
                    format!(
                        "unknown transformation `{stem}`: there is no transformations/{stem}.js; {hint}files there: {}",
                        list_or_none(transformations)
                    ),
                );
            }
            transformation_names.push(stem);
        }
        let backfill = match raw
            .backfill
            .as_ref()
            .map(|b| (b.get_ref().as_str(), b.span()))
        {
            None | Some(("all", _)) => Backfill::All,
            Some(("skip_existing", _)) => Backfill::SkipExisting,
            Some((other, span)) => match other.strip_prefix("since:") {
                Some(ts) => match tideway_core::time::parse_instant(ts.trim()) {
                    Some(t) => {
                        if time_column.is_none() {
                            diags.at(
                                Some(span),
                                "`backfill = \"since:...\"` compares each row's time: add `time_column = \"updated_at\"` (a timestamp column of the source)",
                            );
                        }
                        Backfill::Since(t)
                    }
                    None => {
                        diags.at(
                            Some(span),
                            format!("`{ts}` is not a time; write an ISO-8601 instant, e.g. `since:2025-01-01T00:00:00Z`"),
                        );
                        Backfill::All
                    }
                },
                None => {
                    diags.at(
                        Some(span),
                        format!("unknown backfill `{other}`; use `all`, `skip_existing` or `since:<ISO-8601 time>`"),
                    );
                    Backfill::All
                }
            },
        };
        let on_delete = match raw
            .on_delete
            .as_ref()
            .map(|b| (b.get_ref().as_str(), b.span()))
        {
            None | Some(("ignore", _)) => OnDelete::Ignore,
            Some(("delete", _)) => OnDelete::Delete,
            Some(("clear_fields", _)) => OnDelete::ClearFields,
            Some((other, span)) => match other.strip_prefix("event:") {
                Some(e) if !e.trim().is_empty() => OnDelete::Event(e.trim().to_string()),
                _ => {
                    diags.at(
                        Some(span),
                        format!("unknown on_delete `{other}`; use `ignore`, `delete`, `clear_fields` or `event:<event name>`"),
                    );
                    OnDelete::Ignore
                }
            },
        };
        let mode = match &raw.mode {
            None => Mode::Upsert,
            Some(m) => match (Mode::parse(m.get_ref()), &event) {
                (Some(_), Some(EventType::Track { .. })) => {
                    diags.at(
                        Some(m.span()),
                        "`mode` says how an identify or group sync writes records; a `track` sync sends events: remove `mode`",
                    );
                    Mode::Upsert
                }
                (Some(mode), _) => mode,
                (None, _) => {
                    diags.at(
                        Some(m.span()),
                        format!(
                            "unknown mode `{}`; use {}",
                            m.get_ref(),
                            Mode::ALL.map(|m| format!("`{}`", m.name())).join(", ")
                        ),
                    );
                    Mode::Upsert
                }
            },
        };
        let on_delete = match (mode, &raw.on_delete) {
            (Mode::Mirror, None) => OnDelete::Delete,
            (Mode::Mirror, Some(d)) if on_delete != OnDelete::Delete => {
                diags.at(
                    Some(d.span()),
                    format!(
                        "`mode = \"mirror\"` deletes the records of removed rows; `on_delete = \"{}\"` says otherwise: remove `on_delete`, or use `mode = \"upsert\"`",
                        d.get_ref()
                    ),
                );
                on_delete
            }
            _ => on_delete,
        };
        let dead_letter_after = match &raw.dead_letter_after {
            None => DEAD_LETTER_AFTER,
            Some(value) => {
                let parsed = match value.get_ref() {
                    RunsOrTime::Runs(n) => u32::try_from(*n)
                        .ok()
                        .filter(|n| *n >= 1)
                        .map(DeadLetterAfter::Runs),
                    RunsOrTime::Time(t) => {
                        tideway_core::time::parse_interval(t).map(DeadLetterAfter::Age)
                    }
                };
                parsed.unwrap_or_else(|| {
                    let given = match value.get_ref() {
                        RunsOrTime::Runs(n) => n.to_string(),
                        RunsOrTime::Time(t) => format!("\"{t}\""),
                    };
                    diags.at(
                        Some(value.span()),
                        format!("`dead_letter_after = {given}` is neither a number of refusals (1 or more, e.g. `5`) nor a time (e.g. `\"3d\"`, `\"12h\"`)"),
                    );
                    DEAD_LETTER_AFTER
                })
            }
        };
        let schedule = match &raw.schedule {
            None => crate::schedule::Schedule::Manual,
            Some(s) => {
                let r = s.get_ref();
                match crate::schedule::Schedule::parse(
                    r.interval.as_deref(),
                    r.cron.as_deref(),
                    r.timezone.as_deref(),
                    r.after.as_deref(),
                    r.continuous,
                ) {
                    Ok(schedule) => schedule,
                    Err(message) => {
                        diags.at(Some(s.span()), message);
                        crate::schedule::Schedule::Manual
                    }
                }
            }
        };
        let m = raw.mapping;
        m.include
            .iter()
            .chain(&m.exclude)
            .for_each(|c| note(&mut spans, c));
        let mut rename = BTreeMap::new();
        for (column, target) in &m.rename {
            spans.entry(column.clone()).or_insert_with(|| target.span());
            if target.get_ref().split('.').any(str::is_empty) {
                diags.at(
                    Some(target.span()),
                    format!(
                        "`{}` is not a field path; write `name` or `address.city`",
                        target.get_ref()
                    ),
                );
            }
            rename.insert(column.clone(), target.get_ref().clone());
        }
        let constants = m
            .constants
            .into_iter()
            .map(|(k, v)| (k, toml_to_json(v)))
            .collect();
        let config = SyncConfig {
            name,
            file: file.to_string(),
            source,
            key,
            destination,
            event: event.unwrap_or(EventType::Identify),
            mode,
            event_column,
            user_id,
            anonymous_id,
            group_id,
            transformations: transformation_names,
            backfill,
            time_column,
            on_delete,
            dead_letter_after,
            include: m.include.into_iter().map(Spanned::into_inner).collect(),
            exclude: m.exclude.into_iter().map(Spanned::into_inner).collect(),
            rename,
            constants,
            schedule,
            spans,
            source_span,
            on_delete_span: raw.on_delete.as_ref().map(Spanned::span),
            mode_span: raw.mode.as_ref().map(Spanned::span),
            text: text.to_string(),
        };
        diags.finish(Some(config))
    }

    /// The columns sent, in the source's order: `include` (or every column), minus `exclude`.
    /// The key and id columns are always read; they are sent only if mapped.
    pub fn mapped_columns(&self, source_columns: &[String]) -> Vec<String> {
        source_columns
            .iter()
            .filter(|c| self.include.is_empty() || self.include.contains(c))
            .filter(|c| !self.exclude.contains(c))
            .filter(|c| self.event_column.as_ref() != Some(c))
            .cloned()
            .collect()
    }

    /// Each mapped column and where it goes in the event.
    pub fn fields(&self, mapped: &[String]) -> Vec<Field> {
        mapped
            .iter()
            .map(|column| {
                let target = self.rename.get(column).unwrap_or(column);
                let mut path: Vec<String> = target.split('.').map(str::to_string).collect();
                let absolute = ["traits", "properties", "context"].contains(&path[0].as_str())
                    && path.len() > 1;
                if !absolute {
                    path.insert(0, self.event.payload_field().to_string());
                }
                Field {
                    column: column.clone(),
                    path,
                }
            })
            .collect()
    }

    /// Every column this sync names that `columns` (the source's) lacks, each at its line.
    pub fn check_columns(&self, columns: &[String]) -> Vec<Diagnostic> {
        let mut diags = Diags::new(&self.text, &self.file);
        for (name, span) in &self.spans {
            if !columns.contains(name) {
                let hint = tideway_lake::closest(name, columns)
                    .map(|c| format!("did you mean `{c}`? "))
                    .unwrap_or_default();
                diags.at(
                    Some(span.clone()),
                    format!(
                        "`{}` has no column `{name}`; {hint}its columns: {}",
                        self.source,
                        columns.join(", ")
                    ),
                );
            }
        }
        diags.list
    }

    /// A problem with the key's values, at the line of `key`.
    pub fn key_diagnostic(&self, message: String) -> Diagnostic {
        self.diagnostic(self.spans.get(&self.key[0]).cloned(), message)
    }

    /// A problem with `on_delete`, at its line (else `mode`'s, else the destination's).
    pub fn on_delete_diagnostic(&self, message: String) -> Diagnostic {
        self.diagnostic(
            self.on_delete_span.clone().or(self.mode_span.clone()),
            message,
        )
    }

    /// A problem with `mode`, at its line (else the destination's).
    pub fn mode_diagnostic(&self, message: String) -> Diagnostic {
        self.diagnostic(self.mode_span.clone(), message)
    }

    /// A problem with the source table, at the line of `source`.
    pub fn source_diagnostic(&self, message: String) -> Diagnostic {
        self.diagnostic(Some(self.source_span.clone()), message)
    }

    fn diagnostic(&self, span: Option<Range<usize>>, message: String) -> Diagnostic {
        let mut diags = Diags::new(&self.text, &self.file);
        diags.at(span, message);
        diags.list.remove(0)
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A TOML value as JSON (times become ISO-8601 text).
pub fn toml_to_json(v: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// Every sync file in `dir` (`syncs/*.toml`), sorted by name; all problems of all files at once.
pub fn load_syncs(
    dir: &std::path::Path,
    destinations: &[String],
    transformations: &[String],
) -> Result<Vec<SyncConfig>, crate::ActivateError> {
    let mut syncs = Vec::new();
    let mut problems = Vec::new();
    for path in files(dir, "toml")? {
        let text = read(&path)?;
        match SyncConfig::parse(
            &text,
            &path.display().to_string(),
            destinations,
            transformations,
        ) {
            Ok(sync) => syncs.push(sync),
            Err(errors) => problems.extend(errors.0),
        }
    }
    if problems.is_empty() {
        Ok(syncs)
    } else {
        Err(ConfigErrors(problems).into())
    }
}

/// The files in `dir` with extension `ext`, sorted; none if `dir` does not exist.
pub fn files(
    dir: &std::path::Path,
    ext: &str,
) -> Result<Vec<std::path::PathBuf>, crate::ActivateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(crate::ActivateError::Io {
                path: dir.display().to_string(),
                error,
            });
        }
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    Ok(files)
}

pub(crate) fn read(path: &std::path::Path) -> Result<String, crate::ActivateError> {
    std::fs::read_to_string(path).map_err(|error| crate::ActivateError::Io {
        path: path.display().to_string(),
        error,
    })
}

#[derive(Deserialize)]
struct Tables<T> {
    #[serde(default = "BTreeMap::new")]
    destinations: BTreeMap<String, T>,
}

#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
}

/// The `[destinations.NAME]` tables of `tideway.toml` (`text`, read from `file`), each checked
/// by its type's own config struct. Every problem of every destination at once.
pub fn destinations(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Destinations, ConfigErrors> {
    let mut diags = Diags::new(text, file);
    let kinds = match toml::from_str::<Tables<Kind>>(text) {
        Ok(t) => t.destinations,
        Err(e) => {
            diags.at(e.span(), e.message().trim().to_string());
            return diags.finish(None);
        }
    };
    let mut out = Destinations::default();
    for (name, kind) in kinds {
        let only = isolate(text, &["destinations", &name]);
        let Some(kind) = kind.kind else {
            diags.at(
                None,
                format!(
                    "[destinations.{name}] has no `type`; known types: {}",
                    DESTINATION_TYPES.join(", ")
                ),
            );
            continue;
        };
        // A variable this environment does not set makes the destination unavailable, not
        // the project wrong: what does not send to it still runs.
        let unset = std::cell::RefCell::new(Vec::<String>::new());
        let recording = |var: &str| {
            env(var).or_else(|| {
                let mut unset = unset.borrow_mut();
                if !unset.iter().any(|v| v == var) {
                    unset.push(var.to_string());
                }
                Some(String::new())
            })
        };
        let before = diags.list.len();
        let config = DestinationConfig::parse(&name, &kind, &only, &mut diags, &recording);
        let unset = unset.into_inner();
        if !unset.is_empty() {
            // Its other problems may come from the missing values: they are reported when the
            // variables are set.
            diags.list.truncate(before);
            out.unset.insert(name, unset);
        } else if let Some(config) = config {
            out.ready.insert(name, config);
        }
    }
    diags.finish(Some(out))
}

/// The destinations of a tideway.toml.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// Those that can send.
    pub ready: BTreeMap<String, DestinationConfig>,
    /// Those that read variables not set in this environment, with those variables.
    pub unset: BTreeMap<String, Vec<String>>,
}

/// Deserializes `[destinations.NAME]` of `only` (a text where everything else is blanked) as
/// `T`, reporting every error into `diags`.
pub(crate) fn parse_one<T: DeserializeOwned>(
    only: &str,
    name: &str,
    diags: &mut Diags<'_>,
) -> Option<T> {
    match parse_collecting::<Tables<T>>(only) {
        Ok(mut t) => t.destinations.remove(name),
        Err(errors) => {
            diags.extend(errors);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_letter_after(value: &str) -> Result<DeadLetterAfter, String> {
        let text = format!(
            "source = \"crm.p\"\nkey = \"id\"\ndestination = \"d\"\ntype = \"identify\"\ndead_letter_after = {value}\n"
        );
        SyncConfig::parse(&text, "syncs/p.toml", &["d".to_string()], &[])
            .map(|c| c.dead_letter_after)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn dead_letter_after_is_refusals_or_a_time() {
        assert_eq!(dead_letter_after("3"), Ok(DeadLetterAfter::Runs(3)));
        assert_eq!(
            dead_letter_after("\"3d\""),
            Ok(DeadLetterAfter::Age(std::time::Duration::from_secs(
                3 * 86_400
            )))
        );
        assert_eq!(
            dead_letter_after("\"12h\""),
            Ok(DeadLetterAfter::Age(std::time::Duration::from_secs(
                12 * 3600
            )))
        );
        assert_eq!(
            DeadLetterAfter::Age(std::time::Duration::from_secs(7200)).to_string(),
            "2h"
        );
        for (bad, shown) in [("0", "0"), ("-2", "-2"), ("\"soon\"", "\"soon\"")] {
            let e = dead_letter_after(bad).unwrap_err();
            assert!(
                e.contains(&format!("syncs/p.toml:5:21: `dead_letter_after = {shown}` is neither a number of refusals (1 or more, e.g. `5`) nor a time (e.g. `\"3d\"`, `\"12h\"`)")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_time_limit_counts_from_the_first_refusal() {
        let hour = 3_600_000_000;
        let after = DeadLetterAfter::Age(std::time::Duration::from_secs(2 * 3600));
        assert!(!after.is_dead(50, 0, 2 * hour - 1));
        assert!(after.is_dead(1, 0, 2 * hour));
        assert!(DeadLetterAfter::Runs(3).is_dead(3, 0, 0));
        assert!(!DeadLetterAfter::Runs(3).is_dead(2, 0, 10 * hour));
    }
}
