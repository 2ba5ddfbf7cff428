//! Empty log segments at the end of the log, as a failed group commit that spanned rolls leaves
//! them when the removal of one of them failed too: the store opens, keeps only the lowest as
//! its active segment, and Parquet conversion goes on past it (an empty segment sealed before
//! the active one used to stop conversion for good: a Parquet file of no rows has no position).

use std::path::Path;
use std::time::Duration;

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};

const SEGMENT: u64 = 64 * 1024;

fn config(dir: &Path) -> AllSourceConfig {
    AllSourceConfig::durable(dir).segment_size(SEGMENT)
}

/// An empty log segment `seq`: its header (crate docs: magic, format version, segment number,
/// CRC32 of the first 24 bytes), then zeros.
fn empty_segment(dir: &Path, seq: u32) {
    let mut bytes = vec![0u8; SEGMENT as usize];
    bytes[0..8].copy_from_slice(b"AFSRCWAL");
    bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    bytes[16..24].copy_from_slice(&u64::from(seq).to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.join(format!("wal-{seq:010}.log")), bytes).unwrap();
}

fn highest_segment(dir: &Path) -> u32 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok())
        .max()
        .expect("a log segment")
}

async fn fill(store: &AllSourceBackend, from: u64, count: u64) {
    for n in from..from + count {
        let event = NewEvent::new("Filled", format!(r#"{{"n":{n},"pad":"{}"}}"#, "f".repeat(300)));
        store.append("filled", ExpectedVersion::Exact(n), vec![event]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_segments_ending_the_log_open_and_conversion_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = AllSourceBackend::with_config(config(dir.path())).unwrap();
    fill(&store, 0, 150).await;
    drop(store);
    let last = highest_segment(dir.path());
    empty_segment(dir.path(), last + 1);
    empty_segment(dir.path(), last + 2);

    let store = AllSourceBackend::with_config(config(dir.path())).unwrap();
    assert_eq!(store.stream_version("filled").await.unwrap(), 150, "every event is there");
    assert!(!dir.path().join(format!("wal-{:010}.log", last + 2)).exists(), "the highest empty segment is removed");
    // Enough to roll past the segments the failed write left, then wait for the converter.
    fill(&store, 150, 600).await;
    for _ in 0..400 {
        let stats = store.engine_stats();
        if stats.parquet_conversion_error.is_some() || stats.parquet_files > u64::from(last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stats = store.engine_stats();
    assert_eq!(stats.parquet_conversion_error, None, "conversion goes on past the empty segment");
    assert!(stats.parquet_files > u64::from(last), "segments after the empty one are converted: {stats:?}");
    drop(store);
    let store = AllSourceBackend::with_config(config(dir.path())).unwrap();
    assert_eq!(store.stream_version("filled").await.unwrap(), 750, "and the store reopens with everything");
}
