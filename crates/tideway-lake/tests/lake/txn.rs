//! Exactly-once writes through Delta transaction identifiers.

use std::sync::Arc;

use tideway_lake::arrow::array::{Int64Array, RecordBatch, StringArray};
use tideway_lake::arrow::datatypes::{DataType, Field, Schema};
use tideway_lake::{Lake, SqlOutput, TableName, Txn};

pub fn rows(ids: std::ops::Range<i64>) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Utf8, true),
    ]);
    let v: Vec<String> = ids.clone().map(|i| format!("v{i}")).collect();
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(v)),
        ],
    )
    .unwrap()
}

pub async fn count(lake: &Lake, table: &str) -> i64 {
    let sql = format!("SELECT count(*) AS n FROM {table}");
    lake.scalar_i64(&sql).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_transaction_commits_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let t: TableName = "events.tracks".parse().unwrap();

    let first = lake
        .append(&t, vec![rows(0..100)])
        .with_txn(Txn::new("loader", 1))
        .await
        .unwrap();
    assert!(!first.skipped);
    // The loader crashed before recording its progress and retries the same batch.
    let retry = lake
        .append(&t, vec![rows(0..100)])
        .with_txn(Txn::new("loader", 1))
        .await
        .unwrap();
    assert!(retry.skipped);
    assert_eq!(retry.version, None);
    // An older version is also already covered.
    assert!(
        lake.append(&t, vec![rows(0..100)])
            .with_txn(Txn::new("loader", 0))
            .await
            .unwrap()
            .skipped
    );
    assert_eq!(count(&lake, "events.tracks").await, 100);

    // The next batch, and another application's batch, are written.
    lake.append(&t, vec![rows(100..150)])
        .with_txn(Txn::new("loader", 2))
        .await
        .unwrap();
    lake.append(&t, vec![rows(150..160)])
        .with_txn(Txn::new("other", 1))
        .await
        .unwrap();
    assert_eq!(count(&lake, "events.tracks").await, 160);
    assert_eq!(lake.txn_version(&t, "loader").await.unwrap(), Some(2));
    assert_eq!(lake.txn_version(&t, "other").await.unwrap(), Some(1));
    assert_eq!(lake.txn_version(&t, "never").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_with_a_transaction_commits_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let t: TableName = "crm.customers".parse().unwrap();
    lake.merge(&t, vec![rows(0..10)], &["id"])
        .with_txn(Txn::new("crm", 1))
        .await
        .unwrap();
    let c = lake
        .merge(&t, vec![rows(5..15)], &["id"])
        .with_txn(Txn::new("crm", 2))
        .await
        .unwrap();
    assert_eq!((c.inserted, c.updated), (5, 5));
    assert!(
        lake.merge(&t, vec![rows(5..15)], &["id"])
            .with_txn(Txn::new("crm", 2))
            .await
            .unwrap()
            .skipped
    );
    assert_eq!(count(&lake, "crm.customers").await, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_with_the_same_transaction_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().display().to_string();
    let t: TableName = "events.tracks".parse().unwrap();
    let lake = Lake::open(&location, Default::default()).await.unwrap();
    lake.append(&t, vec![rows(0..1)]).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let location = location.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let lake = Lake::open(&location, Default::default()).await.unwrap();
            lake.append(&t, vec![rows(1..51)])
                .with_txn(Txn::new("racer", 7))
                .await
                .unwrap()
        }));
    }
    let mut written = 0;
    for task in tasks {
        if !task.await.unwrap().skipped {
            written += 1;
        }
    }
    assert_eq!(written, 1, "exactly one of the racing writers commits");
    assert_eq!(count(&lake, "events.tracks").await, 51);
}

