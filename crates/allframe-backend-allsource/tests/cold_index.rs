//! The cold index: once a log segment is rewritten as Parquet, its events leave the exact
//! in-memory index (event ids, frames, positions per stream) and are found through the
//! segment's index file. Reads across cold and tail segments, idempotent retries and duplicate
//! ids must behave exactly as before, after a reopen too, and a missing or damaged index file
//! is rebuilt from its Parquet segment.

use std::path::Path;
use std::time::{Duration, Instant};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig};
use allframe_cqrs_core::{AppendResult, Error, EventId, EventStoreBackend, ExpectedVersion, NewEvent, RecordedEvent};

const STREAMS: u64 = 5;

fn config(dir: &Path) -> AllSourceConfig {
    AllSourceConfig::durable(dir).segment_size(64 * 1024)
}

/// The event appended `n`-th: ids taken from `n`, so that a retry can rebuild it; ids of odd
/// appends are not time-ordered (they fall inside every segment's id range).
fn event(n: u64) -> NewEvent {
    let id = if n.is_multiple_of(2) {
        EventId::new()
    } else {
        EventId::from_u128(u128::from(n) * 0x9e37_79b9_7f4a_7c15_f39c)
    };
    NewEvent::new("Noted", format!("{{\"n\":{n},\"pad\":\"{}\"}}", "p".repeat(90))).with_event_id(id)
}

struct Append {
    stream: String,
    events: Vec<NewEvent>,
    result: AppendResult,
}

/// Checks every stream read (whole, and pages that cross segment boundaries), the global
/// read, idempotent retries of the first appends and a duplicate id against `all`.
async fn check(store: &AllSourceBackend, all: &[RecordedEvent], appends: &[Append]) {
    assert_eq!(&store.read_all(0, usize::MAX).await.unwrap(), all);
    assert_eq!(store.read_all(37, 500).await.unwrap(), all[37..537].to_vec());
    for s in 0..STREAMS {
        let stream = format!("note-{s}");
        let expected: Vec<RecordedEvent> = all.iter().filter(|e| e.stream_id == stream.as_str()).cloned().collect();
        assert_eq!(store.read_stream(&stream, 0, usize::MAX).await.unwrap(), expected, "{stream}");
        for (after, limit) in [(1, 7), (100, 250), (333, 1), (expected.len() as u64 - 3, 10)] {
            let page = store.read_stream(&stream, after, limit).await.unwrap();
            let from = after as usize;
            assert_eq!(page, expected[from..(from + limit).min(expected.len())].to_vec(), "{stream} after {after}");
        }
        assert_eq!(store.stream_version(&stream).await.unwrap(), expected.len() as u64);
    }
    // Retries of old appends (single events and batches, time-ordered ids and not) are
    // recognised and answered with the original result.
    for append in appends.iter().take(40).chain(appends.iter().rev().take(3)) {
        let again = store.append(&append.stream, ExpectedVersion::Exact(0), append.events.clone()).await.unwrap();
        assert_eq!(again, AppendResult { deduplicated: true, ..append.result }, "retry into {}", append.stream);
    }
    // An old id in another stream is a duplicate naming where it is stored.
    let old = &appends[3];
    match store.append("elsewhere", ExpectedVersion::Any, vec![old.events[0].clone()]).await {
        Err(Error::DuplicateEventId { event_id, stored_stream, stored_version }) => {
            assert_eq!(event_id, old.events[0].metadata.event_id);
            assert_eq!(stored_stream, old.stream.as_str());
            assert_eq!(stored_version, old.result.stream_version - old.events.len() as u64 + 1);
        }
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    assert_eq!(store.stream_version("elsewhere").await.unwrap(), 0, "nothing was stored");
}

#[test]
fn cold_segments_leave_memory_and_answer_reads_retries_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (all, appends) = rt.block_on(async {
        let store = AllSourceBackend::with_config(config(dir.path())).unwrap();
        let mut appends = Vec::new();
        let mut n = 0;
        while n < 3000 {
            let stream = format!("note-{}", (n / 3) % STREAMS);
            // Every fourth append is a batch of three.
            let count = if (n / 3).is_multiple_of(4) { 3 } else { 1 };
            let events: Vec<NewEvent> = (n..n + count).map(event).collect();
            let result = store.append(&stream, ExpectedVersion::Any, events.clone()).await.unwrap();
            appends.push(Append { stream, events, result });
            n += count;
        }
        let started = Instant::now();
        loop {
            let stats = store.engine_stats();
            if stats.parquet_files + 1 >= stats.wal_segments {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "segments were not converted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The converter may still be moving ids out; wait until the tail map is small.
        let stats = loop {
            let stats = store.engine_stats();
            if stats.index_cold_segments == stats.parquet_files || started.elapsed() > Duration::from_secs(60) {
                break stats;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let cold = stats.index_cold_segments;
        assert!(cold >= 3, "{cold} cold segments");
        let tail_ids = stats.index_tail_ids;
        let tail_frames = stats.index_frames;
        assert!(tail_ids < 1000, "{tail_ids} of 3000 event ids are still in the exact map");
        assert!(tail_frames < 1000, "{tail_frames} frames are still in the tail index");
        assert!(stats.index_cold_memory_bytes > 0);
        let all = store.get_all_events().await.unwrap();
        assert_eq!(all.len(), 3000);
        check(&store, &all, &appends).await;
        (all, appends)
    });
    // Reopened: cold segments come from the index files, nothing is rebuilt.
    rt.block_on(async {
        let store = AllSourceBackend::with_config(config(dir.path())).unwrap();
        let stats = store.engine_stats();
        assert_eq!(u64::from(stats.recovery.rebuilt_indexes), 0);
        assert!(stats.index_tail_ids < 1000);
        check(&store, &all, &appends).await;
    });
    // One index file lost, one damaged: both are rebuilt from their Parquet files.
    std::fs::remove_file(dir.path().join("seg-0000000001.idx")).unwrap();
    let damaged = dir.path().join("seg-0000000002.idx");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&damaged, &bytes).unwrap();
    rt.block_on(async {
        let store = AllSourceBackend::with_config(config(dir.path())).unwrap();
        let stats = store.engine_stats();
        assert_eq!(u64::from(stats.recovery.rebuilt_indexes), 2);
        check(&store, &all, &appends).await;
    });
    assert!(dir.path().join("seg-0000000001.idx").exists(), "the lost index file is written again");
    assert_ne!(std::fs::read(&damaged).unwrap(), bytes, "the damaged index file is replaced");
    rt.block_on(async {
        let store = AllSourceBackend::with_config(config(dir.path())).unwrap();
        assert_eq!(u64::from(store.engine_stats().recovery.rebuilt_indexes), 0);
    });
}
