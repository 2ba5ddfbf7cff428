//! Corruption tests: real bytes truncated, zeroed and flipped in the log and snapshot files.
//! A torn final frame is repaired; any other damage is a typed `Error::Corruption` naming the
//! file and offset, and no other event is lost or changed.

#[path = "support/disk.rs"]
mod disk;

use std::path::{Path, PathBuf};

use allframe_backend_allsource::{AllSourceBackend, EngineStats};
use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, NewEvent, RecordedEvent, Snapshot};

const SEGMENT: &str = "wal-0000000001.log";

/// Frame start and end offsets in a segment file.
fn frame_offsets(path: &Path) -> Vec<(u64, u64)> {
    disk::frames(&std::fs::read(path).unwrap()).into_iter().map(|(start, end, _)| (start as u64, end as u64)).collect()
}

/// A closed store with `n` single-event appends (each a frame) and a snapshot; returns the
/// directory and every event as stored.
fn build(n: u64) -> (tempfile::TempDir, Vec<RecordedEvent>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let events = rt.block_on(async {
        let store = AllSourceBackend::production(dir.path()).unwrap();
        for i in 0..n {
            let e = NewEvent::new("Thing", format!("payload number {i}"));
            store.append(&format!("s-{}", i % 3), ExpectedVersion::Any, vec![e]).await.unwrap();
        }
        store.save_snapshot("s-0", Snapshot::new(1, "snap")).await.unwrap();
        store.get_all_events().await.unwrap()
    });
    (dir, events)
}

fn reopen(dir: &Path) -> Result<(Vec<RecordedEvent>, allframe_cqrs_core::BackendStats, EngineStats), Error> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = AllSourceBackend::production(dir)?;
        let events = store.get_all_events().await?;
        let stats = store.stats().await?;
        Ok((events, stats, store.engine_stats()))
    })
}

fn expect_corruption(result: Result<impl std::fmt::Debug, Error>, file: &Path, offset: u64) {
    match result {
        Err(Error::Corruption { file: f, offset: o, .. }) => {
            assert_eq!((f.as_path(), o), (file, offset), "corruption names the file and offset");
        }
        other => panic!("expected Corruption at {}:{offset}, got {other:?}", file.display()),
    }
}

#[test]
fn truncating_the_last_frame_at_every_offset_is_repaired() {
    let (dir, events) = build(6);
    let frames = frame_offsets(&dir.path().join(SEGMENT));
    assert_eq!(frames.len(), 6);
    let (start, end) = frames[5];
    for cut in start..end {
        for zero_instead in [false, true] {
            let copy = tempfile::tempdir().unwrap();
            disk::copy_store(dir.path(), copy.path());
            let segment = copy.path().join(SEGMENT);
            if zero_instead {
                // A torn write inside preallocated space: the rest of the frame is zeros.
                let mut bytes = std::fs::read(&segment).unwrap();
                bytes[cut as usize..end as usize].fill(0);
                std::fs::write(&segment, bytes).unwrap();
            } else {
                std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(cut).unwrap();
            }
            let (read, _, engine) = reopen(copy.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e:?}"));
            assert_eq!(read, events[..5], "cut at {cut}: the first five events are intact");
            let torn = cut > start;
            assert_eq!(engine.recovery.torn_tail.is_some(), torn, "cut at {cut}");
            if torn {
                let (file, offset, _) = engine.recovery.torn_tail.clone().expect("a torn tail");
                assert_eq!((file, offset), (segment.clone(), start));
            }
            // The repaired store takes new appends and reopens cleanly.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let store = AllSourceBackend::production(copy.path()).unwrap();
                let r = store.append("s-9", ExpectedVersion::Any, vec![NewEvent::new("After", "x")]).await.unwrap();
                assert_eq!(r.first_position, 6);
            });
            let (read, _, engine) = reopen(copy.path()).unwrap();
            assert_eq!(read.len(), 6);
            assert_eq!(engine.recovery.torn_tail, None);
        }
    }
}

#[test]
fn a_flipped_byte_in_an_earlier_frame_is_reported_and_nothing_is_lost() {
    let (dir, events) = build(6);
    let frames = frame_offsets(&dir.path().join(SEGMENT));
    let (start, end) = frames[2];
    for at in start..end {
        let copy = tempfile::tempdir().unwrap();
        disk::copy_store(dir.path(), copy.path());
        let segment = copy.path().join(SEGMENT);
        let mut bytes = std::fs::read(&segment).unwrap();
        let original = bytes.clone();
        bytes[at as usize] ^= 0x10;
        std::fs::write(&segment, &bytes).unwrap();
        expect_corruption(reopen(copy.path()), &segment, start);
        // Nothing was rewritten: undoing the flip gives back every event.
        assert_eq!(std::fs::read(&segment).unwrap(), bytes, "the damaged file is left as it was");
        std::fs::write(&segment, &original).unwrap();
        assert_eq!(reopen(copy.path()).unwrap().0, events);
    }
}

