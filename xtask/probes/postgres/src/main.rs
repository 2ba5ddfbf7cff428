//! Size probe: allframe-backend-postgres used directly.

use allframe_backend_postgres::PostgresBackend;
use allframe_cqrs_core::{Error, Event, EventStore};

async fn open(url: &str) -> Result<EventStore<Ping, PostgresBackend>, Error> {
    Ok(EventStore::with_backend(PostgresBackend::connect(url).await?))
}

include!("../../probe.rs");
