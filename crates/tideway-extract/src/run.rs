//! A run: every resource of a source, page by page, into the lake, exactly once.
//!
//! For each resource, records are normalized (see [`crate::normalize`]) and committed every
//! [`RunOptions::flush_records`] records, in this order:
//!
//! 1. the child resources of the records in the batch (e.g. Kustomer `messages` of each
//!    conversation), fetched and merged by primary key;
//! 2. the child tables of the batch (`customers__emails`, ...): each record's old child rows
//!    are replaced by the new ones (by `_tideway_root_id`), so a list that shrank loses its
//!    old elements;
//! 3. the root table: merged by `_tideway_id` (a hash of the primary key), or appended. This
//!    commit carries the resource's state (the cursor, the ids at the cursor value, the batch
//!    number) in its `commitInfo` and a Delta transaction identifier: **the cursor advances
//!    in the same atomic commit as the rows it covers.**
//!
//! Steps 2 and 3 of a batch run on a task of their own while the next batch is read and
//! normalized; a batch's commits start only after the previous batch's have finished, so the
//! order above holds across batches.
//!
//! A crash anywhere leaves the cursor at the last root commit. The rerun reads again from
//! there: the root rows merge by key and the child rows are replaced by root id, so nothing
//! is duplicated and nothing is missed. A run that starts on an empty table (first run, or
//! `--full-refresh`) appends instead of merging, which is much faster; it switches to merging
//! if the API returns a record twice (a record updated during the run moves to the end of a
//! sorted search).
//!
//! Incremental reads ask for records whose cursor is at or after the last cursor (minus the
//! `lookback`); the records at exactly the last cursor value that the previous run loaded
//! are skipped by id. When a query stops at the API's result cap (Kustomer's search: 10,000),
//! a new query starts at the last cursor value seen, skipping what it has: no gap and no
//! duplicate at ties or at the cap.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::SchemaRef;
use futures::{StreamExt, TryStreamExt};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tideway_core::naming;
use tideway_core::time::parse_time;
use tideway_lake::{Lake, TableName, Txn};
use tracing::{debug, info};

use crate::config::{Resource, RestSource, SourceConfig, SourceKind, WriteDisposition};
use crate::error::{ExtractError, Result};
use crate::http::Client;
use crate::normalize::{ID, NormalizeOptions, NormalizedTable, Normalizer, ROOT_ID};
use crate::page;

/// The `commitInfo` key that holds a resource's state.
pub const STATE_KEY: &str = "tideway.extract";

/// How many recent commits of a root table are searched for its state.
const STATE_HISTORY: usize = 200;

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Drop the source's tables and state first, and read everything again.
    pub full_refresh: bool,
    /// Only these resources (and their child resources); empty for all.
    pub resources: Vec<String>,
    /// Records per commit, at most.
    pub flush_records: usize,
    /// Bytes of normalized rows buffered before a commit, at most (bounds memory).
    pub flush_bytes: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            full_refresh: false,
            resources: Vec::new(),
            flush_records: 20_000,
            flush_bytes: 16 << 20,
        }
    }
}

/// Live counters of a run, for a progress bar.
#[derive(Debug, Default)]
pub struct RunProgress {
    /// Pages read.
    pub pages: AtomicU64,
    /// Records read.
    pub records: AtomicU64,
    /// Bytes of JSON read.
    pub bytes: AtomicU64,
    /// Rows committed, per table.
    pub rows: Mutex<BTreeMap<String, u64>>,
    /// The resource being read.
    pub resource: Mutex<String>,
}

/// What a run did, resource by resource.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The source's name.
    pub source: String,
    /// One entry per resource read.
    pub resources: Vec<ResourceReport>,
    /// Requests sent (attempts, including retries).
    pub requests: u64,
    /// 429 answers waited out.
    pub rate_limited: u64,
    /// Failures retried (5xx, timeouts, connection errors).
    pub retried: u64,
    /// Bytes read from the API.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

/// What a run did with one resource.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceReport {
    /// The resource.
    pub resource: String,
    /// `full` (no cursor yet), `incremental` or `child`.
    pub mode: &'static str,
    /// Pages read.
    pub pages: u64,
    /// Records read (after skipping ones already loaded).
    pub records: u64,
    /// Rows written per table (`schema.table`).
    pub tables: BTreeMap<String, u64>,
    /// The cursor after the run.
    pub cursor: Option<String>,
    /// Commits made.
    pub commits: u64,
}

