//! The `[destinations.NAME]` table of a Customer.io destination (`type = "customerio"`).
//!
//! ```toml
//! [destinations.crm]
//! type = "customerio"
//! site_id = "f1e2d3c4b5a697887766"          # Settings > API Credentials > Track API Keys
//! api_key = "${CUSTOMERIO_API_KEY}"         # the Track API key paired with the Site ID
//! # region = "us"                           # us (track.customer.io) | eu (track-eu.customer.io)
//! # api = "v2"                              # v2: POST /api/v2/batch | v1: one request per event
//! # object_type_id = "1"                    # the object type `group` calls write
//! # requests_per_second = 100               # Customer.io's fair-use limit
//! # concurrency = 4
//! # base_url = "http://127.0.0.1:4010"      # instead of the region's address (a fake)
//! ```

use serde::Deserialize;
use tideway_core::config::{Diags, Secret};
use toml::Spanned;

/// Customer.io's Track API fair-use limit, in requests per second, shared by every call made
/// with one workspace's credentials (v1 and v2 alike).
///
/// Customer.io's "Customer.io APIs" page gives 100 requests per second for live integrations and
/// backfills; the Track API reference (`journeys-track.json`, 2026) says 1000 and "not strictly
/// enforced". We default to the lower figure: a sync that stays under it is never throttled.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 100.0;

/// The object type that `group` calls create objects of, unless configured: Customer.io numbers
/// object types from 1, so the first type made in a workspace (often "Companies") is `"1"`.
pub const DEFAULT_OBJECT_TYPE_ID: &str = "1";

/// Requests in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// An example table, parsed by a test.
pub const EXAMPLE: &str = r#"
[destinations.crm]
type = "customerio"
site_id = "f1e2d3c4b5a697887766"
api_key = "${CUSTOMERIO_API_KEY}"
region = "eu"
api = "v2"
object_type_id = "1"
requests_per_second = 50
"#;

/// A checked `[destinations.NAME]` table with `type = "customerio"`: sends people, events and
/// objects to Customer.io's Track API.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerIoConfig {
    /// The workspace's Site ID (Settings > API Credentials > Track API Keys).
    pub site_id: String,
    /// The Track API key paired with the Site ID (not an App API key), from the environment.
    pub api_key: Secret,
    /// The account's data center: `us` (track.customer.io) or `eu` (track-eu.customer.io).
    pub region: Region,
    /// Overrides the address the region implies, e.g. `http://127.0.0.1:4010` for a fake.
    pub base_url: Option<String>,
    /// `v2` (default): up to 100 events per `POST /api/v2/batch`, objects supported. `v1`: one
    /// request per event (`PUT /api/v1/customers/{id}`, `POST /api/v1/customers/{id}/events`,
    /// `DELETE /api/v1/customers/{id}`).
    pub api: ApiVersion,
    /// The object type (a string-formatted integer: `"1"`, `"2"`, ...) `group` calls write.
    pub object_type_id: String,
    /// Requests per second for the workspace, shared by every sync using these credentials.
    pub requests_per_second: f64,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// A Customer.io data center.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    #[default]
    Us,
    Eu,
}

impl Region {
    /// The Track API address of the region.
    pub fn track_url(self) -> &'static str {
        match self {
            Region::Us => "https://track.customer.io",
            Region::Eu => "https://track-eu.customer.io",
        }
    }

    /// `us` or `eu`, as Customer.io spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Eu => "eu",
        }
    }
}

/// Which generation of the Track API to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    /// One request per event.
    V1,
    /// `POST /api/v2/batch`: many events per request, objects supported.
    #[default]
    V2,
}

/// The table as written; see the module docs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(rename = "type")]
    _kind: String,
    site_id: Spanned<String>,
    api_key: Spanned<String>,
    region: Option<Region>,
    base_url: Option<Spanned<String>>,
    api: Option<ApiVersion>,
    object_type_id: Option<Spanned<String>>,
    requests_per_second: Option<Spanned<f64>>,
    concurrency: Option<Spanned<usize>>,
}

