//! Declarative REST sources against a small API that pages every way the config allows.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tideway_extract::{Extractor, RunOptions, SourceConfig};
use tideway_lake::{Lake, SqlOutput};

const TOTAL: usize = 95;

fn item(i: usize) -> Value {
    json!({"id": i, "name": format!("item {i}"), "updated_at": format!("2025-01-01T00:{:02}:00Z", i % 60),
           "tags": (0..i % 3).map(|k| format!("t{k}")).collect::<Vec<_>>()})
}

fn authorized(headers: &HeaderMap, q: &BTreeMap<String, String>) -> bool {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    auth == Some("Bearer tok")
        || auth == Some("Bearer oauth-access")
        || auth == Some("Basic dXNlcjpwdw==") // user:pw
        || headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some("k1")
        || q.get("api_key").map(String::as_str) == Some("k2")
}

async fn items(headers: HeaderMap, Query(q): Query<BTreeMap<String, String>>) -> Response {
    if !authorized(&headers, &q) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(10);
    let all: Vec<Value> = (0..TOTAL).map(item).collect();
    let slice = |start: usize| {
        all.iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect::<Vec<_>>()
    };
    match q.get("style").map(String::as_str) {
        Some("offset") => {
            let offset: usize = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
            axum::Json(json!({"results": slice(offset), "total": TOTAL})).into_response()
        }
        Some("page") => {
            let page: usize = q.get("p").and_then(|v| v.parse().ok()).unwrap_or(1);
            axum::Json(json!({"items": slice((page - 1) * limit)})).into_response()
        }
        Some("cursor") => {
            let start: usize = q.get("after").and_then(|v| v.parse().ok()).unwrap_or(0);
            let next = (start + limit < TOTAL).then(|| (start + limit).to_string());
            axum::Json(json!({"data": slice(start), "meta": {"next": next}})).into_response()
        }
        Some("link") => {
            let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
            let mut r = axum::Json(slice((page - 1) * limit)).into_response();
            if page * limit < TOTAL {
                let link = format!(
                    "</items?style=link&limit={limit}&page={}>; rel=\"next\"",
                    page + 1
                );
                r.headers_mut().insert("link", link.parse().unwrap());
            }
            r
        }
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn token(body: String) -> Response {
    if body.contains("client_secret=s3cret") && body.contains("grant_type=client_credentials") {
        axum::Json(json!({"access_token": "oauth-access", "expires_in": 3600})).into_response()
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

async fn serve() -> String {
    let app = Router::new()
        .route("/items", get(items))
        .route("/token", post(token));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn load(base: &str, auth: &str, resource: &str) -> Lake {
    let text = format!("type = \"rest\"\nbase_url = \"{base}\"\n{auth}\n{resource}");
    let env = |v: &str| match v {
        "TOKEN" => Some("tok".to_string()),
        "PW" => Some("pw".to_string()),
        "KEY1" => Some("k1".to_string()),
        "KEY2" => Some("k2".to_string()),
        "SECRET" => Some("s3cret".to_string()),
        _ => None,
    };
    let source = SourceConfig::parse(&text, "sources/api.toml", &env)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let dir = tempfile::tempdir().unwrap().keep();
    let lake = Lake::open(dir.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    Extractor::new(lake.clone(), source, RunOptions::default())
        .unwrap()
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    lake
}

async fn ids(lake: &Lake, table: &str) -> (i64, i64) {
    let key = if table.ends_with("__tags") {
        "_tideway_id"
    } else {
        "id"
    };
    let SqlOutput::Rows(r) = lake
        .sql(&format!(
            "SELECT count(*) AS n, count(DISTINCT {key}) AS d FROM {table}"
        ))
        .await
        .unwrap()
    else {
        panic!("no rows")
    };
    use deltalake::arrow::array::AsArray;
    use deltalake::arrow::datatypes::Int64Type;
    let b = &r.batches[0];
    (
        b.column(0).as_primitive::<Int64Type>().value(0),
        b.column(1).as_primitive::<Int64Type>().value(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pagination_kind_reads_every_record_once() {
    let base = serve().await;
    let cases = [
        (
            "[auth]\nkind = \"bearer\"\ntoken = \"${TOKEN}\"",
            "[resources.items]\npath = \"items\"\nparams = { style = \"offset\" }\nrecords = \"results\"\nprimary_key = \"id\"\npagination = { kind = \"offset\", limit = 10, total_path = \"total\" }",
        ),
        (
            "[auth]\nkind = \"basic\"\nusername = \"user\"\npassword = \"${PW}\"",
            "[resources.items]\npath = \"items\"\nparams = { style = \"page\", limit = 10 }\nrecords = \"items\"\nprimary_key = \"id\"\npagination = { kind = \"page_number\", param = \"p\" }",
        ),
        (
            "[auth]\nkind = \"api_key\"\nname = \"x-api-key\"\nvalue = \"${KEY1}\"",
            "[resources.items]\npath = \"items\"\nparams = { style = \"cursor\", limit = 10 }\nrecords = \"data\"\nprimary_key = \"id\"\npagination = { kind = \"cursor\", cursor_path = \"meta.next\", param = \"after\" }",
        ),
        (
            "[auth]\nkind = \"api_key\"\nname = \"api_key\"\nvalue = \"${KEY2}\"\nlocation = \"query\"",
            "[resources.items]\npath = \"items\"\nparams = { style = \"link\", limit = 10 }\nrecords = \"\"\nprimary_key = \"id\"\nwrite = \"append\"\npagination = { kind = \"link_header\" }",
        ),
    ];
    for (auth, resource) in cases {
        let lake = load(&base, auth, resource).await;
        assert_eq!(
            ids(&lake, "api.items").await,
            (TOTAL as i64, TOTAL as i64),
            "{auth}\n{resource}"
        );
        // Lists of scalars became a child table with a `value` column.
        let SqlOutput::Rows(r) = lake
            .sql("SELECT count(*) AS n FROM api.items__tags")
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(r.num_rows(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_client_credentials_fetch_a_token_first() {
    let base = serve().await;
    let auth = format!(
        "[auth]\nkind = \"oauth2\"\ntoken_url = \"{base}/token\"\nclient_id = \"c\"\nclient_secret = \"${{SECRET}}\""
    );
    let lake = load(
        &base,
        &auth,
        "[resources.items]\npath = \"items\"\nparams = { style = \"offset\" }\nrecords = \"results\"\nprimary_key = \"id\"\npagination = { kind = \"offset\", limit = 10 }",
    )
    .await;
    assert_eq!(ids(&lake, "api.items").await, (TOTAL as i64, TOTAL as i64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_reloads_the_whole_table_every_run() {
    let base = serve().await;
    let text = format!(
        "type = \"rest\"\nbase_url = \"{base}\"\n[auth]\nkind = \"bearer\"\ntoken = \"${{TOKEN}}\"\n[resources.items]\npath = \"items\"\nparams = {{ style = \"offset\" }}\nrecords = \"results\"\nwrite = \"replace\"\npagination = {{ kind = \"offset\", limit = 10 }}"
    );
    let env = |v: &str| (v == "TOKEN").then(|| "tok".to_string());
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), Default::default())
        .await
        .unwrap();
    for _ in 0..2 {
        let source = SourceConfig::parse(&text, "sources/api.toml", &env).unwrap();
        Extractor::new(lake.clone(), source, RunOptions::default())
            .unwrap()
            .run()
            .await
            .unwrap();
        assert_eq!(ids(&lake, "api.items").await, (TOTAL as i64, TOTAL as i64));
        assert_eq!(
            ids(&lake, "api.items__tags").await.0,
            (0..TOTAL).map(|i| i % 3).sum::<usize>() as i64
        );
    }
}
