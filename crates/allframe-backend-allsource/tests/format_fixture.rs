//! AllSource's on-disk format 1, pinned: `tests/fixtures/format-1/` was written by the version
//! that introduced it (`allframe_cqrs_testkit::fixture::write_fixture`: log segment, snapshot
//! file, marker); every later version must open a copy of it and read exactly that content.
//!
//! A new format gets a new fixture directory (`format-2/`, written with
//! `ALLFRAME_WRITE_FIXTURE=DIR cargo test -p allframe-backend-allsource --test format_fixture -- --ignored`),
//! and the old ones stay.

use std::path::Path;

use allframe_backend_allsource::AllSourceBackend;
use allframe_cqrs_testkit::fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_opens_and_reads_the_same() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1");
    let dir = tempfile::tempdir().unwrap();
    fixture::copy_fixture(&fixture, dir.path());
    let backend = AllSourceBackend::production(dir.path()).expect("a store of format 1 opens");
    fixture::check_fixture(&backend).await;
}

/// Writes a new fixture into `$ALLFRAME_WRITE_FIXTURE` (a directory that must not exist).
#[tokio::test]
#[ignore = "writes a new format fixture; run by hand when a format changes"]
async fn write_a_new_fixture() {
    let target = std::env::var("ALLFRAME_WRITE_FIXTURE").expect("ALLFRAME_WRITE_FIXTURE=DIR");
    let backend = AllSourceBackend::production(&target).expect("a new store");
    fixture::write_fixture(&backend).await;
}
