//! A full disk, simulated with a small tmpfs: appends and snapshot saves fail with a typed
//! error (no panic), and once space is freed and the store reopened nothing acknowledged is
//! lost, positions have no gap and appends work again.
//!
//! Mounting needs root and a sandbox that allows `mount`; elsewhere the test prints that it
//! skipped and passes.

#[path = "common/tmpfs.rs"]
mod tmpfs;

use tmpfs::{fill, mount_tmpfs};

use std::path::Path;

use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};
use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, NewEvent, Snapshot};

/// One acknowledged append.
#[derive(Debug)]
struct Ack {
    stream: String,
    first_version: u64,
    first_position: u64,
    count: u64,
    tag: u64,
}

fn events(tag: u64, count: u64, payload_bytes: usize) -> Vec<NewEvent> {
    (0..count).map(|i| NewEvent::new("Filled", format!("{tag}/{i}/{}", "x".repeat(payload_bytes)))).collect()
}

/// The error and its source, for the printed summary.
fn with_source(error: &Error) -> String {
    let source = std::error::Error::source(error).map(|s| format!(" ({s})")).unwrap_or_default();
    format!("{error}{source}")
}

fn typed_write_error(error: &Error) -> bool {
    matches!(error, Error::Io { .. } | Error::Backend { .. } | Error::Closed { .. })
}

async fn full_disk_round(root: &Path, label: &str, write_buffer_bytes: usize) -> Option<(usize, String)> {
    let mount = mount_tmpfs("full disk", &root.join(label), 6 << 20)?;
    let path = mount.0.join("store");
    let config = RocksDbConfig::default().write_buffer_bytes(write_buffer_bytes).block_cache_bytes(1 << 20);
    let store = RocksDbBackend::open_with(&path, config).unwrap();
    store.append("s-0", ExpectedVersion::NoStream, events(0, 1, 10)).await.unwrap();
    let ballast = mount.0.join("ballast");
    fill(&ballast, 1 << 20);

    let mut acks = vec![Ack { stream: "s-0".into(), first_version: 1, first_position: 1, count: 1, tag: 0 }];
    let mut failure = None;
    // Bounded: 1 MiB of free space holds a few hundred of these appends.
    for tag in 1..20_000u64 {
        let stream = format!("s-{}", tag % 3);
        let count = 1 + tag % 4;
        match store.append(&stream, ExpectedVersion::Any, events(tag, count, 2000)).await {
            Ok(result) => acks.push(Ack {
                stream,
                first_version: result.stream_version + 1 - count,
                first_position: result.first_position,
                count,
                tag,
            }),
            Err(error) => {
                assert!(typed_write_error(&error), "{label}: a full disk is a typed I/O error, got {error:?}");
                failure = Some(error);
                break;
            }
        }
    }
    let failure = failure.unwrap_or_else(|| panic!("{label}: the disk never filled"));
    // More writes on the full disk: typed errors (or, if RocksDB got room back, stored).
    for tag in 20_000..20_005u64 {
        match store.append("s-1", ExpectedVersion::Any, events(tag, 2, 2000)).await {
            Ok(result) => acks.push(Ack {
                stream: "s-1".into(),
                first_version: result.stream_version - 1,
                first_position: result.first_position,
                count: 2,
                tag,
            }),
            Err(error) => assert!(typed_write_error(&error), "{label}: {error:?}"),
        }
    }
    let version = store.stream_version("s-0").await.unwrap();
    if let Err(error) = store.save_snapshot("s-0", Snapshot::new(version, vec![7u8; 4096])).await {
        assert!(typed_write_error(&error), "{label}: a snapshot on a full disk: {error:?}");
    }
    // Reads still work and see what was acknowledged.
    let read = store.get_all_events().await.unwrap();
    assert!(read.len() as u64 >= acks.iter().map(|a| a.count).sum::<u64>(), "{label}: reads on a full disk");
    drop(store);
    // Reopening on the full disk: opened or a typed error, and the store survives either way.
    let full_reopen = match RocksDbBackend::open_with(&path, config) {
        Ok(reopened) => {
            drop(reopened);
            "opened".to_string()
        }
        Err(error) => {
            assert!(typed_write_error(&error), "{label}: reopen on a full disk: {error:?}");
            with_source(&error)
        }
    };
    let store = match RocksDbBackend::open_with(&path, config) {
        Ok(store) => store,
        Err(error) => {
            assert!(typed_write_error(&error), "{label}: reopen on a full disk: {error:?}");
            std::fs::remove_file(&ballast).unwrap();
            fill(&ballast, 1 << 20);
            RocksDbBackend::open_with(&path, config).expect("reopen with a little space")
        }
    };

    // Space freed with the store still open: RocksDB keeps its background error until the
    // store is reopened (seen: every later write fails), so an append is stored or typed.
    let _ = std::fs::remove_file(&ballast);
    match store.append("s-2", ExpectedVersion::Any, events(25_000, 2, 2000)).await {
        Ok(result) => acks.push(Ack {
            stream: "s-2".into(),
            first_version: result.stream_version - 1,
            first_position: result.first_position,
            count: 2,
            tag: 25_000,
        }),
        Err(error) => assert!(typed_write_error(&error), "{label}: after space was freed: {error:?}"),
    }
    drop(store);

    let store = RocksDbBackend::open_with(&path, config).expect("reopen once space is freed");
    let all = store.get_all_events().await.unwrap();
    assert_eq!(all.len() as u64, store.head_position().await.unwrap(), "{label}: positions 1..=head");
    assert!(all.iter().enumerate().all(|(i, e)| e.position == i as u64 + 1), "{label}: no gap in positions");
    for ack in &acks {
        for i in 0..ack.count {
            let Some(event) = all.get((ack.first_position + i - 1) as usize) else {
                panic!("{label}: acknowledged append lost: {ack:?}")
            };
            assert_eq!(event.stream_id, ack.stream.as_str(), "{label}: {ack:?}");
            assert_eq!(event.version, ack.first_version + i, "{label}: {ack:?}");
            assert!(event.payload.starts_with(format!("{}/{i}/", ack.tag).as_bytes()), "{label}: {ack:?}");
        }
    }
    for stream in ["s-0", "s-1", "s-2"] {
        let events = store.get_events(stream).await.unwrap();
        assert!(events.iter().enumerate().all(|(i, e)| e.version == i as u64 + 1), "{label}: versions of {stream}");
        assert_eq!(store.stream_version(stream).await.unwrap(), events.len() as u64);
    }
    let after = store.append("s-0", ExpectedVersion::Any, events(30_000, 3, 2000)).await.unwrap();
    assert_eq!(after.first_position, all.len() as u64 + 1, "{label}: appends continue at the head");
    drop(store);
    let store = RocksDbBackend::open_with(&path, config).unwrap();
    assert_eq!(store.head_position().await.unwrap(), all.len() as u64 + 3);
    drop(store);
    drop(mount);
    Some((acks.len(), format!("{}; a reopen on the full disk: {full_reopen}", with_source(&failure))))
}

