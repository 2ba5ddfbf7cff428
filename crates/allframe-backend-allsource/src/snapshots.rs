//! Durable snapshots: an append-only file of CRC-checked records, compacted on open.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use allframe_cqrs_core::{Error, Result, Snapshot};

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
}

impl SnapshotFile {
    /// Opens the file, loads every record into `state` (highest version per stream wins),
    /// truncates a torn final record and compacts the file when it is mostly stale.
    pub fn open(dir: &Path, fs: &Fs, state: &mut State) -> Result<SnapshotFile> {
        let path = dir.join(SNAPSHOT_FILE);
        if !path.exists() {
            let file = fs.create_new(&path).map_err(|e| io_err(&path, e))?;
            fs.sync_dir(dir).map_err(|e| io_err(dir, e))?;
            return Ok(SnapshotFile { path, inner: Mutex::new((file, 0)) });
        }
        let buf = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        let mut at = 0;
        let mut records = 0usize;
        while at < buf.len() {
            match format::read_snapshot(&buf[at..]) {
                SnapshotRead::Record(stream, snapshot, len) => {
                    state.keep_snapshot(&stream, snapshot);
                    records += 1;
                    at += len;
                }
                SnapshotRead::Torn => {
                    tracing::warn!(file = %path.display(), offset = at, "allsource: truncating a torn final snapshot record");
                    break;
                }
                SnapshotRead::Bad(reason) => {
                    return Err(Error::Corruption {
                        backend: BACKEND_NAME,
                        file: path,
                        offset: at as u64,
                        reason: reason.into(),
                    });
                }
            }
        }
        let live = state.snapshots.len();
        if records > 2 * live + 64 {
            // Mostly superseded records: rewrite the live ones atomically.
            let mut out = Vec::new();
            let mut streams: Vec<_> = state.snapshots.iter().collect();
            streams.sort_by(|a, b| a.0.cmp(b.0));
            for (stream, snapshot) in streams {
                out.extend_from_slice(&format::encode_snapshot(stream, snapshot));
            }
            fs.write_file_atomic(dir, SNAPSHOT_FILE, &out).map_err(|e| io_err(&path, e))?;
            at = out.len();
        }
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_err(&path, e))?;
        if (at as u64) < file.metadata().map_err(|e| io_err(&path, e))?.len() {
            file.set_len(at as u64).map_err(|e| io_err(&path, e))?;
            fs.sync_data(&file, &path).map_err(|e| io_err(&path, e))?;
        }
        Ok(SnapshotFile { path, inner: Mutex::new((file, at as u64)) })
    }

    /// Appends one record; synced when `sync` is true.
    pub fn write(&self, fs: &Fs, stream: &str, snapshot: &Snapshot, sync: bool) -> Result<()> {
        let record = format::encode_snapshot(stream, snapshot);
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
