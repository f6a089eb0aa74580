//! The durable log against an in-memory model, with crash points.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use tideway_collect::log::{EventLog, FileLog, FileLogOptions, LogError};

#[derive(Debug, Clone)]
enum Op {
    /// Append these records in one call (acknowledged: they must survive anything).
    Append(Vec<Vec<u8>>),
    /// Several concurrent appends (one group commit).
    Concurrent(Vec<Vec<u8>>),
    /// A crash during an unacknowledged append: garbage of this shape after the last
    /// acknowledged record, then a restart.
    Torn(Torn),
    /// A clean restart.
    Restart,
    /// A consumer commits a position (as a fraction of the end).
    Commit(usize, f64),
    /// Read from a position (as a fraction of the end).
    Read(f64),
}

#[derive(Debug, Clone, Copy)]
enum Torn {
    /// Part of a header.
    Header(usize),
    /// A whole header and part of its payload.
    Payload(usize),
    /// A whole record whose checksum does not match (a torn sector in the middle).
    Checksum,
    /// Zeros, as a file system may leave after a power loss (they would read as empty records
    /// if the checksum of nothing were 0).
    Zeros(usize),
}

fn record() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..200)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(record(), 1..8).prop_map(Op::Append),
        2 => prop::collection::vec(record(), 2..10).prop_map(Op::Concurrent),
        1 => prop_oneof![
            (1usize..8).prop_map(Torn::Header),
            (1usize..50).prop_map(Torn::Payload),
            Just(Torn::Checksum),
            (8usize..64).prop_map(Torn::Zeros),
        ].prop_map(Op::Torn),
        1 => Just(Op::Restart),
        1 => (0usize..2, 0.0f64..=1.0).prop_map(|(c, f)| Op::Commit(c, f)),
        2 => (0.0f64..=1.0).prop_map(Op::Read),
    ]
}

fn options() -> FileLogOptions {
    FileLogOptions {
        segment_bytes: 600,
        budget_bytes: 1 << 30,
        max_group_bytes: 1 << 20,
    }
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop().unwrap()
}

