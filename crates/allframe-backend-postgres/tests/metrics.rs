//! The backend's own metrics (feature `metrics`): appends through group commit report each
//! group transaction's appends, every statement run is timed under its name, and the pool
//! gauges show the pool, all under the documented names and labels.
//!
//! The group-commit task runs on the runtime's other threads, so the recorder is the global
//! one, installed once for this test binary; this file holds one test, so nothing else records.
#![cfg(feature = "metrics")]

mod common;

use allframe_cqrs_core::metric_names as names;
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};
use allframe_cqrs_testkit::metrics::{install, take};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commits_statements_and_the_pool_are_reported() {
    install();
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
    let groups = samples.histogram(names::COMMIT_GROUP_APPENDS, &[("backend", "postgres")]);
    assert_eq!(groups.iter().sum::<f64>(), 80.0, "every append is in one group transaction: {groups:?}");
    let statement = |name: &str| samples.histogram(names::POSTGRES_STATEMENT_DURATION, &[("statement", name)]);
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
    let in_use = samples.gauge(names::POSTGRES_POOL_CONNECTIONS, &[("state", "in_use")]).unwrap();
    let idle = samples.gauge(names::POSTGRES_POOL_CONNECTIONS, &[("state", "idle")]).unwrap();
    assert!(
        in_use >= 0.0 && idle >= 1.0,
        "after the last statement its connection is back: {in_use} in use, {idle} idle"
    );
    assert!(in_use + idle <= 4.0, "at most the pool's connections");
    assert_eq!(samples.gauge(names::POSTGRES_POOL_MAX_CONNECTIONS, &[]).unwrap(), 4.0, "the test pool's size");
}
