//! `_tideway.dead_letters`: everything a part of Tideway refused or gave up on, with who gave
//! up, why, and the raw payload, so that nothing is dropped silently. One layout for every
//! writer: the collector (events that failed validation or loading), syncs and live
//! forwarding (rows and events a destination kept refusing), Kafka sources (records that are
//! not JSON objects).
//!
//! ```no_run
//! # async fn f(lake: &tideway_lake::Lake) -> tideway_lake::Result<()> {
//! use tideway_lake::dead_letters::{self, DeadLetter};
//! let letter = DeadLetter {
//!     source: "kafka:clicks".into(),
//!     table: Some("clicks.clicks".into()),
//!     stage: "load".into(),
//!     code: "not_json".into(),
//!     reason: "the value is not JSON: expected value at line 1 column 1".into(),
//!     payload: "oops".into(),
//!     ..Default::default()
//! };
//! lake.append(&dead_letters::table(), vec![dead_letters::batch(&[letter])]).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use chrono::Utc;
use deltalake::arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::{SYSTEM_SCHEMA, TableName};

/// The table's name in the `_tideway` schema.
pub const DEAD_LETTERS: &str = "dead_letters";

/// `_tideway.dead_letters`.
pub fn table() -> TableName {
    TableName::new(SYSTEM_SCHEMA, DEAD_LETTERS).expect("a valid system table name")
}

/// One refused event, row or record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeadLetter {
    /// Who gave up on it: a collect source's name, `sync:<name>`, `forward:<connection>`,
    /// `kafka:<source>`.
    pub source: String,
    /// The table it came from or was going to.
    pub table: Option<String>,
    /// The step that refused it (`validate`, `load`, `deliver`...).
    pub stage: String,
    /// A short machine-readable reason (`invalid_timestamp`, an HTTP status, `not_json`).
    pub code: String,
    /// The field at fault, or the row's key.
    pub field: Option<String>,
    /// What is wrong, for a person.
    pub reason: String,
    pub message_id: Option<String>,
    /// When it was received (micros since the epoch), if it was.
    pub received_at: Option<i64>,
    /// Its position in the stream it came from (the event log's offset, a Kafka offset).
    pub offset: Option<i64>,
    /// The raw event, row or record.
    pub payload: String,
}

fn time() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The rows of `dead`, in the table's layout, `failed_at` now.
pub fn batch(dead: &[DeadLetter]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("source", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, true),
        Field::new("stage", DataType::Utf8, true),
        Field::new("code", DataType::Utf8, true),
        Field::new("field", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("message_id", DataType::Utf8, true),
        Field::new("received_at", time(), true),
        Field::new("log_offset", DataType::Int64, true),
        Field::new("payload", DataType::Utf8, true),
        Field::new("failed_at", time(), true),
    ]);
    let strings = |f: &dyn Fn(&DeadLetter) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::new();
        dead.iter().for_each(|d| b.append_option(f(d)));
        Arc::new(b.finish())
    };
    let now = Utc::now().timestamp_micros();
    let mut received = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut offsets = Int64Builder::new();
    let mut failed = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for d in dead {
        received.append_option(d.received_at);
        offsets.append_option(d.offset);
        failed.append_value(now);
    }
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            strings(&|d| Some(&d.source)),
            strings(&|d| d.table.as_deref()),
            strings(&|d| Some(&d.stage)),
            strings(&|d| Some(&d.code)),
            strings(&|d| d.field.as_deref()),
            strings(&|d| Some(&d.reason)),
            strings(&|d| d.message_id.as_deref()),
            Arc::new(received.finish()),
            Arc::new(offsets.finish()),
            strings(&|d| Some(&d.payload)),
            Arc::new(failed.finish()),
        ],
    )
    .expect("dead letters are built to the schema")
}
