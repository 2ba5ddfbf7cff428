//! The write-ahead log: the store directory, recovery on open, and the group-commit writer.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use allframe_cqrs_core::{Bytes, Error, Result};
use tokio::sync::{Notify, oneshot};

use crate::cold::{self, ColdSegment};
use crate::dir::{LOCK_FILE, MARKER_FILE};
use crate::format::{self, FLAG_LAST_IN_BATCH, FRAME_HEADER_LEN, FrameHeader, FrameRead, SEGMENT_HEADER_LEN};
use crate::io::Fs;
use crate::segments::{self, MANIFEST_FILE, ManifestEntry, ParquetFiles, ParquetSegment};
use crate::state::{Loc, State};
use crate::{BACKEND_NAME, Shared, SyncMode};

/// The snapshot file.
pub(crate) const SNAPSHOT_FILE: &str = "snapshots.log";
/// Smallest preallocation step of a segment.
const MIN_PREALLOC: u64 = 256 * 1024;
/// Longest a group commit waits for more appends to join it.
const MAX_LINGER: Duration = Duration::from_micros(200);
/// How long the writer spins for a lone synchronous appender's next append before parking.
const IDLE_SPIN: Duration = Duration::from_micros(50);
/// Largest preallocation step of a segment.
const MAX_PREALLOC: u64 = 8 * 1024 * 1024;

pub(crate) fn io_err(path: &Path, source: io::Error) -> Error {
    Error::io(BACKEND_NAME, Some(path.to_path_buf()), source)
}

fn corruption(file: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption { backend: BACKEND_NAME, file: file.to_path_buf(), offset, reason: reason.into() }
}

/// The name of log segment `seq`.
pub(crate) fn segment_name(seq: u32) -> String {
    format!("wal-{seq:010}.log")
}

fn parse_segment_name(name: &str) -> Option<u32> {
    name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()
}

/// Facts from recovery, reported by `stats()`.
#[derive(Clone, Debug, Default)]
pub(crate) struct RecoveryReport {
    pub segments: u32,
    pub frames: u64,
    pub bytes: u64,
    /// Events held in Parquet segments.
    pub parquet_rows: u64,
    /// Index files that were missing or damaged and were rebuilt from their Parquet segment.
    pub rebuilt_indexes: u32,
    /// `(file, offset, bytes removed)` of a repaired torn tail.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    pub duration: Duration,
}

/// Counters the writer keeps.
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    pub batches: AtomicU64,
    pub syncs: AtomicU64,
    pub frames: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub segments: AtomicU64,
    pub conversions: AtomicU64,
    /// Times the writer waited for the Parquet converter (backlog full).
    pub backlog_waits: AtomicU64,
    /// Lone appends whose acknowledgement poll saw the commit (`AllSourceConfig::ack_spin`).
    pub ack_poll_hits: AtomicU64,
    /// Lone appends whose poll ran out of time and slept.
    pub ack_poll_misses: AtomicU64,
    /// Lone appends that slept without polling, because a recent poll missed.
    pub ack_poll_skips: AtomicU64,
}

/// The open segment files, for reads.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    files: RwLock<HashMap<u32, Arc<File>>>,
}

impl Segments {
    pub fn insert(&self, seq: u32, file: Arc<File>) {
        self.files.write().unwrap_or_else(PoisonError::into_inner).insert(seq, file);
    }

    pub fn get(&self, seq: u32) -> Option<Arc<File>> {
        self.files.read().unwrap_or_else(PoisonError::into_inner).get(&seq).cloned()
    }

    pub fn remove(&self, seq: u32) {
        self.files.write().unwrap_or_else(PoisonError::into_inner).remove(&seq);
    }
}

/// Reads `len` bytes at `offset` of segment `seq` (open as `file`) and checks the frames in them.
pub(crate) fn read_span(dir: &Path, file: &File, seq: u32, offset: u64, len: usize) -> Result<Bytes> {
    let path = dir.join(segment_name(seq));
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).map_err(|e| io_err(&path, e))?;
    // Verify every frame of the span again: the disk may have changed under us.
    let mut at = 0;
    while at < len {
        match format::read_frame(&buf[at..]) {
            FrameRead::Frame(h) => at += h.frame_len(),
            FrameRead::End => return Err(corruption(&path, offset + at as u64, "expected a frame, found zeros")),
            FrameRead::Bad(reason) => return Err(corruption(&path, offset + at as u64, reason)),
        }
    }
    Ok(Bytes::from(buf))
}

/// An opened store directory: its lock and the active segment ready for the writer.
#[derive(Debug)]
pub(crate) struct Opened {
    pub lock: File,
    pub active: ActiveSegment,
    pub next_batch: u64,
    pub report: RecoveryReport,
    /// The manifest's entries (live Parquet segments).
    pub manifest: Vec<ManifestEntry>,
    /// Sealed log segments not yet rewritten as Parquet.
    pub sealed: Vec<u32>,
}

/// The segment the writer appends to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub seq: u32,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Where the next frame goes.
    pub offset: u64,
    /// Bytes of the file already allocated (written with zeros or data).
    pub allocated: u64,
}

