//! The conformance suite on an in-memory AllSource store (`AllSourceBackend::new()`).

use allframe_backend_allsource::AllSourceBackend;

allframe_cqrs_testkit::conformance_suite!(async { AllSourceBackend::new().expect("in-memory store") });
