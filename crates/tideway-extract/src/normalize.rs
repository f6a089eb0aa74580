//! The nested-JSON normalizer: records in, a parent table and child tables out, as Arrow.
//!
//! Every loader that takes nested JSON (REST sources, Kustomer, Kafka) lands it through this
//! one set of rules:
//!
//! 1. **Objects flatten** into columns joined by `__`: `{"address": {"city": "Oslo"}}` gives
//!    the column `address__city`. Names follow [`tideway_core::naming`].
//! 2. **Lists become child tables** named `<table>__<field>` (`customers__emails`), one row per
//!    element, linked to their parent by system columns:
//!
//!    | column | meaning |
//!    |---|---|
//!    | `_tideway_id` | the row's id: for a root row, a hash of its primary key; for a child, a hash of its parent's id, the list's path and the index |
//!    | `_tideway_parent_id` | the parent row's `_tideway_id` (child tables) |
//!    | `_tideway_root_id` | the root row's `_tideway_id` (child tables, every level) |
//!    | `_tideway_list_idx` | the element's position in its list (child tables) |
//!
//!    A list of scalars gives a child table with a `value` column; a list inside a list
//!    element gives a deeper child table (`conversations__messages__attachments`). Ids are
//!    deterministic, so reloading a record gives the same child ids: a loader replaces a
//!    record's children by `_tideway_root_id` instead of duplicating them.
//! 3. **Depth is bounded**: a value nested deeper than [`NormalizeOptions::max_depth`] levels
//!    (objects and lists both count) is kept whole, as JSON text.
//! 4. **Types are inferred**: JSON booleans, integers and floats keep their type; a string
//!    shaped like an ISO-8601 date and time becomes a timestamp (microseconds, UTC); other
//!    strings are text; `null` is a missing value. An integer arriving in a float column is
//!    stored as a float, and the first float in an integer column widens the column.
//! 5. **Conflicts never fail a load**: a value whose type conflicts with its column's goes to
//!    the variant column [`variant_column`] (`zip_code` is `bigint`, `"02134"` lands in
//!    `zip_code__v_text`). A field that is an object in one record and a string in another is
//!    no conflict: the string is `custom`, the object's fields are `custom__*`. A column keeps
//!    the type it first had for the life of the normalizer (and, seeded with
//!    [`Normalizer::with_table`], the type it has in the lake), so batches agree.
//!
//! Memory is what the caller buffers: [`Normalizer::finish`] hands the rows over as record
//! batches and keeps only the column names and types, so a loader flushes every few thousand
//! records and streams a source of any size.
//!
//! ```
//! use tideway_extract::normalize::{Normalizer, NormalizeOptions};
//! let mut n = Normalizer::new("customers", NormalizeOptions::default()).with_primary_key("id");
//! let record = serde_json::json!({"id": "c1", "address": {"city": "Oslo"}, "tags": ["vip", "new"]});
//! n.push(&record).unwrap();
//! let tables = n.finish();
//! assert_eq!(tables[0].table, "customers");
//! assert_eq!(tables[1].table, "customers__tags");
//! assert_eq!(tables[1].batch.num_rows(), 2);
//! ```

use std::fmt;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{Map, Value};
use tideway_core::naming::{NamingRules, PATH_SEPARATOR, variant_column};
use tideway_core::time::parse_instant;
use xxhash_rust::xxh3::Xxh3;

/// `_tideway_id`: the row's deterministic id.
pub const ID: &str = "_tideway_id";
/// `_tideway_parent_id`: a child row's parent.
pub const PARENT_ID: &str = "_tideway_parent_id";
/// `_tideway_root_id`: a child row's root record.
pub const ROOT_ID: &str = "_tideway_root_id";
/// `_tideway_list_idx`: a child row's position in its list.
pub const LIST_IDX: &str = "_tideway_list_idx";
/// The column of a child table made from a list of scalars.
pub const VALUE: &str = "value";

/// How the normalizer shapes records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormalizeOptions {
    /// Levels of nesting (objects and lists) flattened or split into child tables; deeper
    /// values are kept as JSON text.
    pub max_depth: usize,
    /// The naming rules for columns and tables.
    pub rules: NamingRules,
}

