//! The project file, `tideway.toml`.
//!
//! ```toml
//! [project]
//! name = "acme"
//!
//! [lake]
//! # A directory (relative to the project) or an object store URL: s3://, gs://, az://.
//! location = ".tideway/lake"
//! # Options for the object store; secrets only through the environment.
//! storage = { AWS_REGION = "eu-west-1", AWS_SECRET_ACCESS_KEY = "${AWS_SECRET_ACCESS_KEY}" }
//! ```
//!
//! [`ProjectConfig::parse`] checks the whole file in one pass and returns *every* problem, each
//! with its line and column and, for a misspelled key, the valid keys: a user fixes the file
//! once, not once per error. Unknown keys are errors. `${VAR}` in a value is replaced by the
//! environment variable `VAR`; a value under a key that names a secret (`*SECRET*`, `*TOKEN*`,
//! `*PASSWORD*`, `*KEY*` but not `*KEY_ID*`) must come from the environment, and is redacted
//! in `Debug` output like every other storage option.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;

/// The default lake location, relative to the project directory.
pub const DEFAULT_LAKE_LOCATION: &str = ".tideway/lake";

/// URL schemes a lake location may use; a location without a scheme is a local path.
pub const LAKE_SCHEMES: &[&str] = &["file", "s3", "s3a", "gs", "az", "abfs", "abfss"];

/// A parsed and checked `tideway.toml`.
#[derive(Debug, Clone, Default)]
pub struct ProjectConfig {
    /// The project's name (`[project] name`), if set.
    pub name: Option<String>,
    /// Where the lake lives and how to reach it.
    pub lake: LakeConfig,
    /// The event collector (`[collect]`).
    pub collect: CollectConfig,
    /// The names of the `[destinations.NAME]` tables. Each destination type checks its own
    /// table (`tideway_activate::config::destinations`), so only the names are kept here.
    pub destinations: Vec<String>,
}

/// How timestamps of collected events are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimestampMode {
    /// Segment's rule: `timestamp = receivedAt - (sentAt - originalTimestamp)`, correcting
    /// client clock skew.
    #[default]
    Segment,
    /// RudderStack's option: keep the client's timestamp as sent.
    AsSent,
}

/// The `[collect]` section: the Segment-compatible event API.
///
/// ```toml
/// [collect]
/// listen = "127.0.0.1:8080"
/// [collect.sources.web]
/// write_key = "wk_web_1f3a"            # browser keys are public; server keys via ${ENV}
/// [collect.sources.backend]
/// write_key = "${BACKEND_WRITE_KEY}"
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CollectConfig {
    /// Address `tideway serve` listens on.
    pub listen: String,
    /// Directory of the durable event log, relative to the project.
    pub log_dir: String,
    /// Bytes the event log may hold before the API answers 429.
    pub log_budget_bytes: u64,
    /// Largest accepted event, in bytes (Segment: 32 KB).
    pub max_event_bytes: usize,
    /// Largest accepted request body, in bytes, after decompression.
    pub max_request_bytes: usize,
    /// How `timestamp` is computed.
    pub timestamps: TimestampMode,
    /// Window in which a repeated `messageId` of one source is dropped.
    pub dedupe_window_secs: u64,
    /// At most this many distinct message ids are remembered (memory bound).
    pub dedupe_capacity: usize,
    /// The loader commits when this many events are waiting...
    pub load_batch_events: usize,
    /// ...or when the oldest waiting event is this old.
    pub load_batch_millis: u64,
    /// Named sources; each has its write key. Lake schema = source name.
    pub sources: BTreeMap<String, CollectSource>,
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            listen: "127.0.0.1:8080".into(),
            log_dir: ".tideway/log".into(),
            log_budget_bytes: 1 << 30,
            max_event_bytes: 32 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            timestamps: TimestampMode::Segment,
            dedupe_window_secs: 24 * 3600,
            dedupe_capacity: 20_000_000,
            load_batch_events: 50_000,
            load_batch_millis: 3_000,
            sources: BTreeMap::new(),
        }
    }
}

