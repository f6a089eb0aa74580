//! The differ: which rows of a sync's source are new, changed or gone since the last run.
//!
//! Each run hashes every source row (xxh3-128 of the Arrow row encoding of the columns the
//! sync reads, seeded by the mapping, so a mapping change re-sends every row) and compares it
//! with the sync's state in `_tideway.sync_state` (key, the hash and values last accepted by
//! the destination). The comparison is a hash join written for this one shape ([`Differ`]):
//! DataFusion scans and hashes the source in parallel; the state's keys and hashes (not its
//! stored values) are held in a compact table keyed by the key's 128-bit digest; the source streams past
//! it twice, once for its keys (to find the keys held by several rows before any row is sent)
//! and once for its rows. Both passes read one snapshot of the source. A row comes out when its
//! key is new, its hash differs, or its key is gone; everything else is dropped as it streams,
//! so memory grows with the state's key count (about 50 bytes a key with its text), not with
//! the rows' width.
//! The values a row last had at the destination (`metadata.previous`, `on_delete`) are read
//! from the state only for the rows that come out, and only when something uses them
//! ([`Differ::previous`]).
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
//! | present or gone | `sending` (a run crashed while delivering it, and no delivery of it was accepted since) | sent again: added, changed or removed, whatever its hash |

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Int64Builder, RecordBatch, StringArray, StringBuilder,
    UInt32Array, new_null_array,
};
use deltalake::arrow::compute::{cast, take};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::datafusion::catalog::TableProvider;
use deltalake::datafusion::common::TableReference;
use deltalake::datafusion::common::{Column, Result as DfResult};
use deltalake::datafusion::execution::SendableRecordBatchStream;
use deltalake::datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use deltalake::datafusion::prelude::{DataFrame, col as column, lit};
use futures::StreamExt;
use tideway_lake::{Lake, TableName};

use crate::{ActivateError, Result};

mod held;

use held::Refusals;

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
    /// When the key's current streak of refusals began (null: not refused).
    pub const REFUSED_SINCE: &str = "__tideway_refused_since";
    /// How many source rows hold the row's key (more than one: the key is not unique).
    pub const COPIES: &str = "__tideway_copies";
}

/// The query that finds keys held by more than one row: at most `limit` of them (`k`), each
/// with its rows (`n`) and how many keys are duplicated in all (`keys`).
pub fn duplicates_sql(source: &str, key: &[String], limit: usize) -> String {
    format!(
        "SELECT k, n, count(*) OVER () AS keys \
         FROM (SELECT {key} AS k, count(*) AS n FROM {source} GROUP BY 1) \
         WHERE k IS NOT NULL AND n > 1 ORDER BY n DESC, k LIMIT {limit}",
        key = key_expr(key)
    )
}

/// Source keys and state keys are xxh3-128 digests already: the maps use 64 of their bits as
/// the hash instead of hashing them again.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u128` keys are hashed here; this is the fallback the trait requires.
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_u128(&mut self, digest: u128) {
        self.0 = digest as u64;
    }
}

type DigestMap<V> = HashMap<u128, V, BuildHasherDefault<DigestHasher>>;

fn digest(key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

/// The rows of a sync's source to act on, batch by batch: the source's read columns, the key
/// and hash ([`col::KEY`], [`col::HASH`]), and what the state held ([`col::OLD_KEY`],
/// [`col::OLD_HASH`], [`col::ATTEMPTS`], [`col::OLD_STATUS`], [`col::REFUSED_SINCE`];
/// [`col::OLD_PAYLOAD`] is null,
/// see [`Differ::previous`]) and [`col::COPIES`]. Source rows come first, then the keys that
/// left the source.
pub struct Differ {
    sync: String,
    held: held::Held,
    /// Keys held by more than one source row: how many.
    copies: DigestMap<u32>,
    state: Option<Arc<dyn TableProvider>>,
    rows: Option<SendableRecordBatchStream>,
    schema: SchemaRef,
    removed: Option<std::vec::IntoIter<usize>>,
    /// Keys held by more than one source row.
    pub duplicated_keys: usize,
}

impl std::fmt::Debug for Differ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Differ")
            .field("sync", &self.sync)
            .field("held_keys", &self.held.len())
            .field("duplicated_keys", &self.duplicated_keys)
            .finish_non_exhaustive()
    }
}

/// Source rows per batch of removed keys.
const REMOVED_BATCH: usize = 8192;

