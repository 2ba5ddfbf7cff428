//! The engine's own figures, typed: [`EngineStats`] for programs and tests,
//! `stats().details` (the same figures as text, under stable keys) for people and the CLI.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::PoisonError;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::AllSourceBackend;

/// What recovery found when the store was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryStats {
    /// Log frames replayed.
    pub frames: u64,
    /// Log bytes replayed.
    pub bytes: u64,
    /// Events held in the Parquet segments.
    pub parquet_rows: u64,
    /// Index files that were missing or damaged and were rebuilt from their Parquet segment.
    pub rebuilt_indexes: u32,
    /// How long the open took.
    pub duration: Duration,
    /// A torn final write cut off the log: `(file, offset, bytes removed)`.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Snapshots newer than their recovered stream (saved without a sync over lost events), dropped.
    pub snapshots_dropped_ahead: u64,
    /// A torn final snapshot record (or zeros) was cut off the snapshot file.
    pub snapshot_torn_tail: bool,
}

/// AllSource's figures beyond the core's `BackendStats`: the index, the log writer, the
/// Parquet converter, the acknowledgement poll and recovery. Counters of a store in memory
/// (no data directory) stay zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// The store's directory (`None`: in memory).
    pub data_dir: Option<PathBuf>,
    /// The first failure that poisoned the store, if any (nothing is acknowledged after it).
    pub failed: Option<String>,
    /// Appends of the log tail held exactly in the index.
    pub index_frames: u64,
    /// Event ids of the log tail held exactly in the index.
    pub index_tail_ids: u64,
    /// Parquet segments known to the index by their summary only.
    pub index_cold_segments: u64,
    /// Memory of those summaries (bloom filters and id fences), in bytes.
    pub index_cold_memory_bytes: u64,
    /// Log segments created since the open.
    pub wal_segments: u64,
    /// Log bytes written since the open.
    pub wal_bytes: u64,
    /// Group commits (one write, and in synchronous mode one sync, each).
    pub group_commits: u64,
    /// Frames (appends) written.
    pub frames_written: u64,
    /// `fdatasync` calls of the log.
    pub fsyncs: u64,
    /// Lone appends whose acknowledgement poll saw the commit (`AllSourceConfig::ack_spin`).
    pub ack_poll_hits: u64,
    /// Lone appends whose poll ran out of time and slept.
    pub ack_poll_misses: u64,
    /// Lone appends that slept without polling, because a recent poll missed.
    pub ack_poll_skips: u64,
    /// Parquet segments open.
    pub parquet_files: u64,
    /// Memory of their footers (row-group metadata), in bytes.
    pub parquet_footer_memory_bytes: u64,
    /// Segments converted to Parquet since the open.
    pub parquet_conversions: u64,
    /// Sealed log segments waiting for conversion.
    pub parquet_backlog: u64,
    /// Times the writer waited for the converter (backlog full).
    pub parquet_backlog_waits: u64,
    /// Why conversion stopped, if it did (the segments stay log segments until the next open).
    pub parquet_conversion_error: Option<String>,
    /// What the open found.
    pub recovery: RecoveryStats,
}

