//! Dropping repeated events: the same `messageId` from the same source within the window.
//!
//! SDKs retry a batch whose answer they did not see, so the same event can arrive twice. The
//! index remembers a 64-bit hash of (source, messageId) per event, in hourly buckets: a
//! lookup checks every bucket, and a bucket is dropped whole once it is older than the window
//! (so a duplicate is always caught within the window, and sometimes up to an hour after).
//! Memory is bounded by a capacity in ids: past it the oldest bucket goes early, with a
//! warning, because the window then is shorter than configured.
//!
//! # Surviving a restart
//! [`Dedupe::snapshot`] writes the buckets to `<log dir>/dedupe.snapshot` with the log offset
//! they cover, and the caller commits that offset as the `dedupe` consumer of the log, which
//! keeps every later record on disk. On start the snapshot is loaded and the log replayed
//! from that offset: an acknowledged event is in the index after a crash.
//!
//! ```text
//! dedupe.snapshot: "TWDD1\n" | offset: u64 | buckets: u32 | per bucket: hour: i64, n: u64, n × u64
//! ```
//! (little endian)

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use tracing::warn;

const MAGIC: &[u8] = b"TWDD1\n";

/// The index of recently seen message ids.
#[derive(Debug)]
pub struct Dedupe {
    window_hours: i64,
    capacity: usize,
    len: usize,
    buckets: VecDeque<(i64, HashSet<u64, BuildKey>)>,
    /// Keys whose events are not yet durable: a snapshot leaves them out (a crash before the
    /// sync must not leave an id behind whose event was never stored).
    in_flight: HashSet<u64, BuildKey>,
}

/// A copy of the index to write without holding its lock.
#[derive(Debug)]
pub struct Frozen {
    buckets: Vec<(i64, Vec<u64>)>,
}

/// The keys are hashes already; hashing them again would waste time.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuildKey;

