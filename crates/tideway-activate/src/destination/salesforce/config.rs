//! The `[destinations.NAME]` table of a Salesforce destination (`type = "salesforce"`).
//!
//! ```toml
//! [destinations.crm]
//! type = "salesforce"
//! instance_url = "https://acme.my.salesforce.com"  # the org's My Domain address
//! client_id = "3MVG9...consumer-key"               # the external client app's consumer key
//! client_secret = "${SALESFORCE_CLIENT_SECRET}"    # its consumer secret
//! # access_token = "${SALESFORCE_ACCESS_TOKEN}"    # instead of client_id/client_secret
//! # login_url = "https://acme.my.salesforce.com"   # where to get tokens; default instance_url
//! # api_version = "v62.0"
//! # object = "Contact"                             # what identify writes
//! # group_object = "Account"                       # what group writes
//! # external_id_field = "Id"                       # "Id": update by Salesforce Id
//! # group_external_id_field = "Id"                 # default: external_id_field
//! # bulk_threshold = 200                           # more events than this: Bulk API 2.0
//! # requests_per_second = 10
//! # concurrency = 2
//! # bulk_poll_seconds = 2.0
//! # bulk_timeout_seconds = 600
//! ```

use std::time::Duration;

use serde::Deserialize;
use tideway_core::config::{Diags, Secret};
use toml::Spanned;

/// The REST API version, unless configured (Winter '25).
pub const DEFAULT_API_VERSION: &str = "v62.0";
/// sObject Collections upsert exists from API version 46.0 on.
pub const MIN_API_VERSION: f64 = 46.0;
/// What `identify` writes, unless configured.
pub const DEFAULT_OBJECT: &str = "Contact";
/// What `group` writes, unless configured.
pub const DEFAULT_GROUP_OBJECT: &str = "Account";
/// The field records are matched on, unless configured: the record Id (update only).
pub const DEFAULT_EXTERNAL_ID_FIELD: &str = "Id";
/// Batches of more events than this go through Bulk API 2.0.
pub const DEFAULT_BULK_THRESHOLD: usize = 200;
/// Calls per second. Salesforce meters calls per rolling 24 hours, not per second; this keeps a
/// sync from burning the org's daily allocation in a burst.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 10.0;
/// Calls in flight. Salesforce allows 25 concurrent long-running (20 s or more) calls per
/// production org, shared with every other integration; bulk jobs are polled, so 2 is plenty.
pub const DEFAULT_CONCURRENCY: usize = 2;
/// The most calls in flight we accept: Salesforce's concurrent long-running call limit.
pub const MAX_CONCURRENCY: usize = 25;
/// How often a bulk job's state is read.
pub const DEFAULT_BULK_POLL: Duration = Duration::from_secs(2);
/// How long a bulk job may take before its events are retried.
pub const DEFAULT_BULK_TIMEOUT: Duration = Duration::from_secs(600);

/// An example table, parsed by a test.
pub const EXAMPLE: &str = r#"
[destinations.crm]
type = "salesforce"
instance_url = "https://acme.my.salesforce.com"
client_id = "3MVG9consumer-key"
client_secret = "${SALESFORCE_CLIENT_SECRET}"
object = "Contact"
group_object = "Account"
external_id_field = "External_Id__c"
bulk_threshold = 500
"#;

/// How the destination authenticates.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// OAuth 2.0 client credentials flow: `POST {login_url}/services/oauth2/token` with
    /// `grant_type=client_credentials`; the token is renewed when Salesforce answers
    /// `INVALID_SESSION_ID`.
    ClientCredentials {
        /// The external client app's consumer key.
        client_id: String,
        /// Its consumer secret.
        client_secret: Secret,
        /// Where tokens come from (the org's My Domain address); `None` for `instance_url`.
        login_url: Option<String>,
    },
    /// A token obtained elsewhere; it cannot be renewed.
    AccessToken(Secret),
}

