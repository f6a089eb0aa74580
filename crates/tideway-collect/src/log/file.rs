//! [`FileLog`]: the embedded event log, segment files on local disk.
//!
//! # On-disk format
//! ```text
//! <dir>/00000000000000000000.log     segments, named by the offset of their first record
//! <dir>/00000000000001048576.log     (20 digits, so they sort by name)
//! <dir>/consumers/<name>.offset      each consumer's committed offset, decimal text
//! <dir>/log.id                       the log's identity (a UUID), written once at creation
//! ```
//! A segment is a sequence of records, each
//! `len: u32 LE | crc32(payload) ^ 0x54574C31: u32 LE | payload`.
//! Records are only ever appended; a segment is sealed when it passes the segment size and a
//! new one starts. The last segment always exists (it may be empty), so its name plus its
//! record count is the next offset, even when every older segment has been deleted.
//!
//! # Durability
//! One writer thread owns the active segment. Appends queue to it; it takes everything queued
//! (up to a group size), writes it with one `write`, calls `fdatasync` once, and only then
//! answers every caller in the group: an acknowledged record is on disk, and concurrent
//! requests share one sync (group commit). A failed write or sync is answered with an error
//! and the segment is cut back to its last durable length.
//!
//! # Recovery
//! On open, the last segment is scanned record by record; the first record that is short or
//! fails its checksum marks a torn tail (a crash during an unacknowledged append), and the file
//! is cut there; the cut bytes are kept in `<segment>.torn-<position>` for inspection. Sealed segments were synced whole before the next one began and are not
//! rescanned.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::{EventLog, LogError, LogStats, Record};
use crate::metrics as m;

const HEADER: usize = 8;
/// Mixed into each checksum, so that a zero-filled tail (what some file systems leave after a
/// power loss) does not read as valid empty records: `crc32("")` is 0.
const CRC_SALT: u32 = 0x5457_4C31;

fn checksum(payload: &[u8]) -> u32 {
    crc32fast::hash(payload) ^ CRC_SALT
}
/// Larger lengths in a header can only be garbage from a torn write.
const MAX_RECORD: u32 = 256 << 20;

/// Tuning of a [`FileLog`].
#[derive(Debug, Clone)]
pub struct FileLogOptions {
    /// A segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Appends are refused with [`LogError::Full`] past this many bytes on disk.
    pub budget_bytes: u64,
    /// At most this many bytes are written per sync.
    pub max_group_bytes: usize,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        FileLogOptions {
            segment_bytes: 64 << 20,
            budget_bytes: 1 << 30,
            max_group_bytes: 16 << 20,
        }
    }
}

/// The embedded, file-backed [`EventLog`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FileLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    id: String,
    dir: PathBuf,
    options: FileLogOptions,
    /// Bytes on disk plus bytes queued for writing.
    bytes: AtomicU64,
    /// Every offset below this is durable.
    end: watch::Sender<u64>,
    state: Mutex<State>,
    tx: Mutex<Option<mpsc::UnboundedSender<Append>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct State {
    /// First offset of each segment, and its size in bytes.
    segments: BTreeMap<u64, u64>,
    consumers: BTreeMap<String, u64>,
    /// Open positions of recent reads, so a sequential reader does not rescan its segment.
    cursors: Vec<Cursor>,
}

#[derive(Debug)]
struct Cursor {
    offset: u64,
    base: u64,
    position: u64,
}

#[derive(Debug)]
struct Append {
    records: Vec<Bytes>,
    bytes: u64,
    reply: oneshot::Sender<Result<Range<u64>, LogError>>,
}

