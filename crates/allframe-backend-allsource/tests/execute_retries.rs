//! Command retries over a durable store: after a conflict, the winning append may still be in
//! its group commit (version taken, not yet readable); `EventStore::execute` waits for it
//! instead of deciding again on the same stale state and losing every retry at once.

use std::sync::Arc;

use allframe_backend_allsource::AllSourceBackend;
use allframe_cqrs_core::{Aggregate, Event, EventStore};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Added(u64);

impl Event for Added {}

#[derive(Default, Serialize, Deserialize)]
struct Sum(u64);

impl Aggregate for Sum {
    type Event = Added;
    fn apply(&mut self, event: &Added) {
        self.0 += event.0;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_on_one_stream_all_land_with_few_retries() {
    let dir = tempfile::tempdir().unwrap();
    let store: EventStore<Added, AllSourceBackend> =
        EventStore::with_backend(AllSourceBackend::open(dir.path()).unwrap()).with_conflict_retries(16);
    let store = Arc::new(store);
    let tasks: Vec<_> = (1..=16u64)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.execute::<Sum, _, String>("sum", |_| Ok(vec![Added(n)])).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every command lands: a retry waits for the winner's commit");
    }
    let sum = store.load_aggregate::<Sum>("sum").await.unwrap();
    assert_eq!((sum.state.0, sum.version), ((1..=16).sum(), 16));
}