impl Differ {
    /// Reads the state of `sync` and the keys of `source` (the first pass), ready to stream
    /// the rows that changed. `columns` are the source columns the sync reads; `seed` the
    /// mapping's fingerprint.
    pub async fn start(
        lake: &Lake,
        sync: &str,
        source: &TableName,
        key: &[String],
        columns: &[String],
        seed: u64,
    ) -> Result<Differ> {
        lake.refresh().await?;
        let session = lake.session();
        session.register_udf(row_hash_udf());
        let provider = |name: &TableName| {
            session.table_provider(TableReference::partial(
                name.schema().to_string(),
                name.table().to_string(),
            ))
        };
        // One snapshot of the source for both passes.
        let src = provider(source).await?;
        let state_table = crate::state::table(crate::state::STATE);
        let state = match lake.load(&state_table).await? {
            Some(_) => Some(provider(&state_table).await?),
            None => None,
        };
        let mut differ = Differ {
            sync: sync.to_string(),
            held: held::Held::default(),
            copies: DigestMap::default(),
            state,
            rows: None,
            schema: Arc::new(Schema::empty()),
            removed: None,
            duplicated_keys: 0,
        };
        let key_sql = key_expr(key);
        let df = session.read_table(src.clone())?;
        let key_only = df
            .clone()
            .select(vec![df.parse_sql_expr(&key_sql)?.alias(col::KEY)])?;
        // The first pass runs on its own task while this one reads the state.
        let clock = std::time::Instant::now();
        let counting = tokio::spawn(count_keys(key_only));
        if let Some(state) = &differ.state {
            differ.held = held::Held::read(lake, state.clone(), sync).await?;
        }
        let state_read = clock.elapsed();
        differ.copies = counting
            .await
            .map_err(|e| ActivateError::Internal(format!("counting the source's keys: {e}")))??;
        differ.duplicated_keys = differ.copies.len();
        tracing::debug!(
            sync,
            held = differ.held.len(),
            duplicated = differ.duplicated_keys,
            state_ms = state_read.as_millis() as u64,
            both_ms = clock.elapsed().as_millis() as u64,
            "diff: state read, source keys counted"
        );
        let mut select = vec![
            df.parse_sql_expr(&key_sql)?.alias(col::KEY),
            df.parse_sql_expr(&format!(
                "{ROW_HASH}(CAST({seed} AS BIGINT), {})",
                columns
                    .iter()
                    .map(|c| ident(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))?
            .alias(col::HASH),
        ];
        select.extend(
            columns
                .iter()
                .map(|c| Expr::Column(Column::from_name(c.as_str()))),
        );
        let rows = df.select(select)?;
        let mut fields: Vec<Field> = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        fields.extend([
            Field::new(col::OLD_KEY, DataType::Utf8, true),
            Field::new(col::OLD_HASH, DataType::Binary, true),
            Field::new(col::OLD_PAYLOAD, DataType::Utf8, true),
            Field::new(col::ATTEMPTS, DataType::Int64, false),
            Field::new(col::OLD_STATUS, DataType::Utf8, true),
            Field::new(col::REFUSED_SINCE, DataType::Int64, true),
            Field::new(col::COPIES, DataType::Int64, false),
        ]);
        differ.schema = Arc::new(Schema::new(fields));
        differ.rows = Some(rows.execute_stream().await?);
        Ok(differ)
    }

    /// The next rows to act on, or `None` when the diff is done.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        while let Some(stream) = &mut self.rows {
            match stream.next().await {
                Some(batch) => {
                    let out = self.changed(&batch?)?;
                    if out.num_rows() > 0 {
                        return Ok(Some(out));
                    }
                }
                None => {
                    tracing::debug!(sync = self.sync, "diff: source rows compared");
                    self.rows = None;
                }
            }
        }
        let removed = self
            .removed
            .get_or_insert_with(|| self.held.unseen().into_iter());
        let batch: Vec<usize> = removed.by_ref().take(REMOVED_BATCH).collect();
        if batch.is_empty() {
            return Ok(None);
        }
        self.gone(&batch).map(Some)
    }