impl FileLog {
    /// Opens (creating if needed) the log in `dir`, cutting a torn tail left by a crash.
    pub fn open(dir: impl AsRef<Path>, options: FileLogOptions) -> Result<FileLog, LogError> {
        let dir = dir.as_ref().to_path_buf();
        let consumers_dir = dir.join("consumers");
        fs::create_dir_all(&consumers_dir).map_err(io_err("create", &consumers_dir))?;
        let id_path = dir.join("log.id");
        let id = match fs::read_to_string(&id_path) {
            Ok(id) => id.trim().to_string(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = uuid::Uuid::new_v4().to_string();
                write_durably(&id_path, format!("{id}\n").as_bytes())?;
                id
            }
            Err(e) => return Err(io_err("read", &id_path)(e)),
        };
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name();
            let Some(base) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let len = entry
                .metadata()
                .map_err(io_err("stat", &entry.path()))?
                .len();
            segments.insert(base, len);
        }
        let mut consumers = BTreeMap::new();
        for entry in fs::read_dir(&consumers_dir).map_err(io_err("list", &consumers_dir))? {
            let entry = entry.map_err(io_err("list", &consumers_dir))?;
            let path = entry.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".offset"))
            else {
                continue;
            };
            let text = fs::read_to_string(&path).map_err(io_err("read", &path))?;
            let offset = text.trim().parse::<u64>().map_err(|_| LogError::Corrupt {
                path: path.display().to_string(),
                position: 0,
                reason: format!("`{}` is not an offset", text.trim()),
            })?;
            consumers.insert(name.to_string(), offset);
        }

        let (base, end, len) = match segments.last_key_value() {
            Some((&base, _)) => {
                let path = segment_path(&dir, base);
                let (count, good) = scan_tail(&path)?;
                segments.insert(base, good);
                (base, base + count, good)
            }
            None => {
                create_segment(&dir, 0)?;
                segments.insert(0, 0);
                (0, 0, 0)
            }
        };
        let file = OpenOptions::new()
            .append(true)
            .open(segment_path(&dir, base))
            .map_err(io_err("open", &segment_path(&dir, base)))?;
        let bytes: u64 = segments.values().sum();
        info!(dir = %dir.display(), segments = segments.len(), end, bytes, "event log opened");

        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            id,
            dir,
            options,
            bytes: AtomicU64::new(bytes),
            end: watch::Sender::new(end),
            state: Mutex::new(State {
                segments,
                consumers,
                cursors: Vec::new(),
            }),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(None),
        });
        let active = Active {
            file,
            base,
            len,
            next: end,
        };
        let writer_shared = Arc::downgrade(&shared);
        let handle = std::thread::Builder::new()
            .name("tideway-log-writer".into())
            .spawn(move || writer_loop(writer_shared, rx, active))
            .map_err(io_err("start writer thread", Path::new("")))?;
        *shared.writer.lock().expect("log writer lock") = Some(handle);
        Ok(FileLog { shared })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Stops the writer after the appends already queued, and waits for it.
    pub fn close(&self) {
        self.shared.close();
    }
}

impl Shared {
    fn close(&self) {
        self.tx.lock().expect("log sender lock").take();
        if let Some(handle) = self.writer.lock().expect("log writer lock").take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.close();
    }
}

/// Writes `bytes` to `path` through a temporary file, a rename and a sync of the directory,
/// so that after a crash the file has either its old content or the new one.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io_err("write", &tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename", path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError {
    let path = path.display().to_string();
    move |source| LogError::Io { what, path, source }
}

fn create_segment(dir: &Path, base: u64) -> Result<File, LogError> {
    let path = segment_path(dir, base);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err("create segment", &path))?;
    // The new name must survive a crash too.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))?;
    Ok(file)
}

/// Counts the whole records of the segment at `path` and cuts anything after them. Returns
/// (records, bytes kept).
fn scan_tail(path: &Path) -> Result<(u64, u64), LogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    let total = file.metadata().map_err(io_err("stat", path))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let mut position = 0u64;
    let mut count = 0u64;
    let mut payload = Vec::new();
    loop {
        match read_record(&mut reader, &mut payload) {
            Ok(Some(len)) => {
                position += (HEADER + len) as u64;
                count += 1;
            }
            Ok(None) => break,
            Err(reason) => {
                warn!(
                    segment = %path.display(),
                    position,
                    cut = total - position,
                    reason,
                    "event log: cutting a torn tail left by a crash (those records were never acknowledged)"
                );
                break;
            }
        }
    }
    if position < total {
        // Kept aside rather than lost, in case the damage is not a torn write but rot.
        let aside = path.with_extension(format!("torn-{position}"));
        let mut tail = Vec::new();
        let mut f = &file;
        f.seek(SeekFrom::Start(position))
            .and_then(|_| f.read_to_end(&mut tail))
            .map_err(io_err("read", path))?;
        fs::write(&aside, &tail).map_err(io_err("write", &aside))?;
        file.set_len(position).map_err(io_err("truncate", path))?;
        file.sync_all().map_err(io_err("sync", path))?;
    }
    Ok((count, position))
}