impl std::hash::BuildHasher for BuildKey {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// Passes a u64 through.
#[derive(Debug, Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The key of one event.
pub fn key(source: &str, message_id: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(source.as_bytes());
    h.update(&[0]);
    h.update(message_id.as_bytes());
    h.digest()
}

impl Dedupe {
    /// An empty index.
    pub fn new(window_secs: u64, capacity: usize) -> Self {
        Dedupe {
            window_hours: (window_secs.div_ceil(3600)).max(1) as i64,
            capacity: capacity.max(1),
            len: 0,
            buckets: VecDeque::new(),
            in_flight: HashSet::with_hasher(BuildKey),
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Remembers `key` seen at `unix_secs`; false if it was already there (a duplicate).
    pub fn insert(&mut self, key: u64, unix_secs: i64) -> bool {
        let hour = unix_secs.div_euclid(3600);
        self.expire(hour);
        if self.buckets.iter().any(|(_, set)| set.contains(&key)) {
            return false;
        }
        match self.buckets.back_mut() {
            Some((h, set)) if *h >= hour => {
                set.insert(key);
            }
            _ => {
                let mut set = HashSet::with_hasher(BuildKey);
                set.insert(key);
                self.buckets.push_back((hour, set));
            }
        }
        self.len += 1;
        self.in_flight.insert(key);
        while self.len > self.capacity && self.buckets.len() > 1 {
            let (h, set) = self.buckets.pop_front().expect("more than one bucket");
            self.len -= set.len();
            warn!(
                hour = h,
                dropped = set.len(),
                capacity = self.capacity,
                "dedupe: capacity reached, forgetting an hour of message ids early; raise collect.dedupe_capacity"
            );
        }
        true
    }

    /// Marks `key`'s event as durable.
    pub fn settle(&mut self, key: u64) {
        self.in_flight.remove(&key);
    }

    /// Forgets `key` (its event was not stored after all, so a retry must be accepted).
    pub fn remove(&mut self, key: u64) {
        self.in_flight.remove(&key);
        for (_, set) in self.buckets.iter_mut().rev() {
            if set.remove(&key) {
                self.len -= 1;
                return;
            }
        }
    }

    fn expire(&mut self, now_hour: i64) {
        // A bucket holds ids from anywhere in its hour: it goes only when all of them are
        // older than the window.
        while let Some((h, set)) = self.buckets.front() {
            if now_hour - *h <= self.window_hours {
                break;
            }
            self.len -= set.len();
            self.buckets.pop_front();
        }
    }

    /// A copy of the durable part of the index (cheap next to writing it).
    pub fn freeze(&self) -> Frozen {
        Frozen {
            buckets: self
                .buckets
                .iter()
                .map(|(h, set)| {
                    let keys = set
                        .iter()
                        .copied()
                        .filter(|k| !self.in_flight.contains(k))
                        .collect();
                    (*h, keys)
                })
                .collect(),
        }
    }

    /// Writes the index, covering the log up to `offset`, atomically to `path`.
    pub fn snapshot(&self, path: &Path, offset: u64) -> io::Result<()> {
        self.freeze().write(path, offset)
    }

    /// Loads a snapshot; returns the index and the log offset to replay from. A missing file
    /// gives an empty index from offset 0; a damaged one is an error.
    pub fn load(path: &Path, window_secs: u64, capacity: usize) -> io::Result<(Dedupe, u64)> {
        let mut d = Dedupe::new(window_secs, capacity);
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((d, 0)),
            Err(e) => return Err(e),
        };
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is damaged; delete it to start with an empty dedupe index",
                    path.display()
                ),
            )
        };
        let mut rest = bytes.strip_prefix(MAGIC).ok_or_else(bad)?;
        let mut take = |n: usize| -> io::Result<&[u8]> {
            if rest.len() < n {
                return Err(bad());
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let offset = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let buckets = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        for _ in 0..buckets {
            let hour = i64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
            let n = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")) as usize;
            let keys = take(n.checked_mul(8).ok_or_else(bad)?)?;
            let mut set = HashSet::with_capacity_and_hasher(n, BuildKey);
            set.extend(
                keys.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
            );
            d.len += set.len();
            d.buckets.push_back((hour, set));
        }
        Ok((d, offset))
    }
}

impl Frozen {
    /// Writes the copy, covering the log up to `offset`, atomically to `path`.
    pub fn write(&self, path: &Path, offset: u64) -> io::Result<()> {
        let tmp = path.with_extension("snapshot.tmp");
        let keys: usize = self.buckets.iter().map(|(_, k)| k.len()).sum();
        let mut buf = Vec::with_capacity(MAGIC.len() + 12 + keys * 8 + self.buckets.len() * 16);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&offset.to_le_bytes());
        buf.extend_from_slice(&(self.buckets.len() as u32).to_le_bytes());
        for (hour, keys) in &self.buckets {
            buf.extend_from_slice(&hour.to_le_bytes());
            buf.extend_from_slice(&(keys.len() as u64).to_le_bytes());
            for k in keys {
                buf.extend_from_slice(&k.to_le_bytes());
            }
        }
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&buf)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_within_the_window_are_caught() {
        let mut d = Dedupe::new(24 * 3600, 1000);
        let t0 = 1_800_000_000;
        assert!(d.insert(key("web", "m1"), t0));
        assert!(!d.insert(key("web", "m1"), t0 + 23 * 3600));
        assert!(
            d.insert(key("app", "m1"), t0),
            "another source's id is another event"
        );
        // An id from the last second of an hour is still caught 24 h later...
        let late = t0 - t0.rem_euclid(3600) + 3599;
        assert!(d.insert(key("web", "m2"), late));
        assert!(!d.insert(key("web", "m2"), late + 24 * 3600));
        // ...and well past the window it is forgotten.
        assert!(d.insert(key("web", "m1"), t0 + 26 * 3600));
    }

    #[test]
    fn capacity_bounds_memory() {
        let mut d = Dedupe::new(24 * 3600, 100);
        for i in 0..1000u64 {
            d.insert(i, 1_800_000_000 + (i as i64) * 60);
        }
        assert!(d.len() <= 100 + 60, "{}", d.len());
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dedupe.snapshot");
        let mut d = Dedupe::new(3600 * 24, 1000);
        for i in 0..50u64 {
            d.insert(i, 1_800_000_000 + (i as i64) * 600);
            d.settle(i);
        }
        d.insert(1000, 1_800_000_000);
        // An id whose event is not yet durable stays out of the snapshot.
        d.snapshot(&path, 77).unwrap();
        let (mut back, offset) = Dedupe::load(&path, 3600 * 24, 1000).unwrap();
        assert_eq!((offset, back.len()), (77, 50));
        assert!(!back.insert(3, 1_800_000_000 + 50 * 600));
        fs::write(&path, b"TWDD1\n\x01").unwrap();
        let err = Dedupe::load(&path, 3600, 10).unwrap_err();
        assert!(err.to_string().contains("is damaged"), "{err}");
    }
}
