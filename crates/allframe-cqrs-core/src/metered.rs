//! [`Metered`]: any backend, with every operation counted and timed through the `metrics`
//! facade (feature `metrics`). The core owns the operation metrics once; backends report only
//! what their engine alone knows (group commits, syncs, pools).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics::{Counter, Histogram};

use crate::backend::EventStoreBackend;
use crate::error::{Error, Result};
use crate::health::{Health, HealthStatus};
use crate::metric_names as names;
use crate::retry::StoredAt;
use crate::transaction::CheckpointTransactions;
use crate::types::{
    AppendResult, BackendStats, Capabilities, EventId, ExpectedVersion, NewEvent, RecordedEvent, Snapshot, StreamId,
};

/// The operations counted, in the order of [`Handles::operations`]; each name is the value of
/// the `operation` label.
const OPERATIONS: [&str; 15] = [
    "append",
    "read_stream",
    "visit_stream",
    "read_all",
    "stream_version",
    "head_position",
    "list_streams",
    "save_snapshot",
    "get_latest_snapshot",
    "flush",
    "stats",
    "load_checkpoint",
    "save_checkpoint",
    "find_event",
    "commit_with_checkpoint",
];

#[derive(Clone, Copy)]
enum Op {
    Append,
    ReadStream,
    VisitStream,
    ReadAll,
    StreamVersion,
    HeadPosition,
    ListStreams,
    SaveSnapshot,
    GetLatestSnapshot,
    Flush,
    Stats,
    LoadCheckpoint,
    SaveCheckpoint,
    FindEvent,
    CommitWithCheckpoint,
}

/// One operation's call counter and latency histogram.
struct OperationHandles {
    calls: Counter,
    duration: Histogram,
}

/// The metric handles of one wrapped backend, registered once with the recorder installed
/// when the wrapper was made, so that a call costs an increment and a record, not a lookup.
struct Handles {
    /// Whether a recorder was installed when the handles were registered; without one the
    /// wrapper hands every call straight to the backend (no clock read, no extra future).
    recording: bool,
    backend: &'static str,
    operations: Vec<OperationHandles>,
    events: Counter,
    bytes: Counter,
    conflicts: Counter,
    duplicates: Counter,
}

impl Handles {
    fn register(backend: &'static str) -> Self {
        let operations = OPERATIONS
            .iter()
            .map(|&operation| OperationHandles {
                calls: metrics::counter!(names::STORE_OPERATIONS, "backend" => backend, "operation" => operation),
                duration: metrics::histogram!(names::STORE_OPERATION_DURATION, "backend" => backend, "operation" => operation),
            })
            .collect();
        Handles {
            recording: recorder_installed(),
            backend,
            operations,
            events: metrics::counter!(names::APPEND_EVENTS, "backend" => backend),
            bytes: metrics::counter!(names::APPEND_BYTES, "backend" => backend),
            conflicts: metrics::counter!(names::APPEND_CONFLICTS, "backend" => backend),
            duplicates: metrics::counter!(names::APPEND_DUPLICATES, "backend" => backend),
        }
    }

    /// Counts and times one finished call, and its error by kind.
    fn finish<T>(&self, op: Op, started: Instant, result: &Result<T>) {
        let handles = &self.operations[op as usize];
        handles.calls.increment(1);
        handles.duration.record(duration_seconds(started.elapsed()));
        if let Err(error) = result {
            let operation = OPERATIONS[op as usize];
            // Errors are rare: their counter is looked up when one happens.
            metrics::counter!(names::STORE_ERRORS, "backend" => self.backend, "operation" => operation, "kind" => error.kind())
                .increment(1);
        }
    }
}

fn duration_seconds(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64()
}

/// Whether a recorder (global, or local to this thread) is installed. The facade answers with
/// its no-op recorder, a zero-sized value, when there is none; every recorder that keeps
/// figures has state, so a zero-sized one is taken for "none" (documented on [`Metered`]).
fn recorder_installed() -> bool {
    metrics::with_recorder(|recorder| std::mem::size_of_val(recorder) != 0)
}

/// A backend's boxed future, as `async_trait` shapes the trait's methods: the wrapper returns
/// the backend's own future untouched when nothing is recorded.
type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send + 'a>>;

