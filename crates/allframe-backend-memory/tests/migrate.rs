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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_into_foreign_stream_conflicts() {
    migrate::copy_into_foreign_stream_conflicts(InMemoryBackend::new(), InMemoryBackend::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_refuses_destination_with_extra_events() {
    migrate::copy_refuses_destination_with_extra_events(InMemoryBackend::new(), InMemoryBackend::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_copy_in_bounded_appends() {
    migrate::large_events_copy_in_bounded_appends(InMemoryBackend::new(), InMemoryBackend::new()).await;
}
