//! A backend wrapper that counts what is asked of the store it wraps, to prove what a dispatch
//! did or did not read or write (nothing loaded before validation, a snapshot used).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use allframe::cqrs::*;
use allframe::{BackendStats, Capabilities, NewEvent, RecordedEvent, Snapshot, StreamId, async_trait};

/// Counts reads and writes, and remembers where each stream read started.
pub struct Counting {
    inner: DynBackend,
    reads: AtomicU64,
    appends: AtomicU64,
    snapshot_reads: AtomicU64,
    stream_reads: Mutex<Vec<(String, u64)>>,
}

impl Counting {
    /// Wraps `inner`; the wrapper is itself a backend.
    pub fn new(inner: DynBackend) -> Arc<Self> {
        Arc::new(Counting {
            inner,
            reads: AtomicU64::new(0),
            appends: AtomicU64::new(0),
            snapshot_reads: AtomicU64::new(0),
            stream_reads: Mutex::new(Vec::new()),
        })
    }

    /// Every read of any kind so far (events, versions, snapshots, id lookups).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// Appends and snapshot saves so far.
    pub fn writes(&self) -> u64 {
        self.appends.load(Ordering::SeqCst)
    }

    /// Snapshot reads so far.
    pub fn snapshot_reads(&self) -> u64 {
        self.snapshot_reads.load(Ordering::SeqCst)
    }

    /// `(stream, after_version)` of every stream read so far, in order.
    pub fn stream_reads(&self) -> Vec<(String, u64)> {
        self.stream_reads.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn read(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counting").field("inner", &self.inner.name()).field("reads", &self.reads()).finish()
    }
}

#[async_trait]
impl EventStoreBackend for Counting {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> allframe::Result<AppendResult> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &str,
        after_version: u64,
        limit: usize,
    ) -> allframe::Result<Vec<RecordedEvent>> {
        self.read();
        self.stream_reads.lock().unwrap_or_else(PoisonError::into_inner).push((stream.to_owned(), after_version));
        self.inner.read_stream(stream, after_version, limit).await
    }
    async fn read_all(&self, after_position: u64, limit: usize) -> allframe::Result<Vec<RecordedEvent>> {
        self.read();
        self.inner.read_all(after_position, limit).await
    }
    async fn stream_version(&self, stream: &str) -> allframe::Result<u64> {
        self.read();
        self.inner.stream_version(stream).await
    }
    async fn head_position(&self) -> allframe::Result<u64> {
        self.read();
        self.inner.head_position().await
    }
    async fn list_streams(&self, after: Option<&str>, limit: usize) -> allframe::Result<Vec<(StreamId, u64)>> {
        self.read();
        self.inner.list_streams(after, limit).await
    }
    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> allframe::Result<()> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.inner.save_snapshot(stream, snapshot).await
    }
    async fn get_latest_snapshot(&self, stream: &str) -> allframe::Result<Option<Snapshot>> {
        self.read();
        self.snapshot_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_latest_snapshot(stream).await
    }
    async fn flush(&self) -> allframe::Result<()> {
        self.inner.flush().await
    }
    async fn stats(&self) -> allframe::Result<BackendStats> {
        self.inner.stats().await
    }
    async fn wait_for_commit(&self, after_position: u64, max_wait: Duration) -> allframe::Result<()> {
        self.inner.wait_for_commit(after_position, max_wait).await
    }
    async fn load_checkpoint(&self, name: &str) -> allframe::Result<Option<u64>> {
        self.read();
        self.inner.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> allframe::Result<()> {
        self.inner.save_checkpoint(name, expected, position).await
    }
    async fn find_event(&self, id: EventId) -> allframe::Result<Option<allframe_cqrs_core::retry::StoredAt>> {
        self.read();
        self.inner.find_event(id).await
    }
    async fn get_events(&self, stream: &str) -> allframe::Result<Vec<RecordedEvent>> {
        self.read();
        self.inner.get_events(stream).await
    }
    async fn get_events_after(&self, stream: &str, version: u64) -> allframe::Result<Vec<RecordedEvent>> {
        self.read();
        self.inner.get_events_after(stream, version).await
    }
    async fn get_all_events(&self) -> allframe::Result<Vec<RecordedEvent>> {
        self.read();
        self.inner.get_all_events().await
    }
}
