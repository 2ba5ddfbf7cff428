//! Durable snapshots: an append-only file of CRC-checked records, compacted on open.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use allframe_cqrs_core::{Error, Result, Snapshot, StreamId};

use crate::BACKEND_NAME;
use crate::format::{self, SnapshotRead};
use crate::io::Fs;
use crate::state::State;
use crate::wal::{SNAPSHOT_FILE, io_err};

/// The snapshot file of a durable store.
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    path: PathBuf,
    inner: Mutex<(File, u64)>,
    report: SnapshotReport,
}

/// What opening the snapshot file repaired, reported by `stats()`.
#[derive(Clone, Debug, Default)]
pub(crate) struct SnapshotReport {
    /// Records newer than their stream as recovered (saved in a mode that does not sync, the
    /// events they cover were lost with the power), dropped.
    pub dropped_ahead: u64,
    /// `(offset, bytes removed)` of a torn final record (or zeros) cut off the file.
    pub torn_tail: Option<(u64, u64)>,
}

/// Sector size assumed for torn writes: a power cut keeps or loses each sector of a write.
const SECTOR: usize = 512;

impl SnapshotFile {
    /// Opens the file, loads every record into `state` (highest version per stream wins, and
    /// never one above the stream's recovered version), truncates a torn final record and
    /// compacts the file when it is mostly stale or held dropped records.
    ///
    /// `state` must hold the recovered log (it is called after the log's recovery);
    /// `synchronous`: the store syncs each record as it is written.
    pub fn open(dir: &Path, fs: &Fs, state: &mut State, synchronous: bool) -> Result<SnapshotFile> {
        let path = dir.join(SNAPSHOT_FILE);
        let mut report = SnapshotReport::default();
        if !path.exists() {
            let file = fs.create_new(&path).map_err(|e| io_err(&path, e))?;
            fs.sync_dir(dir).map_err(|e| io_err(dir, e))?;
            return Ok(SnapshotFile { path, inner: Mutex::new((file, 0)), report });
        }
        let buf = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        let mut at = 0;
        let mut records = 0usize;
        while at < buf.len() {
            match format::read_snapshot(&buf[at..]) {
                SnapshotRead::Record(stream, snapshot, len) => {
                    let recovered = state.assigned_version(&stream);
                    if snapshot.version > recovered {
                        tracing::warn!(
                            file = %path.display(),
                            offset = at,
                            stream,
                            snapshot_version = snapshot.version,
                            stream_version = recovered,
                            "allsource: dropping a snapshot newer than its recovered stream (its events were not durable)"
                        );
                        report.dropped_ahead += 1;
                    } else {
                        state.keep_snapshot(&stream, snapshot);
                    }
                    records += 1;
                    at += len;
                }
                // Cut short by the end of the file: a torn final record, unless a whole record
                // follows (then its length field is damaged, and cutting there would lose them).
                SnapshotRead::Torn if next_record(&buf, at + 1).is_none() => {
                    report.torn_tail = Some((at as u64, (buf.len() - at) as u64));
                    break;
                }
                SnapshotRead::Torn => {
                    return Err(Error::Corruption {
                        backend: BACKEND_NAME,
                        file: path,
                        offset: at as u64,
                        reason: "snapshot record length runs past the end of the file, and records follow".into(),
                    });
                }
                SnapshotRead::Bad(reason) => {
                    // A torn record is the last one, unless records are written without a sync
                    // each: then a power cut may tear one and keep a later one (both unsynced,
                    // since a synced record is never torn), and the tail from it is cut off.
                    let later = next_record(&buf, at + 1);
                    let torn = torn_shaped(&buf, at, later, reason)
                        && match later {
                            None => true,
                            Some(later) if !synchronous => {
                                tracing::warn!(
                                    file = %path.display(),
                                    offset = at,
                                    later_record = later,
                                    "allsource: a power cut tore an unsynced snapshot record; dropping it and the records after it"
                                );
                                true
                            }
                            Some(_) => false,
                        };
                    if torn {
                        report.torn_tail = Some((at as u64, (buf.len() - at) as u64));
                        break;
                    }
                    return Err(Error::Corruption {
                        backend: BACKEND_NAME,
                        file: path,
                        offset: at as u64,
                        reason: reason.into(),
                    });
                }
            }
        }
        if let Some((offset, bytes)) = report.torn_tail {
            tracing::warn!(
                file = %path.display(),
                offset,
                bytes,
                "allsource: truncating a torn final snapshot record left by a crash"
            );
        }
        let live = state.snapshots.len();
        if records > 2 * live + 64 || report.dropped_ahead > 0 {
            // Mostly superseded records, or records that must not come back once the stream
            // grows past them again: rewrite the live ones atomically.
            let mut out = Vec::new();
            let mut streams: Vec<_> = state.snapshots.iter().collect();
            streams.sort_by(|a, b| a.0.cmp(b.0));
            for (stream, snapshot) in streams {
                let record = format::encode_snapshot(stream, snapshot).map_err(|reason| invalid(stream, reason))?;
                out.extend_from_slice(&record);
            }
            fs.write_file_atomic(dir, SNAPSHOT_FILE, &out).map_err(|e| io_err(&path, e))?;
            at = out.len();
        }
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_err(&path, e))?;
        if (at as u64) < file.metadata().map_err(|e| io_err(&path, e))?.len() {
            file.set_len(at as u64).map_err(|e| io_err(&path, e))?;
            fs.sync_data(&file, &path).map_err(|e| io_err(&path, e))?;
        }
        Ok(SnapshotFile { path, inner: Mutex::new((file, at as u64)), report })
    }

    /// What opening the file repaired.
    pub fn report(&self) -> &SnapshotReport {
        &self.report
    }

    /// Refuses a snapshot the record format cannot hold (its length field is 32 bits), before
    /// anything is written.
    pub fn check_fits(stream: &str, snapshot: &Snapshot) -> Result<()> {
        format::snapshot_record_len(stream, snapshot).map(|_| ()).map_err(|reason| invalid(stream, reason))
    }

    /// Appends one record; synced when `sync` is true.
    pub fn write(&self, fs: &Fs, stream: &str, snapshot: &Snapshot, sync: bool) -> Result<()> {
        let record = format::encode_snapshot(stream, snapshot).map_err(|reason| invalid(stream, reason))?;
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (file, end) = &mut *guard;
        let result = fs.write_at(file, &self.path, &record, *end).and_then(|()| match sync {
            true => fs.sync_data(file, &self.path),
            false => Ok(()),
        });
        match result {
            Ok(()) => {
                *end += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut off whatever part of the record reached the file, so the next one is whole.
                let _ = file.set_len(*end);
                Err(io_err(&self.path, e))
            }
        }
    }

    /// Forces the file to disk.
    pub fn sync(&self, fs: &Fs) -> Result<()> {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        fs.sync_data(&guard.0, &self.path).map_err(|e| io_err(&self.path, e))
    }
}

