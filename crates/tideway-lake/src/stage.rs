//! Staged writes: data files written into a table's folder but not committed, so that rows
//! bound for one table can commit atomically with a commit to another.
//!
//! Delta Lake commits one table at a time. To make rows of table B part of a commit to table
//! A, a writer stages B's files first ([`Lake::stage`]: readers do not see them), names them
//! in A's commit (its `commitInfo`, with [`crate::Write::with_metadata`]), commits A, then
//! adds the staged files to B under a transaction identifier ([`Lake::commit_staged`]). If
//! it stops between the two commits, whoever finds A's commit without B's (B's transaction
//! version behind A's) commits the staged files then: once A commits, B's rows are
//! committed too, exactly once; if A never commits, B's files stay invisible until a vacuum
//! removes them.
//!
//! [`Lake::commit_with_staged`] does the commits; [`Lake::roll_forward_staged`] is what a
//! writer calls before its next commit, to finish one that a crash cut short.
//!
//! ```no_run
//! # async fn demo(lake: tideway_lake::Lake, log: Vec<deltalake::arrow::array::RecordBatch>,
//! #     state: Vec<deltalake::arrow::array::RecordBatch>) -> Result<(), tideway_lake::LakeError> {
//! use tideway_lake::Txn;
//! let state_table = "_tideway.sync_state".parse()?;
//! let is_ours = |meta: &serde_json::Value| meta["sync"] == "leads";
//! lake.roll_forward_staged(&state_table, "sync:leads", "tideway.sync", is_ours).await?;
//! let staged = vec![lake.stage(&"_tideway.sync_log".parse()?, log).await?];
//! let meta = serde_json::json!({"sync": "leads"}).as_object().cloned().unwrap_or_default();
//! let write = lake.merge(&state_table, state, &["sync", "key"]);
//! lake.commit_with_staged(write, Txn::new("sync:leads", 7), "tideway.sync", meta, staged)
//!     .await?;
//! # Ok(()) }
//! ```

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::error::{LakeError, Result};
use crate::lake::Lake;
use crate::name::TableName;
use crate::write::{Commit, Txn, Write};

/// The field of a commit's metadata that lists its staged files.
const STAGED: &str = "staged";

/// How many of a table's newest commits [`Lake::roll_forward_staged`] reads before its whole
/// history.
const RECENT_COMMITS: usize = 1_000;

/// Data files written to a table and not committed yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Staged {
    /// `schema.table`.
    pub table: String,
    /// The files' Delta `add` actions, ready to commit.
    pub files: Vec<Add>,
    /// Rows in the files.
    pub rows: u64,
}

impl Lake {
    /// Writes `batches` as data files of `name` without committing them (see the module
    /// docs). The table is created first if needed, and columns the batches add to it are
    /// added in a commit of their own (an empty append), as [`Lake::append`] would.
    pub async fn stage(&self, name: &TableName, batches: Vec<RecordBatch>) -> Result<Staged> {
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let batches = self.conform(name, batches).await?;
        let table = self.table(name).await?;
        let mut writer = RecordBatchWriter::for_table(&table)
            .map_err(|e| LakeError::delta(name, e))?
            .with_writer_properties(crate::write::writer_properties());
        for batch in batches {
            writer
                .write(batch)
                .await
                .map_err(|e| LakeError::delta(name, e))?;
        }
        let files = writer
            .flush()
            .await
            .map_err(|e| LakeError::delta(name, e))?;
        Ok(Staged {
            table: name.to_string(),
            files,
            rows,
        })
    }

    /// `batches` in the table's own schema, after evolving the table for them if they need it.
    async fn conform(
        &self,
        name: &TableName,
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        for _ in 0..2 {
            let schema = match self.load(name).await? {
                Some(table) => Some(Lake::schema_of(name, &table)?),
                None => None,
            };
            let (evolution, conformed) = crate::write::evolve_all(schema.as_deref(), &batches)?;
            let fits =
                schema.is_some() && evolution.added.is_empty() && evolution.widened.is_empty();
            if fits {
                return Ok(conformed);
            }
            let empty = batches.iter().map(|b| b.slice(0, 0)).collect();
            self.append(name, empty).await?;
        }
        Err(LakeError::Sql(format!(
            "cannot stage rows for `{name}`: its schema still differs from theirs after evolving it"
        )))
    }