/// A backend whose operations are counted and timed (feature `metrics`): calls, errors by
/// kind and latency per operation; events, bytes, conflicts and idempotent duplicates of
/// appends (the names are in [`metric_names`](crate::metric_names)).
///
/// Install the recorder (for example the Prometheus exporter) before wrapping: the wrapper
/// registers its metrics once, with the recorder installed then. Without a recorder it hands
/// every call straight to the backend: no clock is read and no future is added, so the cost
/// is one branch per call (measured in `docs/OPERATIONS.md`). A recorder is recognised by
/// having state: a zero-sized recorder is taken for the facade's no-op one.
///
/// ```
/// use allframe_cqrs_core::{EventStore, Metered};
/// # use allframe_cqrs_core::{Event, EventStoreBackend};
/// # fn wrap<E: Event, B: EventStoreBackend>(backend: B) -> EventStore<E, Metered<B>> {
/// let store = EventStore::with_backend(Metered::new(backend));
/// # store }
/// ```
pub struct Metered<B> {
    inner: B,
    handles: Handles,
}

impl<B: EventStoreBackend> Metered<B> {
    /// Wraps `inner`, registering its metrics with the recorder installed now.
    pub fn new(inner: B) -> Self {
        let handles = Handles::register(inner.name());
        Metered { inner, handles }
    }
}

impl<B> Metered<B> {
    /// The wrapped backend (for its own methods, such as an engine's typed stats).
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Unwraps the backend.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for Metered<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered").field("inner", &self.inner).finish_non_exhaustive()
    }
}

