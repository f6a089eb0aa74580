//! Kustomer, built in: a source file needs only a key.
//!
//! ```toml
//! # sources/kustomer.toml
//! type = "kustomer"
//! api_key = "${KUSTOMER_API_KEY}"
//! # region = "eu"                          # us (default) or eu
//! # base_url = "http://127.0.0.1:8765/v1/"  # instead of a region: a proxy or a test server
//! # resources = ["customers", "conversations"]   # default: all of them
//! # requests_per_minute = 600               # the organization's budget (Kustomer limits per org per minute)
//! # lookback = "10m"                        # re-read this far before the last cursor
//! ```
//!
//! The resources and how each is read:
//!
//! | resource | request | incremental |
//! |---|---|---|
//! | customers | `POST customers/search` sorted by `customer_updated_at` | by `updatedAt` |
//! | conversations | `POST conversations/search` sorted by `conversation_updated_at` | by `updatedAt` |
//! | companies | `POST companies/search` sorted by `company_updated_at` | by `updatedAt` |
//! | messages | `GET conversations/{id}/messages` for each conversation read | with its conversation |
//! | notes | `GET customers/{id}/notes` for each customer read | with its customer |
//! | users, teams, tags | `GET users`, `teams`, `tags` | no: each run merges the whole list |
//!
//! Records are JSON:API documents: attributes become columns, relationships `<name>_id`
//! columns (see [`crate::jsonapi`]). Kustomer's real constraints shape the reads: a search
//! stops at 10,000 results and many records can share one `updatedAt`, so a run that reaches
//! the cap starts a new search at the last `updatedAt` and skips the records it already has
//! (no gap and no duplicate at ties or at the cap); requests follow `requests_per_minute`
//! instead of waiting for 429s; a field that is a dict in one record and a string in another
//! lands in different columns (see [`crate::normalize`]) and never fails a load.

use std::collections::BTreeMap;
use std::time::Duration;

use tideway_core::config::{Diags, Secret};

use crate::config::{
    Auth, Incremental, Method, Pagination, RawKustomer, Resource, RestSource, WriteDisposition,
    parse_base_url, parse_duration,
};

/// Every built-in resource, in load order.
pub const RESOURCES: &[&str] = &[
    "customers",
    "conversations",
    "companies",
    "messages",
    "notes",
    "users",
    "teams",
    "tags",
];

/// Regions and their API URLs.
pub const REGIONS: &[(&str, &str)] = &[
    ("us", "https://api.kustomerapp.com/v1/"),
    ("eu", "https://api.prod2.kustomerapp.com/v1/"),
];

/// Kustomer's search stops after this many results.
pub const SEARCH_CAP: u64 = 10_000;

/// The default request budget per minute (Kustomer's limit is per organization).
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 600;

/// The built-in resource `name` with pages of `page_size`.
pub fn resource(name: &str, page_size: u64, lookback: Duration) -> Option<Resource> {
    let searched = |kind: &str, field: &str| Resource {
        name: name.to_string(),
        path: format!("{kind}/search"),
        method: Method::Post,
        params: BTreeMap::from([("pageSize".to_string(), page_size.to_string())]),
        body: Some(format!(
            r#"{{"and":[{{"{field}":{{"gte":"{{cursor}}"}}}}],"sort":[{{"{field}":"asc"}}]}}"#
        )),
        records: vec!["data".into()],
        primary_key: Some("id".into()),
        write: WriteDisposition::Merge,
        pagination: Pagination::JsonLink {
            next: "links.next".into(),
        },
        incremental: Some(Incremental {
            cursor: vec!["attributes".into(), "updatedAt".into()],
            param: None,
            initial: "1970-01-01T00:00:00.000Z".into(),
            lookback,
            restart_after: Some(SEARCH_CAP),
            sorted: true,
        }),
        jsonapi: true,
        parent: None,
        line: 0,
    };
    let listed = |path: &str, parent: Option<&str>| Resource {
        name: name.to_string(),
        path: path.to_string(),
        method: Method::Get,
        params: BTreeMap::from([("pageSize".to_string(), page_size.to_string())]),
        body: None,
        records: vec!["data".into()],
        primary_key: Some("id".into()),
        write: WriteDisposition::Merge,
        pagination: Pagination::JsonLink {
            next: "links.next".into(),
        },
        incremental: None,
        jsonapi: true,
        parent: parent.map(str::to_string),
        line: 0,
    };
    Some(match name {
        "customers" => searched("customers", "customer_updated_at"),
        "conversations" => searched("conversations", "conversation_updated_at"),
        "companies" => searched("companies", "company_updated_at"),
        "messages" => listed("conversations/{parent.id}/messages", Some("conversations")),
        "notes" => listed("customers/{parent.id}/notes", Some("customers")),
        "users" => listed("users", None),
        "teams" => listed("teams", None),
        "tags" => listed("tags", None),
        _ => return None,
    })
}

