//! Copy and verify between two memory stores (the cases of `allframe_cqrs_testkit::migrate`).

use allframe_backend_memory::InMemoryBackend;
use allframe_cqrs_testkit::migrate;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_round_trip() {
    migrate::copy_round_trip(InMemoryBackend::new(), InMemoryBackend::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_copy_resumes() {
    migrate::interrupted_copy_resumes(InMemoryBackend::new(), InMemoryBackend::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_first_difference() {
    migrate::verify_finds_first_difference(InMemoryBackend::new(), InMemoryBackend::new()).await;
}
