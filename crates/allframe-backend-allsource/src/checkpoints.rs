//! Durable named checkpoints (contract point 14): one small file, `CHECKPOINTS`, rewritten
//! whole on each save (`CHECKPOINTS.tmp`, synced, renamed into place, the directory synced), so
//! that after a crash it holds either every save before the last or the last too, never a mix.
//!
//! Layout (little-endian): magic `AFSRCCKP`, `u32` format version 1, `u32` count, then per
//! checkpoint `u32` name length, the name's bytes, `u64` position; last a `u32` CRC-32 of
//! everything before it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use allframe_cqrs_core::{Error, Result};

use crate::BACKEND_NAME;
use crate::io::Fs;
use crate::wal::io_err;

/// The file's name in the store's directory.
pub(crate) const CHECKPOINT_FILE: &str = "CHECKPOINTS";
const MAGIC: &[u8; 8] = b"AFSRCCKP";
const VERSION: u32 = 1;

/// The checkpoints of a store: in memory, and in its directory when it has one.
#[derive(Debug)]
pub(crate) struct Checkpoints {
    dir: Option<PathBuf>,
    /// Held across a save's write, so that saves are compare-and-set one at a time.
    map: Mutex<BTreeMap<String, u64>>,
}

impl Checkpoints {
    /// The checkpoints of an in-memory store.
    pub(crate) fn in_memory() -> Self {
        Checkpoints { dir: None, map: Mutex::default() }
    }

    /// Reads the file in `dir` (none yet: no checkpoints). A file that fails its checks is
    /// [`Error::Corruption`]: the store does not open rather than let consumers start over.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(CHECKPOINT_FILE);
        let map = match std::fs::read(&path) {
            Ok(bytes) => {
                decode(&bytes).map_err(|(offset, reason)| Error::corruption(BACKEND_NAME, &path, offset, reason))?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => return Err(io_err(&path, error)),
        };
        Ok(Checkpoints { dir: Some(dir.to_path_buf()), map: Mutex::new(map) })
    }

    /// The position of checkpoint `name`.
    pub(crate) fn load(&self, name: &str) -> Option<u64> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).get(name).copied()
    }

    /// Saves `position` under `name` if `check(current)` allows it: written to disk first,
    /// then kept; after a failed write the checkpoints stay as they were.
    pub(crate) fn save(
        &self,
        fs: &Fs,
        name: &str,
        position: u64,
        check: impl FnOnce(Option<u64>) -> Result<()>,
    ) -> Result<()> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        check(map.get(name).copied())?;
        if let Some(dir) = &self.dir {
            let mut next = map.clone();
            next.insert(name.to_owned(), position);
            fs.write_file_atomic(dir, CHECKPOINT_FILE, &encode(&next))
                .map_err(|error| io_err(&dir.join(CHECKPOINT_FILE), error))?;
        }
        map.insert(name.to_owned(), position);
        Ok(())
    }
}

fn encode(map: &BTreeMap<String, u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + map.keys().map(|name| 12 + name.len()).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (name, position) in map {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&position.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The checkpoints in `bytes`, or the offset and reason of the first thing wrong.
fn decode(bytes: &[u8]) -> std::result::Result<BTreeMap<String, u64>, (u64, String)> {
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err((0, "not a checkpoint file (magic or length)".into()));
    }
    let body = bytes.len() - 4;
    let crc = u32::from_le_bytes(bytes[body..].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..body]) != crc {
        return Err((body as u64, "checksum mismatch".into()));
    }
    let u32_at = |at: usize| -> std::result::Result<u32, (u64, String)> {
        bytes
            .get(at..at + 4)
            .filter(|_| at + 4 <= body)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
            .ok_or((at as u64, "cut short".into()))
    };
    let version = u32_at(8)?;
    if version != VERSION {
        return Err((8, format!("format version {version}, this build reads {VERSION}")));
    }
    let count = u32_at(12)?;
    let mut map = BTreeMap::new();
    let mut at = 16;
    for _ in 0..count {
        let len = u32_at(at)? as usize;
        at += 4;
        let name =
            bytes.get(at..at + len).filter(|_| at + len + 8 <= body).ok_or((at as u64, "cut short".to_owned()))?;
        let name = std::str::from_utf8(name).map_err(|_| (at as u64, "a name is not UTF-8".to_owned()))?;
        at += len;
        let position = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        at += 8;
        map.insert(name.to_owned(), position);
    }
    if at != body {
        return Err((at as u64, "bytes after the last checkpoint".into()));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_every_flipped_byte_is_refused() {
        let map: BTreeMap<String, u64> =
            [("orders".to_owned(), 17), ("é-names".to_owned(), 0), (String::new(), u64::MAX)].into_iter().collect();
        let bytes = encode(&map);
        assert_eq!(decode(&bytes).unwrap(), map);
        assert_eq!(decode(&encode(&BTreeMap::new())).unwrap(), BTreeMap::new());
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            assert!(decode(&flipped).is_err(), "a flipped byte at {at} is found");
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut to {len} bytes");
        }
    }
}
