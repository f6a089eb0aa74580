//! Metric names, in one place. Exposed by `tideway serve` at `/metrics` (Prometheus text).

/// Events accepted into the log, by source.
pub const EVENTS_RECEIVED: &str = "tideway_collect_events_received_total";
/// Events rejected, by source and reason.
pub const EVENTS_REJECTED: &str = "tideway_collect_events_rejected_total";
/// Events dropped as duplicates of a message id seen in the window.
pub const EVENTS_DUPLICATE: &str = "tideway_collect_events_duplicate_total";
/// Requests answered, by status code.
pub const REQUESTS: &str = "tideway_collect_requests_total";
/// Request body bytes received (after decompression).
pub const BYTES_RECEIVED: &str = "tideway_collect_bytes_received_total";
/// Seconds from a request's arrival to its answer.
pub const REQUEST_SECONDS: &str = "tideway_collect_request_seconds";
/// Seconds one group commit's write and fdatasync took.
pub const LOG_FSYNC_SECONDS: &str = "tideway_log_fsync_seconds";
/// Bytes in the event log's segments.
pub const LOG_BYTES: &str = "tideway_log_bytes";
/// The log's next offset.
pub const LOG_END_OFFSET: &str = "tideway_log_end_offset";
/// Records the lake loader has not yet committed.
pub const LOADER_LAG_EVENTS: &str = "tideway_loader_lag_events";
/// Seconds the oldest event of the last committed batch waited, from its arrival to its commit.
pub const LOADER_LAG_SECONDS: &str = "tideway_loader_lag_seconds";
/// Batches the loader failed to commit (and retried), by fault.
pub const LOADER_ERRORS: &str = "tideway_loader_errors_total";
/// Rows the loader committed, by table.
pub const LOADER_ROWS: &str = "tideway_loader_rows_total";
/// Dead-letter rows the loader wrote, by reason.
pub const LOADER_DEAD_LETTERS: &str = "tideway_loader_dead_letters_total";
