//! The single writer: one thread that owns every write, with group commit.
//!
//! Appends and snapshot saves are sent to the writer thread through a channel. The thread
//! takes the first request, then drains whatever else is queued (up to a bound) and applies
//! all of it to **one** [`WriteBatch`], checked in arrival order against the store plus what
//! the earlier requests of the same group wrote. The batch is written once (synced when the
//! store is in sync mode), and only then are the callers answered and subscribers woken.
//! One thread assigning positions makes the expected-version check and the position
//! assignment race-free; draining the queue makes concurrent appenders share one sync
//! (see `docs/decisions/0302-rocksdb-group-commit.md`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use allframe_cqrs_core::retry::{StoredAt, resolve_retry};
use allframe_cqrs_core::{
    AppendResult, CommitSignal, Error, EventId, ExpectedVersion, NewEvent, Result, Snapshot, StreamId,
};
use rocksdb::{DB, WriteBatch, WriteOptions};
use tokio::sync::oneshot;

use crate::layout::{self, Run};
use crate::{Handles, corruption, map_err};

/// A write sent to the writer thread.
pub(crate) enum Request {
    /// An append of at least one event (empty appends never reach the writer).
    Append {
        stream: String,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        reply: oneshot::Sender<Result<AppendResult>>,
    },
    /// A snapshot save.
    Snapshot { stream: String, snapshot: Snapshot, reply: oneshot::Sender<Result<()>> },
}

impl Request {
    fn events(&self) -> usize {
        match self {
            Request::Append { events, .. } => events.len(),
            Request::Snapshot { .. } => 1,
        }
    }
}

/// Counters shared between the writer (which changes them after each commit) and readers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Streams that exist.
    pub(crate) streams: AtomicU64,
    /// Streams with a snapshot.
    pub(crate) snapshots: AtomicU64,
    /// Batches written.
    pub(crate) groups: AtomicU64,
    /// Requests (appends and snapshot saves) written in those batches.
    pub(crate) grouped_requests: AtomicU64,
}

/// Everything the writer thread owns.
pub(crate) struct Writer {
    pub(crate) db: Arc<DB>,
    pub(crate) path: PathBuf,
    pub(crate) signal: Arc<CommitSignal>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) write_options: WriteOptions,
    /// Most events (snapshot saves count one) drained into one batch.
    pub(crate) max_group_events: usize,
    /// The next global position to assign.
    pub(crate) next_position: u64,
    /// Requests sent and not yet received by the writer.
    pub(crate) queued: Arc<AtomicUsize>,
    /// Whether groups may linger for the previous group's appenders (sync mode).
    pub(crate) linger: bool,
    /// Whether each batch is synced (sync mode): its write time is then a sync's.
    pub(crate) sync: bool,
    /// The error of the last batch if it failed, cleared by the next that is written: what
    /// the backend's health reports (RocksDB keeps a failed write's background error until
    /// the store is reopened, so every later write fails too).
    pub(crate) failure: Arc<Mutex<Option<String>>>,
}

/// The longest a group waits for more requests (sync mode only).
pub(crate) const MAX_LINGER: Duration = Duration::from_micros(200);

/// What one group has written so far, on top of the store.
#[derive(Default)]
struct Group {
    /// Whether later requests of the group may repeat this group's event ids (more than one request).
    track_ids: bool,
    heads: HashMap<String, u64>,
    ids: HashMap<EventId, StoredAt>,
    snapshots: HashMap<String, u64>,
    new_streams: u64,
    new_snapshots: u64,
}

/// A caller waiting for the group's write.
enum Pending {
    Append(oneshot::Sender<Result<AppendResult>>, Result<AppendResult>),
    Snapshot(oneshot::Sender<Result<()>>, Result<()>),
}

