//! A chunk's state, log and dead letters commit as one transaction: a crash after the state
//! commit and before the log's is finished by the next run, once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use deltalake::arrow::array::Int64Array;
use tideway_activate::{SyncConfig, SyncJob};
use tideway_lake::{Lake, SqlOutput, TableName};

use crate::golden::options;
use crate::support::Recorder;

async fn count(lake: &Lake, sql: &str) -> i64 {
    let SqlOutput::Rows(rows) = lake.sql(sql).await.unwrap() else {
        panic!("a query gives rows")
    };
    let n = rows.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    n.value(0)
}

/// Removes a table's newest commit, as if the process had stopped just before making it.
/// Returns the version removed.
fn drop_last_commit(table: &Path) -> u64 {
    let log = table.join("_delta_log");
    let last = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()
        .unwrap();
    std::fs::remove_file(&last).unwrap();
    last.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_state_and_log_commits_is_finished_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let source: TableName = "crm.p".parse().unwrap();
    let rows: BTreeMap<i64, i64> = (0..3).map(|k| (k, k * 10)).collect();
    lake.overwrite(&source, vec![crate::properties::table(&rows)])
        .await
        .unwrap();
    let config = SyncConfig::parse(
        "source = \"crm.p\"\nkey = \"id\"\ndestination = \"rec\"\ntype = \"identify\"\ndead_letter_after = 1\n",
        "syncs/p.toml",
        &["rec".to_string()],
        &[],
    )
    .unwrap();
    let recorder = Arc::new(Recorder::new());
    recorder.refuse.lock().unwrap().insert("2".into());
    let job = SyncJob::new(config, recorder.clone(), &[], Default::default()).unwrap();
    let opts = tideway_activate::RunOptions {
        chunk_rows: 10,
        ..options()
    };
    let first = job.run(&lake, &opts, &|_| {}).await.unwrap();
    assert_eq!((first.counts.delivered, first.counts.dead), (2, 1));

    // The process stops after the state commit: the log and dead-letter commits never happen.
    let system = dir.path().join("_tideway");
    drop_last_commit(&system.join("sync_log"));
    drop_last_commit(&system.join("dead_letters"));
    let logged = "SELECT count(*) FROM _tideway.sync_log WHERE sync = 'p' AND run = 1";
    let dead = "SELECT count(*) FROM _tideway.dead_letters WHERE source = 'sync:p'";
    assert_eq!(count(&lake, logged).await, 0);
    assert_eq!(count(&lake, dead).await, 0);
    let accepted =
        "SELECT count(*) FROM _tideway.sync_state WHERE sync = 'p' AND status = 'accepted'";
    assert_eq!(count(&lake, accepted).await, 2, "the state commit happened");

    // The next run adds the chunk's log rows and dead letter before it does anything, and
    // sends nothing: the state says the destination has every row it accepted.
    recorder.take();
    let second = job.run(&lake, &opts, &|_| {}).await.unwrap();
    assert_eq!(second.events, 0, "{second:?}");
    assert!(recorder.take().is_empty());
    assert_eq!(count(&lake, logged).await, 3);
    assert_eq!(count(&lake, dead).await, 1);

    // Once only.
    job.run(&lake, &opts, &|_| {}).await.unwrap();
    assert_eq!(count(&lake, logged).await, 3);
    assert_eq!(count(&lake, dead).await, 1);
}

/// A crash before the state commit leaves the staged log rows invisible: the rerun sends the
/// chunk again and logs it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_state_commit_logs_nothing_of_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let source: TableName = "crm.p".parse().unwrap();
    let rows: BTreeMap<i64, i64> = (0..3).map(|k| (k, k)).collect();
    lake.overwrite(&source, vec![crate::properties::table(&rows)])
        .await
        .unwrap();
    let config = SyncConfig::parse(
        "source = \"crm.p\"\nkey = \"id\"\ndestination = \"rec\"\ntype = \"identify\"\n",
        "syncs/p.toml",
        &["rec".to_string()],
        &[],
    )
    .unwrap();
    let recorder = Arc::new(Recorder::new());
    let job = SyncJob::new(config, recorder.clone(), &[], Default::default()).unwrap();
    let opts = tideway_activate::RunOptions {
        chunk_rows: 10,
        ..options()
    };
    job.run(&lake, &opts, &|_| {}).await.unwrap();
    // Undo the chunk's state commit and its log commit: the log's files stay staged, named
    // by no commit.
    let system = dir.path().join("_tideway");
    drop_last_commit(&system.join("sync_log"));
    drop_last_commit(&system.join("sync_state"));
    let logged = "SELECT count(*) FROM _tideway.sync_log WHERE sync = 'p' AND status = 'delivered'";
    assert_eq!(count(&lake, logged).await, 0);

    recorder.take();
    let again = job.run(&lake, &opts, &|_| {}).await.unwrap();
    assert_eq!(again.counts.delivered, 3, "{again:?}");
    assert_eq!(count(&lake, logged).await, 3);
}
