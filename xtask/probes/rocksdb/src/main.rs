//! Size probe: allframe-backend-rocksdb used directly.

use allframe_backend_rocksdb::RocksDbBackend;
use allframe_cqrs_core::{Error, Event, EventStore};

async fn open(dir: &str) -> Result<EventStore<Ping, RocksDbBackend>, Error> {
    Ok(EventStore::with_backend(RocksDbBackend::open(dir)?))
}

include!("../../probe.rs");
