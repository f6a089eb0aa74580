//! A chunk's state, log and dead letters commit as one transaction: a crash after the state
//! commit and before the log's is finished by the next run, once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tideway_activate::{SyncConfig, SyncJob};
use tideway_lake::{Lake, TableName};

use crate::golden::options;
use crate::support::{Recorder, count};

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

/// A lake holding `crm.p` (ids 0, 1, 2) and the sync `p` of it to a recorder; `extra` lines
/// go into the sync file.
struct Setup {
    dir: tempfile::TempDir,
    lake: Lake,
    recorder: Arc<Recorder>,
    job: SyncJob,
}

async fn setup(extra: &str) -> Setup {
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
        &format!(
            "source = \"crm.p\"\nkey = \"id\"\ndestination = \"rec\"\ntype = \"identify\"\n{extra}"
        ),
        "syncs/p.toml",
        &["rec".to_string()],
        &[],
    )
    .unwrap();
    let recorder = Arc::new(Recorder::new());
    let job = SyncJob::new(config, recorder.clone(), &[], Default::default()).unwrap();
    Setup {
        dir,
        lake,
        recorder,
        job,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_state_and_log_commits_is_finished_by_the_next_run() {
    let Setup {
        dir,
        lake,
        recorder,
        job,
    } = setup("dead_letter_after = 1\n").await;
    recorder.refuse.lock().unwrap().insert("2".into());
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
    let Setup {
        dir,
        lake,
        recorder,
        job,
    } = setup("").await;
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

/// A lake whose `sync_state` was written before `refused_since` existed: it is read as "no
/// streak yet", widened by the next commit, and a replay of its dead rows works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_written_before_refused_since_is_read_and_widened() {
    use tideway_activate::state::{self, StateRow};
    let Setup {
        dir: _dir,
        lake,
        recorder,
        job,
    } = setup("dead_letter_after = \"1d\"\n").await;
    // Key 1 was refused 3 times, key 2 dead-lettered, by an older Tideway.
    let old = |key: &str, status, attempts| StateRow {
        key: key.into(),
        hash: None,
        payload: None,
        dead_hash: None,
        status,
        attempts,
        refused_since: None,
        message: Some("refused".into()),
        delete: false,
    };
    let batch = state::state_batch("p", 1, &[old("1", "rejected", 3), old("2", "dead", 5)]);
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| {
            let name = batch.schema().field(i).name().clone();
            name != state::REFUSED_SINCE && name != state::DELETE
        })
        .collect();
    let name = state::table(state::STATE);
    lake.append(&name, vec![batch.project(&keep).unwrap()])
        .await
        .unwrap();
    assert!(
        lake.schema(&name)
            .await
            .unwrap()
            .column_with_name(state::REFUSED_SINCE)
            .is_none()
    );
    assert_eq!(tideway_activate::run::replay(&lake, "p").await.unwrap(), 1);

    recorder.refuse.lock().unwrap().insert("1".into());
    let run = job.run(&lake, &options(), &|_| {}).await.unwrap();
    // Key 1's streak starts at this refusal (the old state says nothing of when it began).
    assert_eq!(
        (run.counts.delivered, run.counts.rejected, run.counts.dead),
        (2, 1, 0),
        "{run:?}"
    );
    let since = "SELECT count(*) FROM _tideway.sync_state WHERE key = '1' AND refused_since IS NOT NULL AND attempts = 4";
    assert_eq!(count(&lake, since).await, 1);
    // A day later it is dead.
    let later = tideway_activate::RunOptions {
        started: Some(chrono::Utc::now() + chrono::Duration::days(1)),
        ..options()
    };
    let run = job.run(&lake, &later, &|_| {}).await.unwrap();
    assert_eq!((run.counts.rejected, run.counts.dead), (0, 1), "{run:?}");
}
