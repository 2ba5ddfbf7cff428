//! Telling a store from a new or foreign directory, and creating stores so that a process
//! killed at any point of a first open leaves a directory the next open creates again.
//!
//! RocksDB creates a database in several steps (its `LOG`, a manifest, `CURRENT`, then each
//! missing column family), and the store's format marker is written after all of them. A
//! kill in between used to leave a directory that every later open refused. Now a creation
//! first writes (and syncs) an intent file, [`CREATING`], into the empty directory, and
//! removes it only once the database, its column families and the marker are synced. An
//! open that finds the intent file knows the directory holds nothing but an unfinished
//! creation (nothing can have been appended: that open never returned), deletes RocksDB's
//! files and creates the store again. Directories without the intent file are judged as
//! before: RocksDB databases without our column families, and directories with other files,
//! are refused and left untouched.
//!
//! Every open looks at the directory under an exclusive lock on the directory itself, and a
//! creation holds it until the intent file is gone, so an open never mistakes another
//! opener's creation in progress for one cut short (it gets [`Error::Locked`] instead).

use std::fs::File;
use std::path::{Path, PathBuf};

use allframe_cqrs_core::{Error, Result};
use rocksdb::{DB, Options};

use crate::{BACKEND_NAME, layout};

/// Name of the intent file that marks a creation in progress (or cut short).
pub(crate) const CREATING: &str = "ALLFRAME-CREATING";

/// What the intent file says, for whoever looks into the directory.
const CREATING_TEXT: &[u8] = b"An AllFrame CQRS RocksDB store is being created in this directory. \
If no process is creating it, the next open deletes the RocksDB files here and creates it again.\n";

/// What [`inspect`] found at a store's path. Either keeps the directory locked until dropped.
#[derive(Debug)]
pub(crate) enum Found {
    /// A RocksDB database with every column family of a store (and no unfinished creation).
    Store { _lock: DirLock },
    /// A directory ready for a new store; the creation is finished with [`Creation::finish`].
    New(Creation),
}

/// The exclusive lock on a store's directory (`None` where the filesystem cannot lock one).
#[derive(Debug)]
pub(crate) struct DirLock {
    _dir: Option<File>,
}

/// A creation in progress: the intent file is written; [`Creation::finish`] removes it.
/// Dropped unfinished, it leaves the file for the next open to start over.
#[derive(Debug)]
pub(crate) struct Creation {
    dir: PathBuf,
    _lock: DirLock,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |error| Error::io(BACKEND_NAME, Some(path.to_path_buf()), error)
}

fn not_a_store(path: &Path, reason: String) -> Error {
    Error::NotAStore { backend: BACKEND_NAME, path: path.to_path_buf(), reason }
}

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Creation {
    /// Marks the creation done: the database and its marker are synced, so the intent file
    /// goes (and that removal is synced before the store is used). The directory stays locked
    /// until the creation is dropped, which the caller does after closing the database if it
    /// fails, so that no other open takes the creation over while the database is open.
    pub(crate) fn finish(&self) -> Result<()> {
        sync_dir(&self.dir)?;
        let intent = self.dir.join(CREATING);
        match std::fs::remove_file(&intent) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io(&intent)(error)),
        }
        sync_dir(&self.dir)
    }
}

/// Locks the directory `path` for this open's look (and creation). Held by another open, in
/// this process or another: [`Error::Locked`].
///
/// A lock that was just released can still look held for a moment: a process forked by this
/// one (any `std::process::Command`) holds a copy of every open descriptor, the lock's
/// included, until it executes its program. So a held lock is tried again for a short while
/// before the open gives up.
fn lock_dir(path: &Path) -> Result<DirLock> {
    const PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);
    let dir = File::open(path).map_err(io(path))?;
    let started = std::time::Instant::now();
    loop {
        match dir.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < PATIENCE => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            locked => return locked_or_not(path, dir, locked),
        }
    }
}

fn locked_or_not(path: &Path, dir: File, locked: std::result::Result<(), std::fs::TryLockError>) -> Result<DirLock> {
    match locked {
        Ok(()) => Ok(DirLock { _dir: Some(dir) }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: path.to_path_buf(),
            source: Some("another open of the store is looking at or creating it".into()),
        }),
        // A filesystem that cannot lock directories (some network filesystems): opens there
        // are not guarded against each other, as before; RocksDB's own lock still applies.
        Err(std::fs::TryLockError::Error(_)) => Ok(DirLock { _dir: None }),
    }
}

