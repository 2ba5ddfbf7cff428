//! The store's health answer: ok while it writes; `Failed` (component `rocksdb.writer`, with
//! RocksDB's error) once a batch write failed on a full disk, and after that until the store
//! is reopened with space (RocksDB refuses writes after a failed one).
//!
//! The full disk is a small tmpfs: mounting needs root and a sandbox that allows `mount`;
//! elsewhere the full-disk test prints that it skipped and passes.

#[path = "common/tmpfs.rs"]
mod tmpfs;

use tmpfs::{fill, mount_tmpfs};

use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, HealthStatus, NewEvent};

fn event(size: usize) -> Vec<NewEvent> {
    vec![NewEvent::new("Filled", vec![b'x'; size])]
}

#[tokio::test]
async fn a_store_that_writes_is_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksDbBackend::open(dir.path()).unwrap();
    store.append("s", ExpectedVersion::NoStream, event(10)).await.unwrap();
    let health = store.health().await;
    assert!(health.is_ok(), "{health}");
}

#[tokio::test]
async fn a_failed_write_fails_health_until_reopened() {
    let root = tempfile::tempdir().unwrap();
    let Some(mount) = mount_tmpfs("health on a full disk", &root.path().join("disk"), 6 << 20) else { return };
    let path = mount.0.join("store");
    // A large memtable: the write-ahead log fills the disk.
    let config = RocksDbConfig::default().write_buffer_bytes(4 << 20).block_cache_bytes(1 << 20);
    let store = RocksDbBackend::open_with(&path, config).unwrap();
    store.append("s", ExpectedVersion::NoStream, event(10)).await.unwrap();
    assert!(store.health().await.is_ok());
    let ballast = mount.0.join("ballast");
    fill(&ballast, 1 << 20);

    // Bounded: 1 MiB of free space holds a few hundred of these appends.
    let mut failed = false;
    for _ in 0..20_000 {
        if store.append("s", ExpectedVersion::Any, event(2000)).await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the disk never filled");
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Failed, "{health}");
    assert_eq!(health.reasons[0].component, "rocksdb.writer");
    assert!(health.reasons[0].reason.to_lowercase().contains("space"), "RocksDB's error is in the reason: {health}");
    assert_eq!(health.status.http_status(), 503);

    // Space again, the store still open: RocksDB keeps refusing writes, and health says so.
    std::fs::remove_file(&ballast).unwrap();
    let _ = store.append("s", ExpectedVersion::Any, event(10)).await;
    let after = store.health().await;
    assert_eq!(after.status, HealthStatus::Failed, "{after}");
    drop(store);
    let store = RocksDbBackend::open_with(&path, config).unwrap();
    store.append("s", ExpectedVersion::Any, event(10)).await.unwrap();
    let health = store.health().await;
    assert!(health.is_ok(), "reopened with space: {health}");
    drop(store);
    drop(mount);
}
