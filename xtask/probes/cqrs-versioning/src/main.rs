//! Size probe: event versioning with the feature `cqrs` alone: a chain of upcasters (a stored
//! type renamed and its JSON changed), a store reading through it, and an aggregate loaded from
//! events stored at version 1 and at version 2.

use std::sync::Arc;

use allframe::cqrs::*;
use allframe::{Codec, NewEvent};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, Event)]
#[event(version = 2)]
enum CounterEvent {
    Bumped { by: u32 },
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Counter {
    total: u64,
}

impl Aggregate for Counter {
    type Event = CounterEvent;
    fn apply(&mut self, CounterEvent::Bumped { by }: &CounterEvent) {
        self.total += u64::from(*by);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let chain = Upcasters::<CounterEvent>::new()
        .json_into("Incremented", 1, |stored| {
            let by = stored["Incremented"]["n"].clone();
            Ok(vec![("Bumped".into(), serde_json::json!({ "Bumped": { "by": by } }))])
        })
        .build()
        .expect("a sound chain");
    let stored = Arc::new(InMemoryBackend::new());
    let v1 = NewEvent::new("Incremented", br#"{"Incremented":{"n":2}}"#.to_vec());
    stored.append("counter-1", ExpectedVersion::Any, vec![v1]).await.expect("appended");
    let store: EventStore<CounterEvent, Upcasting<InMemoryBackend>> =
        EventStore::with_backend(Upcasting::new(stored, chain, Codec::Json));
    store.append("counter-1", vec![CounterEvent::Bumped { by: 3 }]).await.expect("appended");
    let loaded = store.load_aggregate::<Counter>("counter-1").await.expect("loaded");
    println!("counter-1: {} after {} events", loaded.state.total, loaded.version);
}