/// Whether `path` holds a store, is (or is made) ready for a new one, or is something else
/// ([`Error::NotAStore`]).
pub(crate) fn inspect(path: &Path) -> Result<Found> {
    match std::fs::metadata(path) {
        Ok(metadata) if !metadata.is_dir() => {
            return Err(not_a_store(path, "it is a file, not a directory".into()));
        }
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path).map_err(io(path))?;
            if let Some(parent) = path.parent() {
                sync_dir(if parent.as_os_str().is_empty() { Path::new(".") } else { parent })?;
            }
        }
        Err(error) => return Err(io(path)(error)),
    }
    let lock = lock_dir(path)?;
    if path.join(CREATING).try_exists().map_err(io(path))? {
        return resume(path, lock);
    }
    if path.join("CURRENT").is_file() {
        let families = DB::list_cf(&Options::default(), path).map_err(|e| crate::open_error(path, e))?;
        let missing: Vec<&str> =
            layout::ALL_CFS.iter().copied().filter(|name| !families.iter().any(|f| f == name)).collect();
        if !missing.is_empty() {
            return Err(not_a_store(
                path,
                format!("a RocksDB database without the AllFrame column families {missing:?} (it has {families:?})"),
            ));
        }
        let unknown: Vec<&String> = families.iter().filter(|f| !layout::ALL_CFS.contains(&f.as_str())).collect();
        if !unknown.is_empty() {
            return Err(not_a_store(
                path,
                format!("a RocksDB database with column families {unknown:?} of another program"),
            ));
        }
        return Ok(Found::Store { _lock: lock });
    }
    if std::fs::read_dir(path).map_err(io(path))?.next().is_some() {
        return Err(not_a_store(path, "a non-empty directory that is not a RocksDB database".into()));
    }
    begin(path, lock)
}

/// Starts a creation in the empty directory `path`: writes the intent file and syncs it.
fn begin(path: &Path, lock: DirLock) -> Result<Found> {
    let intent = path.join(CREATING);
    std::fs::write(&intent, CREATING_TEXT)
        .and_then(|()| File::open(&intent).and_then(|f| f.sync_all()))
        .map_err(io(&intent))?;
    sync_dir(path)?;
    Ok(Found::New(Creation { dir: path.to_path_buf(), _lock: lock }))
}

/// Takes over a creation that was cut short (no open holds the directory's lock, so its
/// process is gone): deletes what RocksDB wrote and starts again. Any other file in the
/// directory makes it [`Error::NotAStore`], and nothing is deleted.
fn resume(path: &Path, lock: DirLock) -> Result<Found> {
    let mut doomed = Vec::new();
    let mut foreign = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io(path))? {
        let entry = entry.map_err(io(path))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == CREATING {
            continue;
        }
        let is_file = entry.file_type().map_err(io(path))?.is_file();
        if is_file && is_rocksdb_file(&name) {
            doomed.push(entry.path());
        } else {
            foreign.push(name.into_owned());
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        return Err(not_a_store(
            path,
            format!("an unfinished store creation ({CREATING}) beside files that are not RocksDB's: {foreign:?}"),
        ));
    }
    // `CURRENT` first, so that a half-deleted database is never a whole one with files missing.
    doomed.sort_by_key(|p| p.file_name().is_none_or(|n| n != "CURRENT"));
    for file in &doomed {
        match std::fs::remove_file(file) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io(file)(error)),
        }
    }
    sync_dir(path)?;
    Ok(Found::New(Creation { dir: path.to_path_buf(), _lock: lock }))
}

/// Whether `name` is a file RocksDB writes into a database directory.
fn is_rocksdb_file(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let numbered = |s: &str| digits(s.strip_suffix(".dbtmp").unwrap_or(s));
    match name {
        "CURRENT" | "IDENTITY" | "LOCK" | "LOG" => true,
        _ if name.starts_with("LOG.old.") => true,
        _ => {
            if let Some(rest) = name.strip_prefix("MANIFEST-").or_else(|| name.strip_prefix("OPTIONS-")) {
                return numbered(rest);
            }
            match name.rsplit_once('.') {
                Some((number, "log" | "sst" | "dbtmp" | "blob" | "ldb")) => digits(number),
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_file_names() {
        for name in [
            "CURRENT",
            "IDENTITY",
            "LOCK",
            "LOG",
            "LOG.old.1700000000000000",
            "MANIFEST-000005",
            "OPTIONS-000007",
            "OPTIONS-000007.dbtmp",
            "000001.dbtmp",
            "000004.log",
            "000012.sst",
        ] {
            assert!(is_rocksdb_file(name), "{name}");
        }
        for name in ["notes.txt", "MANIFEST-", "x.log", ".sst", "CURRENT.bak", "000004.log.1", "OPTIONS-12a"] {
            assert!(!is_rocksdb_file(name), "{name}");
        }
    }
}
