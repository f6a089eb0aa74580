//! Source files, `sources/*.toml`: one extract source each.
//!
//! A declarative REST source:
//!
//! ```toml
//! type = "rest"
//! base_url = "https://api.example.com/v2/"
//! requests_per_minute = 600        # a budget requests follow, not only a reaction to 429s
//! concurrency = 4                  # child requests in flight at once
//!
//! [auth]
//! kind = "bearer"                  # bearer | basic | api_key | oauth2 | none
//! token = "${EXAMPLE_TOKEN}"
//!
//! [resources.contacts]
//! path = "contacts"
//! params = { limit = "100" }
//! records = "data"                 # where the records are in a page: a dotted path, "" for the page itself
//! primary_key = "id"
//! write = "merge"                  # merge | append | replace
//! pagination = { kind = "json_link", next = "links.next" }
//! incremental = { cursor = "updated_at", param = "updated_since", initial = "2020-01-01T00:00:00Z", lookback = "1h" }
//!
//! [resources.notes]                # a child resource: one request per parent record
//! path = "contacts/{parent.id}/notes"
//! parent = "contacts"
//! primary_key = "id"
//! ```
//!
//! Kustomer needs only a key: `type = "kustomer"`, `api_key = "${KUSTOMER_API_KEY}"`, and
//! optionally `region = "eu"` or `base_url`, `resources = [...]`, `requests_per_minute`
//! (see [`crate::kustomer`]). Kafka topics: `type = "kafka"`, `brokers`, `topics` (see
//! [`crate::kafka_load`]).
//!
//! Secrets come only from the environment (`${VAR}`); a file that writes a token, a password
//! or a key in clear is refused. Every problem in a file is reported at once, each with its
//! line and column and, for an unknown value, the valid choices.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tideway_core::config::{ConfigErrors, Diags, Secret, line_col, parse_collecting};
use toml::Spanned;

/// A parsed, checked source file.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The source's name: the file name without `.toml`. Also the lake schema of its tables.
    pub name: String,
    /// The file, as the user names it (`sources/kustomer.toml`).
    pub file: String,
    /// What it reads.
    pub kind: SourceKind,
}

/// What a source reads.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// An API, by a REST description (Kustomer's is built in); run by [`crate::Extractor`].
    Rest(RestSource),
    /// Kafka topics; loaded by [`crate::kafka_load::KafkaLoader`].
    Kafka(crate::kafka_load::KafkaSource),
}

impl SourceConfig {
    /// The REST description, for an API source.
    pub fn rest(&self) -> Option<&RestSource> {
        match &self.kind {
            SourceKind::Rest(rest) => Some(rest),
            SourceKind::Kafka(_) => None,
        }
    }

    /// The REST description, for an API source, to change.
    pub fn rest_mut(&mut self) -> Option<&mut RestSource> {
        match &mut self.kind {
            SourceKind::Rest(rest) => Some(rest),
            SourceKind::Kafka(_) => None,
        }
    }
}

/// How to reach an API and which resources to pull from it.
#[derive(Debug, Clone)]
pub struct RestSource {
    /// Every resource path is relative to this URL.
    pub base_url: url::Url,
    /// How requests authenticate.
    pub auth: Auth,
    /// Requests per minute the source may make (a budget followed before any 429).
    pub requests_per_minute: Option<u32>,
    /// Child-resource requests in flight at once.
    pub concurrency: usize,
    /// Attempts per request before giving up (429s, 5xx, timeouts).
    pub max_attempts: u32,
    /// Time limit of one request.
    pub timeout: Duration,
    /// Headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// Levels of nesting flattened before values are kept as JSON text.
    pub max_depth: usize,
    /// The resources, in file order (parents before their children).
    pub resources: Vec<Resource>,
}

/// How requests authenticate.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// No authentication.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer { token: Secret },
    /// HTTP Basic.
    Basic { username: String, password: Secret },
    /// A key in a header or a query parameter.
    ApiKey {
        name: String,
        value: Secret,
        location: KeyLocation,
    },
    /// OAuth2 client credentials: a token fetched from `token_url`, renewed before it expires.
    OAuth2 {
        token_url: url::Url,
        client_id: String,
        client_secret: Secret,
        scopes: Vec<String>,
    },
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    Header,
    Query,
}

