//! The conformance suite on a durable AllSource store (`AllSourceBackend::production(dir)`),
//! opened once per test.

mod support;

allframe_cqrs_testkit::conformance_suite!(async { support::Reopening::open(u64::MAX) });
