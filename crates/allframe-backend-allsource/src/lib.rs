//! # AllSource: the embedded, crash-safe AllFrame CQRS backend
//!
//! [`AllSourceBackend`] stores events in a directory of the local file system, in one
//! process, with no server: a segmented write-ahead log with one CRC-checked frame per
//! append, placed by the appender and written by a dedicated thread that commits concurrent
//! appends together (group commit: one `write` and one `fdatasync` for all of them), and an
//! in-memory index so reads go straight to the frames they need.
//!
//! ```no_run
//! use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
//! # fn main() -> allframe_cqrs_core::Result<()> {
//! let in_memory = AllSourceBackend::new()?; // no files at all
//! let durable = AllSourceBackend::production("./data")?; // fsync before acknowledge
//! let tuned = AllSourceBackend::open_with(
//!     "./other-data",
//!     AllSourceConfig::default().sync(SyncMode::Interval(std::time::Duration::from_millis(10))),
//! )?;
//! # Ok(()) }
//! ```
//!
//! ## Durability modes ([`SyncMode`])
//!
//! * `Synchronous` (the default of [`AllSourceBackend::production`]): an append is
//!   acknowledged only after its frame is written and `fdatasync`ed. Concurrent appends
//!   share one write and one sync.
//! * `Interval(d)`: acknowledged once written to the OS (survives a process crash); synced
//!   at least every `d`, so a power loss loses at most about `d` of appends.
//! * `NoSync`: written to the OS, never synced by the store except on
//!   [`flush`](allframe_cqrs_core::EventStoreBackend::flush) (survives a process crash only).
//!
//! The mode in force is reported by `capabilities()` and `stats()`.
//!
//! ## Files
//!
//! | file | what |
//! |---|---|
//! | `ALLSOURCE` | marker: `allframe-allsource store\nformat 1\n`; a non-empty directory without it is refused ([`Error::NotAStore`]) |
//! | `LOCK` | held with an OS file lock (`flock`) while open; a second open fails with [`Error::Locked`] |
//! | `wal-0000000001.log`, ... | log segments, numbered from 1, contiguous |
//! | `seg-0000000001.parquet`, ... | sealed segments rewritten as Parquet, listed in `MANIFEST` |
//! | `MANIFEST` | the live Parquet files, CRC-checked |
//! | `snapshots.log` | snapshot records, append-only, compacted on open |
//! | `CHECKPOINTS` | named checkpoints (contract point 14), CRC-checked, rewritten whole on each save |
//! | `*.tmp` | a file being created; removed on open |
//!
//! New files are written as `NAME.tmp`, synced, renamed into place, and the directory is synced.
//!
//! A new store is created so that a crash at any point leaves something the next open
//! recognises: `ALLSOURCE.tmp` (the marker's contents) is written and synced first, then `LOCK`
//! is created and locked, then the marker is renamed into place. An open that finds only an
//! empty `LOCK` and an `ALLSOURCE.tmp` holding a prefix of the marker (or that file alone)
//! finishes the creation; any other directory without the marker, a lone `LOCK` or a user's
//! `*.tmp` included, is refused with [`Error::NotAStore`] and nothing in it is touched.
//!
//! ## Byte layout (all integers little-endian, fixed width)
//!
//! Segment header, 32 bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `AFSRCWAL` |
//! | 8 | 2 | format version (1) |
//! | 10 | 6 | zero |
//! | 16 | 8 | segment number |
//! | 24 | 4 | CRC32 of bytes 0..24 |
//! | 28 | 4 | zero |
//!
//! Frames follow the header back to back; a segment is preallocated with zeros (in steps of
//! 256 KiB up to 8 MiB, up to the segment size), and an all-zero frame header marks the end.
//! Frame header, 40 bytes, then the payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | payload length `n` (> 0) |
//! | 4 | 2 | format version (1) |
//! | 6 | 1 | kind (1: append) |
//! | 7 | 1 | flags (bit 0: last frame of its group-commit write) |
//! | 8 | 4 | CRC32 (crc32fast) of the 40 header bytes with this field zero, then the payload |
//! | 12 | 4 | number of events |
//! | 16 | 8 | global position of the first event |
//! | 24 | 8 | stream version of the first event |
//! | 32 | 8 | group-commit write number (increasing) |
//! | 40 | n | payload |
//!
//! Payload: `u32 len, stream id (UTF-8)`, then per event: `u32 len, event type (UTF-8)`,
//! `u32 len, metadata` (the binary form of
//! [`Metadata::encode_into`](allframe_cqrs_core::Metadata::encode_into)), `u32 len, payload`.
//!
//! Snapshot record: `u32 body length, u32 CRC32 (of the body, xor CRC32 of the length
//! bytes)`, body: `u32 len, stream id, u64 version, i64 timestamp (µs), payload bytes`.
//!
//! ## Recovery
//!
//! On open every segment is read and every frame checked (CRC, positions contiguous from 1,
//! each stream's versions contiguous). A frame that is cut short or fails its checksum is a
//! **torn tail** when it is in the last segment and no frame of a later group-commit write
//! follows it: the crash interrupted the last write, which was never acknowledged. It is cut
//! off, logged with `tracing::warn!` and reported by `stats()` (`recovery_torn_tail`). Zeros
//! where a frame should start end the segment only if nothing but zeros follows them;
//! otherwise they count as a bad frame (a power cut kept later sectors of the write). Any
//! other damage fails the open with [`Error::Corruption`]
//! naming the file and byte offset; nothing is skipped or rewritten.
//!
//! A store opened in `Interval` or `NoSync` mode also accepts what a power cut leaves of
//! several unsynced group commits: a bad frame of the last segment holding a zeroed sector
//! piece (a sector that never reached the disk), even with frames of later writes after it,
//! cuts the log off there (a synchronous store syncs every write before the next, so there
//! that is corruption).
//!
//! `snapshots.log` is read after the log. Trailing zeros, a record cut short and a final
//! record with a zeroed header or sector piece are a torn tail: cut off, logged and reported
//! (`recovery_snapshot_torn_tail`); a record that fails its checksum otherwise, or is
//! followed by a valid record, is [`Error::Corruption`] (opened in `Interval` or `NoSync`
//! mode, where several records may be unsynced, a torn one followed by valid ones is cut off
//! there too). A snapshot newer than its stream as
//! recovered (saved without a sync over events a power cut lost) is dropped, logged and
//! counted (`recovery_snapshots_dropped_ahead`); the newest older one is kept and the file is
//! rewritten without it.
//!
//! ## After an I/O failure: the store is poisoned
//!
//! A failed write or `fdatasync` of the log (in every mode: a group commit's, a roll's, the
//! interval's or a `flush`'s), or of the snapshot file, **poisons** the store: the failure is
//! logged with `tracing::error!` and shown in `stats()` (`failed`), the appends of the write
//! that failed get its error ([`Error::Io`]), and from then on every append and flush fails
//! with [`Error::Closed`] naming that first failure, and every snapshot with a copy of it,
//! until the store is reopened. Reads keep working and show only what was acknowledged.
//! There is no retry: after a failed `fdatasync` the kernel may have dropped the dirty pages,
//! so a later sync that succeeds would prove nothing (the "fsync-gate").
//!
//! A failed append must not come back after reopen either: before poisoning, the writer
//! overwrites the bytes of the group commit that failed with zeros and syncs them, so recovery
//! ends the log where the last acknowledged write ended. (If that undo fails as well, it is
//! logged, and the failed appends may be replayed on reopen, whole and checksummed.) A sealed
//! segment is handed to the Parquet converter only once the group holding its last frame is
//! committed, so no converted (cold) event is ever one that was not acknowledged. A failure of
//! the converter or of the next-segment helper does not poison the store: the segment stays a
//! log segment (`stats()` shows `parquet_conversion_error`) and is converted after reopen.
//!
//! ## Memory
//!
//! Event payloads live only in the log and in Parquet files (read back through the OS page
//! cache) in durable stores. The index is exact and in memory for the log tail, the events not
//! yet rewritten as Parquet: per event about 8 bytes (its position in its stream's version
//! list) and about 32 bytes (its event id), per append about 56 bytes (where its frame is). Once
//! a segment is rewritten as Parquet its events leave that index ("cold" segments): memory
//! keeps a bloom filter of its event ids (10 bits per event), one id in every 256, and per
//! stream one run (first version, count, row in the index file) for each segment the stream
//! appears in; the rest is in the segment's index file. Per stream: its id twice plus about
//! 100 bytes, and its latest snapshot. So memory is about 1.3 bytes per cold event, plus the
//! open Parquet files' footers, plus about 100 bytes per event of the log tail (bounded by the
//! segment size times the segments not yet converted, at most
//! `max_conversion_backlog + 2`: appends wait for a converter that falls further behind), plus
//! the streams. A store opened with
//! [`AllSourceBackend::new`], or with `parquet_segments: false`, has no cold segments: it keeps
//! the exact index for every event (and an in-memory store the frames too).
//!
//! ## Index files
//!
//! Beside each `seg-N.parquet` an index file `seg-N.idx` (written, synced and renamed into
//! place before the manifest lists the segment) holds, little-endian: magic `AFSRCIDX`, `u16`
//! format version, `u16` zero, `u32` segment, `u64` first position, `u64` rows, `u32` streams,
//! `u32` bloom blocks, the smallest and largest event id (16 bytes each), `u64` stream table
//! length; the stream table (per stream: `u32` name length, name, `u64` first version, `u32`
//! count); every event's position (`u64`), grouped by stream in table order; every event id
//! with its position (16 + 8 bytes), sorted by id; the bloom filter (64-byte blocks, 6 probes);
//! a CRC32 of everything before it. It is derived data: a missing or damaged index file is
//! rebuilt from the Parquet file on open.
//!
//! ## Parquet segments
//!
//! A background thread rewrites each sealed log segment `wal-N.log` as `seg-N.parquet`
//! (parquet crate without Arrow, low-level column writers, snappy, 1,024 rows per row group,
//! chunk statistics on position, version and timestamp), columns `position int64`, `stream string`, `version int64`,
//! `event_type string`, `payload binary`, `metadata binary` (the `Metadata::encode_into` form),
//! `timestamp int64 TIMESTAMP(MICROS, UTC)`. The Parquet file is written as a temporary file,
//! synced, renamed, the directory synced; then `MANIFEST` (magic `AFSRCMAN`, `u32` version,
//! `u32` count, per file `u32` segment, `u64` first position, `u64` rows, `u64` file length,
//! `u32` file CRC32, then a CRC32 of everything before it) is replaced the same way; only then
//! is the log segment removed. Reads of old events go to the row groups that hold them.
//! [`AllSourceBackend::parquet_files`] lists the files; DuckDB, DataFusion and Polars read
//! them as they are. With the crate feature `arrow`, `arrow::read_segment` returns Arrow
//! record batches.
//!
#![deny(missing_docs)]