/// A checked `[destinations.NAME]` table with `type = "salesforce"`: writes identify and group
/// calls to Salesforce records.
#[derive(Debug, Clone, PartialEq)]
pub struct SalesforceConfig {
    /// The org's address, e.g. `https://acme.my.salesforce.com`.
    pub instance_url: String,
    pub auth: Auth,
    /// `vNN.N`, e.g. `v62.0`.
    pub api_version: String,
    /// The object identify calls write (`Contact`, `Lead`, `Person__c`, ...).
    pub object: String,
    /// The object group calls write.
    pub group_object: String,
    /// The field identify records are matched on: `Id` (update by Salesforce Id, the `userId`
    /// must be one) or an external id field such as `External_Id__c` (upsert).
    pub external_id_field: String,
    /// The field group records are matched on.
    pub group_external_id_field: String,
    /// Batches of more events than this go through Bulk API 2.0; smaller ones through sObject
    /// Collections (200 records a call).
    pub bulk_threshold: usize,
    pub requests_per_second: f64,
    pub concurrency: usize,
    /// How often a bulk job's state is read.
    pub bulk_poll: Duration,
    /// How long a bulk job may take before its events are retried.
    pub bulk_timeout: Duration,
}

/// The table as written; see the module docs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(rename = "type")]
    _kind: String,
    instance_url: Spanned<String>,
    client_id: Option<Spanned<String>>,
    client_secret: Option<Spanned<String>>,
    access_token: Option<Spanned<String>>,
    login_url: Option<Spanned<String>>,
    api_version: Option<Spanned<String>>,
    object: Option<Spanned<String>>,
    group_object: Option<Spanned<String>>,
    external_id_field: Option<Spanned<String>>,
    group_external_id_field: Option<Spanned<String>>,
    bulk_threshold: Option<Spanned<usize>>,
    requests_per_second: Option<Spanned<f64>>,
    concurrency: Option<Spanned<usize>>,
    bulk_poll_seconds: Option<Spanned<f64>>,
    bulk_timeout_seconds: Option<Spanned<u64>>,
}

/// A key of the table, for placing a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    InstanceUrl,
    Auth,
    LoginUrl,
    ApiVersion,
    Object,
    GroupObject,
    ExternalIdField,
    GroupExternalIdField,
    BulkThreshold,
    RequestsPerSecond,
    Concurrency,
    BulkPoll,
    BulkTimeout,
}

impl SalesforceConfig {
    /// A configuration with every default, for `instance_url` and `auth`.
    pub fn new(instance_url: impl Into<String>, auth: Auth) -> Self {
        SalesforceConfig {
            instance_url: instance_url.into(),
            auth,
            api_version: DEFAULT_API_VERSION.to_string(),
            object: DEFAULT_OBJECT.to_string(),
            group_object: DEFAULT_GROUP_OBJECT.to_string(),
            external_id_field: DEFAULT_EXTERNAL_ID_FIELD.to_string(),
            group_external_id_field: DEFAULT_EXTERNAL_ID_FIELD.to_string(),
            bulk_threshold: DEFAULT_BULK_THRESHOLD,
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            concurrency: DEFAULT_CONCURRENCY,
            bulk_poll: DEFAULT_BULK_POLL,
            bulk_timeout: DEFAULT_BULK_TIMEOUT,
        }
    }

