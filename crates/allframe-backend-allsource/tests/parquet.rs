//! Parquet segments: sealed log segments become plain Parquet files that any Parquet reader
//! can open; damage to a Parquet file or the manifest is a typed error; leftovers of a crash
//! in the middle of a conversion are cleaned up.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, EngineStats};
use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, NewEvent, RecordedEvent};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

const FIRST: &str = "seg-0000000001.parquet";

fn config(dir: &Path) -> AllSourceConfig {
    AllSourceConfig::durable(dir).segment_size(64 * 1024)
}

fn open(dir: &Path) -> Result<(Vec<RecordedEvent>, EngineStats), Error> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = AllSourceBackend::with_config(config(dir))?;
        Ok((store.get_all_events().await?, store.engine_stats()))
    })
}

/// A closed store whose first segments have been rewritten as Parquet.
fn build() -> (tempfile::TempDir, Vec<RecordedEvent>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let events = rt.block_on(async {
        let store = AllSourceBackend::with_config(config(dir.path())).unwrap();
        for n in 0..800u64 {
            let event = NewEvent::new("Parked", format!("{{\"n\":{n},\"pad\":\"{}\"}}", "z".repeat(100)))
                .with_metadata(allframe_cqrs_core::Metadata::new().with_header("k", n.to_string()));
            store.append(&format!("car-{}", n % 5), ExpectedVersion::Any, vec![event]).await.unwrap();
        }
        let started = Instant::now();
        while store.engine_stats().parquet_files < 2 {
            assert!(started.elapsed() < Duration::from_secs(60), "segments were not converted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        store.get_all_events().await.unwrap()
    });
    assert!(dir.path().join(FIRST).exists());
    assert!(!dir.path().join("wal-0000000001.log").exists(), "the converted log segment is removed");
    (dir, events)
}

#[test]
fn parquet_segments_are_plain_parquet_with_the_documented_columns() {
    let (dir, events) = build();
    let reader = SerializedFileReader::new(std::fs::File::open(dir.path().join(FIRST)).unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr();
    let names: Vec<_> = schema.columns().iter().map(|c| c.name().to_string()).collect();
    assert_eq!(names, ["position", "stream", "version", "event_type", "payload", "metadata", "timestamp"]);
    let mut rows = 0;
    for row in reader.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        let fields: Vec<_> = row.get_column_iter().map(|(_, f)| f.clone()).collect();
        let expected = &events[rows];
        assert_eq!(fields[0], Field::Long(expected.position as i64));
        assert_eq!(fields[1], Field::Str(expected.stream_id.to_string()));
        assert_eq!(fields[2], Field::Long(expected.version as i64));
        assert_eq!(fields[3], Field::Str(expected.event_type.to_string()));
        match &fields[4] {
            Field::Bytes(b) => assert_eq!(b.data(), &expected.payload[..]),
            other => panic!("payload column: {other:?}"),
        }
        match &fields[5] {
            Field::Bytes(b) => assert_eq!(allframe_cqrs_core::Metadata::decode(b.data()).unwrap(), expected.metadata),
            other => panic!("metadata column: {other:?}"),
        }
        assert!(matches!(fields[6], Field::TimestampMicros(t) if t == expected.metadata.timestamp.as_micros()));
        rows += 1;
    }
    assert!(rows > 100);
    #[cfg(feature = "arrow")]
    {
        let batches = allframe_backend_allsource::arrow::read_segment(&dir.path().join(FIRST)).unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), rows);
        assert_eq!(batches[0].schema().field(1).name(), "stream");
    }
    // Reopened, old events are read back from Parquet, unchanged.
    let (read, stats) = open(dir.path()).unwrap();
    assert_eq!(read, events);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listed = rt.block_on(async { AllSourceBackend::with_config(config(dir.path())).unwrap().parquet_files() });
    assert_eq!(listed.first(), Some(&dir.path().join(FIRST)));
    assert!(stats.recovery.parquet_rows >= rows as u64);
}

#[test]
fn a_damaged_parquet_file_or_manifest_is_reported_and_nothing_is_lost() {
    let (dir, events) = build();
    for name in [FIRST, "MANIFEST"] {
        let path = dir.path().join(name);
        let original = std::fs::read(&path).unwrap();
        for at in [0, original.len() / 3, original.len() / 2, original.len() - 5] {
            let mut bytes = original.clone();
            bytes[at] ^= 0x08;
            std::fs::write(&path, &bytes).unwrap();
            match open(dir.path()) {
                Err(Error::Corruption { file, .. }) => assert_eq!(file, path, "names the damaged file"),
                other => panic!("flip at {at} of {name}: expected Corruption, got {other:?}"),
            }
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "the damaged file is left as it was");
        }
        std::fs::write(&path, &original).unwrap();
        assert_eq!(open(dir.path()).unwrap().0, events);
    }
    // A listed Parquet file that is missing is reported too.
    let path = dir.path().join(FIRST);
    let original = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(open(dir.path()), Err(Error::Corruption { file, .. }) if file == path));
    std::fs::write(&path, original).unwrap();
    assert_eq!(open(dir.path()).unwrap().0, events);
}

