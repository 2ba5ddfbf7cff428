//! The in-memory index: where every frame is, each stream's positions, event ids, snapshots.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};

use allframe_cqrs_core::{AppendResult, Bytes, Error, EventId, NewEvent, Result, Snapshot, StreamId};

use crate::wal::{Failure, PendingLog};

/// Segment number used for frames held in memory (`new()` stores).
pub(crate) const MEMORY_SEGMENT: u32 = u32::MAX;

/// Where a frame's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    /// Log segment number, or [`MEMORY_SEGMENT`].
    pub segment: u32,
    /// Byte offset in the segment, or the index in `State::mem_frames`.
    pub offset: u64,
    /// Frame length in bytes, header included.
    pub len: u32,
}

/// One append as the index knows it.
#[derive(Clone, Debug)]
pub(crate) struct FrameMeta {
    pub first_position: u64,
    pub count: u32,
    pub first_version: u64,
    pub stream: StreamId,
    /// `None` until the writer has placed it in the log (pending).
    pub loc: Option<Loc>,
}

/// The whole index, behind one lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Every frame, committed then pending, in position order.
    pub frames: Vec<FrameMeta>,
    /// Per stream, the position of each version (version v at index v - 1); includes pending.
    pub streams: HashMap<StreamId, Vec<u64>, KeyedHashing>,
    /// Stream ids in byte order.
    pub stream_order: BTreeSet<StreamId>,
    /// The position of every stored (or pending) event id.
    pub ids: HashMap<EventId, u64, KeyedHashing>,
    /// The latest durable snapshot of each stream.
    pub snapshots: HashMap<StreamId, Snapshot>,
    /// Highest position handed out (committed or pending).
    pub assigned: u64,
    /// Highest committed, readable position.
    pub committed: u64,
    /// Frame bytes of an in-memory store.
    pub mem_frames: Vec<Bytes>,
    /// Set when the writer hit an I/O error: no further appends are accepted.
    pub failed: Option<String>,
    /// The write that failed, for the appenders waiting on it.
    pub failure: Option<Failure>,
    /// Frames placed but not yet written (durable stores only).
    pub log: Option<PendingLog>,
}

