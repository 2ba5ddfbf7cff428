//! What only the RocksDB writer knows, reported through the `metrics` facade (feature
//! `metrics`): the appends of each group commit and the time of its write (and sync). The
//! names are the core's table ([`metric_names`](allframe_cqrs_core::metric_names)); the
//! store's operations are counted once, by the core's `Metered` wrapper, not here.
//!
//! The functions compile to nothing without the feature, so the writer calls them
//! unconditionally. Labels are literals (no allocation per call).

use std::time::Duration;

#[cfg(feature = "metrics")]
use allframe_cqrs_core::metric_names as names;

/// One group commit wrote `appends` appends in one batch; `write_and_sync` is the batch's
/// write time when it was synced (sync mode), `None` when it was not.
pub(crate) fn group_committed(appends: usize, write_and_sync: Option<Duration>) {
    #[cfg(feature = "metrics")]
    {
        ::metrics::histogram!(names::COMMIT_GROUP_APPENDS, "backend" => "rocksdb").record(appends as f64);
        if let Some(elapsed) = write_and_sync {
            ::metrics::histogram!(names::SYNC_DURATION, "backend" => "rocksdb").record(elapsed.as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (appends, write_and_sync);
}