    /// Checks `[destinations.NAME]` of `only` (a text where everything else is blanked),
    /// reporting every problem into `diags` at its key; `${VAR}` is read from `env`, and
    /// `client_secret` and `access_token` must come from it.
    pub fn parse(
        name: &str,
        only: &str,
        diags: &mut Diags<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<SalesforceConfig> {
        let raw: Raw = crate::config::parse_one(only, name, diags)?;
        let plain = |diags: &mut Diags<'_>, v: &Option<Spanned<String>>| {
            v.as_ref().and_then(|v| diags.plain(v, env))
        };
        let instance_url = diags.plain(&raw.instance_url, env).unwrap_or_default();
        let login_url = plain(diags, &raw.login_url);
        let auth = match (&raw.client_id, &raw.client_secret, &raw.access_token) {
            (_, _, Some(token)) => Auth::AccessToken(diags.secret("access_token", token, env)),
            (id, secret, None) => Auth::ClientCredentials {
                client_id: plain(diags, id).unwrap_or_default(),
                client_secret: secret
                    .as_ref()
                    .map(|s| diags.secret("client_secret", s, env))
                    .unwrap_or_else(|| Secret::new("")),
                login_url: login_url.clone(),
            },
        };
        let mut config = SalesforceConfig::new(instance_url, auth);
        let mut set = |target: &mut String, v: &Option<Spanned<String>>| {
            if let Some(v) = plain(diags, v) {
                *target = v;
            }
        };
        set(&mut config.api_version, &raw.api_version);
        set(&mut config.object, &raw.object);
        set(&mut config.group_object, &raw.group_object);
        set(&mut config.external_id_field, &raw.external_id_field);
        config.group_external_id_field = config.external_id_field.clone();
        set(
            &mut config.group_external_id_field,
            &raw.group_external_id_field,
        );
        if let Some(n) = &raw.bulk_threshold {
            config.bulk_threshold = *n.get_ref();
        }
        if let Some(rate) = &raw.requests_per_second {
            config.requests_per_second = *rate.get_ref();
        }
        if let Some(n) = &raw.concurrency {
            config.concurrency = *n.get_ref();
        }
        let mut bad_poll = false;
        if let Some(secs) = &raw.bulk_poll_seconds {
            match Duration::try_from_secs_f64(*secs.get_ref()) {
                Ok(d) => config.bulk_poll = d,
                Err(_) => bad_poll = true,
            }
        }
        if let Some(secs) = &raw.bulk_timeout_seconds {
            config.bulk_timeout = Duration::from_secs(*secs.get_ref());
        }
        let mut checks = config.checks();
        if bad_poll {
            checks.push((
                Setting::BulkPoll,
                "`bulk_poll_seconds` must be a number of seconds above 0, e.g. 2.0".to_string(),
            ));
        }
        let both_auth =
            raw.access_token.is_some() && (raw.client_id.is_some() || raw.client_secret.is_some());
        if both_auth {
            checks.push((
                Setting::Auth,
                "set either `access_token` or `client_id` and `client_secret`, not both"
                    .to_string(),
            ));
        }
        for (field, message) in checks {
            let span = match field {
                Setting::InstanceUrl => Some(raw.instance_url.span()),
                Setting::Auth => raw
                    .access_token
                    .as_ref()
                    .or(raw.client_secret.as_ref())
                    .or(raw.client_id.as_ref())
                    .map(Spanned::span),
                Setting::LoginUrl => raw.login_url.as_ref().map(Spanned::span),
                Setting::ApiVersion => raw.api_version.as_ref().map(Spanned::span),
                Setting::Object => raw.object.as_ref().map(Spanned::span),
                Setting::GroupObject => raw.group_object.as_ref().map(Spanned::span),
                Setting::ExternalIdField => raw.external_id_field.as_ref().map(Spanned::span),
                Setting::GroupExternalIdField => {
                    raw.group_external_id_field.as_ref().map(Spanned::span)
                }
                Setting::BulkThreshold => raw.bulk_threshold.as_ref().map(Spanned::span),
                Setting::RequestsPerSecond => raw.requests_per_second.as_ref().map(Spanned::span),
                Setting::Concurrency => raw.concurrency.as_ref().map(Spanned::span),
                Setting::BulkPoll => raw.bulk_poll_seconds.as_ref().map(Spanned::span),
                Setting::BulkTimeout => raw.bulk_timeout_seconds.as_ref().map(Spanned::span),
            };
            // A secret written in clear was already reported by `diags.secret`.
            let in_clear = |v: &Option<Spanned<String>>| {
                v.as_ref().is_some_and(|v| !v.get_ref().contains("${"))
            };
            if field == Setting::Auth
                && !both_auth
                && (in_clear(&raw.client_secret) || in_clear(&raw.access_token))
            {
                continue;
            }
            diags.at(span, message);
        }
        Some(config)
    }

    /// The org's address, without a trailing `/`.
    pub fn instance_url(&self) -> String {
        self.instance_url.trim_end_matches('/').to_string()
    }

    /// Where tokens come from: `login_url`, else `instance_url`, without a trailing `/`.
    pub fn login_url(&self) -> String {
        match &self.auth {
            Auth::ClientCredentials {
                login_url: Some(url),
                ..
            } => url.trim_end_matches('/').to_string(),
            _ => self.instance_url(),
        }
    }

    /// Every problem with the values (empty when usable), each naming the key, the bad value
    /// and what would be valid. [`SalesforceConfig::parse`] reports these with their lines.
    pub fn problems(&self) -> Vec<String> {
        self.checks().into_iter().map(|(_, m)| m).collect()
    }

