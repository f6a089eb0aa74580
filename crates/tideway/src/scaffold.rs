//! `tideway init`: a new project with a commented example of each kind of file.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::project::PROJECT_FILE;

pub const PROJECT_TOML: &str = r#"# Tideway project file. Every key is optional; unknown keys are errors.
# Secrets never go in this file: write "${ENV_VAR}" and set the variable.

[project]
name = "{name}"

[lake]
# Where the Delta tables live: a directory (relative to this file) or an object store URL
# (s3://bucket/prefix, gs://bucket/prefix, az://container/prefix; needs a build with the
# `cloud` feature).
location = ".tideway/lake"
# Options for the object store, e.g. for S3:
# storage = { AWS_REGION = "eu-west-1", AWS_ACCESS_KEY_ID = "${AWS_ACCESS_KEY_ID}", AWS_SECRET_ACCESS_KEY = "${AWS_SECRET_ACCESS_KEY}" }

[collect]
# `tideway serve` answers the Segment / RudderStack HTTP API here.
# listen = "127.0.0.1:8080"
# Limits (defaults break no SDK): max_event_kb = 32, max_request_mb = 4, log_budget_mb = 1024
# timestamps = "segment"        # or "as-sent" (RudderStack's option)
# Each source has a write key; its events land in the lake schema of the same name
# (web.tracks, web.identifies, web.users, web.pages, one table per track event...).
# [collect.sources.web]
# write_key = "wk_web_change_me"          # browser keys are public anyway
# [collect.sources.backend]
# write_key = "${BACKEND_WRITE_KEY}"

# Destinations that syncs (syncs/*.toml) send to, by name.
# [destinations.crm]
# type = "webhook"                        # or customerio
# url = "https://hooks.example.com/tideway"
# secret = "${CRM_WEBHOOK_SECRET}"        # signs each body: X-Tideway-Signature: sha256=<hmac>
"#;

const FILES: &[(&str, &str)] = &[
    (
        "sources/kustomer.toml.example",
        r#"# An extract source: one file per source. Rename to kustomer.toml to enable.
# type = "kustomer"
# api_key = "${KUSTOMER_API_KEY}"
# resources = ["customers", "conversations", "messages"]
"#,
    ),
    (
        "sources/rest_api.toml.example",
        r#"# Any REST API, declared. Rename to crm.toml: its tables land in the schema `crm`.
# type = "rest"
# base_url = "https://api.example.com/v2/"
# requests_per_minute = 600
#
# [auth]
# kind = "bearer"                 # bearer | basic | api_key | oauth2 | none
# token = "${CRM_TOKEN}"
#
# [resources.contacts]
# path = "contacts"
# records = "data"                # where the list is in a page ("" for the page itself)
# primary_key = "id"
# pagination = { kind = "cursor", cursor_path = "meta.next_cursor", param = "cursor" }
# incremental = { cursor = "updated_at", param = "updated_since", lookback = "10m" }
#
# [resources.notes]               # one request per contact
# path = "contacts/{parent.id}/notes"
# parent = "contacts"
# primary_key = "id"
"#,
    ),
    (
        "models/customer_health.sql.example",
        r#"-- A SQL model: one SELECT per file. It builds the table <folder>.<file name>
-- (models/customer_health.sql builds models.customer_health; `schema` and `name` below
-- override that). Rename to customer_health.sql to enable; `tideway compile` checks it,
-- `tideway run` builds it. dbt's {{ ref('m') }} / {{ config(...) }} and Datacoral's
-- @matview-* annotations work too.
/* tideway
materialized = "table"          # table | view | incremental (with time_column or unique_key)
interval = "1h"                 # how often its window closes: 15m, 1h, 1d, ...
owner = "customer-success"
description = "Events in the last 30 days per customer."
[tests]
customer_id = ["not_null", "unique"]
*/
SELECT c.id AS customer_id, count(t.message_id) AS events_30d
FROM crm.customers c
LEFT JOIN events.tracks t ON t.user_id = c.id AND t.timestamp > now() - INTERVAL '30 days'
GROUP BY c.id
"#,
    ),
    (
        "syncs/health_to_crm.toml.example",
        r#"# A reverse-ETL sync: the new and changed rows of a table or model become events.
# Rename to health_to_crm.toml to enable; `tideway sync plan health_to_crm` shows what it sends.
source = "marts.customer_health"      # a lake table or a model's table
key = "customer_id"                   # one row per key (or a list of columns)
destination = "crm"                   # a [destinations.NAME] in tideway.toml
type = "identify"                     # identify | track (with event = "...") | group
transformations = ["example"]         # transformations/example.js, run in order
backfill = "all"                      # first run: all | skip_existing | since:2025-01-01T00:00:00Z
on_delete = "ignore"                  # ignore | delete | clear_fields | event:<name>

[mapping]
include = ["health_score", "health_bucket", "lifetime_value"]
rename = { health_score = "health.score", lifetime_value = "ltv" }
constants = { source = "tideway" }
"#,
    ),
    (
        "transformations/example.js.example",
        r#"// A transformation: called with each event before delivery; return it, change it,
// or return nothing to drop it. Rename to example.js to enable.
export function transformEvent(event, metadata) {
  if (event.traits && event.traits.email) {
    event.traits.email = event.traits.email.toLowerCase();
  }
  return event;
}
"#,
    ),
    ("seeds/.gitkeep", ""),
    (".gitignore", ".tideway/\n"),
];

/// Scaffolds a project in `dir`; refuses to touch an existing project.
pub fn init(dir: &Path) -> Result<()> {
    let file = dir.join(PROJECT_FILE);
    if file.exists() {
        bail!(
            "`{}` already exists; this directory is a project already",
            file.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let name = std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tideway".into());
    write(&file, &PROJECT_TOML.replace("{name}", &name))?;
    for (path, contents) in FILES {
        write(&dir.join(path), contents)?;
    }
    println!("created a Tideway project in {}", dir.display());
    println!("next: `tideway lake import <file.csv> --table raw.my_table`, then `tideway tables`");
    Ok(())
}

fn write(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create `{}`", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("cannot write `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaffolded_project_file_parses() {
        let text = PROJECT_TOML.replace("{name}", "x");
        let config =
            tideway_core::config::ProjectConfig::parse(&text, "tideway.toml", &|_| None).unwrap();
        assert_eq!(config.name.as_deref(), Some("x"));
    }

    #[test]
    fn the_example_sync_and_destination_parse_once_enabled() {
        let toml = PROJECT_TOML
            .replace("{name}", "x")
            .replace("# [destinations", "[destinations");
        let toml = toml
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(kv)
                    if ["type =", "url =", "secret ="]
                        .iter()
                        .any(|k| kv.starts_with(k)) =>
                {
                    kv
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let env = |v: &str| (v == "CRM_WEBHOOK_SECRET").then(|| "s".to_string());
        let destinations =
            tideway_activate::config::destinations(&toml, "tideway.toml", &env).unwrap();
        assert!(destinations.ready.contains_key("crm"));
        let sync = FILES
            .iter()
            .find(|(p, _)| p.starts_with("syncs/"))
            .unwrap()
            .1;
        let config = tideway_activate::SyncConfig::parse(
            sync,
            "syncs/health_to_crm.toml",
            &["crm".to_string()],
            &["example".to_string()],
        )
        .unwrap();
        assert_eq!(config.key, vec!["customer_id".to_string()]);
    }
}