/// One `[collect.sources.NAME]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectSource {
    /// The write key SDKs send (HTTP Basic user or `writeKey` in the body).
    pub write_key: Secret,
}

/// The `[lake]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct LakeConfig {
    /// A local path (relative to the project) or an object store URL.
    pub location: String,
    /// Object store options (`AWS_REGION`, `GOOGLE_SERVICE_ACCOUNT`, ...), already resolved
    /// from the environment.
    pub storage: BTreeMap<String, Secret>,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            location: DEFAULT_LAKE_LOCATION.to_string(),
            storage: BTreeMap::new(),
        }
    }
}

/// A configuration value that may be a secret: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// One problem in a configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line and column; 0 when the position is unknown.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, naming the bad value and the valid choices.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in the configuration",
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.0 {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl crate::Faulty for ConfigErrors {
    fn fault(&self) -> crate::Fault {
        crate::Fault::User
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    #[serde(default)]
    project: RawProjectSection,
    #[serde(default)]
    lake: RawLake,
    #[serde(default)]
    collect: RawCollect,
    #[serde(default)]
    destinations: BTreeMap<String, toml::Table>,
    /// Checked by `tideway_unify::config::UnifyConfig::parse`.
    #[serde(default)]
    #[allow(dead_code)]
    unify: Option<toml::Table>,
    /// Checked by `tideway_unify::churn::PredictConfig::parse_all`.
    #[serde(default)]
    #[allow(dead_code)]
    predict: Option<toml::Table>,
    /// Checked by `tideway_activate::forward::connections`.
    #[serde(default)]
    #[allow(dead_code)]
    connections: Option<toml::Table>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCollect {
    listen: Option<Spanned<String>>,
    log_dir: Option<String>,
    log_budget_mb: Option<u64>,
    max_event_kb: Option<usize>,
    max_request_mb: Option<usize>,
    timestamps: Option<TimestampMode>,
    dedupe_window_hours: Option<u64>,
    dedupe_capacity: Option<usize>,
    load_batch_events: Option<usize>,
    load_batch_seconds: Option<f64>,
    #[serde(default)]
    sources: BTreeMap<String, RawCollectSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollectSource {
    write_key: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProjectSection {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLake {
    location: Option<Spanned<String>>,
    #[serde(default)]
    storage: BTreeMap<String, Spanned<String>>,
}

impl ProjectConfig {
    /// Parses and checks `text`, the contents of `file`; `env` looks up environment variables.
    pub fn parse(
        text: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProjectConfig, ConfigErrors> {
        let source = Source { text, file };
        let (raw, mut diags) = match parse_collecting::<RawProject>(text) {
            Ok(raw) => (raw, Vec::new()),
            Err(errors) => {
                return Err(ConfigErrors(
                    errors
                        .into_iter()
                        .map(|(span, msg)| source.diag(span, msg))
                        .collect(),
                ));
            }
        };
        let mut lake = LakeConfig::default();
        if let Some(location) = raw.lake.location {
            if let Some(msg) = check_lake_location(location.get_ref()) {
                diags.push(source.diag(Some(location.span()), msg));
            }
            lake.location = location.into_inner();
        }
        for (key, value) in raw.lake.storage {
            match interpolate(value.get_ref(), env) {
                Ok(resolved) => {
                    if is_secret_key(&key) && resolved == *value.get_ref() {
                        diags.push(source.diag(
                            Some(value.span()),
                            format!(
                                "`{key}` is a secret: read it from the environment, e.g. \
                                 `{key} = \"${{{key}}}\"`"
                            ),
                        ));
                    }
                    lake.storage.insert(key, Secret(resolved));
                }
                Err(msg) => diags.push(source.diag(Some(value.span()), msg)),
            }
        }
        let collect = collect_config(raw.collect, &source, env, &mut diags);
        if diags.is_empty() {
            Ok(ProjectConfig {
                name: raw.project.name,
                lake,
                collect,
                destinations: raw.destinations.into_keys().collect(),
            })
        } else {
            Err(ConfigErrors(diags))
        }
    }
}

fn collect_config(
    raw: RawCollect,
    source: &Source<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Vec<Diagnostic>,
) -> CollectConfig {
    let d = CollectConfig::default();
    let mut c = CollectConfig {
        listen: d.listen.clone(),
        log_dir: raw.log_dir.unwrap_or(d.log_dir),
        log_budget_bytes: raw.log_budget_mb.map_or(d.log_budget_bytes, |mb| mb << 20),
        max_event_bytes: raw.max_event_kb.map_or(d.max_event_bytes, |kb| kb << 10),
        max_request_bytes: raw
            .max_request_mb
            .map_or(d.max_request_bytes, |mb| mb << 20),
        timestamps: raw.timestamps.unwrap_or_default(),
        dedupe_window_secs: raw
            .dedupe_window_hours
            .map_or(d.dedupe_window_secs, |h| h * 3600),
        dedupe_capacity: raw.dedupe_capacity.unwrap_or(d.dedupe_capacity),
        load_batch_events: raw.load_batch_events.unwrap_or(d.load_batch_events).max(1),
        load_batch_millis: raw
            .load_batch_seconds
            .map_or(d.load_batch_millis, |s| (s.max(0.0) * 1000.0) as u64),
        sources: BTreeMap::new(),
    };
    if let Some(listen) = raw.listen {
        if listen.get_ref().parse::<std::net::SocketAddr>().is_err() {
            diags.push(source.diag(
                Some(listen.span()),
                format!(
                    "`{}` is not a socket address; write `IP:PORT`, e.g. `127.0.0.1:8080` or `0.0.0.0:8080`",
                    listen.get_ref()
                ),
            ));
        }
        c.listen = listen.into_inner();
    }
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for (name, s) in raw.sources {
        let normalized = crate::naming::NamingRules::default().normalize(&name);
        if normalized != name {
            diags.push(source.diag(
                Some(s.write_key.span()),
                format!(
                    "source name `{name}` is also its lake schema and must be a plain lower-case name; use `{normalized}`"
                ),
            ));
        }
        match interpolate(s.write_key.get_ref(), env) {
            Ok(key) if key.is_empty() => diags.push(source.diag(
                Some(s.write_key.span()),
                format!("the write key of source `{name}` is empty"),
            )),
            Ok(key) => {
                if let Some(other) = keys.insert(key.clone(), name.clone()) {
                    diags.push(source.diag(
                        Some(s.write_key.span()),
                        format!("sources `{other}` and `{name}` have the same write key; each source needs its own"),
                    ));
                }
                c.sources.insert(
                    name,
                    CollectSource {
                        write_key: Secret(key),
                    },
                );
            }
            Err(msg) => diags.push(source.diag(Some(s.write_key.span()), msg)),
        }
    }
    c
}

fn check_lake_location(location: &str) -> Option<String> {
    if location.trim().is_empty() {
        return Some("the lake location is empty; use a directory such as `.tideway/lake` or a URL such as `s3://bucket/lake`".into());
    }
    let (scheme, _) = location.split_once("://")?;
    if LAKE_SCHEMES.contains(&scheme) {
        None
    } else {
        Some(format!(
            "unknown lake location scheme `{scheme}://` in `{location}`; use a local directory or one of: {}",
            LAKE_SCHEMES
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Whether a storage option names a secret that must come from the environment.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    [
        "SECRET",
        "TOKEN",
        "PASSWORD",
        "ACCESS_KEY",
        "ACCOUNT_KEY",
        "SAS_KEY",
        "SERVICE_ACCOUNT_KEY",
    ]
    .iter()
    .any(|s| k.contains(s))
        && !k.ends_with("_ID")
}

/// Replaces every `${VAR}` in `value` with the variable's value.
pub fn interpolate(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed `${{` in `{value}`; write `${{VAR}}`"));
        };
        let var = &after[..end];
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{var}}}` is not a valid environment variable name"
            ));
        }
        match env(var) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("environment variable `{var}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Collects the problems of one configuration file, each with its line and column.
#[derive(Debug)]
pub struct Diags<'a> {
    /// The file's contents.
    pub text: &'a str,
    /// The file, as the user named it.
    pub file: &'a str,
    /// The problems so far, in the order found.
    pub list: Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    /// No problems yet in `file`, whose contents are `text`.
    pub fn new(text: &'a str, file: &'a str) -> Self {
        Diags {
            text,
            file,
            list: Vec::new(),
        }
    }

    /// A problem at the byte range `span` of the text (or the whole file, for `None`).
    pub fn at(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let (line, column) = span.map_or((0, 0), |s| line_col(self.text, s.start));
        self.list.push(Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        });
    }

    /// `${VAR}` replaced; a secret written in clear is an error.
    pub fn secret(
        &mut self,
        key: &str,
        value: &Spanned<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Secret {
        if !value.get_ref().contains("${") {
            self.at(
                Some(value.span()),
                format!(
                    "`{key}` is a secret: read it from the environment, e.g. `{key} = \"${{{}}}\"`",
                    key.to_ascii_uppercase()
                ),
            );
        }
        self.plain(value, env)
            .map(Secret::new)
            .unwrap_or_else(|| Secret::new(""))
    }

    /// `${VAR}` replaced; `None` (and a problem) if a variable is not set.
    pub fn plain(
        &mut self,
        value: &Spanned<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<String> {
        match interpolate(value.get_ref(), env) {
            Ok(v) => Some(v),
            Err(msg) => {
                self.at(Some(value.span()), msg);
                None
            }
        }
    }

    /// The errors of [`parse_collecting`], as problems.
    pub fn extend(&mut self, errors: Vec<SpannedError>) {
        errors.into_iter().for_each(|(span, m)| self.at(span, m));
    }

    /// `value` if there was no problem, else every problem.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(v) if self.list.is_empty() => Ok(v),
            _ => Err(ConfigErrors(self.list)),
        }
    }
}

struct Source<'a> {
    text: &'a str,
    file: &'a str,
}

impl Source<'_> {
    fn diag(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Diagnostic {
        let (line, column) = match span {
            Some(span) => line_col(self.text, span.start),
            None => (0, 0),
        };
        Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// An error message and the byte range of the text it is about, if known.
pub type SpannedError = (Option<Range<usize>>, String);

/// Deserializes `text` as `T`, collecting every error rather than the first.
///
/// serde stops at the first error. To find the next one, the key-value (or table) that holds
/// the error is blanked out with spaces, which keeps every byte offset, and the text is
/// deserialized again; this repeats until it succeeds or an error cannot be located. Returns
/// `(span, message)` pairs in file order.
pub fn parse_collecting<T: DeserializeOwned>(text: &str) -> Result<T, Vec<SpannedError>> {
    let mut buf = text.to_string();
    let mut errors: Vec<SpannedError> = Vec::new();
    for _ in 0..100 {
        match toml::from_str::<T>(&buf) {
            Ok(value) if errors.is_empty() => return Ok(value),
            Ok(_) => break,
            Err(e) => {
                let span = e.span();
                errors.push((span.clone(), e.message().trim().to_string()));
                let Some(span) = span else { break };
                let Ok(doc) = toml_edit::Document::parse(buf.clone()) else {
                    break;
                };
                let Some(extent) = innermost_extent(doc.as_table(), span.start) else {
                    break;
                };
                blank(&mut buf, extent);
            }
        }
    }
    errors.sort_by_key(|(span, _)| span.as_ref().map_or(usize::MAX, |s| s.start));
    Err(errors)
}

/// `text` with every table and key-value blanked out (offsets and lines kept) but the table at
/// `path` and the tables that lead to it, so that one part of a file can be deserialized on
/// its own and its errors still point at the right line: `isolate(text, &["destinations",
/// "crm"])` keeps only `[destinations.crm]`.
pub fn isolate(text: &str, path: &[&str]) -> String {
    let Ok(doc) = toml_edit::Document::parse(text.to_string()) else {
        return text.to_string();
    };
    let mut spans = Vec::new();
    let mut table = doc.as_table();
    for want in path {
        for (key, item) in table.iter() {
            if key != *want {
                let k = table.key(key).expect("a key listed by iter exists");
                parts_of(k, item, &mut spans);
            }
        }
        match table.get(want).and_then(toml_edit::Item::as_table) {
            Some(t) => table = t,
            None => break,
        }
    }
    let mut buf = text.to_string();
    for span in spans {
        blank(&mut buf, span);
    }
    buf
}

/// The ranges of the text that `item` (under `key`) occupies: each key-value and each table
/// header on its own, since the parts of one table need not be next to each other
/// (`[a.x]`, then `[b.y]`, then `[a.z]`): blanking `a` must leave `[b.y]` whole.
fn parts_of(key: &toml_edit::Key, item: &toml_edit::Item, out: &mut Vec<Range<usize>>) {
    let table_parts = |t: &toml_edit::Table, out: &mut Vec<Range<usize>>| {
        out.extend(t.span());
        for (k, child) in t.iter() {
            parts_of(t.key(k).expect("a key listed by iter exists"), child, out);
        }
    };
    match item {
        toml_edit::Item::Table(t) => table_parts(t, out),
        toml_edit::Item::ArrayOfTables(a) => a.iter().for_each(|t| table_parts(t, out)),
        other => out.extend(union(key.span(), other.span())),
    }
}

/// The extent of the smallest key-value or table in `table` that contains `offset`.
fn innermost_extent(table: &toml_edit::Table, offset: usize) -> Option<Range<usize>> {
    let mut best: Option<Range<usize>> = None;
    visit_table(table, &mut |extent| {
        if extent.contains(&offset) && best.as_ref().is_none_or(|b| extent.len() < b.len()) {
            best = Some(extent);
        }
    });
    best
}

fn visit_table(table: &toml_edit::Table, f: &mut dyn FnMut(Range<usize>)) {
    for (key, item) in table.iter() {
        let key = table.key(key).expect("a key listed by iter exists");
        if let Some(extent) = union(key.span(), extent_of(item)) {
            f(extent);
        }
        match item {
            toml_edit::Item::Table(t) => visit_table(t, f),
            toml_edit::Item::ArrayOfTables(a) => a.iter().for_each(|t| {
                if let Some(extent) = extent_of_table(t) {
                    f(extent);
                }
                visit_table(t, f)
            }),
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => {
                for (k, v) in t.iter() {
                    let k = t.key(k).expect("a key listed by iter exists");
                    if let Some(extent) = union(k.span(), v.span()) {
                        f(extent);
                    }
                }
            }
            _ => {}
        }
    }
}

fn extent_of(item: &toml_edit::Item) -> Option<Range<usize>> {
    match item {
        toml_edit::Item::Table(t) => extent_of_table(t),
        toml_edit::Item::ArrayOfTables(a) => a.iter().map(extent_of_table).fold(a.span(), union),
        other => other.span(),
    }
}

fn extent_of_table(t: &toml_edit::Table) -> Option<Range<usize>> {
    let mut extent = t.span();
    for (key, item) in t.iter() {
        let key = t.key(key).expect("a key listed by iter exists");
        extent = union(extent, union(key.span(), extent_of(item)));
    }
    extent
}

fn union(a: Option<Range<usize>>, b: Option<Range<usize>>) -> Option<Range<usize>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.start.min(b.start)..a.end.max(b.end)),
        (a, b) => a.or(b),
    }
}

/// Replaces `range` in `buf` with spaces, keeping newlines (so line numbers stay right).
fn blank(buf: &mut String, range: Range<usize>) {
    let blanked: String = buf[range.clone()]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    // Multi-byte characters become one space each: pad so later offsets do not move.
    let pad = range.len() - blanked.len();
    buf.replace_range(range, &(blanked + &" ".repeat(pad)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolate_keeps_a_table_written_between_the_parts_of_another() {
        let text = "[destinations.a]\ntype = \"x\"\n\n[connections.one]\nsource = \"s\"\n\n\
                    [destinations.b]\ntype = \"y\"\n\n[connections.two]\nsource = \"t\"\n\n\
                    [[unify.sources]]\ntable = \"u\"\n";
        let only = isolate(text, &["destinations", "b"]);
        assert_eq!(only.len(), text.len());
        assert_eq!(only.lines().count(), text.lines().count());
        let kept: Vec<&str> = only
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(kept, ["[destinations.b]", "type = \"y\""]);
        let doc: toml::Table = toml::from_str(&only).unwrap();
        assert_eq!(doc["destinations"]["b"]["type"].as_str(), Some("y"));
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = ProjectConfig::parse("", "tideway.toml", &no_env).unwrap();
        assert_eq!(c.lake.location, DEFAULT_LAKE_LOCATION);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "[project]\nnmae = \"x\"\n\n[lake]\nlocaton = \"y\"\nstorage = { AWS_SECRET_ACCESS_KEY = \"plain\", AWS_REGION = \"${NOPE}\" }\n\n[colect]\nport = 1\n";
        let err = ProjectConfig::parse(text, "tideway.toml", &no_env).unwrap_err();
        let lines: Vec<usize> = err.0.iter().map(|d| d.line).collect();
        let text = err.to_string();
        assert_eq!(lines, vec![2, 5, 8], "{text}");
        assert!(
            text.contains("unknown field `nmae`, expected `name`"),
            "{text}"
        );
        assert!(text.contains("unknown field `locaton`"), "{text}");
        assert!(text.contains("unknown field `colect`"), "{text}");
    }

    #[test]
    fn values_are_checked_after_the_shape() {
        let text = "[lake]\nlocation = \"hdfs://x/y\"\nstorage = { AWS_SECRET_ACCESS_KEY = \"plain\", AWS_REGION = \"${NOPE}\" }\n";
        let err = ProjectConfig::parse(text, "tideway.toml", &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tideway.toml:2:12: unknown lake location scheme `hdfs://`"),
            "{err}"
        );
        assert!(err.contains("`AWS_SECRET_ACCESS_KEY` is a secret"), "{err}");
        assert!(
            err.contains("environment variable `NOPE` is not set"),
            "{err}"
        );
    }

    #[test]
    fn secrets_from_the_environment_are_redacted() {
        let text = "[lake]\nlocation = \"s3://bucket/lake\"\nstorage = { AWS_SECRET_ACCESS_KEY = \"${S}\" }\n";
        let env = |v: &str| (v == "S").then(|| "hunter2".to_string());
        let c = ProjectConfig::parse(text, "tideway.toml", &env).unwrap();
        assert_eq!(c.lake.storage["AWS_SECRET_ACCESS_KEY"].expose(), "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn type_errors_name_the_line() {
        let err = ProjectConfig::parse("[lake]\nlocation = 3\n", "t.toml", &no_env).unwrap_err();
        assert_eq!(err.0[0].line, 2, "{err}");
        assert!(err.0[0].message.contains("invalid type"), "{err}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        let err = ProjectConfig::parse("[lake\n", "t.toml", &no_env).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].line, 1, "{err}");
    }
}