mod ack;
mod checkpoints;
mod cold;
mod config;
mod dir;
mod format;
mod health;
mod io;
mod metrics;
mod poison;
mod read;
mod segments;
mod snapshots;
mod state;
mod stats;
mod wal;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use allframe_cqrs_core::retry::StoredAt;
use allframe_cqrs_core::{
    AppendResult, BackendStats, Bytes, Capabilities, CommitSignal, Durability, Error, EventId, EventStoreBackend,
    ExpectedVersion, Health, NewEvent, RecordedEvent, Result, Snapshot, StreamId, async_trait,
};
use tokio::sync::oneshot;

pub use config::{AllSourceConfig, SyncMode};
pub use io::{IoHook, IoOp};
pub use stats::{EngineStats, RecoveryStats};

/// Arrow access to Parquet segments (crate feature `arrow`, off by default).
#[cfg(feature = "arrow")]
pub mod arrow {
    use std::path::Path;

    use allframe_cqrs_core::{Error, Result};
    pub use arrow_array::RecordBatch;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use crate::BACKEND_NAME;

    /// Reads one Parquet segment (from [`AllSourceBackend::parquet_files`](crate::AllSourceBackend::parquet_files))
    /// as Arrow record batches, one per row group.
    pub fn read_segment(path: &Path) -> Result<Vec<RecordBatch>> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(BACKEND_NAME, Some(path.to_path_buf()), e))?;
        let corrupt =
            |reason: String| Error::Corruption { backend: BACKEND_NAME, file: path.to_path_buf(), offset: 0, reason };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| corrupt(e.to_string()))?;
        reader.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| corrupt(e.to_string()))
    }
}

