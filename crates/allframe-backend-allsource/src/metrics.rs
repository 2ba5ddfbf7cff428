//! What only the engine knows, reported through the `metrics` facade (feature `metrics`): the
//! size of each group commit, the time of its write and sync, the Parquet conversion backlog
//! and the segments on disk. The names are the core's table
//! ([`metric_names`](allframe_cqrs_core::metric_names)); the store's operations are counted
//! once, by the core's `Metered` wrapper, not here.
//!
//! Every function compiles to nothing without the feature, so the engine calls them
//! unconditionally. Labels are literals (no allocation per call); the recorder looks each
//! metric up per call, which costs far less than the write or sync it describes.

use std::time::Duration;

#[cfg(feature = "metrics")]
use allframe_cqrs_core::metric_names as names;

/// One group commit was written: `appends` frames, and, when it was synced as part of the
/// group (synchronous mode), the time of its write and sync.
pub(crate) fn group_committed(appends: usize, write_and_sync: Option<Duration>) {
    #[cfg(feature = "metrics")]
    {
        ::metrics::histogram!(names::COMMIT_GROUP_APPENDS, "backend" => "allsource").record(appends as f64);
        if let Some(elapsed) = write_and_sync {
            ::metrics::histogram!(names::SYNC_DURATION, "backend" => "allsource").record(elapsed.as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (appends, write_and_sync);
}

/// A sync of the log outside a group's write (interval and no-sync modes, flushes): the
/// groups written since the last sync are durable after `elapsed`.
pub(crate) fn log_synced(elapsed: Duration) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(names::SYNC_DURATION, "backend" => "allsource").record(elapsed.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = elapsed;
}

/// The conversion backlog is now `segments` sealed log segments.
pub(crate) fn conversion_backlog(segments: u64) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!(names::ALLSOURCE_CONVERSION_BACKLOG).set(segments as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = segments;
}

/// The store now has `segments` log segments (the active one and the sealed ones).
pub(crate) fn log_segments(segments: usize) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!(names::ALLSOURCE_SEGMENTS, "kind" => "log").set(segments as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = segments;
}

/// The store now has `segments` Parquet segments.
pub(crate) fn parquet_segments(segments: usize) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!(names::ALLSOURCE_SEGMENTS, "kind" => "parquet").set(segments as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = segments;
}
