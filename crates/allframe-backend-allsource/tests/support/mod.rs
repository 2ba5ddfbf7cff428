//! Test support: a durable store in a temporary directory that can reopen itself.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use allframe_backend_allsource::AllSourceBackend;
use allframe_cqrs_core::{
    AppendResult, BackendStats, Capabilities, EventStoreBackend, ExpectedVersion, NewEvent, RecordedEvent, Result,
    Snapshot, StreamId, async_trait,
};
use tokio::sync::RwLock;

/// `AllSourceBackend::production(tempdir)`, reopened from disk after every `every` writes.
#[derive(Debug)]
pub struct Reopening {
    pub dir: tempfile::TempDir,
    inner: RwLock<Option<Arc<AllSourceBackend>>>,
    writes: AtomicU64,
    every: u64,
    pub reopens: AtomicU64,
}

impl Reopening {
    /// A fresh store; `every == u64::MAX` never reopens.
    pub fn open(every: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = AllSourceBackend::production(dir.path()).expect("open a fresh store");
        Reopening {
            dir,
            inner: RwLock::new(Some(Arc::new(backend))),
            writes: AtomicU64::new(0),
            every,
            reopens: AtomicU64::new(0),
        }
    }

    async fn current(&self) -> Arc<AllSourceBackend> {
        self.inner.read().await.as_ref().expect("store is open").clone()
    }

    /// Counts a write and reopens the store when it is due.
    async fn after_write(&self) {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n.is_multiple_of(self.every) {
            self.reopen().await;
        }
    }

    /// Closes the store and opens it again from its directory.
    pub async fn reopen(&self) {
        let mut guard = self.inner.write().await;
        let old = guard.take().expect("store is open");
        // Other tasks may still hold the old handle for a moment (a read in flight).
        let mut old = Some(old);
        for _ in 0..500 {
            match Arc::try_unwrap(old.take().expect("handle")) {
                Ok(backend) => {
                    drop(backend);
                    break;
                }
                Err(shared) => {
                    old = Some(shared);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
        assert!(old.is_none(), "old handle still in use after 1 s");
        let backend = AllSourceBackend::production(self.dir.path()).expect("reopen the store");
        *guard = Some(Arc::new(backend));
        self.reopens.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl EventStoreBackend for Reopening {
    fn name(&self) -> &'static str {
        "allsource"
    }
    fn capabilities(&self) -> Capabilities {
        match self.inner.try_read() {
            Ok(guard) => guard.as_ref().expect("open").capabilities(),
            Err(_) => Capabilities::full(allframe_cqrs_core::Durability::Synchronous, true),
        }
    }
    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult> {
        let result = self.current().await.append(stream, expected, events).await;
        self.after_write().await;
        result
    }
    async fn read_stream(&self, stream: &str, after_version: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.current().await.read_stream(stream, after_version, limit).await
    }
    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.current().await.read_all(after_position, limit).await
    }
    async fn stream_version(&self, stream: &str) -> Result<u64> {
        self.current().await.stream_version(stream).await
    }
    async fn head_position(&self) -> Result<u64> {
        self.current().await.head_position().await
    }
    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>> {
        self.current().await.list_streams(after, limit).await
    }
    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()> {
        let result = self.current().await.save_snapshot(stream, snapshot).await;
        self.after_write().await;
        result
    }
    async fn get_latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        self.current().await.get_latest_snapshot(stream).await
    }
    async fn flush(&self) -> Result<()> {
        self.current().await.flush().await
    }
    async fn stats(&self) -> Result<BackendStats> {
        self.current().await.stats().await
    }
    async fn find_event(&self, id: allframe_cqrs_core::EventId) -> Result<Option<allframe_cqrs_core::retry::StoredAt>> {
        self.current().await.find_event(id).await
    }
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        self.current().await.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()> {
        self.current().await.save_checkpoint(name, expected, position).await
    }
    async fn wait_for_commit(&self, after_position: u64, max_wait: Duration) -> Result<()> {
        if self.every == u64::MAX {
            self.current().await.wait_for_commit(after_position, max_wait).await
        } else {
            // Holding the handle while waiting would delay a reopen; poll instead.
            tokio::time::sleep(max_wait.min(Duration::from_millis(5))).await;
            Ok(())
        }
    }
}
