//! The storage seam: [`EventStoreBackend`], which every backend implements.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::health::Health;
use crate::retry::StoredAt;
use crate::types::{
    AppendResult, BackendStats, Capabilities, EventId, ExpectedVersion, NewEvent, RecordedEvent, Snapshot, StreamId,
};

/// Page size used by the default implementations of the whole-stream reads.
pub const DEFAULT_PAGE_SIZE: usize = 1024;

/// A storage backend: stores events as bytes, in streams, with a global order.
///
/// Backends never see typed events; [`EventStore`](crate::EventStore) encodes and decodes.
/// The trait is object safe: `Arc<dyn EventStoreBackend>` is itself a backend.
///
/// # Contract
///
/// Every backend keeps these promises; the conformance suite in `allframe-cqrs-testkit`
/// checks each of them and quotes the point it checks.
///
/// 1. Stream versions start at 1 and are contiguous: no gap, no duplicate.
/// 2. An append with an [`ExpectedVersion`] that does not match fails with
///    [`Error::Conflict`](crate::Error::Conflict), naming the expected and actual versions, and writes nothing.
///    Of N concurrent appends at the same expected version exactly one succeeds.
/// 3. All events of one append are stored, or none.
/// 4. Every event gets a global position, strictly increasing in commit order. A reader that
///    has seen position p never later finds a new event at a position below p.
/// 5. Reads are paged ([`read_stream`](Self::read_stream), [`read_all`](Self::read_all)), so reading
///    a huge log never holds it all in memory.
/// 6. The durability mode is stated in [`capabilities`](Self::capabilities) and [`stats`](Self::stats).
/// 7. The latest snapshot per stream is kept; no snapshot is `Ok(None)`.
/// 8. [`wait_for_commit`](Self::wait_for_commit) wakes only after events are committed and readable.
/// 9. An append whose events all carry ids already stored in the same stream, at consecutive
///    versions and in the same order (by one earlier append, or by consecutive ones), succeeds
///    without storing them again and reports the stored positions and the version of its last
///    event, with `deduplicated: true`. An append that repeats only some
///    stored ids, or ids stored in another stream, fails with
///    [`Error::DuplicateEventId`](crate::Error::DuplicateEventId).
/// 10. Bad input (see [`Limits`](crate::Limits)) gets a typed error and changes nothing.
/// 11. Errors are [`Error`](crate::Error) values; no panics on bad input or I/O failure.
/// 12. Backends are `Send + Sync`; dropping an append future part-way leaves the store consistent
///     (the append is then either wholly stored or not at all).
/// 13. [`find_event`](Self::find_event) names the stream, version and position of every
///     acknowledged event by its id, and `None` for an id never stored (or only in a failed
///     append); it may also name an event whose append is still committing.
/// 14. Named checkpoints are durable (as durable as appends) and compare-and-set:
///     [`save_checkpoint`](Self::save_checkpoint) stores a position only if the checkpoint
///     holds the expected one, else fails with
///     [`Error::CheckpointConflict`](crate::Error::CheckpointConflict) and writes nothing; of
///     N concurrent saves with one expected position exactly one succeeds. A position beyond
///     the log's head, or a bad name, is [`Error::InvalidCheckpoint`](crate::Error::InvalidCheckpoint).
#[async_trait]
pub trait EventStoreBackend: Send + Sync + 'static {
    /// A short name for logs, errors and stats, such as `"memory"` or `"postgres"`.
    fn name(&self) -> &'static str;

    /// What this backend can do, and its durability mode.
    fn capabilities(&self) -> Capabilities;

    /// Appends `events` to `stream` if the stream is at `expected` (contract points 1–3, 9, 10).
    ///
    /// An empty `events` checks `expected` and writes nothing.
    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult>;

    /// Up to `limit` events of `stream` with a version above `after_version`, in version order.
    ///
    /// A stream that does not exist reads as empty.
    async fn read_stream(&self, stream: &str, after_version: u64, limit: usize) -> Result<Vec<RecordedEvent>>;

    /// Calls `visit` with each of the events [`read_stream`](Self::read_stream) would return,
    /// in version order, and returns how many it visited. An error from `visit` ends the read
    /// and is returned.
    ///
    /// The read behind aggregate loads, which look at each event once: a backend that holds
    /// its events in memory lends them where they are, without copying each into a page. The
    /// default reads one page with `read_stream`. `visit` may run while the backend holds a
    /// read lock, so it must not call the backend.
    async fn visit_stream(
        &self,
        stream: &str,
        after_version: u64,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<usize> {
        let page = self.read_stream(stream, after_version, limit).await?;
        for event in &page {
            visit(event)?;
        }
        Ok(page.len())
    }

    /// Up to `limit` events of the whole log with a position above `after_position`, in position order.
    ///
    /// Only committed events are returned, and never one below a position returned earlier.
    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>>;

    /// The version of the last event of `stream` (0 when the stream does not exist).
    async fn stream_version(&self, stream: &str) -> Result<u64>;

    /// The highest committed position (0 when the store is empty).
    async fn head_position(&self) -> Result<u64>;

    /// Up to `limit` streams whose ids sort after `after` (all when `None`), with their versions,
    /// in id byte order. Tools use this to copy, inspect and verify stores.
    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>>;

    /// Stores `snapshot` as the stream's latest, unless a snapshot at a higher version is already
    /// stored, which is then kept. A snapshot above the stream's version is refused with
    /// [`Error::InvalidSnapshot`](crate::Error::InvalidSnapshot).
    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()>;

    /// The stream's latest snapshot, or `Ok(None)` when it has none.
    async fn get_latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>>;

    /// Makes every acknowledged append durable now, whatever the durability mode.
    async fn flush(&self) -> Result<()>;

    /// Counters and facts about the store.
    async fn stats(&self) -> Result<BackendStats>;

    /// Whether the store can serve, and what needs a person (see [`Health`]).
    ///
    /// The default answers ok: a backend that can fail says what it checks (every backend of
    /// this workspace but memory does: a poisoned writer, an unreachable server, a backlog).
    async fn health(&self) -> Health {
        Health::ok()
    }

    /// The position checkpoint `name` holds (contract point 14), `None` if it was never saved:
    /// where a consumer of the log (a projection, a saga) goes on after a restart.
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>>;

    /// Stores `position` under checkpoint `name` if it now holds `expected` (`None`: never
    /// saved), so that two runners of one consumer cannot both advance it (contract point 14).
    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()>;

    /// Returns once an event above `after_position` may be readable, or after `max_wait`.
    ///
    /// A hint only: callers always re-read the log. The default sleeps a little; backends
    /// with commit notifications wake waiters on commit.
    async fn wait_for_commit(&self, after_position: u64, max_wait: Duration) -> Result<()> {
        let _ = after_position;
        tokio::time::sleep(max_wait.min(Duration::from_millis(10))).await;
        Ok(())
    }

    /// Where the event with `id` is stored (contract point 13): the lookup behind contract
    /// point 9, for callers that derive event ids, such as the command bus's idempotency keys.
    ///
    /// An event whose append is still committing may be named before it is readable: wait
    /// with [`wait_for_commit`](Self::wait_for_commit)`(position - 1, …)` before reading it.
    /// The default scans the log; every backend of this workspace answers from its id index.
    async fn find_event(&self, id: EventId) -> Result<Option<StoredAt>> {
        let mut after = 0;
        loop {
            let page = self.read_all(after, DEFAULT_PAGE_SIZE).await?;
            let Some(last) = page.last() else { return Ok(None) };
            after = last.position;
            if let Some(event) = page.iter().find(|event| event.metadata.event_id == id) {
                return Ok(Some(StoredAt {
                    stream: event.stream_id.clone(),
                    version: event.version,
                    position: event.position,
                }));
            }
        }
    }

    /// All events of `stream` (the seed's operation; pages through [`read_stream`](Self::read_stream)).
    async fn get_events(&self, stream: &str) -> Result<Vec<RecordedEvent>> {
        self.get_events_after(stream, 0).await
    }

    /// Events of `stream` after `version` (the seed's operation).
    async fn get_events_after(&self, stream: &str, version: u64) -> Result<Vec<RecordedEvent>> {
        let mut out = Vec::new();
        let mut after = version;
        loop {
            let page = self.read_stream(stream, after, DEFAULT_PAGE_SIZE).await?;
            let Some(last) = page.last() else { return Ok(out) };
            after = last.version;
            let full = page.len() == DEFAULT_PAGE_SIZE;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    /// Every event of the store in position order (the seed's operation: for small stores;
    /// use [`read_all`](Self::read_all) pages or [`crate::read::all_events`] for large ones).
    async fn get_all_events(&self) -> Result<Vec<RecordedEvent>> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.read_all(after, DEFAULT_PAGE_SIZE).await?;
            let Some(last) = page.last() else { return Ok(out) };
            after = last.position;
            let full = page.len() == DEFAULT_PAGE_SIZE;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }
}

macro_rules! forward_backend {
    ($($pointer:ident),*) => {$(
        #[async_trait]
        impl<T: EventStoreBackend + ?Sized> EventStoreBackend for $pointer<T> {
            fn name(&self) -> &'static str { (**self).name() }
            fn capabilities(&self) -> Capabilities { (**self).capabilities() }
            async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult> {
                (**self).append(stream, expected, events).await
            }
            async fn read_stream(&self, stream: &str, after_version: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
                (**self).read_stream(stream, after_version, limit).await
            }
            async fn visit_stream(
                &self,
                stream: &str,
                after_version: u64,
                limit: usize,
                visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
            ) -> Result<usize> {
                (**self).visit_stream(stream, after_version, limit, visit).await
            }
            async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
                (**self).read_all(after_position, limit).await
            }
            async fn stream_version(&self, stream: &str) -> Result<u64> { (**self).stream_version(stream).await }
            async fn head_position(&self) -> Result<u64> { (**self).head_position().await }
            async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>> {
                (**self).list_streams(after, limit).await
            }
            async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()> {
                (**self).save_snapshot(stream, snapshot).await
            }
            async fn get_latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
                (**self).get_latest_snapshot(stream).await
            }
            async fn flush(&self) -> Result<()> { (**self).flush().await }
            async fn stats(&self) -> Result<BackendStats> { (**self).stats().await }
            async fn health(&self) -> Health { (**self).health().await }
            async fn wait_for_commit(&self, after_position: u64, max_wait: Duration) -> Result<()> {
                (**self).wait_for_commit(after_position, max_wait).await
            }
            async fn get_events(&self, stream: &str) -> Result<Vec<RecordedEvent>> { (**self).get_events(stream).await }
            async fn get_events_after(&self, stream: &str, version: u64) -> Result<Vec<RecordedEvent>> {
                (**self).get_events_after(stream, version).await
            }
            async fn get_all_events(&self) -> Result<Vec<RecordedEvent>> { (**self).get_all_events().await }
            async fn find_event(&self, id: EventId) -> Result<Option<StoredAt>> { (**self).find_event(id).await }
            async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>> { (**self).load_checkpoint(name).await }
            async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()> {
                (**self).save_checkpoint(name, expected, position).await
            }
        }
    )*};
}