/// A resource's state, kept in the `commitInfo` of its root table's commits.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ResourceState {
    /// The largest cursor value loaded.
    pub cursor: Option<String>,
    /// The `_tideway_id`s of the loaded records whose cursor is exactly `cursor`.
    #[serde(default)]
    pub tied: Vec<String>,
    /// The number of the last batch committed.
    pub batch: i64,
}

/// Extracts one source into the lake.
#[derive(Debug)]
pub struct Extractor {
    lake: Lake,
    source: Arc<SourceConfig>,
    rest: Arc<RestSource>,
    client: Client,
    options: RunOptions,
    progress: Arc<RunProgress>,
}

impl Extractor {
    /// An extractor of `source` into `lake`.
    pub fn new(lake: Lake, source: SourceConfig, options: RunOptions) -> Result<Extractor> {
        let SourceKind::Rest(rest) = &source.kind else {
            return Err(ExtractError::Internal(format!(
                "{}: a Kafka source is loaded by `KafkaLoader`, not `Extractor`",
                source.name
            )));
        };
        let rest = Arc::new(rest.clone());
        let client = Client::new(&source.name, &rest)?;
        Ok(Extractor {
            lake,
            source: Arc::new(source),
            rest,
            client,
            options,
            progress: Arc::new(RunProgress::default()),
        })
    }

    /// The live counters of the run.
    pub fn progress(&self) -> Arc<RunProgress> {
        self.progress.clone()
    }

    /// The lake table of a resource.
    pub fn table_of(&self, resource: &str) -> Result<TableName> {
        Ok(TableName::new(
            &self.source.name,
            &naming::normalize(resource),
        )?)
    }

    /// The committed state of `resource`.
    pub async fn state(&self, resource: &str) -> Result<Option<ResourceState>> {
        let table = self.table_of(resource)?;
        let value = self
            .lake
            .commit_metadata(&table, STATE_KEY, STATE_HISTORY)
            .await?;
        Ok(value.and_then(|v| serde_json::from_value(v).ok()))
    }

    /// Checks the source against its API: the first page of each top resource, so that a
    /// wrong URL, a refused key or a wrong `records` path shows before a run. Returns the
    /// records on each first page.
    pub async fn check(&self) -> Result<Vec<(String, usize)>> {
        let mut out = Vec::new();
        for resource in self.rest.resources.iter().filter(|r| r.parent.is_none()) {
            let start = resource.incremental.as_ref().map(|i| i.initial.clone());
            let request = page::first(&self.rest.base_url, resource, None, start.as_deref())
                .map_err(|m| self.page_error(resource, "", m))?;
            let body = page::body(resource, start.as_deref());
            let response = self
                .client
                .send(resource.method, &request.url, body.as_deref())
                .await?;
            let (_, records) = self.parse_page(resource, &response)?;
            out.push((resource.name.clone(), records.len()));
        }
        Ok(out)
    }

