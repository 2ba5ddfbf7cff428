//! The conformance suite on the RocksDB backend without sync.

mod common;

use allframe_backend_rocksdb::RocksDbConfig;

allframe_cqrs_testkit::conformance_suite!(async { common::TempStore::new(RocksDbConfig::default().sync(false)) });
