//! The conformance suite on the memory backend through the dyn-usable form,
//! `Arc<dyn EventStoreBackend>`, which also tests the forwarding implementations.

use std::sync::Arc;

use allframe_backend_memory::InMemoryBackend;
use allframe_cqrs_core::DynBackend;

allframe_cqrs_testkit::conformance_suite!(async { Arc::new(InMemoryBackend::new()) as DynBackend });
