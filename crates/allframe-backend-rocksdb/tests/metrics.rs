//! The writer's metrics (feature `metrics`): appends report every group commit's appends and,
//! in sync mode, its write-and-sync time, under the documented names and labels; without
//! sync, no sync time.
//!
//! The writer runs on its own thread, so the recorder is the global one, installed once for
//! this test binary; this file holds one test, so nothing else records.
#![cfg(feature = "metrics")]

use std::sync::Arc;

use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};
use allframe_cqrs_core::metric_names as names;
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent, Snapshot};
use allframe_cqrs_testkit::metrics::{install, take};

const BACKEND: &[(&str, &str)] = &[("backend", "rocksdb")];

async fn append_concurrently(store: &Arc<RocksDbBackend>) {
    let mut tasks = Vec::new();
    for appender in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let events = vec![NewEvent::new("E", "{}")];
                store.append(&format!("s-{appender}"), ExpectedVersion::Any, events).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commits_and_syncs_are_reported() {
    install();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RocksDbBackend::open(dir.path()).unwrap());
    take();
    append_concurrently(&store).await;
    // A snapshot save goes through the writer too, but is no append; a conflict stores nothing.
    store.save_snapshot("s-0", Snapshot::new(1, "{}")).await.unwrap();
    assert!(store.append("s-0", ExpectedVersion::NoStream, vec![NewEvent::new("E", "{}")]).await.is_err());

    let samples = take();
    let groups = samples.histogram(names::COMMIT_GROUP_APPENDS, BACKEND);
    assert_eq!(groups.iter().sum::<f64>(), 80.0, "every stored append is in one group: {groups:?}");
    let syncs = samples.histogram(names::SYNC_DURATION, BACKEND);
    assert_eq!(syncs.len(), groups.len(), "one write and sync per group that wrote");
    assert!(syncs.iter().all(|s| *s > 0.0 && *s < 30.0), "{syncs:?}");
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RocksDbBackend::open_with(dir.path(), RocksDbConfig::default().sync(false)).unwrap());
    append_concurrently(&store).await;
    let samples = take();
    assert_eq!(samples.histogram(names::COMMIT_GROUP_APPENDS, BACKEND).iter().sum::<f64>(), 80.0);
    assert!(samples.histogram(names::SYNC_DURATION, BACKEND).is_empty(), "no sync without sync mode");
}
