//! The I/O seam: every write, sync, create and rename of the engine goes through [`Fs`],
//! which asks an optional [`IoHook`] first, so tests can inject failures such as a full disk.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// One kind of file-system operation, as seen by an [`IoHook`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum IoOp {
    /// Creating a file (log segment, snapshot file, manifest, marker).
    Create,
    /// Writing bytes (frames, zero preallocation, snapshot records).
    Write,
    /// `fdatasync` / `fsync` of a file or directory (a directory sync names the directory).
    /// A failure of a log or snapshot sync poisons the store (see the crate docs).
    Sync,
    /// Renaming a file into place.
    Rename,
}

/// A hook called before each file-system operation of the engine.
///
/// Returning an error makes the operation fail with that error, as if the OS had returned it
/// (for example `ErrorKind::StorageFull` to simulate a full disk). Used by tests; production
/// stores leave [`AllSourceConfig::io_hook`](crate::AllSourceConfig::io_hook) unset.
pub trait IoHook: Send + Sync + fmt::Debug {
    /// Called before `op` on `path`; an error aborts the operation.
    fn before(&self, op: IoOp, path: &Path) -> io::Result<()>;
}

/// File-system operations with the optional hook in front.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fs {
    pub hook: Option<Arc<dyn IoHook>>,
}

impl Fs {
    fn check(&self, op: IoOp, path: &Path) -> io::Result<()> {
        match &self.hook {
            Some(hook) => hook.before(op, path),
            None => Ok(()),
        }
    }

    /// Creates a new file for reading and writing (fails if it exists).
    pub fn create_new(&self, path: &Path) -> io::Result<File> {
        self.check(IoOp::Create, path)?;
        OpenOptions::new().read(true).write(true).create_new(true).open(path)
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_at(&self, file: &File, path: &Path, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(IoOp::Write, path)?;
        file.write_all_at(buf, offset)
    }

    /// Sets the file's length (a longer file reads as zeros past the old end).
    pub fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        self.check(IoOp::Write, path)?;
        file.set_len(len)
    }

    /// `fdatasync`.
    pub fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
        self.check(IoOp::Sync, path)?;
        file.sync_data()
    }

    /// Syncs a directory, so that created and renamed entries are durable.
    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(IoOp::Sync, dir)?;
        File::open(dir)?.sync_all()
    }

    /// Renames `from` to `to`.
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(IoOp::Rename, to)?;
        std::fs::rename(from, to)
    }

    /// Writes a whole small file durably: temporary file, fsync, rename, directory fsync.
    pub fn write_file_atomic(&self, dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
        let tmp = dir.join(format!("{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let file = self.create_new(&tmp)?;
        self.write_at(&file, &tmp, contents, 0)?;
        self.check(IoOp::Sync, &tmp)?;
        file.sync_all()?;
        drop(file);
        self.rename(&tmp, &dir.join(name))?;
        self.sync_dir(dir)
    }
}
