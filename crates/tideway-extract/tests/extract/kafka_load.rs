//! A Kafka source into the lake against a real broker (tansu, started by `.ci/kafka.sh`):
//! every record once, across runs, an interrupted run and a crash between a batch's commits.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tideway_extract::kafka::KafkaWriter;
use tideway_extract::{KafkaLoader, RunOptions, SourceConfig, SourceKind};
use tideway_lake::Lake;

use crate::kafka_reader::{broker, unique};

async fn count(lake: &Lake, sql: &str) -> i64 {
    lake.scalar_i64(sql)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("`{sql}` gives no integer"))
}

/// Orders of `n` items each `seq % 3 + 1` long, keyed by user, from `from` on.
async fn produce_orders(writer: &KafkaWriter, topic: &str, from: u64, n: u64) {
    for seq in from..from + n {
        let user = format!("user-{}", seq % 41);
        let items: Vec<_> = (0..seq % 3 + 1)
            .map(|i| json!({"sku": format!("sku-{}", (seq + i) % 17), "qty": i + 1}))
            .collect();
        let order = json!({
            "seq": seq,
            "user_id": user,
            "total": format!("{}.50", seq % 100),
            "shipping": {"city": "Lyon", "zip": "69001"},
            "items": items,
        });
        writer.send_json(topic, Some(&user), &order).await.unwrap();
    }
    writer.flush().await.unwrap();
}

/// Item rows of orders `from..from + n`.
fn items(from: u64, n: u64) -> i64 {
    (from..from + n).map(|s| (s % 3 + 1) as i64).sum()
}

