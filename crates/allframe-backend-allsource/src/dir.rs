//! The store directory: whether a directory is ours, its lock, and creating a new store so
//! that a crash at any point of the creation leaves something the next open recognises.
//!
//! A new store is created in this order:
//!
//! 1. `ALLSOURCE.tmp` is created holding the marker's contents, synced, the directory synced;
//! 2. `LOCK` is created and locked;
//! 3. under the lock, `ALLSOURCE.tmp` is completed (its contents written again), synced, and
//!    renamed to `ALLSOURCE`, the directory synced.
//!
//! So a crash leaves an empty directory, `ALLSOURCE.tmp` holding a prefix of the marker
//! (possibly with an empty `LOCK`), or a store. Only those leftovers are taken as an unfinished
//! creation and finished; any other directory without the marker (one holding only a `LOCK`,
//! or a user's `draft.tmp`) is refused with [`Error::NotAStore`] and nothing in it is touched.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use allframe_cqrs_core::{Error, Result};

use crate::BACKEND_NAME;
use crate::io::Fs;
use crate::wal::io_err;

/// The marker file that makes a directory an AllSource store.
pub(crate) const MARKER_FILE: &str = "ALLSOURCE";
/// The marker while it is being written.
pub(crate) const MARKER_TMP: &str = "ALLSOURCE.tmp";
/// The lock file, locked with an OS lock while a process has the store open.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// What the marker holds.
pub(crate) const MARKER_CONTENTS: &[u8] = b"allframe-allsource store\nformat 1\n";

/// What a directory is, as far as opening a store in it goes.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// It has our marker.
    Store,
    /// It is empty, or holds only what an interrupted creation of a store leaves.
    Unfinished,
}

/// A locked store directory and the names of the files in it (listed under the lock).
#[derive(Debug)]
pub(crate) struct LockedDir {
    pub lock: File,
    pub names: Vec<String>,
}

/// Makes sure `dir` is a store (creating it if it is empty or an unfinished creation), locks
/// it, and lists it.
pub(crate) fn open_dir(dir: &Path, fs: &Fs) -> Result<LockedDir> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let names = list(dir)?;
    // Without the lock another open may rename or remove `ALLSOURCE.tmp` between the listing
    // and the look at it: then it has created the store, and the look under the lock decides.
    let unlocked = match classify(dir, &names) {
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        other => Some(other?),
    };
    if unlocked == Some(Kind::Unfinished) && !names.iter().any(|n| n == MARKER_TMP) {
        // Step 1: say "a store is being created here" before `LOCK` exists, so that a `LOCK`
        // alone is never ours.
        claim(dir, fs)?;
    }
    let lock = lock(dir)?;
    // Another process may have created the store (or started to) between the listing and the
    // lock: look again, now that nobody else can change it.
    let names = list(dir)?;
    if classify(dir, &names)? == Kind::Unfinished {
        finish_marker(dir, fs)?;
        return Ok(LockedDir { lock, names: list(dir)? });
    }
    Ok(LockedDir { lock, names })
}

fn list(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort_unstable();
    Ok(names)
}

fn not_a_store(dir: &Path, reason: String) -> Error {
    Error::NotAStore { backend: BACKEND_NAME, path: dir.to_path_buf(), reason }
}

/// Decides what `dir` (holding `names`) is, reading only the marker, the lock file's length and
/// a leftover `ALLSOURCE.tmp`; refuses a directory that is neither a store nor ours to create.
fn classify(dir: &Path, names: &[String]) -> Result<Kind> {
    if names.iter().any(|n| n == MARKER_FILE) {
        let marker = dir.join(MARKER_FILE);
        let contents = std::fs::read(&marker).map_err(|e| io_err(&marker, e))?;
        if contents != MARKER_CONTENTS {
            return Err(not_a_store(dir, "the ALLSOURCE marker has an unknown format".into()));
        }
        return Ok(Kind::Store);
    }
    if let Some(foreign) = names.iter().find(|n| *n != LOCK_FILE && *n != MARKER_TMP) {
        return Err(not_a_store(
            dir,
            format!("the directory is not empty and has no ALLSOURCE marker (found `{foreign}`)"),
        ));
    }
    if names.iter().any(|n| n == LOCK_FILE) {
        if !names.iter().any(|n| n == MARKER_TMP) {
            // A creation makes `ALLSOURCE.tmp` before `LOCK`: this `LOCK` is not ours.
            return Err(not_a_store(dir, "the directory holds a `LOCK` file but no ALLSOURCE marker".into()));
        }
        let path = dir.join(LOCK_FILE);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io_err(&path, e))?;
        if !meta.is_file() || meta.len() != 0 {
            // Ours is always an empty regular file.
            return Err(not_a_store(dir, "the directory holds a `LOCK` file that is not an AllSource lock".into()));
        }
    }
    if names.iter().any(|n| n == MARKER_TMP) {
        let path = dir.join(MARKER_TMP);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io_err(&path, e))?;
        let ours = meta.is_file()
            && meta.len() <= MARKER_CONTENTS.len() as u64
            && MARKER_CONTENTS.starts_with(&std::fs::read(&path).map_err(|e| io_err(&path, e))?);
        if !ours {
            return Err(not_a_store(
                dir,
                "the directory holds an `ALLSOURCE.tmp` that is not an unfinished AllSource marker".into(),
            ));
        }
    }
    Ok(Kind::Unfinished)
}

/// Step 1 of a creation: `ALLSOURCE.tmp` with the marker's contents, durable before `LOCK` is.
fn claim(dir: &Path, fs: &Fs) -> Result<()> {
    let tmp = dir.join(MARKER_TMP);
    let file = match fs.create_new(&tmp) {
        Ok(file) => file,
        // Another process claimed it first; the lock decides who finishes.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_err(&tmp, e)),
    };
    fs.write_at(&file, &tmp, MARKER_CONTENTS, 0).map_err(|e| io_err(&tmp, e))?;
    fs.sync_data(&file, &tmp).map_err(|e| io_err(&tmp, e))?;
    fs.sync_dir(dir).map_err(|e| io_err(dir, e))
}

/// Step 2: creates (if needed) and locks `LOCK`.
fn lock(dir: &Path) -> Result<File> {
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| io_err(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path: dir.to_path_buf(), source: None }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::Locked { path: dir.to_path_buf(), source: Some(Box::new(e)) })
        }
    }
}

/// Step 3, under the lock: completes `ALLSOURCE.tmp` (which holds a prefix of the marker, or
/// is missing), syncs it and renames it into place. Never removes the file first, so no crash
/// leaves `LOCK` alone.
fn finish_marker(dir: &Path, fs: &Fs) -> Result<()> {
    let tmp = dir.join(MARKER_TMP);
    let file = match OpenOptions::new().write(true).open(&tmp) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs.create_new(&tmp).map_err(|e| io_err(&tmp, e))?,
        Err(e) => return Err(io_err(&tmp, e)),
    };
    fs.write_at(&file, &tmp, MARKER_CONTENTS, 0).map_err(|e| io_err(&tmp, e))?;
    fs.sync_data(&file, &tmp).map_err(|e| io_err(&tmp, e))?;
    drop(file);
    let marker = dir.join(MARKER_FILE);
    fs.rename(&tmp, &marker).map_err(|e| io_err(&marker, e))?;
    fs.sync_dir(dir).map_err(|e| io_err(dir, e))
}