/// Opens (or creates) the store at `dir`: checks it is ours, locks it, replays the log into `state`.
#[allow(clippy::too_many_arguments)] // the parts of `Shared` it fills, before `Shared` exists
pub(crate) fn open(
    dir: &Path,
    fs: &Fs,
    state: &mut State,
    segments: &Segments,
    stats: &WriterStats,
    segment_size: u64,
    zero_fill: bool,
    synchronous: bool,
    parquet: &ParquetFiles,
) -> Result<Opened> {
    let started = Instant::now();
    let crate::dir::LockedDir { lock, names } = crate::dir::open_dir(dir, fs)?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = segments::read_manifest(&manifest_path)?;
    for (i, entry) in manifest.iter().enumerate() {
        if entry.seq != i as u32 + 1 {
            return Err(corruption(&manifest_path, 16 + 32 * i as u64, "manifest segments are not contiguous from 1"));
        }
    }
    let converted = manifest.len() as u32;
    let mut seqs = Vec::new();
    let mut leftovers = Vec::new();
    for name in &names {
        let path = dir.join(name);
        if name.ends_with(".tmp") {
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        } else if let Some(seq) = parse_segment_name(name) {
            if seq <= converted {
                // Rewritten as Parquet and listed in the manifest; the crash came before its
                // removal. Removed once the Parquet files are verified below.
                leftovers.push(path);
            } else {
                seqs.push(seq);
            }
        } else if let Some(seq) = segments::parse_parquet_name(name).or_else(|| cold::parse_index_name(name)) {
            if seq > converted {
                // Written but never listed: the crash came before the manifest; it is redone.
                std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            }
        } else if name != MARKER_FILE && name != LOCK_FILE && name != SNAPSHOT_FILE && name != MANIFEST_FILE {
            tracing::warn!(file = %path.display(), "allsource: ignoring an unknown file in the store");
        }
    }
    fs.sync_dir(dir).map_err(|e| io_err(dir, e))?;
    seqs.sort_unstable();
    for (i, &seq) in seqs.iter().enumerate() {
        if seq != converted + i as u32 + 1 {
            let missing = dir.join(segment_name(converted + i as u32 + 1));
            return Err(corruption(&missing, 0, "log segment is missing"));
        }
    }
    let parquet_rows: u64 = manifest.iter().map(|e| e.rows).sum();
    let rebuilt_indexes = load_cold_segments(dir, fs, &manifest, state, parquet)?;
    for path in leftovers {
        tracing::info!(file = %path.display(), "allsource: removing a log segment already in Parquet");
        std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
    }
    if !seqs.is_empty() || converted > 0 {
        fs.sync_dir(dir).map_err(|e| io_err(dir, e))?;
    }
    let mut report = RecoveryReport { parquet_rows, rebuilt_indexes, ..RecoveryReport::default() };
    let mut next_batch = 1;
    let mut last_flags = FLAG_LAST_IN_BATCH;
    let mut active = None;
    for (i, &seq) in seqs.iter().enumerate() {
        let is_last = i + 1 == seqs.len();
        let path = dir.join(segment_name(seq));
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_err(&path, e))?;
        let buf = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        match format::decode_segment_header(&buf) {
            Ok(found) if found == seq as u64 => {}
            Ok(_) => return Err(corruption(&path, 0, "segment header names another segment")),
            Err(reason) => return Err(corruption(&path, 0, reason)),
        }
        let mut at = SEGMENT_HEADER_LEN;
        loop {
            let read = match format::read_frame(&buf[at..]) {
                // Zeros, then more bytes: a power cut kept later sectors of the last write but
                // not this one. Handled like a torn frame (below), so no stale frame is left
                // behind the end where the next appends go.
                FrameRead::End if buf[at..].iter().any(|&b| b != 0) => FrameRead::Bad("zeros followed by more bytes"),
                read => read,
            };
            match read {
                FrameRead::End => break,
                FrameRead::Frame(h) => {
                    let payload = &buf[at + FRAME_HEADER_LEN..at + h.frame_len()];
                    replay_frame(state, &h, payload, &path, at as u64, seq)?;
                    next_batch = h.batch + 1;
                    last_flags = h.flags;
                    report.frames += 1;
                    at += h.frame_len();
                }
                FrameRead::Bad(reason) => {
                    // A torn tail: the bad frame belongs to the last group-commit write of the
                    // last segment, and no frame of a later write follows it.
                    let torn_batch = if last_flags & FLAG_LAST_IN_BATCH != 0 { next_batch } else { next_batch - 1 };
                    let later = if is_last { later_frame(&buf, at + 1, torn_batch) } else { None };
                    // Without a sync per write, several group commits may be unsynced when the
                    // power goes, and a cut may keep a later one while losing a sector (which
                    // reads as zeros) of an earlier one: the whole unsynced tail is cut off. A
                    // synchronous store syncs each write before the next, so there the earlier
                    // one was durable and this is damage.
                    // (The sector holding the later frame's start reached the disk: only pieces before it count.)
                    let torn_unsynced =
                        later.is_some_and(|later| !synchronous && zeroed_piece(&buf[..later / 512 * 512], at));
                    if !is_last || (later.is_some() && !torn_unsynced) {
                        return Err(corruption(&path, at as u64, reason));
                    }
                    if let Some(later) = later {
                        tracing::warn!(
                            file = %path.display(),
                            offset = at,
                            later_frame = later,
                            "allsource: a power cut tore an unsynced group commit; dropping it and the unsynced ones after it"
                        );
                    }
                    let junk = buf[at..].iter().rposition(|&b| b != 0).map_or(0, |last| last + 1) as u64;
                    tracing::warn!(
                        file = %path.display(),
                        offset = at,
                        bytes = junk,
                        reason,
                        "allsource: truncating a torn final frame left by a crash"
                    );
                    file.set_len(at as u64).map_err(|e| io_err(&path, e))?;
                    fs.sync_data(&file, &path).map_err(|e| io_err(&path, e))?;
                    report.torn_tail = Some((path.clone(), at as u64, junk));
                    break;
                }
            }
        }
        report.bytes += at as u64;
        let file = Arc::new(file);
        segments.insert(seq, file.clone());
        if is_last {
            let allocated = file.metadata().map_err(|e| io_err(&path, e))?.len();
            active = Some(ActiveSegment { seq, path, file, offset: at as u64, allocated });
        }
    }
    let active = match active {
        Some(active) => active,
        None => create_segment(dir, fs, converted + 1, segments, segment_size, zero_fill)?,
    };
    let sealed = seqs.iter().copied().filter(|&seq| seq != active.seq).collect();
    report.segments = seqs.len() as u32;
    report.duration = started.elapsed();
    stats.wal_bytes.store(report.bytes, Ordering::Relaxed);
    stats.segments.store(seqs.len().max(1) as u64, Ordering::Relaxed);
    state.committed = state.assigned;
    Ok(Opened { lock, active, next_batch, report, manifest, sealed })
}

