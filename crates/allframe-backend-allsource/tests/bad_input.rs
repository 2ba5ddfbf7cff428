//! Bad input: a directory that is not a store, a directory we may not write, a disk that
//! fills up (injected through the I/O seam), failing syncs. Each gets a clear typed error and
//! nothing acknowledged is lost.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, IoHook, IoOp};
use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, NewEvent, Snapshot};

/// Fails the chosen operation with the chosen error while switched on.
#[derive(Debug)]
struct Faulty {
    on: AtomicBool,
    op: IoOp,
    kind: io::ErrorKind,
}

impl Faulty {
    fn new(op: IoOp, kind: io::ErrorKind) -> Arc<Self> {
        Arc::new(Faulty { on: AtomicBool::new(false), op, kind })
    }
}

impl IoHook for Faulty {
    fn before(&self, op: IoOp, _path: &Path) -> io::Result<()> {
        if self.on.load(Ordering::SeqCst) && op == self.op {
            Err(io::Error::new(self.kind, "injected by the test"))
        } else {
            Ok(())
        }
    }
}

fn config(dir: &Path, hook: Arc<Faulty>) -> AllSourceConfig {
    AllSourceConfig::durable(dir).io_hook(Some(hook)).segment_size(64 * 1024)
}

fn event(n: u64) -> NewEvent {
    NewEvent::new("E", format!("event {n} {}", "x".repeat(200)))
}

#[tokio::test]
async fn a_directory_with_foreign_files_is_not_a_store_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = AllSourceBackend::production(dir.path()).unwrap_err();
    assert!(matches!(&err, Error::NotAStore { reason, .. } if reason.contains("notes.txt")), "{err:?}");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")], "nothing was created");

    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("ALLSOURCE"), "some other format").unwrap();
    let err = AllSourceBackend::production(other.path()).unwrap_err();
    assert!(matches!(err, Error::NotAStore { .. }), "{err:?}");

    let file = dir.path().join("notes.txt");
    let err = AllSourceBackend::production(&file).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "a file where a directory should be: {err:?}");
}