fn invalid(stream: &str, reason: &str) -> Error {
    Error::InvalidSnapshot { stream: StreamId::from(stream), reason: reason.into() }
}

/// Whether the record at `buf[at..]`, which fails its checksum, looks like a write a power
/// cut interrupted rather than damaged bytes: one of its pieces between sector boundaries of
/// the file is all zeros (a sector that never reached the disk reads as zeros; a flipped bit
/// leaves no such piece). The record runs to its stated length, or to the end of the file if
/// its header is zeros (its length is lost with it); a sector holding the start of a `later`
/// whole record reached the disk, so pieces from there on do not count.
fn torn_shaped(buf: &[u8], at: usize, later: Option<usize>, reason: &str) -> bool {
    let rest = &buf[at..];
    let header_zero = rest[..8.min(rest.len())].iter().all(|&b| b == 0);
    if !header_zero && reason != format::SNAPSHOT_CHECKSUM_MISMATCH {
        return false;
    }
    let mut end = if header_zero { buf.len() } else { at + (8 + format::u32_at(rest, 0) as usize).min(rest.len()) };
    if let Some(later) = later {
        end = end.min(later / SECTOR * SECTOR);
    }
    zeroed_piece(buf, at, end)
}

/// Whether a piece of `buf[from..end]` between `SECTOR` boundaries is all zeros.
fn zeroed_piece(buf: &[u8], from: usize, end: usize) -> bool {
    let mut start = from;
    while start < end {
        let piece_end = ((start / SECTOR + 1) * SECTOR).min(end);
        if buf[start..piece_end].iter().all(|&b| b == 0) {
            return true;
        }
        start = piece_end;
    }
    false
}

/// The offset of the first whole, checksummed record starting at or after `from`.
fn next_record(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find(|&at| {
        let rest = &buf[at..];
        if rest.len() < 28 {
            return false;
        }
        // Cheap checks first: a plausible length and stream id length.
        let body_len = format::u32_at(rest, 0) as usize;
        if body_len < 20 || rest.len() - 8 < body_len || format::u32_at(rest, 8) as usize > body_len - 20 {
            return false;
        }
        matches!(format::read_snapshot(rest), SnapshotRead::Record(..))
    })
}