impl Default for NormalizeOptions {
    fn default() -> Self {
        NormalizeOptions {
            max_depth: 5,
            rules: NamingRules::default(),
        }
    }
}

/// A record the normalizer could not take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NormalizeError {
    /// The record is not a JSON object.
    #[error("a record must be a JSON object, not {found}: `{sample}`")]
    NotAnObject { found: &'static str, sample: String },
    /// The primary key is missing or not a scalar.
    #[error(
        "record has no usable primary key `{key}` (found {found}); every record of `{table}` needs one: set `primary_key` to a field every record has"
    )]
    MissingKey {
        table: String,
        key: String,
        found: String,
    },
}

/// One table's rows from [`Normalizer::finish`].
#[derive(Debug, Clone)]
pub struct NormalizedTable {
    /// The table name, `customers` or `customers__emails`.
    pub table: String,
    /// 0 for the root table, 1 for its lists, 2 for lists inside those...
    pub level: usize,
    /// The rows.
    pub batch: RecordBatch,
}

/// Turns nested JSON records into a root table and child tables (see the module docs).
#[derive(Debug)]
pub struct Normalizer {
    options: NormalizeOptions,
    primary_key: Option<Vec<String>>,
    tables: Vec<Table>,
    /// Table names in use, for uniqueness.
    table_names: FxHashSet<String>,
    /// The tables' schemas in the lake, to seed column types.
    schemas: FxHashMap<String, SchemaRef>,
    records: usize,
}

/// The type of a column, or of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Text,
    Timestamp,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int => "bigint",
            Kind::Float => "double",
            Kind::Text => "text",
            Kind::Timestamp => "timestamp",
        }
    }

    fn of_type(ty: &DataType) -> Option<Kind> {
        Some(match ty {
            DataType::Boolean => Kind::Bool,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => Kind::Int,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => Kind::Float,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
            DataType::Timestamp(..) => Kind::Timestamp,
            _ => return None,
        })
    }
}

/// A scalar value on its way into a column.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
    Timestamp(i64, &'a str),
}

impl Scalar<'_> {
    fn kind(&self) -> Kind {
        match self {
            Scalar::Bool(_) => Kind::Bool,
            Scalar::Int(_) => Kind::Int,
            Scalar::Float(_) => Kind::Float,
            Scalar::Text(_) => Kind::Text,
            Scalar::Timestamp(..) => Kind::Timestamp,
        }
    }
}

#[derive(Debug)]
enum Data {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Data {
    fn new(kind: Kind) -> Data {
        match kind {
            Kind::Bool => Data::Bool(BooleanBuilder::new()),
            Kind::Int => Data::Int(Int64Builder::new()),
            Kind::Float => Data::Float(Float64Builder::new()),
            Kind::Text => Data::Text(StringBuilder::new()),
            Kind::Timestamp => Data::Timestamp(TimestampMicrosecondBuilder::new()),
        }
    }

