//! The `[destinations.NAME]` table of a HubSpot destination (`type = "hubspot"`).
//!
//! ```toml
//! [destinations.crm]
//! type = "hubspot"
//! access_token = "${HUBSPOT_ACCESS_TOKEN}"  # a private app's access token (pat-...)
//! # contact_id_property = "email"           # or a custom unique-value contact property
//! # company_id_property = "domain"          # or a custom unique-value company property
//! # event_prefix = "pe1234567_"             # track: custom events pe{HubID}_{name}
//! # requests_per_second = 10                # 100 requests / 10 s (Free & Starter)
//! # concurrency = 4
//! # base_url = "http://127.0.0.1:4010"      # instead of https://api.hubapi.com (a fake)
//! ```
//!
//! The private app needs the scopes `crm.objects.contacts.write` and
//! `crm.objects.companies.write` (and `crm.objects.contacts.read` for the healthcheck).

use serde::Deserialize;
use tideway_core::config::{Diags, Secret};
use toml::Spanned;

/// HubSpot's API address.
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";

/// Requests per second for one HubSpot account, shared by every sync using its token.
///
/// HubSpot's "API usage guidelines and limits" give private apps a burst limit per rolling 10
/// seconds: 100 for Free and Starter accounts, 190 for Professional and Enterprise (raised from
/// 150 in the 2024 "Increasing our API limits" changelog), 250 with the API Limit Increase pack;
/// plus a daily limit (250,000 to 1,000,000 by tier). We default to the lowest burst limit,
/// 100 per 10 s: a sync that stays under it is never throttled on any tier. Raise it to 19 on
/// Professional or Enterprise.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 10.0;

/// The contact property that identifies a contact unless configured: HubSpot's batch upsert
/// takes `email` as the `idProperty` of contacts.
pub const DEFAULT_CONTACT_ID_PROPERTY: &str = "email";

/// The company property that identifies a company unless configured.
pub const DEFAULT_COMPANY_ID_PROPERTY: &str = "domain";

/// Requests in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// An example table, parsed by a test.
pub const EXAMPLE: &str = r#"
[destinations.crm]
type = "hubspot"
access_token = "${HUBSPOT_ACCESS_TOKEN}"
contact_id_property = "email"
company_id_property = "account_id"
event_prefix = "pe1234567_"
requests_per_second = 19
"#;

/// A checked `[destinations.NAME]` table with `type = "hubspot"`: upserts contacts and
/// companies through HubSpot's CRM v3 batch API and sends custom events.
#[derive(Debug, Clone, PartialEq)]
pub struct HubSpotConfig {
    /// A private app's access token (Settings > Integrations > Private Apps > Auth), from the
    /// environment.
    pub access_token: Secret,
    /// Overrides `https://api.hubapi.com`, e.g. `http://127.0.0.1:4010` for a fake.
    pub base_url: Option<String>,
    /// The unique-value contact property contacts are upserted by (`idProperty`).
    pub contact_id_property: String,
    /// The unique-value company property companies are upserted by (`idProperty`).
    pub company_id_property: String,
    /// `pe{HubID}_`: prefixed to a track's normalized event name to make the custom event's
    /// fully qualified name. Without it a track's `event` must already be one.
    pub event_prefix: Option<String>,
    /// Requests per second for the account, shared by every sync using the token.
    pub requests_per_second: f64,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// The table as written; see the module docs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(rename = "type")]
    _kind: String,
    access_token: Spanned<String>,
    base_url: Option<Spanned<String>>,
    contact_id_property: Option<Spanned<String>>,
    company_id_property: Option<Spanned<String>>,
    event_prefix: Option<Spanned<String>>,
    requests_per_second: Option<Spanned<f64>>,
    concurrency: Option<Spanned<usize>>,
}

/// A key of the table, for placing a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    AccessToken,
    BaseUrl,
    ContactIdProperty,
    CompanyIdProperty,
    EventPrefix,
    RequestsPerSecond,
    Concurrency,
}