/// One resource: an endpoint whose records land in one root table (plus child tables).
#[derive(Debug, Clone)]
pub struct Resource {
    /// The resource name; the root table is named after it.
    pub name: String,
    /// The path, relative to the base URL; `{parent.FIELD}` is filled from the parent record.
    pub path: String,
    /// `GET` or `POST`.
    pub method: Method,
    /// Query parameters of the first request.
    pub params: BTreeMap<String, String>,
    /// A JSON body template (POST), `{cursor}` replaced by the cursor value.
    pub body: Option<String>,
    /// Where the records are in a page (dotted path; empty for the page itself).
    pub records: Vec<String>,
    /// The field (dotted path) that identifies a record.
    pub primary_key: Option<String>,
    /// What a load does with existing rows.
    pub write: WriteDisposition,
    /// How to get the next page.
    pub pagination: Pagination,
    /// Incremental loading by a cursor field.
    pub incremental: Option<Incremental>,
    /// Records are JSON:API resource objects to unwrap (see [`crate::jsonapi`]).
    pub jsonapi: bool,
    /// The parent resource, for a child resource.
    pub parent: Option<String>,
    /// Where the resource is in its file, for messages.
    pub line: usize,
}

/// `GET` or `POST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Post,
}

/// What a load does with the rows already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WriteDisposition {
    /// Upsert by primary key; an updated record's child rows are replaced.
    #[default]
    Merge,
    /// Add every record.
    Append,
    /// Every run replaces the table with what the API returns.
    Replace,
}

/// How to get from one page to the next.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One page only.
    None,
    /// The next page's URL is in the body (JSON:API `links.next`), absolute or relative.
    JsonLink {
        #[serde(default = "default_next")]
        next: String,
    },
    /// The next page's URL is in the `Link` header (`rel="next"`).
    LinkHeader,
    /// A token in the body is sent back as a parameter until it is absent.
    Cursor {
        /// Where the token is in the body.
        cursor_path: String,
        /// The query parameter that carries it.
        param: String,
    },
    /// `offset` and `limit` parameters; stops at a short page or at `total`.
    Offset {
        #[serde(default = "default_limit")]
        limit: u64,
        #[serde(default = "default_offset_param")]
        offset_param: String,
        #[serde(default = "default_limit_param")]
        limit_param: String,
        /// Where the total count is in the body, if the API says.
        total_path: Option<String>,
    },
    /// A page number parameter; stops at an empty page or at `total_pages`.
    PageNumber {
        #[serde(default = "default_page_param")]
        param: String,
        #[serde(default = "default_first_page")]
        first: u64,
        /// Where the number of pages is in the body, if the API says.
        total_pages_path: Option<String>,
    },
}

fn default_next() -> String {
    "links.next".into()
}
fn default_limit() -> u64 {
    100
}
fn default_offset_param() -> String {
    "offset".into()
}
fn default_limit_param() -> String {
    "limit".into()
}
fn default_page_param() -> String {
    "page".into()
}
fn default_first_page() -> u64 {
    1
}

/// Incremental loading: only records whose cursor field moved since the last run.
#[derive(Debug, Clone, PartialEq)]
pub struct Incremental {
    /// The cursor field in a record (dotted path, before any JSON:API unwrapping).
    pub cursor: Vec<String>,
    /// The query parameter the cursor value is sent in (unless a body template has
    /// `{cursor}`).
    pub param: Option<String>,
    /// The value of the first run.
    pub initial: String,
    /// How far before the last cursor a run starts, to catch late updates.
    pub lookback: Duration,
    /// The API stops a query after this many records (Kustomer's search: 10,000); the run
    /// then starts a new query at the last cursor value and skips the records it has.
    pub restart_after: Option<u64>,
    /// The API returns records in cursor order (so the cursor can advance with each commit).
    pub sorted: bool,
}

// ---------------------------------------------------------------------------------- raw

