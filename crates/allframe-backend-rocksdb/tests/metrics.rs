//! The writer's metrics (feature `metrics`): appends report every group commit's appends and,
//! in sync mode, its write-and-sync time, under the documented names and labels; without
//! sync, no sync time.
//!
//! The writer runs on its own thread, so the recorder is the global one, installed once for
//! this test binary; this file holds one test, so nothing else records.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};
use allframe_cqrs_core::metric_names::{self as names, ALL};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent, Snapshot};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder of this test binary");
        snapshotter
    })
}

/// A metric as recorded: its name and labels.
type Sample = (String, Vec<(String, String)>);

/// Takes (and clears) everything recorded so far, checking each name and its labels against
/// the core's table.
fn take() -> HashMap<Sample, DebugValue> {
    let mut out = HashMap::new();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        let name = key.name().to_string();
        let labels: Vec<(String, String)> =
            key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
        let doc = ALL.iter().find(|doc| doc.name == name).unwrap_or_else(|| panic!("{name} is not in the table"));
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, doc.labels, "{name}: labels as documented");
        out.insert((name, labels), value);
    }
    out
}

fn histogram(samples: &HashMap<Sample, DebugValue>, name: &str) -> Vec<f64> {
    match samples.get(&(name.to_string(), vec![("backend".to_string(), "rocksdb".to_string())])) {
        Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.into_inner()).collect(),
        // Registered before, nothing recorded since the last snapshot.
        None => Vec::new(),
        other => panic!("{name}: expected a histogram, found {other:?}"),
    }
}

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
    snapshotter();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RocksDbBackend::open(dir.path()).unwrap());
    take();
    append_concurrently(&store).await;
    // A snapshot save goes through the writer too, but is no append; a conflict stores nothing.
    store.save_snapshot("s-0", Snapshot::new(1, "{}")).await.unwrap();
    assert!(store.append("s-0", ExpectedVersion::NoStream, vec![NewEvent::new("E", "{}")]).await.is_err());

    let samples = take();
    let groups = histogram(&samples, names::COMMIT_GROUP_APPENDS);
    assert_eq!(groups.iter().sum::<f64>(), 80.0, "every stored append is in one group: {groups:?}");
    let syncs = histogram(&samples, names::SYNC_DURATION);
    assert_eq!(syncs.len(), groups.len(), "one write and sync per group that wrote");
    assert!(syncs.iter().all(|s| *s > 0.0 && *s < 30.0), "{syncs:?}");
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RocksDbBackend::open_with(dir.path(), RocksDbConfig::default().sync(false)).unwrap());
    append_concurrently(&store).await;
    let samples = take();
    assert_eq!(histogram(&samples, names::COMMIT_GROUP_APPENDS).iter().sum::<f64>(), 80.0);
    assert!(histogram(&samples, names::SYNC_DURATION).is_empty(), "no sync without sync mode");
}
