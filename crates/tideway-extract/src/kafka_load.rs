//! Kafka topics into the lake, exactly once: a source file with `type = "kafka"`.
//!
//! ```toml
//! # sources/clicks.toml: each topic lands in `clicks.<topic>` (and its child tables)
//! type = "kafka"
//! brokers = ["127.0.0.1:9092"]
//! topics = ["clicks"]
//! # group_id = "tideway-clicks"     # default: tideway-<source>; names the client, joins no group
//! start = "earliest"                # or "latest", or { timestamp_ms = 1767225600000 }
//! # max_batch_records = 10000      # records one poll returns
//! # max_wait_ms = 500               # how long a poll waits; `tideway serve` commits at least this often
//! # commit_records = 20000          # records per Delta commit
//! # [properties]                    # librdkafka properties; secrets only from ${VARS}
//! # "sasl.password" = "${KAFKA_PASSWORD}"
//!
//! [schema]                          # optional declared types (see [`crate::declared`])
//! response_time_ms = "bigint"       # "120" becomes 120; "fast" refuses the record
//! ```
//!
//! Each record's value is a JSON object; it goes through the shared normalizer (nested objects
//! flattened, lists into child tables) with the record's place kept in `_kafka_partition`,
//! `_kafka_offset`, `_kafka_timestamp` and `_kafka_key`. A value that is not a JSON object goes
//! to `_tideway.dead_letters` (source `kafka:<source>`, with the offset and the raw value);
//! tombstones (null values) carry no data and are counted in the report. With a `[schema]`,
//! declared fields are coerced to their type, and a record with a value that cannot be its
//! type is dead-lettered whole, naming the field (code `schema`).
//!
//! # Exactly once
//!
//! Kafka's offset commits are never used (see [`crate::kafka`]). Per topic, each commit of
//! rows is one Delta commit of the topic's table that carries the Delta transaction
//! `kafka:<source>:<topic>` (its version counts the batches) and, in its `commitInfo`
//! (`tideway.kafka`), the next offset of every partition of the topic: **the positions advance
//! in the same atomic commit as the rows they cover.** Child-table rows and dead letters are
//! written first as staged files (invisible) that the checkpoint names, and committed under
//! the same transaction right after ([`Lake::commit_with_staged`]); a run that finds a checkpoint
//! whose staged files were not committed (a crash in between) commits them before reading on.
//! A crash before the checkpoint leaves nothing visible, and the rerun reads those records
//! again from the previous positions: no duplicate and no gap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use futures::FutureExt;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tideway_core::config::{Diags, Secret};
use tideway_core::naming;
use tideway_lake::dead_letters::{self, DeadLetter};
use tideway_lake::{Lake, TableName, Txn};
use toml::Spanned;
use tracing::info;

use crate::error::{ExtractError, Result};
use crate::kafka::{
    KafkaReader, KafkaSourceConfig, Record, StartOffset, TopicPartition, is_secret_property,
};
use crate::normalize::{NormalizeOptions, Normalizer};
use crate::run::{ResourceReport, RunOptions, RunProgress, RunReport, existing_tables};

/// The `commitInfo` key of a topic table's commits: a [`Checkpoint`].
pub const COMMIT_KEY: &str = "tideway.kafka";

/// The columns that say where a row's record was.
pub const PARTITION: &str = "_kafka_partition";
pub const OFFSET: &str = "_kafka_offset";
pub const TIMESTAMP: &str = "_kafka_timestamp";
pub const KEY: &str = "_kafka_key";