#[derive(Deserialize)]
struct RawKind {
    #[serde(rename = "type")]
    kind: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRest {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    base_url: Option<Spanned<String>>,
    auth: Option<Spanned<RawAuth>>,
    requests_per_minute: Option<u32>,
    concurrency: Option<usize>,
    max_attempts: Option<u32>,
    timeout_seconds: Option<f64>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    max_depth: Option<usize>,
    #[serde(default)]
    resources: BTreeMap<String, Spanned<RawResource>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKustomer {
    #[serde(rename = "type")]
    pub _kind: Spanned<String>,
    pub base_url: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub api_key: Option<Spanned<String>>,
    pub resources: Option<Vec<Spanned<String>>>,
    pub requests_per_minute: Option<u32>,
    pub concurrency: Option<usize>,
    pub page_size: Option<u64>,
    pub lookback: Option<Spanned<String>>,
    pub max_depth: Option<usize>,
}

/// `[auth]`: one table whose `kind` says which other keys it needs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    kind: Spanned<String>,
    token: Option<Spanned<String>>,
    username: Option<String>,
    password: Option<Spanned<String>>,
    name: Option<String>,
    value: Option<Spanned<String>>,
    location: Option<KeyLocation>,
    token_url: Option<Spanned<String>>,
    client_id: Option<String>,
    client_secret: Option<Spanned<String>>,
    #[serde(default)]
    scopes: Vec<String>,
}

/// The kinds of `[auth]`.
pub const AUTH_KINDS: &[&str] = &["none", "bearer", "basic", "api_key", "oauth2"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    path: Option<String>,
    #[serde(default)]
    method: Method,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
    body: Option<String>,
    records: Option<String>,
    primary_key: Option<String>,
    #[serde(default)]
    write: WriteDisposition,
    pagination: Option<Pagination>,
    incremental: Option<Spanned<RawIncremental>>,
    #[serde(default)]
    jsonapi: bool,
    parent: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIncremental {
    cursor: String,
    param: Option<String>,
    initial: Option<String>,
    lookback: Option<Spanned<String>>,
    restart_after: Option<u64>,
    #[serde(default = "yes")]
    sorted: bool,
}

fn yes() -> bool {
    true
}

/// The source types, for messages.
pub const SOURCE_TYPES: &[&str] = &["kustomer", "rest", "kafka"];

impl SourceConfig {
    /// Parses and checks the source file `file` (its name gives the source's name).
    pub fn parse(
        text: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SourceConfig, ConfigErrors> {
        let name = std::path::Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut diags = Diags::new(text, file);
        let kind = match toml::from_str::<RawKind>(text) {
            Ok(k) => k.kind,
            Err(e) => {
                diags.at(e.span(), e.message().trim().to_string());
                return Err(ConfigErrors(diags.list));
            }
        };
        if !tideway_core::naming::normalize(&name).eq(&name) {
            diags.at(
                None,
                format!(
                    "the source name `{name}` (from the file name) is not a valid lake schema name; rename the file to `{}.toml`",
                    tideway_core::naming::normalize(&name)
                ),
            );
        }
        let source = match kind.get_ref().as_str() {
            "kustomer" => match parse_collecting::<RawKustomer>(text) {
                Ok(raw) => {
                    crate::kustomer::rest_source(&raw, &mut diags, env).map(SourceKind::Rest)
                }
                Err(errors) => {
                    errors.into_iter().for_each(|(span, m)| diags.at(span, m));
                    None
                }
            },
            "rest" => match parse_collecting::<RawRest>(text) {
                Ok(raw) => rest_source(raw, &mut diags, env).map(SourceKind::Rest),
                Err(errors) => {
                    errors.into_iter().for_each(|(span, m)| diags.at(span, m));
                    None
                }
            },
            "kafka" => match parse_collecting::<crate::kafka_load::RawKafka>(text) {
                Ok(raw) => crate::kafka_load::KafkaSource::from_raw(&name, raw, &mut diags, env)
                    .map(SourceKind::Kafka),
                Err(errors) => {
                    errors.into_iter().for_each(|(span, m)| diags.at(span, m));
                    None
                }
            },
            other => {
                diags.at(
                    Some(kind.span()),
                    format!(
                        "unknown source type `{other}`; known types: {}",
                        SOURCE_TYPES.join(", ")
                    ),
                );
                None
            }
        };
        match (source, diags.list.is_empty()) {
            (Some(kind), true) => Ok(SourceConfig {
                name,
                file: file.to_string(),
                kind,
            }),
            _ => Err(ConfigErrors(diags.list)),
        }
    }
}

/// Parses `30s`, `15m`, `1h`, `2d` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let n: f64 = number.trim().parse().map_err(|_| {
        format!("`{text}` is not a duration; write e.g. `30s`, `15m`, `1h` or `2d`")
    })?;
    let seconds = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit `{unit}`; use ms, s, m, h or d"
            ));
        }
    };
    if !(0.0..=1e10).contains(&seconds) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn rest_source(
    raw: RawRest,
    diags: &mut Diags<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<RestSource> {
    let base_url = match &raw.base_url {
        None => {
            diags.at(
                Some(raw.kind.span()),
                "a `rest` source needs `base_url`, e.g. `base_url = \"https://api.example.com/v1/\"`",
            );
            None
        }
        Some(url) => parse_base_url(url, diags, env),
    };
    let auth = match raw.auth {
        None => Auth::None,
        Some(auth) => raw_auth(auth, diags, env),
    };
    let mut headers = BTreeMap::new();
    for (k, v) in &raw.headers {
        if let Some(v) = diags.plain(v, env) {
            headers.insert(k.clone(), v);
        }
    }
    let tables = raw.resources;
    if tables.is_empty() {
        diags.at(
            Some(raw.kind.span()),
            "a `rest` source needs at least one `[resources.NAME]` table with a `path`",
        );
    }
    let mut resources = Vec::new();
    let names: Vec<String> = tables.keys().cloned().collect();
    for (name, resource) in tables {
        let span = resource.span();
        if let Some(r) = raw_resource(&name, resource.into_inner(), span, &names, diags) {
            resources.push(r);
        }
    }
    order_parents_first(&mut resources);
    for (i, r) in resources.iter().enumerate() {
        if let Some(p) = &r.parent
            && !resources[..i].iter().any(|q| &q.name == p)
        {
            diags.at(
                    None,
                    format!("resource `{}` and its parents form a cycle (`{p}` is its parent): give the top resource no `parent`", r.name),
                );
        }
    }
    Some(RestSource {
        base_url: base_url?,
        auth,
        requests_per_minute: raw.requests_per_minute,
        concurrency: raw.concurrency.unwrap_or(4).max(1),
        max_attempts: raw.max_attempts.unwrap_or(8).max(1),
        timeout: Duration::from_secs_f64(raw.timeout_seconds.unwrap_or(60.0).max(0.1)),
        headers,
        max_depth: raw.max_depth.unwrap_or(5),
        resources,
    })
}

fn raw_auth(
    auth: Spanned<RawAuth>,
    diags: &mut Diags<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Auth {
    let span = auth.span();
    let a = auth.into_inner();
    let need = |key: &str, present: bool, diags: &mut Diags<'_>| {
        if !present {
            diags.at(
                Some(span.clone()),
                format!("`[auth]` of kind `{}` needs `{key}`", a.kind.get_ref()),
            );
        }
        present
    };
    match a.kind.get_ref().as_str() {
        "none" => Auth::None,
        "bearer" => match &a.token {
            Some(token) => Auth::Bearer {
                token: diags.secret("token", token, env),
            },
            None => {
                need("token", false, diags);
                Auth::None
            }
        },
        "basic" => {
            let ok = need("username", a.username.is_some(), diags)
                & need("password", a.password.is_some(), diags);
            match (ok, &a.username, &a.password) {
                (true, Some(username), Some(password)) => Auth::Basic {
                    username: username.clone(),
                    password: diags.secret("password", password, env),
                },
                _ => Auth::None,
            }
        }
        "api_key" => {
            let ok =
                need("name", a.name.is_some(), diags) & need("value", a.value.is_some(), diags);
            match (ok, &a.name, &a.value) {
                (true, Some(name), Some(value)) => Auth::ApiKey {
                    name: name.clone(),
                    value: diags.secret("value", value, env),
                    location: a.location.unwrap_or(KeyLocation::Header),
                },
                _ => Auth::None,
            }
        }
        "oauth2" => {
            let ok = need("token_url", a.token_url.is_some(), diags)
                & need("client_id", a.client_id.is_some(), diags)
                & need("client_secret", a.client_secret.is_some(), diags);
            let (true, Some(url), Some(client_id), Some(secret)) =
                (ok, &a.token_url, &a.client_id, &a.client_secret)
            else {
                return Auth::None;
            };
            let token_url = diags
                .plain(url, env)
                .and_then(|u| match url::Url::parse(&u) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        diags.at(
                            Some(url.span()),
                            format!("`token_url` `{u}` is not a URL: {e}"),
                        );
                        None
                    }
                });
            match token_url {
                Some(token_url) => Auth::OAuth2 {
                    token_url,
                    client_id: client_id.clone(),
                    client_secret: diags.secret("client_secret", secret, env),
                    scopes: a.scopes.clone(),
                },
                None => Auth::None,
            }
        }
        other => {
            diags.at(
                Some(a.kind.span()),
                format!(
                    "unknown auth kind `{other}`; known kinds: {}",
                    AUTH_KINDS.join(", ")
                ),
            );
            Auth::None
        }
    }
}

