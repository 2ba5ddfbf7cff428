//! Power loss in every file of a store, not only the log: the snapshot file, the manifest,
//! the index files and the Parquet segments.
//!
//! The store runs with an I/O hook ([`power::Recorder`]) that knows what each file held when
//! it was last synced; disk images are built as a power cut could leave them (unsynced
//! sectors kept or lost, files created or renamed since the last directory sync absent or
//! still under their temporary name), taken at many points of a workload that converts log
//! segments to Parquet and saves snapshots. Each image is opened and checked against what was
//! acknowledged: the store opens (these are the normal aftermath of a power cut, not
//! corruption), every synced append and snapshot is there, no snapshot is ahead of its
//! stream, and the store takes appends and reopens. Damage no power cut makes is still
//! reported as corruption.

#[path = "support/power.rs"]
mod power;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, IoHook, SyncMode};
use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, NewEvent, RecordedEvent, Snapshot};
use power::{Image, Recorder, Rng};

fn config(dir: &Path, sync: SyncMode, hook: Option<Arc<Recorder>>, parquet: bool) -> AllSourceConfig {
    AllSourceConfig::durable(dir)
        .sync(sync)
        .parquet_segments(parquet)
        .segment_size(64 * 1024)
        .io_hook(hook.map(|h| h as Arc<dyn IoHook>))
}

fn payload(i: u64) -> String {
    format!("event {i} {}", "p".repeat((i % 5 * 60) as usize))
}

fn stream(i: u64) -> String {
    format!("s-{}", i % 3)
}

/// Opens `image` in a fresh directory.
fn open_image(image: &Image, sync: SyncMode, parquet: bool) -> (tempfile::TempDir, Result<AllSourceBackend, Error>) {
    let dir = tempfile::tempdir().unwrap();
    power::write_image(image, dir.path());
    let store = AllSourceBackend::with_config(config(dir.path(), sync, None, parquet));
    (dir, store)
}

/// The events as (stream, version, position, payload), the part the test can predict.
fn shape(events: &[RecordedEvent]) -> Vec<(String, u64, u64, Vec<u8>)> {
    events.iter().map(|e| (e.stream_id.to_string(), e.version, e.position, e.payload.to_vec())).collect()
}

/// Defect: in a mode that does not sync, a snapshot saved at a version the log had written but
/// not synced survived a power cut the events did not; `load_aggregate` then reported a version
/// the stream does not have and every `execute` on it conflicted. On open, such a snapshot is
/// dropped (counted in stats) and the best older one kept, and it does not come back once the
/// stream grows past its version again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_never_ahead_of_its_stream_after_a_power_loss() {
    let mut images = 0;
    let mut dropped_images = 0;
    for sync in [SyncMode::Interval(Duration::from_secs(3600)), SyncMode::NoSync] {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(Recorder::new(dir.path()));
        let store = AllSourceBackend::with_config(config(dir.path(), sync, Some(recorder.clone()), false)).unwrap();
        for i in 0..10 {
            store.append("s", ExpectedVersion::Exact(i), vec![NewEvent::new("E", payload(i))]).await.unwrap();
        }
        store.flush().await.unwrap();
        for i in 10..20 {
            store.append("s", ExpectedVersion::Exact(i), vec![NewEvent::new("E", payload(i))]).await.unwrap();
        }
        store.save_snapshot("s", Snapshot::new(8, "at 8")).await.unwrap();
        store.save_snapshot("s", Snapshot::new(15, "at 15")).await.unwrap();
        let written = shape(&store.read_all(0, usize::MAX).await.unwrap());
        let snapshot_file = std::fs::read(dir.path().join("snapshots.log")).unwrap();
        let mut rng = Rng(0x5eed_0004);
        let mut taken = Vec::new();
        for trial in 0..40 {
            let mut image = recorder.image(&mut rng, trial == 0, trial == 1 || trial == 2);
            if trial == 2 || (trial > 2 && rng.one_in(2)) {
                // The snapshot file's pages were written back, the log's were not.
                image.insert("snapshots.log".into(), snapshot_file.clone());
            }
            taken.push(image);
        }
        drop(store);
        for (trial, image) in taken.iter().enumerate() {
            let what = format!("{sync:?} image {trial}");
            let (copy, store) = open_image(image, sync, false);
            let store = store.unwrap_or_else(|e| panic!("{what}: open failed: {e:?}"));
            let events = shape(&store.read_all(0, usize::MAX).await.unwrap());
            let version = events.len() as u64;
            assert!(version >= 10, "{what}: the flushed appends are there");
            assert_eq!(events[..], written[..events.len()], "{what}: a prefix of what was written");
            let snapshot = store.get_latest_snapshot("s").await.unwrap();
            if let Some(snapshot) = &snapshot {
                assert!(snapshot.version <= version, "{what}: snapshot {} ahead of stream {version}", snapshot.version);
            }
            let dropped = store.engine_stats().recovery.snapshots_dropped_ahead;
            if version < 15 && image["snapshots.log"] == snapshot_file {
                assert_eq!(dropped, 1, "{what}: the snapshot at 15 is dropped and said so");
                assert_eq!(snapshot.as_ref().map(|s| s.version), Some(8), "{what}: the one at 8 is kept");
                dropped_images += 1;
            }
            // What `execute` does: append at the version the snapshot and the stream agree on.
            let next = snapshot.as_ref().map_or(version, |_| version);
            store.append("s", ExpectedVersion::Exact(next), vec![NewEvent::new("E", "after")]).await.unwrap();
            for v in version + 1..20 {
                store.append("s", ExpectedVersion::Exact(v), vec![NewEvent::new("E", "later")]).await.unwrap();
            }
            store.flush().await.unwrap();
            drop(store);
            let store = AllSourceBackend::with_config(config(copy.path(), sync, None, false))
                .unwrap_or_else(|e| panic!("{what}: reopen failed: {e:?}"));
            let snapshot = store.get_latest_snapshot("s").await.unwrap();
            if dropped > 0 {
                // Version 15 exists again, with other events: the dropped snapshot stays gone.
                assert_ne!(snapshot.map(|s| s.payload.to_vec()), Some(b"at 15".to_vec()), "{what}");
            }
            images += 1;
        }
    }
    eprintln!("snapshot ahead: {images} power-loss images checked, {dropped_images} with a snapshot ahead dropped");
    assert!(dropped_images >= 2, "both modes produced a snapshot ahead of its stream");
}