/// A parsed `type = "kafka"` source file.
#[derive(Clone)]
pub struct KafkaSource {
    /// The client settings (brokers, topics, start, properties with secrets filled in).
    pub config: KafkaSourceConfig,
    /// Records per commit (default: the run's `flush_records`).
    pub commit_records: Option<usize>,
    /// Declared field types (`[schema]`).
    pub schema: crate::declared::Schema,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config's own Debug redacts secret properties.
        f.debug_struct("KafkaSource")
            .field("config", &self.config)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKafka {
    #[serde(rename = "type")]
    _kind: String,
    brokers: Vec<Spanned<String>>,
    topics: Spanned<Vec<String>>,
    group_id: Option<String>,
    #[serde(default)]
    start: StartOffset,
    max_batch_records: Option<usize>,
    max_wait_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    commit_records: Option<Spanned<usize>>,
    #[serde(default)]
    properties: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    schema: BTreeMap<String, Spanned<String>>,
}

impl KafkaSource {
    /// The checked source of `raw`, or `None` with the problems in `diags`.
    pub(crate) fn from_raw(
        name: &str,
        raw: RawKafka,
        diags: &mut Diags<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<KafkaSource> {
        let brokers: Vec<String> = raw
            .brokers
            .iter()
            .filter_map(|b| diags.plain(b, env))
            .collect();
        let mut config = KafkaSourceConfig::new(
            brokers,
            raw.topics.get_ref().clone(),
            raw.group_id.unwrap_or_else(|| format!("tideway-{name}")),
        );
        config.start = raw.start;
        if let Some(n) = raw.max_batch_records {
            config.max_batch_records = n;
        }
        if let Some(ms) = raw.max_wait_ms {
            config.max_wait = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = raw.request_timeout_ms {
            config.request_timeout = std::time::Duration::from_millis(ms);
        }
        for (key, value) in &raw.properties {
            let value = if is_secret_property(key) {
                Some(Secret::expose(&diags.secret(key, value, env)).to_string())
            } else {
                diags.plain(value, env)
            };
            if let Some(v) = value {
                config.properties.insert(key.clone(), v);
            }
        }
        let mut tables: BTreeMap<String, &str> = BTreeMap::new();
        for topic in &config.topics {
            let table = naming::normalize(topic);
            if let Some(other) = tables.insert(table.clone(), topic) {
                diags.at(
                    Some(raw.topics.span()),
                    format!("the topics `{other}` and `{topic}` would both land in the table `{name}.{table}`; read them with two sources"),
                );
            }
        }
        if let Err(e) = config.validate() {
            diags.at(None, e.to_string());
        }
        if let Some(n) = raw.commit_records.as_ref().filter(|n| *n.get_ref() == 0) {
            diags.at(
                Some(n.span()),
                "`commit_records` is the number of records per commit: 1 or more, e.g. 20000",
            );
        }
        let mut schema = crate::declared::Schema::default();
        for (field, kind) in &raw.schema {
            match crate::declared::Declared::parse(kind.get_ref()) {
                Some(d) => schema.0.push((field.clone(), d)),
                None => diags.at(
                    Some(kind.span()),
                    format!(
                        "`{field} = \"{}\"` is not a type; declare one of: {}",
                        kind.get_ref(),
                        crate::declared::TYPES.join(", ")
                    ),
                ),
            }
        }
        Some(KafkaSource {
            config,
            commit_records: raw.commit_records.map(Spanned::into_inner),
            schema,
        })
    }
}

/// What a topic table's commit records: where the next read of each partition starts and
/// the batch number (the Delta transaction's version). The lake adds the staged files it
/// covers ([`Lake::commit_with_staged`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    batch: i64,
    /// Partition → the next offset to read.
    positions: BTreeMap<i32, i64>,
}

/// One topic's load: its table, normalizer and counts.
struct Topic {
    topic: String,
    table: TableName,
    app: String,
    normalizer: Normalizer,
    committed: Checkpoint,
    report: ResourceReport,
    tombstones: u64,
    dead: u64,
}

/// Loads the topics of one Kafka source into the lake.
#[derive(Debug)]
pub struct KafkaLoader {
    lake: Lake,
    name: String,
    source: KafkaSource,
    options: RunOptions,
    progress: Arc<RunProgress>,
}

impl KafkaLoader {
    /// A loader of `source` (named `name`: its lake schema).
    pub fn new(lake: Lake, name: &str, source: KafkaSource, options: RunOptions) -> KafkaLoader {
        KafkaLoader {
            lake,
            name: name.to_string(),
            source,
            options,
            progress: Arc::new(RunProgress::default()),
        }
    }

