//! Closing and reopening a store: everything stored survives, and counters are recovered.
//! Also the typed errors of `open`: a locked store, and paths that are not a store.

use std::path::Path;

use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};
use allframe_cqrs_core::{Error, EventId, EventStoreBackend, ExpectedVersion, Metadata, NewEvent, Snapshot, Timestamp};

fn event(n: u128) -> NewEvent {
    let mut metadata = Metadata::new().with_event_id(EventId::from_u128(n)).with_header("n", n.to_string());
    metadata.timestamp = Timestamp::from_micros(1_700_000_000_000_000 + n as i64);
    NewEvent::new("Numbered", format!("{{\"n\":{n}}}")).with_metadata(metadata)
}

fn events(from: u128, count: u128) -> Vec<NewEvent> {
    (from..from + count).map(event).collect()
}

fn open(path: &Path) -> RocksDbBackend {
    RocksDbBackend::open(path).expect("open")
}

#[tokio::test]
async fn versions_positions_snapshots_and_ids_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");

    let store = open(&path);
    let a1 = store.append("a", ExpectedVersion::NoStream, events(1, 3)).await.unwrap();
    let b1 = store.append("b", ExpectedVersion::NoStream, events(100, 2)).await.unwrap();
    store.save_snapshot("a", Snapshot::new(2, &b"state-a-2"[..])).await.unwrap();
    assert_eq!((a1.first_position, a1.last_position, b1.last_position), (1, 3, 5));
    drop(store);

    // Step 2: everything is there, and appends continue from the recovered heads.
    let store = open(&path);
    assert_eq!(store.head_position().await.unwrap(), 5);
    assert_eq!(store.stream_version("a").await.unwrap(), 3);
    assert_eq!(store.stream_version("b").await.unwrap(), 2);
    let all = store.get_all_events().await.unwrap();
    assert_eq!(all.iter().map(|e| e.position).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        all.iter().map(|e| (e.stream_id.to_string(), e.version)).collect::<Vec<_>>(),
        [("a".to_string(), 1), ("a".into(), 2), ("a".into(), 3), ("b".into(), 1), ("b".into(), 2)]
    );
    assert_eq!(all[0].to_new_event(), event(1), "payload, type and metadata round-trip through the disk");
    let err = store.append("a", ExpectedVersion::Exact(2), events(10, 1)).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { actual: 3, .. }), "{err:?}");
    let a2 = store.append("a", ExpectedVersion::Exact(3), events(4, 2)).await.unwrap();
    assert_eq!((a2.stream_version, a2.first_position, a2.last_position), (5, 6, 7));
    let snapshot = store.get_latest_snapshot("a").await.unwrap().expect("snapshot survives");
    assert_eq!((snapshot.version, &snapshot.payload[..]), (2, &b"state-a-2"[..]));
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.events, stats.streams, stats.snapshots, stats.head_position), (7, 2, 1, 7));
    drop(store);

    // Step 3: retries of appends made before a reopen are recognised; partial repeats are refused.
    let store = open(&path);
    let retry = store.append("a", ExpectedVersion::NoStream, events(1, 3)).await.unwrap();
    assert_eq!(retry, allframe_cqrs_core::AppendResult { deduplicated: true, ..a1 });
    let retry = store.append("a", ExpectedVersion::Any, events(4, 2)).await.unwrap();
    assert_eq!(retry, allframe_cqrs_core::AppendResult { deduplicated: true, ..a2 });
    let err = store.append("a", ExpectedVersion::Any, vec![event(3), event(999)]).await.unwrap_err();
    assert!(matches!(err, Error::DuplicateEventId { stored_version: 3, .. }), "{err:?}");
    let err = store.append("b", ExpectedVersion::Any, vec![event(1)]).await.unwrap_err();
    assert!(
        matches!(&err, Error::DuplicateEventId { stored_stream, stored_version: 1, .. } if stored_stream == "a"),
        "{err:?}"
    );
    // A lower snapshot does not replace the stored one; a higher one does, and survives.
    store.save_snapshot("a", Snapshot::new(1, &b"older"[..])).await.unwrap();
    store.save_snapshot("b", Snapshot::new(2, &b"state-b-2"[..])).await.unwrap();
    drop(store);

    let store = open(&path);
    assert_eq!(&store.get_latest_snapshot("a").await.unwrap().unwrap().payload[..], b"state-a-2");
    assert_eq!(store.get_latest_snapshot("b").await.unwrap().unwrap().version, 2);
    let listed = store.list_streams(None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|(id, v)| (id.to_string(), *v)).collect::<Vec<_>>(),
        [("a".to_string(), 5), ("b".into(), 2)]
    );
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.events, stats.streams, stats.snapshots), (7, 2, 2));
    let stream_a = store.get_events("a").await.unwrap();
    assert_eq!(stream_a.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(stream_a.iter().map(|e| e.position).collect::<Vec<_>>(), vec![1, 2, 3, 6, 7]);
}

