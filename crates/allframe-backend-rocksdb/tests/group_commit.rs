//! Concurrent synced appends share batches (group commit), and each gets its own result.

use std::sync::Arc;

use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};

#[test]
fn concurrent_synced_appends_share_batches() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RocksDbBackend::open_with(dir.path(), RocksDbConfig::default()).unwrap());
        let tasks: Vec<_> = (0..64)
            .map(|task| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let stream = format!("appender-{task}");
                    for n in 0..10u64 {
                        let result = store
                            .append(&stream, ExpectedVersion::Exact(n), vec![NewEvent::new("Appended", "{}")])
                            .await
                            .unwrap();
                        assert_eq!(result.stream_version, n + 1);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.events, 640);
        let groups: u64 = stats.details["group_commits"].parse().unwrap();
        let writes: u64 = stats.details["grouped_writes"].parse().unwrap();
        assert_eq!(writes, 640, "every append was written by the writer");
        assert!(groups < writes, "64 synced appenders never shared a sync ({groups} groups for {writes} appends)");
        let positions: Vec<u64> = store.get_all_events().await.unwrap().iter().map(|e| e.position).collect();
        assert_eq!(positions, (1..=640).collect::<Vec<_>>());
    });
}
