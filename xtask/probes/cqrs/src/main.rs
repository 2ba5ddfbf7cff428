//! Size probe: the facade with only the feature `cqrs`.

use allframe::prelude::*;

async fn open(_: &str) -> Result<EventStore<Ping>, Error> {
    Ok(EventStore::new())
}

include!("../../probe.rs");