/// A key of the table, for placing a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    SiteId,
    ApiKey,
    BaseUrl,
    ObjectTypeId,
    RequestsPerSecond,
    Concurrency,
}

impl CustomerIoConfig {
    /// A configuration with every default, for `site_id` and `api_key`.
    pub fn new(site_id: impl Into<String>, api_key: Secret) -> Self {
        CustomerIoConfig {
            site_id: site_id.into(),
            api_key,
            region: Region::default(),
            base_url: None,
            api: ApiVersion::default(),
            object_type_id: DEFAULT_OBJECT_TYPE_ID.to_string(),
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Checks `[destinations.NAME]` of `only` (a text where everything else is blanked),
    /// reporting every problem into `diags` at its key; `${VAR}` is read from `env`, and
    /// `api_key` must come from it.
    pub fn parse(
        name: &str,
        only: &str,
        diags: &mut Diags<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<CustomerIoConfig> {
        let raw: Raw = crate::config::parse_one(only, name, diags)?;
        let mut config = CustomerIoConfig::new(
            diags.plain(&raw.site_id, env).unwrap_or_default(),
            diags.secret("api_key", &raw.api_key, env),
        );
        config.region = raw.region.unwrap_or_default();
        config.api = raw.api.unwrap_or_default();
        if let Some(url) = &raw.base_url {
            config.base_url = diags.plain(url, env);
        }
        if let Some(id) = &raw.object_type_id {
            config.object_type_id = id.get_ref().clone();
        }
        if let Some(rate) = &raw.requests_per_second {
            config.requests_per_second = *rate.get_ref();
        }
        if let Some(n) = &raw.concurrency {
            config.concurrency = *n.get_ref();
        }
        for (field, message) in config.checks() {
            let span = match field {
                Field::SiteId => Some(raw.site_id.span()),
                // An empty key comes from the environment: the variable is set but empty.
                Field::ApiKey => Some(raw.api_key.span()),
                Field::BaseUrl => raw.base_url.as_ref().map(Spanned::span),
                Field::ObjectTypeId => raw.object_type_id.as_ref().map(Spanned::span),
                Field::RequestsPerSecond => raw.requests_per_second.as_ref().map(Spanned::span),
                Field::Concurrency => raw.concurrency.as_ref().map(Spanned::span),
            };
            if field == Field::ApiKey && !raw.api_key.get_ref().contains("${") {
                continue; // `diags.secret` already said to read it from the environment.
            }
            diags.at(span, message);
        }
        Some(config)
    }

    /// The Track API address: `base_url` if set (without a trailing `/`), else the region's.
    pub fn base_url(&self) -> String {
        match &self.base_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => self.region.track_url().to_string(),
        }
    }

    /// Every problem with the values (empty when usable), each naming the key, the bad value
    /// and what would be valid. [`CustomerIoConfig::parse`] reports these with their lines.
    pub fn problems(&self) -> Vec<String> {
        self.checks().into_iter().map(|(_, m)| m).collect()
    }

    fn checks(&self) -> Vec<(Field, String)> {
        let mut problems = Vec::new();
        if self.site_id.trim().is_empty() {
            problems.push((
                Field::SiteId,
                "`site_id` is empty; copy the Site ID from Customer.io's Settings > API \
                 Credentials > Track API Keys"
                    .to_string(),
            ));
        }
        if self.api_key.expose().trim().is_empty() {
            problems.push((
                Field::ApiKey,
                "`api_key` is empty; set it from the environment, e.g. \
                 `api_key = \"${CUSTOMERIO_API_KEY}\"`"
                    .to_string(),
            ));
        }
        if let Some(url) = &self.base_url
            && !matches!(reqwest::Url::parse(url), Ok(u) if u.scheme() == "http" || u.scheme() == "https")
        {
            problems.push((
                Field::BaseUrl,
                format!("`base_url` `{url}` is not an http(s) URL, e.g. `http://127.0.0.1:4010`"),
            ));
        }
        if self.object_type_id.is_empty()
            || !self.object_type_id.bytes().all(|b| b.is_ascii_digit())
        {
            problems.push((
                Field::ObjectTypeId,
                format!(
                    "`object_type_id` `{}` is not a string-formatted integer such as \"1\"",
                    self.object_type_id
                ),
            ));
        }
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            problems.push((
                Field::RequestsPerSecond,
                format!(
                    "`requests_per_second` {} must be above 0 (Customer.io's limit is {})",
                    self.requests_per_second, DEFAULT_REQUESTS_PER_SECOND
                ),
            ));
        }
        if !(1..=64).contains(&self.concurrency) {
            problems.push((
                Field::Concurrency,
                format!("`concurrency` {} must be from 1 to 64", self.concurrency),
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CustomerIoConfig, Vec<String>> {
        let env = |name: &str| (name == "CUSTOMERIO_API_KEY").then(|| "track-key".to_string());
        let mut diags = Diags::new(text, "tideway.toml");
        let config = CustomerIoConfig::parse("crm", text, &mut diags, &env);
        diags
            .finish(config)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_example_parses() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.site_id, "f1e2d3c4b5a697887766");
        assert_eq!(config.api_key.expose(), "track-key");
        assert_eq!(config.region, Region::Eu);
        assert_eq!(config.api, ApiVersion::V2);
        assert_eq!(config.requests_per_second, 50.0);
        assert_eq!(config.base_url(), "https://track-eu.customer.io");
        assert!(config.problems().is_empty());
        assert!(
            !format!("{config:?}").contains("track-key"),
            "the key is never shown"
        );
    }

    #[test]
    fn defaults() {
        let text = "[destinations.crm]\ntype = \"customerio\"\nsite_id = \"s\"\n\
                    api_key = \"${CUSTOMERIO_API_KEY}\"\n";
        let config = parse(text).unwrap();
        assert_eq!(config, CustomerIoConfig::new("s", Secret::new("track-key")));
        assert_eq!(config.region, Region::Us);
        assert_eq!(config.api, ApiVersion::V2);
        assert_eq!(config.object_type_id, "1");
        assert_eq!(config.requests_per_second, 100.0);
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.base_url(), "https://track.customer.io");
    }

    #[test]
    fn every_problem_is_reported_at_its_line() {
        let text = r#"[destinations.crm]
type = "customerio"
site_id = " "
api_key = "plain-key"
base_url = "track.customer.io"
object_type_id = "companies"
requests_per_second = 0
concurrency = 0
"#;
        let problems = parse(text).unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(
            problems[0].starts_with("tideway.toml:4:11: `api_key` is a secret"),
            "{problems:#?}"
        );
        assert!(problems[1].starts_with("tideway.toml:3:11: `site_id` is empty"));
        assert!(problems[2].starts_with("tideway.toml:5:12: `base_url` `track.customer.io`"));
        assert!(problems[3].contains("`object_type_id` `companies`"));
        assert!(problems[4].starts_with("tideway.toml:7:23: `requests_per_second` 0"));
        assert!(problems[5].starts_with("tideway.toml:8:15: `concurrency` 0"));
    }

    #[test]
    fn unknown_keys_and_values_are_refused() {
        let text = "[destinations.crm]\ntype = \"customerio\"\nsite_id = \"s\"\n\
                    api_key = \"${CUSTOMERIO_API_KEY}\"\nsiteid = 1\nregion = \"de\"\n";
        let problems = parse(text).unwrap_err().join("\n");
        assert!(problems.contains("unknown field `siteid`"), "{problems}");
        assert!(
            problems.contains("unknown variant `de`, expected `us` or `eu`"),
            "{problems}"
        );
    }

    #[test]
    fn problems_without_a_file() {
        let mut config = CustomerIoConfig::new("s", Secret::new(""));
        config.object_type_id = "x".into();
        assert_eq!(config.problems().len(), 2);
    }
}
