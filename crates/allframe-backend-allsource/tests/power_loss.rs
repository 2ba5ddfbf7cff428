//! Power loss in the middle of a group commit, simulated sector by sector.
//!
//! A power cut while a group commit is being written leaves, of the sectors that write touched,
//! any subset on the disk: the drive may have written some and not others, in any order. Only
//! the sectors' old contents (the zeros the segment was preallocated with) or new contents can
//! be there. The test writes a real group of many frames whose `fdatasync` fails (so none of it
//! was acknowledged), then builds hundreds of disk images, each keeping a random subset of that
//! group's 512-byte or 4 KiB sectors, and opens each one:
//!
//! - the store opens (a torn group is the normal aftermath of a crash, not corruption);
//! - every acknowledged event is there, unchanged;
//! - what survives of the torn group is a prefix of its frames, each whole: no append is half
//!   there, positions and versions stay contiguous;
//! - after more appends and another reopen, the store still opens with everything acknowledged
//!   (leftovers of the torn group beyond the repaired end must not resurface).

#[path = "support/disk.rs"]
mod disk;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, IoHook, IoOp};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent, RecordedEvent};

const SEGMENT: &str = "wal-0000000001.log";
const ACKNOWLEDGED: u64 = 20;
const TORN_APPENDS: u64 = 30;

/// Once armed, blocks the writer's first log write until released, then fails its second sync.
#[derive(Debug, Default)]
struct Hook {
    armed: AtomicBool,
    /// Set once the writer is blocked in its first write.
    blocked: AtomicBool,
    released: Mutex<bool>,
    release: Condvar,
    syncs: AtomicU64,
    /// The segment as the failing sync found it: the torn group written, not yet synced (the
    /// writer may undo the write after the failure; a power cut may not let it).
    unsynced: Mutex<Option<Vec<u8>>>,
}

impl IoHook for Hook {
    fn before(&self, op: IoOp, path: &Path) -> io::Result<()> {
        // Only the writer's own log I/O (not the helper that preallocates ahead of it).
        let writer = std::thread::current().name() == Some("allsource-writer");
        if !self.armed.load(Ordering::SeqCst) || !path.ends_with(SEGMENT) || !writer {
            return Ok(());
        }
        match op {
            IoOp::Write => {
                self.blocked.store(true, Ordering::SeqCst);
                let mut released = self.released.lock().unwrap();
                while !*released {
                    released = self.release.wait(released).unwrap();
                }
                Ok(())
            }
            IoOp::Sync if self.syncs.fetch_add(1, Ordering::SeqCst) >= 1 => {
                let mut unsynced = self.unsynced.lock().unwrap();
                if unsynced.is_none() {
                    *unsynced = std::fs::read(path).ok();
                }
                Err(io::Error::other("power cut before the sync completed"))
            }
            _ => Ok(()),
        }
    }
}

fn config(dir: &Path, hook: Option<Arc<Hook>>) -> AllSourceConfig {
    AllSourceConfig::durable(dir).parquet_segments(false).io_hook(hook.map(|h| h as Arc<dyn IoHook>))
}