/// The REST description of a Kustomer file.
pub(crate) fn rest_source(
    file: &RawKustomer,
    diags: &mut Diags<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<RestSource> {
    let token = match &file.api_key {
        Some(key) => diags.secret("api_key", key, env),
        None => {
            diags.at(
                None,
                "a Kustomer source needs `api_key = \"${KUSTOMER_API_KEY}\"`",
            );
            Secret::new("")
        }
    };
    let base_url = match (&file.base_url, &file.region) {
        (Some(url), _) => parse_base_url(url, diags, env),
        (None, Some(region)) => match REGIONS.iter().find(|(r, _)| r == region.get_ref()) {
            Some((_, url)) => url::Url::parse(url).ok(),
            None => {
                diags.at(
                    Some(region.span()),
                    format!(
                        "unknown Kustomer region `{}`; known regions: {}",
                        region.get_ref(),
                        REGIONS
                            .iter()
                            .map(|(r, _)| *r)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                None
            }
        },
        (None, None) => url::Url::parse(REGIONS[0].1).ok(),
    };
    let lookback = match &file.lookback {
        None => Duration::ZERO,
        Some(l) => parse_duration(l.get_ref()).unwrap_or_else(|msg| {
            diags.at(Some(l.span()), msg);
            Duration::ZERO
        }),
    };
    let page_size = file.page_size.unwrap_or(100).clamp(1, 1000);
    let names: Vec<String> = match &file.resources {
        None => RESOURCES.iter().map(|r| r.to_string()).collect(),
        Some(list) => list.iter().map(|r| r.get_ref().clone()).collect(),
    };
    let mut resources = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match resource(name, page_size, lookback) {
            Some(r) => resources.push(r),
            None => {
                let span = file.resources.as_ref().map(|l| l[i].span());
                diags.at(
                    span,
                    format!(
                        "unknown Kustomer resource `{name}`; known resources: {}",
                        RESOURCES.join(", ")
                    ),
                );
            }
        }
    }
    // A child resource needs its parent.
    for r in &resources {
        if let Some(p) = &r.parent
            && !names.contains(p)
        {
            diags.at(
                    None,
                    format!(
                        "Kustomer `{}` are read for each of the `{p}` a run reads: add `\"{p}\"` to `resources`",
                        r.name
                    ),
                );
        }
    }
    resources.sort_by_key(|r| RESOURCES.iter().position(|n| *n == r.name));
    Some(RestSource {
        base_url: base_url?,
        auth: Auth::Bearer { token },
        requests_per_minute: Some(
            file.requests_per_minute
                .unwrap_or(DEFAULT_REQUESTS_PER_MINUTE),
        ),
        concurrency: file.concurrency.unwrap_or(4).max(1),
        max_attempts: 8,
        timeout: Duration::from_secs(60),
        headers: BTreeMap::new(),
        max_depth: file.max_depth.unwrap_or(5),
        resources,
    })
}