    /// The second pass over one batch of source rows: the rows that are new or changed.
    fn changed(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let keys = Text::of(batch.column(0))?;
        let hashes = cast(batch.column(1), &DataType::Binary)?;
        let hashes = hashes.as_binary::<i32>();
        let code = |status| self.held.status_code(status);
        let (sending, rejected, dead) =
            (code(crate::state::SENDING), code("rejected"), code("dead"));
        let mut old = OldColumns::default();
        let mut picked: Vec<u32> = Vec::new();
        // Rows go through the table in groups: the digests and first slots of a group, then
        // their entries, each step's loads independent of one another (see `Held::probe`).
        const GROUP: usize = 32;
        let mut probes = [None; GROUP];
        let mut digests = [None; GROUP];
        for start in (0..batch.num_rows()).step_by(GROUP) {
            let rows = start..(start + GROUP).min(batch.num_rows());
            for (j, i) in rows.clone().enumerate() {
                digests[j] = keys.get(i).map(digest);
                probes[j] = digests[j].and_then(|d| self.held.probe(d));
            }
            let mut found = [None; GROUP];
            for j in 0..rows.len() {
                if let (Some(d), Some(p)) = (digests[j], probes[j]) {
                    found[j] = self.held.find_from(d, p);
                }
            }
            for (j, i) in rows.enumerate() {
                let (Some(key), Some(d)) = (keys.get(i), digests[j]) else {
                    picked.push(i as u32);
                    old.push(None, None, Refusals::default(), None, 1);
                    continue;
                };
                let copies = self.copies.get(&d).copied().unwrap_or(1);
                let Some(at) = found[j] else {
                    picked.push(i as u32);
                    old.push(None, None, Refusals::default(), None, copies);
                    continue;
                };
                self.held.entry_mut(at).seen = true;
                let held = self.held.entry(at);
                let hash = sixteen(hashes.value(i))?;
                let status = Some(held.status);
                let same = held.hash() == Some(&hash);
                let send = status == sending
                    || (same && (status == rejected || status == dead))
                    || (!same && self.held.dead(d) != Some(&hash));
                if send {
                    picked.push(i as u32);
                    old.push(
                        Some(key),
                        held.hash(),
                        self.held.refusals(at),
                        Some(self.held.status(at)),
                        copies,
                    );
                }
            }
        }
        if picked.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let indices = UInt32Array::from(picked);
        let mut columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<std::result::Result<_, _>>()?;
        columns.extend(old.finish());
        self.batch(columns)
    }

    /// Keys the state holds that no source row has any more.
    fn gone(&self, entries: &[usize]) -> Result<RecordBatch> {
        let n = entries.len();
        let source_columns = self.schema.fields().len() - OldColumns::COUNT;
        let mut columns: Vec<ArrayRef> = self.schema.fields()[..source_columns]
            .iter()
            .map(|f| new_null_array(f.data_type(), n))
            .collect();
        let mut old = OldColumns::default();
        for &i in entries {
            let key = self.held.key(i)?;
            old.push(
                Some(&key),
                self.held.entry(i).hash(),
                self.held.refusals(i),
                Some(self.held.status(i)),
                0,
            );
        }
        columns.extend(old.finish());
        self.batch(columns)
    }

    fn batch(&self, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
        // The source's columns may come out of the scan with other (equal) field metadata.
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    cast(&c, f.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| ActivateError::Internal(format!("the diff's rows: {e}")))
    }

    /// The reader of the values the destination last accepted, on this run's state snapshot.
    pub fn previous(&self) -> Previous {
        Previous {
            sync: self.sync.clone(),
            state: self.state.clone(),
        }
    }
}

/// Reads the values the destination last accepted (the state's `payload`) for given keys.
#[derive(Debug, Clone)]
pub struct Previous {
    sync: String,
    state: Option<Arc<dyn TableProvider>>,
}

impl Previous {
    /// The stored values of those of `keys` the state holds values for.
    pub async fn read(&self, lake: &Lake, keys: &[String]) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        let Some(state) = &self.state else {
            return Ok(out);
        };
        if keys.is_empty() {
            return Ok(out);
        }
        let wanted = keys.iter().map(|k| lit(k.as_str())).collect();
        let df = lake
            .session()
            .read_table(state.clone())?
            .filter(
                column("sync")
                    .eq(lit(self.sync.as_str()))
                    .and(column("key").in_list(wanted, false))
                    .and(column("payload").is_not_null()),
            )?
            .select_columns(&["key", "payload"])?;
        for batch in df.collect().await? {
            let keys = cast(batch.column(0), &DataType::Utf8)?;
            let payloads = cast(batch.column(1), &DataType::Utf8)?;
            let (keys, payloads) = (keys.as_string::<i32>(), payloads.as_string::<i32>());
            for i in 0..batch.num_rows() {
                out.insert(keys.value(i).to_string(), payloads.value(i).to_string());
            }
        }
        Ok(out)
    }
}

