//! The in-memory index: where every frame is, each stream's positions, event ids, snapshots.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use allframe_cqrs_core::retry::{StoredAt, resolve_retry_with};
use allframe_cqrs_core::{AppendResult, Bytes, EventId, NewEvent, Result, Snapshot, StreamId};

use crate::cold::{ColdRun, ColdSegment, StreamEntry};
use crate::poison::Poison;
use crate::segments::ParquetFiles;
use crate::wal::PendingLog;

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

/// One stream's versions: runs held in cold (Parquet) segments, then the positions of the rest.
#[derive(Debug, Default)]
pub(crate) struct StreamIndex {
    /// Runs in cold segments, in version order (all committed).
    pub cold: Vec<ColdRun>,
    /// Number of versions in `cold`.
    pub cold_versions: u64,
    /// Positions of versions `cold_versions + 1..`, committed then pending.
    pub hot: Vec<u64>,
}

impl StreamIndex {
    /// The version counting pending appends.
    pub fn assigned(&self) -> u64 {
        self.cold_versions + self.hot.len() as u64
    }

    /// The version counting appends committed up to position `committed`.
    pub fn committed(&self, committed: u64) -> u64 {
        self.cold_versions + self.hot.partition_point(|&p| p <= committed) as u64
    }
}

/// The event ids of the log tail: one exact map per log segment (newest last).
///
/// When a segment becomes cold, its whole map leaves at once ([`TailIds::take_segment`]): no
/// per-id removal under the index lock, and no map that keeps its peak size. Each new map is
/// sized from the previous segment's, so a steady stream of appends does not rehash. Each map
/// knows its largest id: a new time-ordered (UUIDv7) id is larger than all of them, so the
/// common lookup, a miss for a new event, skips every map without hashing.
#[derive(Debug, Default)]
pub(crate) struct TailIds {
    maps: Vec<TailMap>,
}

/// One log segment's event ids.
#[derive(Debug)]
pub(crate) struct TailMap {
    segment: u32,
    max_id: EventId,
    ids: HashMap<EventId, u64, KeyedHashing>,
}

impl TailIds {
    /// The position of `id`, if it is in the log tail.
    pub fn get(&self, id: &EventId) -> Option<u64> {
        self.maps.iter().rev().filter(|m| *id <= m.max_id).find_map(|m| m.ids.get(id).copied())
    }

    /// Records `ids` at consecutive positions from `first_position`, in log segment `segment`.
    pub fn insert(&mut self, segment: u32, ids: &[EventId], first_position: u64) {
        if self.maps.last().is_none_or(|m| m.segment != segment) {
            let capacity = self.maps.last().map_or(0, |m| m.ids.len());
            self.maps.push(TailMap {
                segment,
                max_id: EventId([0; 16]),
                ids: HashMap::with_capacity_and_hasher(capacity, KeyedHashing::default()),
            });
        }
        let map = self.maps.last_mut().expect("a map was just ensured");
        for (i, id) in ids.iter().enumerate() {
            map.ids.insert(*id, first_position + i as u64);
            map.max_id = map.max_id.max(*id);
        }
    }

    /// Removes the map of log segment `segment` (now cold) and returns it, to be dropped
    /// outside the index lock.
    pub fn take_segment(&mut self, segment: u32) -> Option<TailMap> {
        let i = self.maps.iter().position(|m| m.segment == segment)?;
        Some(self.maps.remove(i))
    }

    /// Number of event ids held.
    pub fn len(&self) -> usize {
        self.maps.iter().map(|m| m.ids.len()).sum()
    }
}

/// The whole index, behind one lock.
///
/// The log tail (events not yet in a Parquet segment) is indexed exactly in memory: frames,
/// positions per stream, event ids. Cold segments keep only a summary here ([`ColdSegment`],
/// per-stream [`ColdRun`]s); the rest is in their index files.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Frames of the log tail, committed then pending, in position order.
    pub frames: Vec<FrameMeta>,
    /// Per stream, where its versions are; includes pending appends.
    pub streams: HashMap<StreamId, StreamIndex, KeyedHashing>,
    /// Stream ids in byte order.
    pub stream_order: BTreeSet<StreamId>,
    /// The position of every event id of the log tail (stored or pending).
    pub ids: TailIds,
    /// Cold segments in position order.
    pub cold: Vec<Arc<ColdSegment>>,
    /// The last position held in a cold segment (0 when none).
    pub cold_head: u64,
    /// The largest event id of any cold segment: a newer time-ordered id skips them all.
    pub cold_max_id: EventId,
    /// The latest durable snapshot of each stream.
    pub snapshots: HashMap<StreamId, Snapshot>,
    /// Highest position handed out (committed or pending).
    pub assigned: u64,
    /// Highest committed, readable position.
    pub committed: u64,
    /// Frame bytes of an in-memory store.
    pub mem_frames: Vec<Bytes>,
    /// Set once an I/O call the store's durability depends on has failed: no further appends,
    /// flushes or snapshots are accepted until the store is reopened.
    pub poisoned: Option<Poison>,
    /// Frames placed but not yet written (durable stores only).
    pub log: Option<PendingLog>,
}