/// Power-cut images taken throughout a workload with Parquet conversion and snapshots, in
/// every mode: every durable append and snapshot (acknowledged in synchronous mode, flushed in
/// the others) survives every image, and no snapshot is ahead of its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_in_any_file_keeps_everything_acknowledged() {
    let mut total = 0;
    for sync in [SyncMode::Synchronous, SyncMode::Interval(Duration::from_secs(3600)), SyncMode::NoSync] {
        total += sweep(sync).await;
    }
    eprintln!("power loss in any file: {total} images checked in the three modes");
}

async fn sweep(sync: SyncMode) -> usize {
    const APPENDS: u64 = 1500;
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::new(dir.path()));
    let store = AllSourceBackend::with_config(config(dir.path(), sync, Some(recorder.clone()), true)).unwrap();
    recorder.capture(24, 240, 0x00c0_ffee);
    let synchronous = sync == SyncMode::Synchronous;
    let mut snapshot_saved = 0;
    for i in 0..APPENDS {
        store.append(&stream(i), ExpectedVersion::Any, vec![NewEvent::new("E", payload(i))]).await.unwrap();
        if synchronous {
            recorder.tags[0].store(i + 1, Ordering::SeqCst);
        }
        if i % 50 == 49 {
            // Several snapshot records between flushes, each spanning sectors.
            let version = store.stream_version("s-0").await.unwrap();
            let state = format!("s-0 at {version} {}", "z".repeat(300 + (i % 7) as usize * 100));
            store.save_snapshot("s-0", Snapshot::new(version, state)).await.unwrap();
            snapshot_saved = version;
            if synchronous {
                recorder.tags[1].store(version, Ordering::SeqCst);
            }
        }
        if !synchronous && i % 200 == 199 {
            // What is durable without a sync per append: everything before a flush.
            store.flush().await.unwrap();
            recorder.tags[1].store(snapshot_saved, Ordering::SeqCst);
            recorder.tags[0].store(i + 1, Ordering::SeqCst);
        }
    }
    // Let the converter finish what it has (images are taken during it too).
    for _ in 0..2000 {
        if store.engine_stats().parquet_backlog == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let written = shape(&store.read_all(0, usize::MAX).await.unwrap());
    let parquet_files = store.parquet_files().len();
    drop(store);
    let images = recorder.take_images();
    assert!(parquet_files >= 2, "{sync:?}: the workload converted segments ({parquet_files})");
    let mut checked = 0;
    let mut with_parquet = 0;
    let mut unfinished = std::collections::BTreeMap::new();
    for (i, (image, [acked, snapshot_acked])) in images.iter().enumerate() {
        let what = format!("{sync:?} image {i} (durable {acked}, files {:?})", image.keys().collect::<Vec<_>>());
        let (copy, store) = open_image(image, sync, true);
        let store = store.unwrap_or_else(|e| panic!("{what}: a power cut must not stop the store opening: {e:?}"));
        let events = shape(&store.read_all(0, usize::MAX).await.unwrap());
        assert!(events.len() as u64 >= *acked, "{what}: {} events, {acked} acknowledged", events.len());
        assert_eq!(events[..], written[..events.len()], "{what}: the events are a prefix of those written");
        let version = store.stream_version("s-0").await.unwrap();
        let snapshot = store.get_latest_snapshot("s-0").await.unwrap();
        let snapshot_version = snapshot.map_or(0, |s| s.version);
        assert!(snapshot_version >= *snapshot_acked, "{what}: the acknowledged snapshot {snapshot_acked} is there");
        assert!(snapshot_version <= version, "{what}: snapshot {snapshot_version} ahead of stream {version}");
        if image.keys().any(|n| n.ends_with(".parquet")) {
            with_parquet += 1;
        }
        // Which files were caught half made (still under their temporary name).
        for kind in ["parquet.tmp", "idx.tmp", "MANIFEST.tmp", "log.tmp", "snapshots.log.tmp"] {
            if image.keys().any(|n| n.ends_with(kind)) {
                *unfinished.entry(kind).or_insert(0u32) += 1;
            }
        }
        store.append("after", ExpectedVersion::Any, vec![NewEvent::new("E", "after")]).await.unwrap();
        drop(store);
        let store = AllSourceBackend::with_config(config(copy.path(), sync, None, true))
            .unwrap_or_else(|e| panic!("{what}: reopen after an append failed: {e:?}"));
        assert_eq!(store.head_position().await.unwrap(), events.len() as u64 + 1, "{what}");
        checked += 1;
    }
    eprintln!(
        "power loss in any file, {sync:?}: {checked} images checked ({with_parquet} with Parquet segments; \
         with a file still under its temporary name: {unfinished:?})"
    );
    assert!(checked >= 50 && with_parquet >= 10, "{sync:?}: {checked} images, {with_parquet} with Parquet");
    for kind in ["parquet.tmp", "idx.tmp", "MANIFEST.tmp"] {
        assert!(unfinished.contains_key(kind), "{sync:?}: no image caught a half-written {kind}: {unfinished:?}");
    }
    checked
}