/// Opens the manifest's Parquet files and their index files and makes them cold segments of
/// the index, in order; returns how many index files had to be rebuilt.
///
/// Opening a file (length and CRC check) and loading (or rebuilding) its index file do not
/// depend on the other files, so worker threads do it ahead (at most a few files ahead, to
/// bound memory) while this thread registers them in manifest order; the first error in that
/// order is the one reported.
fn load_cold_segments(
    dir: &Path,
    fs: &Fs,
    manifest: &[ManifestEntry],
    state: &mut State,
    parquet: &ParquetFiles,
) -> Result<u32> {
    type Loaded = Result<(ParquetSegment, ColdSegment, Vec<cold::StreamEntry>, bool)>;
    if manifest.is_empty() {
        return Ok(0);
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let ahead = workers * 2;
    let next = AtomicUsize::new(0);
    // How many files have been registered; workers wait while they are `ahead` files past it.
    let registered = (std::sync::Mutex::new(0usize), std::sync::Condvar::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Loaded)>();
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, registered, stop) = (&next, &registered, &stop);
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    if index >= manifest.len() || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let mut done = registered.0.lock().unwrap_or_else(PoisonError::into_inner);
                    while index >= *done + ahead && !stop.load(Ordering::SeqCst) {
                        done = registered.1.wait(done).unwrap_or_else(PoisonError::into_inner);
                    }
                    drop(done);
                    if tx.send((index, load_cold_segment(dir, fs, manifest[index]))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut ready = std::collections::BTreeMap::new();
        let mut rebuilt = 0;
        let outcome = (|| {
            for index in 0..manifest.len() {
                let loaded = loop {
                    if let Some(loaded) = ready.remove(&index) {
                        break loaded;
                    }
                    match rx.recv() {
                        Ok((i, loaded)) => {
                            ready.insert(i, loaded);
                        }
                        Err(_) => {
                            return Err(Error::Closed {
                                backend: BACKEND_NAME,
                                reason: Some("a Parquet loader stopped".into()),
                            });
                        }
                    }
                };
                let (segment, cold, entries, was_rebuilt) = loaded?;
                if cold.first_position != state.assigned + 1 {
                    return Err(corruption(
                        &segment.path,
                        0,
                        format!("segment starts at position {}, expected {}", cold.first_position, state.assigned + 1),
                    ));
                }
                state.assigned = cold.last_position();
                state.make_cold(Arc::new(cold), &entries)?;
                parquet.insert(segment);
                rebuilt += u32::from(was_rebuilt);
                *registered.0.lock().unwrap_or_else(PoisonError::into_inner) = index + 1;
                registered.1.notify_all();
            }
            Ok(rebuilt)
        })();
        stop.store(true, Ordering::SeqCst);
        registered.1.notify_all();
        outcome
    })
}

/// Opens one listed Parquet file and loads its index file, rebuilding the index file from the
/// Parquet rows when it is missing or damaged (the `bool`).
fn load_cold_segment(
    dir: &Path,
    fs: &Fs,
    entry: ManifestEntry,
) -> Result<(ParquetSegment, ColdSegment, Vec<cold::StreamEntry>, bool)> {
    let segment = ParquetSegment::open(dir, entry)?;
    let reason = match ColdSegment::load(dir, entry.seq, entry.first_position, entry.rows)? {
        Ok((cold, entries)) => return Ok((segment, cold, entries, false)),
        Err(reason) => reason,
    };
    let index_path = dir.join(cold::index_name(entry.seq));
    tracing::warn!(file = %index_path.display(), reason, "allsource: rebuilding an index file from its Parquet segment");
    let rows = segments::index_rows(&segment)?;
    check_rows(&rows, entry.first_position).map_err(|reason| corruption(&segment.path, 0, reason))?;
    let rows: Vec<cold::IndexRow<'_>> = rows
        .iter()
        .map(|(stream, version, position, id)| cold::IndexRow {
            stream: stream.as_bytes(),
            version: *version,
            position: *position,
            id: *id,
        })
        .collect();
    cold::write(dir, fs, entry.seq, &cold::encode(entry.seq, &rows))?;
    match ColdSegment::load(dir, entry.seq, entry.first_position, entry.rows)? {
        Ok((cold, entries)) => Ok((segment, cold, entries, true)),
        Err(reason) => Err(corruption(&index_path, 0, reason)),
    }
}

/// Checks that a segment's rows hold consecutive positions from `first_position` and, within
/// the segment, consecutive versions per stream.
fn check_rows(rows: &[segments::IndexRow], first_position: u64) -> std::result::Result<(), String> {
    let mut last_version: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for (i, (stream, version, position, _)) in rows.iter().enumerate() {
        if *position != first_position + i as u64 {
            return Err(format!("row {i} has position {position}, expected {}", first_position + i as u64));
        }
        if let Some(last) = last_version.insert(stream.as_str(), *version)
            && *version != last + 1
        {
            return Err(format!("stream `{stream}` continues at version {version}, expected {}", last + 1));
        }
    }
    Ok(())
}

/// Replays one frame into the index, checking positions and versions are contiguous.
fn replay_frame(state: &mut State, h: &FrameHeader, payload: &[u8], path: &Path, offset: u64, seq: u32) -> Result<()> {
    if h.count == 0 {
        return Err(corruption(path, offset, "frame holds no events"));
    }
    if h.first_position != state.assigned + 1 {
        return Err(corruption(
            path,
            offset,
            format!("frame starts at position {}, expected {}", h.first_position, state.assigned + 1),
        ));
    }
    let (stream, ids) = format::decode_append_ids(h, payload).map_err(|reason| corruption(path, offset, reason))?;
    let current = state.assigned_version(&stream);
    if h.first_version != current + 1 {
        return Err(corruption(
            path,
            offset,
            format!("stream `{stream}` continues at version {}, expected {}", h.first_version, current + 1),
        ));
    }
    let loc = Loc { segment: seq, offset, len: h.frame_len() as u32 };
    state.register(&stream, h.first_position, h.first_version, &ids, Some(loc));
    Ok(())
}

/// Whether a piece of `buf[from..]` between 512-byte sector boundaries of the file is all
/// zeros: a sector a power cut lost (preallocated or sparse space reads as zeros), not a
/// flipped bit.
fn zeroed_piece(buf: &[u8], from: usize) -> bool {
    const SECTOR: usize = 512;
    let mut start = from;
    while start < buf.len() {
        let end = ((start / SECTOR + 1) * SECTOR).min(buf.len());
        if buf[start..end].iter().all(|&b| b == 0) {
            return true;
        }
        start = end;
    }
    false
}