#[test]
fn damaged_segment_header_and_missing_segment_are_reported() {
    let (dir, _) = build(3);
    let segment = dir.path().join(SEGMENT);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[17] ^= 1;
    std::fs::write(&segment, &bytes).unwrap();
    expect_corruption(reopen(dir.path()), &segment, 0);
    bytes[17] ^= 1;
    std::fs::write(&segment, &bytes).unwrap();
    std::fs::rename(&segment, dir.path().join("wal-0000000002.log")).unwrap();
    expect_corruption(reopen(dir.path()), &segment, 0);
}

#[test]
fn snapshot_file_damage_is_reported_and_a_torn_record_repaired() {
    let (dir, events) = build(3);
    let snapshots: PathBuf = dir.path().join("snapshots.log");
    let bytes = std::fs::read(&snapshots).unwrap();
    let mut flipped = bytes.clone();
    flipped[10] ^= 0x01;
    std::fs::write(&snapshots, &flipped).unwrap();
    expect_corruption(reopen(dir.path()), &snapshots, 0);
    // A torn final record (cut short) is cut off; the events are untouched.
    std::fs::write(&snapshots, &bytes[..bytes.len() - 3]).unwrap();
    let (read, _, _) = reopen(dir.path()).unwrap();
    assert_eq!(read, events);
    assert_eq!(std::fs::metadata(&snapshots).unwrap().len(), 0);
}

/// Three snapshot records (streams s-0, s-1, s-2) in a closed store; returns the directory,
/// the events, and each record's (start, end) in `snapshots.log`.
fn build_with_snapshots() -> (tempfile::TempDir, Vec<RecordedEvent>, Vec<(usize, usize)>) {
    let (dir, events) = build(6);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let path = dir.path().join("snapshots.log");
    let mut records = vec![(0, std::fs::metadata(&path).unwrap().len() as usize)];
    rt.block_on(async {
        let store = AllSourceBackend::production(dir.path()).unwrap();
        for (stream, payload) in [("s-1", "x".repeat(700)), ("s-2", "y".repeat(1500))] {
            store.save_snapshot(stream, Snapshot::new(2, payload)).await.unwrap();
            let start = records.last().unwrap().1;
            records.push((start, std::fs::metadata(&path).unwrap().len() as usize));
        }
    });
    (dir, events, records)
}

#[test]
fn zeros_after_the_last_snapshot_record_are_a_torn_tail_not_corruption() {
    let (dir, events, records) = build_with_snapshots();
    let path = dir.path().join("snapshots.log");
    let bytes = std::fs::read(&path).unwrap();
    for zeros in [1, 7, 8, 100, 4096] {
        let copy = tempfile::tempdir().unwrap();
        disk::copy_store(dir.path(), copy.path());
        let mut extended = bytes.clone();
        extended.resize(bytes.len() + zeros, 0);
        std::fs::write(copy.path().join("snapshots.log"), &extended).unwrap();
        let (read, stats, engine) = reopen(copy.path()).unwrap_or_else(|e| panic!("{zeros} zeros: {e:?}"));
        assert_eq!(read, events);
        assert_eq!(stats.snapshots, 3, "{zeros} zeros");
        assert!(engine.recovery.snapshot_torn_tail, "{zeros} zeros");
        assert_eq!(std::fs::read(copy.path().join("snapshots.log")).unwrap(), bytes, "{zeros} zeros cut off");
    }
    assert_eq!(records.len(), 3);
}

#[test]
fn a_final_snapshot_record_torn_by_lost_sectors_is_cut_off() {
    let (dir, events, records) = build_with_snapshots();
    let bytes = std::fs::read(dir.path().join("snapshots.log")).unwrap();
    let (start, end) = records[2];
    // Each 512-byte sector of the last record lost on its own (zeros), and the file cut at
    // every sector boundary inside it.
    let mut images = Vec::new();
    for sector in (start / 512)..=((end - 1) / 512) {
        let mut image = bytes.clone();
        image[(sector * 512).max(start)..((sector + 1) * 512).min(end)].fill(0);
        images.push(image);
        if sector * 512 > start {
            images.push(bytes[..sector * 512].to_vec());
        }
    }
    assert!(images.len() >= 5);
    for (i, image) in images.iter().enumerate() {
        let copy = tempfile::tempdir().unwrap();
        disk::copy_store(dir.path(), copy.path());
        std::fs::write(copy.path().join("snapshots.log"), image).unwrap();
        let (read, stats, engine) = reopen(copy.path()).unwrap_or_else(|e| panic!("image {i}: {e:?}"));
        assert_eq!(read, events, "image {i}");
        assert_eq!(stats.snapshots, 2, "image {i}: the torn record is gone, the others kept");
        assert!(engine.recovery.snapshot_torn_tail, "image {i}");
        assert_eq!(std::fs::read(copy.path().join("snapshots.log")).unwrap(), bytes[..start], "image {i}");
    }
}