forward_backend!(Arc, Box);

/// A backend chosen at run time: `Arc<dyn EventStoreBackend>` is a backend too.
pub type DynBackend = Arc<dyn EventStoreBackend>;

/// Wakes subscribers when an in-process backend commits: a head position plus a notifier.
///
/// Cheap when nobody waits (one atomic store and one atomic load per publish). In-process
/// backends call [`CommitSignal::publish`] after an append is readable and implement
/// [`EventStoreBackend::wait_for_commit`] with [`CommitSignal::wait_past`].
#[derive(Debug, Default)]
pub struct CommitSignal {
    head: AtomicU64,
    waiters: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl CommitSignal {
    /// A signal whose head starts at `head`.
    pub fn new(head: u64) -> Self {
        CommitSignal { head: AtomicU64::new(head), waiters: AtomicUsize::new(0), notify: tokio::sync::Notify::new() }
    }

    /// Records that events up to `position` are committed and readable, and wakes waiters.
    pub fn publish(&self, position: u64) {
        self.head.fetch_max(position, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// The last published position.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::SeqCst)
    }

    /// Returns once the head is above `after_position`, or after `max_wait`.
    pub async fn wait_past(&self, after_position: u64, max_wait: Duration) {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiters);
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.head.load(Ordering::SeqCst) > after_position {
            return;
        }
        let _ = tokio::time::timeout(max_wait, notified).await;
    }
}
