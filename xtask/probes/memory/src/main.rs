//! Size probe: allframe-backend-memory used directly, without the facade.

use allframe_backend_memory::{EventStore, InMemoryEventStore};
use allframe_cqrs_core::{Error, Event};

async fn open(_: &str) -> Result<EventStore<Ping>, Error> {
    Ok(EventStore::new())
}

include!("../../probe.rs");
