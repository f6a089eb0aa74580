//! `schema.table`: how tables are addressed.

use std::fmt;
use std::str::FromStr;

use crate::error::LakeError;

/// The schema Tideway keeps its own state in (cursors, offsets, sync state, run history).
pub const SYSTEM_SCHEMA: &str = "_tideway";

/// A table's address in the lake: `schema.table`, both parts already lake names (lower case
/// `a-z`, `0-9`, `_`, not starting with a digit). Use [`tideway_core::naming`] to turn a source
/// name into one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    schema: String,
    table: String,
}

impl TableName {
    /// A table name from its two parts, checked.
    pub fn new(schema: &str, table: &str) -> Result<TableName, LakeError> {
        let full = format!("{schema}.{table}");
        for (what, part) in [("schema", schema), ("table", table)] {
            if let Some(reason) = check_part(part) {
                return Err(LakeError::InvalidTableName {
                    name: full,
                    reason: format!("the {what} part {reason}"),
                });
            }
        }
        Ok(TableName {
            schema: schema.to_string(),
            table: table.to_string(),
        })
    }

    /// The schema part.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The table part.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether the table is one of Tideway's own (in the `_tideway` schema).
    pub fn is_system(&self) -> bool {
        self.schema == SYSTEM_SCHEMA
    }
}

fn check_part(part: &str) -> Option<String> {
    if part.is_empty() {
        return Some("is empty".into());
    }
    if part.len() > 128 {
        return Some("is longer than 128 characters".into());
    }
    if let Some(bad) = part
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        let suggestion = tideway_core::naming::normalize(part);
        return Some(format!(
            "contains `{bad}`; names use lower-case letters, digits and `_` (did you mean `{suggestion}`?)"
        ));
    }
    if part.as_bytes()[0].is_ascii_digit() {
        return Some("starts with a digit".into());
    }
    None
}

impl FromStr for TableName {
    type Err = LakeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s.split_once('.') {
            Some((schema, table)) if !table.contains('.') => TableName::new(schema, table),
            _ => Err(LakeError::InvalidTableName {
                name: s.to_string(),
                reason: "tables are addressed `schema.table`, e.g. `crm.customers`".into(),
            }),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schema_dot_table() {
        let t: TableName = "crm.customers".parse().unwrap();
        assert_eq!((t.schema(), t.table()), ("crm", "customers"));
        assert_eq!(t.to_string(), "crm.customers");
    }

    #[test]
    fn rejects_bad_names_with_a_reason() {
        let e = "customers".parse::<TableName>().unwrap_err().to_string();
        assert!(e.contains("schema.table"), "{e}");
        let e = "crm.Customers"
            .parse::<TableName>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `customers`"), "{e}");
        assert!("a.b.c".parse::<TableName>().is_err());
        assert!("crm.1x".parse::<TableName>().is_err());
    }
}