#[tokio::test]
async fn many_appends_survive_reopen_without_sync_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let config = RocksDbConfig::default().sync(false).write_buffer_bytes(256 << 10);
    let store = RocksDbBackend::open_with(&path, config).unwrap();
    for i in 0..200u128 {
        let stream = format!("s-{}", i % 7);
        store.append(&stream, ExpectedVersion::Any, events(1_000 + i * 10, 10)).await.unwrap();
    }
    store.flush().await.unwrap();
    drop(store);
    // Small memtables made RocksDB write table files: reads now span tables and memtables.
    let store = RocksDbBackend::open_with(&path, config).unwrap();
    assert_eq!(store.head_position().await.unwrap(), 2_000);
    let all = store.get_all_events().await.unwrap();
    assert!(all.iter().enumerate().all(|(i, e)| e.position == i as u64 + 1));
    for s in 0..7 {
        let stream = store.get_events(&format!("s-{s}")).await.unwrap();
        assert!(stream.iter().enumerate().all(|(i, e)| e.version == i as u64 + 1));
        let expected = (0..200).filter(|i| i % 7 == s).count() * 10;
        assert_eq!(stream.len(), expected);
    }
    let page = store.read_stream("s-3", 15, 7).await.unwrap();
    assert_eq!(page.iter().map(|e| e.version).collect::<Vec<_>>(), (16..23).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path);
    let err = RocksDbBackend::open(&path).unwrap_err();
    assert!(matches!(&err, Error::Locked { path: locked, .. } if locked == &path), "{err:?}");
    drop(store);
    open(&path);
}

/// Run by `a_second_process_is_locked` in a child process: tries to open the store named by the
/// environment and exits with 3 when it is locked.
#[test]
#[ignore = "child process of a_second_process_is_locked"]
fn lock_child() {
    let Ok(path) = std::env::var("ALLFRAME_ROCKSDB_LOCK_CHILD") else { return };
    match RocksDbBackend::open(&path) {
        Err(Error::Locked { .. }) => std::process::exit(3),
        other => {
            eprintln!("expected Locked, got {other:?}");
            std::process::exit(4)
        }
    }
}

#[tokio::test]
async fn a_second_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let _store = open(&path);
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lock_child", "--ignored", "--nocapture"])
        .env("ALLFRAME_ROCKSDB_LOCK_CHILD", &path)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3), "the child process saw the store as locked");
}

#[test]
fn paths_that_are_not_stores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_store = |path: &Path| match RocksDbBackend::open(path) {
        Err(Error::NotAStore { backend: "rocksdb", reason, .. }) => reason,
        other => panic!("expected NotAStore for {}, got {other:?}", path.display()),
    };

    let file = dir.path().join("file");
    std::fs::write(&file, b"hello").unwrap();
    assert!(not_a_store(&file).contains("file"));

    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    assert!(not_a_store(&foreign).contains("not a RocksDB"));
    assert_eq!(std::fs::read(foreign.join("notes.txt")).unwrap(), b"mine", "nothing was written");

    // A RocksDB database of some other program.
    let other = dir.path().join("other-rocksdb");
    {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = rocksdb::DB::open(&options, &other).unwrap();
        db.put(b"key", b"value").unwrap();
    }
    assert!(not_a_store(&other).contains("column families"));

    // RocksDB databases with our column families but no marker, or another layout's marker.
    let families = ["default", "events", "stream_index", "stream_heads", "event_ids", "snapshots"];
    for (name, marker) in [("no-marker", None), ("other-layout", Some(&b"some other layout 9"[..]))] {
        let path = dir.path().join(name);
        {
            let mut options = rocksdb::Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let db = rocksdb::DB::open_cf(&options, &path, families).unwrap();
            let events = db.cf_handle("events").unwrap();
            db.put_cf(events, 1u64.to_be_bytes(), b"not an event record").unwrap();
            if let Some(marker) = marker {
                db.put(b"format", marker).unwrap();
            }
        }
        let reason = not_a_store(&path);
        assert!(reason.contains("marker") || reason.contains("layout"), "{name}: {reason}");
    }

    // An empty directory becomes a new store.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    RocksDbBackend::open(&empty).expect("an empty directory is a fine place for a new store");
}