#[test]
fn a_damaged_snapshot_record_followed_by_a_valid_one_is_corruption() {
    let (dir, _, records) = build_with_snapshots();
    let path = dir.path().join("snapshots.log");
    let bytes = std::fs::read(&path).unwrap();
    let (start, end) = records[1];
    let mut damaged = Vec::new();
    // A flipped byte anywhere in the middle record.
    for at in (start..end).step_by(37) {
        let mut image = bytes.clone();
        image[at] ^= 0x08;
        damaged.push(image);
    }
    // A length field damaged to claim more than the file holds: what follows is a whole
    // record, so this is no record cut short by the end of the file.
    let mut image = bytes.clone();
    image[start + 3] ^= 0x10;
    damaged.push(image);
    // Zeros where the middle record was: what follows is a whole record, so this is no torn tail.
    let mut image = bytes.clone();
    image[start..end].fill(0);
    damaged.push(image);
    // A flipped byte in the last record (no zero sector in it): damage, not a torn write.
    let mut image = bytes.clone();
    image[records[2].0 + 20] ^= 0x01;
    damaged.push(image);
    for (i, image) in damaged.iter().enumerate() {
        std::fs::write(&path, image).unwrap();
        let offset = if i + 1 == damaged.len() { records[2].0 } else { start } as u64;
        expect_corruption(reopen(dir.path()), &path, offset);
        assert_eq!(&std::fs::read(&path).unwrap(), image, "image {i}: the damaged file is left as it was");
    }
}

/// Without a sync per snapshot (`Interval`, `NoSync`) several records can be unsynced when the
/// power goes, and the cut can lose a sector of one and keep a later one: such a store opens,
/// cut off at the torn record. A synchronous store syncs each record, so there it is damage.
#[test]
fn a_torn_snapshot_record_before_a_valid_one_is_cut_off_only_without_syncs() {
    use allframe_backend_allsource::{AllSourceConfig, SyncMode};
    let (dir, events, records) = build_with_snapshots();
    let path = dir.path().join("snapshots.log");
    let bytes = std::fs::read(&path).unwrap();
    let (start, end) = records[1];
    // The middle record loses one of its sectors (zeros), one that does not also hold the
    // start of the last record (which is whole, so its sector reached the disk).
    let mut torn_images = Vec::new();
    for sector in (start / 512)..(end / 512) {
        let mut image = bytes.clone();
        image[(sector * 512).max(start)..(sector + 1) * 512].fill(0);
        torn_images.push(image);
    }
    assert!(!torn_images.is_empty());
    for (i, image) in torn_images.iter().enumerate() {
        std::fs::write(&path, image).unwrap();
        expect_corruption(reopen(dir.path()), &path, start as u64);
        for sync in [SyncMode::NoSync, SyncMode::Interval(std::time::Duration::from_secs(60))] {
            let copy = tempfile::tempdir().unwrap();
            disk::copy_store(dir.path(), copy.path());
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let config = AllSourceConfig::durable(copy.path()).sync(sync);
                let store = AllSourceBackend::with_config(config).unwrap_or_else(|e| panic!("image {i}: {e:?}"));
                assert_eq!(store.get_all_events().await.unwrap(), events, "image {i}");
                let stats = store.stats().await.unwrap();
                assert_eq!(stats.snapshots, 1, "image {i}: the records from the torn one on are gone");
                assert!(store.engine_stats().recovery.snapshot_torn_tail, "image {i}");
            });
            assert_eq!(std::fs::read(copy.path().join("snapshots.log")).unwrap(), bytes[..start], "image {i}");
        }
    }
    // Zeros only in the sector that also holds the last record's start: that sector reached
    // the disk (the last record is whole), so the zeros are damage, in every mode.
    let mut image = bytes.clone();
    assert!(end / 512 * 512 > start && end % 512 != 0);
    image[end / 512 * 512..end].fill(0);
    std::fs::write(&path, &image).unwrap();
    let config = allframe_backend_allsource::AllSourceConfig::durable(dir.path())
        .sync(allframe_backend_allsource::SyncMode::NoSync);
    match AllSourceBackend::with_config(config) {
        Err(Error::Corruption { offset, .. }) => assert_eq!(offset, start as u64),
        other => panic!("expected corruption, got {:?}", other.map(|_| "an open store")),
    }
}