use checkpoints::Checkpoints;
use format::FrameHeader;
use io::Fs;
use read::Source;
use snapshots::SnapshotFile;
use state::{Loc, MEMORY_SEGMENT, State};
use wal::{RecoveryReport, Segments, WriterStats};

/// The backend's name in logs, errors and stats.
pub const BACKEND_NAME: &str = "allsource";

/// State shared by the backend handle and its writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: RwLock<State>,
    pub signal: CommitSignal,
    pub segments: Segments,
    pub writer_stats: WriterStats,
    pub parquet: segments::ParquetFiles,
    pub conversion_error: std::sync::Mutex<Option<String>>,
    /// Sealed log segments handed to the converter and not yet converted.
    pub conversion_backlog: std::sync::atomic::AtomicU64,
    /// Whether the converter thread is running (the writer never waits for a stopped one).
    pub converter_running: std::sync::atomic::AtomicBool,
    pub wakeup: wal::Wakeup,
}

/// The AllSource event store: in memory, or durable in a directory.
#[derive(Debug)]
pub struct AllSourceBackend {
    shared: Arc<Shared>,
    config: AllSourceConfig,
    fs: Fs,
    writer: Option<JoinHandle<()>>,
    converter: Option<(JoinHandle<()>, Arc<std::sync::atomic::AtomicBool>)>,
    snapshots: Option<SnapshotFile>,
    checkpoints: Checkpoints,
    report: RecoveryReport,
    _lock: Option<File>,
}

