//! The engine's metrics (feature `metrics`): appends through a durable store report every
//! group commit's appends and its write-and-sync time under the documented names and labels,
//! and the segment and backlog gauges follow the log segments being sealed and converted.
//!
//! The writer and the converter run on their own threads, so the recorder is the global one,
//! installed once for this test binary; this file holds one test, so nothing else records.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
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

fn backend() -> Vec<(String, String)> {
    vec![("backend".into(), "allsource".into())]
}

fn kind(kind: &str) -> Vec<(String, String)> {
    vec![("kind".into(), kind.into())]
}

fn histogram(samples: &HashMap<Sample, DebugValue>, name: &str, labels: Vec<(String, String)>) -> Vec<f64> {
    match samples.get(&(name.to_string(), labels)) {
        Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.into_inner()).collect(),
        // Registered before, nothing recorded since the last snapshot.
        None => Vec::new(),
        other => panic!("{name}: expected a histogram, found {other:?}"),
    }
}

fn gauge(samples: &HashMap<Sample, DebugValue>, name: &str, labels: Vec<(String, String)>) -> f64 {
    match samples.get(&(name.to_string(), labels)) {
        Some(DebugValue::Gauge(value)) => value.into_inner(),
        other => panic!("{name}: expected a gauge, found {other:?}"),
    }
}

fn log_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name().to_string_lossy().into_owned();
            name.starts_with("wal-") && name.ends_with(".log")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_syncs_segments_and_backlog_are_reported() {
    snapshotter();
    let dir = tempfile::tempdir().unwrap();
    let config = AllSourceConfig::durable(dir.path()).segment_size(64 * 1024);
    let store = std::sync::Arc::new(AllSourceBackend::with_config(config).unwrap());

    // Concurrent appenders, so that some groups hold several appends; 1 KiB each, so that
    // about 200 of them fill three 64 KiB segments.
    let mut tasks = Vec::new();
    for appender in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let event = NewEvent::new("Filled", vec![b'x'; 1024]);
                store.append(&format!("s-{appender}"), ExpectedVersion::Any, vec![event]).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = store.engine_stats();
        // `wal_segments` counts the active segment, which is never converted.
        if stats.parquet_backlog == 0 && stats.parquet_conversions + 1 == stats.wal_segments {
            break;
        }
        assert!(Instant::now() < deadline, "conversion did not catch up: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = store.engine_stats();
    assert!(stats.parquet_conversions >= 2, "the appends filled several segments: {stats:?}");

    let samples = take();
    let groups = histogram(&samples, names::COMMIT_GROUP_APPENDS, backend());
    assert_eq!(groups.len() as u64, stats.group_commits, "one observation per group commit");
    assert_eq!(groups.iter().sum::<f64>(), 200.0, "every append is in one group");
    let syncs = histogram(&samples, names::SYNC_DURATION, backend());
    assert_eq!(syncs.len() as u64, stats.group_commits, "one write-and-sync per group (synchronous mode)");
    assert!(syncs.iter().all(|s| *s > 0.0 && *s < 30.0), "{syncs:?}");
    assert_eq!(gauge(&samples, names::ALLSOURCE_CONVERSION_BACKLOG, vec![]), 0.0);
    assert_eq!(gauge(&samples, names::ALLSOURCE_SEGMENTS, kind("parquet")), stats.parquet_files as f64);
    assert_eq!(gauge(&samples, names::ALLSOURCE_SEGMENTS, kind("log")), log_files(dir.path()) as f64);
    drop(store);

    // Interval mode: groups are written without a sync; the syncs are timed on their own.
    let dir = tempfile::tempdir().unwrap();
    let config = AllSourceConfig::durable(dir.path()).sync(SyncMode::Interval(Duration::from_secs(3600)));
    let store = AllSourceBackend::with_config(config).unwrap();
    for _ in 0..3 {
        store.append("s", ExpectedVersion::Any, vec![NewEvent::new("E", "{}")]).await.unwrap();
    }
    let samples = take();
    assert_eq!(histogram(&samples, names::COMMIT_GROUP_APPENDS, backend()).iter().sum::<f64>(), 3.0);
    assert!(histogram(&samples, names::SYNC_DURATION, backend()).is_empty(), "no sync yet");
    store.flush().await.unwrap();
    let samples = take();
    assert_eq!(histogram(&samples, names::SYNC_DURATION, backend()).len(), 1, "the flush's sync");
}
