//! Schema evolution: how a batch with a different schema lands in an existing table.
//!
//! The rules, applied column by column to every write:
//!
//! 1. **Storable types.** Arrow types Delta cannot store become the nearest type it can
//!    ([`storable`]): unsigned integers widen to the next signed type (`UInt64` to
//!    `Decimal(20, 0)`), large and view strings become strings, timestamps become microsecond
//!    timestamps (UTC when they carry a time zone), dictionaries their value type, times and
//!    durations text.
//! 2. **New columns are added** (nullable). Columns are never dropped: a column missing from a
//!    batch is null in its rows. A column of the `Null` type that the table does not have is
//!    not added (it carries no value; it is added when a value arrives).
//! 3. **Lossless widening.** A batch column whose type fits losslessly in the table's type is
//!    cast (`Int32` into `Int64`). A table column whose type fits losslessly in the batch's
//!    type is widened (`Int32` to `Int64`, `Float32` to `Float64`, small integers to
//!    `Float64`): the table is rewritten once with the wider type, which every Delta reader
//!    understands (Delta's own type-widening feature is not yet readable by all of them).
//! 4. **Conflicts go to variant columns.** A value whose type conflicts with its column
//!    (`age` is `bigint` in the table, the batch has text) goes to the column
//!    `age__v_text` (see [`tideway_core::naming::variant_column`]), added on first use. Nothing is
//!    dropped and the load does not fail.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use deltalake::arrow::compute::{CastOptions, cast_with_options};
use deltalake::arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::util::display::FormatOptions;
use tideway_core::naming::variant_column;

use crate::error::Result;

/// What a write does to a table's schema, and how each batch column maps onto it.
#[derive(Debug, Clone)]
pub struct Evolution {
    /// The table's schema after the write.
    pub target: SchemaRef,
    /// Columns the write adds.
    pub added: Vec<String>,
    /// Table columns the write widens: (column, old type, new type).
    pub widened: Vec<(String, DataType, DataType)>,
    /// Batch columns that conflict with their column and go to a variant column:
    /// (column, variant column).
    pub variants: Vec<(String, String)>,
    /// For each batch column (by name), the target column it lands in; `None` drops an
    /// all-null column of the `Null` type that the table does not have.
    placement: HashMap<String, Option<String>>,
}

impl Evolution {
    /// Plans how batches of `incoming` schema land in a table of schema `table` (`None` for a
    /// table that does not exist yet).
    pub fn plan(table: Option<&Schema>, incoming: &Schema) -> Evolution {
        let mut fields: Vec<Field> = table
            .map(|s| {
                s.fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect()
            })
            .unwrap_or_default();
        let table_len = fields.len();
        let mut evolution = Evolution {
            target: Arc::new(Schema::empty()),
            added: Vec::new(),
            widened: Vec::new(),
            variants: Vec::new(),
            placement: HashMap::new(),
        };
        for field in incoming.fields() {
            let name = field.name().clone();
            if field.data_type() == &DataType::Null {
                let exists = fields.iter().any(|f| f.name() == &name);
                evolution
                    .placement
                    .insert(name.clone(), exists.then_some(name));
                continue;
            }
            let ty = storable(field.data_type());
            let mut column = name.clone();
            loop {
                match fields.iter().position(|f| f.name() == &column) {
                    None => {
                        fields.push(Field::new(&column, ty.clone(), true));
                        evolution.added.push(column.clone());
                        break;
                    }
                    Some(i) => {
                        let existing = fields[i].data_type().clone();
                        if existing == ty || fits(&ty, &existing) {
                            break;
                        }
                        if fits(&existing, &ty) && i < table_len {
                            fields[i] = Field::new(&column, ty.clone(), true);
                            evolution
                                .widened
                                .push((column.clone(), existing, ty.clone()));
                            break;
                        }
                        if fits(&existing, &ty) {
                            // Added by an earlier column of this same batch: widen in place.
                            fields[i] = Field::new(&column, ty.clone(), true);
                            break;
                        }
                        let variant = variant_column(&name, type_label(&ty));
                        if column == variant {
                            // The variant column itself has another type: its own variant.
                            column = variant_column(&variant, type_label(&ty));
                        } else {
                            column = variant;
                        }
                        evolution.variants.push((name.clone(), column.clone()));
                    }
                }
            }
            evolution.placement.insert(name, Some(column));
        }
        evolution.target = Arc::new(Schema::new(fields));
        evolution
    }

    /// Whether the write changes the table's schema at all.
    pub fn changes_schema(&self) -> bool {
        !self.added.is_empty() || !self.widened.is_empty()
    }

    /// Reshapes `batch` to the target schema: columns moved to their target (variant columns
    /// included), cast, and missing columns filled with nulls.
    pub fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let schema = batch.schema();
        let mut columns: HashMap<&str, ArrayRef> = HashMap::new();
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            if let Some(Some(target)) = self.placement.get(field.name()) {
                columns.insert(target.as_str(), array.clone());
            }
        }
        let options = CastOptions {
            safe: false,
            format_options: FormatOptions::default(),
        };
        let mut out = Vec::with_capacity(self.target.fields().len());
        for field in self.target.fields() {
            let array = match columns.remove(field.name().as_str()) {
                Some(array) if array.data_type() == field.data_type() => array,
                Some(array) => cast_with_options(&array, field.data_type(), &options)?,
                None => new_null_array(field.data_type(), batch.num_rows()),
            };
            out.push(array);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.target.clone(),
            out,
            &options,
        )?)
    }
}