/// The first whole frame at or after `from` whose group-commit write is later than `batch`.
fn later_frame(buf: &[u8], from: usize, batch: u64) -> Option<usize> {
    let end = buf.len().checked_sub(FRAME_HEADER_LEN)?;
    (from..=end).find(|&at| {
        let h = &buf[at..];
        format::u16_at(h, 4) == format::FORMAT_VERSION
            && h[6] == format::KIND_APPEND
            && matches!(format::read_frame(h), FrameRead::Frame(f) if f.batch > batch)
    })
}

/// Creates segment `seq` (temporary file, header, preallocation, fsync, rename, directory fsync).
pub(crate) fn create_segment(
    dir: &Path,
    fs: &Fs,
    seq: u32,
    segments: &Segments,
    segment_size: u64,
    zero_fill: bool,
) -> Result<ActiveSegment> {
    let initial = MIN_PREALLOC.min(segment_size).max(SEGMENT_HEADER_LEN as u64);
    let path = dir.join(segment_name(seq));
    let tmp = dir.join(format!("{}.tmp", segment_name(seq)));
    let file = write_new_segment(fs, &tmp, seq, initial, zero_fill)?;
    fs.rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
    fs.sync_dir(dir).map_err(|e| io_err(dir, e))?;
    let file = Arc::new(file);
    segments.insert(seq, file.clone());
    Ok(ActiveSegment { seq, path, file, offset: SEGMENT_HEADER_LEN as u64, allocated: initial })
}

/// Writes segment `seq` as `tmp`: a new file holding the header, then zeros up to `size`, synced.
/// Writes a new segment file of `size` bytes: its header, then zeros (`zero_fill`: written,
/// so that later syncs overwrite allocated blocks) or a sparse extension (no sync mode, where
/// writing zeros would only double the bytes written); then `fdatasync`.
fn write_new_segment(fs: &Fs, tmp: &Path, seq: u32, size: u64, zero_fill: bool) -> Result<File> {
    let _ = std::fs::remove_file(tmp);
    let file = fs.create_new(tmp).map_err(|e| io_err(tmp, e))?;
    if !zero_fill {
        fs.write_at(&file, tmp, &format::encode_segment_header(seq as u64), 0).map_err(|e| io_err(tmp, e))?;
        fs.set_len(&file, tmp, size.max(SEGMENT_HEADER_LEN as u64)).map_err(|e| io_err(tmp, e))?;
        fs.sync_data(&file, tmp).map_err(|e| io_err(tmp, e))?;
        return Ok(file);
    }
    // Zeros in pieces, allocated at run time (a `static` array would add its size to the binary).
    let mut piece = vec![0u8; (size as usize).clamp(SEGMENT_HEADER_LEN, 256 * 1024)];
    piece[..SEGMENT_HEADER_LEN].copy_from_slice(&format::encode_segment_header(seq as u64));
    let mut at = 0;
    while at < size {
        let len = ((size - at) as usize).min(piece.len());
        fs.write_at(&file, tmp, &piece[..len], at).map_err(|e| io_err(tmp, e))?;
        if at == 0 {
            piece[..SEGMENT_HEADER_LEN].fill(0);
        }
        at += len as u64;
    }
    fs.sync_data(&file, tmp).map_err(|e| io_err(tmp, e))?;
    Ok(file)
}

/// Where one segment's part of a [`PendingLog`] buffer starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunk {
    /// Log segment the bytes go to.
    pub seq: u32,
    /// Offset in that segment of the first byte.
    pub offset: u64,
    /// Index in the buffer of the first byte.
    pub start: usize,
}

/// Frames that appenders have placed in the log but the writer has not yet written.
///
/// Lives in the index ([`State::log`]) so that an append assigns its positions and its place
/// in the log under one lock: frames are in position order in the log by construction. The
/// appender copies its frame into `buf` (a `memcpy`; the payload and its CRC were computed
/// before the lock) and learns at once where it will be on disk.
#[derive(Debug)]
pub(crate) struct PendingLog {
    pub buf: Vec<u8>,
    pub chunks: Vec<Chunk>,
    /// Frames in `buf`.
    pub frames: usize,
    /// Index in `buf` of the last frame.
    pub last_frame: usize,
    /// First and last position of the events in `buf`.
    pub first_position: u64,
    pub last_position: u64,
    /// Group-commit number given to every frame in `buf`.
    pub epoch: u64,
    /// Where the next frame goes.
    pub seq: u32,
    pub offset: u64,
    pub segment_size: u64,
    /// `flush()` calls waiting for the next sync.
    pub flushes: Vec<oneshot::Sender<Result<()>>>,
}

impl PendingLog {
    /// An empty buffer continuing the active segment at its end.
    pub fn new(active: &ActiveSegment, epoch: u64, segment_size: u64) -> Self {
        PendingLog {
            buf: Vec::with_capacity(1 << 16),
            chunks: Vec::new(),
            frames: 0,
            last_frame: 0,
            first_position: 0,
            last_position: 0,
            epoch,
            seq: active.seq,
            offset: active.offset,
            segment_size,
            flushes: Vec::new(),
        }
    }

    /// Places one frame after the others (starting the next segment when this one is full)
    /// and returns where it will be in the log.
    pub fn place(&mut self, mut header: FrameHeader, payload: &[u8]) -> Loc {
        let len = header.frame_len() as u64;
        if self.offset + len > self.segment_size && self.offset > SEGMENT_HEADER_LEN as u64 {
            self.seq += 1;
            self.offset = SEGMENT_HEADER_LEN as u64;
        }
        if self.chunks.last().is_none_or(|c| c.seq != self.seq) {
            self.chunks.push(Chunk { seq: self.seq, offset: self.offset, start: self.buf.len() });
        }
        if self.frames == 0 {
            self.first_position = header.first_position;
        }
        header.batch = self.epoch;
        header.flags = 0;
        self.last_frame = self.buf.len();
        format::write_frame(&mut self.buf, &header, payload);
        let loc = Loc { segment: self.seq, offset: self.offset, len: len as u32 };
        self.offset += len;
        self.frames += 1;
        self.last_position = header.first_position + header.count as u64 - 1;
        loc
    }

    /// Takes everything placed so far as one group; later frames get the next group number.
    fn take(&mut self, spare: Vec<u8>) -> Group {
        let buf = std::mem::replace(&mut self.buf, spare);
        let group = Group {
            buf,
            chunks: std::mem::take(&mut self.chunks),
            frames: self.frames,
            last_frame: self.last_frame,
            first_position: self.first_position,
            last_position: self.last_position,
            flushes: std::mem::take(&mut self.flushes),
        };
        if self.frames > 0 {
            self.epoch += 1;
        }
        self.frames = 0;
        group
    }
}

