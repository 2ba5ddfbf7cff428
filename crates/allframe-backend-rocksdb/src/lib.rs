//! The rocksdb backend of AllFrame CQRS (in progress).
