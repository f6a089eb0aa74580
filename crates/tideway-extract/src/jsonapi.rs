//! JSON:API documents (Kustomer's format) unwrapped into plain records.
//!
//! A JSON:API resource object `{"type", "id", "attributes": {...}, "relationships": {...}}`
//! becomes one flat record: `id`, then every attribute at the top level, then one
//! `<relationship>_id` field per to-one relationship (`{"org": {"data": {"type": "org", "id":
//! "o1"}}}` gives `org_id = "o1"`) and a `<relationship>_ids` list per to-many relationship.
//! `type`, `links` and relationships without `data` carry nothing a table needs and are left
//! out; any other member (`meta`, or a field a loader added) is kept as it is.
//!
//! ```
//! use serde_json::json;
//! let record = json!({"type": "customer", "id": "c1",
//!     "attributes": {"name": "Ada"},
//!     "relationships": {"org": {"data": {"type": "org", "id": "o1"}}}});
//! assert_eq!(
//!     tideway_extract::jsonapi::unwrap(record),
//!     json!({"id": "c1", "name": "Ada", "org_id": "o1"})
//! );
//! ```

use serde_json::{Map, Value};

/// Unwraps one resource object (see the module docs). A value that is not a resource object
/// (no `attributes`) is returned unchanged.
pub fn unwrap(record: Value) -> Value {
    let Value::Object(mut resource) = record else {
        return record;
    };
    let Some(Value::Object(attributes)) = resource.remove("attributes") else {
        return Value::Object(resource);
    };
    let mut out = Map::with_capacity(attributes.len() + 4);
    if let Some(id) = resource.remove("id") {
        out.insert("id".into(), id);
    }
    for (key, value) in attributes {
        if key != "id" {
            out.insert(key, value);
        }
    }
    let relationships = resource.remove("relationships");
    for (key, value) in resource {
        if key != "type" && key != "links" {
            out.entry(key).or_insert(value);
        }
    }
    if let Some(Value::Object(relationships)) = relationships {
        for (name, relationship) in relationships {
            match relationship.get("data") {
                Some(Value::Object(target)) => {
                    if let Some(id) = target.get("id") {
                        out.insert(format!("{name}_id"), id.clone());
                    }
                }
                Some(Value::Array(targets)) => {
                    let ids = targets
                        .iter()
                        .filter_map(|t| t.get("id").cloned())
                        .collect();
                    out.insert(format!("{name}_ids"), Value::Array(ids));
                }
                _ => {}
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn to_many_relationships_become_id_lists() {
        let record = json!({"type": "conversation", "id": "v1", "attributes": {"status": "open"},
            "relationships": {"tags": {"data": [{"type": "tag", "id": "t1"}, {"type": "tag", "id": "t2"}]},
                              "messages": {"links": {"related": "/v1/conversations/v1/messages"}},
                              "assignee": {"data": null}}});
        assert_eq!(
            unwrap(record),
            json!({"id": "v1", "status": "open", "tags_ids": ["t1", "t2"]})
        );
    }

    #[test]
    fn plain_records_pass_through() {
        let record = json!({"id": 1, "name": "x"});
        assert_eq!(unwrap(record.clone()), record);
    }
}
