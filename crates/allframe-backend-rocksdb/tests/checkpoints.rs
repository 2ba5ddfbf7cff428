//! Named checkpoints on disk (contract point 14): they survive a reopen, and a stored value
//! that is not a position is reported as corruption, not read as one.

use allframe_backend_rocksdb::RocksDbBackend;
use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, NewEvent};

#[tokio::test]
async fn checkpoints_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let backend = RocksDbBackend::open(dir.path()).unwrap();
        let events: Vec<NewEvent> = (0..10).map(|n| NewEvent::new("E", format!("{{\"n\":{n}}}"))).collect();
        backend.append("s", ExpectedVersion::NoStream, events).await.unwrap();
        backend.save_checkpoint("orders", None, 4).await.unwrap();
        backend.save_checkpoint("orders", Some(4), 7).await.unwrap();
        backend.save_checkpoint("emails", None, 10).await.unwrap();
    }
    let backend = RocksDbBackend::open(dir.path()).unwrap();
    assert_eq!(backend.load_checkpoint("orders").await.unwrap(), Some(7));
    assert_eq!(backend.load_checkpoint("emails").await.unwrap(), Some(10));
    assert_eq!(backend.load_checkpoint("never").await.unwrap(), None);
    let stale = backend.save_checkpoint("orders", Some(4), 8).await;
    assert!(matches!(stale, Err(Error::CheckpointConflict { actual: Some(7), .. })), "{stale:?}");
    let beyond = backend.save_checkpoint("orders", Some(7), 11).await;
    assert!(matches!(beyond, Err(Error::InvalidCheckpoint { .. })), "{beyond:?}");
    assert_eq!(backend.load_checkpoint("orders").await.unwrap(), Some(7));
}
