//! The profile index behind the Profile API: every identifier to its profile, each profile's
//! identifiers and traits, in memory, rebuilt from the lake after every unify (or score)
//! commit and swapped in whole, so a lookup is two hash probes and never a table scan.
//!
//! Traits are the columns of `profiles.profiles` plus those of every other table of the
//! `profiles` schema keyed by `profile_id` (trait models, churn scores): a model that writes
//! `profiles.churn_scores(profile_id, churn_probability, ...)` shows up in the API as is.

use std::collections::HashMap;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use serde_json::{Map, Value};
use tideway_lake::{Lake, SqlOutput, TableName};

use crate::error::Result;
use crate::run::{IDENTITY_MAP, LINKS, MERGES, PROFILES, REFUSED, SCHEMA, Text, table};

/// One profile as the API answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedProfile {
    /// The profile id.
    pub id: String,
    /// Its identifiers, `(type, value)`.
    pub ids: Vec<(String, String)>,
    /// Traits by table: `profile` (the profiles table), then one object per trait table.
    pub traits: Map<String, Value>,
}

/// Every profile, by identifier.
#[derive(Debug, Default)]
pub struct ProfileIndex {
    /// Type, then value (two probes, no allocation per lookup).
    by_id: HashMap<String, HashMap<String, u32>>,
    by_profile: HashMap<String, u32>,
    profiles: Vec<IndexedProfile>,
    /// The `identity_map` version it was built from.
    pub version: Option<i64>,
}

impl ProfileIndex {
    /// The profile holding `kind:value`, or the profile `value` when `kind` is `profile_id`.
    pub fn lookup(&self, kind: &str, value: &str) -> Option<&IndexedProfile> {
        let i = if kind == "profile_id" {
            self.by_profile.get(value)?
        } else {
            self.by_id.get(kind)?.get(value)?
        };
        self.profiles.get(*i as usize)
    }

    /// How many profiles.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// Builds the index from the lake (empty if unify never ran).
    pub async fn load(lake: &Lake) -> Result<ProfileIndex> {
        let mut index = ProfileIndex::default();
        let map = table(IDENTITY_MAP);
        let Some(t) = lake.load(&map).await? else {
            return Ok(index);
        };
        index.version = t.version().map(|v| v as i64);
        let SqlOutput::Rows(rows) = lake
            .sql(&format!("SELECT profile_id, id_type, id_value FROM {map}"))
            .await?
        else {
            return Ok(index);
        };
        for b in &rows.batches {
            let (p, k, v) = (
                Text::of(b.column(0))?,
                Text::of(b.column(1))?,
                Text::of(b.column(2))?,
            );
            for i in 0..b.num_rows() {
                let (Some(profile), Some(kind), Some(value)) = (p.get(i), k.get(i), v.get(i))
                else {
                    continue;
                };
                let slot = index.slot(profile);
                index.profiles[slot as usize]
                    .ids
                    .push((kind.to_string(), value.to_string()));
                match index.by_id.get_mut(kind) {
                    Some(values) => values.insert(value.to_string(), slot),
                    None => index
                        .by_id
                        .entry(kind.to_string())
                        .or_default()
                        .insert(value.to_string(), slot),
                };
            }
        }
        // Trait tables: the profiles table, then any other table of the schema keyed by
        // profile_id.
        let graph_tables = [IDENTITY_MAP, MERGES, REFUSED, LINKS];
        let mut tables: Vec<TableName> = lake
            .tables()
            .await?
            .into_iter()
            .filter(|t| t.schema() == SCHEMA && !graph_tables.contains(&t.table()))
            .collect();
        tables.sort_by_key(|t| (t.table() != PROFILES, t.to_string()));
        for t in tables {
            let schema = lake.schema(&t).await?;
            if schema.field_with_name("profile_id").is_err() {
                continue;
            }
            let key = if t.table() == PROFILES {
                "profile".to_string()
            } else {
                t.table().to_string()
            };
            let SqlOutput::Rows(rows) = lake.sql(&format!("SELECT * FROM {t}")).await? else {
                continue;
            };
            for b in &rows.batches {
                index.add_traits(&key, b)?;
            }
        }
        Ok(index)
    }

    fn slot(&mut self, profile: &str) -> u32 {
        if let Some(&s) = self.by_profile.get(profile) {
            return s;
        }
        let s = self.profiles.len() as u32;
        self.profiles.push(IndexedProfile {
            id: profile.to_string(),
            ids: Vec::new(),
            traits: Map::new(),
        });
        self.by_profile.insert(profile.to_string(), s);
        s
    }

    fn add_traits(&mut self, key: &str, b: &RecordBatch) -> Result<()> {
        let schema = b.schema();
        let pid = schema
            .index_of("profile_id")
            .expect("checked by the caller");
        let pid = cast(b.column(pid), &DataType::Utf8)?;
        let pid = pid.as_string::<i32>();
        let columns: Vec<(String, Vec<Value>)> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name() != "profile_id")
            .map(|(i, f)| Ok((f.name().clone(), json_values(b.column(i))?)))
            .collect::<Result<_>>()?;
        for row in 0..b.num_rows() {
            if !pid.is_valid(row) {
                continue;
            }
            let Some(&slot) = self.by_profile.get(pid.value(row)) else {
                continue;
            };
            let mut object = Map::new();
            for (name, values) in &columns {
                if !values[row].is_null() {
                    object.insert(name.clone(), values[row].clone());
                }
            }
            self.profiles[slot as usize]
                .traits
                .insert(key.to_string(), Value::Object(object));
        }
        Ok(())
    }
}

/// A column as JSON values: numbers and booleans as themselves, everything else as text.
fn json_values(column: &dyn Array) -> Result<Vec<Value>> {
    fn json<T: Into<Value>>(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
    let out = match column.data_type() {
        DataType::Boolean => column.as_boolean().iter().map(json).collect(),
        t if t.is_integer() => cast(column, &DataType::Int64)?
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>()
            .iter()
            .map(json)
            .collect(),
        t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => {
            cast(column, &DataType::Float64)?
                .as_primitive::<deltalake::arrow::datatypes::Float64Type>()
                .iter()
                .map(json)
                .collect()
        }
        _ => cast(column, &DataType::Utf8)?
            .as_string::<i32>()
            .iter()
            .map(json)
            .collect(),
    };
    Ok(out)
}