#[async_trait]
impl<B: EventStoreBackend> EventStoreBackend for Metered<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn append<'a, 'b, 'c>(
        &'a self,
        stream: &'b str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Boxed<'c, AppendResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if !self.handles.recording {
            return self.inner.append(stream, expected, events);
        }
        Box::pin(async move {
            let started = Instant::now();
            let count = events.len() as u64;
            let bytes: u64 = events.iter().map(|event| event.payload.len() as u64).sum();
            let result = self.inner.append(stream, expected, events).await;
            self.handles.finish(Op::Append, started, &result);
            match &result {
                Ok(appended) if appended.deduplicated => self.handles.duplicates.increment(1),
                Ok(_) => {
                    self.handles.events.increment(count);
                    self.handles.bytes.increment(bytes);
                }
                Err(Error::Conflict { .. }) => self.handles.conflicts.increment(1),
                Err(_) => {}
            }
            result
        })
    }

    fn read_stream<'s, 'l0, 'f>(
        &'s self,
        stream: &'l0 str,
        after_version: u64,
        limit: usize,
    ) -> Boxed<'f, Vec<RecordedEvent>>
    where
        's: 'f,
        'l0: 'f,
        Self: 'f,
    {
        if !self.handles.recording {
            return self.inner.read_stream(stream, after_version, limit);
        }
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.read_stream(stream, after_version, limit).await;
            self.handles.finish(Op::ReadStream, started, &result);
            result
        })
    }

    fn visit_stream<'s, 'l0, 'l1, 'f>(
        &'s self,
        stream: &'l0 str,
        after_version: u64,
        limit: usize,
        visit: &'l1 mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Boxed<'f, usize>
    where
        's: 'f,
        'l0: 'f,
        'l1: 'f,
        Self: 'f,
    {
        if !self.handles.recording {
            return self.inner.visit_stream(stream, after_version, limit, visit);
        }
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.visit_stream(stream, after_version, limit, visit).await;
            self.handles.finish(Op::VisitStream, started, &result);
            result
        })
    }

    fn read_all<'s, 'f>(&'s self, after_position: u64, limit: usize) -> Boxed<'f, Vec<RecordedEvent>>
    where
        's: 'f,
        Self: 'f,
    {
        if !self.handles.recording {
            return self.inner.read_all(after_position, limit);
        }
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.read_all(after_position, limit).await;
            self.handles.finish(Op::ReadAll, started, &result);
            result
        })
    }

    fn stream_version<'s, 'l0, 'f>(&'s self, stream: &'l0 str) -> Boxed<'f, u64>
    where
        's: 'f,
        'l0: 'f,
        Self: 'f,
    {
        if !self.handles.recording {
            return self.inner.stream_version(stream);
        }
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.stream_version(stream).await;
            self.handles.finish(Op::StreamVersion, started, &result);
            result
        })
    }

    fn head_position<'s, 'f>(&'s self) -> Boxed<'f, u64>
    where
        's: 'f,
        Self: 'f,
    {
        if !self.handles.recording {
            return self.inner.head_position();
        }
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.head_position().await;
            self.handles.finish(Op::HeadPosition, started, &result);
            result
        })
    }

    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>> {
        let started = Instant::now();
        let result = self.inner.list_streams(after, limit).await;
        self.handles.finish(Op::ListStreams, started, &result);
        result
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.save_snapshot(stream, snapshot).await;
        self.handles.finish(Op::SaveSnapshot, started, &result);
        result
    }

    fn get_latest_snapshot<'s, 'l0, 'f>(&'s self, stream: &'l0 str) -> Boxed<'f, Option<Snapshot>>
    where
        's: 'f,
        'l0: 'f,
        Self: 'f,
    {
        if !self.handles.recording {
            return self.inner.get_latest_snapshot(stream);
        }
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.get_latest_snapshot(stream).await;
            self.handles.finish(Op::GetLatestSnapshot, started, &result);
            result
        })
    }

    async fn flush(&self) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.flush().await;
        self.handles.finish(Op::Flush, started, &result);
        result
    }

    async fn stats(&self) -> Result<BackendStats> {
        let started = Instant::now();
        let result = self.inner.stats().await;
        self.handles.finish(Op::Stats, started, &result);
        if let Ok(stats) = &result {
            let backend = self.handles.backend;
            metrics::gauge!(names::STORE_EVENTS, "backend" => backend).set(stats.events as f64);
            metrics::gauge!(names::STORE_STREAMS, "backend" => backend).set(stats.streams as f64);
            metrics::gauge!(names::STORE_HEAD_POSITION, "backend" => backend).set(stats.head_position as f64);
        }
        result
    }

    async fn health(&self) -> Health {
        let health = self.inner.health().await;
        let value = match health.status {
            HealthStatus::Ok => 0.0,
            HealthStatus::Degraded => 1.0,
            HealthStatus::Failed => 2.0,
        };
        metrics::gauge!(names::HEALTH_STATUS).set(value);
        health
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        let started = Instant::now();
        let result = self.inner.load_checkpoint(name).await;
        self.handles.finish(Op::LoadCheckpoint, started, &result);
        result
    }

    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.save_checkpoint(name, expected, position).await;
        self.handles.finish(Op::SaveCheckpoint, started, &result);
        result
    }

    async fn wait_for_commit(&self, after_position: u64, max_wait: Duration) -> Result<()> {
        // A wait, not work: timing it would only measure how quiet the store is.
        self.inner.wait_for_commit(after_position, max_wait).await
    }

    fn find_event<'s, 'f>(&'s self, id: EventId) -> Boxed<'f, Option<StoredAt>>
    where
        's: 'f,
        Self: 'f,
    {
        if !self.handles.recording {
            return self.inner.find_event(id);
        }
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.find_event(id).await;
            self.handles.finish(Op::FindEvent, started, &result);
            result
        })
    }
}

#[async_trait]
impl<B: CheckpointTransactions> CheckpointTransactions for Metered<B> {
    type Transaction = B::Transaction;

    async fn begin(&self) -> Result<Self::Transaction> {
        self.inner.begin().await
    }

    async fn commit_with_checkpoint(
        &self,
        transaction: Self::Transaction,
        name: &str,
        expected: Option<u64>,
        position: u64,
    ) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.commit_with_checkpoint(transaction, name, expected, position).await;
        self.handles.finish(Op::CommitWithCheckpoint, started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_label_in_order() {
        let ops = [
            Op::Append,
            Op::ReadStream,
            Op::VisitStream,
            Op::ReadAll,
            Op::StreamVersion,
            Op::HeadPosition,
            Op::ListStreams,
            Op::SaveSnapshot,
            Op::GetLatestSnapshot,
            Op::Flush,
            Op::Stats,
            Op::LoadCheckpoint,
            Op::SaveCheckpoint,
            Op::FindEvent,
            Op::CommitWithCheckpoint,
        ];
        assert_eq!(ops.len(), OPERATIONS.len());
        for (i, op) in ops.into_iter().enumerate() {
            assert_eq!(op as usize, i);
        }
        assert_eq!(OPERATIONS[Op::CommitWithCheckpoint as usize], "commit_with_checkpoint");
    }
}
