//! What a sync's state holds, in memory for one diff: per key its digest, the accepted hash and
//! the status, 35 bytes a key in one vector, found through an open-addressing table of `u32`
//! slots (4 to 8 bytes a key). Ten million keys take about 0.5 GB with their text, against
//! 1.5 GB or more in a general-purpose map of the same entries. Refusals and dead-lettered
//! hashes, rare, are kept apart.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type};
use deltalake::datafusion::catalog::TableProvider;
use deltalake::datafusion::common::ScalarValue;
use deltalake::datafusion::execution::SendableRecordBatchStream;
use deltalake::datafusion::prelude::{cast as cast_to, col as column, lit};
use futures::StreamExt;
use tideway_lake::Lake;

use super::{Bytes, Text, digest, sixteen};
use crate::state::REFUSED_SINCE;
use crate::{ActivateError, Result};

/// One key the state holds.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    pub digest: [u8; 16],
    /// The hash of the version the destination accepted; meaningless unless `has_hash`.
    pub hash: [u8; 16],
    pub has_hash: bool,
    /// Index into [`Held::statuses`].
    pub status: u8,
    /// A source row holds the key (set by the second pass).
    pub seen: bool,
}

impl Entry {
    pub fn hash(&self) -> Option<&[u8; 16]> {
        self.has_hash.then_some(&self.hash)
    }
}

/// The state of one sync, indexed by key digest.
#[derive(Default)]
pub(super) struct Held {
    entries: Vec<Entry>,
    /// Open addressing, linear probing: 0 is empty, else an index into `entries` plus one.
    slots: Vec<u32>,
    /// The keys' text, in `entries` order: arrays and the index of each one's first key.
    keys: Vec<ArrayRef>,
    starts: Vec<usize>,
    statuses: Vec<String>,
    refusals: HashMap<u32, Refusals>,
    dead: HashMap<u128, [u8; 16]>,
}

/// How a key's current streak of refusals stands (none: the default).
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub(super) struct Refusals {
    /// Refusals since the destination last accepted the key.
    pub attempts: i64,
    /// When the first of them happened (micros since the epoch).
    pub since: Option<i64>,
}

/// What one partition of the state scan gives.
#[derive(Default)]
struct Part {
    entries: Vec<Entry>,
    keys: Vec<ArrayRef>,
    statuses: Vec<String>,
    refusals: Vec<(u32, Refusals)>,
    dead: Vec<(u128, [u8; 16])>,
}

impl Held {
    /// Reads the keys, hashes and statuses (not the stored values) `state` holds for `sync`,
    /// one task per partition of the scan.
    pub async fn read(lake: &Lake, state: Arc<dyn TableProvider>, sync: &str) -> Result<Held> {
        // `refused_since` came later: a state written before it has none.
        let since = match state.schema().column_with_name(REFUSED_SINCE) {
            Some(_) => cast_to(column(REFUSED_SINCE), DataType::Int64),
            None => lit(ScalarValue::Int64(None)),
        };
        let df = lake
            .session()
            .read_table(state)?
            .filter(column("sync").eq(lit(sync)))?
            .select(vec![
                column("key"),
                column("hash"),
                column("dead_hash"),
                column("status"),
                column("attempts"),
                since.alias(REFUSED_SINCE),
            ])?;
        let tasks: Vec<_> = df
            .execute_stream_partitioned()
            .await?
            .into_iter()
            .map(|stream| tokio::spawn(read_part(stream)))
            .collect();
        let mut held = Held::default();
        for task in tasks {
            let part = task
                .await
                .map_err(|e| ActivateError::Internal(format!("reading the sync state: {e}")))??;
            held.absorb(part);
        }
        held.index();
        Ok(held)
    }

    fn absorb(&mut self, part: Part) {
        let offset = self.entries.len() as u32;
        let statuses: Vec<u8> = part
            .statuses
            .into_iter()
            .map(|s| match self.statuses.iter().position(|t| *t == s) {
                Some(n) => n as u8,
                None => {
                    self.statuses.push(s);
                    (self.statuses.len() - 1) as u8
                }
            })
            .collect();
        self.entries.extend(part.entries.into_iter().map(|mut e| {
            e.status = statuses[e.status as usize];
            e
        }));
        for keys in part.keys {
            self.starts.push(
                self.starts.last().copied().unwrap_or(0) + self.keys.last().map_or(0, |k| k.len()),
            );
            self.keys.push(keys);
        }
        self.refusals
            .extend(part.refusals.into_iter().map(|(i, r)| (offset + i, r)));
        self.dead.extend(part.dead);
    }