fn source(brokers: &[String], topic: &str) -> tideway_extract::kafka_load::KafkaSource {
    let text = format!(
        "type = \"kafka\"\nbrokers = [{}]\ntopics = [\"{topic}\"]\nmax_batch_records = 200\nmax_wait_ms = 300\n",
        brokers
            .iter()
            .map(|b| format!("\"{b}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let config = SourceConfig::parse(&text, "sources/shop.toml", &|_| None).unwrap();
    let SourceKind::Kafka(kafka) = config.kind else {
        panic!("a kafka source")
    };
    kafka
}

/// Removes a table's newest commit, as if the process had stopped just before making it.
fn drop_last_commit(table: &Path) {
    let log = table.join("_delta_log");
    let last = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()
        .unwrap();
    std::fs::remove_file(&last).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_lands_once_through_an_interrupted_run_a_crash_and_new_records() {
    let Some(brokers) = broker() else {
        return;
    };
    let topic = unique("orders");
    let writer = KafkaWriter::new(&brokers, &BTreeMap::new()).await.unwrap();
    writer.create_topic(&topic, 3).await.unwrap();
    produce_orders(&writer, &topic, 0, 3_000).await;
    // Two values that are no JSON object, and a tombstone.
    writer
        .send(&topic, Some(b"x"), Some(b"{not json"))
        .await
        .unwrap();
    writer
        .send(&topic, Some(b"x"), Some(b"[1, 2]"))
        .await
        .unwrap();
    writer.send(&topic, Some(b"x"), None).await.unwrap();
    writer.flush().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let options = RunOptions {
        flush_records: 250,
        ..RunOptions::default()
    };
    let loader = || {
        KafkaLoader::new(
            lake.clone(),
            "shop",
            source(&brokers, &topic),
            options.clone(),
        )
    };
    let table = loader().table_of(&topic).unwrap();
    let rows = format!("SELECT count(*) FROM {table}");
    let distinct = format!("SELECT count(DISTINCT (_kafka_partition, _kafka_offset)) FROM {table}");
    let child = format!("{table}__items");
    let child_rows = format!("SELECT count(*) FROM {child}");

    // A run stopped midway, at whatever point it has reached once some rows are in.
    let interrupted = tokio::spawn({
        let loader = loader();
        async move { loader.run().await }
    });
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if lake.load(&table).await.unwrap().is_some() && count(&lake, &rows).await > 0 {
            break;
        }
        assert!(
            !interrupted.is_finished(),
            "the run ended before it was stopped"
        );
    }
    interrupted.abort();
    let _ = interrupted.await;
    let partial = count(&lake, &rows).await;
    assert!(partial > 0 && partial < 3_000, "stopped midway: {partial}");

    // The rerun reads on from the committed positions.
    let report = loader().run().await.unwrap();
    assert_eq!(count(&lake, &rows).await, 3_000);
    assert_eq!(count(&lake, &distinct).await, 3_000, "no record twice");
    assert_eq!(count(&lake, &child_rows).await, items(0, 3_000));
    let seqs = format!("SELECT count(DISTINCT seq) FROM {table}");
    assert_eq!(count(&lake, &seqs).await, 3_000);
    let nested = format!("SELECT count(*) FROM {table} WHERE shipping__city = 'Lyon'");
    assert_eq!(
        count(&lake, &nested).await,
        3_000,
        "nested objects are columns"
    );
    let dead = "SELECT count(*) FROM _tideway.dead_letters WHERE source = 'kafka:shop'";
    assert_eq!(count(&lake, dead).await, 2, "{report:?}");
    let cursor = report.resources[0].cursor.clone().unwrap();
    assert!(
        cursor.contains("1 tombstones skipped, 2 dead letters"),
        "{cursor}"
    );

    // Nothing new: nothing is added.
    loader().run().await.unwrap();
    assert_eq!(count(&lake, &rows).await, 3_000);

    // New records, then a crash right after the batch's checkpoint: the child rows and the
    // dead letter of the batch are not committed yet.
    produce_orders(&writer, &topic, 3_000, 40).await;
    writer
        .send(&topic, Some(b"y"), Some(b"\"just text\""))
        .await
        .unwrap();
    writer.flush().await.unwrap();
    let big = RunOptions {
        flush_records: 10_000,
        ..RunOptions::default()
    };
    KafkaLoader::new(lake.clone(), "shop", source(&brokers, &topic), big)
        .run()
        .await
        .unwrap();
    let shop = dir.path().join("shop");
    drop_last_commit(&shop.join(format!("{}__items", table.table())));
    drop_last_commit(&dir.path().join("_tideway").join("dead_letters"));
    assert_eq!(count(&lake, &child_rows).await, items(0, 3_000));
    assert_eq!(count(&lake, dead).await, 2);

    // The next run finishes that batch before reading on.
    loader().run().await.unwrap();
    assert_eq!(count(&lake, &rows).await, 3_040);
    assert_eq!(count(&lake, &distinct).await, 3_040);
    assert_eq!(count(&lake, &child_rows).await, items(0, 3_040));
    assert_eq!(count(&lake, dead).await, 3);
    let reason = "SELECT count(*) FROM _tideway.dead_letters WHERE source = 'kafka:shop' AND code = 'not_an_object' AND reason LIKE '%/% offset %: the value is a string, not a JSON object'";
    assert_eq!(count(&lake, reason).await, 1);
}

#[test]
fn a_kafka_source_file_says_what_is_wrong() {
    let text = "type = \"kafka\"\nbrokers = []\ntopics = [\"a.b\", \"a_b\"]\n[properties]\n\"sasl.password\" = \"hunter2\"\n";
    let e = SourceConfig::parse(text, "sources/shop.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`brokers` needs at least one `host:port`"),
        "{e}"
    );
    assert!(
        e.contains("sources/shop.toml:3:10: the topics `a.b` and `a_b` would both land in the table `shop.a_b`"),
        "{e}"
    );
    assert!(
        e.contains("sources/shop.toml:5:19: `sasl.password` is a secret"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_commits_records_as_they_arrive_and_stops_with_all_of_them() {
    let Some(brokers) = broker() else {
        return;
    };
    let topic = unique("live-orders");
    let writer = KafkaWriter::new(&brokers, &BTreeMap::new()).await.unwrap();
    writer.create_topic(&topic, 2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let loader = KafkaLoader::new(
        lake.clone(),
        "shop",
        source(&brokers, &topic),
        RunOptions::default(),
    );
    let table = loader.table_of(&topic).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let following = tokio::spawn(async move {
        loader
            .follow(async {
                let _ = stopped.await;
            })
            .await
    });
    produce_orders(&writer, &topic, 0, 100).await;
    // Committed within about max_wait of arriving, long before the default 20,000 records.
    let rows = format!("SELECT count(*) FROM {table}");
    let started = std::time::Instant::now();
    while lake.load(&table).await.unwrap().is_none() || count(&lake, &rows).await < 100 {
        assert!(started.elapsed() < Duration::from_secs(20), "not committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    produce_orders(&writer, &topic, 100, 50).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    following.await.unwrap().unwrap();
    // Whatever was read before the stop is committed; a one-shot run then adds the rest.
    KafkaLoader::new(
        lake.clone(),
        "shop",
        source(&brokers, &topic),
        RunOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(count(&lake, &rows).await, 150);
    let distinct = format!("SELECT count(DISTINCT seq) FROM {table}");
    assert_eq!(count(&lake, &distinct).await, 150);
}

/// A declared `[schema]`: values in another form are coerced, a value that cannot be its
/// type sends its record to the dead letters naming the field, the rest load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_types_are_coerced_and_bad_values_dead_lettered() {
    let Some(brokers) = broker() else {
        return;
    };
    let topic = unique("typed-clicks");
    let writer = KafkaWriter::new(&brokers, &BTreeMap::new()).await.unwrap();
    writer.create_topic(&topic, 1).await.unwrap();
    for click in [
        json!({"user_id": 1, "response_time_ms": "120", "datetime": "2026-01-01 10:00:00"}),
        json!({"user_id": "2", "response_time_ms": 130, "datetime": 1767225600000_i64}),
        json!({"user_id": "3", "response_time_ms": "fast"}),
        json!({"user_id": "4", "response_time_ms": null}),
    ] {
        writer.send_json(&topic, None, &click).await.unwrap();
    }
    writer.flush().await.unwrap();
    let text = format!(
        "type = \"kafka\"\nbrokers = [\"{}\"]\ntopics = [\"{topic}\"]\n[schema]\nuser_id = \"string\"\nresponse_time_ms = \"bigint\"\ndatetime = \"timestamp\"\n",
        brokers[0]
    );
    let SourceKind::Kafka(kafka) = SourceConfig::parse(&text, "sources/web.toml", &|_| None)
        .unwrap()
        .kind
    else {
        panic!("a kafka source")
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    let loader = KafkaLoader::new(lake.clone(), "web", kafka, RunOptions::default());
    let table = loader.table_of(&topic).unwrap();
    loader.run().await.unwrap();
    assert_eq!(
        count(&lake, &format!("SELECT count(*) FROM {table}")).await,
        3
    );
    // Numbers sent as text are numbers in the lake; ids sent as numbers are text.
    let sum = format!("SELECT sum(response_time_ms) FROM {table}");
    assert_eq!(count(&lake, &sum).await, 250);
    let ids = format!("SELECT count(*) FROM {table} WHERE user_id IN ('1', '2', '4')");
    assert_eq!(count(&lake, &ids).await, 3);
    let times =
        format!("SELECT count(*) FROM {table} WHERE datetime >= TIMESTAMP '2026-01-01T00:00:00Z'");
    assert_eq!(count(&lake, &times).await, 2);
    let dead = "SELECT count(*) FROM _tideway.dead_letters WHERE code = 'schema' AND field = 'response_time_ms' AND reason LIKE '%`response_time_ms` is \"fast\", which is not a bigint (declared in [schema])'";
    assert_eq!(count(&lake, dead).await, 1);

    let bad = text.replace("\"bigint\"", "\"bignum\"");
    let e = SourceConfig::parse(&bad, "sources/web.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sources/web.toml:6:20: `response_time_ms = \"bignum\"` is not a type; declare one of: string, bigint, double, boolean, timestamp"),
        "{e}"
    );
}