    /// Live counters, for a progress bar.
    pub fn progress(&self) -> Arc<RunProgress> {
        self.progress.clone()
    }

    /// The table `topic` lands in.
    pub fn table_of(&self, topic: &str) -> Result<TableName> {
        Ok(TableName::new(&self.name, &naming::normalize(topic))?)
    }

    /// Reads every topic up to the end it has when the run starts, committing every
    /// `commit_records` records, then stops.
    pub async fn run(&self) -> Result<RunReport> {
        let started = Instant::now();
        let (mut reader, mut topics) = self.open().await?;
        let end = reader.high_watermarks().await.map_err(|e| self.kafka(e))?;
        let mut buffer: Vec<Record> = Vec::new();
        while let Some(batch) = reader
            .poll_batch_to(&end)
            .await
            .map_err(|e| self.kafka(e))?
        {
            self.count(&batch);
            buffer.extend(batch);
            if buffer.len() >= self.commit_records() {
                self.commit(&mut topics, std::mem::take(&mut buffer), reader.positions())
                    .await?;
            }
        }
        self.commit(&mut topics, buffer, reader.positions()).await?;
        Ok(self.report(topics, started))
    }

    /// Reads on as records arrive, committing every `commit_records` records or `max_wait`,
    /// until `stop` resolves (checked between polls, each at most `max_wait`); then commits
    /// what it has read and returns.
    pub async fn follow(&self, stop: impl std::future::Future<Output = ()>) -> Result<RunReport> {
        let started = Instant::now();
        let (mut reader, mut topics) = self.open().await?;
        let mut buffer: Vec<Record> = Vec::new();
        let mut since = Instant::now();
        tokio::pin!(stop);
        loop {
            // A poll is never cut short: the records it took are in its batch, and the
            // positions have moved past them.
            let batch = reader.poll_batch().await.map_err(|e| self.kafka(e))?;
            self.count(&batch);
            buffer.extend(batch);
            if buffer.len() >= self.commit_records()
                || (!buffer.is_empty() && since.elapsed() >= self.source.config.max_wait)
            {
                self.commit(&mut topics, std::mem::take(&mut buffer), reader.positions())
                    .await?;
                since = Instant::now();
            }
            if (&mut stop).now_or_never().is_some() {
                break;
            }
        }
        self.commit(&mut topics, buffer, reader.positions()).await?;
        Ok(self.report(topics, started))
    }

    fn commit_records(&self) -> usize {
        self.source
            .commit_records
            .unwrap_or(self.options.flush_records)
    }

    fn kafka(&self, error: crate::kafka::KafkaError) -> ExtractError {
        ExtractError::Kafka {
            source_name: self.name.clone(),
            error,
        }
    }