    fn index(&mut self) {
        let size = (self.entries.len() * 3 / 2 + 1).next_power_of_two().max(16);
        let mask = size - 1;
        let mut slots = vec![0u32; size];
        for (i, e) in self.entries.iter().enumerate() {
            let mut p = low(&e.digest) & mask;
            loop {
                match slots[p] {
                    0 => {
                        slots[p] = i as u32 + 1;
                        break;
                    }
                    // The state has one row per key: a repeat cannot happen, and is ignored.
                    s if self.entries[s as usize - 1].digest == e.digest => break,
                    _ => p = (p + 1) & mask,
                }
            }
        }
        self.slots = slots;
    }

    /// Where the search for `digest` starts, and the slot's content: a load that does not
    /// depend on any other. The differ takes these for a group of rows first, so that the
    /// cache misses of the group overlap instead of following one another.
    pub fn probe(&self, digest: u128) -> Option<(usize, u32)> {
        let mask = self.slots.len().checked_sub(1)?;
        let p = low(&digest.to_le_bytes()) & mask;
        Some((p, self.slots[p]))
    }

    /// The entry of the key with `digest`, searched from its [`Held::probe`].
    pub fn find_from(&self, digest: u128, (mut p, mut slot): (usize, u32)) -> Option<usize> {
        let d = digest.to_le_bytes();
        let mask = self.slots.len() - 1;
        loop {
            match slot {
                0 => return None,
                s if self.entries[s as usize - 1].digest == d => return Some(s as usize - 1),
                _ => {
                    p = (p + 1) & mask;
                    slot = self.slots[p];
                }
            }
        }
    }

    /// The code [`Entry::status`] has for `status`, if any entry has it.
    pub fn status_code(&self, status: &str) -> Option<u8> {
        self.statuses
            .iter()
            .position(|s| s == status)
            .map(|n| n as u8)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn entry(&self, i: usize) -> &Entry {
        &self.entries[i]
    }

    pub fn entry_mut(&mut self, i: usize) -> &mut Entry {
        &mut self.entries[i]
    }

    pub fn status(&self, i: usize) -> &str {
        &self.statuses[self.entries[i].status as usize]
    }

    pub fn refusals(&self, i: usize) -> Refusals {
        self.refusals.get(&(i as u32)).copied().unwrap_or_default()
    }

    /// The dead-lettered hash of the key with `digest`, if any.
    pub fn dead(&self, digest: u128) -> Option<&[u8; 16]> {
        self.dead.get(&digest)
    }

    /// The text of entry `i`'s key.
    pub fn key(&self, i: usize) -> Result<String> {
        let array = self.starts.partition_point(|&s| s <= i) - 1;
        let text = Text::of(&self.keys[array])?;
        Ok(text
            .get(i - self.starts[array])
            .unwrap_or_default()
            .to_string())
    }

    /// Entries no source row holds, in the state's order.
    pub fn unseen(&self) -> Vec<usize> {
        (0..self.entries.len())
            .filter(|&i| !self.entries[i].seen)
            .collect()
    }
}

fn low(digest: &[u8; 16]) -> usize {
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) as usize
}

async fn read_part(mut stream: SendableRecordBatchStream) -> Result<Part> {
    let mut part = Part::default();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let keys = batch.column(0).clone();
        let text = Text::of(&keys)?;
        let hashes = Bytes::of(batch.column(1))?;
        let dead = Bytes::of(batch.column(2))?;
        let statuses = Text::of(batch.column(3))?;
        let attempts = cast(batch.column(4), &DataType::Int64)?;
        let attempts = attempts.as_primitive::<Int64Type>();
        let since = cast(batch.column(5), &DataType::Int64)?;
        let since = since.as_primitive::<Int64Type>();
        part.entries.reserve(batch.num_rows());
        for i in 0..batch.num_rows() {
            let d = digest(text.get(i).unwrap_or_default());
            let status = statuses.get(i).unwrap_or("");
            let status = match part.statuses.iter().position(|s| s == status) {
                Some(n) => n,
                None => {
                    part.statuses.push(status.to_string());
                    part.statuses.len() - 1
                }
            } as u8;
            if let Some(dead) = dead.get(i) {
                part.dead.push((d, sixteen(dead)?));
            }
            let refusals = Refusals {
                attempts: if attempts.is_valid(i) {
                    attempts.value(i)
                } else {
                    0
                },
                since: since.is_valid(i).then(|| since.value(i)),
            };
            if refusals != Refusals::default() {
                part.refusals.push((part.entries.len() as u32, refusals));
            }
            let (hash, has_hash) = match hashes.get(i) {
                Some(hash) => (sixteen(hash)?, true),
                None => ([0; 16], false),
            };
            part.entries.push(Entry {
                digest: d.to_le_bytes(),
                hash,
                has_hash,
                status,
                seen: false,
            });
        }
        drop(text);
        part.keys.push(keys);
    }
    Ok(part)
}
