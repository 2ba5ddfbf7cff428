//! A backend wrapper that runs a test's hook around each append: to fail a chosen append
//! (before or after it is applied), or to hold appends until others arrive, so that a race
//! happens every time instead of by chance.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use allframe::cqrs::*;
use allframe::{AppendResult, BackendStats, Capabilities, NewEvent, RecordedEvent, Snapshot, StreamId, async_trait};

/// What a test does around the `call`-th append (counted from 0) to `stream`.
#[async_trait]
pub trait AppendHook: Send + Sync + 'static {
    /// Before the append: an error fails it unapplied.
    async fn before(&self, _stream: &str, _call: usize) -> allframe::Result<()> {
        Ok(())
    }
    /// After it was applied: an error fails it although it is stored.
    async fn after(&self, _stream: &str, _call: usize) -> allframe::Result<()> {
        Ok(())
    }
}

/// `inner`, with `hook` around each append.
pub struct Hooked<H> {
    pub inner: DynBackend,
    pub hook: H,
    pub appends: AtomicUsize,
}

impl<H: AppendHook> Hooked<H> {
    pub fn new(inner: DynBackend, hook: H) -> Self {
        Hooked { inner, hook, appends: AtomicUsize::new(0) }
    }

    /// Appends so far.
    pub fn appends(&self) -> usize {
        self.appends.load(Ordering::SeqCst)
    }
}

/// An injected failure.
pub fn injected() -> allframe::Error {
    allframe::Error::Backend { backend: "hooked", transient: true, source: "injected failure".into() }
}

#[async_trait]
impl<H: AppendHook> EventStoreBackend for Hooked<H> {
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
        let call = self.appends.fetch_add(1, Ordering::SeqCst);
        self.hook.before(stream, call).await?;
        let result = self.inner.append(stream, expected, events).await?;
        self.hook.after(stream, call).await?;
        Ok(result)
    }
    async fn read_stream(&self, stream: &str, after: u64, limit: usize) -> allframe::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, after, limit).await
    }
    async fn read_all(&self, after: u64, limit: usize) -> allframe::Result<Vec<RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }
    async fn stream_version(&self, stream: &str) -> allframe::Result<u64> {
        self.inner.stream_version(stream).await
    }
    async fn list_streams(&self, after: Option<&str>, limit: usize) -> allframe::Result<Vec<(StreamId, u64)>> {
        self.inner.list_streams(after, limit).await
    }
    async fn head_position(&self) -> allframe::Result<u64> {
        self.inner.head_position().await
    }
    async fn stats(&self) -> allframe::Result<BackendStats> {
        self.inner.stats().await
    }
    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> allframe::Result<()> {
        self.inner.save_snapshot(stream, snapshot).await
    }
    async fn get_latest_snapshot(&self, stream: &str) -> allframe::Result<Option<Snapshot>> {
        self.inner.get_latest_snapshot(stream).await
    }
    async fn flush(&self) -> allframe::Result<()> {
        self.inner.flush().await
    }
    async fn load_checkpoint(&self, name: &str) -> allframe::Result<Option<u64>> {
        self.inner.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> allframe::Result<()> {
        self.inner.save_checkpoint(name, expected, position).await
    }
}
