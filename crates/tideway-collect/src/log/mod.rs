//! The durable event log between the HTTP API and its consumers.
//!
//! The API appends each accepted request's events and answers only once they are on disk; each
//! consumer (the lake loader now, live destinations later) reads from its own offset and
//! commits it when what it read is safely elsewhere. Offsets are record numbers: the first
//! record ever appended is offset 0 and they only grow, across restarts and deleted segments.
//!
//! [`EventLog`] is the seam for a multi-node deployment: [`FileLog`] is the embedded default
//! (segment files on local disk, group commit), and a Kafka-backed log implements the same
//! trait with consumer groups.

mod file;

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use tideway_core::{Fault, Faulty};

pub use file::{FileLog, FileLogOptions};

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its offset.
    pub offset: u64,
    /// The bytes appended.
    pub payload: Bytes,
}

/// Sizes and positions, for metrics and back-pressure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// The oldest offset still held.
    pub start: u64,
    /// Offset the next appended record gets; every record below it is durable.
    pub end: u64,
    /// Bytes in segment files.
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// The committed offset of each consumer.
    pub consumers: Vec<(String, u64)>,
}

/// Why the log refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The byte budget is reached: consumers are behind. Retry later.
    #[error(
        "the event log is full ({used} of {budget} bytes): its consumers are behind; retry later"
    )]
    Full {
        /// Bytes held.
        used: u64,
        /// The configured budget.
        budget: u64,
    },
    /// A disk operation failed.
    #[error("event log {what} failed at {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A record in a sealed segment does not match its checksum.
    #[error(
        "event log segment {path} is corrupt at byte {position}: {reason}; the records after it cannot be read"
    )]
    Corrupt {
        /// The segment file.
        path: String,
        /// Byte position of the bad record.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// A consumer asked for an offset the log no longer (or not yet) has.
    #[error("offset {offset} is outside the event log, which holds {available:?}")]
    OutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The offsets held.
        available: Range<u64>,
    },
    /// The log is shutting down.
    #[error("the event log is closed")]
    Closed,
}

impl Faulty for LogError {
    fn fault(&self) -> Fault {
        match self {
            LogError::Full { .. } | LogError::Io { .. } => Fault::External,
            LogError::Corrupt { .. } | LogError::OutOfRange { .. } | LogError::Closed => {
                Fault::Internal
            }
        }
    }
}

/// An append-only, durable log of records with per-consumer offsets.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync + std::fmt::Debug {
    /// Appends `records` and returns their offsets once they are durable. Either all of them
    /// are appended or the call fails; concurrent callers share one disk sync.
    async fn append(&self, records: Vec<Bytes>) -> Result<Range<u64>, LogError>;

    /// Reads durable records from `from`: at most `max_records`, waiting up to `wait` for the
    /// first one to arrive. An empty result means nothing arrived in time.
    async fn read(
        &self,
        from: u64,
        max_records: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError>;

    /// Records that `consumer` has safely handled everything below `offset`. Segments every
    /// consumer has passed are deleted. A consumer's first commit registers it; an offset
    /// below the oldest record still held is [`LogError::OutOfRange`].
    async fn commit(&self, consumer: &str, offset: u64) -> Result<(), LogError>;

    /// Unregisters `consumer` (a removed live connection), so it no longer holds segments;
    /// the segments every remaining consumer passed go at the next commit.
    async fn forget(&self, consumer: &str) -> Result<(), LogError>;

    /// The last committed offset of `consumer`, if it ever committed.
    fn committed(&self, consumer: &str) -> Option<u64>;

    /// Current sizes and positions.
    fn stats(&self) -> LogStats;

    /// The log's identity, fixed when it was created: offsets mean something only within one
    /// log, so whatever records an offset elsewhere records this id with it.
    fn id(&self) -> &str;
}
