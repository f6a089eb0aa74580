//! The differ: which rows of a sync's source are new, changed or gone since the last run.
//!
//! Each run hashes every source row (xxh3-128 of the Arrow row encoding of the columns the
//! sync reads, seeded by the mapping, so a mapping change re-sends every row) and full-joins
//! the result, in DataFusion, with the sync's state in `_tideway.sync_state` (key, the hash and
//! values last accepted by the destination). A row comes out when its key is new, its hash
//! differs, or its key is gone; everything else stays in the engine. The result streams, so
//! memory does not grow with the table.
//!
//! | source row | state row | outcome |
//! |---|---|---|
//! | key null | - | invalid (`null key`) |
//! | key seen twice | - | invalid (`duplicate key`), every copy |
//! | present | none, or never accepted | added |
//! | present, hash differs from the accepted one (and from a dead-lettered one) | accepted | changed |
//! | present, same hash | accepted | nothing |
//! | present, same hash as the accepted one | rejected or dead (a newer version was refused) | reverted: accepted again, nothing sent |
//! | gone | accepted | removed |
//! | gone | never accepted | forgotten (its pending retry is dropped from the state) |
//! | present or gone | `sending` (a run crashed while delivering it) | sent again: added, changed or removed, whatever its hash |

use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, BinaryBuilder};
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::datafusion::common::Result as DfResult;
use deltalake::datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The UDF `tideway_row_hash(seed, col, ...)`: 16 bytes per row.
pub const ROW_HASH: &str = "tideway_row_hash";

#[derive(Debug, PartialEq, Eq, Hash)]
struct RowHash {
    signature: Signature,
}

