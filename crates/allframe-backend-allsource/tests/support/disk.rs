//! Test support: reading a log segment's frames by the documented layout, copying a store.

#![allow(dead_code)]

use std::path::Path;

/// The frames of a segment image: (start, end, event count), read with the documented layout
/// (32-byte segment header, 40-byte frame headers starting with the payload length, the event
/// count at byte 12); the first all-zero header ends the list.
pub fn frames(bytes: &[u8]) -> Vec<(usize, usize, u64)> {
    let mut at = 32;
    let mut out = Vec::new();
    while at + 40 <= bytes.len() && bytes[at..at + 40].iter().any(|&b| b != 0) {
        let len = 40 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let count = u32::from_le_bytes(bytes[at + 12..at + 16].try_into().unwrap()) as u64;
        out.push((at, at + len, count));
        at += len;
    }
    out
}

/// Copies a closed store's files (all but `LOCK`) from `from` into the directory `to`.
pub fn copy_store(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