/// Parses a base URL, making sure it ends with `/` so that relative paths append to it.
pub(crate) fn parse_base_url(
    url: &Spanned<String>,
    diags: &mut Diags<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<url::Url> {
    let text = diags.plain(url, env)?;
    let text = if text.ends_with('/') {
        text
    } else {
        format!("{text}/")
    };
    match url::Url::parse(&text) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Some(u),
        Ok(u) => {
            diags.at(
                Some(url.span()),
                format!(
                    "`base_url` must be http:// or https://, not `{}://`",
                    u.scheme()
                ),
            );
            None
        }
        Err(e) => {
            diags.at(
                Some(url.span()),
                format!("`base_url` `{text}` is not a URL: {e}"),
            );
            None
        }
    }
}

fn raw_resource(
    name: &str,
    raw: RawResource,
    span: std::ops::Range<usize>,
    names: &[String],
    diags: &mut Diags<'_>,
) -> Option<Resource> {
    let line = line_col(diags.text, span.start).0;
    let path = match raw.path {
        Some(p) => p,
        None => {
            diags.at(
                Some(span.clone()),
                format!("resource `{name}` needs a `path`, e.g. `path = \"{name}\"`"),
            );
            return None;
        }
    };
    let parent = match raw.parent {
        Some(p) if !names.contains(p.get_ref()) || p.get_ref() == name => {
            diags.at(
                Some(p.span()),
                format!(
                    "resource `{name}` has parent `{}`, which is not another resource of this file; resources: {}",
                    p.get_ref(),
                    names.join(", ")
                ),
            );
            None
        }
        Some(p) => Some(p.into_inner()),
        None => None,
    };
    if parent.is_some() && !path.contains("{parent.") {
        diags.at(
            Some(span.clone()),
            format!(
                "resource `{name}` has a parent but its path does not use it; write e.g. `path = \"parents/{{parent.id}}/{name}\"`"
            ),
        );
    }
    if raw.primary_key.is_none() && raw.write == WriteDisposition::Merge {
        diags.at(
            Some(span.clone()),
            format!(
                "resource `{name}` is merged (the default `write`) but has no `primary_key`; set `primary_key = \"id\"` (the field that identifies a record), or `write = \"append\"` or `\"replace\"`"
            ),
        );
    }
    let incremental = raw.incremental.map(|inc| {
        let span = inc.span();
        let inc = inc.into_inner();
        let lookback = match &inc.lookback {
            None => Duration::ZERO,
            Some(l) => match parse_duration(l.get_ref()) {
                Ok(d) => d,
                Err(msg) => {
                    diags.at(Some(l.span()), msg);
                    Duration::ZERO
                }
            },
        };
        let in_body = raw.body.as_deref().is_some_and(|b| b.contains("{cursor}"));
        if inc.param.is_none() && !in_body {
            diags.at(
                Some(span.clone()),
                format!(
                    "resource `{name}`: the incremental cursor is sent nowhere; set `param` (a query parameter) or put `{{cursor}}` in `body`"
                ),
            );
        }
        if raw.write == WriteDisposition::Append && (!lookback.is_zero() || !inc.sorted) {
            diags.at(
                Some(span.clone()),
                format!(
                    "resource `{name}` is appended, so a `lookback` or an unsorted cursor would load records twice; use `write = \"merge\"` with a `primary_key`"
                ),
            );
        }
        if raw.write == WriteDisposition::Replace {
            diags.at(
                Some(span.clone()),
                format!("resource `{name}` is replaced on every run, so an incremental cursor has nothing to do; remove `incremental` or use `write = \"merge\"`"),
            );
        }
        Incremental {
            cursor: inc.cursor.split('.').map(str::to_string).collect(),
            param: inc.param,
            initial: inc.initial.unwrap_or_else(|| "1970-01-01T00:00:00Z".into()),
            lookback,
            restart_after: inc.restart_after,
            sorted: inc.sorted,
        }
    });
    let params = raw
        .params
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect();
    Some(Resource {
        name: name.to_string(),
        path,
        method: raw.method,
        params,
        body: raw.body,
        records: split_path(raw.records.as_deref().unwrap_or("")),
        primary_key: raw.primary_key,
        write: raw.write,
        pagination: raw.pagination.unwrap_or(Pagination::None),
        incremental,
        jsonapi: raw.jsonapi,
        parent,
        line,
    })
}

