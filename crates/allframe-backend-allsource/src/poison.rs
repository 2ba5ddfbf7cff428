//! The store's failure state ("poisoned"): set once an I/O call that durability depends on has
//! failed, after which nothing more is acknowledged until the store is reopened.
//!
//! Why one sticky state instead of retrying: after a failed `fdatasync` the kernel may already
//! have dropped the dirty pages and marked them clean (the "fsync-gate" of PostgreSQL in 2018),
//! so a later sync that succeeds proves nothing about the bytes written before it. The only
//! safe answer is to stop acknowledging, report the first failure to every later caller, and
//! let a reopen decide from what is on disk. (fjall's `poison.rs` does the same.)
//!
//! The rule for the bytes of a write that failed (kept by the writer, see `Writer::fail`): its
//! frames are overwritten with zeros and synced before the store is poisoned, so that recovery
//! never replays an append whose appender got an error. If that undo fails too, the failure is
//! logged and the frames may come back after reopen, whole and CRC-checked (as with any store
//! whose disk fails twice in a row, the outcome of that append is then unknown).

use allframe_cqrs_core::Error;

use crate::wal::clone_error;
use crate::{BACKEND_NAME, Shared};

/// Why the store refuses appends, and which appends never will be committed.
#[derive(Debug)]
pub(crate) struct Poison {
    /// The first failure, as the appenders of the failed write see it.
    error: Error,
    /// `error` with its source, as text (for [`Error::Closed`] and `stats()`).
    reason: String,
    /// The first position that will never be committed: a waiting appender at or past it gets
    /// (a copy of) `error`. `u64::MAX` while the writer has not yet said (a failure outside
    /// the writer, such as the snapshot file's); the writer lowers it when it fails the frames
    /// still pending.
    pub first_failed: u64,
}

impl Poison {
    /// The text of the first failure, with its source.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The error for an append or flush refused because the store is poisoned.
    pub fn closed(&self) -> Error {
        Error::Closed {
            backend: BACKEND_NAME,
            reason: Some(format!("poisoned by an earlier failure: {}", self.reason)),
        }
    }

    /// A copy of the first failure (an I/O error keeps its kind and message).
    pub fn original(&self) -> Error {
        clone_error(&self.error)
    }
}

/// Poisons the store with `error` (the first failure is kept; a later one only lowers
/// `first_failed`), logs the first with `tracing::error!`, and wakes every appender waiting for
/// an acknowledgement and the writer.
pub(crate) fn poison(shared: &Shared, error: Error, first_failed: u64) {
    {
        let mut state = shared.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &mut state.poisoned {
            Some(poison) => poison.first_failed = poison.first_failed.min(first_failed),
            None => {
                let source = std::error::Error::source(&error).map(|s| s.to_string()).unwrap_or_default();
                let reason = if source.is_empty() { error.to_string() } else { format!("{error}: {source}") };
                tracing::error!(
                    error = %reason,
                    "allsource: an I/O call failed; the store is poisoned and acknowledges nothing more until reopened"
                );
                state.poisoned = Some(Poison { error, reason, first_failed });
            }
        }
    }
    shared.wakeup.poisoned.store(true, std::sync::atomic::Ordering::SeqCst);
    shared.wakeup.acks.notify_waiters();
    shared.wakeup.unpark();
}
