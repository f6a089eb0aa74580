//! The [`Lake`]: where it lives, which tables it has, and one DataFusion session over all of them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::execution::context::SessionContext;
use deltalake::datafusion::execution::session_state::SessionStateBuilder;
use deltalake::datafusion::prelude::SessionConfig;
use deltalake::delta_datafusion::DeltaSessionConfig;
use deltalake::delta_datafusion::planner::DeltaPlanner;
use deltalake::logstore::LogStoreRef;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, ObjectStore};
use futures::TryStreamExt;
use url::Url;

use crate::catalog::{CATALOG, DEFAULT_SCHEMA, LakeCatalog};
use crate::error::{LakeError, Result};
use crate::name::TableName;

/// A lake: a directory or object-store prefix holding one Delta table per `schema/table/`.
///
/// ```no_run
/// # async fn demo() -> Result<(), tideway_lake::LakeError> {
/// use tideway_lake::Lake;
/// let lake = Lake::open(".tideway/lake", Default::default()).await?;
/// let rows = lake.sql("SELECT count(*) FROM crm.customers").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Lake {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The location as the user wrote it, for messages.
    pub(crate) location: String,
    /// The root URL, ending in `/`.
    pub(crate) root: Url,
    pub(crate) storage: HashMap<String, String>,
    pub(crate) root_store: Arc<dyn ObjectStore>,
    pub(crate) ctx: SessionContext,
    pub(crate) catalog: Arc<LakeCatalog>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("location", &self.location)
            .field("root", &self.root.as_str())
            .finish_non_exhaustive()
    }
}

/// What `tideway tables` shows about a table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TableInfo {
    /// `schema.table`.
    pub name: String,
    /// The Delta version of the latest commit.
    pub version: u64,
    /// When the latest commit was made.
    pub last_commit: Option<DateTime<Utc>>,
    /// Rows in the current version (from the Delta log's file statistics).
    pub rows: u64,
    /// Bytes of data files in the current version.
    pub size_bytes: u64,
    /// Data files in the current version.
    pub files: u64,
    /// Columns in the current schema.
    pub columns: usize,
}

impl Lake {
    /// Opens the lake at `location`: a local directory (created if missing, and checked to be
    /// writable) or an object store URL (`s3://bucket/prefix`, `gs://...`, `az://...`) whose
    /// credentials come from `storage` options and the environment.
    pub async fn open(location: &str, storage: HashMap<String, String>) -> Result<Lake> {
        let root = root_url(location)?;
        if let Some(feature) = missing_storage_feature(root.scheme()) {
            return Err(LakeError::Location {
                location: location.to_string(),
                reason: format!(
                    "this build of tideway cannot reach `{}://` storage (it lacks the `{feature}` \
                     feature); build it with `cargo build --release -p tideway --features cloud`",
                    root.scheme()
                ),
            });
        }
        let log_store = root_log_store(&root, &storage).map_err(|e| LakeError::Location {
            location: location.to_string(),
            reason: e.to_string(),
        })?;
        let root_store = log_store.object_store(None);
        let config: SessionConfig = DeltaSessionConfig::default().into();
        let config = config
            .set_bool("datafusion.sql_parser.enable_ident_normalization", true)
            .set_bool("datafusion.catalog.information_schema", true)
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(false);
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_query_planner(DeltaPlanner::new())
            .build();
        let ctx = SessionContext::new_with_state(state);
        let catalog = Arc::new(LakeCatalog::new(
            root.clone(),
            storage.clone(),
            ctx.runtime_env(),
        ));
        ctx.register_catalog(CATALOG, catalog.clone());
        let lake = Lake {
            inner: Arc::new(Inner {
                location: location.to_string(),
                root,
                storage,
                root_store,
                ctx,
                catalog,
            }),
        };
        lake.refresh().await?;
        Ok(lake)
    }

    /// The lake's root URL.
    pub fn root(&self) -> &Url {
        &self.inner.root
    }

    /// The location as it was given to [`Lake::open`].
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// The DataFusion session that sees every table of the lake as `schema.table`.
    pub fn session(&self) -> &SessionContext {
        &self.inner.ctx
    }

    /// The URL of a table's directory.
    pub fn table_url(&self, name: &TableName) -> Url {
        table_url(&self.inner.root, name)
    }

    /// Re-reads which schemas and tables the lake has (other processes may have added some).
    pub async fn refresh(&self) -> Result<()> {
        let tables = self.discover().await?;
        self.inner.catalog.set_tables(tables);
        Ok(())
    }

    /// Every table in the lake, sorted by name.
    pub async fn tables(&self) -> Result<Vec<TableName>> {
        self.refresh().await?;
        Ok(self.inner.catalog.table_names())
    }