/// Frames taken by the writer to be written (and synced) together.
struct Group {
    buf: Vec<u8>,
    chunks: Vec<Chunk>,
    frames: usize,
    last_frame: usize,
    first_position: u64,
    last_position: u64,
    flushes: Vec<oneshot::Sender<Result<()>>>,
}

/// How the writer and the appenders wake each other.
#[derive(Debug)]
pub(crate) struct Wakeup {
    /// The writer wants waking once this many frames are pending (`usize::MAX`: busy).
    pub wake_at: AtomicUsize,
    /// Set when the store is dropped: write what is pending, sync, stop.
    pub closing: AtomicBool,
    /// Set once the store is poisoned (details in `State::poisoned`).
    pub poisoned: AtomicBool,
    /// Set by an appender that wakes the writer, for a writer that spins instead of parking.
    pub poke: AtomicBool,
    /// Appenders waiting for their group commit.
    pub acks: Notify,
    /// In synchronous mode, how long the last group's write and sync took (ns) if that group
    /// held one frame, else 0: a lone appender polls for its acknowledgement for at most twice
    /// this (see `AllSourceConfig::ack_spin`).
    pub lone_sync_nanos: AtomicU64,
    /// Whether polling for acknowledgements has paid off lately: below zero, lone appenders
    /// skip polling (each skip adds one) because a recent poll ran out of time, the sign of a
    /// busy CPU where polling only takes time from the writer and everything else.
    pub poll_credit: AtomicI32,
    /// The writer thread, to unpark.
    pub writer: OnceLock<Thread>,
}

impl Default for Wakeup {
    fn default() -> Self {
        Wakeup {
            wake_at: AtomicUsize::new(usize::MAX),
            closing: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            poke: AtomicBool::new(false),
            acks: Notify::new(),
            lone_sync_nanos: AtomicU64::new(0),
            poll_credit: AtomicI32::new(0),
            writer: OnceLock::new(),
        }
    }
}

impl Wakeup {
    /// Called by an appender after placing a frame, with the number now pending.
    pub fn placed(&self, pending: usize) {
        if pending >= self.wake_at.load(Ordering::SeqCst) {
            self.poke.store(true, Ordering::SeqCst);
            self.unpark();
        }
    }

    /// Wakes the writer whatever it waits for.
    pub fn unpark(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }
}

/// The next log segment, created and filled with zeros to its full size by a helper thread
/// (`allsource-prealloc`) while the writer fills the current one.
///
/// The writer used to extend the active segment itself, 8 MiB of zeros and an `fdatasync` at a
/// time (10 to 20 ms during which every appender waited). Extending the *active* file from
/// another thread is no better: its `fdatasync`s would then flush the helper's zeros and
/// size changes too. A separate file is independent: when the writer rolls, it renames the
/// prepared file into place, and every sync of that segment overwrites allocated blocks.
#[derive(Debug)]
pub(crate) struct NextSegment {
    /// A prepared segment: its number, temporary path and open file.
    ready: Mutex<Option<(u32, PathBuf, Arc<File>)>>,
    /// The segment number the writer wants prepared (0: none).
    want: AtomicU32,
    stop: AtomicBool,
}

impl NextSegment {
    /// The temporary name of a prepared segment (removed on open, like every `*.tmp`).
    fn tmp_path(dir: &Path, seq: u32) -> PathBuf {
        dir.join(format!("{}.next.tmp", segment_name(seq)))
    }

    /// Creates segment `seq` under its temporary name: header, zeros to `size`, `fdatasync`.
    fn prepare(dir: &Path, fs: &Fs, seq: u32, size: u64, zero_fill: bool) -> Result<(PathBuf, Arc<File>)> {
        let tmp = Self::tmp_path(dir, seq);
        let file = write_new_segment(fs, &tmp, seq, size, zero_fill)?;
        Ok((tmp, Arc::new(file)))
    }

    /// The helper thread: prepares the segment the writer asks for, until stopped.
    fn run(&self, dir: &Path, fs: &Fs, size: u64, zero_fill: bool) {
        while !self.stop.load(Ordering::SeqCst) {
            let Some((seq, prepared)) = self.job() else {
                std::thread::park();
                continue;
            };
            if let Some(stale) = prepared {
                let _ = std::fs::remove_file(Self::tmp_path(dir, stale));
            }
            match Self::prepare(dir, fs, seq, size, zero_fill) {
                Ok((tmp, file)) => *self.ready.lock().unwrap_or_else(PoisonError::into_inner) = Some((seq, tmp, file)),
                Err(error) => {
                    // The writer creates the segment itself at the roll, and reports the error
                    // to the appenders if it persists.
                    tracing::debug!(%error, segment = seq, "allsource: preparing the next log segment failed");
                    let _ = self.want.compare_exchange(seq, 0, Ordering::SeqCst, Ordering::SeqCst);
                }
            }
        }
    }

    /// The segment to prepare now and the stale prepared one to remove first, if any; `None`
    /// when there is nothing to do. Decided under the lock [`Self::take`] holds, so that the
    /// helper never sees the wanted segment as not prepared just after the writer took it
    /// (preparing it again would remove the file the writer is renaming into place).
    fn job(&self) -> Option<(u32, Option<u32>)> {
        let ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = self.want.load(Ordering::SeqCst);
        let prepared = ready.as_ref().map(|r| r.0);
        (seq != 0 && prepared != Some(seq)).then_some((seq, prepared))
    }

    /// Takes the prepared segment `seq`, if it is ready; either way `seq` is no longer wanted
    /// (the writer creates it itself when it was not ready).
    fn take(&self, seq: u32) -> Option<(PathBuf, Arc<File>)> {
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self.want.compare_exchange(seq, 0, Ordering::SeqCst, Ordering::SeqCst);
        match ready.take() {
            Some((ready_seq, tmp, file)) if ready_seq == seq => Some((tmp, file)),
            other => {
                *ready = other;
                None
            }
        }
    }
}

