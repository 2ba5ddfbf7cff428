//! # AllFrame CQRS: the in-memory backend
//!
//! [`InMemoryBackend`] keeps every event in process memory. It is the default backend of
//! [`EventStore`], needs no configuration, keeps the whole contract of
//! [`EventStoreBackend`], and is the reference model the other backends are tested against.
//! Nothing survives the process ([`Durability::Volatile`]).
//!
//! ```
//! use allframe_backend_memory::{EventStore, InMemoryEventStore};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
//! # struct Pinged;
//! # impl allframe_cqrs_core::Event for Pinged { fn event_type(&self) -> &'static str { "Pinged" } }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = EventStore::new();
//! store.append("ping-1", vec![Pinged]).await?;
//! assert_eq!(store.get_events("ping-1").await?, vec![Pinged]);
//! # Ok::<(), allframe_cqrs_core::Error>(()) }).unwrap();
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use allframe_cqrs_core::retry::{StoredAt, resolve_retry_with};
use allframe_cqrs_core::{
    AppendResult, BackendStats, Capabilities, CommitSignal, Durability, EventId, EventStoreBackend, ExpectedVersion,
    Limits, NewEvent, RecordedEvent, Result, Snapshot, StreamId, async_trait,
};
use bytes::{Bytes, BytesMut};

/// The backend's name in logs, errors and stats.
pub const BACKEND_NAME: &str = "memory";

/// The typed store, with the in-memory backend as the default type parameter.
///
/// `EventStore<MyEvent>` names a memory-backed store in type position; in expressions,
/// `EventStore::new()` needs [`InMemoryEventStore`] in scope.
pub type EventStore<E, B = InMemoryBackend> = allframe_cqrs_core::EventStore<E, B>;

/// `EventStore::new()` for the in-memory backend (the seed's zero-configuration start).
///
/// A trait, because the typed store lives in the core crate, which does not know this
/// backend; with exactly one implementation, `EventStore::new()` infers the backend.
pub trait InMemoryEventStore {
    /// A store over a new, empty [`InMemoryBackend`].
    fn new() -> Self;
}

impl<E: allframe_cqrs_core::Event> InMemoryEventStore for allframe_cqrs_core::EventStore<E, InMemoryBackend> {
    fn new() -> Self {
        allframe_cqrs_core::EventStore::with_backend(InMemoryBackend::new())
    }
}

/// An event store held in process memory.
#[derive(Debug, Default)]
pub struct InMemoryBackend {
    state: RwLock<State>,
    signal: CommitSignal,
    limits: Limits,
}

/// Elements per chunk of a [`Chunked`] vector. Each stream and the log grow chunk by chunk,
/// so growing one never copies more than one chunk while the write lock is held (a single
/// `Vec` would copy the whole stream).
const CHUNK: usize = 4096;

/// Events [`EventStoreBackend::visit_stream`] lends under one hold of the read lock: with JSON
/// decoding (about 0.2 µs an event) appends wait at most some tens of microseconds.
const VISIT_CHUNK: usize = 128;

/// Id-index shards: each rehashes on its own, so growth never rehashes every id at once.
const ID_SHARDS: usize = 64;

/// A vector in chunks of [`CHUNK`] elements.
#[derive(Debug)]
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked { chunks: Vec::new(), len: 0 }
    }
}

impl<T> Chunked<T> {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(value),
            _ => self.chunks.push(vec![value]),
        }
        self.len += 1;
    }

    fn get(&self, index: usize) -> &T {
        &self.chunks[index / CHUNK][index % CHUNK]
    }

    fn last(&self) -> Option<&T> {
        self.chunks.last().and_then(|chunk| chunk.last())
    }

    fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> {
        let (chunk, offset) = (start / CHUNK, start % CHUNK);
        let first = self.chunks.get(chunk).map(|c| &c[offset.min(c.len())..]).unwrap_or_default();
        first.iter().chain(self.chunks.iter().skip(chunk + 1).flatten())
    }
}

/// One stream: its events in version order (version v at index v - 1), and the buffer their
/// payloads are copied into, so that a stream's payloads sit together in memory too.
#[derive(Debug, Default)]
struct Stream {
    events: Chunked<RecordedEvent>,
    payloads: BytesMut,
    /// The capacity the current payload buffer was made with.
    payloads_size: usize,
}