/// The row-hash function, to register on a session.
pub fn row_hash_udf() -> ScalarUDF {
    ScalarUDF::from(RowHash {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

impl ScalarUDFImpl for RowHash {
    fn name(&self) -> &str {
        ROW_HASH
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Binary)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(n))
            .collect::<DfResult<_>>()?;
        Ok(ColumnarValue::Array(Arc::new(hash_rows(&arrays, n)?)))
    }
}

/// xxh3-128 of each row of `arrays` (all of length `n`), little-endian.
pub fn hash_rows(arrays: &[ArrayRef], n: usize) -> DfResult<deltalake::arrow::array::BinaryArray> {
    let fields = arrays
        .iter()
        .map(|a| SortField::new(a.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let rows = converter.convert_columns(arrays)?;
    let mut out = BinaryBuilder::with_capacity(n, n * 16);
    for row in rows.iter() {
        out.append_value(xxhash_rust::xxh3::xxh3_128(row.as_ref()).to_le_bytes());
    }
    Ok(out.finish())
}

/// Quotes an identifier for DataFusion SQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The separator of a composite key's parts in its stored form.
pub const KEY_SEPARATOR: char = '\u{1f}';

/// The SQL of a row's key as text (NULL if any key column is NULL).
pub fn key_expr(key: &[String]) -> String {
    if key.len() == 1 {
        return format!("CAST({} AS VARCHAR)", ident(&key[0]));
    }
    let any_null = key
        .iter()
        .map(|k| format!("{} IS NULL", ident(k)))
        .collect::<Vec<_>>()
        .join(" OR ");
    let parts = key
        .iter()
        .map(|k| format!("CAST({} AS VARCHAR)", ident(k)))
        .collect::<Vec<_>>()
        .join(", chr(31), ");
    format!("CASE WHEN {any_null} THEN NULL ELSE concat({parts}) END")
}

/// A stored key as people read it: composite parts joined by `, `.
pub fn display_key(key: &str) -> String {
    key.replace(KEY_SEPARATOR, ", ")
}

/// Column names of the diff's output besides the source's own columns.
pub mod col {
    pub const KEY: &str = "__tideway_key";
    pub const HASH: &str = "__tideway_hash";
    pub const OLD_KEY: &str = "__tideway_old_key";
    pub const OLD_HASH: &str = "__tideway_old_hash";
    pub const OLD_PAYLOAD: &str = "__tideway_old_payload";
    pub const ATTEMPTS: &str = "__tideway_attempts";
    pub const OLD_STATUS: &str = "__tideway_old_status";
}

/// The query that yields the rows to act on. `columns` are the source columns read (mapped
/// columns plus key and id columns), `seed` the mapping's fingerprint, `state` the state
/// table's name, or `None` on a first run with no state table yet.
pub fn diff_sql(
    sync: &str,
    source: &str,
    key: &[String],
    columns: &[String],
    seed: u64,
    state: Option<&str>,
) -> String {
    let cols = columns.iter().map(|c| ident(c)).collect::<Vec<_>>();
    let src = format!(
        "SELECT {key} AS {k}, {hash}(CAST({seed} AS BIGINT), {cols}) AS {h}, {cols} FROM {source}",
        key = key_expr(key),
        k = col::KEY,
        h = col::HASH,
        hash = ROW_HASH,
        cols = cols.join(", "),
    );
    let Some(state) = state else {
        return format!(
            "SELECT src.*, CAST(NULL AS VARCHAR) AS {ok}, arrow_cast(NULL, 'Binary') AS {oh}, \
             CAST(NULL AS VARCHAR) AS {op}, CAST(0 AS BIGINT) AS {at}, CAST(NULL AS VARCHAR) AS {os} \
             FROM ({src}) src",
            ok = col::OLD_KEY,
            oh = col::OLD_HASH,
            op = col::OLD_PAYLOAD,
            at = col::ATTEMPTS,
            os = col::OLD_STATUS,
        );
    };
    format!(
        "SELECT src.*, st.key AS {ok}, st.hash AS {oh}, st.payload AS {op}, \
         coalesce(st.attempts, 0) AS {at}, st.status AS {os} \
         FROM ({src}) src FULL OUTER JOIN \
         (SELECT key, hash, dead_hash, payload, attempts, status FROM {state} WHERE sync = {name}) st \
         ON src.{k} = st.key \
         WHERE src.{k} IS NULL OR st.key IS NULL OR st.status = 'sending' \
         OR (st.status IN ('rejected', 'dead') AND src.{h} = st.hash) \
         OR ((src.{h} IS DISTINCT FROM st.hash) AND (src.{h} IS DISTINCT FROM st.dead_hash))",
        ok = col::OLD_KEY,
        oh = col::OLD_HASH,
        op = col::OLD_PAYLOAD,
        at = col::ATTEMPTS,
        os = col::OLD_STATUS,
        k = col::KEY,
        h = col::HASH,
        name = literal(sync),
    )
}

/// The query that finds keys held by more than one row (at most `limit` of them).
pub fn duplicates_sql(source: &str, key: &[String], limit: usize) -> String {
    format!(
        "SELECT k, n FROM (SELECT {key} AS k, count(*) AS n FROM {source} GROUP BY 1) \
         WHERE k IS NOT NULL AND n > 1 ORDER BY n DESC, k LIMIT {limit}",
        key = key_expr(key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray};

    #[test]
    fn hashes_tell_null_from_empty_and_columns_apart() {
        let a: ArrayRef = Arc::new(StringArray::from(vec![
            Some("x"),
            None,
            Some(""),
            Some("x"),
        ]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(1), Some(1), Some(2)]));
        let h = hash_rows(&[a, b], 4).unwrap();
        let all: Vec<&[u8]> = (0..4).map(|i| h.value(i)).collect();
        for i in 0..4 {
            assert_eq!(all[i].len(), 16);
            for j in 0..i {
                assert_ne!(all[i], all[j], "rows {i} and {j} hash alike");
            }
        }
    }

    #[test]
    fn composite_keys_are_null_when_a_part_is() {
        let sql = key_expr(&["a".into(), "B".into()]);
        assert_eq!(
            sql,
            "CASE WHEN \"a\" IS NULL OR \"B\" IS NULL THEN NULL ELSE concat(CAST(\"a\" AS VARCHAR), chr(31), CAST(\"B\" AS VARCHAR)) END"
        );
        assert_eq!(display_key("a\u{1f}b"), "a, b");
    }
}
