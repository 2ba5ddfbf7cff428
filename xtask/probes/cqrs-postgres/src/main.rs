//! Size probe: the facade with only the feature `cqrs-postgres`.

use allframe::prelude::*;

async fn open(url: &str) -> Result<EventStore<Ping, PostgresBackend>, Error> {
    Ok(EventStore::with_backend(PostgresBackend::connect(url).await?))
}

include!("../../probe.rs");