    fn count(&self, batch: &[Record]) {
        let bytes: usize = batch
            .iter()
            .map(|r| r.value.as_ref().map_or(0, Vec::len))
            .sum();
        self.progress.pages.fetch_add(1, Ordering::Relaxed);
        self.progress
            .records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.progress
            .bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Connects, finishes any commit a crash cut, and places the reader at the committed
    /// positions.
    async fn open(&self) -> Result<(KafkaReader, Vec<Topic>)> {
        if self.options.full_refresh {
            for topic in &self.source.config.topics {
                let table = self.table_of(topic)?;
                for (name, _) in existing_tables(&self.lake, &table).await? {
                    info!(table = %name, "dropping for a full refresh");
                    self.lake.drop_table(&name).await?;
                }
            }
        }
        let mut reader = KafkaReader::connect(self.source.config.clone())
            .await
            .map_err(|e| self.kafka(e))?;
        *self.progress.resource.lock().expect("progress lock") =
            self.source.config.topics.join(", ");
        let mut topics = Vec::new();
        let mut positions: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for topic in &self.source.config.topics {
            let table = self.table_of(topic)?;
            let app = format!("kafka:{}:{topic}", self.name);
            let committed = self.checkpoint(&table, &app).await?;
            positions.extend(
                committed
                    .positions
                    .iter()
                    .map(|(p, next)| ((topic.clone(), *p), *next)),
            );
            let schemas: FxHashMap<String, _> = existing_tables(&self.lake, &table)
                .await?
                .into_iter()
                .map(|(name, schema)| (name.table().to_string(), schema))
                .collect();
            topics.push(Topic {
                topic: topic.clone(),
                normalizer: Normalizer::new(table.table(), NormalizeOptions::default())
                    .with_schemas(schemas),
                report: ResourceReport {
                    resource: topic.clone(),
                    mode: if committed.batch == 0 {
                        "full"
                    } else {
                        "incremental"
                    },
                    pages: 0,
                    records: 0,
                    tables: BTreeMap::new(),
                    cursor: None,
                    commits: 0,
                },
                table,
                app,
                committed,
                tombstones: 0,
                dead: 0,
            });
        }
        reader.assign(&positions);
        Ok((reader, topics))
    }

    /// The newest checkpoint of a topic table, its staged files committed.
    async fn checkpoint(&self, table: &TableName, app: &str) -> Result<Checkpoint> {
        let Some((found, _)) = self
            .lake
            .roll_forward_staged(table, app, COMMIT_KEY, |_| true)
            .await?
        else {
            return Ok(Checkpoint::default());
        };
        serde_json::from_value(found).map_err(|e| ExtractError::Checkpoint {
            source_name: self.name.clone(),
            table: table.to_string(),
            message: e.to_string(),
        })
    }

    /// Commits `records` (read up to `positions`), topic by topic.
    async fn commit(
        &self,
        topics: &mut [Topic],
        records: Vec<Record>,
        positions: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let mut by_topic: BTreeMap<&str, Vec<Record>> = BTreeMap::new();
        for r in records {
            let topic = topics
                .iter()
                .find(|t| t.topic == r.topic)
                .map(|t| t.topic.as_str());
            if let Some(t) = topic {
                by_topic.entry(t).or_default().push(r);
            }
        }
        let mut work: Vec<(usize, Vec<Record>)> = Vec::new();
        for (i, t) in topics.iter().enumerate() {
            work.push((i, by_topic.remove(t.topic.as_str()).unwrap_or_default()));
        }
        for (i, records) in work {
            let topic = &mut topics[i];
            let next: BTreeMap<i32, i64> = positions
                .iter()
                .filter(|((t, _), _)| *t == topic.topic)
                .map(|((_, p), o)| (*p, *o))
                .collect();
            if records.is_empty() && next == topic.committed.positions {
                continue;
            }
            self.commit_topic(topic, records, next).await?;
        }
        Ok(())
    }

    async fn commit_topic(
        &self,
        topic: &mut Topic,
        records: Vec<Record>,
        positions: BTreeMap<i32, i64>,
    ) -> Result<()> {
        let origin = format!("kafka:{}", self.name);
        let mut dead = Vec::new();
        topic.report.records += records.len() as u64;
        for r in &records {
            let Some(value) = &r.value else {
                topic.tombstones += 1;
                continue;
            };
            let refuse = |code: &str, reason: String| DeadLetter {
                source: origin.clone(),
                table: Some(topic.table.to_string()),
                stage: "load".into(),
                code: code.into(),
                field: None,
                reason: format!("{}/{} offset {}: {reason}", r.topic, r.partition, r.offset),
                message_id: None,
                received_at: r.timestamp_ms.map(|ms| ms * 1000),
                offset: Some(r.offset),
                payload: String::from_utf8_lossy(value).into_owned(),
            };
            let mut fields = match serde_json::from_slice::<Value>(value) {
                Ok(Value::Object(fields)) => fields,
                Ok(other) => {
                    dead.push(refuse(
                        "not_an_object",
                        format!(
                            "the value is {}, not a JSON object",
                            crate::normalize::json_type(&other)
                        ),
                    ));
                    continue;
                }
                Err(e) => {
                    dead.push(refuse("not_json", format!("the value is not JSON: {e}")));
                    continue;
                }
            };
            if let Err((field, reason)) = self.source.schema.apply(&mut fields) {
                dead.push(DeadLetter {
                    field: Some(field),
                    ..refuse("schema", reason)
                });
                continue;
            }
            let record = with_place(fields, r);
            if let Err(e) = topic.normalizer.push(&record) {
                dead.push(refuse("not_loadable", e.to_string()));
            }
        }
        topic.dead += dead.len() as u64;
        let batch = topic.committed.batch + 1;
        let txn = || Txn::new(topic.app.clone(), batch);
        let mut root: Option<RecordBatch> = None;
        let mut staged = Vec::new();
        for t in topic.normalizer.finish() {
            if t.level == 0 {
                root = Some(t.batch);
                continue;
            }
            let name = TableName::new(&self.name, &t.table)?;
            staged.push(self.lake.stage(&name, vec![t.batch]).await?);
        }
        if !dead.is_empty() {
            staged.push(
                self.lake
                    .stage(&dead_letters::table(), vec![dead_letters::batch(&dead)])
                    .await?,
            );
        }
        // No row for the topic table (only tombstones or dead letters): the checkpoint still
        // needs a commit, an empty one.
        let root = match root {
            Some(batch) => batch,
            None => match self.lake.load(&topic.table).await? {
                Some(_) => RecordBatch::new_empty(self.lake.schema(&topic.table).await?),
                None => RecordBatch::new_empty(Arc::new(Schema::new(vec![
                    Field::new(PARTITION, DataType::Int64, true),
                    Field::new(OFFSET, DataType::Int64, true),
                ]))),
            },
        };
        let rows = root.num_rows() as u64;
        let mut counts = vec![(topic.table.to_string(), rows)];
        counts.extend(staged.iter().map(|s| (s.table.clone(), s.rows)));
        let checkpoint = Checkpoint { batch, positions };
        let Ok(Value::Object(meta)) = serde_json::to_value(&checkpoint) else {
            unreachable!("a checkpoint serializes to a JSON object")
        };
        let write = self.lake.append(&topic.table, vec![root]);
        self.lake
            .commit_with_staged(write, txn(), COMMIT_KEY, meta, staged)
            .await?;
        for (table, n) in counts {
            *topic.report.tables.entry(table.clone()).or_default() += n;
            *self
                .progress
                .rows
                .lock()
                .expect("progress lock")
                .entry(table)
                .or_default() += n;
        }
        topic.report.commits += 1;
        topic.report.pages += 1;
        topic.committed = checkpoint;
        Ok(())
    }

    fn report(&self, topics: Vec<Topic>, started: Instant) -> RunReport {
        let resources = topics
            .into_iter()
            .map(|mut t| {
                let positions: Vec<String> = t
                    .committed
                    .positions
                    .iter()
                    .map(|(p, o)| format!("{p}@{o}"))
                    .collect();
                let mut cursor = positions.join(" ");
                if t.tombstones > 0 || t.dead > 0 {
                    cursor.push_str(&format!(
                        " ({} tombstones skipped, {} dead letters)",
                        t.tombstones, t.dead
                    ));
                }
                t.report.cursor = Some(cursor);
                info!(
                    source = self.name,
                    topic = t.topic,
                    records = t.report.records,
                    tombstones = t.tombstones,
                    dead = t.dead,
                    "kafka topic loaded"
                );
                t.report
            })
            .collect();
        RunReport {
            source: self.name.clone(),
            resources,
            requests: 0,
            rate_limited: 0,
            retried: 0,
            bytes: self.progress.bytes.load(Ordering::Relaxed),
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// The record's fields and where it was: partition, offset, time and key.
fn with_place(mut fields: Map<String, Value>, r: &Record) -> Value {
    fields.insert(PARTITION.into(), json!(r.partition));
    fields.insert(OFFSET.into(), json!(r.offset));
    if let Some(at) = r
        .timestamp_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
    {
        fields.insert(
            TIMESTAMP.into(),
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
    }
    if let Some(key) = &r.key {
        fields.insert(KEY.into(), json!(String::from_utf8_lossy(key)));
    }
    Value::Object(fields)
}
