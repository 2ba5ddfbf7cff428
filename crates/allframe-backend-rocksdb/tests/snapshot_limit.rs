//! Snapshots larger than `Limits::max_snapshot_bytes` are refused with a typed error and
//! change nothing; snapshots up to the limit are stored.

mod common;

use allframe_backend_rocksdb::RocksDbConfig;
use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, Limits, NewEvent, Snapshot};
use common::TempStore;

#[tokio::test]
async fn snapshots_over_the_limit_are_refused() {
    let limits = Limits { max_snapshot_bytes: 16, ..Limits::default() };
    let store = TempStore::new(RocksDbConfig::default().sync(false).limits(limits));
    let events = (0..3).map(|i| NewEvent::new("Counted", format!("{i}"))).collect();
    store.append("counter", ExpectedVersion::NoStream, events).await.unwrap();

    store.save_snapshot("counter", Snapshot::new(1, vec![1u8; 16])).await.unwrap();
    let refused = store.save_snapshot("counter", Snapshot::new(2, vec![2u8; 17])).await;
    match refused {
        Err(Error::InvalidSnapshot { stream, reason }) => {
            assert_eq!(stream, "counter");
            assert!(reason.contains("17") && reason.contains("16"), "{reason}");
        }
        other => panic!("expected InvalidSnapshot, got {other:?}"),
    }
    let kept = store.get_latest_snapshot("counter").await.unwrap().unwrap();
    assert_eq!((kept.version, &kept.payload[..]), (1, &[1u8; 16][..]), "the refused snapshot changed nothing");
    assert_eq!(store.stats().await.unwrap().snapshots, 1);

    // A stream without a snapshot stays without one.
    let refused = store.save_snapshot("counter-2", Snapshot::new(0, vec![0u8; 1000])).await;
    assert!(matches!(refused, Err(Error::InvalidSnapshot { .. })), "{refused:?}");
    assert_eq!(store.get_latest_snapshot("counter-2").await.unwrap(), None);
    // The stream id is still checked.
    let refused = store.save_snapshot("bad\0id", Snapshot::new(0, vec![0u8; 4])).await;
    assert!(matches!(refused, Err(Error::InvalidStreamId { .. })), "{refused:?}");
}
