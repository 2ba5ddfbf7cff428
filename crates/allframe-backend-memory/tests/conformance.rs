//! The conformance suite on the memory backend, used directly.

use allframe_backend_memory::InMemoryBackend;

allframe_cqrs_testkit::conformance_suite!(async { InMemoryBackend::new() });