    async fn discover(&self) -> Result<Vec<TableName>> {
        let store = &self.inner.root_store;
        let storage_error = |e: deltalake::ObjectStoreError| LakeError::Location {
            location: self.inner.location.clone(),
            reason: format!("cannot list it: {e}"),
        };
        let top = store
            .list_with_delimiter(None)
            .await
            .map_err(storage_error)?;
        let mut found = Vec::new();
        for schema_dir in top.common_prefixes {
            let Some(schema) = schema_dir.filename() else {
                continue;
            };
            let listing = store
                .list_with_delimiter(Some(&schema_dir))
                .await
                .map_err(storage_error)?;
            for table_dir in listing.common_prefixes {
                let Some(table) = table_dir.filename() else {
                    continue;
                };
                let Ok(name) = TableName::new(schema, table) else {
                    continue;
                };
                let log = table_dir.clone().join("_delta_log");
                let mut entries = store.list(Some(&log));
                if entries.try_next().await.map_err(storage_error)?.is_some() {
                    found.push(name);
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// The table, loaded at its latest version, or `None` if it does not exist.
    pub async fn load(&self, name: &TableName) -> Result<Option<DeltaTable>> {
        let url = self.table_url(name);
        if url.scheme() == "file" {
            let log = url
                .to_file_path()
                .expect("a file URL made from a path")
                .join("_delta_log");
            if !log.is_dir() {
                return Ok(None);
            }
        }
        let mut table = DeltaTableBuilder::from_url(url)
            .map_err(|e| LakeError::delta(name, e))?
            .with_storage_options(self.inner.storage.clone())
            .build()
            .map_err(|e| LakeError::delta(name, e))?;
        match table.load().await {
            Ok(()) => Ok(Some(table)),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            // An object-store prefix with nothing under it (the kernel's error type is not
            // re-exported by deltalake, so the variant is matched by name).
            Err(DeltaTableError::KernelError(k))
                if format!("{k:?}").starts_with("InvalidTableLocation") =>
            {
                Ok(None)
            }
            Err(e) => Err(LakeError::delta(name, e)),
        }
    }

    /// The table at its latest version; a clear error naming the known tables if it does not
    /// exist.
    pub async fn table(&self, name: &TableName) -> Result<DeltaTable> {
        match self.load(name).await? {
            Some(table) => Ok(table),
            None => Err(self.unknown_table(&name.to_string()).await),
        }
    }

    /// The error for a table the lake does not have: names it, suggests the closest known
    /// name and lists the known tables.
    pub async fn unknown_table(&self, name: &str) -> LakeError {
        let _ = self.refresh().await;
        let known = self.inner.catalog.known_names();
        unknown_table_error(name, &known)
    }

    /// An empty handle on a table that may not exist yet (writes create it).
    pub(crate) async fn load_or_new(&self, name: &TableName) -> Result<DeltaTable> {
        if let Some(table) = self.load(name).await? {
            return Ok(table);
        }
        let url = self.table_url(name);
        if url.scheme() == "file" {
            let path = url.to_file_path().expect("a file URL made from a path");
            std::fs::create_dir_all(&path).map_err(|e| LakeError::Location {
                location: self.inner.location.clone(),
                reason: format!("cannot create `{}`: {e}", path.display()),
            })?;
        }
        DeltaTableBuilder::from_url(url)
            .map_err(|e| LakeError::delta(name, e))?
            .with_storage_options(self.inner.storage.clone())
            .build()
            .map_err(|e| LakeError::delta(name, e))
    }

    /// Version, last commit, rows, size and file count of one table.
    pub async fn info(&self, name: &TableName) -> Result<TableInfo> {
        let table = self.table(name).await?;
        table_info(name, &table).await
    }

    /// [`Lake::info`] of every table.
    pub async fn infos(&self) -> Result<Vec<TableInfo>> {
        let mut out = Vec::new();
        for name in self.tables().await? {
            // A table being created by another process may have no loadable version yet.
            if let Some(table) = self.load(&name).await? {
                out.push(table_info(&name, &table).await?);
            }
        }
        Ok(out)
    }

    /// The last version committed under transaction application id `app_id` (see
    /// [`crate::Txn`]), or `None` if it never committed to this table.
    /// The Arrow schema of a table at its latest version.
    pub async fn schema(&self, name: &TableName) -> Result<SchemaRef> {
        Lake::schema_of(name, &self.table(name).await?)
    }

    /// The Arrow schema of a loaded table.
    pub fn schema_of(name: &TableName, table: &DeltaTable) -> Result<SchemaRef> {
        Ok(table
            .snapshot()
            .map_err(|e| LakeError::delta(name, e))?
            .snapshot()
            .arrow_schema())
    }

    /// The value of `key` in the `commitInfo` of the newest of the last `limit` commits of
    /// `name` that has it (see [`crate::Write::with_metadata`]); `None` if the table does not
    /// exist or no such commit is among them. Loaders keep their cursor there, so it commits
    /// atomically with the rows it covers.
    pub async fn commit_metadata(
        &self,
        name: &TableName,
        key: &str,
        limit: usize,
    ) -> Result<Option<serde_json::Value>> {
        self.find_commit_metadata(name, key, Some(limit), |_| true)
            .await
    }

    /// The value of `key` in the newest commit of `name` whose value there satisfies `wanted`,
    /// among the last `limit` commits (all of them if `None`). Commits are read newest first
    /// and the search stops at the first match, so finding a recent commit costs little
    /// however long the history is.
    pub async fn find_commit_metadata(
        &self,
        name: &TableName,
        key: &str,
        limit: Option<usize>,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<Option<serde_json::Value>> {
        let Some(table) = self.load(name).await? else {
            return Ok(None);
        };
        let mut infos = table.history(limit);
        while let Some(mut info) = infos
            .try_next()
            .await
            .map_err(|e| LakeError::delta(name, e))?
        {
            if let Some(value) = info.info.remove(key).filter(|v| wanted(v)) {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// The rows of `name` as of version `to` that were written after version `from`: the rows
    /// of the data files added by the commits `from + 1 ..= to` (all rows when `from` is
    /// `None`). For an append-only table these are exactly the new rows; a commit that
    /// rewrote files (a merge, an optimize) yields the rewritten files' rows again, so a
    /// reader of changes must be idempotent. If version `from` can no longer be read (its log
    /// was cleaned up), every row as of `to` is returned.
    pub async fn read_range(
        &self,
        name: &TableName,
        from: Option<i64>,
        to: i64,
    ) -> Result<deltalake::datafusion::dataframe::DataFrame> {
        let mut table = self.table(name).await?;
        if table.version() != Some(to as u64) {
            table
                .load_version(to as u64)
                .await
                .map_err(|e| LakeError::delta(name, e))?;
        }
        let paths = |t: &DeltaTable| -> Result<Vec<String>> {
            let state = t.snapshot().map_err(|e| LakeError::delta(name, e))?;
            Ok(state
                .log_data()
                .iter()
                .map(|f| f.path().to_string())
                .collect())
        };
        let selection = match from {
            None => None,
            Some(v) if v >= to => Some(Vec::new()),
            Some(v) => {
                let mut old = table.clone();
                match old.load_version(v as u64).await {
                    Ok(()) => {
                        let before: std::collections::HashSet<String> =
                            paths(&old)?.into_iter().collect();
                        Some(
                            paths(&table)?
                                .into_iter()
                                .filter(|p| !before.contains(p))
                                .collect(),
                        )
                    }
                    Err(e) => {
                        tracing::warn!(table = %name, version = v, error = %e,
                            "version no longer readable; reading every row");
                        None
                    }
                }
            }
        };
        table
            .update_datafusion_session(&self.inner.ctx.state())
            .map_err(|e| LakeError::delta(name, e))?;
        let mut builder = table.table_provider();
        if let Some(selection) = selection {
            builder = builder.with_file_paths(selection);
        }
        let provider = builder.await?;
        Ok(self.inner.ctx.read_table(provider)?)
    }

    /// The last version committed under the transaction identifier `app_id` (see
    /// [`crate::Txn`]), if any.
    pub async fn txn_version(&self, name: &TableName, app_id: &str) -> Result<Option<i64>> {
        let Some(table) = self.load(name).await? else {
            return Ok(None);
        };
        let state = table.snapshot().map_err(|e| LakeError::delta(name, e))?;
        state
            .transaction_version(table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| LakeError::delta(name, e))
    }
}

pub(crate) async fn table_info(name: &TableName, table: &DeltaTable) -> Result<TableInfo> {
    let state = table.snapshot().map_err(|e| LakeError::delta(name, e))?;
    let version = state.version();
    let (mut rows, mut size, mut files) = (0u64, 0u64, 0u64);
    for file in state.log_data().iter() {
        rows += file.num_records().unwrap_or(0) as u64;
        size += file.size().max(0) as u64;
        files += 1;
    }
    // The snapshot knows the commit times of the versions it replayed; a version read from a
    // checkpoint is not among them, so then ask the log for the latest commit's info.
    let millis = match state.version_timestamp(version) {
        Some(ms) => Some(ms),
        None => {
            let latest: Vec<_> = table
                .history(Some(1))
                .try_collect()
                .await
                .map_err(|e| LakeError::delta(name, e))?;
            latest.first().and_then(|info| info.timestamp)
        }
    };
    let last_commit = millis.and_then(|ms| Utc.timestamp_millis_opt(ms).single());
    Ok(TableInfo {
        name: name.to_string(),
        version,
        last_commit,
        rows,
        size_bytes: size,
        files,
        columns: state.schema().fields().count(),
    })
}

pub(crate) fn unknown_table_error(name: &str, known: &[String]) -> LakeError {
    let hint = closest(name, known)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default();
    let known = if known.is_empty() {
        "none yet (write one with `tideway lake import` or `tideway sql \"CREATE TABLE ...\"`)"
            .into()
    } else {
        known.join(", ")
    };
    LakeError::UnknownTable {
        name: name.to_string(),
        hint,
        known,
    }
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
/// A candidate whose table part equals `name`'s (a missing or wrong schema) wins.
pub fn closest<'a>(name: &str, candidates: &'a [String]) -> Option<&'a str> {
    let table_part = |s: &str| s.rsplit('.').next().unwrap_or(s).to_string();
    if let Some(same) = candidates
        .iter()
        .find(|c| table_part(c) == table_part(name))
    {
        return Some(same);
    }
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= (c.len().max(name.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

/// Edits (insert, delete, substitute, or swap two neighbours: `plnas` is one edit from
/// `plans`) that turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 0..a.len() {
        let mut cur = vec![i + 1; b.len() + 1];
        for j in 0..b.len() {
            cur[j + 1] = (prev[j] + usize::from(a[i] != b[j]))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                cur[j + 1] = cur[j + 1].min(before[j - 1] + 1);
            }
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod closest_tests {
    #[test]
    fn a_swap_of_neighbours_is_one_edit() {
        assert_eq!(super::edit_distance("plnas", "plans"), 1);
        assert_eq!(super::edit_distance("kitten", "sitting"), 3);
        assert_eq!(super::edit_distance("", "abc"), 3);
        let names = vec!["marts.plans".to_string(), "plans".to_string()];
        assert_eq!(super::closest("plnas", &names), Some("plans"));
    }
}

/// The cargo feature of `tideway-lake` a storage scheme needs, if this build lacks it.
fn missing_storage_feature(scheme: &str) -> Option<&'static str> {
    match scheme {
        "s3" | "s3a" if !cfg!(feature = "s3") => Some("s3"),
        "gs" if !cfg!(feature = "gcs") => Some("gcs"),
        "az" | "abfs" | "abfss" | "adl" | "azure" if !cfg!(feature = "azure") => Some("azure"),
        _ => None,
    }
}

pub(crate) fn table_url(root: &Url, name: &TableName) -> Url {
    root.join(&format!("{}/{}/", name.schema(), name.table()))
        .expect("table names are URL-safe")
}

fn root_log_store(
    root: &Url,
    storage: &HashMap<String, String>,
) -> Result<LogStoreRef, DeltaTableError> {
    DeltaTableBuilder::from_url(root.clone())?
        .with_storage_options(storage.clone())
        .build_storage()
}

/// The root URL of a location: an object-store URL as it is, a local path made absolute,
/// created, and checked to be a writable directory.
fn root_url(location: &str) -> Result<Url> {
    let bad = |reason: String| LakeError::Location {
        location: location.to_string(),
        reason,
    };
    if location.contains("://") && !location.starts_with("file://") {
        let mut url = Url::parse(location).map_err(|e| bad(format!("not a valid URL: {e}")))?;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        return Ok(url);
    }
    let path = match location.strip_prefix("file://") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(location),
    };
    check_writable_dir(&path).map_err(bad)?;
    let path = path.canonicalize().map_err(|e| bad(e.to_string()))?;
    Url::from_directory_path(&path).map_err(|()| bad("not an absolute path".into()))
}

fn check_writable_dir(path: &Path) -> std::result::Result<(), String> {
    if path.exists() && !path.is_dir() {
        return Err(
            "it exists and is not a directory; set [lake] location in tideway.toml to a directory"
                .into(),
        );
    }
    std::fs::create_dir_all(path).map_err(|e| {
        format!("cannot create the directory: {e}; set [lake] location in tideway.toml to a writable directory")
    })?;
    let probe = path.join(format!(".tideway-write-probe-{}", uuid::Uuid::new_v4()));
    std::fs::write(&probe, b"").map_err(|e| {
        format!("the directory is not writable: {e}; fix its permissions or set [lake] location in tideway.toml")
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Groups table names by schema, for the catalog.
pub(crate) fn by_schema(tables: &[TableName]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tables {
        out.entry(t.schema().to_string())
            .or_default()
            .push(t.table().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_prefers_the_same_table_in_another_schema() {
        let known = vec!["crm.customers".to_string(), "events.tracks".to_string()];
        assert_eq!(closest("public.customers", &known), Some("crm.customers"));
        assert_eq!(closest("crm.custmers", &known), Some("crm.customers"));
        assert_eq!(closest("zzz.qqq", &known), None);
    }
}
