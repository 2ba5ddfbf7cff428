//! Restart tests: what survives closing and reopening a durable store.

use std::time::Duration;

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, NewEvent, Snapshot};

fn event(n: u64) -> NewEvent {
    NewEvent::new("Counted", format!("{{\"n\":{n}}}")).with_metadata(
        allframe_cqrs_core::Metadata::new().with_header("n", n.to_string()).with_correlation_id(Default::default()),
    )
}

fn small_segments(dir: &std::path::Path, sync: SyncMode) -> AllSourceConfig {
    AllSourceConfig::default().data_dir(Some(dir.to_path_buf())).sync(sync).segment_size(64 * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_reopen_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut appended = Vec::new();
    {
        let store = AllSourceBackend::with_config(small_segments(dir.path(), SyncMode::Synchronous)).unwrap();
        for n in 0..600u64 {
            let stream = format!("s-{}", n % 7);
            let batch: Vec<_> = (0..(n % 3 + 1)).map(|i| event(n * 10 + i)).collect();
            store.append(&stream, ExpectedVersion::Any, batch.clone()).await.unwrap();
            appended.extend(batch.into_iter().map(|e| (stream.clone(), e)));
        }
        store.save_snapshot("s-3", Snapshot::new(5, "five")).await.unwrap();
        store.save_snapshot("s-3", Snapshot::new(9, "nine")).await.unwrap();
        store.save_snapshot("s-3", Snapshot::new(7, "seven")).await.unwrap();
        let stats = store.engine_stats();
        assert!(stats.wal_segments >= 3, "several segments: {stats:?}");
    }
    let store = AllSourceBackend::with_config(small_segments(dir.path(), SyncMode::Synchronous)).unwrap();
    let all = store.get_all_events().await.unwrap();
    assert_eq!(all.len(), appended.len());
    for (i, (recorded, (stream, new))) in all.iter().zip(&appended).enumerate() {
        assert_eq!(recorded.position, i as u64 + 1);
        assert_eq!(&*recorded.stream_id, stream.as_str());
        assert_eq!(recorded.to_new_event(), *new);
    }
    for s in 0..7 {
        let stream = format!("s-{s}");
        let events = store.get_events(&stream).await.unwrap();
        assert!(events.iter().enumerate().all(|(i, e)| e.version == i as u64 + 1), "versions contiguous");
        assert_eq!(store.stream_version(&stream).await.unwrap(), events.len() as u64);
    }
    let snapshot = store.get_latest_snapshot("s-3").await.unwrap().unwrap();
    assert_eq!((snapshot.version, &snapshot.payload[..]), (9, &b"nine"[..]));
    let stats = store.stats().await.unwrap();
    // Sealed segments were rewritten as Parquet in the background; the rest replayed from the log.
    let engine = store.engine_stats();
    assert!(engine.parquet_files >= 1, "{engine:?}");
    let (from_log, from_parquet) = (engine.recovery.frames, engine.recovery.parquet_rows);
    assert!(from_log < 600 && from_parquet > 0, "{stats:?}");
    assert_eq!(engine.recovery.torn_tail, None);
    assert_eq!(stats.events, appended.len() as u64);
    // Appends continue after the recovered head, conflicts see recovered versions.
    let version = store.stream_version("s-0").await.unwrap();
    let err = store.append("s-0", ExpectedVersion::Exact(version - 1), vec![event(1)]).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { actual, .. } if actual == version));
    let next = store.append("s-0", ExpectedVersion::Exact(version), vec![event(2)]).await.unwrap();
    assert_eq!(next.first_position, appended.len() as u64 + 1);
    assert_eq!(next.stream_version, version + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retry_after_reopen_reports_the_original_append() {
    let dir = tempfile::tempdir().unwrap();
    let batch = vec![event(1), event(2)];
    let original = {
        let store = AllSourceBackend::production(dir.path()).unwrap();
        store.append("other", ExpectedVersion::Any, vec![event(0)]).await.unwrap();
        store.append("retry", ExpectedVersion::NoStream, batch.clone()).await.unwrap()
    };
    let store = AllSourceBackend::production(dir.path()).unwrap();
    let retried = store.append("retry", ExpectedVersion::NoStream, batch.clone()).await.unwrap();
    assert!(retried.deduplicated);
    assert_eq!(
        (retried.first_position, retried.last_position, retried.stream_version),
        (original.first_position, original.last_position, original.stream_version)
    );
    let err = store.append("elsewhere", ExpectedVersion::Any, vec![batch[1].clone()]).await.unwrap_err();
    assert!(matches!(err, Error::DuplicateEventId { stored_version: 2, .. }), "{err:?}");
    assert_eq!(store.get_events("retry").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_is_locked_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = AllSourceBackend::production(dir.path()).unwrap();
    let second = AllSourceBackend::production(dir.path());
    assert!(matches!(second, Err(Error::Locked { .. })), "{second:?}");
    first.append("s", ExpectedVersion::Any, vec![event(1)]).await.unwrap();
    drop(first);
    let again = AllSourceBackend::production(dir.path()).unwrap();
    assert_eq!(again.head_position().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sync_mode_keeps_acknowledged_appends_across_a_clean_close() {
    for sync in [SyncMode::Synchronous, SyncMode::Interval(Duration::from_millis(5)), SyncMode::NoSync] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = AllSourceBackend::with_config(small_segments(dir.path(), sync)).unwrap();
            for n in 0..200 {
                store.append("s", ExpectedVersion::Exact(n), vec![event(n)]).await.unwrap();
            }
            store.flush().await.unwrap();
            let stats = store.stats().await.unwrap();
            assert!(stats.details["durability"].contains(match sync {
                SyncMode::Synchronous => "synchronous",
                SyncMode::Interval(_) => "every",
                SyncMode::NoSync => "no sync",
            }));
        }
        let store = AllSourceBackend::with_config(small_segments(dir.path(), sync)).unwrap();
        assert_eq!(store.stream_version("s").await.unwrap(), 200, "{sync:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_store_writes_no_files() {
    let cwd_before: Vec<_> = std::fs::read_dir(".").unwrap().map(|e| e.unwrap().file_name()).collect();
    let store = AllSourceBackend::new().unwrap();
    store.append("s", ExpectedVersion::Any, vec![event(1)]).await.unwrap();
    assert!(!store.capabilities().persistent);
    assert_eq!(store.stats().await.unwrap().details["storage"], "memory");
    let cwd_after: Vec<_> = std::fs::read_dir(".").unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(cwd_before.len(), cwd_after.len());
}

mod support;

/// The reopening wrapper used by `conformance_reopened` really reopens the store mid-case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reopening_conformance_wrapper_reopens() {
    let backend = std::sync::Arc::new(support::Reopening::open(3));
    allframe_cqrs_testkit::cases::versions_are_contiguous(backend.clone()).await;
    allframe_cqrs_testkit::cases::snapshots_keep_the_latest(backend.clone()).await;
    allframe_cqrs_testkit::cases::idempotent_retries(backend.clone()).await;
    let reopens = backend.reopens.load(std::sync::atomic::Ordering::SeqCst);
    assert!(reopens >= 3, "reopened {reopens} times");
}

/// Syncing modes write zeros ahead of the log (so syncs overwrite allocated blocks instead of
/// growing the file); no sync mode only extends the file (sparse), as zeros would double the
/// bytes it writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_space_is_zero_filled_when_syncing_and_sparse_without_sync() {
    use std::os::unix::fs::MetadataExt;
    for sync in [SyncMode::Synchronous, SyncMode::NoSync] {
        let dir = tempfile::tempdir().unwrap();
        let store = AllSourceBackend::with_config(small_segments(dir.path(), sync).segment_size(4 << 20)).unwrap();
        for n in 0..10 {
            store.append("s", ExpectedVersion::Exact(n), vec![event(n)]).await.unwrap();
        }
        store.flush().await.unwrap();
        let meta = std::fs::metadata(dir.path().join("wal-0000000001.log")).unwrap();
        let allocated = meta.blocks() * 512;
        assert!(meta.len() >= 64 * 1024, "{sync:?}: the segment is extended ahead of the log ({} bytes)", meta.len());
        match sync {
            SyncMode::NoSync => {
                assert!(allocated < meta.len() / 2, "{sync:?}: {allocated} of {} bytes allocated", meta.len())
            }
            _ => assert!(allocated >= meta.len(), "{sync:?}: {allocated} of {} bytes allocated", meta.len()),
        }
        drop(store);
        let store = AllSourceBackend::with_config(small_segments(dir.path(), sync)).unwrap();
        assert_eq!(store.stream_version("s").await.unwrap(), 10, "{sync:?}");
    }
}
