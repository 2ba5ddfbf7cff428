//! What the store's health answer checks: the writer thread runs and its last batch was
//! written (else `Failed`, `rocksdb.writer`: RocksDB refuses every write after a failed one
//! until the store is reopened), a point read answers (else `Failed`, `rocksdb.read`), and
//! RocksDB does not hold writes back for compaction (else `Degraded`, `rocksdb.writes`).

use std::sync::PoisonError;

use allframe_cqrs_core::Health;

use crate::{RocksDbBackend, layout, map_err};

const WRITER: &str = "rocksdb.writer";
const READ: &str = "rocksdb.read";
const WRITES: &str = "rocksdb.writes";

impl RocksDbBackend {
    /// The store's health (see [`EventStoreBackend::health`](allframe_cqrs_core::EventStoreBackend::health)).
    pub(crate) fn check_health(&self) -> Health {
        let mut health = Health::ok();
        if self.writer.as_ref().is_none_or(|writer| writer.is_finished()) {
            health = health.merge(Health::failed(WRITER, "the writer thread stopped; appends are refused"));
        } else if let Some(failure) = self.failure.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            health = health.merge(Health::failed(
                WRITER,
                format!("the last write failed; RocksDB refuses writes until the store is reopened: {failure}"),
            ));
        }
        let read = self.handles().and_then(|handles| {
            self.db.get_pinned_cf(handles.meta, layout::KEY_COUNTERS).map(drop).map_err(|e| map_err(&self.path, e))
        });
        if let Err(error) = read {
            health = health.merge(Health::failed(READ, format!("a point read failed: {error}")));
        }
        let property = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        if property("rocksdb.is-write-stopped") > 0 {
            health = health.merge(Health::degraded(WRITES, "RocksDB stopped writes until compaction catches up"));
        } else if let rate @ 1.. = property("rocksdb.actual-delayed-write-rate") {
            health = health.merge(Health::degraded(
                WRITES,
                format!("RocksDB slows writes to {rate} bytes/s until compaction catches up"),
            ));
        }
        health
    }
}