impl Writer {
    /// Runs until every sender is gone.
    ///
    /// With sync on, a group may linger: the appenders answered by the previous group usually
    /// come straight back, so the writer waits for as many requests as were waiting when the
    /// previous write ended plus the previous group's own, for at most half the previous
    /// write's time (and never more than [`MAX_LINGER`]). Without that, 64 appenders split into
    /// two alternating groups, each paying a whole sync (see decision 0302).
    pub(crate) fn run(mut self, requests: Receiver<Request>) {
        let mut record = Vec::new();
        let mut expected = 0;
        let mut max_linger = Duration::ZERO;
        while let Ok(first) = requests.recv() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            let started = Instant::now();
            let mut group_events = first.events();
            let mut queue = vec![first];
            while group_events < self.max_group_events {
                let next = match requests.try_recv() {
                    Ok(next) => next,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        let waited = started.elapsed();
                        if queue.len() >= expected || waited >= max_linger {
                            break;
                        }
                        match requests.recv_timeout(max_linger - waited) {
                            Ok(next) => next,
                            Err(_) => break,
                        }
                    }
                };
                self.queued.fetch_sub(1, Ordering::SeqCst);
                group_events += next.events();
                queue.push(next);
            }
            let group_requests = queue.len();
            let (waiting, write_time) = self.write_group(queue, &mut record);
            if self.linger {
                expected = waiting + group_requests;
                max_linger = (write_time / 2).min(MAX_LINGER);
            }
        }
    }

    /// Writes one group and answers its callers; returns how many requests were waiting when
    /// the write ended, and how long the write took.
    fn write_group(&mut self, queue: Vec<Request>, record: &mut Vec<u8>) -> (usize, Duration) {
        let db = Arc::clone(&self.db);
        let handles = match Handles::new(&db, &self.path) {
            Ok(handles) => handles,
            Err(error) => {
                let reason = error.to_string();
                self.failed(&reason);
                for request in queue {
                    let closed = || Error::Closed { backend: crate::BACKEND_NAME, reason: Some(reason.clone()) };
                    match request {
                        Request::Append { reply, .. } => drop(reply.send(Err(closed()))),
                        Request::Snapshot { reply, .. } => drop(reply.send(Err(closed()))),
                    }
                }
                return (self.queued.load(Ordering::SeqCst), Duration::ZERO);
            }
        };
        let mut batch = WriteBatch::default();
        let mut group = Group { track_ids: queue.len() > 1, ..Group::default() };
        let mut pending = Vec::with_capacity(queue.len());
        let mut next_position = self.next_position;
        for request in queue {
            match request {
                Request::Append { stream, expected, events, reply } => {
                    if reply.is_closed() {
                        // The caller dropped its future before the write: not writing is allowed
                        // (contract 12: the append is wholly stored or not at all).
                        continue;
                    }
                    let result = self.apply_append(
                        &handles,
                        &mut batch,
                        &mut group,
                        &mut next_position,
                        record,
                        &stream,
                        expected,
                        &events,
                    );
                    pending.push(Pending::Append(reply, result));
                }
                Request::Snapshot { stream, snapshot, reply } => {
                    let result = self.apply_snapshot(&handles, &mut batch, &mut group, &stream, &snapshot);
                    pending.push(Pending::Snapshot(reply, result));
                }
            }
        }
        if batch.is_empty() {
            let waiting = self.queued.load(Ordering::SeqCst);
            answer(pending, None);
            return (waiting, Duration::ZERO);
        }
        for (stream, version) in &group.heads {
            batch.put_cf(handles.heads, stream.as_bytes(), version.to_be_bytes());
        }
        let streams = self.counters.streams.load(Ordering::SeqCst) + group.new_streams;
        let snapshots = self.counters.snapshots.load(Ordering::SeqCst) + group.new_snapshots;
        if group.new_streams > 0 || group.new_snapshots > 0 {
            batch.put_cf(handles.meta, layout::KEY_COUNTERS, layout::counters_value(streams, snapshots));
        }
        let write_started = Instant::now();
        let written = self.db.write_opt(batch, &self.write_options);
        let write_time = write_started.elapsed();
        let waiting = self.queued.load(Ordering::SeqCst);
        match written {
            Ok(()) => {
                *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
                let appends = pending
                    .iter()
                    .filter(|p| matches!(p, Pending::Append(_, Ok(result)) if !result.deduplicated))
                    .count();
                crate::metrics::group_committed(appends, self.sync.then_some(write_time));
                self.counters.streams.store(streams, Ordering::SeqCst);
                self.counters.snapshots.store(snapshots, Ordering::SeqCst);
                self.counters.groups.fetch_add(1, Ordering::Relaxed);
                self.counters.grouped_requests.fetch_add(pending.len() as u64, Ordering::Relaxed);
                if next_position > self.next_position {
                    self.next_position = next_position;
                    self.signal.publish(next_position - 1);
                }
                answer(pending, None);
            }
            Err(error) => {
                self.failed(error.as_ref());
                answer(pending, Some((&self.path, error)));
            }
        }
        (waiting, write_time)
    }

    /// Keeps why the last batch failed, for the backend's health.
    fn failed(&self, reason: &str) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
    }

    /// The stream's version, counting what this group wrote.
    fn current_version(&self, handles: &Handles<'_>, group: &Group, stream: &str) -> Result<u64> {
        if let Some(version) = group.heads.get(stream) {
            return Ok(*version);
        }
        crate::read_head(&self.db, handles, &self.path, stream)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_append(
        &self,
        handles: &Handles<'_>,
        batch: &mut WriteBatch,
        group: &mut Group,
        next_position: &mut u64,
        record: &mut Vec<u8>,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult> {
        if let Some(original) = self.find_retry(handles, group, stream, events)? {
            return Ok(original);
        }
        let current = self.current_version(handles, group, stream)?;
        expected.check(stream, current)?;
        let Some(last_offset) = events.len().checked_sub(1) else {
            return Ok(AppendResult { stream_version: current, ..AppendResult::default() });
        };
        let first_position = *next_position;
        let run = Run { first_version: current + 1, last_version: current + 1 + last_offset as u64, first_position };
        let stream_id = StreamId::from(stream);
        for (offset, event) in events.iter().enumerate() {
            let position = first_position + offset as u64;
            let version = run.first_version + offset as u64;
            layout::encode_event(record, stream, version, event);
            batch.put_cf(handles.events, layout::position_key(position), &record[..]);
            batch.put_cf(handles.ids, layout::event_id_key(&event.metadata.event_id), position.to_be_bytes());
            if group.track_ids {
                group.ids.insert(event.metadata.event_id, StoredAt { position, stream: stream_id.clone(), version });
            }
        }
        batch.put_cf(handles.index, layout::index_key(stream, run.last_version), run.value());
        if current == 0 {
            group.new_streams += 1;
        }
        group.heads.insert(stream.to_owned(), run.last_version);
        let last_position = first_position + last_offset as u64;
        *next_position = last_position + 1;
        Ok(AppendResult { stream_version: run.last_version, first_position, last_position, deduplicated: false })
    }

    /// Where each event id of the append is stored, if anywhere.
    fn locate_ids(&self, handles: &Handles<'_>, group: &Group, events: &[NewEvent]) -> Result<Vec<Option<StoredAt>>> {
        let mut found: Vec<Option<StoredAt>> =
            events.iter().map(|e| group.ids.get(&e.metadata.event_id).cloned()).collect();
        let missing: Vec<usize> = (0..events.len()).filter(|i| found[*i].is_none()).collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let keys = missing.iter().map(|i| layout::event_id_key(&events[*i].metadata.event_id));
        let values = self.db.batched_multi_get_cf(handles.ids, keys, false);
        for (index, value) in missing.into_iter().zip(values) {
            let Some(value) = value.map_err(|e| map_err(&self.path, e))? else { continue };
            let position = layout::read_u64(&value).map_err(|reason| corruption(&self.path, 0, reason))?;
            found[index] = Some(crate::locate_position(&self.db, handles, &self.path, position)?);
        }
        Ok(found)
    }

    /// Contract 9: whether the append retries stored events, decided by the core's rule from
    /// where each id is stored (in the store, or earlier in this group).
    fn find_retry(
        &self,
        handles: &Handles<'_>,
        group: &Group,
        stream: &str,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>> {
        resolve_retry(stream, events, &self.locate_ids(handles, group, events)?)
    }

    fn apply_snapshot(
        &self,
        handles: &Handles<'_>,
        batch: &mut WriteBatch,
        group: &mut Group,
        stream: &str,
        snapshot: &Snapshot,
    ) -> Result<()> {
        let current = self.current_version(handles, group, stream)?;
        snapshot.check_version(stream, current)?;
        let stored = match group.snapshots.get(stream) {
            Some(version) => Some(*version),
            None => {
                match self.db.get_pinned_cf(handles.snapshots, stream.as_bytes()).map_err(|e| map_err(&self.path, e))? {
                    Some(record) => {
                        Some(layout::snapshot_version(&record).map_err(|reason| corruption(&self.path, 0, reason))?)
                    }
                    None => None,
                }
            }
        };
        match stored {
            Some(version) if version > snapshot.version => return Ok(()),
            Some(_) => {}
            None => group.new_snapshots += 1,
        }
        batch.put_cf(handles.snapshots, stream.as_bytes(), layout::encode_snapshot(snapshot));
        group.snapshots.insert(stream.to_owned(), snapshot.version);
        Ok(())
    }
}

/// Answers every caller of a group: with its own result, or, when the batch write failed
/// (and so none of the group is stored), with the write's error.
fn answer(pending: Vec<Pending>, failed: Option<(&Path, rocksdb::Error)>) {
    let failure = || failed.as_ref().map(|(path, error)| map_err(path, error.clone()));
    for item in pending {
        match item {
            Pending::Append(reply, result) => {
                let _ = reply.send(failure().map_or(result, Err));
            }
            Pending::Snapshot(reply, result) => {
                let _ = reply.send(failure().map_or(result, Err));
            }
        }
    }
}
