//! The backend's own metrics (feature `metrics`): appends through group commit report each
//! group transaction's appends, every statement run is timed under its name, and the pool
//! gauges show the pool, all under the documented names and labels.
//!
//! The group-commit task runs on the runtime's other threads, so the recorder is the global
//! one, installed once for this test binary; this file holds one test, so nothing else records.
#![cfg(feature = "metrics")]

mod common;

use std::collections::HashMap;
use std::sync::OnceLock;

use allframe_cqrs_core::metric_names::{self as names, ALL};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};
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

fn label(key: &str, value: &str) -> Vec<(String, String)> {
    vec![(key.into(), value.into())]
}

fn histogram(samples: &HashMap<Sample, DebugValue>, name: &str, labels: Vec<(String, String)>) -> Vec<f64> {
    match samples.get(&(name.to_string(), labels.clone())) {
        Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.into_inner()).collect(),
        None => Vec::new(),
        other => panic!("{name} {labels:?}: expected a histogram, found {other:?}"),
    }
}

fn gauge(samples: &HashMap<Sample, DebugValue>, name: &str, labels: Vec<(String, String)>) -> f64 {
    match samples.get(&(name.to_string(), labels.clone())) {
        Some(DebugValue::Gauge(value)) => value.into_inner(),
        other => panic!("{name} {labels:?}: expected a gauge, found {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commits_statements_and_the_pool_are_reported() {
    snapshotter();
    let Some(fixture) = common::fresh().await else { return };
    let store = fixture.inner().clone();
    take();

    // Concurrent appenders, so that groups hold several appends.
    let mut tasks = Vec::new();
    for appender in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                store
                    .append(&format!("s-{appender}"), ExpectedVersion::Any, vec![NewEvent::new("E", "{}")])
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stored = store.read_stream("s-0", 0, 100).await.unwrap();
    store.read_all(0, 1000).await.unwrap();
    store.stream_version("s-1").await.unwrap();
    let head = store.head_position().await.unwrap();
    store.find_event(stored[0].metadata.event_id).await.unwrap();
    store.list_streams(None, 10).await.unwrap();
    store.save_checkpoint("c", None, head).await.unwrap();
    store.load_checkpoint("c").await.unwrap();
    store.flush().await.unwrap();
    store.stats().await.unwrap();

    let samples = take();
    let groups = histogram(&samples, names::COMMIT_GROUP_APPENDS, label("backend", "postgres"));
    assert_eq!(groups.iter().sum::<f64>(), 80.0, "every append is in one group transaction: {groups:?}");
    let statement = |name: &str| histogram(&samples, names::POSTGRES_STATEMENT_DURATION, label("statement", name));
    let appends = statement("append").len() + statement("append_group").len();
    assert_eq!(appends, groups.len(), "one statement per group transaction");
    for name in [
        "read_stream",
        "read_all",
        "stream_version",
        "head_position",
        "find_event",
        "list_streams",
        "save_checkpoint",
        "load_checkpoint",
        "flush",
        "stats",
        "horizon_status",
    ] {
        let times = statement(name);
        assert!(!times.is_empty(), "{name} is timed");
        assert!(times.iter().all(|t| *t > 0.0 && *t < 30.0), "{name}: {times:?}");
    }
    let in_use = gauge(&samples, names::POSTGRES_POOL_CONNECTIONS, label("state", "in_use"));
    let idle = gauge(&samples, names::POSTGRES_POOL_CONNECTIONS, label("state", "idle"));
    assert!(
        in_use >= 0.0 && idle >= 1.0,
        "after the last statement its connection is back: {in_use} in use, {idle} idle"
    );
    assert!(in_use + idle <= 4.0, "at most the pool's connections");
    assert_eq!(gauge(&samples, names::POSTGRES_POOL_MAX_CONNECTIONS, vec![]), 4.0, "the test pool's size");
}