/// The writer thread: takes the frames appenders placed, writes them with one `write`, syncs
/// (one `fdatasync` per group in synchronous mode), then makes them readable and wakes the
/// appenders.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub fs: Fs,
    pub dir: PathBuf,
    pub active: ActiveSegment,
    pub mode: SyncMode,
    pub segment_size: u64,
    pub max_batch_bytes: usize,
    /// Where sealed segments go to be rewritten as Parquet.
    pub convert_tx: Option<std::sync::mpsc::Sender<u32>>,
    /// Most sealed segments waiting for conversion before the writer waits for the converter.
    pub max_conversion_backlog: u64,
    /// The next segment's helper (set by `run`).
    pub next: Option<Arc<NextSegment>>,
    pub helper: Option<Thread>,
    /// Segments sealed while writing the current group: handed to the converter only once
    /// that group is committed (a converted segment's events are readable at once, so a
    /// segment holding frames of a group that may still fail must not be converted).
    pub sealed: Vec<u32>,
    /// Where the current group's bytes went, to be zeroed again if the group fails.
    pub written: Vec<Extent>,
}

/// Bytes of a log segment written by the group being committed.
#[derive(Debug)]
pub(crate) struct Extent {
    seq: u32,
    file: Arc<File>,
    path: PathBuf,
    offset: u64,
    len: usize,
}

/// What the writer found to do.
enum Work {
    /// A group to write (possibly only flush requests).
    Group(Group),
    /// Nothing pending, but the sync interval is over.
    IntervalDue,
    /// The store was dropped and nothing is pending.
    Stop,
}

impl Writer {
    /// Runs until the store is dropped.
    pub fn run(mut self) {
        let next =
            Arc::new(NextSegment { ready: Mutex::new(None), want: AtomicU32::new(0), stop: AtomicBool::new(false) });
        let helper = {
            let (next, fs, dir, size) = (next.clone(), self.fs.clone(), self.dir.clone(), self.segment_size);
            let zero_fill = self.zero_fill();
            std::thread::Builder::new()
                .name("allsource-prealloc".into())
                .spawn(move || next.run(&dir, &fs, size, zero_fill))
                .ok()
        };
        self.next = Some(next.clone());
        self.helper = helper.as_ref().map(|h| h.thread().clone());
        self.write_loop();
        next.stop.store(true, Ordering::SeqCst);
        if let Some(helper) = helper {
            helper.thread().unpark();
            let _ = helper.join();
        }
    }

    fn write_loop(&mut self) {
        let mut dirty = false;
        let mut last_sync = Instant::now();
        let mut spare = Vec::with_capacity(1 << 16);
        let mut last_group = 0usize;
        let mut last_sync_time = Duration::ZERO;
        loop {
            // In synchronous mode, wait a little (at most half a sync) for as many appends as the
            // last group had: the appenders it acknowledged are coming back, and a group that
            // leaves without them costs them a whole extra sync.
            let (target, linger) = match self.mode {
                SyncMode::Synchronous => (last_group.max(1), (last_sync_time / 2).min(MAX_LINGER)),
                _ => (1, Duration::ZERO),
            };
            // A lone synchronous appender comes back a few µs after its acknowledgement: spin
            // briefly for it rather than pay a futex wake-up on top of every sync.
            let spin = if self.mode == SyncMode::Synchronous && last_group <= 1 { IDLE_SPIN } else { Duration::ZERO };
            let interval = match self.mode {
                SyncMode::Interval(every) if dirty => Some(last_sync + every),
                _ => None,
            };
            let mut group = match self.gather(std::mem::take(&mut spare), target, linger, interval, spin) {
                Work::Group(group) => group,
                Work::IntervalDue => {
                    // Failed or not, nothing is left to sync: a failure poisons the store.
                    let _ = self.sync_or_poison();
                    dirty = false;
                    last_sync = Instant::now();
                    continue;
                }
                Work::Stop => break,
            };
            if group.frames > 0 {
                last_group = group.frames;
                let started = Instant::now();
                // Only this group's bytes may be undone if it fails.
                self.written.clear();
                let outcome = if self.shared.wakeup.poisoned.load(Ordering::SeqCst) {
                    Err(Error::Closed { backend: BACKEND_NAME, reason: Some("an earlier write failed".into()) })
                } else {
                    self.write_group(&mut group)
                };
                last_sync_time = started.elapsed();
                let lone = self.mode == SyncMode::Synchronous && group.frames == 1;
                let nanos = if lone { (last_sync_time.as_nanos() as u64).max(1) } else { 0 };
                self.shared.wakeup.lone_sync_nanos.store(nanos, Ordering::Relaxed);
                match outcome {
                    Ok(()) => {
                        dirty = self.mode != SyncMode::Synchronous;
                        if self.mode == SyncMode::Synchronous {
                            last_sync = Instant::now();
                        }
                        self.written.clear();
                        self.commit(&group);
                        self.hand_over_sealed();
                    }
                    Err(error) => self.fail(&group, error),
                }
            }
            let interval_due = matches!(self.mode, SyncMode::Interval(every) if last_sync.elapsed() >= every);
            let poisoned = || self.shared.wakeup.poisoned.load(Ordering::SeqCst);
            let result = if poisoned() {
                // A flush after a failure must not report success: the failure is its answer.
                Err(self.poison_error())
            } else if dirty && (interval_due || !group.flushes.is_empty()) {
                let result = self.sync_or_poison();
                dirty = false;
                last_sync = Instant::now();
                result
            } else {
                Ok(())
            };
            for ack in group.flushes.drain(..) {
                let _ = ack.send(result.as_ref().map(|_| ()).map_err(clone_error));
            }
            spare = group.buf;
            spare.clear();
        }
        if dirty && !self.shared.wakeup.poisoned.load(Ordering::SeqCst) {
            // Nobody waits for this one; a failure is still logged (by the poisoning).
            let _ = self.sync_or_poison();
        }
    }

    /// Syncs the active segment; a failure poisons the store (see [`crate::poison`]): every
    /// append acknowledged since the last good sync may have lost its pages, so nothing more is
    /// acknowledged, and the pending appends (positions past the committed head) will fail.
    fn sync_or_poison(&self) -> Result<()> {
        self.sync().inspect_err(|error| {
            let committed = self.shared.state.read().unwrap_or_else(PoisonError::into_inner).committed;
            crate::poison::poison(&self.shared, clone_error(error), committed + 1);
        })
    }