#[tokio::test]
async fn a_directory_without_write_permission_is_a_clear_io_error() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let writable = std::fs::write(dir.join("probe"), "x").is_ok();
    if writable {
        // Running as root: permissions are not enforced. Inject the error the OS would give.
        let _ = std::fs::remove_file(dir.join("probe"));
        eprintln!("note: running as root; the read-only directory is simulated through the I/O seam");
        let hook = Faulty::new(IoOp::Create, io::ErrorKind::PermissionDenied);
        hook.on.store(true, Ordering::SeqCst);
        let err = AllSourceBackend::with_config(config(&dir, hook)).unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, path: Some(_), .. } if source.kind() == io::ErrorKind::PermissionDenied),
            "{err:?}"
        );
    } else {
        let err = AllSourceBackend::production(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied),
            "{err:?}"
        );
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_appends_clearly_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Faulty::new(IoOp::Write, io::ErrorKind::StorageFull);
    let store = AllSourceBackend::with_config(config(dir.path(), hook.clone())).unwrap();
    for n in 0..50 {
        store.append("s", ExpectedVersion::Exact(n), vec![event(n)]).await.unwrap();
    }
    store.save_snapshot("s", Snapshot::new(10, "ten")).await.unwrap();
    hook.on.store(true, Ordering::SeqCst);
    let err = store.append("s", ExpectedVersion::Exact(50), vec![event(50)]).await.unwrap_err();
    assert!(matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull), "{err:?}");
    // The store now refuses appends, says why, and still serves reads.
    let err = store.append("s", ExpectedVersion::Any, vec![event(51)]).await.unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    let err = store.save_snapshot("s", Snapshot::new(20, "twenty")).await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(store.get_events("s").await.unwrap().len(), 50);
    assert_eq!(store.stream_version("s").await.unwrap(), 50);
    assert!(store.stats().await.unwrap().details.contains_key("failed"));
    drop(store);
    hook.on.store(false, Ordering::SeqCst);
    let store = AllSourceBackend::with_config(config(dir.path(), hook)).unwrap();
    assert_eq!(store.stream_version("s").await.unwrap(), 50);
    assert_eq!(store.get_latest_snapshot("s").await.unwrap().unwrap().version, 10);
    store.append("s", ExpectedVersion::Exact(50), vec![event(50)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_while_starting_a_segment_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Faulty::new(IoOp::Create, io::ErrorKind::StorageFull);
    let store = AllSourceBackend::with_config(config(dir.path(), hook.clone())).unwrap();
    hook.on.store(true, Ordering::SeqCst);
    let mut acknowledged = 0;
    let mut failure = None;
    for n in 0..1000 {
        match store.append("s", ExpectedVersion::Exact(n), vec![event(n)]).await {
            Ok(_) => acknowledged += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("the segment roll must fail");
    assert!(matches!(&failure, Error::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull));
    drop(store);
    hook.on.store(false, Ordering::SeqCst);
    let store = AllSourceBackend::with_config(config(dir.path(), hook)).unwrap();
    assert_eq!(store.stream_version("s").await.unwrap(), acknowledged);
    let events = store.get_events("s").await.unwrap();
    assert!(events.iter().enumerate().all(|(i, e)| e.payload == event(i as u64).payload));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Faulty::new(IoOp::Sync, io::ErrorKind::Other);
    let store = AllSourceBackend::with_config(config(dir.path(), hook.clone())).unwrap();
    store.append("s", ExpectedVersion::Any, vec![event(0)]).await.unwrap();
    hook.on.store(true, Ordering::SeqCst);
    let err = store.append("s", ExpectedVersion::Any, vec![event(1)]).await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(store.head_position().await.unwrap(), 1, "the unsynced append is not visible");
    drop(store);
    hook.on.store(false, Ordering::SeqCst);
    // The frame may have reached the file; if so it is whole. Either way the store opens.
    let store = AllSourceBackend::with_config(config(dir.path(), hook)).unwrap();
    let events = store.get_events("s").await.unwrap();
    assert!(events.len() == 1 || events.len() == 2);
    assert_eq!(events[0].payload, event(0).payload);
}

#[tokio::test]
async fn oversized_and_invalid_input_is_refused_before_touching_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = AllSourceBackend::with_config(
        AllSourceConfig::durable(dir.path())
            .limits(allframe_cqrs_core::Limits { max_event_bytes: 1000, ..Default::default() }),
    )
    .unwrap();
    let err = store.append("s", ExpectedVersion::Any, vec![NewEvent::new("E", vec![0u8; 2000])]).await.unwrap_err();
    assert!(matches!(err, Error::EventTooLarge { .. }));
    let err = store.append("", ExpectedVersion::Any, vec![event(0)]).await.unwrap_err();
    assert!(matches!(err, Error::InvalidStreamId { .. }));
    assert_eq!(store.engine_stats().frames_written, 0);
}

/// Snapshot payloads are limited (`Limits::max_snapshot_bytes`): the record's length field is
/// 32 bits, and a larger payload used to be written damaged and acknowledged. A refused
/// snapshot is a typed error, writes nothing and leaves the store working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_over_the_size_limit_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        AllSourceConfig::durable(dir.path())
            .limits(allframe_cqrs_core::Limits { max_snapshot_bytes: 16, ..Default::default() })
    };
    let store = AllSourceBackend::with_config(config()).unwrap();
    store.append("s", ExpectedVersion::Any, vec![event(0), event(1)]).await.unwrap();
    store.save_snapshot("s", Snapshot::new(1, vec![7u8; 16])).await.unwrap();
    let file = dir.path().join("snapshots.log");
    let before = std::fs::read(&file).unwrap();
    let err = store.save_snapshot("s", Snapshot::new(2, vec![7u8; 17])).await.unwrap_err();
    assert!(matches!(err, Error::InvalidSnapshot { .. }), "{err:?}");
    assert_eq!(std::fs::read(&file).unwrap(), before, "nothing of the refused snapshot was written");
    assert_eq!(store.get_latest_snapshot("s").await.unwrap().unwrap().version, 1);
    // The store still works: appends and snapshots within the limit.
    store.append("s", ExpectedVersion::Exact(2), vec![event(2)]).await.unwrap();
    store.save_snapshot("s", Snapshot::new(3, vec![9u8; 16])).await.unwrap();
    drop(store);
    let store = AllSourceBackend::with_config(config()).unwrap();
    let snapshot = store.get_latest_snapshot("s").await.unwrap().unwrap();
    assert_eq!((snapshot.version, snapshot.payload.len()), (3, 16));
}
