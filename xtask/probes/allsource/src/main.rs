//! Size probe: allframe-backend-allsource used directly.

use allframe_backend_allsource::AllSourceBackend;
use allframe_cqrs_core::{Error, Event, EventStore};

async fn open(dir: &str) -> Result<EventStore<Ping, AllSourceBackend>, Error> {
    Ok(EventStore::with_backend(AllSourceBackend::production(dir)?))
}

include!("../../probe.rs");