    /// Commits `staged` files under `txn`: nothing happens if `txn` already committed on the
    /// table. A staged file that is gone (vacuumed before a late commit) is left out with a
    /// warning, so the table never references a missing file.
    pub async fn commit_staged(&self, staged: &Staged, txn: Txn) -> Result<Commit> {
        let name: TableName = staged.table.parse()?;
        let table = self.table(&name).await?;
        let mut commit = Commit {
            table: name.to_string(),
            rows: staged.rows,
            attempts: 1,
            ..Commit::default()
        };
        let snapshot = table.snapshot().map_err(|e| LakeError::delta(&name, e))?;
        let done = snapshot
            .transaction_version(table.log_store().as_ref(), &txn.app_id)
            .await
            .map_err(|e| LakeError::delta(&name, e))?;
        if done.is_some_and(|v| v >= txn.version) {
            commit.skipped = true;
            return Ok(commit);
        }
        let store = table.object_store();
        let mut actions = Vec::with_capacity(staged.files.len());
        for add in &staged.files {
            let path = deltalake::Path::from(add.path.as_str());
            match object_store::ObjectStoreExt::head(store.as_ref(), &path).await {
                Ok(_) => actions.push(Action::Add(add.clone())),
                Err(e) => {
                    warn!(table = %name, file = %add.path, error = %e,
                        "a staged file is gone (vacuumed before its commit?): left out");
                }
            }
        }
        let props = CommitProperties::default()
            .with_max_retries(10)
            .with_application_transaction(Transaction::new(&txn.app_id, txn.version));
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        let finalized = CommitBuilder::from(props)
            .with_actions(actions)
            .build(Some(snapshot), table.log_store(), operation)
            .await
            .map_err(|e| LakeError::delta(&name, e))?;
        commit.version = Some(finalized.version() as u64);
        self.inner.catalog.add_table(&name);
        info!(table = %name, version = ?commit.version, rows = staged.rows, "committed staged files");
        Ok(commit)
    }

    /// Commits `write` under `txn`, its `commitInfo[key]` being `meta` with a `staged` field
    /// naming `staged`, then commits the staged files under `txn` too (see the module
    /// docs): once the write commits, the staged rows are committed too, exactly once, even if
    /// a crash comes between (the next [`Lake::roll_forward_staged`] adds them).
    pub async fn commit_with_staged(
        &self,
        write: Write,
        txn: Txn,
        key: &str,
        mut meta: serde_json::Map<String, Value>,
        staged: Vec<Staged>,
    ) -> Result<Commit> {
        meta.insert(
            STAGED.into(),
            serde_json::to_value(&staged).expect("staged files serialize"),
        );
        let write = write.with_txn(txn.clone());
        let commit = write.with_metadata(key, Value::Object(meta)).await?;
        for files in &staged {
            self.commit_staged(files, txn.clone()).await?;
        }
        Ok(commit)
    }

    /// Finishes the newest commit of `name` under transaction `app` whose
    /// `commitInfo[key]` satisfies `ours`, if a crash cut it between its own commit and its
    /// staged files' (see [`Lake::commit_with_staged`]). Returns that commit's metadata and the
    /// rows it added now (0 when nothing was missing), or `None` if `app` never committed
    /// to `name`. Only a writer's newest commit can be unfinished, as each writer calls this
    /// before its next commit.
    pub async fn roll_forward_staged(
        &self,
        name: &TableName,
        app: &str,
        key: &str,
        ours: impl Fn(&Value) -> bool,
    ) -> Result<Option<(Value, u64)>> {
        let Some(version) = self.txn_version(name, app).await? else {
            return Ok(None);
        };
        // The writer's newest commit is usually among the table's last few (other writers
        // commit in between): those are read first, the whole history only if need be.
        let mut found = self
            .find_commit_metadata(name, key, Some(RECENT_COMMITS), &ours)
            .await?;
        if found.is_none() {
            found = self.find_commit_metadata(name, key, None, &ours).await?;
        }
        let Some(meta) = found else {
            return Ok(None);
        };
        let staged: Vec<Staged> = match meta.get(STAGED) {
            Some(files) => {
                serde_json::from_value(files.clone()).map_err(|e| LakeError::CommitMetadata {
                    table: name.to_string(),
                    key: key.to_string(),
                    message: format!("the staged files of `{app}` {version}: {e}"),
                })?
            }
            None => Vec::new(),
        };
        let mut rows = 0;
        for files in &staged {
            let commit = self.commit_staged(files, Txn::new(app, version)).await?;
            if !commit.skipped {
                warn!(
                    table = files.table,
                    rows = files.rows,
                    app,
                    txn = version,
                    "a crash cut a commit short after its own table: its staged rows are committed now"
                );
                rows += files.rows;
            }
        }
        Ok(Some((meta, rows)))
    }
}
