//! Writes: concurrency, merges with deletes, overwrite, and the errors users see.

use std::sync::Arc;

use tideway_lake::arrow::array::{BooleanArray, Int64Array, RecordBatch};
use tideway_lake::arrow::datatypes::{DataType, Field, Schema};
use tideway_lake::{Lake, LakeError, TableName, WriteMode};

use crate::txn::{count, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_lose_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().display().to_string();
    let t: TableName = "events.tracks".parse().unwrap();
    let mut tasks = Vec::new();
    for writer in 0..4i64 {
        let location = location.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            // Separate Lake handles: nothing is shared but the directory.
            let lake = Lake::open(&location, Default::default()).await.unwrap();
            for i in 0..5i64 {
                let start = (writer * 5 + i) * 10;
                lake.append(&t, vec![rows(start..start + 10)])
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let lake = Lake::open(&location, Default::default()).await.unwrap();
    assert_eq!(count(&lake, "events.tracks").await, 200);
    assert_eq!(
        count(&lake, "(SELECT DISTINCT id FROM events.tracks)").await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_with_a_delete_column() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let t: TableName = "crm.customers".parse().unwrap();
    lake.merge(&t, vec![rows(0..10)], &["id"]).await.unwrap();

    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("_deleted", DataType::Boolean, true),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 42, 43])),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(true),
                Some(true),
                None,
            ])),
        ],
    )
    .unwrap();
    let c = lake
        .write(
            &t,
            vec![batch],
            WriteMode::Merge {
                keys: vec!["id".into()],
                delete_column: Some("_deleted".into()),
                kept_when_null: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!((c.deleted, c.inserted), (2, 1), "{c:?}");
    assert_eq!(count(&lake, "crm.customers").await, 9);
    // The marker is not a column of the table.
    let schema = lake.schema(&t).await.unwrap();
    assert!(schema.field_with_name("_deleted").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_keeps_a_kept_column_where_the_input_is_null() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let t: TableName = "crm.customers".parse().unwrap();
    let batch = |ids: Vec<i64>, v: Vec<Option<i64>>, w: Vec<Option<i64>>| {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
            Field::new("w", DataType::Int64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Int64Array::from(v)),
                Arc::new(Int64Array::from(w)),
            ],
        )
        .unwrap()
    };
    lake.merge(
        &t,
        vec![batch(
            vec![1, 2],
            vec![Some(10), Some(20)],
            vec![Some(1), Some(2)],
        )],
        &["id"],
    )
    .await
    .unwrap();
    // Row 1: v null (kept), w null (not kept: set to null). Row 2: both given. Row 3: new.
    lake.merge(
        &t,
        vec![batch(
            vec![1, 2, 3],
            vec![None, Some(21), None],
            vec![None, Some(22), Some(3)],
        )],
        &["id"],
    )
    .with_kept_when_null("v")
    .await
    .unwrap();
    let out = lake
        .sql("SELECT id, v, w FROM crm.customers ORDER BY id")
        .await
        .unwrap();
    let tideway_lake::SqlOutput::Rows(out) = out else {
        panic!("a query gives rows")
    };
    let text = tideway_lake::arrow::util::pretty::pretty_format_batches(&out.batches)
        .unwrap()
        .to_string();
    let expected = "\
+----+----+----+
| id | v  | w  |
+----+----+----+
| 1  | 10 |    |
| 2  | 21 | 22 |
| 3  |    | 3  |
+----+----+----+";
    assert_eq!(text, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_refuses_null_and_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let t: TableName = "crm.customers".parse().unwrap();
    let err = lake
        .merge(&t, vec![rows(0..3)], &["customer_id"])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("key column `customer_id` is not in the data; columns are: id, v"),
        "{err}"
    );

    let schema = Schema::new(vec![Field::new("id", DataType::Int64, true)]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
    )
    .unwrap();
    let err = lake.merge(&t, vec![batch], &["id"]).await.unwrap_err();
    assert!(
        err.to_string().contains("1 row(s) have a null `id`"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_replaces_rows_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let t: TableName = "ref.codes".parse().unwrap();
    lake.append(&t, vec![rows(0..10)]).await.unwrap();
    let schema = Schema::new(vec![Field::new("code", DataType::Int64, false)]);
    let batch =
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(Int64Array::from(vec![7]))]).unwrap();
    lake.overwrite(&t, vec![batch]).await.unwrap();
    assert_eq!(count(&lake, "ref.codes").await, 1);
    let schema = lake.schema(&t).await.unwrap();
    assert_eq!(schema.fields().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_report_rows_versions_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let t: TableName = "events.tracks".parse().unwrap();
    lake.append(&t, vec![rows(0..10)]).await.unwrap();
    lake.append(&t, vec![rows(10..25)]).await.unwrap();
    let infos = lake.infos().await.unwrap();
    assert_eq!(infos.len(), 1);
    let info = &infos[0];
    assert_eq!(
        (info.name.as_str(), info.rows, info.version, info.files),
        ("events.tracks", 25, 1, 2)
    );
    assert!(info.size_bytes > 0 && info.last_commit.is_some());

    // Compaction folds the two files into one, keeping every row; vacuum then removes the old ones.
    let report = lake.optimize(&t, None).await.unwrap();
    assert_eq!((report.files_removed, report.files_added), (2, 1));
    let info = lake.info(&t).await.unwrap();
    assert_eq!((info.rows, info.files), (25, 1));
    // The latest version comes from a checkpoint now; its commit time is still known.
    assert!(info.last_commit.is_some(), "{info:?}");
    let vacuum = lake
        .vacuum(&t, std::time::Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(vacuum.files_deleted, 2);
    assert_eq!(count(&lake, "events.tracks").await, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_lake_location_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let err = Lake::open(&file.join("lake").display().to_string(), Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LakeError::Location { .. }), "{err}");
    assert!(err.to_string().contains("cannot use the lake at"), "{err}");
    assert!(
        err.to_string().contains("cannot create the directory"),
        "{err}"
    );
    let err = Lake::open(&file.display().to_string(), Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("exists and is not a directory"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_normalizes_names_and_appends_in_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        &dir.path().join("lake").display().to_string(),
        Default::default(),
    )
    .await
    .unwrap();
    let csv = dir.path().join("customers.csv");
    std::fs::write(
        &csv,
        "Customer ID,First Name,signupDate\n1,Ada,2024-01-02\n2,Grace,2024-02-03\n",
    )
    .unwrap();
    let json = dir.path().join("more.ndjson");
    std::fs::write(
        &json,
        "{\"Customer ID\": 3, \"First Name\": \"Alan\", \"vip\": true}\n",
    )
    .unwrap();
    let t: TableName = "raw.customers".parse().unwrap();
    let report = lake.import(&[csv, json], &t, false).await.unwrap();
    assert_eq!(report.commit.rows, 3);
    assert_eq!(report.commit.version, Some(0));
    assert!(
        report
            .renamed
            .contains(&("Customer ID".into(), "customer_id".into())),
        "{:?}",
        report.renamed
    );
    assert!(
        report
            .renamed
            .contains(&("signupDate".into(), "signup_date".into()))
    );
    let schema = lake.schema(&t).await.unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["customer_id", "first_name", "signup_date", "vip"]);

    let bad = dir.path().join("notes.txt");
    std::fs::write(&bad, "x").unwrap();
    let err = lake
        .import(&[bad], &t, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown file type; known extensions: csv, parquet, ndjson, jsonl, json"),
        "{err}"
    );
}

/// Without the `s3` feature an S3 lake cannot work; the error says how to get a build that can.
#[cfg(not(feature = "s3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_lake_without_the_feature_says_how_to_build_one() {
    let err = Lake::open("s3://acme-data/lake", Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot use the lake at `s3://acme-data/lake`"),
        "{err}"
    );
    assert!(err.contains("--features cloud"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_where_rewrites_only_the_matching_rows_and_repeats_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let t: TableName = "marts.windows".parse().unwrap();
    // The first write creates the table.
    lake.replace_where(&t, vec![rows(0..10)], "id >= 0 AND id < 10")
        .await
        .unwrap();
    lake.replace_where(&t, vec![rows(10..20)], "id >= 10 AND id < 20")
        .await
        .unwrap();
    assert_eq!(count(&lake, "marts.windows").await, 20);
    // Rewriting a window replaces its rows: twice gives one copy, other windows untouched.
    for _ in 0..2 {
        lake.replace_where(&t, vec![rows(12..15)], "id >= 10 AND id < 20")
            .await
            .unwrap();
    }
    assert_eq!(count(&lake, "marts.windows").await, 13);
    assert_eq!(
        count(&lake, "(SELECT * FROM marts.windows WHERE id >= 10)").await,
        3
    );
    // Rows outside the predicate are refused, and nothing is written.
    let e = lake
        .replace_where(&t, vec![rows(30..31)], "id >= 10 AND id < 20")
        .await
        .unwrap_err();
    assert!(!e.to_string().is_empty());
    assert_eq!(count(&lake, "marts.windows").await, 13);
}
