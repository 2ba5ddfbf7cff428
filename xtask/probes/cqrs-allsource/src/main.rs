//! Size probe: the facade with only the feature `cqrs-allsource`.

use allframe::prelude::*;

async fn open(dir: &str) -> Result<EventStore<Ping, AllSourceBackend>, Error> {
    Ok(EventStore::with_backend(AllSourceBackend::production(dir)?))
}

include!("../../probe.rs");
