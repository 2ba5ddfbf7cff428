//! The engine's metrics (feature `metrics`): appends through a durable store report every
//! group commit's appends and its write-and-sync time under the documented names and labels,
//! and the segment and backlog gauges follow the log segments being sealed and converted.
//!
//! The writer and the converter run on their own threads, so the recorder is the global one,
//! installed once for this test binary; this file holds one test, so nothing else records.
#![cfg(feature = "metrics")]

use std::time::{Duration, Instant};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
use allframe_cqrs_core::metric_names as names;
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};
use allframe_cqrs_testkit::metrics::{install, take};

const BACKEND: &[(&str, &str)] = &[("backend", "allsource")];

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
    install();
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
    let groups = samples.histogram(names::COMMIT_GROUP_APPENDS, BACKEND);
    assert_eq!(groups.len() as u64, stats.group_commits, "one observation per group commit");
    assert_eq!(groups.iter().sum::<f64>(), 200.0, "every append is in one group");
    let syncs = samples.histogram(names::SYNC_DURATION, BACKEND);
    assert_eq!(syncs.len() as u64, stats.group_commits, "one write-and-sync per group (synchronous mode)");
    assert!(syncs.iter().all(|s| *s > 0.0 && *s < 30.0), "{syncs:?}");
    assert_eq!(samples.gauge(names::ALLSOURCE_CONVERSION_BACKLOG, &[]).unwrap(), 0.0);
    assert_eq!(samples.gauge(names::ALLSOURCE_SEGMENTS, &[("kind", "parquet")]).unwrap(), stats.parquet_files as f64);
    assert_eq!(samples.gauge(names::ALLSOURCE_SEGMENTS, &[("kind", "log")]).unwrap(), log_files(dir.path()) as f64);
    drop(store);

    // Interval mode: groups are written without a sync; the syncs are timed on their own.
    let dir = tempfile::tempdir().unwrap();
    let config = AllSourceConfig::durable(dir.path()).sync(SyncMode::Interval(Duration::from_secs(3600)));
    let store = AllSourceBackend::with_config(config).unwrap();
    for _ in 0..3 {
        store.append("s", ExpectedVersion::Any, vec![NewEvent::new("E", "{}")]).await.unwrap();
    }
    let samples = take();
    assert_eq!(samples.histogram(names::COMMIT_GROUP_APPENDS, BACKEND).iter().sum::<f64>(), 3.0);
    assert!(samples.histogram(names::SYNC_DURATION, BACKEND).is_empty(), "no sync yet");
    store.flush().await.unwrap();
    let samples = take();
    assert_eq!(samples.histogram(names::SYNC_DURATION, BACKEND).len(), 1, "the flush's sync");
}
