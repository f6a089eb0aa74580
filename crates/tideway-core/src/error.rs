//! Error kinds shared by every crate.
//!
//! Each crate has its own `thiserror` enum; each of those implements [`Faulty`] so that the
//! binary, the HTTP API and the run history can say who is at fault and whether a retry helps.

use std::fmt;

/// Who is at fault for an error, which decides what the person reading it should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The user's input or configuration is wrong: fix it, retrying will not help.
    User,
    /// A system outside Tideway failed (an API, a disk, the network): retrying may help.
    External,
    /// Tideway itself is wrong: likely a bug, please report it.
    Internal,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::User => "user error",
            Fault::External => "external error",
            Fault::Internal => "internal error (likely a bug in Tideway, please report it)",
        })
    }
}

/// Implemented by every error enum in Tideway.
pub trait Faulty {
    /// Who is at fault.
    fn fault(&self) -> Fault;
    /// Whether the same operation, retried unchanged, can succeed.
    fn retryable(&self) -> bool {
        self.fault() == Fault::External
    }
}
