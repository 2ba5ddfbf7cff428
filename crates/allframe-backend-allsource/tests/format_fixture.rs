//! AllSource's on-disk format 1, pinned: `tests/fixtures/format-1/` was written by the version
//! that introduced it (`allframe_cqrs_testkit::fixture::write_fixture`: log segment, snapshot
//! file, marker), and `tests/fixtures/format-1-parquet/` holds the same content after filler
//! events whose log segments were rewritten as Parquet (Parquet files, their index files and
//! `MANIFEST`); every later version must open a copy of each and read exactly that content.
//!
//! A new format gets new fixture directories (`format-2/`, written with
//! `ALLFRAME_WRITE_FIXTURE=DIR cargo test -p allframe-backend-allsource --test format_fixture -- --ignored --exact write_a_new_fixture`,
//! and `format-2-parquet/` the same way with `write_a_new_parquet_fixture`), and the old ones stay.

use std::path::Path;
use std::time::{Duration, Instant};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig};
use allframe_cqrs_testkit::fixture;

/// Filler events before the fixture in `format-1-parquet/`: about 60 KB of log each 250
/// events, so the first segments (64 KiB, the smallest) fill and are converted.
const FILLER: u64 = 800;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_with_parquet_segments_opens_and_reads_the_same() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1-parquet");
    let names: Vec<String> = std::fs::read_dir(&fixture)
        .expect("the Parquet fixture")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for kind in [".parquet", ".idx", "MANIFEST", ".log"] {
        assert!(names.iter().any(|n| n.ends_with(kind)), "the fixture pins a {kind} file: {names:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    fixture::copy_fixture(&fixture, dir.path());
    let backend = AllSourceBackend::production(dir.path()).expect("a store of format 1 with Parquet segments opens");
    assert!(backend.engine_stats().parquet_files >= 2, "the converted segments are read from Parquet");
    fixture::check_fixture_after_filler(&backend, FILLER).await;
}

/// Writes a new Parquet fixture into `$ALLFRAME_WRITE_FIXTURE` (a directory that must not
/// exist): small segments, filler, the fixture, then waits for two conversions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes a new format fixture; run by hand when a format changes"]
async fn write_a_new_parquet_fixture() {
    let target = std::env::var("ALLFRAME_WRITE_FIXTURE").expect("ALLFRAME_WRITE_FIXTURE=DIR");
    let backend = AllSourceBackend::with_config(AllSourceConfig::durable(&target).segment_size(64 * 1024)).unwrap();
    fixture::write_fixture_after_filler(&backend, FILLER).await;
    let started = Instant::now();
    while backend.engine_stats().parquet_files < 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "segments were not converted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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
