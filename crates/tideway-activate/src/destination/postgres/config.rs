//! The `[destinations.NAME]` table of a Postgres destination (`type = "postgres"`).
//!
//! ```toml
//! [destinations.app_db]
//! type = "postgres"
//! url = "${APP_DATABASE_URL}"              # postgres://user:password@host:5432/db?sslmode=require
//! table = "public.lead_scores"             # identify/group traits (and track properties) upserted here
//! key = "user_id"                          # the conflict column(s): "user_id" or ["tenant", "user_id"]
//! # events_table = "public.tideway_events" # track/page/screen appended here instead, once per messageId
//! # create = true                         # create the tables, add columns, widen bigint to double
//! # batch_size = 1000                      # events per transaction
//! # concurrency = 4                        # transactions (connections) at once
//! ```

use serde::Deserialize;
use tideway_core::config::{Diags, Secret};
use toml::Spanned;

use super::tls::{Verify, split_url};

/// Events per transaction, unless configured.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Transactions in flight at once (one connection each), unless configured.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// The most events one transaction takes.
pub const MAX_BATCH_SIZE: usize = 50_000;
/// The longest name Postgres keeps (`NAMEDATALEN - 1` bytes); longer ones are cut silently.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// An example table, parsed by a test.
pub const EXAMPLE: &str = r#"
[destinations.app_db]
type = "postgres"
url = "${APP_DATABASE_URL}"
table = "public.lead_scores"
key = "user_id"
events_table = "public.tideway_events"
create = true
batch_size = 2000
concurrency = 4
"#;

/// A checked `[destinations.NAME]` table with `type = "postgres"`: upserts sync rows into a
/// table of a Postgres database and appends events to another.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresConfig {
    /// The connection URL, `postgres://user:password@host:port/db` (from the environment: it
    /// holds the password). `sslmode` (disable, prefer, require, verify-ca, verify-full) and
    /// `sslrootcert` are read as libpq reads them.
    pub url: Secret,
    /// Where rows are upserted.
    pub table: TableName,
    /// The conflict column(s): a row is identified by these.
    pub key: Vec<String>,
    /// Where track/page/screen events are appended (once per `messageId`); `None`: their
    /// properties are upserted into `table` like traits.
    pub events_table: Option<TableName>,
    /// Create missing tables, add missing columns, widen `bigint` to `double precision`.
    pub create: bool,
    /// Events per transaction.
    pub batch_size: usize,
    /// Transactions in flight at once.
    pub concurrency: usize,
}

/// A table, `schema.name` or `name` (in the connection's `search_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// Reads `name` or `schema.name`, each a lowercase SQL identifier.
    pub fn parse(text: &str) -> Result<TableName, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let bad = |why: &str| {
            Err(format!(
                "`{text}` is not a table name: {why}; write `name` or `schema.name` in lowercase \
                 letters, digits and `_`, e.g. `public.lead_scores`"
            ))
        };
        if parts.len() > 2 {
            return bad("more than one `.`");
        }
        for part in &parts {
            if let Err(why) = check_identifier(part) {
                return bad(&why);
            }
        }
        Ok(match parts.as_slice() {
            [schema, name] => TableName {
                schema: Some(schema.to_string()),
                name: name.to_string(),
            },
            _ => TableName {
                schema: None,
                name: text.to_string(),
            },
        })
    }

    /// The name quoted for SQL: `"public"."lead_scores"`.
    pub fn sql(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.name)),
            None => quote(&self.name),
        }
    }

    /// The name as the user wrote it, for messages.
    pub fn display(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// `name` as a quoted SQL identifier (`"` doubled).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A name this config writes: lowercase, so that the unquoted name in the user's own SQL
/// reaches the same table or column we quote.
fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(format!("`{name}` is not a lowercase identifier"));
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "`{name}` is longer than Postgres's {MAX_IDENTIFIER_BYTES} bytes"
        ));
    }
    Ok(())
}

/// `key` as written: one column or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawKey {
    One(String),
    Many(Vec<String>),
}

/// The table as written; see the module docs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(rename = "type")]
    _kind: String,
    url: Spanned<String>,
    table: Spanned<String>,
    key: Spanned<RawKey>,
    events_table: Option<Spanned<String>>,
    create: Option<bool>,
    batch_size: Option<Spanned<usize>>,
    concurrency: Option<Spanned<usize>>,
}