/// The first payload buffer of a stream, in bytes; each next one doubles, up to [`PAYLOAD_BUFFER_MAX`].
const PAYLOAD_BUFFER_MIN: usize = 256;

/// The largest payload buffer (a larger payload gets one of its own size).
const PAYLOAD_BUFFER_MAX: usize = 64 * 1024;

impl Stream {
    /// A copy of `payload` in the stream's buffer. Buffers grow with the stream, so a small
    /// stream wastes little and a large one reads its payloads from few buffers.
    fn keep(&mut self, payload: &[u8]) -> Bytes {
        if self.payloads.capacity() < payload.len() {
            let next = (self.payloads_size * 2).clamp(PAYLOAD_BUFFER_MIN, PAYLOAD_BUFFER_MAX);
            self.payloads_size = next;
            self.payloads = BytesMut::with_capacity(next.max(payload.len()));
        }
        self.payloads.extend_from_slice(payload);
        self.payloads.split().freeze()
    }
}

/// Where the event at one position is: its stream's slot and its index there (version - 1).
#[derive(Clone, Copy, Debug)]
struct Location {
    slot: usize,
    index: usize,
}

/// Where each event id is stored (its position - 1), in [`ID_SHARDS`] shards.
#[derive(Debug)]
struct IdIndex(Vec<HashMap<EventId, usize>>);

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex((0..ID_SHARDS).map(|_| HashMap::new()).collect())
    }
}

impl IdIndex {
    fn shard(id: &EventId) -> usize {
        id.0[15] as usize % ID_SHARDS
    }

    fn get(&self, id: &EventId) -> Option<&usize> {
        self.0[Self::shard(id)].get(id)
    }

    fn insert(&mut self, id: EventId, index: usize) {
        self.0[Self::shard(&id)].insert(id, index);
    }
}

/// The store. Events are kept by stream, each stream's in version order, so that reading a
/// stream (an aggregate load) walks memory in order however the streams' appends were
/// interleaved; the log keeps, in position order, where each event is.
#[derive(Debug, Default)]
struct State {
    /// Every stream, by slot (in creation order).
    streams: Vec<Stream>,
    /// The slot of each stream.
    slots: HashMap<StreamId, usize>,
    /// The event at position p is at `log[p - 1]`.
    log: Chunked<Location>,
    /// Stream ids in order, for `list_streams`.
    stream_order: BTreeSet<StreamId>,
    /// Where each event id is stored (position - 1).
    ids: IdIndex,
    snapshots: HashMap<StreamId, Snapshot>,
    /// Named checkpoints (contract point 14). A position here is at most the log's length, a
    /// `usize`: the map has the type of `slots`, so it adds no map code to the binary.
    checkpoints: HashMap<StreamId, usize>,
}

impl InMemoryBackend {
    /// An empty store with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        InMemoryBackend { limits, ..Self::default() }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Where an event's id is stored, for the core's retry rule (contract 9).
    fn stored_at(&self, event: &NewEvent) -> Option<StoredAt> {
        self.find(&event.metadata.event_id)
    }

    fn find(&self, id: &EventId) -> Option<StoredAt> {
        self.ids.get(id).map(|&index| {
            let stored = self.at(index);
            StoredAt { stream: stored.stream_id.clone(), version: stored.version, position: stored.position }
        })
    }

    /// The event at position `index + 1`.
    fn at(&self, index: usize) -> &RecordedEvent {
        let Location { slot, index } = *self.log.get(index);
        self.streams[slot].events.get(index)
    }

    /// A stream's events, if it exists.
    fn stream(&self, stream: &str) -> Option<&Chunked<RecordedEvent>> {
        self.slots.get(stream).map(|&slot| &self.streams[slot].events)
    }

    fn stream_version(&self, stream: &str) -> u64 {
        self.stream(stream).map_or(0, |events| events.len() as u64)
    }
}

