//! Source files: every problem reported at once, with file:line, the bad value and the
//! valid choices.

use tideway_extract::SourceConfig;

fn errors(text: &str) -> String {
    let env = |v: &str| (v == "TOKEN").then(|| "t".to_string());
    SourceConfig::parse(text, "sources/crm.toml", &env)
        .unwrap_err()
        .to_string()
}

#[test]
fn an_unknown_pagination_kind_lists_the_valid_ones() {
    let text = r#"type = "rest"
base_url = "https://api.example.com"
[resources.contacts]
path = "contacts"
primary_key = "id"
pagination = { kind = "pages" }
"#;
    let e = errors(text);
    assert!(e.contains("sources/crm.toml:6:"), "{e}");
    assert!(
        e.contains("unknown variant `pages`, expected one of `none`, `json_link`, `link_header`, `cursor`, `offset`, `page_number`"),
        "{e}"
    );
}

#[test]
fn a_merged_resource_without_a_primary_key_is_refused() {
    let text = r#"type = "rest"
base_url = "https://api.example.com"
[resources.contacts]
path = "contacts"
"#;
    let e = errors(text);
    assert!(e.contains("sources/crm.toml:3:1: resource `contacts` is merged (the default `write`) but has no `primary_key`"), "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"type = "rest"
base_url = "ftp://files.example.com"
[auth]
kind = "bearer"
token = "in-clear"
[resources.notes]
path = "notes"
primary_key = "id"
parent = "contact"
write = "append"
incremental = { cursor = "updated_at", lookback = "1h" }
"#;
    let e = errors(text);
    assert!(e.starts_with("5 problems in the configuration"), "{e}");
    assert!(
        e.contains("sources/crm.toml:2:12: `base_url` must be http:// or https://, not `ftp://`"),
        "{e}"
    );
    assert!(e.contains("sources/crm.toml:5:9: `token` is a secret: read it from the environment, e.g. `token = \"${TOKEN}\"`"), "{e}");
    assert!(
        e.contains(
            "has parent `contact`, which is not another resource of this file; resources: notes"
        ),
        "{e}"
    );
    assert!(e.contains("the incremental cursor is sent nowhere"), "{e}");
    assert!(e.contains("is appended, so a `lookback`"), "{e}");
}

#[test]
fn unknown_types_regions_and_resources_name_the_valid_choices() {
    let e = errors("type = \"kustomr\"\n");
    assert!(
        e.contains(
            "sources/crm.toml:1:8: unknown source type `kustomr`; known types: kustomer, rest"
        ),
        "{e}"
    );
    let e = errors(
        "type = \"kustomer\"\napi_key = \"${TOKEN}\"\nregion = \"mars\"\nresources = [\"customers\", \"tickets\"]\n",
    );
    assert!(
        e.contains(":3:10: unknown Kustomer region `mars`; known regions: us, eu"),
        "{e}"
    );
    assert!(e.contains(":4:27: unknown Kustomer resource `tickets`; known resources: customers, conversations, companies, messages, notes, users, teams, tags"), "{e}");
}

#[test]
fn a_misspelled_key_is_an_error() {
    let e = errors("type = \"kustomer\"\napi_key = \"${TOKEN}\"\nrequests_per_minut = 5\n");
    assert!(
        e.contains(":3:1: unknown field `requests_per_minut`"),
        "{e}"
    );
}

#[test]
fn the_example_configs_in_the_docs_parse() {
    let env = |_: &str| Some("secret".to_string());
    let rest = r#"type = "rest"
base_url = "https://api.example.com/v2/"
requests_per_minute = 600
concurrency = 4
[auth]
kind = "bearer"
token = "${EXAMPLE_TOKEN}"
[resources.contacts]
path = "contacts"
params = { limit = "100" }
records = "data"
primary_key = "id"
write = "merge"
pagination = { kind = "json_link", next = "links.next" }
incremental = { cursor = "updated_at", param = "updated_since", initial = "2020-01-01T00:00:00Z", lookback = "1h" }
[resources.notes]
path = "contacts/{parent.id}/notes"
parent = "contacts"
primary_key = "id"
"#;
    let s = SourceConfig::parse(rest, "sources/example.toml", &env).unwrap();
    assert_eq!(s.name, "example");
    assert_eq!(s.rest().unwrap().resources.len(), 2);
    assert_eq!(
        s.rest().unwrap().resources[1].parent.as_deref(),
        Some("contacts")
    );
    let k = SourceConfig::parse(
        "type = \"kustomer\"\napi_key = \"${KUSTOMER_API_KEY}\"\n",
        "sources/kustomer.toml",
        &env,
    )
    .unwrap();
    assert_eq!(
        k.rest().unwrap().base_url.as_str(),
        "https://api.kustomerapp.com/v1/"
    );
    assert_eq!(k.rest().unwrap().resources.len(), 8);
    assert!(format!("{k:?}").contains("***") && !format!("{k:?}").contains("secret"));
}
