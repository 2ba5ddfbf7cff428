//! How to open an AllSource store: [`AllSourceConfig`] and the durability modes ([`SyncMode`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use allframe_cqrs_core::Limits;

use crate::io::IoHook;

/// When an acknowledged append is safe on disk.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum SyncMode {
    /// `fdatasync` before acknowledging (group commit shares one sync among concurrent appends).
    #[default]
    Synchronous,
    /// Acknowledge once written to the OS; sync at least this often.
    Interval(Duration),
    /// Acknowledge once written to the OS; sync only on `flush()`.
    NoSync,
}

/// How to open an [`AllSourceBackend`](crate::AllSourceBackend).
///
/// Start from [`AllSourceConfig::durable`] or [`AllSourceConfig::in_memory`] and change what
/// you need (a setting added later is then not a breaking change):
/// `AllSourceConfig::durable("./data").sync(SyncMode::NoSync)`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AllSourceConfig {
    /// The store's directory; `None` keeps everything in memory (no files).
    pub data_dir: Option<PathBuf>,
    /// Durability mode of a directory store.
    pub sync: SyncMode,
    /// Size at which a log segment is sealed and the next one started, in bytes.
    pub segment_size: u64,
    /// Most bytes one `pwrite` call of a group commit writes (a larger group is written in
    /// several calls, then synced once).
    pub max_batch_bytes: usize,
    /// Input limits (stream id length, event size, events per append).
    pub limits: Limits,
    /// Rewrite sealed log segments as Parquet files in the background (durable stores).
    pub parquet_segments: bool,
    /// Most sealed log segments that may wait for their Parquet conversion. When appends
    /// outrun the converter for long, the writer waits at the next segment until the converter
    /// has caught up, so the exactly indexed log tail (and its memory) stays bounded by about
    /// `(max_conversion_backlog + 1) × segment_size` of log.
    pub max_conversion_backlog: usize,
    /// Longest a lone synchronous appender polls for its acknowledgement, yielding to other
    /// tasks between polls, before it sleeps until the writer wakes it. Waking a sleeping
    /// runtime worker costs tens of µs on top of each `fdatasync` (measured in
    /// `examples/lone.rs`); polling keeps one core busy while the sync runs. Only an append that
    /// is alone in its group commit (the one before was too) polls, and never for longer than
    /// twice the writer's last write and sync, so many concurrent appenders and a slow disk
    /// sleep as before. `Duration::ZERO` turns polling off.
    pub ack_spin: Duration,
    /// An I/O seam for tests: called before each file operation, may inject errors.
    pub io_hook: Option<Arc<dyn IoHook>>,
}

impl Default for AllSourceConfig {
    fn default() -> Self {
        AllSourceConfig {
            data_dir: None,
            sync: SyncMode::Synchronous,
            segment_size: 64 * 1024 * 1024,
            max_batch_bytes: 8 * 1024 * 1024,
            limits: Limits::default(),
            parquet_segments: true,
            max_conversion_backlog: 4,
            ack_spin: Duration::from_micros(400),
            io_hook: None,
        }
    }
}

impl AllSourceConfig {
    /// A durable configuration for `data_dir` (synchronous mode).
    pub fn durable(data_dir: impl Into<PathBuf>) -> Self {
        AllSourceConfig { data_dir: Some(data_dir.into()), ..AllSourceConfig::default() }
    }

    /// An in-memory configuration: nothing is written to disk (the same as `default()`).
    pub fn in_memory() -> Self {
        AllSourceConfig::default()
    }

    /// The store's directory; `None` keeps everything in memory.
    pub fn data_dir(mut self, data_dir: Option<PathBuf>) -> Self {
        self.data_dir = data_dir;
        self
    }

    /// The durability mode of a directory store.
    pub fn sync(mut self, sync: SyncMode) -> Self {
        self.sync = sync;
        self
    }

    /// The size at which a log segment is sealed, in bytes.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// The most bytes one `pwrite` of a group commit writes.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// The input limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether sealed log segments are rewritten as Parquet files.
    pub fn parquet_segments(mut self, convert: bool) -> Self {
        self.parquet_segments = convert;
        self
    }

    /// The most sealed log segments that may wait for their Parquet conversion.
    pub fn max_conversion_backlog(mut self, segments: usize) -> Self {
        self.max_conversion_backlog = segments;
        self
    }

    /// The longest a lone synchronous appender polls for its acknowledgement.
    pub fn ack_spin(mut self, spin: Duration) -> Self {
        self.ack_spin = spin;
        self
    }

    /// The I/O seam for tests (called before each file operation, may inject errors).
    pub fn io_hook(mut self, hook: Option<Arc<dyn IoHook>>) -> Self {
        self.io_hook = hook;
        self
    }
}