#[async_trait]
impl EventStoreBackend for InMemoryBackend {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::full(Durability::Volatile, false)
    }

    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult> {
        // Nothing here waits, so without this a task appending in a loop would keep its worker
        // forever: timers and other tasks would starve. Yields once the task's budget is spent.
        tokio::task::consume_budget().await;
        self.limits.check_append(stream, &events)?;
        let mut guard = self.write();
        let state = &mut *guard;
        if let Some(original) = resolve_retry_with(stream, &events, |event| Ok(state.stored_at(event)))? {
            return Ok(original);
        }
        let State { streams, slots, log, stream_order, ids, .. } = state;
        // One lookup of the stream for the check and the write.
        let found = slots.get(stream).copied();
        let current = found.map_or(0, |slot| streams[slot].events.len() as u64);
        expected.check(stream, current)?;
        if events.is_empty() {
            return Ok(AppendResult { stream_version: current, ..AppendResult::default() });
        }
        // The records' stream id is one shared string per stream, the one its slot is found by.
        let (slot, stream_id) = match found {
            Some(slot) => {
                let last = streams[slot].events.last();
                let id = last.map_or_else(|| StreamId::from(stream), |last| last.stream_id.clone());
                (slot, id)
            }
            None => {
                let key = StreamId::from(stream);
                stream_order.insert(key.clone());
                slots.insert(key.clone(), streams.len());
                streams.push(Stream::default());
                (streams.len() - 1, key)
            }
        };
        let stored = &mut streams[slot];
        let first_index = log.len();
        for (offset, event) in events.into_iter().enumerate() {
            let position = first_index + offset;
            ids.insert(event.metadata.event_id, position);
            log.push(Location { slot, index: stored.events.len() });
            let payload = stored.keep(&event.payload);
            stored.events.push(RecordedEvent {
                stream_id: stream_id.clone(),
                version: current + offset as u64 + 1,
                position: position as u64 + 1,
                event_type: event.event_type,
                payload,
                metadata: event.metadata,
            });
        }
        let result = AppendResult {
            stream_version: stored.events.len() as u64,
            first_position: first_index as u64 + 1,
            last_position: log.len() as u64,
            deduplicated: false,
        };
        drop(guard);
        self.signal.publish(result.last_position);
        Ok(result)
    }

    async fn read_stream(&self, stream: &str, after_version: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let state = self.read();
        let Some(events) = state.stream(stream) else { return Ok(Vec::new()) };
        let start = (after_version as usize).min(events.len());
        Ok(events.iter_from(start).take(limit).cloned().collect())
    }

    async fn visit_stream(
        &self,
        stream: &str,
        after_version: u64,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<usize> {
        // The events are lent where they are, under the read lock, a chunk at a time: an
        // aggregate load copies nothing, and a long one never keeps appends out for long.
        // Stored events never move or change, so the read goes on where the last chunk ended.
        let mut visited = 0;
        while visited < limit {
            let state = self.read();
            let Some(events) = state.stream(stream) else { break };
            let start = (after_version as usize).saturating_add(visited).min(events.len());
            let mut lent = 0;
            for event in events.iter_from(start).take((limit - visited).min(VISIT_CHUNK)) {
                visit(event)?;
                lent += 1;
            }
            visited += lent;
            if lent < VISIT_CHUNK {
                break;
            }
        }
        Ok(visited)
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let state = self.read();
        let start = (after_position as usize).min(state.log.len());
        Ok(state
            .log
            .iter_from(start)
            .take(limit)
            .map(|&Location { slot, index }| state.streams[slot].events.get(index).clone())
            .collect())
    }

    async fn stream_version(&self, stream: &str) -> Result<u64> {
        Ok(self.read().stream_version(stream))
    }

    async fn head_position(&self) -> Result<u64> {
        Ok(self.read().log.len() as u64)
    }

    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>> {
        let state = self.read();
        Ok(allframe_cqrs_core::read::streams_after(&state.stream_order, after)
            .take(limit)
            .map(|id| (id.clone(), state.stream_version(id)))
            .collect())
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()> {
        self.limits.check_snapshot(stream, &snapshot)?;
        let mut state = self.write();
        let current = state.stream_version(stream);
        snapshot.check_version(stream, current)?;
        match state.snapshots.get_mut(stream) {
            Some(stored) if stored.version > snapshot.version => {}
            Some(stored) => *stored = snapshot,
            None => {
                state.snapshots.insert(StreamId::from(stream), snapshot);
            }
        }
        Ok(())
    }

    async fn get_latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        Ok(self.read().snapshots.get(stream).cloned())
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    async fn find_event(&self, id: EventId) -> Result<Option<StoredAt>> {
        Ok(self.read().find(&id))
    }

    async fn stats(&self) -> Result<BackendStats> {
        let state = self.read();
        let mut stats = BackendStats::new(BACKEND_NAME, Durability::Volatile);
        stats.events = state.log.len() as u64;
        stats.streams = state.streams.len() as u64;
        stats.snapshots = state.snapshots.len() as u64;
        stats.head_position = state.log.len() as u64;
        let payload_bytes: usize =
            state.streams.iter().flat_map(|stream| stream.events.iter_from(0)).map(|e| e.payload.len()).sum();
        stats.details.insert("payload_bytes".into(), payload_bytes.to_string());
        Ok(stats)
    }

    async fn wait_for_commit(&self, after_position: u64, max_wait: Duration) -> Result<()> {
        self.signal.wait_past(after_position, max_wait).await;
        Ok(())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.read().checkpoints.get(name).map(|&position| position as u64))
    }

    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()> {
        let mut state = self.write();
        let actual = state.checkpoints.get(name).map(|&p| p as u64);
        let head = state.log.len() as u64;
        allframe_cqrs_core::checkpoint::compare_and_set(&self.limits, name, expected, actual, position, head)?;
        // Within the head, so within `usize`.
        state.checkpoints.insert(StreamId::from(name), position as usize);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads copied into the streams' buffers come back byte for byte, whatever their
    /// size (empty, over a buffer's remaining room, over the largest buffer), streams interleaved.
    #[tokio::test]
    async fn payloads_come_back_from_the_stream_buffers() {
        let backend = InMemoryBackend::new();
        let sizes = [0usize, 1, 255, 256, 300, 4000, 70_000, 3, 65_536, 17];
        let payload =
            |stream: usize, i: usize| -> Vec<u8> { (0..sizes[i]).map(|b| (b * 31 + stream * 7 + i) as u8).collect() };
        for round in 0..40 {
            for stream in 0..3 {
                let i = (round + stream) % sizes.len();
                let event = NewEvent::new("T", payload(stream, i));
                backend.append(&format!("s{stream}"), ExpectedVersion::Any, vec![event]).await.unwrap();
            }
        }
        for stream in 0..3 {
            let events = backend.get_events(&format!("s{stream}")).await.unwrap();
            assert_eq!(events.len(), 40);
            for (round, event) in events.iter().enumerate() {
                assert_eq!(event.payload, payload(stream, (round + stream) % sizes.len()), "s{stream} event {round}");
            }
        }
        let all = backend.get_all_events().await.unwrap();
        assert_eq!(all.len(), 120);
        assert!(all.iter().all(|e| e.payload.len()
            == sizes[(e.version as usize - 1 + e.stream_id[1..].parse::<usize>().unwrap()) % sizes.len()]));
    }

    /// Reads across the log's chunk boundaries return exactly the positions asked for.
    #[tokio::test]
    async fn reads_cross_chunk_boundaries() {
        let backend = InMemoryBackend::new();
        for batch in 0..25u64 {
            let events = (0..400).map(|i| NewEvent::new("T", format!("{}", batch * 400 + i))).collect();
            backend.append(&format!("s{}", batch % 3), ExpectedVersion::Any, events).await.unwrap();
        }
        for start in [0u64, 1, 4095, 4096, 4097, 8191, 8192, 9990, 10_000, 20_000] {
            let page = backend.read_all(start, 300).await.unwrap();
            let expected: Vec<u64> = (start + 1..=(start + 300).min(10_000)).collect();
            assert_eq!(page.iter().map(|e| e.position).collect::<Vec<_>>(), expected, "after {start}");
            assert!(page.iter().all(|e| e.payload == format!("{}", e.position - 1).into_bytes()));
        }
        let stream = backend.get_events("s1").await.unwrap();
        assert_eq!(stream.len(), 8 * 400);
        assert!(stream.windows(2).all(|w| w[0].version + 1 == w[1].version && w[0].position < w[1].position));
    }
}