    /// Runs every selected resource, parents before children.
    pub async fn run(&self) -> Result<RunReport> {
        let started = Instant::now();
        let rest = &self.rest;
        let selected: Vec<&Resource> = rest
            .resources
            .iter()
            .filter(|r| {
                self.options.resources.is_empty()
                    || self.options.resources.contains(&r.name)
                    || r.parent
                        .as_ref()
                        .is_some_and(|p| self.options.resources.contains(p))
            })
            .collect();
        if let Some(unknown) = self
            .options
            .resources
            .iter()
            .find(|n| !rest.resources.iter().any(|r| &r.name == *n))
        {
            return Err(ExtractError::Page {
                source_name: self.source.name.clone(),
                resource: unknown.clone(),
                url: rest.base_url.to_string(),
                message: format!(
                    "no such resource; resources of {}: {}",
                    self.source.file,
                    rest.resources
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let mut reports = Vec::new();
        for resource in selected.iter().filter(|r| r.parent.is_none()) {
            let children: Vec<&Resource> = selected
                .iter()
                .filter(|c| c.parent.as_deref() == Some(&resource.name))
                .copied()
                .collect();
            let mut report = self.run_resource(resource, &children).await?;
            reports.append(&mut report);
        }
        let stats = self.client.stats();
        Ok(RunReport {
            source: self.source.name.clone(),
            resources: reports,
            requests: stats.requests.load(Ordering::Relaxed),
            rate_limited: stats.rate_limited.load(Ordering::Relaxed),
            retried: stats.retried.load(Ordering::Relaxed),
            bytes: stats.bytes.load(Ordering::Relaxed),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    async fn run_resource(
        &self,
        resource: &Resource,
        children: &[&Resource],
    ) -> Result<Vec<ResourceReport>> {
        let root = self.table_of(&resource.name)?;
        *self.progress.resource.lock().expect("progress lock") = resource.name.clone();
        if self.options.full_refresh || resource.write == WriteDisposition::Replace {
            for table in std::iter::once(&resource.name).chain(children.iter().map(|c| &c.name)) {
                let name = self.table_of(table)?;
                for (t, _) in existing_tables(&self.lake, &name).await? {
                    info!(table = %t, "dropping for a full refresh");
                    self.lake.drop_table(&t).await?;
                }
            }
        }
        let state = self.state(&resource.name).await?;
        let existing = existing_tables(&self.lake, &root).await?;
        let fresh = state.is_none() && existing.is_empty();
        let mut load = Load::new(self, resource, &root, existing, fresh, state.clone())?;
        let mut child_loads = Vec::new();
        for child in children {
            let table = self.table_of(&child.name)?;
            let existing = existing_tables(&self.lake, &table).await?;
            let fresh = existing.is_empty();
            let state = self.state(&child.name).await?;
            child_loads.push(Load::new(self, child, &table, existing, fresh, state)?);
        }

        let inc = resource.incremental.as_ref();
        let start = match (&state, inc) {
            (
                Some(ResourceState {
                    cursor: Some(c), ..
                }),
                Some(inc),
            ) => Some(minus(c, inc.lookback)),
            (_, Some(inc)) => Some(inc.initial.clone()),
            _ => None,
        };
        // The records at exactly the start value that are loaded already.
        let mut skip = match (&state, &start) {
            (Some(s), Some(start)) if s.cursor.as_ref() == Some(start) => Skip {
                at: Some(start.clone()),
                ids: s.tied.iter().cloned().collect(),
            },
            _ => Skip::default(),
        };
        let mut query_start = start.clone();
        let mut query_count: u64 = 0;
        let mut request = page::first(&self.rest.base_url, resource, None, start.as_deref())
            .map_err(|m| self.page_error(resource, "", m))?;
        let mut pages = 0u64;
        // The next page is requested while this one is normalized and committed.
        let mut prefetched: Option<tokio::task::JoinHandle<Result<crate::http::Response>>> = None;
        loop {
            let body = page::body(resource, query_start.as_deref());
            let response = match prefetched.take() {
                Some(task) => task.await.map_err(|e| {
                    self.page_error(
                        resource,
                        request.url.as_str(),
                        format!("the request task failed: {e}"),
                    )
                })??,
                None => {
                    self.client
                        .send(resource.method, &request.url, body.as_deref())
                        .await?
                }
            };
            pages += 1;
            self.progress.pages.fetch_add(1, Ordering::Relaxed);
            self.progress
                .bytes
                .fetch_add(response.body.len() as u64, Ordering::Relaxed);
            let (doc, records) = self.parse_page(resource, &response)?;
            let n = records.len();
            query_count += n as u64;
            let next = page::next(&resource.pagination, &request, &response, &doc, n);
            // At the API's result cap: a new query from the last cursor value.
            let cap = inc.and_then(|i| i.restart_after).filter(|cap| {
                query_count >= *cap || (next.is_some() && query_count + n as u64 > *cap)
            });
            if let (Some(next), None) = (&next, cap) {
                let (client, url, method) =
                    (self.client.clone(), next.url.clone(), resource.method);
                prefetched = Some(tokio::spawn(async move {
                    client.send(method, &url, body.as_deref()).await
                }));
            }
            for record in records {
                let cursor = inc
                    .and_then(|i| page::at_path(&record, &i.cursor))
                    .and_then(text);
                load.push(self, record, cursor.as_deref(), &skip, children)?;
            }
            self.progress.records.fetch_add(n as u64, Ordering::Relaxed);
            if load.normalizer.records() >= self.options.flush_records + load.flushed_records
                || load.normalizer.buffered_bytes() >= self.options.flush_bytes
            {
                load.flush(self, false, &mut child_loads).await?;
            }
            if let Some(cap) = cap {
                let last = load.max_cursor.clone();
                let stuck = match (&last, &query_start) {
                    (None, _) => true,
                    (Some(l), Some(s)) => compare(l, s).is_eq(),
                    (Some(_), None) => false,
                };
                if stuck {
                    return Err(ExtractError::TooManyTies {
                        source_name: self.source.name.clone(),
                        resource: resource.name.clone(),
                        cap,
                        value: last.unwrap_or_default(),
                    });
                }
                debug!(resource = %resource.name, cursor = ?last, "result cap reached; restarting the query at the last cursor");
                skip = Skip {
                    at: last.clone(),
                    ids: load.at_max.iter().cloned().collect(),
                };
                query_start = last;
                query_count = 0;
                request = page::first(&self.rest.base_url, resource, None, query_start.as_deref())
                    .map_err(|m| self.page_error(resource, "", m))?;
                continue;
            }
            let Some(next) = next else { break };
            request = next;
        }
        load.flush(self, true, &mut child_loads).await?;
        let mode = match (&state, inc) {
            (_, None) => "full",
            (None, _) => "full",
            (Some(_), _) => "incremental",
        };
        let mut reports = vec![ResourceReport {
            resource: resource.name.clone(),
            mode,
            pages,
            records: load.normalizer.records() as u64,
            tables: load.rows.clone(),
            cursor: load.committed.cursor.clone(),
            commits: load.commits,
        }];
        for child in child_loads {
            reports.push(ResourceReport {
                resource: child.resource.name.clone(),
                mode: "child",
                pages: child.pages,
                records: child.normalizer.records() as u64,
                tables: child.rows.clone(),
                cursor: None,
                commits: child.commits,
            });
        }
        Ok(reports)
    }

    /// A page's JSON and its records (taken out of it; the rest stays for pagination).
    fn parse_page(
        &self,
        resource: &Resource,
        response: &crate::http::Response,
    ) -> Result<(Value, Vec<Value>)> {
        let url = response.url.as_str();
        let mut doc: Value = serde_json::from_slice(&response.body)
            .map_err(|e| self.page_error(resource, url, format!("the page is not JSON: {e}")))?;
        let records =
            select(&mut doc, &resource.records).map_err(|m| self.page_error(resource, url, m))?;
        Ok((doc, records))
    }

    fn page_error(&self, resource: &Resource, url: &str, message: String) -> ExtractError {
        ExtractError::Page {
            source_name: self.source.name.clone(),
            resource: resource.name.clone(),
            url: url.to_string(),
            message,
        }
    }

    /// Reads every page of a child resource for one parent record.
    async fn child_records(
        &self,
        resource: &Resource,
        parent: &Value,
    ) -> Result<(u64, Vec<Value>)> {
        let mut request = page::first(&self.rest.base_url, resource, Some(parent), None)
            .map_err(|m| self.page_error(resource, "", m))?;
        let mut out = Vec::new();
        let mut pages = 0;
        loop {
            let body = page::body(resource, None);
            let response = self
                .client
                .send(resource.method, &request.url, body.as_deref())
                .await?;
            pages += 1;
            self.progress.pages.fetch_add(1, Ordering::Relaxed);
            let (doc, records) = self.parse_page(resource, &response)?;
            let n = records.len();
            out.extend(records);
            match page::next(&resource.pagination, &request, &response, &doc, n) {
                Some(next) => request = next,
                None => return Ok((pages, out)),
            }
        }
    }
}

/// Records to skip: those with these root ids whose cursor is `at` (loaded already).
#[derive(Debug, Default)]
struct Skip {
    at: Option<String>,
    ids: FxHashSet<String>,
}

/// The loading of one resource's records into its tables.
struct Load<'r> {
    resource: &'r Resource,
    root: TableName,
    normalizer: Normalizer,
    /// The run started on empty tables: append instead of merge.
    fresh: bool,
    /// Root ids loaded in this run (fresh runs only, to notice a record seen twice).
    seen: FxHashSet<u128>,
    /// Root ids of the batch being built.
    batch_ids: Vec<String>,
    /// Parent records of the batch, for child resources (only the fields paths use).
    parents: Vec<Value>,
    /// Child tables in the lake or found in this run.
    child_tables: BTreeSet<String>,
    max_cursor: Option<String>,
    at_max: Vec<String>,
    committed: ResourceState,
    flushed_records: usize,
    commits: u64,
    pages: u64,
    rows: BTreeMap<String, u64>,
    /// The batch being committed in the background.
    pending: Option<tokio::task::JoinHandle<Result<Written>>>,
}

impl<'r> Load<'r> {
    fn new(
        extractor: &Extractor,
        resource: &'r Resource,
        root: &TableName,
        existing: Vec<(TableName, SchemaRef)>,
        fresh: bool,
        state: Option<ResourceState>,
    ) -> Result<Load<'r>> {
        let mut schemas = FxHashMap::default();
        let mut child_tables = BTreeSet::new();
        for (name, schema) in existing {
            if name.table() != root.table() {
                child_tables.insert(name.table().to_string());
            }
            schemas.insert(name.table().to_string(), schema);
        }
        let options = NormalizeOptions {
            max_depth: extractor.rest.max_depth,
            ..NormalizeOptions::default()
        };
        let mut normalizer = Normalizer::new(root.table(), options).with_schemas(schemas);
        if let Some(key) = &resource.primary_key {
            normalizer = normalizer.with_primary_key(key);
        }
        let committed = state.unwrap_or_default();
        Ok(Load {
            resource,
            root: root.clone(),
            normalizer,
            fresh,
            seen: FxHashSet::default(),
            batch_ids: Vec::new(),
            parents: Vec::new(),
            child_tables,
            max_cursor: committed.cursor.clone(),
            at_max: committed.tied.clone(),
            committed,
            flushed_records: 0,
            commits: 0,
            pages: 0,
            rows: BTreeMap::new(),
            pending: None,
        })
    }

    /// Normalizes one record (unless it is one of `skip`); returns its root id.
    fn push(
        &mut self,
        extractor: &Extractor,
        record: Value,
        cursor: Option<&str>,
        skip: &Skip,
        children: &[&Resource],
    ) -> Result<Option<String>> {
        let parent = (!children.is_empty()).then(|| record.clone());
        let record = if self.resource.jsonapi {
            crate::jsonapi::unwrap(record)
        } else {
            record
        };
        // The id first, to skip a record loaded already without normalizing it.
        let id = match &self.resource.primary_key {
            Some(key) => {
                let key_value =
                    page::at_path(&record, &crate::config::split_path(key)).and_then(text);
                key_value.map(|k| self.normalizer.root_id(&k))
            }
            None => None,
        };
        if let (Some(id), Some(cursor)) = (&id, cursor) {
            let at_start = skip
                .at
                .as_deref()
                .is_some_and(|s| compare(cursor, s).is_eq());
            if at_start && skip.ids.contains(id) {
                return Ok(None);
            }
        }
        let id = self
            .normalizer
            .push(&record)
            .map_err(|error| ExtractError::Record {
                source_name: extractor.source.name.clone(),
                resource: self.resource.name.clone(),
                error,
            })?;
        if self.fresh {
            let key = u128::from_str_radix(&id, 16).unwrap_or_default();
            if !self.seen.insert(key) {
                debug!(resource = %self.resource.name, "a record came twice; merging from now on");
                self.fresh = false;
                self.seen = FxHashSet::default();
            }
        }
        if let Some(cursor) = cursor {
            match self.max_cursor.as_deref().map(|m| compare(cursor, m)) {
                None | Some(CmpOrdering::Greater) => {
                    self.max_cursor = Some(cursor.to_string());
                    self.at_max.clear();
                    self.at_max.push(id.clone());
                }
                Some(CmpOrdering::Equal) => self.at_max.push(id.clone()),
                Some(CmpOrdering::Less) => {}
            }
        }
        self.batch_ids.push(id.clone());
        if let Some(parent) = parent {
            self.parents.push(parent);
        }
        Ok(Some(id))
    }

    /// Commits the batch: child resources, child tables, then the root with the state.
    async fn flush(
        &mut self,
        extractor: &Extractor,
        last: bool,
        child_loads: &mut [Load<'_>],
    ) -> Result<()> {
        // 1. Child resources of the batch's records.
        let parents = std::mem::take(&mut self.parents);
        for child in child_loads.iter_mut() {
            let resource = child.resource;
            let fetched: Vec<(u64, Vec<Value>)> = futures::stream::iter(parents.iter())
                .map(|p| extractor.child_records(resource, p))
                .buffered(extractor.rest.concurrency)
                .try_collect()
                .await?;
            let link = format!("_{}_id", naming::normalize(&self.resource.name));
            for ((pages, records), parent) in fetched.into_iter().zip(&parents) {
                child.pages += pages;
                let parent_id = parent.get("id").cloned().unwrap_or(Value::Null);
                for mut record in records {
                    if let Value::Object(m) = &mut record {
                        m.insert(link.clone(), parent_id.clone());
                    }
                    child.push(extractor, record, None, &Skip::default(), &[])?;
                }
            }
            Box::pin(child.flush(extractor, true, &mut [])).await?;
        }

        // Normalizing goes on while the previous batch commits; commits stay in order.
        self.wait().await?;
        let tables = self.normalizer.finish();
        let ids = std::mem::take(&mut self.batch_ids);
        self.flushed_records = self.normalizer.records();
        if tables.is_empty() && ids.is_empty() {
            return Ok(());
        }
        for t in tables.iter().filter(|t| t.level > 0) {
            self.child_tables.insert(t.table.clone());
        }
        let sorted = self.resource.incremental.as_ref().is_none_or(|i| i.sorted);
        let state = ResourceState {
            cursor: if sorted || last {
                self.max_cursor.clone()
            } else {
                self.committed.cursor.clone()
            },
            tied: if sorted || last {
                self.at_max.clone()
            } else {
                self.committed.tied.clone()
            },
            batch: self.committed.batch + 1,
        };
        if tables.iter().any(|t| t.level == 0) {
            self.committed = state.clone();
        }
        let job = CommitJob {
            lake: extractor.lake.clone(),
            root: self.root.clone(),
            child_tables: self.child_tables.iter().cloned().collect(),
            tables,
            ids,
            fresh: self.fresh,
            append: self.fresh || self.resource.write == WriteDisposition::Append,
            state,
            progress: extractor.progress.clone(),
        };
        self.pending = Some(tokio::spawn(job.run()));
        if last {
            self.wait().await?;
        }
        Ok(())
    }

    /// Waits for the batch being committed, if any, and counts what it wrote.
    async fn wait(&mut self) -> Result<()> {
        let Some(task) = self.pending.take() else {
            return Ok(());
        };
        let written = task.await.map_err(|e| ExtractError::Page {
            source_name: String::new(),
            resource: self.resource.name.clone(),
            url: String::new(),
            message: format!(
                "the commit task failed: {e} (likely a bug in Tideway, please report it)"
            ),
        })??;
        for (table, rows) in written.tables {
            *self.rows.entry(table).or_default() += rows;
        }
        self.commits += u64::from(written.root_committed);
        Ok(())
    }
}

/// One batch's writes: the child tables, then the root with the state.
#[derive(Debug)]
struct CommitJob {
    lake: Lake,
    root: TableName,
    child_tables: Vec<String>,
    tables: Vec<NormalizedTable>,
    ids: Vec<String>,
    fresh: bool,
    append: bool,
    state: ResourceState,
    progress: Arc<RunProgress>,
}

/// What a [`CommitJob`] wrote.
#[derive(Debug, Default)]
struct Written {
    tables: Vec<(String, u64)>,
    root_committed: bool,
}

impl CommitJob {
    async fn run(self) -> Result<Written> {
        let lake = &self.lake;
        let mut written = Written::default();
        let mut by_table: BTreeMap<String, RecordBatch> = BTreeMap::new();
        let mut root_batch: Option<RecordBatch> = None;
        for t in self.tables {
            if t.level == 0 {
                root_batch = Some(t.batch);
            } else {
                by_table.insert(t.table, t.batch);
            }
        }
        // Child tables: replace the batch's records' rows (or append on empty tables).
        for child in &self.child_tables {
            let name = TableName::new(self.root.schema(), child)?;
            let batch = by_table.remove(child);
            let rows = batch.as_ref().map_or(0, |b| b.num_rows() as u64);
            if self.fresh {
                if let Some(batch) = batch {
                    lake.append(&name, vec![batch])
                        .with_writer_properties(writer_properties())
                        .await?;
                }
            } else {
                lake.replace_groups(
                    &name,
                    batch.into_iter().collect(),
                    &[ID],
                    ROOT_ID,
                    self.ids.clone(),
                )
                .with_writer_properties(writer_properties())
                .await?;
            }
            record_rows(&self.progress, &name, rows);
            written.tables.push((name.to_string(), rows));
        }
        // The root, with the state, atomically.
        let Some(root_batch) = root_batch else {
            return Ok(written);
        };
        let rows = root_batch.num_rows() as u64;
        let app_id = format!("extract:{}", self.root);
        let metadata = serde_json::to_value(&self.state).expect("state serializes");
        let write = if self.append {
            lake.append(&self.root, vec![root_batch])
        } else {
            lake.merge(&self.root, vec![root_batch], &[ID])
        };
        write
            .with_writer_properties(writer_properties())
            .with_txn(Txn::new(app_id, self.state.batch))
            .with_metadata(STATE_KEY, metadata)
            .await?;
        record_rows(&self.progress, &self.root, rows);
        written.tables.push((self.root.to_string(), rows));
        written.root_committed = true;
        Ok(written)
    }
}

/// Parquet settings of extract writes: row groups of 64k rows, so that the writer (which
/// buffers a whole row group) stays small when a merge rewrites a large table.
fn writer_properties() -> deltalake::parquet::file::properties::WriterProperties {
    deltalake::parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(65_536))
        .build()
}

fn record_rows(progress: &RunProgress, table: &TableName, rows: u64) {
    *progress
        .rows
        .lock()
        .expect("progress lock")
        .entry(table.to_string())
        .or_default() += rows;
}

/// The records of a page: the value at `path`, a list of records or a single one.
fn select(doc: &mut Value, path: &[String]) -> Result<Vec<Value>, String> {
    let found = if path.is_empty() {
        Some(doc.take())
    } else {
        page::take_path(doc, path)
    };
    match found {
        Some(Value::Array(records)) => Ok(records),
        Some(Value::Object(record)) => Ok(vec![Value::Object(record)]),
        Some(Value::Null) | None => Err(format!(
            "no records at `{}`; set `records` to where the list is (a dotted path, \"\" for the page itself)",
            path.join(".")
        )),
        Some(other) => Err(format!(
            "`{}` is {}, not a list of records",
            path.join("."),
            crate::normalize::json_type(&other)
        )),
    }
}

/// A scalar as cursor or key text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Compares two cursor values: as instants if both are, as numbers if both are, else as text.
pub fn compare(a: &str, b: &str) -> CmpOrdering {
    if let (Some(x), Some(y)) = (parse_time(a), parse_time(b)) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x.partial_cmp(&y).unwrap_or(CmpOrdering::Equal);
    }
    a.cmp(b)
}

/// A cursor value moved back by `lookback` (instants only; other values are kept).
fn minus(cursor: &str, lookback: Duration) -> String {
    if lookback.is_zero() {
        return cursor.to_string();
    }
    match parse_time(cursor) {
        Some(t) => {
            let back = t - chrono::TimeDelta::from_std(lookback).unwrap_or_default();
            back.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        }
        None => cursor.to_string(),
    }
}

/// Rows of a table with their `_tideway_id`s (for tests and checks).
pub fn ids_of(batch: &RecordBatch) -> Vec<String> {
    batch
        .column_by_name(ID)
        .map(|c| {
            let c = c.as_string::<i32>();
            (0..c.len()).map(|i| c.value(i).to_string()).collect()
        })
        .unwrap_or_default()
}

/// The tables of the root table `root` in the lake (root first, then its child tables) and
/// their schemas.
pub(crate) async fn existing_tables(
    lake: &Lake,
    root: &TableName,
) -> Result<Vec<(TableName, SchemaRef)>> {
    let mut out = Vec::new();
    let prefix = format!("{}{}", root.table(), naming::PATH_SEPARATOR);
    for name in lake.tables().await? {
        if name.schema() == root.schema()
            && (name.table() == root.table() || name.table().starts_with(&prefix))
        {
            let schema = lake.schema(&name).await?;
            out.push((name, schema));
        }
    }
    out.sort_by_key(|(n, _)| (n.table() != root.table(), n.table().to_string()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_compare_as_instants_numbers_or_text() {
        assert_eq!(
            compare("2025-06-01T10:00:00.000Z", "2025-06-01T12:00:00+02:00"),
            CmpOrdering::Equal
        );
        assert_eq!(compare("9", "10"), CmpOrdering::Less);
        assert_eq!(compare("b", "a"), CmpOrdering::Greater);
        assert_eq!(
            minus("2025-06-01T10:00:00.000Z", Duration::from_secs(3600)),
            "2025-06-01T09:00:00.000Z"
        );
    }
}