#[test]
fn leftovers_of_an_interrupted_conversion_are_cleaned_up() {
    let (dir, events) = build();
    // Crash after the Parquet file, before the manifest: an unlisted Parquet file.
    std::fs::copy(dir.path().join(FIRST), dir.path().join("seg-0000000099.parquet")).unwrap();
    // Crash in the middle of writing one: a temporary file.
    std::fs::write(dir.path().join("seg-0000000098.parquet.tmp"), b"partial").unwrap();
    let (read, _) = open(dir.path()).unwrap();
    assert_eq!(read, events);
    assert!(!dir.path().join("seg-0000000099.parquet").exists());
    assert!(!dir.path().join("seg-0000000098.parquet.tmp").exists());
}

#[test]
fn a_log_segment_left_after_its_conversion_is_removed_not_replayed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // First without conversion, to keep a copy of the first sealed log segment.
    rt.block_on(async {
        let store = AllSourceBackend::with_config(config(dir.path()).parquet_segments(false)).unwrap();
        for n in 0..600u64 {
            let e = NewEvent::new("Kept", format!("{n} {}", "k".repeat(150)));
            store.append("kept", ExpectedVersion::Exact(n), vec![e]).await.unwrap();
        }
    });
    let wal = dir.path().join("wal-0000000001.log");
    let copy = std::fs::read(&wal).unwrap();
    let (events, _) = open(dir.path()).unwrap();
    // Reopened with conversion on: the sealed segments become Parquet.
    rt.block_on(async {
        let store = AllSourceBackend::with_config(config(dir.path())).unwrap();
        let started = Instant::now();
        while store.parquet_files().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(60), "no conversion");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(!wal.exists());
    // The crash came after the manifest, before the removal: the segment is back.
    std::fs::write(&wal, copy).unwrap();
    let (read, stats) = open(dir.path()).unwrap();
    assert_eq!(read, events, "every event exactly once");
    assert!(!wal.exists(), "the leftover segment is removed");
    assert_ne!(stats.parquet_files, 0);
}

/// Slows every sync of a Parquet file being written, as a slow disk would.
#[derive(Debug)]
struct SlowConversion;

impl allframe_backend_allsource::IoHook for SlowConversion {
    fn before(&self, op: allframe_backend_allsource::IoOp, path: &Path) -> std::io::Result<()> {
        if op == allframe_backend_allsource::IoOp::Sync && path.to_string_lossy().ends_with(".parquet.tmp") {
            std::thread::sleep(Duration::from_millis(30));
        }
        Ok(())
    }
}

#[test]
fn appends_wait_for_a_converter_that_falls_behind() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let store = AllSourceBackend::with_config(
            config(dir.path())
                .sync(allframe_backend_allsource::SyncMode::NoSync)
                .max_conversion_backlog(1)
                .io_hook(Some(std::sync::Arc::new(SlowConversion))),
        )
        .unwrap();
        let mut most = 0;
        for n in 0..2500u64 {
            let event = NewEvent::new("Queued", format!("{{\"n\":{n},\"pad\":\"{}\"}}", "q".repeat(180)));
            store.append("queue", ExpectedVersion::Exact(n), vec![event]).await.unwrap();
            let backlog = store.engine_stats().parquet_backlog;
            most = most.max(backlog);
        }
        let stats = store.engine_stats();
        // The writer waits at a roll while the backlog is over the limit, and appends wait
        // for the writer: no acknowledged append ever sees more than the limit plus the
        // segment just sealed.
        assert!(most <= 2, "{most} sealed segments waited for conversion (limit 1)");
        assert_ne!(stats.parquet_backlog_waits, 0, "the converter did fall behind");
        assert_eq!(store.read_stream("queue", 0, usize::MAX).await.unwrap().len(), 2500);
    });
}

/// Readers at once on one store whose segments are Parquet files: every read returns exactly
/// the stored events. (parquet's own reader of a `File` clones the descriptor and seeks it, and
/// clones share one offset, so two readers of one segment read each other's bytes: "Invalid
/// page header". Found by the concurrent-history test; now the files are read with `pread`.)
#[test]
fn concurrent_reads_of_parquet_segments_agree() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = AllSourceConfig::durable(dir.path())
            .segment_size(1024 * 1024)
            .sync(allframe_backend_allsource::SyncMode::NoSync);
        let store = Arc::new(AllSourceBackend::with_config(config).unwrap());
        for n in 0..300u64 {
            let events = (0..100)
                .map(|i| NewEvent::new("Read", format!(r#"{{"n":{},"pad":"{}"}}"#, n * 100 + i, "r".repeat(120))))
                .collect();
            store.append(&format!("s{}", n % 10), ExpectedVersion::Any, events).await.unwrap();
        }
        store.flush().await.unwrap();
        for _ in 0..600 {
            if store.engine_stats().parquet_files >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(store.engine_stats().parquet_files >= 3, "segments were converted");
        let expected = Arc::new(store.get_all_events().await.unwrap());
        let tasks: Vec<_> = (0..8u64)
            .map(|task| {
                let (store, expected) = (Arc::clone(&store), Arc::clone(&expected));
                tokio::spawn(async move {
                    for i in 0..40u64 {
                        let after = (task * 7919 + i * 104_729) % 29_000;
                        let page = store.read_all(after, 700).await.expect("a read of Parquet segments");
                        let want = &expected[after as usize..(after as usize + 700).min(expected.len())];
                        assert!(page == want, "task {task}, read {i}: read_all after {after} differs");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}