    fn checks(&self) -> Vec<(Setting, String)> {
        let mut problems = Vec::new();
        let is_http = |url: &str| matches!(reqwest::Url::parse(url), Ok(u) if u.scheme() == "http" || u.scheme() == "https");
        if !is_http(&self.instance_url) {
            problems.push((
                Setting::InstanceUrl,
                format!(
                    "`instance_url` `{}` is not an http(s) URL; use the org's My Domain address, \
                     e.g. `https://acme.my.salesforce.com`",
                    self.instance_url
                ),
            ));
        }
        match &self.auth {
            Auth::ClientCredentials {
                client_id,
                client_secret,
                login_url,
            } => {
                if client_id.trim().is_empty() || client_secret.expose().trim().is_empty() {
                    problems.push((
                        Setting::Auth,
                        "set `client_id` and `client_secret` (the external client app's consumer \
                         key and secret, with the client credentials flow enabled), e.g. \
                         `client_secret = \"${SALESFORCE_CLIENT_SECRET}\"`, or `access_token`"
                            .to_string(),
                    ));
                }
                if let Some(url) = login_url
                    && !is_http(url)
                {
                    problems.push((
                        Setting::LoginUrl,
                        format!(
                            "`login_url` `{url}` is not an http(s) URL, e.g. \
                             `https://acme.my.salesforce.com`"
                        ),
                    ));
                }
            }
            Auth::AccessToken(token) => {
                if token.expose().trim().is_empty() {
                    problems.push((
                        Setting::Auth,
                        "`access_token` is empty; set it from the environment, e.g. \
                         `access_token = \"${SALESFORCE_ACCESS_TOKEN}\"`"
                            .to_string(),
                    ));
                }
            }
        }
        match api_version_number(&self.api_version) {
            Some(v) if v >= MIN_API_VERSION => {}
            Some(_) => problems.push((
                Setting::ApiVersion,
                format!(
                    "`api_version` `{}` is too old: sObject Collections upsert needs v46.0 or \
                     later, e.g. `{DEFAULT_API_VERSION}`",
                    self.api_version
                ),
            )),
            None => problems.push((
                Setting::ApiVersion,
                format!(
                    "`api_version` `{}` is not a version such as `{DEFAULT_API_VERSION}`",
                    self.api_version
                ),
            )),
        }
        for (field, key, value) in [
            (Setting::Object, "object", &self.object),
            (Setting::GroupObject, "group_object", &self.group_object),
            (
                Setting::ExternalIdField,
                "external_id_field",
                &self.external_id_field,
            ),
            (
                Setting::GroupExternalIdField,
                "group_external_id_field",
                &self.group_external_id_field,
            ),
        ] {
            if !is_api_name(value) {
                problems.push((
                    field,
                    format!(
                        "`{key}` `{value}` is not a Salesforce API name (letters, digits and \
                         underscores, starting with a letter, e.g. `Contact` or \
                         `External_Id__c`)"
                    ),
                ));
            }
        }
        if self.bulk_threshold > super::MAX_BULK_ROWS {
            problems.push((
                Setting::BulkThreshold,
                format!(
                    "`bulk_threshold` {} must be at most {} (the events of one call)",
                    self.bulk_threshold,
                    super::MAX_BULK_ROWS
                ),
            ));
        }
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            problems.push((
                Setting::RequestsPerSecond,
                format!(
                    "`requests_per_second` {} must be above 0 (default {DEFAULT_REQUESTS_PER_SECOND})",
                    self.requests_per_second
                ),
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            problems.push((
                Setting::Concurrency,
                format!(
                    "`concurrency` {} must be from 1 to {MAX_CONCURRENCY} (Salesforce's limit on \
                     concurrent long-running calls per org)",
                    self.concurrency
                ),
            ));
        }
        if self.bulk_poll.is_zero() {
            problems.push((
                Setting::BulkPoll,
                "`bulk_poll_seconds` must be above 0, e.g. 2.0".to_string(),
            ));
        }
        if self.bulk_timeout < self.bulk_poll {
            problems.push((
                Setting::BulkTimeout,
                format!(
                    "`bulk_timeout_seconds` {} is shorter than one poll ({}s)",
                    self.bulk_timeout.as_secs(),
                    self.bulk_poll.as_secs_f64()
                ),
            ));
        }
        problems
    }
}

/// `62.0` for `v62.0`.
fn api_version_number(version: &str) -> Option<f64> {
    let number = version.strip_prefix('v')?;
    let (major, minor) = number.split_once('.')?;
    if major.is_empty()
        || minor.is_empty()
        || !major
            .bytes()
            .chain(minor.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    number.parse().ok()
}

/// Whether `name` can be a Salesforce object or field API name.
pub fn is_api_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SalesforceConfig, Vec<String>> {
        let env = |name: &str| match name {
            "SALESFORCE_CLIENT_SECRET" => Some("consumer-secret".to_string()),
            "SALESFORCE_ACCESS_TOKEN" => Some("00Dtoken".to_string()),
            _ => None,
        };
        let mut diags = Diags::new(text, "tideway.toml");
        let config = SalesforceConfig::parse("crm", text, &mut diags, &env);
        diags
            .finish(config)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_example_parses() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.instance_url(), "https://acme.my.salesforce.com");
        assert_eq!(config.login_url(), "https://acme.my.salesforce.com");
        assert_eq!(
            config.auth,
            Auth::ClientCredentials {
                client_id: "3MVG9consumer-key".into(),
                client_secret: Secret::new("consumer-secret"),
                login_url: None,
            }
        );
        assert_eq!(config.external_id_field, "External_Id__c");
        assert_eq!(
            config.group_external_id_field, "External_Id__c",
            "defaults to external_id_field"
        );
        assert_eq!(config.bulk_threshold, 500);
        assert!(config.problems().is_empty());
        assert!(!format!("{config:?}").contains("consumer-secret"));
    }