fn event(tag: &str, i: u64) -> NewEvent {
    NewEvent::new("Thing", format!("{tag} payload {i} {}", "x".repeat((i % 7 * 40) as usize)))
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Writes `ACKNOWLEDGED` synced appends, one more synced group of one append, then one group
/// of `TORN_APPENDS` appends that is written but whose sync fails. Returns the directory, the
/// acknowledged events and the segment as it was with the torn group written.
async fn build_torn_store() -> (tempfile::TempDir, Vec<RecordedEvent>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let hook = Arc::new(Hook::default());
    let store = Arc::new(AllSourceBackend::with_config(config(dir.path(), Some(hook.clone()))).unwrap());
    for i in 0..ACKNOWLEDGED {
        store.append(&format!("s-{}", i % 3), ExpectedVersion::Any, vec![event("acked", i)]).await.unwrap();
    }
    hook.armed.store(true, Ordering::SeqCst);
    // The writer takes this append alone and blocks in its write ...
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.append("s-0", ExpectedVersion::Any, vec![event("first", 0)]).await }
    });
    while !hook.blocked.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    // ... while these place their frames behind it: they become the next group.
    let torn: Vec<_> = (0..TORN_APPENDS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let events = (0..1 + i % 3).map(|k| event("torn", i * 10 + k)).collect();
                store.append(&format!("s-{}", i % 4), ExpectedVersion::Any, events).await
            })
        })
        .collect();
    let placed = ACKNOWLEDGED + 1 + TORN_APPENDS;
    loop {
        let frames = store.engine_stats().index_frames;
        if frames == placed {
            break;
        }
        tokio::task::yield_now().await;
    }
    *hook.released.lock().unwrap() = true;
    hook.release.notify_all();
    first.await.unwrap().expect("the first group is synced and acknowledged");
    for append in torn {
        assert!(append.await.unwrap().is_err(), "an append whose sync failed is not acknowledged");
    }
    let acknowledged = store.read_all(0, usize::MAX).await.unwrap();
    assert_eq!(acknowledged.len() as u64, ACKNOWLEDGED + 1);
    drop(store);
    let written = hook.unsynced.lock().unwrap().take().expect("the failing sync saw the segment");
    (dir, acknowledged, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_subset_of_a_torn_group_commits_sectors_recovers_to_a_whole_frame_prefix() {
    let (dir, acknowledged, written) = build_torn_store().await;
    let all_frames = disk::frames(&written);
    let acked_frames = (ACKNOWLEDGED + 1) as usize;
    assert_eq!(all_frames.len(), acked_frames + TORN_APPENDS as usize, "the torn group reached the file");
    let torn_start = all_frames[acked_frames - 1].1;
    let torn_end = all_frames.last().unwrap().1;
    // Event counts that a whole-frame prefix of the torn group can leave.
    let mut allowed = vec![acknowledged.len()];
    for &(_, _, count) in &all_frames[acked_frames..] {
        allowed.push(allowed.last().unwrap() + count as usize);
    }
    // The events of the whole torn group, as they would read had its sync succeeded.
    let whole = tempfile::tempdir().unwrap();
    disk::copy_store(dir.path(), whole.path());
    std::fs::write(whole.path().join(SEGMENT), &written).unwrap();
    let full: Vec<RecordedEvent> = {
        let store = AllSourceBackend::with_config(config(whole.path(), None)).unwrap();
        store.read_all(0, usize::MAX).await.unwrap()
    };
    assert_eq!(full.len(), *allowed.last().unwrap());

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut outcomes = std::collections::BTreeMap::new();
    for trial in 0..240u64 {
        let sector = if trial.is_multiple_of(2) { 512 } else { 4096 };
        // Which sectors of the write reached the disk: all, none, or a random subset.
        let keep_all = trial == 0;
        let keep_none = trial == 1;
        let mut image = written.clone();
        let mut at = torn_start / sector * sector;
        while at < torn_end {
            let end = (at + sector).min(image.len());
            let lost = keep_none || (!keep_all && rng.next().is_multiple_of(3));
            if lost {
                // Before the write, the sector held the acknowledged bytes up to `torn_start`
                // and the preallocation's zeros after.
                for byte in &mut image[at.max(torn_start)..end] {
                    *byte = 0;
                }
            }
            at = end;
        }
        let copy = tempfile::tempdir().unwrap();
        disk::copy_store(dir.path(), copy.path());
        std::fs::write(copy.path().join(SEGMENT), &image).unwrap();

        let store = AllSourceBackend::with_config(config(copy.path(), None))
            .unwrap_or_else(|e| panic!("trial {trial}: a torn group must not stop the store opening: {e}"));
        let recovered = store.read_all(0, usize::MAX).await.unwrap();
        assert!(
            allowed.contains(&recovered.len()),
            "trial {trial}: {} events is not a whole-frame prefix",
            recovered.len()
        );
        assert_eq!(recovered[..], full[..recovered.len()], "trial {trial}: recovered events differ");
        assert_eq!(recovered[..acknowledged.len()], acknowledged[..], "trial {trial}: acknowledged events changed");
        *outcomes.entry(recovered.len()).or_insert(0u32) += 1;
        // Whatever the torn group left beyond the recovered end is gone from the file, so
        // later appends cannot end up next to stale frames.
        let repaired = std::fs::read(copy.path().join(SEGMENT)).unwrap();
        let end = disk::frames(&repaired).last().map_or(32, |f| f.1);
        assert!(repaired[end..].iter().all(|&b| b == 0), "trial {trial}: bytes left after the recovered end");

        // Appends after the repair, then another reopen: nothing of the torn group resurfaces.
        let head = recovered.len() as u64;
        for i in 0..5 {
            store.append("after", ExpectedVersion::Any, vec![event("after", i)]).await.unwrap();
        }
        drop(store);
        let store = AllSourceBackend::with_config(config(copy.path(), None))
            .unwrap_or_else(|e| panic!("trial {trial}: reopening after more appends failed: {e}"));
        let events = store.read_all(0, usize::MAX).await.unwrap();
        assert_eq!(events.len() as u64, head + 5, "trial {trial}");
        assert_eq!(events[..recovered.len()], recovered[..], "trial {trial}");
        assert!(events.windows(2).all(|w| w[1].position == w[0].position + 1), "trial {trial}: positions");
    }
    // The random subsets really exercised partial outcomes, not only all or nothing.
    assert!(outcomes.len() >= 3, "outcomes: {outcomes:?}");
}

/// Without a sync per write (`Interval`, `NoSync`) several group commits can be unsynced when
/// the power goes, and the cut can lose a sector of an earlier one while keeping a later one.
/// That store opens with a prefix of its frames (the unsynced tail from the torn one is cut
/// off); opened as a synchronous store, the same image is corruption (each write there is
/// synced before the next, so a later write means the earlier one was durable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_across_several_unsynced_group_commits_recovers_a_prefix() {
    use allframe_backend_allsource::SyncMode;
    use allframe_cqrs_core::Error;
    const SYNCED: usize = 5;
    const UNSYNCED: usize = 12;
    for sync in [SyncMode::Interval(std::time::Duration::from_secs(3600)), SyncMode::NoSync] {
        let dir = tempfile::tempdir().unwrap();
        let with = |dir: &Path, sync| config(dir, None).sync(sync);
        let store = AllSourceBackend::with_config(with(dir.path(), sync)).unwrap();
        for i in 0..SYNCED as u64 {
            store.append("s", ExpectedVersion::Any, vec![event("synced", i)]).await.unwrap();
        }
        store.flush().await.unwrap();
        for i in 0..UNSYNCED as u64 {
            // One append at a time: each is its own group commit.
            store.append("s", ExpectedVersion::Any, vec![event("unsynced", i)]).await.unwrap();
        }
        let written = std::fs::read(dir.path().join(SEGMENT)).unwrap();
        let frames = disk::frames(&written);
        assert_eq!(frames.len(), SYNCED + UNSYNCED);
        let synced_end = frames[SYNCED - 1].1;
        for torn in SYNCED..SYNCED + UNSYNCED - 3 {
            // The sector holding the middle of frame `torn` is lost: zeros, except the bytes
            // that were synced before.
            let sector = (frames[torn].0 + frames[torn].1) / 2 / 512;
            let (from, to) = ((sector * 512).max(synced_end), (sector + 1) * 512);
            if frames.last().unwrap().0 < to {
                continue;
            }
            let mut image = written.clone();
            image[from..to].fill(0);
            let copy = tempfile::tempdir().unwrap();
            disk::copy_store(dir.path(), copy.path());
            std::fs::write(copy.path().join(SEGMENT), &image).unwrap();
            let strict = AllSourceBackend::with_config(with(copy.path(), SyncMode::Synchronous)).unwrap_err();
            assert!(matches!(strict, Error::Corruption { .. }), "{sync:?} torn {torn}: {strict:?}");
            let store = AllSourceBackend::with_config(with(copy.path(), sync))
                .unwrap_or_else(|e| panic!("{sync:?} torn {torn}: a power cut must not stop the store opening: {e}"));
            let events = store.read_all(0, usize::MAX).await.unwrap();
            let kept = frames.iter().take_while(|f| f.1 <= from).count();
            assert_eq!(events.len(), kept, "{sync:?} torn {torn}: every whole frame before the lost sector");
            store.append("s", ExpectedVersion::Exact(kept as u64), vec![event("after", 0)]).await.unwrap();
            drop(store);
            let store = AllSourceBackend::with_config(with(copy.path(), sync)).unwrap();
            assert_eq!(store.head_position().await.unwrap(), kept as u64 + 1, "{sync:?} torn {torn}");
        }
    }
}