impl HubSpotConfig {
    /// A configuration with every default, for `access_token`.
    pub fn new(access_token: Secret) -> Self {
        HubSpotConfig {
            access_token,
            base_url: None,
            contact_id_property: DEFAULT_CONTACT_ID_PROPERTY.to_string(),
            company_id_property: DEFAULT_COMPANY_ID_PROPERTY.to_string(),
            event_prefix: None,
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Checks `[destinations.NAME]` of `only` (a text where everything else is blanked),
    /// reporting every problem into `diags` at its key; `${VAR}` is read from `env`, and
    /// `access_token` must come from it.
    pub fn parse(
        name: &str,
        only: &str,
        diags: &mut Diags<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<HubSpotConfig> {
        let raw: Raw = crate::config::parse_one(only, name, diags)?;
        let mut config = HubSpotConfig::new(diags.secret("access_token", &raw.access_token, env));
        if let Some(url) = &raw.base_url {
            config.base_url = diags.plain(url, env);
        }
        if let Some(p) = &raw.contact_id_property {
            config.contact_id_property = p.get_ref().clone();
        }
        if let Some(p) = &raw.company_id_property {
            config.company_id_property = p.get_ref().clone();
        }
        if let Some(p) = &raw.event_prefix {
            config.event_prefix = Some(p.get_ref().clone());
        }
        if let Some(rate) = &raw.requests_per_second {
            config.requests_per_second = *rate.get_ref();
        }
        if let Some(n) = &raw.concurrency {
            config.concurrency = *n.get_ref();
        }
        for (field, message) in config.checks() {
            let span = match field {
                Field::AccessToken => Some(raw.access_token.span()),
                Field::BaseUrl => raw.base_url.as_ref().map(Spanned::span),
                Field::ContactIdProperty => raw.contact_id_property.as_ref().map(Spanned::span),
                Field::CompanyIdProperty => raw.company_id_property.as_ref().map(Spanned::span),
                Field::EventPrefix => raw.event_prefix.as_ref().map(Spanned::span),
                Field::RequestsPerSecond => raw.requests_per_second.as_ref().map(Spanned::span),
                Field::Concurrency => raw.concurrency.as_ref().map(Spanned::span),
            };
            if field == Field::AccessToken && !raw.access_token.get_ref().contains("${") {
                continue; // `diags.secret` already said to read it from the environment.
            }
            diags.at(span, message);
        }
        Some(config)
    }

    /// The API address: `base_url` if set (without a trailing `/`), else HubSpot's.
    pub fn base_url(&self) -> String {
        match &self.base_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => DEFAULT_BASE_URL.to_string(),
        }
    }

    /// Every problem with the values (empty when usable), each naming the key, the bad value
    /// and what would be valid. [`HubSpotConfig::parse`] reports these with their lines.
    pub fn problems(&self) -> Vec<String> {
        self.checks().into_iter().map(|(_, m)| m).collect()
    }

    fn checks(&self) -> Vec<(Field, String)> {
        let mut problems = Vec::new();
        if self.access_token.expose().trim().is_empty() {
            problems.push((
                Field::AccessToken,
                "`access_token` is empty; set it from the environment, e.g. \
                 `access_token = \"${HUBSPOT_ACCESS_TOKEN}\"` (a private app's access token)"
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
        for (field, key, value) in [
            (
                Field::ContactIdProperty,
                "contact_id_property",
                &self.contact_id_property,
            ),
            (
                Field::CompanyIdProperty,
                "company_id_property",
                &self.company_id_property,
            ),
        ] {
            if !is_property_name(value) {
                problems.push((
                    field,
                    format!(
                        "`{key}` `{value}` is not a HubSpot property's internal name (lower-case \
                         letters, digits and `_`, starting with a letter), e.g. `account_id`"
                    ),
                ));
            }
        }
        if let Some(prefix) = &self.event_prefix
            && !is_event_prefix(prefix)
        {
            problems.push((
                Field::EventPrefix,
                format!(
                    "`event_prefix` `{prefix}` is not `pe{{HubID}}_`, e.g. `pe1234567_` for the \
                     HubSpot account 1234567"
                ),
            ));
        }
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            problems.push((
                Field::RequestsPerSecond,
                format!(
                    "`requests_per_second` {} must be above 0 (HubSpot's lowest limit is {} per \
                     second: 100 per 10 seconds)",
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

/// Whether `name` is written the way HubSpot writes property internal names.
pub fn is_property_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `prefix` is `pe{HubID}_`.
pub fn is_event_prefix(prefix: &str) -> bool {
    prefix
        .strip_prefix("pe")
        .and_then(|rest| rest.strip_suffix('_'))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HubSpotConfig, Vec<String>> {
        let env =
            |name: &str| (name == "HUBSPOT_ACCESS_TOKEN").then(|| "pat-na1-token".to_string());
        let mut diags = Diags::new(text, "tideway.toml");
        let config = HubSpotConfig::parse("crm", text, &mut diags, &env);
        diags
            .finish(config)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_example_parses() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.access_token.expose(), "pat-na1-token");
        assert_eq!(config.contact_id_property, "email");
        assert_eq!(config.company_id_property, "account_id");
        assert_eq!(config.event_prefix.as_deref(), Some("pe1234567_"));
        assert_eq!(config.requests_per_second, 19.0);
        assert_eq!(config.base_url(), "https://api.hubapi.com");
        assert!(config.problems().is_empty());
        assert!(
            !format!("{config:?}").contains("pat-na1-token"),
            "the token is never shown"
        );
    }

    #[test]
    fn defaults() {
        let text = "[destinations.crm]\ntype = \"hubspot\"\n\
                    access_token = \"${HUBSPOT_ACCESS_TOKEN}\"\n";
        let config = parse(text).unwrap();
        assert_eq!(config, HubSpotConfig::new(Secret::new("pat-na1-token")));
        assert_eq!(config.contact_id_property, "email");
        assert_eq!(config.company_id_property, "domain");
        assert_eq!(config.event_prefix, None);
        assert_eq!(config.requests_per_second, 10.0);
        assert_eq!(config.concurrency, 4);
    }

    #[test]
    fn every_problem_is_reported_at_its_line() {
        let text = r#"[destinations.crm]
type = "hubspot"
access_token = "pat-in-clear"
base_url = "api.hubapi.com"
contact_id_property = "Email"
company_id_property = ""
event_prefix = "1234567"
requests_per_second = 0
concurrency = 0
"#;
        let problems = parse(text).unwrap_err();
        assert_eq!(problems.len(), 7, "{problems:#?}");
        assert!(
            problems[0].starts_with("tideway.toml:3:16: `access_token` is a secret"),
            "{problems:#?}"
        );
        assert!(problems[1].starts_with("tideway.toml:4:12: `base_url` `api.hubapi.com`"));
        assert!(problems[2].starts_with("tideway.toml:5:23: `contact_id_property` `Email`"));
        assert!(problems[3].contains("`company_id_property` ``"));
        assert!(problems[4].contains("`event_prefix` `1234567` is not `pe{HubID}_`"));
        assert!(problems[5].starts_with("tideway.toml:8:23: `requests_per_second` 0"));
        assert!(problems[6].starts_with("tideway.toml:9:15: `concurrency` 0"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "[destinations.crm]\ntype = \"hubspot\"\n\
                    access_token = \"${HUBSPOT_ACCESS_TOKEN}\"\napi_key = \"x\"\n";
        let problems = parse(text).unwrap_err().join("\n");
        assert!(problems.contains("unknown field `api_key`"), "{problems}");
    }

    #[test]
    fn names() {
        assert!(is_property_name("account_id"));
        assert!(!is_property_name("_x"));
        assert!(!is_property_name("Account"));
        assert!(is_event_prefix("pe42_"));
        assert!(!is_event_prefix("pe_"));
        assert!(!is_event_prefix("pe42"));
    }
}