    fn append_nulls(&mut self, n: usize) {
        match self {
            Data::Bool(b) => b.append_nulls(n),
            Data::Int(b) => b.append_nulls(n),
            Data::Float(b) => b.append_nulls(n),
            Data::Text(b) => b.append_nulls(n),
            Data::Timestamp(b) => b.append_nulls(n),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Data::Bool(b) => Arc::new(b.finish()),
            Data::Int(b) => Arc::new(b.finish()),
            Data::Float(b) => Arc::new(b.finish()),
            Data::Text(b) => Arc::new(b.finish()),
            Data::Timestamp(b) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

fn data_type(kind: Kind) -> DataType {
    match kind {
        Kind::Bool => DataType::Boolean,
        Kind::Int => DataType::Int64,
        Kind::Float => DataType::Float64,
        Kind::Text => DataType::Utf8,
        Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// One column of a table: a name, a type fixed at its first value, and the rows so far.
#[derive(Debug)]
struct Column {
    name: String,
    kind: Option<Kind>,
    data: Option<Data>,
    /// Rows appended to `data` (values and nulls).
    len: usize,
    /// Whether `data` holds a value (columns without one are left out of the batch).
    has_value: bool,
}

impl Column {
    fn new(name: String, kind: Option<Kind>) -> Column {
        Column {
            name,
            kind,
            data: None,
            len: 0,
            has_value: false,
        }
    }

    /// Whether a value of `kind` can go into this column (converting it if need be).
    fn accepts(&self, kind: Kind) -> bool {
        match (self.kind, kind) {
            (None, _) => true,
            (Some(a), b) if a == b => true,
            (Some(Kind::Float), Kind::Int) | (Some(Kind::Int), Kind::Float) => true,
            // A timestamp-shaped string in a text column is text.
            (Some(Kind::Text), Kind::Timestamp) => true,
            _ => false,
        }
    }

    /// Appends `value` as row `row`; the caller checked [`Column::accepts`].
    fn set(&mut self, row: usize, value: Scalar<'_>) {
        let kind = match (self.kind, value.kind()) {
            (None, k) => k,
            (Some(Kind::Int), Kind::Float) => {
                self.widen_to_float();
                Kind::Float
            }
            (Some(k), _) => k,
        };
        self.kind = Some(kind);
        let data = self.data.get_or_insert_with(|| Data::new(kind));
        if self.len < row {
            data.append_nulls(row - self.len);
        }
        match (data, value) {
            (Data::Bool(b), Scalar::Bool(v)) => b.append_value(v),
            (Data::Int(b), Scalar::Int(v)) => b.append_value(v),
            (Data::Float(b), Scalar::Float(v)) => b.append_value(v),
            (Data::Float(b), Scalar::Int(v)) => b.append_value(v as f64),
            (Data::Text(b), Scalar::Text(v) | Scalar::Timestamp(_, v)) => b.append_value(v),
            (Data::Timestamp(b), Scalar::Timestamp(v, _)) => b.append_value(v),
            (data, value) => unreachable!(
                "column `{}` accepted a {:?} value into {:?}: Column::accepts and Column::set disagree",
                self.name, value, data
            ),
        }
        self.len = row + 1;
        self.has_value = true;
    }

    /// Turns an integer column into a float column, converting the rows buffered so far.
    fn widen_to_float(&mut self) {
        if let Some(Data::Int(ints)) = &mut self.data {
            let ints = ints.finish();
            let mut floats = Float64Builder::with_capacity(ints.len());
            for v in ints.iter() {
                floats.append_option(v.map(|v| v as f64));
            }
            self.data = Some(Data::Float(floats));
        }
        self.kind = Some(Kind::Float);
    }

    fn finish(&mut self, rows: usize) -> Option<(Field, ArrayRef)> {
        let kind = self.kind?;
        let had_value = std::mem::take(&mut self.has_value);
        let data = self.data.as_mut()?;
        if self.len < rows {
            data.append_nulls(rows - self.len);
        }
        self.len = 0;
        let array = data.finish();
        had_value.then(|| (Field::new(&self.name, data_type(kind), true), array))
    }
}

/// A place in a record's shape: a field of a table (or the table's row itself, node 0).
#[derive(Debug, Default)]
struct Node {
    /// The flattened column path of this field ("" for the row itself).
    path: String,
    children: FxHashMap<Box<str>, usize>,
    /// The column of scalar values at this field.
    column: Option<usize>,
    /// Variant columns for values that conflict with `column`.
    variants: Vec<(Kind, usize)>,
    /// The child table for lists at this field.
    child_table: Option<usize>,
}

#[derive(Debug)]
struct Table {
    name: String,
    level: usize,
    nodes: Vec<Node>,
    columns: Vec<Column>,
    /// Column names in use (system columns included).
    taken: FxHashSet<String>,
    /// Types of the table's columns in the lake, by name.
    seeded: FxHashMap<String, Kind>,
    rows: usize,
    ids: StringBuilder,
    parent_ids: StringBuilder,
    root_ids: StringBuilder,
    list_idx: Int64Builder,
}

impl Table {
    fn new(name: String, level: usize, schema: Option<&Schema>) -> Table {
        let seeded = schema
            .into_iter()
            .flat_map(|s| s.fields().iter())
            .filter_map(|f| Some((f.name().clone(), Kind::of_type(f.data_type())?)))
            .collect();
        Table {
            name,
            level,
            nodes: vec![Node::default()],
            columns: Vec::new(),
            taken: [ID, PARENT_ID, ROOT_ID, LIST_IDX]
                .into_iter()
                .map(String::from)
                .collect(),
            seeded,
            rows: 0,
            ids: StringBuilder::new(),
            parent_ids: StringBuilder::new(),
            root_ids: StringBuilder::new(),
            list_idx: Int64Builder::new(),
        }
    }

    fn child(&mut self, node: usize, key: &str, rules: &NamingRules) -> usize {
        if let Some(&c) = self.nodes[node].children.get(key) {
            return c;
        }
        let part = rules.normalize(key);
        let parent = &self.nodes[node].path;
        let path = if parent.is_empty() {
            part
        } else {
            rules.shorten(format!("{parent}{PATH_SEPARATOR}{part}"))
        };
        let id = self.nodes.len();
        self.nodes.push(Node {
            path,
            ..Node::default()
        });
        self.nodes[node].children.insert(key.into(), id);
        id
    }

    /// A new column named `name` (made unique), typed as in the lake if it is there.
    fn add_column(&mut self, name: String, kind: Option<Kind>) -> usize {
        let name = unique(&mut self.taken, name);
        let kind = self.seeded.get(&name).copied().or(kind);
        self.columns.push(Column::new(name, kind));
        self.columns.len() - 1
    }

    /// The column that takes `kind` values at `node`: its own column, or a variant.
    fn column_for(&mut self, node: usize, kind: Kind) -> usize {
        let Some(c) = self.nodes[node].column else {
            let path = match self.nodes[node].path.as_str() {
                "" => VALUE.to_string(),
                path => path.to_string(),
            };
            let c = self.add_column(path, None);
            self.nodes[node].column = Some(c);
            return self.column_for(node, kind);
        };
        if self.columns[c].accepts(kind) {
            return c;
        }
        if let Some(&(_, v)) = self.nodes[node]
            .variants
            .iter()
            .find(|(_, v)| self.columns[*v].accepts(kind))
        {
            return v;
        }
        let name = variant_column(&self.columns[c].name, kind.label());
        let v = self.add_column(name, Some(kind));
        self.nodes[node].variants.push((kind, v));
        if self.columns[v].accepts(kind) {
            v
        } else {
            // The lake has this variant column with yet another type: its own variant.
            let name = variant_column(&self.columns[v].name, kind.label());
            let w = self.add_column(name, Some(kind));
            self.nodes[node].variants.push((kind, w));
            w
        }
    }

    fn finish(&mut self) -> Option<NormalizedTable> {
        if self.rows == 0 {
            return None;
        }
        let rows = std::mem::take(&mut self.rows);
        let mut fields = vec![Field::new(ID, DataType::Utf8, false)];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(self.ids.finish())];
        if self.level > 0 {
            fields.push(Field::new(PARENT_ID, DataType::Utf8, false));
            fields.push(Field::new(ROOT_ID, DataType::Utf8, false));
            fields.push(Field::new(LIST_IDX, DataType::Int64, false));
            arrays.push(Arc::new(self.parent_ids.finish()));
            arrays.push(Arc::new(self.root_ids.finish()));
            arrays.push(Arc::new(self.list_idx.finish()));
        }
        for column in &mut self.columns {
            if let Some((field, array)) = column.finish(rows) {
                fields.push(field);
                arrays.push(array);
            }
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .expect("every column was padded to the table's row count");
        Some(NormalizedTable {
            table: self.name.clone(),
            level: self.level,
            batch,
        })
    }

    fn buffered_bytes(&self) -> usize {
        let system = self.ids.values_slice().len()
            + self.parent_ids.values_slice().len()
            + self.root_ids.values_slice().len()
            + self.list_idx.len() * 8;
        let columns: usize = self
            .columns
            .iter()
            .filter_map(|c| c.data.as_ref())
            .map(|d| match d {
                Data::Bool(b) => b.len() / 8 + 1,
                Data::Int(b) => b.len() * 8,
                Data::Float(b) => b.len() * 8,
                Data::Text(b) => b.values_slice().len() + b.len() * 4,
                Data::Timestamp(b) => b.len() * 8,
            })
            .sum();
        system + columns
    }
}

/// `name`, or `name_2`, `name_3`... whichever is free; marks it taken.
fn unique(taken: &mut FxHashSet<String>, name: String) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{name}_{n}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

/// The row being filled: its id and its root record's.
#[derive(Clone, Copy)]
struct Row<'a> {
    index: usize,
    id: &'a str,
    root: &'a str,
}

impl Normalizer {
    /// A normalizer whose root table is `table` (a lake table name, already normalized).
    pub fn new(table: &str, options: NormalizeOptions) -> Normalizer {
        Normalizer {
            tables: vec![Table::new(table.to_string(), 0, None)],
            table_names: [table.to_string()].into_iter().collect(),
            schemas: FxHashMap::default(),
            options,
            primary_key: None,
            records: 0,
        }
    }

    /// Root ids become a hash of this field (a dotted path for a nested one, e.g. `data.id`)
    /// instead of a hash of the whole record.
    pub fn with_primary_key(mut self, key: &str) -> Normalizer {
        self.primary_key = Some(key.split('.').map(str::to_string).collect());
        self
    }

    /// Seeds column types from the tables' schemas in the lake (by table name), so new
    /// batches agree with them: a column that is `bigint` there takes text into `__v_text`.
    pub fn with_schemas(mut self, schemas: FxHashMap<String, SchemaRef>) -> Normalizer {
        let root = &self.tables[0];
        self.tables[0] = Table::new(root.name.clone(), 0, schemas.get(&root.name).map(|s| &**s));
        self.schemas = schemas;
        self
    }

    /// Records pushed so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Rows buffered since the last [`Normalizer::finish`], over all tables.
    pub fn buffered_rows(&self) -> usize {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// An estimate of the bytes buffered since the last [`Normalizer::finish`].
    pub fn buffered_bytes(&self) -> usize {
        self.tables.iter().map(Table::buffered_bytes).sum()
    }

    /// The `_tideway_id` of the root record whose primary key is `key`.
    pub fn root_id(&self, key: &str) -> String {
        id_of(&[self.tables[0].name.as_bytes(), b"\0", key.as_bytes()])
    }

    /// Adds one record, returning its root `_tideway_id`.
    pub fn push(&mut self, record: &Value) -> Result<String, NormalizeError> {
        let Value::Object(fields) = record else {
            return Err(NormalizeError::NotAnObject {
                found: json_type(record),
                sample: clip(&record.to_string()),
            });
        };
        let id = match &self.primary_key {
            Some(path) => {
                let key = key_text(fields, path).ok_or_else(|| NormalizeError::MissingKey {
                    table: self.tables[0].name.clone(),
                    key: path.join("."),
                    found: path_value(fields, path),
                })?;
                self.root_id(&key)
            }
            None => {
                let text = serde_json::to_string(record).expect("a Value always serializes");
                id_of(&[self.tables[0].name.as_bytes(), b"\0", text.as_bytes()])
            }
        };
        let root = &mut self.tables[0];
        let index = root.rows;
        root.rows += 1;
        root.ids.append_value(&id);
        let row = Row {
            index,
            id: &id,
            root: &id,
        };
        self.object(0, 0, row, 0, fields);
        self.records += 1;
        Ok(id)
    }

    /// Hands over every buffered row as one batch per table (root first, then children in the
    /// order they were found), keeping the column names and types for the next batches.
    pub fn finish(&mut self) -> Vec<NormalizedTable> {
        self.tables.iter_mut().filter_map(Table::finish).collect()
    }

    /// The names of every table found so far, root first.
    pub fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name.clone()).collect()
    }

    /// Flattens the fields of an object found at `node` of `table`, whose own depth in the
    /// record is `depth`.
    fn object(
        &mut self,
        table: usize,
        node: usize,
        row: Row<'_>,
        depth: usize,
        fields: &Map<String, Value>,
    ) {
        let rules = self.options.rules;
        for (key, value) in fields {
            if value.is_null() {
                continue;
            }
            let child = self.tables[table].child(node, key, &rules);
            self.value(table, child, row, depth + 1, value);
        }
    }

    fn value(&mut self, table: usize, node: usize, row: Row<'_>, depth: usize, value: &Value) {
        let nests = depth < self.options.max_depth;
        let scalar = match value {
            Value::Null => return,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Scalar::Int(i),
                None => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => match parse_instant(s) {
                Some(t) => Scalar::Timestamp(t.timestamp_micros(), s),
                None => Scalar::Text(s),
            },
            Value::Object(fields) if nests => return self.object(table, node, row, depth, fields),
            Value::Array(items) if nests => return self.list(table, node, row, depth, items),
            Value::Object(_) | Value::Array(_) => {
                let text = value.to_string();
                let t = &mut self.tables[table];
                let c = t.column_for(node, Kind::Text);
                t.columns[c].set(row.index, Scalar::Text(&text));
                return;
            }
        };
        let t = &mut self.tables[table];
        let c = t.column_for(node, scalar.kind());
        t.columns[c].set(row.index, scalar);
    }

    /// Splits the list at `node` of `table` (in row `row`) into rows of its child table.
    fn list(&mut self, table: usize, node: usize, row: Row<'_>, depth: usize, items: &[Value]) {
        let child = match self.tables[table].nodes[node].child_table {
            Some(c) => c,
            None => self.add_child_table(table, node),
        };
        for (index, item) in items.iter().enumerate() {
            if item.is_null() {
                continue;
            }
            let name = self.tables[child].name.as_bytes();
            let id = id_of(&[row.id.as_bytes(), b"\0", name, b"\0", &index.to_le_bytes()]);
            let t = &mut self.tables[child];
            let child_row = Row {
                index: t.rows,
                id: &id,
                root: row.root,
            };
            t.rows += 1;
            t.ids.append_value(&id);
            t.parent_ids.append_value(row.id);
            t.root_ids.append_value(row.root);
            t.list_idx.append_value(index as i64);
            match item {
                Value::Object(fields) => self.object(child, 0, child_row, depth, fields),
                _ => self.value(child, 0, child_row, depth + 1, item),
            }
        }
    }

    fn add_child_table(&mut self, table: usize, node: usize) -> usize {
        let parent = &self.tables[table];
        let field = match parent.nodes[node].path.as_str() {
            "" => VALUE,
            path => path,
        };
        let name = self
            .options
            .rules
            .shorten(format!("{}{PATH_SEPARATOR}{field}", parent.name));
        let name = unique(&mut self.table_names, name);
        let level = parent.level + 1;
        let schema = self.schemas.get(&name).map(|s| &**s);
        let child = self.tables.len();
        self.tables.push(Table::new(name, level, schema));
        self.tables[table].nodes[node].child_table = Some(child);
        child
    }
}

/// A deterministic 128-bit id, as 32 hex digits.
fn id_of(parts: &[&[u8]]) -> String {
    let mut hasher = Xxh3::new();
    for part in parts {
        hasher.update(part);
    }
    format!("{:032x}", hasher.digest128())
}

fn key_text(fields: &Map<String, Value>, path: &[String]) -> Option<String> {
    let mut value = fields.get(path.first()?)?;
    for part in &path[1..] {
        value = value.get(part)?;
    }
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn path_value(fields: &Map<String, Value>, path: &[String]) -> String {
    let mut value = path.first().and_then(|k| fields.get(k));
    for part in path.iter().skip(1) {
        value = value.and_then(|v| v.get(part));
    }
    match value {
        None | Some(Value::Null) => "nothing".to_string(),
        Some(v) => format!("{} `{}`", json_type(v), clip(&v.to_string())),
    }
}

/// The JSON type of a value, for messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn clip(text: &str) -> String {
    if text.len() <= 80 {
        return text.to_string();
    }
    let mut end = 80;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl fmt::Display for NormalizedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} rows)", self.table, self.batch.num_rows())
    }
}
