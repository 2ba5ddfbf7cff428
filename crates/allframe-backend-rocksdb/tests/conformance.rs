//! The conformance suite on the RocksDB backend in its default mode (every batch synced).

mod common;

use allframe_backend_rocksdb::RocksDbConfig;

allframe_cqrs_testkit::conformance_suite!(async { common::TempStore::new(RocksDbConfig::default()) });
