//! The Kafka reader against a real Kafka-protocol broker (tansu, started by `.ci/kafka.sh`).
//!
//! Tests that need the broker print why they are skipped when `TIDEWAY_KAFKA` (a `host:port`
//! list) is unset. Each test writes its own topic, so they can run at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tideway_extract::kafka::{
    KafkaError, KafkaFault, KafkaReader, KafkaSourceConfig, KafkaWriter, Record, StartOffset,
};

pub fn broker() -> Option<Vec<String>> {
    match std::env::var("TIDEWAY_KAFKA") {
        Ok(b) if !b.trim().is_empty() => Some(b.split(',').map(str::to_owned).collect()),
        _ => {
            eprintln!(
                "skipped: TIDEWAY_KAFKA is unset; `source .ci/kafka.sh` starts a broker and sets it"
            );
            None
        }
    }
}

pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Writes `n` JSON click events over a new topic of `partitions` partitions; `seq` counts from 0.
pub async fn produce(
    brokers: &[String],
    topic: &str,
    partitions: i32,
    n: u64,
) -> anyhow::Result<()> {
    let writer = KafkaWriter::new(brokers, &BTreeMap::new()).await?;
    writer.create_topic(topic, partitions).await?;
    for seq in 0..n {
        let user = format!("user-{}", seq % 97);
        let event = json!({
            "seq": seq,
            "user_id": user,
            "event": "click",
            "page": format!("/products/{}", seq % 13),
            "ts": 1_767_225_600_000_u64 + seq,
        });
        writer.send_json(topic, Some(&user), &event).await?;
    }
    writer.flush().await?;
    Ok(())
}

fn config(brokers: &[String], topic: &str) -> KafkaSourceConfig {
    let mut c = KafkaSourceConfig::new(brokers.iter().cloned(), [topic], unique("tideway-test"));
    c.max_batch_records = 1_000;
    c.max_wait = Duration::from_millis(300);
    c
}

fn seq(r: &Record) -> u64 {
    let v: Value = serde_json::from_slice(r.value.as_deref().expect("a value")).expect("JSON");
    v["seq"].as_u64().expect("seq")
}

/// Offsets strictly increase within each partition, and `seq` (the send order) with them.
fn assert_partition_order(records: &[Record]) {
    let mut last: BTreeMap<(String, i32), (i64, u64)> = BTreeMap::new();
    for r in records {
        let s = seq(r);
        if let Some(&(offset, prev)) = last.get(&(r.topic.clone(), r.partition)) {
            assert!(
                r.offset > offset,
                "offsets out of order in partition {}",
                r.partition
            );
            assert!(s > prev, "send order lost in partition {}", r.partition);
        }
        last.insert((r.topic.clone(), r.partition), (r.offset, s));
    }
}

