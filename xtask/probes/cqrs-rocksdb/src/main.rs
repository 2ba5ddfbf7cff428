//! Size probe: the facade with only the feature `cqrs-rocksdb`.

use allframe::prelude::*;

async fn open(dir: &str) -> Result<EventStore<Ping, RocksDbBackend>, Error> {
    Ok(EventStore::with_backend(RocksDbBackend::open(dir)?))
}

include!("../../probe.rs");