    #[test]
    fn defaults() {
        let text = "[destinations.crm]\ntype = \"salesforce\"\n\
                    instance_url = \"https://acme.my.salesforce.com/\"\n\
                    access_token = \"${SALESFORCE_ACCESS_TOKEN}\"\n";
        let config = parse(text).unwrap();
        assert_eq!(
            config,
            SalesforceConfig::new(
                "https://acme.my.salesforce.com/",
                Auth::AccessToken(Secret::new("00Dtoken"))
            )
        );
        assert_eq!(config.instance_url(), "https://acme.my.salesforce.com");
        assert_eq!(config.api_version, "v62.0");
        assert_eq!(config.object, "Contact");
        assert_eq!(config.group_object, "Account");
        assert_eq!(config.external_id_field, "Id");
        assert_eq!(config.bulk_threshold, 200);
        assert_eq!(config.concurrency, 2);
        assert_eq!(config.bulk_poll, Duration::from_secs(2));
    }

    #[test]
    fn every_problem_is_reported_at_its_line() {
        let text = r#"[destinations.crm]
type = "salesforce"
instance_url = "acme.my.salesforce.com"
client_id = "key"
client_secret = "plain-secret"
api_version = "62"
object = "My Object"
bulk_threshold = 20000
concurrency = 30
"#;
        let problems = parse(text).unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(
            problems[0].starts_with("tideway.toml:5:17: `client_secret` is a secret"),
            "{problems:#?}"
        );
        assert!(problems[1].starts_with("tideway.toml:3:16: `instance_url` `acme.my"));
        assert!(problems[2].starts_with("tideway.toml:6:15: `api_version` `62` is not"));
        assert!(problems[3].starts_with("tideway.toml:7:10: `object` `My Object`"));
        assert!(problems[4].starts_with("tideway.toml:8:18: `bulk_threshold` 20000"));
        assert!(problems[5].starts_with("tideway.toml:9:15: `concurrency` 30"));
    }

    #[test]
    fn credentials_are_required_once() {
        let none = "[destinations.crm]\ntype = \"salesforce\"\n\
                    instance_url = \"https://acme.my.salesforce.com\"\n";
        let problems = parse(none).unwrap_err().join("\n");
        assert!(
            problems.contains("set `client_id` and `client_secret`"),
            "{problems}"
        );
        let both =
            format!("{none}access_token = \"${{SALESFORCE_ACCESS_TOKEN}}\"\nclient_id = \"k\"\n");
        let problems = parse(&both).unwrap_err().join("\n");
        assert!(problems.contains("not both"), "{problems}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "[destinations.crm]\ntype = \"salesforce\"\n\
                    instance_url = \"https://acme.my.salesforce.com\"\n\
                    access_token = \"${SALESFORCE_ACCESS_TOKEN}\"\nobjekt = \"Lead\"\n";
        let problems = parse(text).unwrap_err().join("\n");
        assert!(problems.contains("unknown field `objekt`"), "{problems}");
    }

    #[test]
    fn api_versions() {
        assert_eq!(api_version_number("v62.0"), Some(62.0));
        assert_eq!(api_version_number("62.0"), None);
        assert_eq!(api_version_number("v62"), None);
        let mut config = SalesforceConfig::new(
            "https://x.my.salesforce.com",
            Auth::AccessToken(Secret::new("t")),
        );
        config.api_version = "v45.0".into();
        assert!(config.problems()[0].contains("too old"));
    }
}
