//! Size probe: the feature `cqrs-metrics`: the memory store wrapped in `Metered`, so that
//! every operation is counted and timed through the `metrics` facade (no recorder installed:
//! the application brings one), and its health asked.

use allframe::prelude::*;
use allframe::{InMemoryBackend, Metered};

async fn open(_: &str) -> Result<EventStore<Ping, Metered<InMemoryBackend>>, Error> {
    let store = EventStore::with_backend(Metered::new(InMemoryBackend::new()));
    println!("{}", store.health().await.status);
    Ok(store)
}

include!("../../probe.rs");
