//! The write-ahead log: numbered, preallocated segments of CRC-checked frames.
//!
//! Split by role, as the files are touched for different reasons:
//!
//! * `recovery.rs`: opening a store directory: the manifest's Parquet segments and their
//!   index files, then the log replayed frame by frame, torn tails cut off;
//! * `pending.rs`: the shared buffer appenders place their frames in under the index lock,
//!   and how the writer and the appenders wake each other;
//! * `writer.rs`: the group-commit writer thread (one write and one sync per group, rolls,
//!   the hand-over of sealed segments to the Parquet converter, failures);
//! * `prealloc.rs`: the helper thread that prepares the next segment ahead of the writer;
//! * this file: segment names and files, reading frames back, and the helpers they share.

mod pending;
mod prealloc;
mod recovery;
mod writer;

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

pub(crate) use pending::{PendingLog, Wakeup};
pub(crate) use prealloc::NextSegment;
pub(crate) use recovery::{ActiveSegment, RecoveryReport, open};
pub(crate) use writer::{Writer, WriterStats};

/// The snapshot file.
pub(crate) const SNAPSHOT_FILE: &str = "snapshots.log";
/// Smallest preallocation step of a segment.
pub(super) const MIN_PREALLOC: u64 = 256 * 1024;
/// Longest a group commit waits for more appends to join it.
pub(super) const MAX_LINGER: Duration = Duration::from_micros(200);
/// How long the writer spins for a lone synchronous appender's next append before parking.
pub(super) const IDLE_SPIN: Duration = Duration::from_micros(50);
/// Largest preallocation step of a segment.
pub(super) const MAX_PREALLOC: u64 = 8 * 1024 * 1024;

pub(crate) fn io_err(path: &Path, source: io::Error) -> Error {
    Error::io(BACKEND_NAME, Some(path.to_path_buf()), source)
}

pub(super) fn corruption(file: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption { backend: BACKEND_NAME, file: file.to_path_buf(), offset, reason: reason.into() }
}

/// The name of log segment `seq`.
pub(crate) fn segment_name(seq: u32) -> String {
    format!("wal-{seq:010}.log")
}

pub(super) fn parse_segment_name(name: &str) -> Option<u32> {
    name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()
}

/// The open segment files, for reads.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    files: RwLock<HashMap<u32, Arc<File>>>,
}

impl Segments {
    pub fn insert(&self, seq: u32, file: Arc<File>) {
        let mut files = self.files.write().unwrap_or_else(PoisonError::into_inner);
        files.insert(seq, file);
        crate::metrics::log_segments(files.len());
    }

    pub fn get(&self, seq: u32) -> Option<Arc<File>> {
        self.files.read().unwrap_or_else(PoisonError::into_inner).get(&seq).cloned()
    }

    pub fn remove(&self, seq: u32) {
        let mut files = self.files.write().unwrap_or_else(PoisonError::into_inner);
        files.remove(&seq);
        crate::metrics::log_segments(files.len());
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

/// Writes segment `seq` as `tmp`, a new file of `size` bytes: its header, then zeros (`zero_fill`: written,
/// so that later syncs overwrite allocated blocks) or a sparse extension (no sync mode, where
/// writing zeros would only double the bytes written); then `fdatasync`.
pub(super) fn write_new_segment(fs: &Fs, tmp: &Path, seq: u32, size: u64, zero_fill: bool) -> Result<File> {
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

/// A copy of an error for several waiters (I/O errors keep their kind and message).
pub(crate) fn clone_error(error: &Error) -> Error {
    match error {
        Error::Io { backend, path, source } => {
            Error::Io { backend, path: path.clone(), source: io::Error::new(source.kind(), source.to_string()) }
        }
        other => Error::Closed { backend: BACKEND_NAME, reason: Some(other.to_string()) },
    }
}
