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
    let SqlOutput::Rows(r) = lake
        .sql(&format!("SELECT count(*) AS n FROM {table}"))
        .await
        .unwrap()
    else {
        panic!()
    };
    r.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
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
