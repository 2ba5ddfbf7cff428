//! The store's health answer: `Failed` (component `allsource.writer`, with the failure's text)
//! once a failed sync has poisoned the store; `Degraded` (`allsource.converter`) while the
//! conversion backlog is at its limit and once Parquet conversion stopped with an error; ok
//! otherwise. Faults are injected through the crate's I/O hook.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, IoHook, IoOp};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, HealthStatus, NewEvent};

/// Fails every sync once `fail_syncs` is set; holds the converter at the creation of a Parquet
/// file while `hold_parquet` is set, or fails it with `fail_parquet`.
#[derive(Debug, Default)]
struct Faults {
    fail_syncs: AtomicBool,
    fail_parquet: AtomicBool,
    hold_parquet: Mutex<bool>,
    released: Condvar,
}

impl Faults {
    fn release(&self) {
        *self.hold_parquet.lock().unwrap() = false;
        self.released.notify_all();
    }
}

/// Releases a held converter when dropped (before the store, whose drop joins the converter),
/// so that a failed assertion does not hang the test.
struct Release<'a>(&'a Faults);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl IoHook for Faults {
    fn before(&self, op: IoOp, path: &Path) -> io::Result<()> {
        if op == IoOp::Sync && self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected: the disk refuses the sync"));
        }
        let parquet = path.to_string_lossy().ends_with(".parquet.tmp");
        if op == IoOp::Create && parquet {
            if self.fail_parquet.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected: no Parquet file can be created"));
            }
            let mut held = self.hold_parquet.lock().unwrap();
            while *held {
                held = self.released.wait(held).unwrap();
            }
        }
        Ok(())
    }
}

fn open(dir: &Path, faults: &Arc<Faults>, backlog: usize) -> AllSourceBackend {
    let hook: Arc<dyn IoHook> = faults.clone();
    let config =
        AllSourceConfig::durable(dir).segment_size(64 * 1024).max_conversion_backlog(backlog).io_hook(Some(hook));
    AllSourceBackend::with_config(config).unwrap()
}

async fn append(store: &AllSourceBackend) -> allframe_cqrs_core::Result<()> {
    store.append("s", ExpectedVersion::Any, vec![NewEvent::new("Filled", vec![b'x'; 1024])]).await.map(|_| ())
}

/// Appends until a log segment is sealed (about 64 appends of 1 KiB).
async fn seal_a_segment(store: &AllSourceBackend) {
    // Counts the segment the open created too.
    let created = store.engine_stats().wal_segments;
    for _ in 0..1000 {
        if store.engine_stats().wal_segments > created {
            return;
        }
        append(store).await.unwrap();
    }
    panic!("no segment was sealed: {:?}", store.engine_stats());
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_failed_sync_poisons_the_store_and_health_fails() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let store = open(dir.path(), &faults, 4);
    append(&store).await.unwrap();
    let health = store.health().await;
    assert!(health.is_ok(), "{health}");

    faults.fail_syncs.store(true, Ordering::SeqCst);
    assert!(append(&store).await.is_err(), "the append whose sync failed fails");
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Failed, "{health}");
    assert_eq!(health.reasons[0].component, "allsource.writer");
    assert!(health.reasons[0].reason.contains("injected: the disk refuses the sync"), "{health}");
    assert_eq!(health.status.http_status(), 503);

    // Still failed when the disk works again: only a reopen clears the poison.
    faults.fail_syncs.store(false, Ordering::SeqCst);
    assert_eq!(store.health().await.status, HealthStatus::Failed);
    drop(store);
    let store = open(dir.path(), &faults, 4);
    let health = store.health().await;
    assert!(health.is_ok(), "reopened: {health}");
}

#[tokio::test]
async fn a_full_conversion_backlog_degrades_until_the_converter_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    *faults.hold_parquet.lock().unwrap() = true;
    let store = open(dir.path(), &faults, 1);
    let _release = Release(&faults);
    seal_a_segment(&store).await;
    wait_until("the sealed segment waits for conversion", || store.engine_stats().parquet_backlog == 1).await;
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Degraded, "{health}");
    assert_eq!(health.reasons[0].component, "allsource.converter");
    assert!(health.reasons[0].reason.contains("limit 1"), "{health}");
    assert_eq!(health.status.http_status(), 200, "a degraded store still serves");

    faults.release();
    wait_until("the converter caught up", || store.engine_stats().parquet_backlog == 0).await;
    let health = store.health().await;
    assert!(health.is_ok(), "{health}");
}

#[tokio::test]
async fn a_stopped_conversion_degrades() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    faults.fail_parquet.store(true, Ordering::SeqCst);
    let store = open(dir.path(), &faults, 4);
    seal_a_segment(&store).await;
    wait_until("conversion stopped", || store.engine_stats().parquet_conversion_error.is_some()).await;
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Degraded, "{health}");
    assert_eq!(health.reasons[0].component, "allsource.converter");
    assert!(health.reasons[0].reason.contains("injected: no Parquet file can be created"), "{health}");
    // Appends go on.
    append(&store).await.unwrap();
}

#[tokio::test]
async fn an_in_memory_store_is_healthy() {
    let store = AllSourceBackend::in_memory().unwrap();
    append(&store).await.unwrap();
    assert!(store.health().await.is_ok());
}