/// What an append found under the index lock.
enum Placed {
    /// An idempotent retry: answer once the original is committed.
    Retry(AppendResult),
    /// Placed in the log, with the number of frames now pending: wait for the group commit.
    Wait(AppendResult, usize),
}

/// Constructors. `new()` and `production(dir)` are the seed's names; `in_memory()`, `open(dir)`
/// and `open_with(dir, config)` are the same calls in the style every backend shares
/// (`RocksDbBackend::open(path)`, `RocksDbBackend::open_with(path, config)`).
impl AllSourceBackend {
    /// An in-memory store: nothing is written to disk (the seed's name; see [`Self::in_memory`]).
    pub fn new() -> Result<Self> {
        Self::in_memory()
    }

    /// An in-memory store: nothing is written to disk.
    pub fn in_memory() -> Result<Self> {
        Self::with_config(AllSourceConfig::in_memory())
    }

    /// A durable store in `data_dir` (created if needed), synced before each acknowledgement
    /// (the seed's name; see [`Self::open`]).
    pub fn production(data_dir: impl AsRef<Path>) -> Result<Self> {
        Self::open(data_dir)
    }

    /// Opens (or creates) the durable store in `data_dir`, synced before each acknowledgement.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        Self::with_config(AllSourceConfig::durable(data_dir.as_ref()))
    }

    /// Opens (or creates) the store in `data_dir` with `config`'s other settings.
    pub fn open_with(data_dir: impl AsRef<Path>, config: AllSourceConfig) -> Result<Self> {
        Self::with_config(config.data_dir(Some(data_dir.as_ref().to_path_buf())))
    }

    /// A store as configured; opening a directory replays its log (see the crate docs).
    pub fn with_config(config: AllSourceConfig) -> Result<Self> {
        let fs = Fs { hook: config.io_hook.clone() };
        let segments = Segments::default();
        let writer_stats = WriterStats::default();
        let mut state = State::default();
        let Some(dir) = config.data_dir.clone() else {
            let shared = Arc::new(Shared {
                state: RwLock::new(state),
                signal: CommitSignal::new(0),
                segments,
                writer_stats,
                parquet: Default::default(),
                conversion_error: Default::default(),
                conversion_backlog: Default::default(),
                converter_running: Default::default(),
                wakeup: Default::default(),
            });
            return Ok(AllSourceBackend {
                shared,
                config,
                fs,
                writer: None,
                converter: None,
                snapshots: None,
                checkpoints: Checkpoints::in_memory(),
                report: RecoveryReport::default(),
                _lock: None,
            });
        };
        let segment_size = config.segment_size.max(64 * 1024);
        let parquet = segments::ParquetFiles::default();
        let zero_fill = config.sync != SyncMode::NoSync;
        let opened = wal::open(
            &dir,
            &fs,
            &mut state,
            &segments,
            &writer_stats,
            segment_size,
            zero_fill,
            config.sync == SyncMode::Synchronous,
            &parquet,
        )?;
        let snapshots = SnapshotFile::open(&dir, &fs, &mut state, config.sync == SyncMode::Synchronous)?;
        let checkpoints = Checkpoints::open(&dir)?;
        state.log = Some(wal::PendingLog::new(&opened.active, opened.next_batch, segment_size));
        let head = state.committed;
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            signal: CommitSignal::new(head),
            segments,
            writer_stats,
            parquet,
            conversion_error: Default::default(),
            conversion_backlog: Default::default(),
            converter_running: Default::default(),
            wakeup: Default::default(),
        });
        let mut converter = None;
        let mut convert_tx = None;
        if config.parquet_segments {
            let (ctx, crx) = std::sync::mpsc::channel();
            for &seq in &opened.sealed {
                let _ = ctx.send(seq);
            }
            shared.conversion_backlog.store(opened.sealed.len() as u64, std::sync::atomic::Ordering::SeqCst);
            metrics::conversion_backlog(opened.sealed.len() as u64);
            shared.converter_running.store(true, std::sync::atomic::Ordering::SeqCst);
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let job = segments::Converter {
                shared: shared.clone(),
                dir: dir.clone(),
                fs: fs.clone(),
                rx: crx,
                manifest: opened.manifest.clone(),
                stop: stop.clone(),
            };
            let handle = std::thread::Builder::new()
                .name("allsource-parquet".into())
                .spawn(move || job.run())
                .map_err(|e| Error::io(BACKEND_NAME, Some(dir.clone()), e))?;
            converter = Some((handle, stop));
            convert_tx = Some(ctx);
        }
        let writer = wal::Writer {
            shared: shared.clone(),
            fs: fs.clone(),
            dir: dir.clone(),
            active: opened.active,
            mode: config.sync,
            segment_size,
            max_batch_bytes: config.max_batch_bytes.max(1),
            convert_tx,
            max_conversion_backlog: config.max_conversion_backlog.max(1) as u64,
            next: None,
            helper: None,
            sealed: Vec::new(),
            written: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("allsource-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io(BACKEND_NAME, Some(dir.clone()), e))?;
        let _ = shared.wakeup.writer.set(handle.thread().clone());
        tracing::info!(
            dir = %dir.display(),
            events = head,
            segments = opened.report.segments,
            torn_tail = opened.report.torn_tail.is_some(),
            "allsource: store opened"
        );
        Ok(AllSourceBackend {
            shared,
            config,
            fs,
            writer: Some(handle),
            converter,
            snapshots: Some(snapshots),
            checkpoints,
            report: opened.report,
            _lock: Some(opened.lock),
        })
    }

    /// The Parquet segment files listed in the manifest, oldest first: sealed, immutable,
    /// readable by any Parquet reader (see the crate docs for the columns).
    pub fn parquet_files(&self) -> Vec<PathBuf> {
        self.shared.parquet.paths()
    }

    /// The store's directory (`None` for an in-memory store).
    pub fn data_dir(&self) -> Option<&Path> {
        self.config.data_dir.as_deref()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.shared.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn durability(&self) -> Durability {
        match (&self.config.data_dir, self.config.sync) {
            (None, _) => Durability::Volatile,
            (Some(_), SyncMode::Synchronous) => Durability::Synchronous,
            (Some(_), SyncMode::Interval(d)) => Durability::Interval(d),
            (Some(_), SyncMode::NoSync) => Durability::NoSync,
        }
    }

    fn closed(reason: &str) -> Error {
        Error::Closed { backend: BACKEND_NAME, reason: Some(reason.to_string()) }
    }
}

impl Drop for AllSourceBackend {
    fn drop(&mut self) {
        // Closing lets the writer finish what is placed, sync, and stop; joining it
        // means the store's files and lock are released when `drop` returns.
        self.shared.wakeup.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.wakeup.unpark();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // The converter finishes the segment it is on (if any) and stops; the rest is
        // converted after the next open.
        if let Some((converter, stop)) = self.converter.take() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = converter.join();
        }
    }
}