/// The first pass: the keys held by more than one source row, and by how many. The keys'
/// digests are sorted (16 bytes a row, dropped at the end) rather than counted in a map.
async fn count_keys(df: DataFrame) -> Result<DigestMap<u32>> {
    let mut digests: Vec<u128> = Vec::new();
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let keys = Text::of(batch.column(0))?;
        digests.reserve(batch.num_rows());
        digests.extend((0..batch.num_rows()).filter_map(|i| keys.get(i).map(digest)));
    }
    digests.sort_unstable();
    let mut copies: DigestMap<u32> = DigestMap::default();
    for run in digests.chunk_by(|a, b| a == b).filter(|run| run.len() > 1) {
        copies.insert(run[0], run.len().min(u32::MAX as usize) as u32);
    }
    Ok(copies)
}

/// A text column as the scan gives it (plain or view strings), read without a copy.
pub(crate) enum Text<'a> {
    Plain(&'a StringArray),
    View(&'a deltalake::arrow::array::StringViewArray),
    Other(ArrayRef),
}

impl<'a> Text<'a> {
    pub(crate) fn of(array: &'a ArrayRef) -> Result<Text<'a>> {
        Ok(match array.data_type() {
            DataType::Utf8 => Text::Plain(array.as_string::<i32>()),
            DataType::Utf8View => Text::View(array.as_string_view()),
            _ => Text::Other(cast(array, &DataType::Utf8)?),
        })
    }

    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        match self {
            Text::Plain(a) => a.is_valid(i).then(|| a.value(i)),
            Text::View(a) => a.is_valid(i).then(|| a.value(i)),
            Text::Other(a) => {
                let a = a.as_string::<i32>();
                a.is_valid(i).then(|| a.value(i))
            }
        }
    }
}

/// A binary column as the scan gives it (plain or view bytes), read without a copy.
pub(crate) enum Bytes<'a> {
    Plain(&'a deltalake::arrow::array::BinaryArray),
    View(&'a deltalake::arrow::array::BinaryViewArray),
    Other(ArrayRef),
}

impl<'a> Bytes<'a> {
    pub(crate) fn of(array: &'a ArrayRef) -> Result<Bytes<'a>> {
        Ok(match array.data_type() {
            DataType::Binary => Bytes::Plain(array.as_binary::<i32>()),
            DataType::BinaryView => Bytes::View(array.as_binary_view()),
            _ => Bytes::Other(cast(array, &DataType::Binary)?),
        })
    }

    pub(crate) fn get(&self, i: usize) -> Option<&[u8]> {
        match self {
            Bytes::Plain(a) => a.is_valid(i).then(|| a.value(i)),
            Bytes::View(a) => a.is_valid(i).then(|| a.value(i)),
            Bytes::Other(a) => {
                let a = a.as_binary::<i32>();
                a.is_valid(i).then(|| a.value(i))
            }
        }
    }
}

fn sixteen(bytes: &[u8]) -> Result<[u8; 16]> {
    bytes.try_into().map_err(|_| {
        ActivateError::Internal(format!(
            "a row hash of {} bytes (16 expected): the sync state is damaged",
            bytes.len()
        ))
    })
}

/// The state's columns of the rows that come out of the diff.
#[derive(Default)]
struct OldColumns {
    key: StringBuilder,
    hash: BinaryBuilder,
    payload: StringBuilder,
    attempts: Int64Builder,
    status: StringBuilder,
    refused_since: Int64Builder,
    copies: Int64Builder,
}

impl OldColumns {
    const COUNT: usize = 7;

    fn push(
        &mut self,
        key: Option<&str>,
        hash: Option<&[u8; 16]>,
        refusals: Refusals,
        status: Option<&str>,
        copies: u32,
    ) {
        self.key.append_option(key);
        self.hash.append_option(hash);
        self.payload.append_null();
        self.attempts.append_value(refusals.attempts);
        self.status.append_option(status);
        self.refused_since.append_option(refusals.since);
        self.copies.append_value(copies as i64);
    }

    fn finish(mut self) -> [ArrayRef; OldColumns::COUNT] {
        [
            Arc::new(self.key.finish()),
            Arc::new(self.hash.finish()),
            Arc::new(self.payload.finish()),
            Arc::new(self.attempts.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.refused_since.finish()),
            Arc::new(self.copies.finish()),
        ]
    }
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
