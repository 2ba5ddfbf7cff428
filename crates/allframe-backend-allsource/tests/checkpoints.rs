//! Named checkpoints on disk (contract point 14): they survive a reopen, a save that fails at
//! any file operation changes nothing (in memory or on disk) and leaves the store working, and
//! a damaged checkpoint file stops the open instead of letting consumers start over.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, IoHook, IoOp};
use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, NewEvent};

/// Fails the chosen operation on the checkpoint file (or its temporary) while switched on.
#[derive(Debug)]
struct Faulty {
    on: AtomicBool,
    op: IoOp,
}

impl IoHook for Faulty {
    fn before(&self, op: IoOp, path: &Path) -> io::Result<()> {
        let ours = path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("CHECKPOINTS"))
            || (op == IoOp::Sync && path.is_dir());
        if self.on.load(Ordering::SeqCst) && op == self.op && ours {
            Err(io::Error::other("injected by the test"))
        } else {
            Ok(())
        }
    }
}

async fn store_with_events(dir: &Path, hook: Option<Arc<Faulty>>) -> AllSourceBackend {
    let config = AllSourceConfig::durable(dir).io_hook(hook.map(|h| h as Arc<dyn IoHook>));
    let backend = AllSourceBackend::open_with(dir, config).expect("opens");
    if backend.head_position().await.unwrap() == 0 {
        let events: Vec<NewEvent> = (0..10).map(|n| NewEvent::new("E", format!("{{\"n\":{n}}}"))).collect();
        backend.append("s", ExpectedVersion::NoStream, events).await.expect("appends");
    }
    backend
}

#[tokio::test]
async fn checkpoints_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let backend = store_with_events(dir.path(), None).await;
        backend.save_checkpoint("orders", None, 4).await.unwrap();
        backend.save_checkpoint("orders", Some(4), 7).await.unwrap();
        backend.save_checkpoint("emails", None, 10).await.unwrap();
    }
    let backend = store_with_events(dir.path(), None).await;
    assert_eq!(backend.load_checkpoint("orders").await.unwrap(), Some(7));
    assert_eq!(backend.load_checkpoint("emails").await.unwrap(), Some(10));
    assert_eq!(backend.load_checkpoint("never").await.unwrap(), None);
    let stale = backend.save_checkpoint("orders", Some(4), 8).await;
    assert!(matches!(stale, Err(Error::CheckpointConflict { actual: Some(7), .. })), "{stale:?}");
}

#[tokio::test]
async fn a_save_that_fails_at_any_file_operation_changes_nothing() {
    for op in [IoOp::Create, IoOp::Write, IoOp::Sync, IoOp::Rename] {
        let dir = tempfile::tempdir().unwrap();
        let hook = Arc::new(Faulty { on: AtomicBool::new(false), op });
        {
            let backend = store_with_events(dir.path(), Some(Arc::clone(&hook))).await;
            backend.save_checkpoint("orders", None, 3).await.unwrap();
            hook.on.store(true, Ordering::SeqCst);
            let failed = backend.save_checkpoint("orders", Some(3), 9).await;
            assert!(matches!(failed, Err(Error::Io { .. })), "{op:?}: {failed:?}");
            hook.on.store(false, Ordering::SeqCst);
            assert_eq!(backend.load_checkpoint("orders").await.unwrap(), Some(3), "{op:?}: unchanged in memory");
            backend.append("s", ExpectedVersion::Any, vec![NewEvent::new("E", "{}")]).await.expect("still appends");
            // A directory sync that failed after the rename may leave the new file in place;
            // either file is whole, and the next save replaces it.
            backend.save_checkpoint("orders", Some(3), 5).await.unwrap_or_else(|e| panic!("{op:?}: {e}"));
        }
        let reopened = store_with_events(dir.path(), None).await;
        assert_eq!(reopened.load_checkpoint("orders").await.unwrap(), Some(5), "{op:?}");
    }
}

#[tokio::test]
async fn a_damaged_checkpoint_file_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let backend = store_with_events(dir.path(), None).await;
        backend.save_checkpoint("orders", None, 6).await.unwrap();
    }
    let path = dir.path().join("CHECKPOINTS");
    let good = std::fs::read(&path).unwrap();
    for damage in ["flipped", "cut"] {
        let mut bytes = good.clone();
        if damage == "flipped" {
            bytes[good.len() / 2] ^= 0x01;
        } else {
            bytes.truncate(good.len() - 3);
        }
        std::fs::write(&path, &bytes).unwrap();
        let refused = AllSourceBackend::open(dir.path()).map(|_| ());
        assert!(matches!(refused, Err(Error::Corruption { .. })), "{damage}: {refused:?}");
    }
    std::fs::write(&path, &good).unwrap();
    let backend = AllSourceBackend::open(dir.path()).unwrap();
    assert_eq!(backend.load_checkpoint("orders").await.unwrap(), Some(6));
}