impl PostgresConfig {
    /// Checks `[destinations.NAME]` of `only` (a text where everything else is blanked),
    /// reporting every problem into `diags` at its key; `url` must come from the environment
    /// (`${VAR}`, read from `env`).
    pub fn parse(
        name: &str,
        only: &str,
        diags: &mut Diags<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<PostgresConfig> {
        let raw: Raw = crate::config::parse_one(only, name, diags)?;
        let url = diags.secret("url", &raw.url, env);
        if raw.url.get_ref().contains("${")
            && let Err(message) = check_url(url.expose())
        {
            diags.at(Some(raw.url.span()), message);
        }
        let mut table = |value: &Spanned<String>, key: &str| match TableName::parse(value.get_ref())
        {
            Ok(t) => Some(t),
            Err(message) => {
                diags.at(Some(value.span()), format!("`{key}`: {message}"));
                None
            }
        };
        let target = table(&raw.table, "table");
        let events_table = raw
            .events_table
            .as_ref()
            .and_then(|t| table(t, "events_table"));
        let key = match raw.key.get_ref() {
            RawKey::One(k) => vec![k.clone()],
            RawKey::Many(ks) => ks.clone(),
        };
        if let Err(message) = check_key(&key) {
            diags.at(Some(raw.key.span()), message);
        }
        if let (Some(t), Some(e)) = (&target, &events_table)
            && t == e
        {
            diags.at(
                raw.events_table.as_ref().map(Spanned::span),
                "`events_table` must differ from `table`: rows are upserted into one, events \
                 appended to the other",
            );
        }
        let mut number =
            |value: &Option<Spanned<usize>>, key: &str, max: usize, default| match value {
                Some(v) if !(1..=max).contains(v.get_ref()) => {
                    diags.at(
                        Some(v.span()),
                        format!("`{key}` {} must be from 1 to {max}", v.get_ref()),
                    );
                    default
                }
                Some(v) => *v.get_ref(),
                None => default,
            };
        let batch_size = number(
            &raw.batch_size,
            "batch_size",
            MAX_BATCH_SIZE,
            DEFAULT_BATCH_SIZE,
        );
        let concurrency = number(&raw.concurrency, "concurrency", 64, DEFAULT_CONCURRENCY);
        Some(PostgresConfig {
            url,
            table: target?,
            key,
            events_table,
            create: raw.create.unwrap_or(true),
            batch_size,
            concurrency,
        })
    }

    /// A configuration with every default.
    pub fn new(url: Secret, table: TableName, key: &[&str]) -> Self {
        PostgresConfig {
            url,
            table,
            key: key.iter().map(|k| k.to_string()).collect(),
            events_table: None,
            create: true,
            batch_size: DEFAULT_BATCH_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// The bookkeeping columns every upserted row carries.
pub const MESSAGE_ID_COLUMN: &str = "_tideway_message_id";
/// See [`MESSAGE_ID_COLUMN`].
pub const UPDATED_AT_COLUMN: &str = "_tideway_updated_at";

fn check_key(key: &[String]) -> Result<(), String> {
    if key.is_empty() {
        return Err("`key` is empty; name the conflict column(s), e.g. `key = \"user_id\"`".into());
    }
    for k in key {
        check_identifier(k).map_err(|why| format!("`key`: {why}"))?;
        if k.starts_with("_tideway_") {
            return Err(format!(
                "`key` `{k}`: names starting with `_tideway_` are Tideway's bookkeeping columns"
            ));
        }
    }
    let mut sorted = key.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != key.len() {
        return Err(format!("`key` names a column twice: {key:?}"));
    }
    Ok(())
}

/// Checks a connection URL without ever repeating it (it holds the password): the client's
/// configuration and how TLS checks the server (see [`super::tls`]).
pub fn check_url(url: &str) -> Result<(tokio_postgres::Config, Verify), String> {
    let scheme_ok = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (rest, verify) = split_url(url).map_err(|why| format!("`url`: {why}"))?;
    match rest.parse::<tokio_postgres::Config>() {
        Ok(c) if scheme_ok && !c.get_hosts().is_empty() => Ok((c, verify)),
        _ => Err("`url` is not a Postgres URL such as \
             `postgres://user:password@db.example.com:5432/app?sslmode=require` (its value is \
             not shown: it holds a password)"
            .to_string()),
    }
}

/// `host:port/db` of a connection, for messages (never the user or password).
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PostgresConfig, Vec<String>> {
        let env = |name: &str| match name {
            "APP_DATABASE_URL" => Some("postgres://app:s3cret@db.internal:5433/app".to_string()),
            "BAD_URL" => Some("mysql://app:s3cret@db.internal/app".to_string()),
            _ => None,
        };
        let mut diags = Diags::new(text, "tideway.toml");
        let config = PostgresConfig::parse("app_db", text, &mut diags, &env);
        diags
            .finish(config)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_example_parses() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.table.sql(), "\"public\".\"lead_scores\"");
        assert_eq!(config.key, ["user_id"]);
        assert_eq!(
            config
                .events_table
                .as_ref()
                .map(TableName::display)
                .as_deref(),
            Some("public.tideway_events")
        );
        assert!(config.create);
        assert_eq!((config.batch_size, config.concurrency), (2000, 4));
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "the url is never shown"
        );
        let (url, _) = check_url(config.url.expose()).unwrap();
        assert_eq!(describe(&url), "db.internal:5433/app");
    }

    #[test]
    fn defaults_and_a_composite_key() {
        let text = "[destinations.app_db]\ntype = \"postgres\"\nurl = \"${APP_DATABASE_URL}\"\n\
                    table = \"scores\"\nkey = [\"tenant\", \"user_id\"]\n";
        let config = parse(text).unwrap();
        assert_eq!(config.table, TableName::parse("scores").unwrap());
        assert_eq!(config.table.sql(), "\"scores\"");
        assert_eq!(config.key, ["tenant", "user_id"]);
        assert_eq!(config.events_table, None);
        assert!(config.create);
        assert_eq!(config.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(config.concurrency, DEFAULT_CONCURRENCY);
    }

    #[test]
    fn every_problem_is_reported_at_its_line() {
        let text = r#"[destinations.app_db]
type = "postgres"
url = "${BAD_URL}"
table = "public.Lead-Scores"
key = "_tideway_id"
events_table = "a.b.c"
batch_size = 0
concurrency = 100
"#;
        let problems = parse(text).unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(
            problems[0].starts_with("tideway.toml:3:7: `url` is not a Postgres URL"),
            "{problems:#?}"
        );
        assert!(!problems[0].contains("s3cret"), "{problems:#?}");
        assert!(
            problems[1]
                .starts_with("tideway.toml:4:9: `table`: `public.Lead-Scores` is not a table name"),
            "{problems:#?}"
        );
        assert!(problems[2].starts_with("tideway.toml:6:16: `events_table`: `a.b.c`"));
        assert!(problems[3].starts_with("tideway.toml:5:7: `key` `_tideway_id`"));
        assert!(problems[4].starts_with("tideway.toml:7:14: `batch_size` 0"));
        assert!(problems[5].starts_with("tideway.toml:8:15: `concurrency` 100"));
    }

    #[test]
    fn unknown_keys_a_clear_url_and_missing_keys_are_refused() {
        let text = "[destinations.app_db]\ntype = \"postgres\"\n\
                    url = \"postgres://app:s3cret@db/app\"\ntable = \"t\"\nkey = \"id\"\n\
                    upsert_key = \"id\"\n";
        let problems = parse(text).unwrap_err().join("\n");
        assert!(
            problems.contains("tideway.toml:6:1: unknown field `upsert_key`"),
            "{problems}"
        );
        let text = "[destinations.app_db]\ntype = \"postgres\"\n\
                    url = \"postgres://app:s3cret@db/app\"\ntable = \"t\"\nkey = \"id\"\n";
        let problems = parse(text).unwrap_err().join("\n");
        assert!(
            problems.contains("tideway.toml:3:7: `url` is a secret"),
            "{problems}"
        );
        let text = "[destinations.app_db]\ntype = \"postgres\"\nurl = \"${APP_DATABASE_URL}\"\n";
        let problems = parse(text).unwrap_err().join("\n");
        assert!(problems.contains("missing field `table`"), "{problems}");
    }

    #[test]
    fn table_names() {
        assert!(TableName::parse("lead_scores").is_ok());
        assert!(TableName::parse("crm.leads_2").is_ok());
        for bad in [
            "",
            "Leads",
            "1leads",
            "a.b.c",
            "le ads",
            "a.",
            &"x".repeat(64),
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(quote("we\"ird Name"), "\"we\"\"ird Name\"");
    }
}