impl State {
    /// The stream's version counting pending appends.
    pub fn assigned_version(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, StreamIndex::assigned)
    }

    /// The stream's committed version.
    pub fn committed_version(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |s| s.committed(self.committed))
    }

    /// Index in `frames` of the (log tail) frame holding `position`.
    pub fn frame_index(&self, position: u64) -> Option<usize> {
        let i = self.frames.partition_point(|f| f.first_position + f.count as u64 <= position);
        self.frames.get(i).filter(|f| f.first_position <= position).map(|_| i)
    }

    /// The cold segment holding `position`.
    pub fn cold_segment_at(&self, position: u64) -> Option<&Arc<ColdSegment>> {
        let i = self.cold.partition_point(|s| s.last_position() < position);
        self.cold.get(i).filter(|s| s.first_position <= position)
    }

    /// The cold segment numbered `seq`.
    pub fn cold_segment(&self, seq: u32) -> Option<&Arc<ColdSegment>> {
        self.cold.binary_search_by_key(&seq, |s| s.seq).ok().map(|i| &self.cold[i])
    }

    /// The position of a stored (or pending) event id.
    pub fn find_id(&self, id: &EventId) -> Result<Option<u64>> {
        if let Some(position) = self.ids.get(id) {
            return Ok(Some(position));
        }
        if self.cold.is_empty() || *id > self.cold_max_id {
            return Ok(None);
        }
        for segment in self.cold.iter().rev() {
            if let Some(position) = segment.find(id)? {
                return Ok(Some(position));
            }
        }
        Ok(None)
    }

    /// Stream and version of the event at `position` (cold ones are read from Parquet).
    fn locate(&self, position: u64, parquet: &ParquetFiles) -> Result<Option<(StreamId, u64)>> {
        if position <= self.cold_head {
            let Some(segment) = self.cold_segment_at(position) else { return Ok(None) };
            let events = parquet.read(segment.seq, position, 1)?.unwrap_or_default();
            return Ok(events.into_iter().next().map(|e| (e.stream_id, e.version)));
        }
        let Some(index) = self.frame_index(position) else { return Ok(None) };
        let frame = &self.frames[index];
        Ok(Some((frame.stream.clone(), frame.first_version + (position - frame.first_position))))
    }

    /// Contract 9: where the append's ids are stored, decided by the core's retry rule
    /// (`retry::resolve_retry_with`). Only stored ids are located (a cold one reads its Parquet
    /// row); a new append only looks its ids up.
    pub fn find_retry(
        &self,
        stream: &str,
        events: &[NewEvent],
        parquet: &ParquetFiles,
    ) -> Result<Option<AppendResult>> {
        resolve_retry_with(stream, events, |event| self.find_event(&event.metadata.event_id, parquet))
    }

    /// Contract 13: where the event with `id` is stored (a cold one reads its Parquet row).
    pub fn find_event(&self, id: &EventId, parquet: &ParquetFiles) -> Result<Option<StoredAt>> {
        let Some(position) = self.find_id(id)? else { return Ok(None) };
        // An id whose position the index cannot place names no stream (never expected).
        let (stream, version) = self.locate(position, parquet)?.unwrap_or_else(|| (StreamId::from("?"), 0));
        Ok(Some(StoredAt { stream, version, position }))
    }

    /// Records a new (pending or replayed) append of the log tail in the index.
    pub fn register(
        &mut self,
        stream: &str,
        first_position: u64,
        first_version: u64,
        ids: &[EventId],
        loc: Option<Loc>,
    ) {
        let (stream_id, index) = self.stream_entry(stream);
        index.hot.extend((0..ids.len() as u64).map(|i| first_position + i));
        let segment = loc.map_or(MEMORY_SEGMENT, |l| l.segment);
        self.ids.insert(segment, ids, first_position);
        self.frames.push(FrameMeta { first_position, count: ids.len() as u32, first_version, stream: stream_id, loc });
        self.assigned = first_position + ids.len() as u64 - 1;
    }

    /// The stream's shared id and index entry, created if new.
    fn stream_entry(&mut self, stream: &str) -> (StreamId, &mut StreamIndex) {
        let key = match self.streams.get_key_value(stream) {
            Some((key, _)) => key.clone(),
            None => {
                let key = StreamId::from(stream);
                self.streams.insert(key.clone(), StreamIndex::default());
                self.stream_order.insert(key.clone());
                key
            }
        };
        let index = self.streams.get_mut(stream).expect("stream entry was just ensured");
        (key, index)
    }

    /// Makes `segment` cold: its streams' versions become runs of its index file, and the
    /// frames it held leave the log-tail index (its event ids by [`TailIds::take_segment`]).
    /// On open, before the log tail is replayed, this is how cold segments are loaded.
    pub fn make_cold(&mut self, segment: Arc<ColdSegment>, entries: &[StreamEntry]) -> Result<()> {
        for entry in entries {
            let index = self.streams.get(entry.stream.as_str());
            let (cold_versions, hot) = index.map_or((0, 0), |s| (s.cold_versions, s.hot.len()));
            if entry.first_version != cold_versions + 1 || (hot != 0 && hot < entry.count as usize) {
                return Err(segment.damaged(
                    0,
                    &format!(
                        "stream `{}` continues at version {}, expected {}",
                        entry.stream,
                        entry.first_version,
                        cold_versions + 1
                    ),
                ));
            }
        }
        for entry in entries {
            let (_, index) = self.stream_entry(entry.stream.as_str());
            if !index.hot.is_empty() {
                index.hot.drain(..entry.count as usize);
                if index.hot.capacity() > 4 * index.hot.len().max(4) {
                    index.hot.shrink_to_fit();
                }
            }
            index.cold.push(ColdRun {
                segment: segment.seq,
                count: entry.count,
                first_version: entry.first_version,
                row: entry.row,
            });
            index.cold_versions += u64::from(entry.count);
        }
        let last = segment.last_position();
        let tail = self.frames.partition_point(|f| f.first_position <= last);
        self.frames.drain(..tail);
        self.cold_head = last;
        self.cold_max_id = self.cold_max_id.max(segment.max_id);
        self.cold.push(segment);
        Ok(())
    }

    /// Gives back the memory of a frame list that has shrunk to under an eighth of its peak, as
    /// after a burst of appends has been converted (a `Vec` keeps its largest size otherwise).
    /// A tail that merely swings between one and two segments is left alone, so it is not
    /// regrown after every conversion. (Event ids need no such care: see [`TailIds`].)
    pub fn shrink_tail(&mut self) {
        if self.frames.len() * 8 < self.frames.capacity() {
            self.frames.shrink_to(self.frames.len() * 2);
        }
    }

    /// Bytes held by the cold segments' summaries (bloom filters and fences).
    pub fn cold_memory(&self) -> usize {
        self.cold.iter().map(|s| s.memory()).sum()
    }

    /// Number of streams with at least one committed event.
    pub fn committed_streams(&self) -> u64 {
        let committed = self.committed;
        self.streams.values().filter(|s| s.cold_versions > 0 || s.hot.first().is_some_and(|&p| p <= committed)).count()
            as u64
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
    fn tail_ids_find_ids_in_any_order_across_segments_and_forget_a_segment_whole() {
        let mut tail = TailIds::default();
        let id = |n: u8| EventId([n; 16]);
        // Segment 1 holds a large id, segment 2 smaller ones: the max-id skip must not hide them.
        tail.insert(1, &[id(9), id(3)], 1);
        tail.insert(2, &[id(1), id(5)], 3);
        assert_eq!(tail.get(&id(9)), Some(1));
        assert_eq!(tail.get(&id(3)), Some(2));
        assert_eq!(tail.get(&id(1)), Some(3));
        assert_eq!(tail.get(&id(5)), Some(4));
        assert_eq!(tail.get(&id(7)), None);
        assert_eq!(tail.get(&id(200)), None);
        assert_eq!(tail.len(), 4);
        assert!(tail.take_segment(1).is_some());
        assert_eq!(tail.get(&id(9)), None);
        assert_eq!(tail.get(&id(5)), Some(4));
        assert!(tail.take_segment(1).is_none());
        assert_eq!(tail.len(), 2);
    }

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
