//! The memory backend, which every other backend is compared with, cross-checked in its turn
//! against a second, deliberately naive reference (`allframe_cqrs_testkit::reference`):
//! every result of random operation sequences must be identical, field for field.

use allframe_backend_memory::InMemoryBackend;

#[test]
fn memory_backend_matches_the_naive_reference() {
    allframe_cqrs_testkit::reference::cross_check(256, || async { InMemoryBackend::new() });
}