    /// A copy of the error that poisoned the store.
    fn poison_error(&self) -> Error {
        let state = self.shared.state.read().unwrap_or_else(PoisonError::into_inner);
        match &state.poisoned {
            Some(poison) => poison.original(),
            None => Error::Closed { backend: BACKEND_NAME, reason: Some("the log writer failed".into()) },
        }
    }

    /// Waits until there is something to do: `target` frames pending (or fewer once `linger`
    /// has passed since the first), a flush request, the sync `interval` over, or the end.
    fn gather(
        &self,
        spare: Vec<u8>,
        target: usize,
        linger: Duration,
        interval: Option<Instant>,
        spin: Duration,
    ) -> Work {
        let wakeup = &self.shared.wakeup;
        let mut first_seen: Option<Instant> = None;
        let mut spare = Some(spare);
        let mut spin_until = (!spin.is_zero()).then(|| Instant::now() + spin);
        loop {
            // Say what we wait for before looking: an appender that places a frame after the
            // look sees it and unparks us (an unpark before the park makes the park return).
            wakeup.wake_at.store(if first_seen.is_some() { target } else { 1 }, Ordering::SeqCst);
            let closing = wakeup.closing.load(Ordering::SeqCst);
            let pending = {
                let mut state = self.shared.state.write().unwrap_or_else(PoisonError::into_inner);
                let log = state.log.as_mut().expect("a durable store has a pending log");
                let lingered = first_seen.is_some_and(|t| t.elapsed() >= linger);
                if log.frames >= target || (log.frames > 0 && (lingered || closing)) || !log.flushes.is_empty() {
                    wakeup.wake_at.store(usize::MAX, Ordering::SeqCst);
                    return Work::Group(log.take(spare.take().unwrap_or_default()));
                }
                log.frames
            };
            if closing {
                wakeup.wake_at.store(usize::MAX, Ordering::SeqCst);
                return Work::Stop;
            }
            let now = Instant::now();
            if interval.is_some_and(|due| now >= due) {
                wakeup.wake_at.store(usize::MAX, Ordering::SeqCst);
                return Work::IntervalDue;
            }
            if pending > 0 && first_seen.is_none() {
                first_seen = Some(now);
                continue;
            }
            if let Some(until) = spin_until.take() {
                wakeup.poke.store(false, Ordering::SeqCst);
                while Instant::now() < until && !wakeup.poke.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                continue;
            }
            let mut until = interval;
            if let Some(seen) = first_seen {
                let due = seen + linger;
                until = Some(until.map_or(due, |u| u.min(due)));
            }
            match until {
                Some(until) => std::thread::park_timeout(until.saturating_duration_since(now)),
                None => std::thread::park(),
            }
        }
    }

    fn sync(&self) -> Result<()> {
        self.shared.writer_stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.fs.sync_data(&self.active.file, &self.active.path).map_err(|e| io_err(&self.active.path, e))
    }