/// The nearest type to `ty` that a Delta table can store (rule 1 in the module docs).
pub fn storable(ty: &DataType) -> DataType {
    use DataType::*;
    match ty {
        UInt8 => Int16,
        UInt16 => Int32,
        UInt32 => Int64,
        UInt64 => Decimal128(20, 0),
        Float16 => Float32,
        LargeUtf8 | Utf8View => Utf8,
        LargeBinary | BinaryView | FixedSizeBinary(_) => Binary,
        Date64 => Date32,
        Timestamp(_, tz) => Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| "UTC".into())),
        Time32(_) | Time64(_) | Duration(_) | Interval(_) | Decimal256(..) => Utf8,
        Decimal32(p, s) | Decimal64(p, s) => Decimal128(*p, *s),
        Dictionary(_, value) => storable(value),
        List(item) | LargeList(item) | ListView(item) | LargeListView(item) => {
            List(storable_field(item))
        }
        FixedSizeList(item, _) => List(storable_field(item)),
        Struct(fields) => Struct(fields.iter().map(storable_field).collect::<Fields>()),
        Map(entries, sorted) => Map(storable_field(entries), *sorted),
        other => other.clone(),
    }
}

fn storable_field(field: &FieldRef) -> FieldRef {
    Arc::new(
        field
            .as_ref()
            .clone()
            .with_data_type(storable(field.data_type())),
    )
}

/// Whether every value of type `from` is represented exactly in type `to`.
pub fn fits(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to {
        return true;
    }
    match (from, to) {
        (Int8, Int16 | Int32 | Int64 | Float32 | Float64) => true,
        (Int16, Int32 | Int64 | Float32 | Float64) => true,
        (Int32, Int64 | Float64) => true,
        (Float32, Float64) => true,
        (Date32, Timestamp(TimeUnit::Microsecond, _)) => false,
        (Decimal128(p1, s1), Decimal128(p2, s2)) => {
            s2 >= s1 && (i16::from(*p2) - i16::from(*s2)) >= (i16::from(*p1) - i16::from(*s1))
        }
        (Int8 | Int16 | Int32 | Int64, Decimal128(p, s)) => {
            let digits = match from {
                Int8 => 3,
                Int16 => 5,
                Int32 => 10,
                _ => 19,
            };
            (i16::from(*p) - i16::from(*s)) >= digits
        }
        (List(a), List(b)) => fits(a.data_type(), b.data_type()),
        _ => false,
    }
}

/// The short type name used in variant column names (`age__v_text`).
pub fn type_label(ty: &DataType) -> &'static str {
    use DataType::*;
    match ty {
        Boolean => "bool",
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => "bigint",
        Float16 | Float32 | Float64 => "double",
        Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => "decimal",
        Utf8 | LargeUtf8 | Utf8View => "text",
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => "binary",
        Date32 | Date64 => "date",
        Timestamp(..) => "timestamp",
        List(_) | LargeList(_) | FixedSizeList(..) | ListView(_) | LargeListView(_) => "list",
        Struct(_) | Map(..) => "json",
        _ => "text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int32Array, Int64Array, StringArray};

    fn schema(fields: &[(&str, DataType)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn conflicting_values_go_to_a_variant_column() {
        let table = schema(&[("id", DataType::Int64), ("age", DataType::Int64)]);
        let incoming = schema(&[("id", DataType::Int32), ("age", DataType::Utf8)]);
        let e = Evolution::plan(Some(&table), &incoming);
        assert_eq!(e.added, vec!["age__v_text"]);
        assert_eq!(
            e.variants,
            vec![("age".to_string(), "age__v_text".to_string())]
        );
        let batch = RecordBatch::try_new(
            Arc::new(incoming),
            vec![
                Arc::new(Int32Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["forty", "x"])),
            ],
        )
        .unwrap();
        let out = e.conform(&batch).unwrap();
        assert_eq!(out.schema().field(0).data_type(), &DataType::Int64);
        assert_eq!(out.column(1).null_count(), 2);
        assert_eq!(out.num_columns(), 3);
    }

    #[test]
    fn narrow_tables_are_widened() {
        let table = schema(&[("n", DataType::Int32)]);
        let e = Evolution::plan(Some(&table), &schema(&[("n", DataType::Int64)]));
        assert_eq!(
            e.widened,
            vec![("n".to_string(), DataType::Int32, DataType::Int64)]
        );
        let batch = RecordBatch::try_new(
            Arc::new(schema(&[("n", DataType::Int64)])),
            vec![Arc::new(Int64Array::from(vec![1i64 << 40]))],
        )
        .unwrap();
        assert_eq!(
            e.conform(&batch).unwrap().schema().field(0).data_type(),
            &DataType::Int64
        );
    }

    #[test]
    fn null_columns_are_not_added_until_they_have_a_value() {
        let e = Evolution::plan(
            None,
            &schema(&[("a", DataType::Int64), ("b", DataType::Null)]),
        );
        assert_eq!(e.added, vec!["a"]);
        assert_eq!(e.target.fields().len(), 1);
    }
}
