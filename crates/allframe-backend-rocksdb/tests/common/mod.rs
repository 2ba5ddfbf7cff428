//! A RocksDB store in a temporary directory that is deleted when the store is dropped.

#![allow(dead_code)]

use std::time::Duration;

use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};
use allframe_cqrs_core::{
    AppendResult, BackendStats, Capabilities, EventStoreBackend, ExpectedVersion, NewEvent, RecordedEvent, Result,
    Snapshot, StreamId, async_trait,
};
use tempfile::TempDir;

/// A backend plus the directory it lives in (dropped after the backend: fields drop in order).
#[derive(Debug)]
pub struct TempStore {
    pub backend: RocksDbBackend,
    pub dir: TempDir,
}

impl TempStore {
    /// A fresh store with `config`.
    pub fn new(config: RocksDbConfig) -> Self {
        let dir = tempfile::Builder::new().prefix("allframe-rocksdb-").tempdir().expect("temporary directory");
        let backend = RocksDbBackend::open_with(dir.path().join("store"), config).expect("open a fresh store");
        TempStore { backend, dir }
    }
}

#[async_trait]
impl EventStoreBackend for TempStore {
    fn name(&self) -> &'static str {
        self.backend.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }
    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult> {
        self.backend.append(stream, expected, events).await
    }
    async fn read_stream(&self, stream: &str, after_version: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.backend.read_stream(stream, after_version, limit).await
    }
    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.backend.read_all(after_position, limit).await
    }
    async fn stream_version(&self, stream: &str) -> Result<u64> {
        self.backend.stream_version(stream).await
    }
    async fn head_position(&self) -> Result<u64> {
        self.backend.head_position().await
    }
    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>> {
        self.backend.list_streams(after, limit).await
    }
    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()> {
        self.backend.save_snapshot(stream, snapshot).await
    }
    async fn get_latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        self.backend.get_latest_snapshot(stream).await
    }
    async fn flush(&self) -> Result<()> {
        self.backend.flush().await
    }
    async fn stats(&self) -> Result<BackendStats> {
        self.backend.stats().await
    }
    async fn find_event(&self, id: allframe_cqrs_core::EventId) -> Result<Option<allframe_cqrs_core::retry::StoredAt>> {
        self.backend.find_event(id).await
    }
    async fn wait_for_commit(&self, after_position: u64, max_wait: Duration) -> Result<()> {
        self.backend.wait_for_commit(after_position, max_wait).await
    }
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        self.backend.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()> {
        self.backend.save_checkpoint(name, expected, position).await
    }
}

/// A small xorshift generator for tests that need variety, not quality (kill times, ids).
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