    /// Writes one group (one `write` per segment it touches, at most `max_batch_bytes` each)
    /// and, in synchronous mode, syncs it.
    fn write_group(&mut self, group: &mut Group) -> Result<()> {
        let last = group.last_frame;
        format::reseal_frame(&mut group.buf[last..], FLAG_LAST_IN_BATCH);
        for (i, chunk) in group.chunks.iter().enumerate() {
            let end = group.chunks.get(i + 1).map_or(group.buf.len(), |next| next.start);
            if chunk.seq != self.active.seq {
                self.roll()?;
                if chunk.seq != self.active.seq || chunk.offset != self.active.offset {
                    return Err(Error::Closed {
                        backend: BACKEND_NAME,
                        reason: Some("log placement out of step".into()),
                    });
                }
            }
            let bytes = &group.buf[chunk.start..end];
            let file_end = chunk.offset + bytes.len() as u64;
            if file_end > self.active.allocated {
                self.preallocate(file_end)?;
            }
            self.ask_for_next();
            self.written.push(Extent {
                seq: self.active.seq,
                file: self.active.file.clone(),
                path: self.active.path.clone(),
                offset: chunk.offset,
                len: bytes.len(),
            });
            let path = &self.active.path;
            for (n, piece) in bytes.chunks(self.max_batch_bytes).enumerate() {
                let at = chunk.offset + (n * self.max_batch_bytes) as u64;
                self.fs.write_at(&self.active.file, path, piece, at).map_err(|e| io_err(path, e))?;
            }
            self.active.offset = file_end;
        }
        if self.mode == SyncMode::Synchronous {
            self.sync()?;
        }
        let stats = &self.shared.writer_stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.frames.fetch_add(group.frames as u64, Ordering::Relaxed);
        stats.wal_bytes.fetch_add(group.buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Extends the active segment with zeros to cover `end`, so later syncs overwrite
    /// allocated blocks instead of growing the file. (Segments prepared by the helper are
    /// allocated in full; a store's first segment grows this way.)
    /// Whether new log space is written with zeros (every mode that syncs; see
    /// [`write_new_segment`]).
    fn zero_fill(&self) -> bool {
        self.mode != SyncMode::NoSync
    }

    fn preallocate(&mut self, end: u64) -> Result<()> {
        let step = self.active.allocated.clamp(MIN_PREALLOC, MAX_PREALLOC);
        let target = (end + step).min(self.segment_size.max(end));
        if !self.zero_fill() {
            let path = &self.active.path;
            self.fs.set_len(&self.active.file, path, target).map_err(|e| io_err(path, e))?;
            self.active.allocated = target;
            return Ok(());
        }
        let zeros = vec![0u8; (target - self.active.allocated) as usize];
        let path = &self.active.path;
        self.fs.write_at(&self.active.file, path, &zeros, self.active.allocated).map_err(|e| io_err(path, e))?;
        self.fs.sync_data(&self.active.file, path).map_err(|e| io_err(path, e))?;
        self.active.allocated = target;
        Ok(())
    }

    /// Once the active segment is half full, asks the helper to prepare the next one.
    fn ask_for_next(&self) {
        let (Some(next), Some(helper)) = (&self.next, &self.helper) else { return };
        let seq = self.active.seq + 1;
        if self.active.offset > self.segment_size / 2 && next.want.load(Ordering::SeqCst) != seq {
            next.want.store(seq, Ordering::SeqCst);
            helper.unpark();
        }
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) -> Result<()> {
        self.sync()?;
        let seq = self.active.seq + 1;
        let next = match self.next.as_ref().and_then(|next| next.take(seq)) {
            Some((tmp, file)) => {
                let path = self.dir.join(segment_name(seq));
                self.fs.rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
                self.fs.sync_dir(&self.dir).map_err(|e| io_err(&self.dir, e))?;
                self.shared.segments.insert(seq, file.clone());
                let offset = SEGMENT_HEADER_LEN as u64;
                ActiveSegment { seq, path, file, offset, allocated: self.segment_size.max(offset) }
            }
            None => {
                create_segment(&self.dir, &self.fs, seq, &self.shared.segments, self.segment_size, self.zero_fill())?
            }
        };
        let sealed = std::mem::replace(&mut self.active, next);
        // Not converted yet: the group being written may have frames in it and may still fail.
        self.sealed.push(sealed.seq);
        self.shared.writer_stats.segments.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// After a group is committed, hands the segments sealed while writing it to the
    /// converter (every frame in them is now committed), then applies backpressure.
    fn hand_over_sealed(&mut self) {
        if self.sealed.is_empty() {
            return;
        }
        let Some(tx) = &self.convert_tx else {
            self.sealed.clear();
            return;
        };
        for seq in self.sealed.drain(..) {
            self.shared.conversion_backlog.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(seq);
        }
        self.wait_for_converter();
    }

    /// Backpressure: while more sealed segments wait for conversion than allowed, waits (and
    /// so do the appenders) until the converter catches up, stops, or the store closes.
    fn wait_for_converter(&self) {
        let shared = &self.shared;
        let over = || shared.conversion_backlog.load(Ordering::SeqCst) > self.max_conversion_backlog;
        if !over() {
            return;
        }
        shared.writer_stats.backlog_waits.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("allsource: appends wait for the Parquet converter to catch up");
        while over() && shared.converter_running.load(Ordering::SeqCst) && !shared.wakeup.closing.load(Ordering::SeqCst)
        {
            std::thread::park_timeout(Duration::from_millis(10));
        }
    }

    /// Makes a written group readable, then wakes its appenders.
    fn commit(&self, group: &Group) {
        {
            let mut state = self.shared.state.write().unwrap_or_else(PoisonError::into_inner);
            state.committed = state.committed.max(group.last_position);
        }
        self.shared.signal.publish(group.last_position);
        self.shared.wakeup.acks.notify_waiters();
    }

    /// After an I/O error while writing `group`: zeroes the bytes the group wrote (and syncs
    /// them), so that no append whose appender gets the error comes back after reopen, then
    /// removes the segments the group rolled into (they hold nothing else; a group longer than
    /// a segment would otherwise leave an all-zero segment before the last), then poisons the
    /// store. The segments sealed on the way are left for the next open to convert. (The rule
    /// is in [`crate::poison`].)
    fn fail(&mut self, group: &Group, error: Error) {
        self.sealed.clear();
        let written = std::mem::take(&mut self.written);
        for extent in &written {
            let zeros = vec![0u8; extent.len];
            let undone = self
                .fs
                .write_at(&extent.file, &extent.path, &zeros, extent.offset)
                .and_then(|()| self.fs.sync_data(&extent.file, &extent.path));
            if let Err(undo) = undone {
                tracing::error!(
                    file = %extent.path.display(),
                    offset = extent.offset,
                    error = %undo,
                    "allsource: could not undo a failed log write; its appends may reappear after reopen"
                );
            }
        }
        if let Some(first) = written.first() {
            let rolled_into: Vec<&Extent> = written.iter().filter(|e| e.seq > first.seq).collect();
            for extent in &rolled_into {
                self.shared.segments.remove(extent.seq);
                if let Err(undo) = std::fs::remove_file(&extent.path) {
                    tracing::error!(file = %extent.path.display(), error = %undo, "allsource: could not remove a log segment of a failed write");
                }
            }
            if !rolled_into.is_empty()
                && let Err(undo) = self.fs.sync_dir(&self.dir)
            {
                tracing::error!(error = %undo, "allsource: could not sync the removal of a failed write's log segments");
            }
        }
        crate::poison::poison(&self.shared, error, group.first_position);
    }
}

/// A copy of an error for several waiters (I/O errors keep their kind and message).
pub(crate) fn clone_error(error: &Error) -> Error {
    match error {
        Error::Io { backend, path, source } => {
            Error::Io { backend, path: path.clone(), source: io::Error::new(source.kind(), source.to_string()) }
        }
        other => Error::Closed { backend: BACKEND_NAME, reason: Some(other.to_string()) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next-segment helper must not prepare a segment again once the writer has taken it:
    /// preparing starts by removing the temporary file, which the writer is renaming into place
    /// (the fault sweep saw rolls fail with `NotFound` on the new segment).
    #[test]
    fn the_helper_does_not_prepare_again_a_segment_the_writer_took() {
        let dir = tempfile::tempdir().unwrap();
        let next = NextSegment { ready: Mutex::new(None), want: AtomicU32::new(0), stop: AtomicBool::new(false) };
        assert_eq!(next.job(), None, "nothing wanted");
        next.want.store(7, Ordering::SeqCst);
        assert_eq!(next.job(), Some((7, None)));
        let (tmp, file) = NextSegment::prepare(dir.path(), &Fs::default(), 7, 64 * 1024, true).unwrap();
        *next.ready.lock().unwrap() = Some((7, tmp.clone(), file));
        assert_eq!(next.job(), None, "prepared");
        let (taken, _) = next.take(7).expect("ready");
        assert_eq!(taken, tmp);
        assert_eq!(next.job(), None, "taken by the writer: not wanted any more");
        // A segment the writer wanted but had to create itself is not wanted either.
        next.want.store(8, Ordering::SeqCst);
        assert!(next.take(8).is_none());
        assert_eq!(next.job(), None);
        // A stale prepared segment is removed before the next one is prepared.
        let (tmp, file) = NextSegment::prepare(dir.path(), &Fs::default(), 9, 64 * 1024, true).unwrap();
        *next.ready.lock().unwrap() = Some((9, tmp, file));
        next.want.store(10, Ordering::SeqCst);
        assert_eq!(next.job(), Some((10, Some(9))));
    }
}