/// Staged files are invisible until committed, commit once under their transaction, create
/// the table and evolve its schema as an append would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_files_show_only_once_committed_and_commit_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let t: TableName = "_tideway.log".parse().unwrap();

    // A table that does not exist yet is created, empty.
    let staged = lake.stage(&t, vec![rows(0..10)]).await.unwrap();
    assert_eq!((staged.rows, staged.files.len()), (10, 1));
    assert_eq!(count(&lake, "_tideway.log").await, 0);

    // The staged files travel as JSON (in another table's commit) and commit from there.
    let json = serde_json::to_value(&staged).unwrap();
    let staged: tideway_lake::Staged = serde_json::from_value(json).unwrap();
    let first = lake
        .commit_staged(&staged, Txn::new("sync:a", 1))
        .await
        .unwrap();
    assert!(!first.skipped);
    assert_eq!(count(&lake, "_tideway.log").await, 10);
    let again = lake
        .commit_staged(&staged, Txn::new("sync:a", 1))
        .await
        .unwrap();
    assert!(again.skipped);
    assert_eq!(count(&lake, "_tideway.log").await, 10);
    assert_eq!(lake.txn_version(&t, "sync:a").await.unwrap(), Some(1));

    // Rows with a new column: the column is added before the files are written.
    let wider = {
        let b = rows(10..13);
        let mut fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("extra", DataType::Utf8, true));
        let mut columns = b.columns().to_vec();
        columns.push(Arc::new(StringArray::from(vec![
            Some("x"),
            None,
            Some("z"),
        ])));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    };
    let staged = lake.stage(&t, vec![wider]).await.unwrap();
    assert_eq!(count(&lake, "_tideway.log").await, 10);
    lake.commit_staged(&staged, Txn::new("sync:a", 2))
        .await
        .unwrap();
    let SqlOutput::Rows(r) = lake
        .sql("SELECT count(extra) FROM _tideway.log")
        .await
        .unwrap()
    else {
        panic!()
    };
    let extra = r.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!((count(&lake, "_tideway.log").await, extra), (13, 2));

    // Files staged and never committed (the other commit failed) stay invisible.
    lake.stage(&t, vec![rows(100..200)]).await.unwrap();
    assert_eq!(count(&lake, "_tideway.log").await, 13);
}

/// A staged file a vacuum removed before its late commit is left out rather than referenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_file_that_is_gone_is_left_out_of_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let t: TableName = "_tideway.log".parse().unwrap();
    let kept = lake.stage(&t, vec![rows(0..5)]).await.unwrap();
    let gone = lake.stage(&t, vec![rows(5..10)]).await.unwrap();
    std::fs::remove_file(dir.path().join("_tideway/log").join(&gone.files[0].path)).unwrap();
    let both = tideway_lake::Staged {
        files: [kept.files, gone.files].concat(),
        rows: 10,
        ..kept
    };
    lake.commit_staged(&both, Txn::new("sync:a", 1))
        .await
        .unwrap();
    assert_eq!(count(&lake, "_tideway.log").await, 5);
}

/// A commit that names staged files of other tables, cut by a crash after its own table's
/// commit: `roll_forward_staged` commits the staged rows once, and only the newest commit of
/// the writer it is asked about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_cut_after_its_own_table_is_finished_once_by_rolling_forward() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let state: TableName = "_tideway.state".parse().unwrap();
    let log: TableName = "_tideway.log".parse().unwrap();
    let meta = |writer: &str| {
        let mut m = serde_json::Map::new();
        m.insert("writer".into(), serde_json::json!(writer));
        m
    };
    let ours = |v: &serde_json::Value| v["writer"] == "a";
    // Nothing committed yet by `a`.
    let none = lake
        .roll_forward_staged(&state, "w:a", "tideway.test", ours)
        .await
        .unwrap();
    assert!(none.is_none());

    // Writer a's first commit goes through whole.
    let staged = vec![lake.stage(&log, vec![rows(0..5)]).await.unwrap()];
    let write = lake.append(&state, vec![rows(0..1)]);
    lake.commit_with_staged(write, Txn::new("w:a", 1), "tideway.test", meta("a"), staged)
        .await
        .unwrap();
    assert_eq!(count(&lake, "_tideway.log").await, 5);

    // Its second: the log's commit is lost (the process stopped between the two commits).
    let staged = vec![lake.stage(&log, vec![rows(5..12)]).await.unwrap()];
    let write = lake.append(&state, vec![rows(1..2)]);
    lake.commit_with_staged(write, Txn::new("w:a", 2), "tideway.test", meta("a"), staged)
        .await
        .unwrap();
    let newest = std::fs::read_dir(dir.path().join("_tideway/log/_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()
        .unwrap();
    std::fs::remove_file(newest).unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    assert_eq!(count(&lake, "_tideway.log").await, 5);

    // Another writer commits to the same table after it.
    let write = lake.append(&state, vec![rows(2..3)]);
    lake.commit_with_staged(
        write,
        Txn::new("w:b", 1),
        "tideway.test",
        meta("b"),
        Vec::new(),
    )
    .await
    .unwrap();

    let (found, added) = lake
        .roll_forward_staged(&state, "w:a", "tideway.test", ours)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found["writer"].as_str(), added), (Some("a"), 7));
    assert_eq!(count(&lake, "_tideway.log").await, 12);
    let (_, again) = lake
        .roll_forward_staged(&state, "w:a", "tideway.test", ours)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, 0, "a second roll forward adds nothing");
    assert_eq!(count(&lake, "_tideway.log").await, 12);

    // A scalar that is not a number is an error that names its type.
    let e = lake
        .scalar_i64("SELECT v FROM _tideway.log LIMIT 1")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("Utf8") && e.contains("integer"), "{e}");
}