impl AllSourceBackend {
    /// The engine's figures, typed (the same as `stats().details`, which holds them as text).
    pub fn engine_stats(&self) -> EngineStats {
        let mut stats = EngineStats::default();
        {
            let state = self.read();
            stats.index_frames = state.frames.len() as u64;
            stats.index_tail_ids = state.ids.len() as u64;
            stats.index_cold_segments = state.cold.len() as u64;
            stats.index_cold_memory_bytes = state.cold_memory() as u64;
            stats.failed = state.poisoned.as_ref().map(|poison| poison.reason().to_owned());
        }
        let Some(dir) = &self.config.data_dir else { return stats };
        let w = &self.shared.writer_stats;
        stats.data_dir = Some(dir.clone());
        stats.wal_segments = w.segments.load(Relaxed);
        stats.wal_bytes = w.wal_bytes.load(Relaxed);
        stats.group_commits = w.batches.load(Relaxed);
        stats.frames_written = w.frames.load(Relaxed);
        stats.fsyncs = w.syncs.load(Relaxed);
        stats.ack_poll_hits = w.ack_poll_hits.load(Relaxed);
        stats.ack_poll_misses = w.ack_poll_misses.load(Relaxed);
        stats.ack_poll_skips = w.ack_poll_skips.load(Relaxed);
        stats.parquet_files = self.shared.parquet.len() as u64;
        stats.parquet_footer_memory_bytes = self.shared.parquet.footer_memory() as u64;
        stats.parquet_conversions = w.conversions.load(Relaxed);
        stats.parquet_backlog = self.shared.conversion_backlog.load(Relaxed);
        stats.parquet_backlog_waits = w.backlog_waits.load(Relaxed);
        stats.parquet_conversion_error =
            self.shared.conversion_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let r = &self.report;
        stats.recovery = RecoveryStats {
            frames: r.frames,
            bytes: r.bytes,
            parquet_rows: r.parquet_rows,
            rebuilt_indexes: r.rebuilt_indexes,
            duration: r.duration,
            torn_tail: r.torn_tail.clone(),
            snapshots_dropped_ahead: self.snapshots.as_ref().map_or(0, |s| s.report().dropped_ahead),
            snapshot_torn_tail: self.snapshots.as_ref().is_some_and(|s| s.report().torn_tail.is_some()),
        };
        stats
    }
}

impl EngineStats {
    /// The figures as text under the keys `stats().details` has always used.
    pub(crate) fn details(&self, durability: String) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        let mut put = |key: &str, value: String| {
            d.insert(key.to_owned(), value);
        };
        put("index_frames", self.index_frames.to_string());
        put("index_tail_ids", self.index_tail_ids.to_string());
        put("index_cold_segments", self.index_cold_segments.to_string());
        put("index_cold_memory_bytes", self.index_cold_memory_bytes.to_string());
        if let Some(failed) = &self.failed {
            put("failed", failed.clone());
        }
        put("durability", durability);
        let Some(dir) = &self.data_dir else {
            put("storage", "memory".into());
            return d;
        };
        put("storage", "write-ahead log".into());
        put("data_dir", dir.display().to_string());
        put("wal_segments", self.wal_segments.to_string());
        put("wal_bytes", self.wal_bytes.to_string());
        put("group_commits", self.group_commits.to_string());
        put("frames_written", self.frames_written.to_string());
        put("fsyncs", self.fsyncs.to_string());
        put("ack_poll_hits", self.ack_poll_hits.to_string());
        put("ack_poll_misses", self.ack_poll_misses.to_string());
        put("ack_poll_skips", self.ack_poll_skips.to_string());
        put("parquet_files", self.parquet_files.to_string());
        put("parquet_footer_memory_bytes", self.parquet_footer_memory_bytes.to_string());
        put("parquet_conversions", self.parquet_conversions.to_string());
        put("parquet_backlog", self.parquet_backlog.to_string());
        put("parquet_backlog_waits", self.parquet_backlog_waits.to_string());
        if let Some(error) = &self.parquet_conversion_error {
            put("parquet_conversion_error", error.clone());
        }
        let r = &self.recovery;
        put("recovery_frames", r.frames.to_string());
        put("recovery_bytes", r.bytes.to_string());
        put("recovery_parquet_rows", r.parquet_rows.to_string());
        put("recovery_rebuilt_indexes", r.rebuilt_indexes.to_string());
        put("recovery_millis", r.duration.as_millis().to_string());
        put("recovery_torn_tail", r.torn_tail.is_some().to_string());
        if let Some((file, offset, bytes)) = &r.torn_tail {
            put("recovery_torn_file", file.display().to_string());
            put("recovery_torn_offset", offset.to_string());
            put("recovery_torn_bytes", bytes.to_string());
        }
        put("recovery_snapshots_dropped_ahead", r.snapshots_dropped_ahead.to_string());
        put("recovery_snapshot_torn_tail", r.snapshot_torn_tail.to_string());
        d
    }
}
