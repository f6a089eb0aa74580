//! Pages: building each request of a resource and finding the next one.

use reqwest::Url;
use reqwest::header::LINK;
use serde_json::Value;

use crate::config::{Pagination, Resource};
use crate::http::Response;

/// Where a resource's reading is: the URL of the page to get, and the counters the
/// pagination kinds need.
#[derive(Debug, Clone)]
pub struct Cursor {
    /// The URL of the next request.
    pub url: Url,
    /// Offset pagination: the offset of this request.
    pub offset: u64,
    /// Page-number pagination: the page of this request.
    pub page: u64,
}

/// The first request of `resource` under `base`, for the parent record `parent` (child
/// resources) and the incremental cursor value `cursor`.
pub fn first(
    base: &Url,
    resource: &Resource,
    parent: Option<&Value>,
    cursor: Option<&str>,
) -> Result<Cursor, String> {
    let path = match parent {
        Some(parent) => fill_parent(&resource.path, parent)?,
        None => resource.path.clone(),
    };
    let mut url = base
        .join(path.trim_start_matches('/'))
        .map_err(|e| format!("`{path}` does not make a URL with `{base}`: {e}"))?;
    let mut params: Vec<(String, String)> = resource
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (mut offset, mut page) = (0, 0);
    match &resource.pagination {
        Pagination::Offset {
            limit,
            offset_param,
            limit_param,
            ..
        } => {
            params.push((offset_param.clone(), "0".into()));
            params.push((limit_param.clone(), limit.to_string()));
            offset = 0;
        }
        Pagination::PageNumber { param, first, .. } => {
            params.push((param.clone(), first.to_string()));
            page = *first;
        }
        _ => {}
    }
    if let (Some(inc), Some(value)) = (&resource.incremental, cursor)
        && let Some(param) = &inc.param
    {
        params.push((param.clone(), value.to_string()));
    }
    if !params.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &params {
            pairs.append_pair(k, v);
        }
    }
    Ok(Cursor { url, offset, page })
}

/// The body of a request: the template with `{cursor}` filled in (JSON-escaped).
pub fn body(resource: &Resource, cursor: Option<&str>) -> Option<String> {
    let template = resource.body.as_ref()?;
    let value = cursor.unwrap_or("");
    let escaped = serde_json::to_string(value).expect("a string serializes");
    Some(template.replace("{cursor}", &escaped[1..escaped.len() - 1]))
}

/// The request after `current`, or `None` after the last page.
pub fn next(
    pagination: &Pagination,
    current: &Cursor,
    response: &Response,
    page: &Value,
    records: usize,
) -> Option<Cursor> {
    match pagination {
        Pagination::None => None,
        Pagination::JsonLink { next } => {
            let link = at_path(page, &crate::config::split_path(next))?.as_str()?;
            if link.is_empty() {
                return None;
            }
            let url = response.url.join(link).ok()?;
            Some(Cursor {
                url,
                ..current.clone()
            })
        }
        Pagination::LinkHeader => {
            let header = response.headers.get(LINK)?.to_str().ok()?;
            let link = next_link(header)?;
            let url = response.url.join(&link).ok()?;
            Some(Cursor {
                url,
                ..current.clone()
            })
        }
        Pagination::Cursor { cursor_path, param } => {
            let token = at_path(page, &crate::config::split_path(cursor_path))?;
            let token = match token {
                Value::String(s) if !s.is_empty() => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some(Cursor {
                url: with_param(&current.url, param, &token),
                ..current.clone()
            })
        }
        Pagination::Offset {
            limit,
            offset_param,
            total_path,
            ..
        } => {
            if (records as u64) < *limit {
                return None;
            }
            let offset = current.offset + *limit;
            if let Some(total) = total_path
                .as_ref()
                .and_then(|p| at_path(page, &crate::config::split_path(p)))
                .and_then(Value::as_u64)
                && offset >= total
            {
                return None;
            }
            Some(Cursor {
                url: with_param(&current.url, offset_param, &offset.to_string()),
                offset,
                page: current.page,
            })
        }
        Pagination::PageNumber {
            param,
            total_pages_path,
            ..
        } => {
            if records == 0 {
                return None;
            }
            if let Some(total) = total_pages_path
                .as_ref()
                .and_then(|p| at_path(page, &crate::config::split_path(p)))
                .and_then(Value::as_u64)
                && current.page >= total
            {
                return None;
            }
            let page = current.page + 1;
            Some(Cursor {
                url: with_param(&current.url, param, &page.to_string()),
                offset: current.offset,
                page,
            })
        }
    }
}

/// The value at a dotted path.
pub fn at_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, part| match v {
        Value::Object(m) => m.get(part),
        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The value at a dotted path, taken out of `value`.
pub fn take_path(value: &mut Value, path: &[String]) -> Option<Value> {
    let mut v = value;
    for part in path {
        v = match v {
            Value::Object(m) => m.get_mut(part)?,
            _ => return None,
        };
    }
    Some(v.take())
}

/// `url` with the query parameter `name` set to `value` (replacing it if present).
pub fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut url = url.clone();
    url.set_query(None);
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        q.append_pair(name, value);
    }
    url
}

/// The `rel="next"` target of a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        is_next.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// The path with every `{parent.FIELD}` replaced by the parent record's field.
fn fill_parent(path: &str, parent: &Value) -> Result<String, String> {
    let mut out = String::with_capacity(path.len() + 16);
    let mut rest = path;
    while let Some(start) = rest.find("{parent.") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 8..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{parent.` in `{path}`"))?;
        let field = &after[..end];
        let value = at_path(parent, &crate::config::split_path(field));
        let text = match value {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(format!("the parent record has no `{field}` for `{path}`"));
            }
        };
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_give_the_next_page() {
        let h = r#"<https://api.x.com/items?page=3>; rel="next", <https://api.x.com/items?page=9>; rel="last""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://api.x.com/items?page=3")
        );
        assert_eq!(next_link(r#"<https://a/b>; rel="prev""#), None);
    }

    #[test]
    fn parent_fields_fill_the_path() {
        let parent = serde_json::json!({"id": "a b", "n": 3});
        assert_eq!(
            fill_parent("conversations/{parent.id}/messages", &parent).unwrap(),
            "conversations/a%20b/messages"
        );
        assert!(
            fill_parent("x/{parent.missing}", &parent)
                .unwrap_err()
                .contains("missing")
        );
    }

    #[test]
    fn params_are_replaced_not_repeated() {
        let url = Url::parse("http://h/p?a=1&page=2").unwrap();
        assert_eq!(
            with_param(&url, "page", "3").as_str(),
            "http://h/p?a=1&page=3"
        );
    }
}