/// A dotted path as its parts; empty for "" or "$".
pub fn split_path(path: &str) -> Vec<String> {
    let path = path.trim().trim_start_matches('$').trim_start_matches('.');
    if path.is_empty() {
        return Vec::new();
    }
    path.split('.').map(str::to_string).collect()
}

/// Puts every parent before its children, keeping file order otherwise.
fn order_parents_first(resources: &mut Vec<Resource>) {
    let mut ordered: Vec<Resource> = Vec::with_capacity(resources.len());
    let mut rest = std::mem::take(resources);
    while !rest.is_empty() {
        let before = rest.len();
        let mut i = 0;
        while i < rest.len() {
            let ready = rest[i]
                .parent
                .as_ref()
                .is_none_or(|p| ordered.iter().any(|r| &r.name == p));
            if ready {
                ordered.push(rest.remove(i));
            } else {
                i += 1;
            }
        }
        if rest.len() == before {
            // A cycle of parents: keep them; the run reports it.
            ordered.append(&mut rest);
        }
    }
    *resources = ordered;
}

/// Every source file in `dir` (`sources/*.toml`), sorted by name. All the problems of all the
/// files are reported together.
pub fn load_dir(
    dir: &std::path::Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<SourceConfig>, crate::ExtractError> {
    load_dir_of_type(dir, env, None)
}

/// Like [`load_dir`], but only the files whose `type` is `only` (when given): the others are
/// not checked.
pub fn load_dir_of_type(
    dir: &std::path::Path,
    env: &dyn Fn(&str) -> Option<String>,
    only: Option<&str>,
) -> Result<Vec<SourceConfig>, crate::ExtractError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|error| crate::ExtractError::Io {
            path: path.display().to_string(),
            error,
        })?;
        if let Some(only) = only {
            let kind = toml::from_str::<RawKind>(&text).map(|k| k.kind.into_inner());
            if kind.as_deref().ok() != Some(only) {
                continue;
            }
        }
        match SourceConfig::parse(&text, &path.display().to_string(), env) {
            Ok(source) => sources.push(source),
            Err(errors) => problems.extend(errors.0),
        }
    }
    if problems.is_empty() {
        Ok(sources)
    } else {
        Err(ConfigErrors(problems).into())
    }
}