impl State {
    /// The stream's version counting pending appends.
    pub fn assigned_version(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |v| v.len() as u64)
    }

    /// The stream's committed version.
    pub fn committed_version(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |v| v.partition_point(|&p| p <= self.committed) as u64)
    }

    /// Index of the frame holding `position`.
    pub fn frame_index(&self, position: u64) -> Option<usize> {
        let i = self.frames.partition_point(|f| f.first_position + f.count as u64 <= position);
        self.frames.get(i).filter(|f| f.first_position <= position).map(|_| i)
    }

    /// Stream and version of the event at `position`.
    fn locate(&self, position: u64) -> Option<(StreamId, u64)> {
        let frame = &self.frames[self.frame_index(position)?];
        Some((frame.stream.clone(), frame.first_version + (position - frame.first_position)))
    }

    fn duplicate(&self, event_id: EventId, position: u64) -> Error {
        let (stored_stream, stored_version) = self.locate(position).unwrap_or_else(|| (StreamId::from("?"), 0));
        Error::DuplicateEventId { event_id, stored_stream, stored_version }
    }

    /// If every event id of the append is stored, contiguously and in order, in `stream`, the
    /// result of the original append; if none is stored, `None`; otherwise an error.
    /// (The reference semantics of the memory backend.)
    pub fn find_retry(&self, stream: &str, events: &[NewEvent]) -> Result<Option<AppendResult>> {
        let mut found = events.iter().map(|e| (e.metadata.event_id, self.ids.get(&e.metadata.event_id).copied()));
        let Some((first_id, first)) = found.next() else { return Ok(None) };
        let Some(first_position) = first else {
            return match found.find_map(|(id, position)| position.map(|p| (id, p))) {
                Some((id, position)) => Err(self.duplicate(id, position)),
                None => Ok(None),
            };
        };
        let Some((first_stream, first_version)) = self.locate(first_position) else {
            return Err(self.duplicate(first_id, first_position));
        };
        if *first_stream != *stream {
            return Err(self.duplicate(first_id, first_position));
        }
        let versions = &self.streams[stream];
        for (offset, (id, position)) in found.enumerate() {
            let expected = versions.get(first_version as usize + offset).copied();
            if position != expected || expected.is_none() {
                return Err(match position {
                    Some(position) => self.duplicate(id, position),
                    None => self.duplicate(first_id, first_position),
                });
            }
        }
        let last_version = first_version + events.len() as u64 - 1;
        Ok(Some(AppendResult {
            stream_version: last_version,
            first_position,
            last_position: versions[last_version as usize - 1],
            deduplicated: true,
        }))
    }

    /// Records a new (pending or replayed) append in the index.
    pub fn register(
        &mut self,
        stream: &str,
        first_position: u64,
        first_version: u64,
        ids: &[EventId],
        loc: Option<Loc>,
    ) {
        let stream_id = match self.streams.get_key_value(stream) {
            Some((key, _)) => key.clone(),
            None => {
                let key = StreamId::from(stream);
                self.streams.insert(key.clone(), Vec::new());
                self.stream_order.insert(key.clone());
                key
            }
        };
        let versions = self.streams.get_mut(stream).expect("stream entry was just ensured");
        for (i, id) in ids.iter().enumerate() {
            versions.push(first_position + i as u64);
            self.ids.insert(*id, first_position + i as u64);
        }
        self.frames.push(FrameMeta { first_position, count: ids.len() as u32, first_version, stream: stream_id, loc });
        self.assigned = first_position + ids.len() as u64 - 1;
    }

    /// Number of streams with at least one committed event.
    pub fn committed_streams(&self) -> u64 {
        let committed = self.committed;
        self.streams.values().filter(|v| v.first().is_some_and(|&p| p <= committed)).count() as u64
    }

    /// Keeps `snapshot` unless a higher version is stored.
    pub fn keep_snapshot(&mut self, stream: &str, snapshot: Snapshot) {
        match self.snapshots.get_mut(stream) {
            Some(stored) if stored.version > snapshot.version => {}
            Some(stored) => *stored = snapshot,
            None => {
                self.snapshots.insert(StreamId::from(stream), snapshot);
            }
        }
    }
}

/// Hashing for the index maps (event ids, stream ids): one keyed folded multiply per 8 bytes
/// (as in foldhash) at a fraction of SipHash's cost. Event ids are mostly random bytes and
/// spread well; the keys are random per process, so ids chosen by a client cannot be aimed at
/// one bucket in advance.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyedHashing {
    keys: [u64; 2],
}

impl Default for KeyedHashing {
    fn default() -> Self {
        let random = std::collections::hash_map::RandomState::new();
        KeyedHashing { keys: [random.hash_one(0x1d5u64) | 1, random.hash_one(0x2e6u64) | 1] }
    }
}

impl BuildHasher for KeyedHashing {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher { keys: self.keys, state: self.keys[0] }
    }
}

/// The hasher of [`KeyedHashing`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyedHasher {
    keys: [u64; 2],
    state: u64,
}

impl KeyedHasher {
    fn mix(&mut self, word: u64) {
        let product = u128::from(self.state ^ word) * u128::from(self.keys[1]);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_hashing_separates_ids_that_differ_in_one_byte() {
        let hashing = KeyedHashing::default();
        let base = EventId::new();
        let mut seen = std::collections::HashSet::new();
        seen.insert(hashing.hash_one(base));
        for byte in 0..16 {
            for bit in 0..8 {
                let mut bytes = *base.as_bytes();
                bytes[byte] ^= 1 << bit;
                assert!(seen.insert(hashing.hash_one(EventId(bytes))), "byte {byte} bit {bit} collides");
            }
        }
        assert_eq!(hashing.hash_one(base), hashing.hash_one(base));
    }
}