/// Damage a power cut does not make, in the files a power cut is allowed to tear, is still
/// reported: a flipped byte in a listed Parquet file or in the manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_damage_in_the_manifest_or_a_parquet_file_is_still_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let sync = SyncMode::Synchronous;
    {
        let store = AllSourceBackend::with_config(config(dir.path(), sync, None, true)).unwrap();
        for i in 0..600 {
            store.append(&stream(i), ExpectedVersion::Any, vec![NewEvent::new("E", payload(i))]).await.unwrap();
        }
        for _ in 0..2000 {
            if !store.parquet_files().is_empty() && store.engine_stats().parquet_backlog == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!store.parquet_files().is_empty());
    }
    let image = power::read_dir(dir.path());
    let parquet = image.keys().find(|n| n.ends_with(".parquet")).unwrap().clone();
    for (name, at) in [(parquet.as_str(), image[&parquet].len() / 2), ("MANIFEST", 20)] {
        let mut damaged = image.clone();
        damaged.get_mut(name).unwrap()[at] ^= 0x20;
        let (_copy, store) = open_image(&damaged, sync, true);
        match store {
            Err(Error::Corruption { file, .. }) => assert!(file.ends_with(name), "{name}: {file:?}"),
            other => panic!("{name}: expected corruption, got {:?}", other.map(|_| "an open store")),
        }
    }
}

/// A power cut at any file operation of a store's first open (and its first append and
/// snapshot) leaves a directory that opens: empty, or an unfinished creation that the open
/// finishes, or the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_during_the_first_open_leaves_a_directory_that_opens() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("store");
    let recorder = Arc::new(Recorder::new(&dir));
    recorder.capture(1, 1000, 0x000f_1e57);
    let sync = SyncMode::Synchronous;
    {
        let store = AllSourceBackend::with_config(config(&dir, sync, Some(recorder.clone()), true)).unwrap();
        store.append("s", ExpectedVersion::NoStream, vec![NewEvent::new("E", "first")]).await.unwrap();
        recorder.tags[0].store(1, Ordering::SeqCst);
        store.save_snapshot("s", Snapshot::new(1, "snap")).await.unwrap();
        recorder.tags[1].store(1, Ordering::SeqCst);
    }
    let images = recorder.take_images();
    assert!(images.len() >= 10, "{} images", images.len());
    for (i, (image, [acked, snapshot_acked])) in images.iter().enumerate() {
        let what = format!("image {i} (files {:?})", image.keys().collect::<Vec<_>>());
        let (copy, store) = open_image(image, sync, true);
        let store = store.unwrap_or_else(|e| panic!("{what}: open failed: {e:?}"));
        assert!(store.head_position().await.unwrap() >= *acked, "{what}");
        let snapshot = store.get_latest_snapshot("s").await.unwrap().map_or(0, |s| s.version);
        assert!(snapshot >= *snapshot_acked, "{what}");
        store.append("after", ExpectedVersion::Any, vec![NewEvent::new("E", "after")]).await.unwrap();
        drop(store);
        AllSourceBackend::with_config(config(copy.path(), sync, None, true))
            .unwrap_or_else(|e| panic!("{what}: reopen failed: {e:?}"));
    }
    eprintln!("power cut during the first open: {} images checked", images.len());
}