#[tokio::test]
async fn full_disk_fails_typed_and_loses_nothing_acknowledged() {
    let root = tempfile::tempdir().unwrap();
    // A large memtable: the write-ahead log fills the disk. A small one: flushes fail too.
    for (label, write_buffer_bytes) in [("wal-fills", 4 << 20), ("flushes-fail", 64 << 10)] {
        let Some((acks, failure)) = full_disk_round(root.path(), label, write_buffer_bytes).await else { return };
        eprintln!("full disk ({label}): {acks} appends acknowledged, then: {failure}");
    }
}

/// A first open on a full disk fails with a typed error; once there is space, the next open
/// creates the store (the creation cut short by the full disk is done again).
#[tokio::test]
async fn first_open_on_a_full_disk_is_typed_and_redone_later() {
    let root = tempfile::tempdir().unwrap();
    let Some(mount) = mount_tmpfs("full disk", &root.path().join("first-open"), 2 << 20) else { return };
    let ballast = mount.0.join("ballast");
    let mut outcomes = Vec::new();
    // Less and less free space: each open is cut short at a different step (or succeeds).
    for (i, leave) in [1u64 << 20, 256 << 10, 64 << 10, 16 << 10, 4 << 10, 0].into_iter().enumerate() {
        fill(&ballast, leave);
        let path = mount.0.join(format!("store-{i}"));
        match RocksDbBackend::open(&path) {
            Ok(store) => {
                outcomes.push(format!("{leave} B free: opened"));
                drop(store);
            }
            Err(error) => {
                assert!(typed_write_error(&error), "first open with {leave} bytes free: {error:?}");
                outcomes.push(format!("{leave} B free: {}", with_source(&error)));
            }
        }
        std::fs::remove_file(&ballast).unwrap();
        let store = RocksDbBackend::open(&path).expect("the next open, with space, creates the store");
        assert_eq!(store.head_position().await.unwrap(), 0);
        store.append("s", ExpectedVersion::NoStream, events(1, 2, 10)).await.unwrap();
        drop(store);
        let store = RocksDbBackend::open(&path).unwrap();
        assert_eq!(store.get_events("s").await.unwrap().len(), 2);
        drop(store);
        std::fs::remove_dir_all(&path).unwrap();
    }
    eprintln!("full disk, first open: {}", outcomes.join("; "));
}