#[tokio::test]
async fn reads_10000_records_over_3_partitions_exactly_once_in_order() -> anyhow::Result<()> {
    let Some(brokers) = broker() else {
        return Ok(());
    };
    let topic = unique("clicks");
    produce(&brokers, &topic, 3, 10_000).await?;

    let mut reader = KafkaReader::connect(config(&brokers, &topic)).await?;
    let partitions = reader.partitions().await?;
    assert_eq!(
        partitions,
        [(topic.clone(), 0), (topic.clone(), 1), (topic.clone(), 2)]
    );
    reader.assign(&BTreeMap::new());
    let records = reader.read_to_end().await?;

    assert_eq!(records.len(), 10_000);
    let seqs: BTreeSet<u64> = records.iter().map(seq).collect();
    assert_eq!(seqs, (0..10_000).collect(), "every record exactly once");
    assert_partition_order(&records);
    for p in 0..3 {
        assert!(
            records.iter().any(|r| r.partition == p),
            "partition {p} got no record"
        );
    }
    assert!(
        records
            .iter()
            .all(|r| r.key.is_some() && r.timestamp_ms.is_some())
    );
    assert_eq!(
        reader.positions(),
        &reader.high_watermarks().await?,
        "read to the end"
    );
    // At the end, a one-shot read returns nothing more.
    assert!(reader.read_to_end().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn resuming_from_stored_positions_has_no_gap_and_no_duplicate() -> anyhow::Result<()> {
    let Some(brokers) = broker() else {
        return Ok(());
    };
    let topic = unique("resume");
    produce(&brokers, &topic, 3, 10_000).await?;

    // First run: stop after about 4,000 records, keeping the positions as a cursor store would.
    let mut first = KafkaReader::connect(config(&brokers, &topic)).await?;
    let end = first.high_watermarks().await?;
    let mut seen = Vec::new();
    while seen.len() < 4_000 {
        let batch = first
            .poll_batch_to(&end)
            .await?
            .expect("not at the end yet");
        seen.extend(batch);
    }
    let stored = first.positions().clone();
    drop(first);
    assert_eq!(stored.len(), 3);
    for r in &seen {
        assert!(
            r.offset < stored[&(r.topic.clone(), r.partition)],
            "position past a record"
        );
    }

    // Second run: a new reader from the stored positions.
    let mut second = KafkaReader::connect(config(&brokers, &topic)).await?;
    second.assign(&stored);
    let rest = second.read_to_end().await?;
    for (tp, &pos) in &stored {
        let first_offset = rest
            .iter()
            .find(|r| (&r.topic, r.partition) == (&tp.0, tp.1));
        if let Some(r) = first_offset {
            assert_eq!(
                r.offset, pos,
                "partition {} resumed at the stored position",
                tp.1
            );
        }
    }
    let mut all: Vec<u64> = seen.iter().chain(&rest).map(seq).collect();
    assert_eq!(all.len(), 10_000, "no duplicate");
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (0..10_000).collect::<Vec<_>>(), "no gap");
    assert_partition_order(&rest);
    Ok(())
}

#[tokio::test]
async fn partitions_without_a_stored_position_start_at_the_configured_start() -> anyhow::Result<()>
{
    let Some(brokers) = broker() else {
        return Ok(());
    };
    let topic = unique("start");
    produce(&brokers, &topic, 3, 300).await?;

    let mut c = config(&brokers, &topic);
    c.start = StartOffset::Latest;
    let mut reader = KafkaReader::connect(c).await?;
    reader.assign(&BTreeMap::from([((topic.clone(), 0), 0)]));
    let records = reader.read_to_end().await?;
    let high = reader.high_watermarks().await?;
    assert_eq!(records.len() as i64, high[&(topic.clone(), 0)]);
    assert!(
        records.iter().all(|r| r.partition == 0),
        "latest skips the other partitions"
    );
    assert_eq!(reader.positions(), &high);
    Ok(())
}

#[tokio::test]
async fn a_stored_position_past_the_end_is_an_error_naming_the_range() -> anyhow::Result<()> {
    let Some(brokers) = broker() else {
        return Ok(());
    };
    let topic = unique("range");
    produce(&brokers, &topic, 1, 10).await?;

    let mut reader = KafkaReader::connect(config(&brokers, &topic)).await?;
    reader.assign(&BTreeMap::from([((topic.clone(), 0), 1_000_000)]));
    let err = reader.poll_batch().await.unwrap_err();
    assert!(
        matches!(err, KafkaError::OffsetOutOfRange { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("1000000") && text.contains("0..10") && text.contains(&topic),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_topic_is_named_with_the_topics_that_exist() -> anyhow::Result<()> {
    let Some(brokers) = broker() else {
        return Ok(());
    };
    let known = unique("known");
    produce(&brokers, &known, 1, 1).await?;
    let missing = unique("missing");

    let err = KafkaReader::connect(config(&brokers, &missing))
        .await
        .unwrap_err();
    assert!(matches!(err, KafkaError::UnknownTopic { .. }), "{err:?}");
    assert_eq!(err.fault(), KafkaFault::User);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("unknown kafka topic `{missing}`; topics on ")),
        "{text}"
    );
    assert!(text.contains(&known), "{text}");

    // Asking did not create it.
    let err = KafkaReader::connect(config(&brokers, &missing))
        .await
        .unwrap_err();
    assert!(matches!(err, KafkaError::UnknownTopic { .. }), "{err:?}");
    Ok(())
}

/// Needs no broker: nothing listens on port 1.
#[tokio::test]
async fn an_unreachable_broker_is_named() {
    let brokers = vec!["127.0.0.1:1".to_owned()];
    let mut c = config(&brokers, "clicks");
    c.request_timeout = Duration::from_secs(2);
    let err = KafkaReader::connect(c).await.unwrap_err();
    assert!(matches!(err, KafkaError::Unreachable { .. }), "{err:?}");
    assert!(err.retryable());
    let text = err.to_string();
    assert!(
        text.starts_with("cannot reach the kafka brokers 127.0.0.1:1: "),
        "{text}"
    );

    let quick = BTreeMap::from([("request.timeout.ms".to_owned(), "2000".to_owned())]);
    let err = KafkaWriter::new(&brokers, &quick).await.unwrap_err();
    assert!(matches!(err, KafkaError::Unreachable { .. }), "{err:?}");
}

/// Needs no broker: librdkafka checks property names when the client is made.
#[tokio::test]
async fn a_misspelt_client_property_is_a_configuration_error() {
    let mut c = config(&["127.0.0.1:1".to_owned()], "clicks");
    c.properties.insert("fetch.max.byte".into(), "1000".into());
    let err = KafkaReader::connect(c).await.unwrap_err();
    assert!(matches!(err, KafkaError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("fetch.max.byte"), "{err}");
}

#[tokio::test]
async fn a_timestamp_start_skips_older_records() -> anyhow::Result<()> {
    let Some(brokers) = broker() else {
        return Ok(());
    };
    let topic = unique("since");
    produce(&brokers, &topic, 2, 100).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let writer = KafkaWriter::new(&brokers, &BTreeMap::new()).await?;
    for seq in 100..150u64 {
        writer
            .send_json(&topic, Some(&format!("k{seq}")), &json!({ "seq": seq }))
            .await?;
    }
    writer.flush().await?;

    let mut c = config(&brokers, &topic);
    c.start = StartOffset::Timestamp(since);
    let mut reader = KafkaReader::connect(c).await?;
    let records = reader.read_to_end().await?;
    let seqs: BTreeSet<u64> = records.iter().map(seq).collect();
    assert_eq!(
        seqs,
        (100..150).collect(),
        "only the records written after `since`"
    );
    assert!(records.iter().all(|r| r.timestamp_ms.unwrap() >= since));
    Ok(())
}

/// `TIDEWAY_KAFKA_SASL`: a broker that requires SASL/SCRAM-SHA-512 and knows the user `tideway`
/// with the password `tideway-secret` (`.ci/kafka.sh` starts one).
#[tokio::test]
async fn refused_credentials_are_an_authentication_error() -> anyhow::Result<()> {
    let Ok(broker) = std::env::var("TIDEWAY_KAFKA_SASL") else {
        eprintln!(
            "skipped: TIDEWAY_KAFKA_SASL is unset; `source .ci/kafka.sh` starts such a broker"
        );
        return Ok(());
    };
    let brokers = vec![broker];
    let sasl = |password: &str| {
        BTreeMap::from([
            ("security.protocol".to_owned(), "sasl_plaintext".to_owned()),
            ("sasl.mechanism".to_owned(), "SCRAM-SHA-512".to_owned()),
            ("sasl.username".to_owned(), "tideway".to_owned()),
            ("sasl.password".to_owned(), password.to_owned()),
        ])
    };
    let topic = unique("secured");
    let writer = KafkaWriter::new(&brokers, &sasl("tideway-secret")).await?;
    writer.create_topic(&topic, 1).await?;
    writer.send_json(&topic, None, &json!({ "seq": 0 })).await?;
    writer.flush().await?;

    let mut good = config(&brokers, &topic);
    good.properties = sasl("tideway-secret");
    let mut reader = KafkaReader::connect(good.clone()).await?;
    assert_eq!(reader.read_to_end().await?.len(), 1);

    let mut bad = good.clone();
    bad.properties = sasl("wrong");
    bad.request_timeout = Duration::from_secs(3);
    let err = KafkaReader::connect(bad.clone()).await.unwrap_err();
    assert!(matches!(err, KafkaError::Authentication { .. }), "{err:?}");
    assert_eq!(err.fault(), KafkaFault::User);
    let text = err.to_string();
    assert!(
        text.contains("refused to authenticate") && text.contains("sasl"),
        "{text}"
    );
    assert!(!text.contains("wrong"), "the password leaked: {text}");

    let mut quick = bad.properties.clone();
    quick.insert("request.timeout.ms".into(), "3000".into());
    let err = KafkaWriter::new(&brokers, &quick).await.unwrap_err();
    assert!(matches!(err, KafkaError::Authentication { .. }), "{err:?}");

    // No SASL at all: the broker drops the connection; the hint names `security.protocol`.
    let mut none = good;
    none.properties.clear();
    none.request_timeout = Duration::from_secs(3);
    let err = KafkaReader::connect(none).await.unwrap_err();
    assert!(err.to_string().contains("security.protocol"), "{err}");
    Ok(())
}

#[tokio::test]
async fn an_open_read_after_a_read_to_the_end_continues_without_gap() -> anyhow::Result<()> {
    let Some(brokers) = broker() else {
        return Ok(());
    };
    let topic = unique("continue");
    produce(&brokers, &topic, 3, 300).await?;
    let mut reader = KafkaReader::connect(config(&brokers, &topic)).await?;
    assert_eq!(reader.read_to_end().await?.len(), 300);

    let writer = KafkaWriter::new(&brokers, &BTreeMap::new()).await?;
    for seq in 300..600u64 {
        let key = format!("user-{}", seq % 97);
        writer
            .send_json(&topic, Some(&key), &json!({ "seq": seq }))
            .await?;
    }
    writer.flush().await?;

    let mut more = Vec::new();
    for _ in 0..50 {
        more.extend(reader.poll_batch().await?);
        if more.len() >= 300 {
            break;
        }
    }
    let seqs: Vec<u64> = more.iter().map(seq).collect();
    assert_eq!(seqs.len(), 300, "no duplicate");
    assert_eq!(
        seqs.iter().copied().collect::<BTreeSet<_>>(),
        (300..600).collect(),
        "no gap"
    );
    assert_partition_order(&more);
    Ok(())
}
