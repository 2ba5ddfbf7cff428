//! Damaged table files are detected and reported as `Error::Corruption`, never skipped or
//! served as data.

use std::path::{Path, PathBuf};

use allframe_backend_rocksdb::{Compression, RocksDbBackend, RocksDbConfig};
use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, NewEvent};

fn config() -> RocksDbConfig {
    // Small memtables so that most events end up in table (.sst) files.
    RocksDbConfig::default().sync(false).write_buffer_bytes(64 << 10).compression(Compression::None)
}

async fn fill(path: &Path) {
    let store = RocksDbBackend::open_with(path, config()).unwrap();
    for batch in 0..20 {
        let events = (0..20).map(|i| NewEvent::new("Filled", vec![(batch * 20 + i) as u8; 1000])).collect();
        store.append("filled", ExpectedVersion::Any, events).await.unwrap();
    }
    store.flush().await.unwrap();
}

fn largest_table(path: &Path) -> PathBuf {
    std::fs::read_dir(path)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("the store wrote table files")
}

/// Opens the store and reads everything; the first error, if any.
async fn open_and_read(path: &Path) -> Option<Error> {
    let store = match RocksDbBackend::open_with(path, config()) {
        Ok(store) => store,
        Err(error) => return Some(error),
    };
    if let Err(error) = store.get_all_events().await {
        return Some(error);
    }
    store.get_events("filled").await.err()
}

#[tokio::test]
async fn flipped_bytes_in_a_table_file_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    fill(&path).await;
    let table = largest_table(&path);
    let mut bytes = std::fs::read(&table).unwrap();
    let middle = bytes.len() / 3;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0xa5;
    }
    std::fs::write(&table, &bytes).unwrap();
    let error = open_and_read(&path).await.expect("the flipped bytes are detected");
    assert!(matches!(error, Error::Corruption { backend: "rocksdb", .. }), "{error:?}");
}

#[tokio::test]
async fn a_truncated_table_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    fill(&path).await;
    let table = largest_table(&path);
    let length = std::fs::metadata(&table).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&table).unwrap().set_len(length / 2).unwrap();
    let error = open_and_read(&path).await.expect("the truncation is detected");
    assert!(matches!(error, Error::Corruption { .. }), "{error:?}");
}