/// Reads one record into `payload`. `Ok(None)` at a clean end of file; `Err` for a torn or
/// corrupt record.
fn read_record(reader: &mut impl Read, payload: &mut Vec<u8>) -> Result<Option<usize>, String> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match reader.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(format!("a record header is cut after {got} bytes")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len > MAX_RECORD {
        return Err(format!("a record claims {len} bytes"));
    }
    payload.resize(len as usize, 0);
    reader
        .read_exact(payload)
        .map_err(|_| format!("a record of {len} bytes is cut short"))?;
    if checksum(payload) != crc {
        return Err("a record fails its checksum".into());
    }
    Ok(Some(len as usize))
}

struct Active {
    file: File,
    base: u64,
    len: u64,
    next: u64,
}

fn writer_loop(
    shared: std::sync::Weak<Shared>,
    mut rx: mpsc::UnboundedReceiver<Append>,
    mut active: Active,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    while let Some(first) = rx.blocking_recv() {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let max_group = shared.options.max_group_bytes as u64;
        let mut group_bytes = first.bytes;
        let mut group = vec![first];
        while group_bytes < max_group {
            match rx.try_recv() {
                Ok(next) => {
                    group_bytes += next.bytes;
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        if active.len >= shared.options.segment_bytes {
            match create_segment(&shared.dir, active.next) {
                Ok(file) => {
                    debug!(base = active.next, "event log: new segment");
                    active = Active {
                        file,
                        base: active.next,
                        len: 0,
                        next: active.next,
                    };
                    shared
                        .state
                        .lock()
                        .expect("log state lock")
                        .segments
                        .insert(active.base, 0);
                }
                Err(e) => {
                    fail_group(&shared, group, group_bytes, &e);
                    continue;
                }
            }
        }
        buf.clear();
        for append in &group {
            for record in &append.records {
                buf.extend_from_slice(&(record.len() as u32).to_le_bytes());
                buf.extend_from_slice(&checksum(record).to_le_bytes());
                buf.extend_from_slice(record);
            }
        }
        let started = Instant::now();
        let written = active
            .file
            .write_all(&buf)
            .and_then(|()| active.file.sync_data());
        metrics::histogram!(m::LOG_FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
        if let Err(source) = written {
            // Cut back to what was durable, so the next append does not follow garbage.
            let _ = active.file.set_len(active.len);
            let path = segment_path(&shared.dir, active.base);
            let e = LogError::Io {
                what: "write",
                path: path.display().to_string(),
                source,
            };
            fail_group(&shared, group, group_bytes, &e);
            continue;
        }
        active.len += buf.len() as u64;
        // Queued bytes were counted as record bytes; the headers are on disk too.
        let headers: u64 = group
            .iter()
            .map(|a| (a.records.len() * HEADER) as u64)
            .sum();
        shared.bytes.fetch_add(headers, Ordering::Relaxed);
        shared
            .state
            .lock()
            .expect("log state lock")
            .segments
            .insert(active.base, active.len);
        let mut replies = Vec::with_capacity(group.len());
        for append in group {
            let start = active.next;
            active.next += append.records.len() as u64;
            replies.push((append.reply, start..active.next));
        }
        shared.end.send_replace(active.next);
        for (reply, range) in replies {
            let _ = reply.send(Ok(range));
        }
    }
}

fn fail_group(shared: &Shared, group: Vec<Append>, bytes: u64, error: &LogError) {
    shared.bytes.fetch_sub(bytes, Ordering::Relaxed);
    warn!(error = %error, appends = group.len(), "event log: append failed");
    for append in group {
        let copy = match error {
            LogError::Io { what, path, source } => LogError::Io {
                what,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            _ => LogError::Closed,
        };
        let _ = append.reply.send(Err(copy));
    }
}

impl Shared {
    /// Reads records `from..` (at most `max`, below `end`) on the calling (blocking) thread.
    fn read_blocking(&self, from: u64, max: usize, end: u64) -> Result<Vec<Record>, LogError> {
        let (segments, cursor) = {
            let mut state = self.state.lock().expect("log state lock");
            let segments: Vec<(u64, u64)> = state.segments.iter().map(|(b, l)| (*b, *l)).collect();
            let cursor = state
                .cursors
                .iter()
                .position(|c| c.offset == from)
                .map(|i| state.cursors.swap_remove(i));
            (segments, cursor)
        };
        let first = segments.first().map_or(0, |s| s.0);
        if from < first || from > end {
            return Err(LogError::OutOfRange {
                offset: from,
                available: first..end,
            });
        }
        let (mut base, mut position, mut offset) = match cursor {
            Some(c) if segments.iter().any(|s| s.0 == c.base) => (c.base, c.position, c.offset),
            _ => {
                let base = segments
                    .iter()
                    .rev()
                    .find(|s| s.0 <= from)
                    .map_or(first, |s| s.0);
                (base, 0, base)
            }
        };
        let want_end = end.min(from.saturating_add(max as u64));
        let mut out = Vec::with_capacity((want_end - from) as usize);
        let mut payload = Vec::new();
        while offset < want_end {
            let path = segment_path(&self.dir, base);
            let mut file = File::open(&path).map_err(io_err("open", &path))?;
            file.seek(SeekFrom::Start(position))
                .map_err(io_err("seek", &path))?;
            let mut reader = BufReader::with_capacity(1 << 20, file);
            while offset < want_end {
                match read_record(&mut reader, &mut payload) {
                    Ok(Some(len)) => {
                        position += (HEADER + len) as u64;
                        if offset >= from {
                            out.push(Record {
                                offset,
                                payload: Bytes::copy_from_slice(&payload),
                            });
                        }
                        offset += 1;
                    }
                    Ok(None) => break,
                    Err(reason) => {
                        return Err(LogError::Corrupt {
                            path: path.display().to_string(),
                            position,
                            reason,
                        });
                    }
                }
            }
            if offset < want_end {
                // End of this segment: continue in the next one, which starts at `offset`.
                if !segments.iter().any(|s| s.0 == offset) {
                    return Err(LogError::Corrupt {
                        path: path.display().to_string(),
                        position,
                        reason: format!(
                            "the segment ends at offset {offset} but no segment starts there"
                        ),
                    });
                }
                base = offset;
                position = 0;
            }
        }
        let mut state = self.state.lock().expect("log state lock");
        state.cursors.push(Cursor {
            offset,
            base,
            position,
        });
        if state.cursors.len() > 8 {
            state.cursors.remove(0);
        }
        Ok(out)
    }

    fn commit_blocking(&self, consumer: &str, offset: u64) -> Result<(), LogError> {
        {
            // A consumer that registers late cannot start before what is still held.
            let state = self.state.lock().expect("log state lock");
            let start = state.segments.keys().next().copied().unwrap_or(0);
            if offset < start {
                return Err(LogError::OutOfRange {
                    offset,
                    available: start..*self.end.borrow(),
                });
            }
        }
        let path = self
            .dir
            .join("consumers")
            .join(format!("{consumer}.offset"));
        write_durably(&path, format!("{offset}\n").as_bytes())?;
        let deletable: Vec<(u64, u64)> = {
            let mut state = self.state.lock().expect("log state lock");
            state.consumers.insert(consumer.to_string(), offset);
            let low = state.consumers.values().copied().min().unwrap_or(0);
            let bases: Vec<(u64, u64)> = state.segments.iter().map(|(b, l)| (*b, *l)).collect();
            // A segment can go when the next one starts at or below every consumer's offset;
            // the last segment always stays.
            bases
                .windows(2)
                .filter(|w| w[1].0 <= low)
                .map(|w| w[0])
                .collect()
        };
        for (base, len) in deletable {
            let path = segment_path(&self.dir, base);
            match fs::remove_file(&path) {
                Ok(()) => {
                    let mut state = self.state.lock().expect("log state lock");
                    state.segments.remove(&base);
                    state.cursors.retain(|c| c.base != base);
                    self.bytes.fetch_sub(len, Ordering::Relaxed);
                    debug!(base, "event log: segment deleted, every consumer passed it");
                }
                Err(e) => {
                    warn!(segment = %path.display(), error = %e, "event log: could not delete a consumed segment")
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventLog for FileLog {
    async fn append(&self, records: Vec<Bytes>) -> Result<Range<u64>, LogError> {
        let bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
        let budget = self.shared.options.budget_bytes;
        let used = self.shared.bytes.fetch_add(bytes, Ordering::Relaxed);
        if used + bytes > budget {
            self.shared.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(LogError::Full { used, budget });
        }
        let (reply, answer) = oneshot::channel();
        {
            let tx = self.shared.tx.lock().expect("log sender lock");
            let Some(tx) = tx.as_ref() else {
                self.shared.bytes.fetch_sub(bytes, Ordering::Relaxed);
                return Err(LogError::Closed);
            };
            if tx
                .send(Append {
                    records,
                    bytes,
                    reply,
                })
                .is_err()
            {
                self.shared.bytes.fetch_sub(bytes, Ordering::Relaxed);
                return Err(LogError::Closed);
            }
        }
        answer.await.map_err(|_| LogError::Closed)?
    }

    async fn read(
        &self,
        from: u64,
        max_records: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        let mut end_rx = self.shared.end.subscribe();
        let end = *end_rx.borrow_and_update();
        let end = if end > from || wait.is_zero() {
            end
        } else {
            match tokio::time::timeout(wait, end_rx.wait_for(|e| *e > from)).await {
                Ok(Ok(end)) => *end,
                Ok(Err(_)) => return Err(LogError::Closed),
                Err(_) => return Ok(Vec::new()),
            }
        };
        if end == from {
            return Ok(Vec::new());
        }
        for attempt in 0..2 {
            let shared = self.shared.clone();
            let read =
                tokio::task::spawn_blocking(move || shared.read_blocking(from, max_records, end))
                    .await
                    .map_err(|_| LogError::Closed)?;
            match read {
                // A consumer's commit deleted the segment a cached position pointed into
                // between the lookup and the open: look again without the cache.
                Err(LogError::Io { source, .. })
                    if attempt == 0 && source.kind() == io::ErrorKind::NotFound =>
                {
                    self.shared
                        .state
                        .lock()
                        .expect("log state lock")
                        .cursors
                        .clear();
                }
                other => return other,
            }
        }
        Err(LogError::Closed)
    }

    async fn commit(&self, consumer: &str, offset: u64) -> Result<(), LogError> {
        let end = *self.shared.end.borrow();
        if offset > end {
            return Err(LogError::OutOfRange {
                offset,
                available: 0..end,
            });
        }
        let shared = self.shared.clone();
        let consumer = consumer.to_string();
        tokio::task::spawn_blocking(move || shared.commit_blocking(&consumer, offset))
            .await
            .map_err(|_| LogError::Closed)?
    }

    async fn forget(&self, consumer: &str) -> Result<(), LogError> {
        let path = self
            .shared
            .dir
            .join("consumers")
            .join(format!("{consumer}.offset"));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
        self.shared
            .state
            .lock()
            .expect("log state lock")
            .consumers
            .remove(consumer);
        Ok(())
    }

    fn id(&self) -> &str {
        &self.shared.id
    }

    fn committed(&self, consumer: &str) -> Option<u64> {
        self.shared
            .state
            .lock()
            .expect("log state lock")
            .consumers
            .get(consumer)
            .copied()
    }

    fn stats(&self) -> LogStats {
        let state = self.shared.state.lock().expect("log state lock");
        LogStats {
            start: state.segments.keys().next().copied().unwrap_or(0),
            end: *self.shared.end.borrow(),
            bytes: state.segments.values().sum(),
            segments: state.segments.len(),
            consumers: state
                .consumers
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}
