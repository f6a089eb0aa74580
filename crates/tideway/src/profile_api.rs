//! The Profile API of `tideway serve`, modelled on Segment's: `GET /v1/profiles/{type}:{value}`
//! answers a profile's identifiers and traits from the in-memory [`ProfileIndex`], rebuilt
//! whenever a unify run or a trait table commits. Behind an admin token (HTTP Basic with the
//! token as user, as Segment's Profile API takes it, or `Authorization: Bearer TOKEN`).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::json;
use tideway_lake::Lake;
use tideway_unify::index::ProfileIndex;

/// The environment variable holding the admin token; the API is off without it.
pub const TOKEN_VAR: &str = "TIDEWAY_ADMIN_TOKEN";

/// A profile as the API answers it, borrowed from the index.
#[derive(serde::Serialize)]
struct Answer<'a> {
    profile_id: &'a str,
    identifiers: Vec<IdentifierRef<'a>>,
    traits: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(serde::Serialize)]
struct IdentifierRef<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    value: &'a str,
}

#[derive(Clone)]
struct Api {
    index: Arc<RwLock<Arc<ProfileIndex>>>,
    token: Arc<str>,
}

/// The API's routes, and the task that keeps its index fresh (polling the lake every
/// `every`).
pub async fn routes(
    lake: Lake,
    token: String,
    every: Duration,
) -> anyhow::Result<(Router, tokio::task::JoinHandle<()>)> {
    let index = Arc::new(RwLock::new(Arc::new(ProfileIndex::load(&lake).await?)));
    let api = Api {
        index: index.clone(),
        token: token.into(),
    };
    let refresh = tokio::spawn(async move {
        let mut seen = fingerprint(&lake).await;
        loop {
            tokio::time::sleep(every).await;
            let now = fingerprint(&lake).await;
            if now == seen {
                continue;
            }
            match ProfileIndex::load(&lake).await {
                Ok(fresh) => {
                    tracing::info!(profiles = fresh.len(), "profile index refreshed");
                    *index.write().expect("index lock poisoned") = Arc::new(fresh);
                    seen = now;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "profile index refresh failed; keeping the last one")
                }
            }
        }
    });
    let router = Router::new()
        .route("/v1/profiles/{key}", get(lookup))
        .with_state(api);
    Ok((router, refresh))
}

/// The versions of every table of the `profiles` schema: any commit changes it.
async fn fingerprint(lake: &Lake) -> Vec<(String, u64)> {
    let _ = lake.refresh().await;
    match lake.infos().await {
        Ok(infos) => infos
            .into_iter()
            .filter(|i| i.name.starts_with("profiles."))
            .map(|i| (i.name, i.version))
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub(crate) fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let Some(bearer) = value.strip_prefix("Bearer ") {
        return bearer.trim() == token;
    }
    if let Some(basic) = value.strip_prefix("Basic ") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
            return false;
        };
        let text = String::from_utf8_lossy(&decoded);
        return text.split(':').next() == Some(token);
    }
    false
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

async fn lookup(State(api): State<Api>, headers: HeaderMap, Path(key): Path<String>) -> Response {
    if !authorized(&headers, &api.token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "the Profile API needs the admin token (${TOKEN_VAR}) as HTTP Basic user or Bearer token"
            ),
        );
    }
    let Some((kind, value)) = key.split_once(':') else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_key",
            format!(
                "`{key}` is not `type:value` (e.g. `email:ann@example.com`, `user_id:u1`, `profile_id:prof_...`)"
            ),
        );
    };
    let index = api.index.read().expect("index lock poisoned").clone();
    // E-mails are stored lower-cased and trimmed.
    let found = index
        .lookup(kind, value)
        .or_else(|| index.lookup(kind, &value.trim().to_lowercase()));
    match found {
        // Serialized from the index as it is: nothing of the profile is copied first.
        Some(p) => axum::Json(Answer {
            profile_id: &p.id,
            identifiers: p
                .ids
                .iter()
                .map(|(kind, value)| IdentifierRef { kind, value })
                .collect(),
            traits: &p.traits,
        })
        .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no profile holds `{kind}:{value}`"),
        ),
    }
}