#[async_trait]
impl EventStoreBackend for AllSourceBackend {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::full(self.durability(), self.config.data_dir.is_some())
    }

    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult> {
        self.config.limits.check_append(stream, &events)?;
        let payload = if events.is_empty() { Vec::new() } else { format::encode_append(stream, &events) };
        if payload.len() > format::MAX_FRAME_PAYLOAD as usize {
            // One append is one frame; its length field is 32 bits and recovery bounds it at 1 GiB.
            return Err(Error::EventTooLarge { size: payload.len(), limit: format::MAX_FRAME_PAYLOAD as usize });
        }
        let ids: Vec<EventId> = events.iter().map(|e| e.metadata.event_id).collect();
        let placed = {
            let mut guard = self.write();
            let state = &mut *guard;
            if let Some(poison) = &state.poisoned {
                return Err(poison.closed());
            }
            if let Some(original) = state.find_retry(stream, &events, &self.shared.parquet)? {
                Placed::Retry(original)
            } else {
                let current = state.assigned_version(stream);
                expected.check(stream, current)?;
                if events.is_empty() {
                    return Ok(AppendResult { stream_version: current, ..AppendResult::default() });
                }
                let header = FrameHeader {
                    payload_len: payload.len() as u32,
                    flags: 0,
                    count: events.len() as u32,
                    first_position: state.assigned + 1,
                    first_version: current + 1,
                    batch: 0,
                };
                let result = AppendResult {
                    stream_version: current + events.len() as u64,
                    first_position: header.first_position,
                    last_position: header.first_position + events.len() as u64 - 1,
                    deduplicated: false,
                };
                match state.log.as_mut() {
                    None => {
                        let mut frame = Vec::with_capacity(header.frame_len());
                        format::write_frame(&mut frame, &header, &payload);
                        let loc = Loc {
                            segment: MEMORY_SEGMENT,
                            offset: state.mem_frames.len() as u64,
                            len: frame.len() as u32,
                        };
                        state.mem_frames.push(Bytes::from(frame));
                        state.register(stream, header.first_position, header.first_version, &ids, Some(loc));
                        state.committed = result.last_position;
                        drop(guard);
                        self.shared.signal.publish(result.last_position);
                        return Ok(result);
                    }
                    Some(log) => {
                        let loc = log.place(header, &payload);
                        let pending = log.frames;
                        state.register(stream, header.first_position, header.first_version, &ids, Some(loc));
                        Placed::Wait(result, pending)
                    }
                }
            }
        };
        match placed {
            Placed::Retry(original) => {
                // An idempotent retry: answer once the original is committed.
                self.wait_committed(original.last_position).await?;
                Ok(original)
            }
            Placed::Wait(result, pending) => {
                self.shared.wakeup.placed(pending);
                if pending == 1 {
                    self.poll_committed(result.last_position).await;
                }
                self.wait_committed(result.last_position).await?;
                Ok(result)
            }
        }
    }

    async fn read_stream(&self, stream: &str, after_version: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let (sources, last_version) = {
            let state = self.read();
            let Some((stream_id, index)) = state.streams.get_key_value(stream) else { return Ok(Vec::new()) };
            let visible = index.committed(state.committed);
            let start = after_version.min(visible);
            let end = start.saturating_add(limit as u64).min(visible);
            if start >= end {
                return Ok(Vec::new());
            }
            let mut sources = Vec::new();
            // Versions start + 1 ..= end: first those in cold segments, by run.
            let cold_end = end.min(index.cold_versions);
            let first_run = index.cold.partition_point(|r| r.first_version + u64::from(r.count) <= start + 1);
            for run in index.cold.iter().skip(first_run).take_while(|r| r.first_version <= cold_end) {
                let from = run.first_version.max(start + 1);
                let to = cold_end.min(run.first_version + u64::from(run.count) - 1);
                let segment = state
                    .cold_segment(run.segment)
                    .ok_or_else(|| Self::closed("a stream run names no cold segment"))?;
                sources.push(Source::Run {
                    segment: segment.clone(),
                    stream: stream_id.clone(),
                    first_version: from,
                    row: run.row + (from - run.first_version),
                    count: to - from + 1,
                });
            }
            // Then those of the log tail, by frame.
            let hot_start = start.max(index.cold_versions) - index.cold_versions;
            let hot_end = end.saturating_sub(index.cold_versions);
            let mut last_frame = usize::MAX;
            for &position in index.hot.get(hot_start as usize..hot_end as usize).unwrap_or_default() {
                let frame =
                    state.frame_index(position).ok_or_else(|| Self::closed("index has no frame for a position"))?;
                if frame != last_frame {
                    sources.push(Self::source(&state, frame)?);
                    last_frame = frame;
                }
            }
            (sources, end)
        };
        let frames = self.load(sources)?;
        Ok(frames.into_iter().flatten().filter(|e| e.version > after_version && e.version <= last_version).collect())
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let (sources, last) = {
            let state = self.read();
            let last = after_position.saturating_add(limit as u64).min(state.committed);
            if after_position >= last {
                return Ok(Vec::new());
            }
            let mut sources = Vec::new();
            let mut next = after_position + 1;
            let first_cold = state.cold.partition_point(|s| s.last_position() < next);
            for segment in state.cold.iter().skip(first_cold) {
                if next > last {
                    break;
                }
                let to = last.min(segment.last_position());
                sources.push(Source::Parquet(segment.seq, next, to - next + 1));
                next = to + 1;
            }
            if next <= last {
                let first = state.frame_index(next).ok_or_else(|| Self::closed("index has no frame"))?;
                for index in first..state.frames.len() {
                    if state.frames[index].first_position > last {
                        break;
                    }
                    sources.push(Self::source(&state, index)?);
                }
            }
            (sources, last)
        };
        let frames = self.load(sources)?;
        Ok(frames.into_iter().flatten().filter(|e| e.position > after_position && e.position <= last).collect())
    }

    async fn stream_version(&self, stream: &str) -> Result<u64> {
        Ok(self.read().committed_version(stream))
    }

    async fn head_position(&self) -> Result<u64> {
        Ok(self.read().committed)
    }

    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>> {
        let state = self.read();
        Ok(allframe_cqrs_core::read::streams_after(&state.stream_order, after)
            .map(|id| (id.clone(), state.committed_version(id)))
            .filter(|(_, version)| *version > 0)
            .take(limit)
            .collect())
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()> {
        self.config.limits.check_snapshot(stream, &snapshot)?;
        SnapshotFile::check_fits(stream, &snapshot)?;
        let current = {
            let state = self.read();
            if let Some(poison) = &state.poisoned {
                return Err(poison.original());
            }
            state.committed_version(stream)
        };
        snapshot.check_version(stream, current)?;
        if let Some(file) = &self.snapshots {
            // A failed write or sync of the snapshot file poisons the store like one of the log:
            // what the file holds after it is unknown (see `poison`).
            file.write(&self.fs, stream, &snapshot, self.config.sync == SyncMode::Synchronous)
                .inspect_err(|error| poison::poison(&self.shared, wal::clone_error(error), u64::MAX))?;
        }
        self.write().keep_snapshot(stream, snapshot);
        Ok(())
    }

    async fn get_latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        Ok(self.read().snapshots.get(stream).cloned())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.checkpoints.load(name))
    }

    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()> {
        let head = {
            let state = self.read();
            if let Some(poison) = &state.poisoned {
                return Err(poison.original());
            }
            state.committed
        };
        let limits = &self.config.limits;
        self.checkpoints.save(&self.fs, name, position, |actual| {
            allframe_cqrs_core::checkpoint::compare_and_set(limits, name, expected, actual, position, head)
        })
    }

    async fn find_event(&self, id: EventId) -> Result<Option<StoredAt>> {
        let state = self.read();
        if let Some(poison) = &state.poisoned {
            return Err(poison.closed());
        }
        state.find_event(&id, &self.shared.parquet)
    }

    async fn flush(&self) -> Result<()> {
        if self.writer.is_none() {
            return Ok(());
        }
        let (ack_tx, ack_rx) = oneshot::channel();
        {
            let mut state = self.write();
            if let Some(poison) = &state.poisoned {
                return Err(poison.closed());
            }
            state.log.as_mut().expect("a durable store has a pending log").flushes.push(ack_tx);
        }
        self.shared.wakeup.unpark();
        ack_rx.await.map_err(|_| Self::closed("the log writer stopped"))??;
        if let Some(file) = &self.snapshots {
            file.sync(&self.fs).inspect_err(|error| poison::poison(&self.shared, wal::clone_error(error), u64::MAX))?;
        }
        Ok(())
    }

    async fn stats(&self) -> Result<BackendStats> {
        let mut stats = BackendStats::new(BACKEND_NAME, self.durability());
        {
            let state = self.read();
            stats.events = state.committed;
            stats.head_position = state.committed;
            stats.streams = state.committed_streams();
            stats.snapshots = state.snapshots.len() as u64;
        }
        stats.details = self.engine_stats().details(self.durability().to_string());
        Ok(stats)
    }

    async fn wait_for_commit(&self, after_position: u64, max_wait: Duration) -> Result<()> {
        self.shared.signal.wait_past(after_position, max_wait).await;
        Ok(())
    }

    /// `Failed` once the store is poisoned (component `allsource.writer`, with the failure) or
    /// its writer thread stopped; `Degraded` when Parquet conversion stopped or its backlog is
    /// at `max_conversion_backlog` (`allsource.converter`).
    async fn health(&self) -> Health {
        self.check_health()
    }
}