async fn check_all(log: &FileLog, model: &[Vec<u8>]) {
    let stats = log.stats();
    assert_eq!(stats.end, model.len() as u64, "end offset");
    let mut at = stats.start;
    while at < stats.end {
        let got = log.read(at, 1000, Duration::ZERO).await.unwrap();
        assert!(!got.is_empty());
        for r in &got {
            assert_eq!(r.offset, at);
            assert_eq!(&r.payload[..], &model[at as usize][..], "record {at}");
            at += 1;
        }
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = FileLog::open(dir.path(), options()).unwrap();
    let mut model: Vec<Vec<u8>> = Vec::new();
    let mut committed = [None::<u64>; 2];
    for op in ops {
        match op {
            Op::Append(records) => {
                let range = log
                    .append(records.iter().cloned().map(Bytes::from).collect())
                    .await
                    .unwrap();
                assert_eq!(
                    range,
                    model.len() as u64..(model.len() + records.len()) as u64
                );
                model.extend(records);
            }
            Op::Concurrent(records) => {
                let shared: Arc<FileLog> = Arc::new(log.clone());
                let tasks: Vec<_> = records
                    .iter()
                    .cloned()
                    .map(|r| {
                        let l = shared.clone();
                        tokio::spawn(async move { l.append(vec![Bytes::from(r)]).await.unwrap() })
                    })
                    .collect();
                let mut placed = vec![None; records.len()];
                for (i, t) in tasks.into_iter().enumerate() {
                    let range = t.await.unwrap();
                    assert_eq!(range.end - range.start, 1);
                    placed[i] = Some(range.start);
                }
                // Every record got a distinct offset right after the model's end.
                let mut by_offset: Vec<(u64, Vec<u8>)> = placed
                    .into_iter()
                    .zip(records)
                    .map(|(o, r)| (o.unwrap(), r))
                    .collect();
                by_offset.sort_by_key(|(o, _)| *o);
                for (o, r) in by_offset {
                    assert_eq!(o, model.len() as u64);
                    model.push(r);
                }
            }
            Op::Torn(torn) => {
                log.close();
                let path = last_segment(dir.path());
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                match torn {
                    Torn::Header(n) => f.write_all(&[0xAB; 8][..n.min(7)]).unwrap(),
                    Torn::Payload(n) => {
                        f.write_all(&100u32.to_le_bytes()).unwrap();
                        f.write_all(&0u32.to_le_bytes()).unwrap();
                        f.write_all(&vec![7u8; n.min(99)]).unwrap();
                    }
                    Torn::Zeros(n) => f.write_all(&vec![0u8; n]).unwrap(),
                    Torn::Checksum => {
                        f.write_all(&3u32.to_le_bytes()).unwrap();
                        f.write_all(&12345u32.to_le_bytes()).unwrap();
                        f.write_all(b"abc").unwrap();
                    }
                }
                drop(f);
                log = FileLog::open(dir.path(), options()).unwrap();
            }
            Op::Restart => {
                log.close();
                log = FileLog::open(dir.path(), options()).unwrap();
            }
            Op::Commit(consumer, fraction) => {
                let end = model.len() as u64;
                let at = ((end as f64) * fraction) as u64;
                // A consumer only moves forward.
                let at = at.max(committed[consumer].unwrap_or(0));
                let start = log.stats().start;
                match log.commit(&format!("c{consumer}"), at).await {
                    Ok(()) => committed[consumer] = Some(at),
                    // Registering late, below what the other consumer let go.
                    Err(LogError::OutOfRange { .. }) => assert!(at < start, "{at} >= {start}"),
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Read(fraction) => {
                let stats = log.stats();
                let from = stats.start + ((stats.end - stats.start) as f64 * fraction) as u64;
                let got = log.read(from, 5, Duration::ZERO).await.unwrap();
                assert_eq!(got.len() as u64, (stats.end - from).min(5));
                for r in got {
                    assert_eq!(&r.payload[..], &model[r.offset as usize][..]);
                }
                if stats.start > 0 {
                    let err = log
                        .read(stats.start - 1, 1, Duration::ZERO)
                        .await
                        .unwrap_err();
                    assert!(matches!(err, LogError::OutOfRange { .. }), "{err}");
                }
            }
        }
        // Segments go only once every consumer has passed them.
        let low = committed.iter().flatten().min().copied().unwrap_or(0);
        assert!(
            log.stats().start <= low,
            "deleted a segment a consumer needs: {:?} committed {committed:?}",
            log.stats()
        );
    }
    check_all(&log, &model).await;
    log.close();
    let reopened = FileLog::open(dir.path(), options()).unwrap();
    check_all(&reopened, &model).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model_across_crashes(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}

#[tokio::test]
async fn concurrent_appends_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(FileLog::open(dir.path(), FileLogOptions::default()).unwrap());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let l = log.clone();
            tokio::spawn(async move {
                l.append(vec![Bytes::from(format!("event {i}"))])
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(log.stats().end, 200);
}

#[tokio::test]
async fn a_full_log_refuses_appends_until_consumers_pass() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(
        dir.path(),
        FileLogOptions {
            segment_bytes: 1000,
            budget_bytes: 4000,
            max_group_bytes: 1 << 20,
        },
    )
    .unwrap();
    log.commit("lake", 0).await.unwrap();
    let mut appended = 0u64;
    let err = loop {
        match log.append(vec![Bytes::from(vec![1u8; 500])]).await {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, LogError::Full { .. }), "{err}");
    assert!(err.to_string().contains("consumers are behind"), "{err}");
    log.commit("lake", appended).await.unwrap();
    log.append(vec![Bytes::from(vec![1u8; 500])]).await.unwrap();
}
