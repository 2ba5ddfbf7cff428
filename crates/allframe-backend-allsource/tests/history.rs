//! The testkit's concurrent-history checker (`allframe_cqrs_testkit::history`) on AllSource
//! while log segments roll and are rewritten as Parquet: small segments, conversion on, every
//! fdatasync slowed so that group commits gather several appends and span rolls; then runs in
//! which the n-th sync fails (the store poisons itself), in every durability mode, checked
//! again after the store is reopened.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, IoHook, IoOp, SyncMode};
use allframe_cqrs_core::EventStoreBackend;
use allframe_cqrs_testkit::history::{HistoryOptions, run_history};

/// Slows every sync, and fails the `fail_at`-th one (0: none).
#[derive(Debug)]
struct SlowSync {
    delay: Duration,
    fail_at: AtomicU64,
    syncs: AtomicU64,
    /// The file whose sync failed.
    failed: std::sync::Mutex<Option<std::path::PathBuf>>,
}

impl SlowSync {
    fn new() -> Arc<Self> {
        Arc::new(SlowSync {
            delay: Duration::from_millis(1),
            fail_at: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            failed: std::sync::Mutex::new(None),
        })
    }
}

impl IoHook for SlowSync {
    fn before(&self, op: IoOp, path: &Path) -> io::Result<()> {
        if op == IoOp::Sync {
            let n = self.syncs.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::sleep(self.delay);
            if self.fail_at.load(Ordering::SeqCst) == n {
                *self.failed.lock().unwrap() = Some(path.to_path_buf());
                return Err(io::Error::other("injected fdatasync failure"));
            }
        }
        Ok(())
    }
}

fn config(dir: &Path, sync: SyncMode, hook: Option<Arc<SlowSync>>) -> AllSourceConfig {
    let mut config = AllSourceConfig::durable(dir);
    config.sync = sync;
    config.segment_size = 64 * 1024;
    config.io_hook = hook.map(|hook| hook as Arc<dyn IoHook>);
    config
}

fn options(seed: u64, faults_expected: bool) -> HistoryOptions {
    HistoryOptions { seed, appends_per_writer: 60, pad: 400, faults_expected, ..HistoryOptions::default() }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap()
}

#[test]
fn histories_stay_consistent_while_segments_roll_and_convert() {
    runtime().block_on(async {
        for seed in 1..=2 {
            let dir = tempfile::tempdir().unwrap();
            let hook = SlowSync::new();
            let backend =
                Arc::new(AllSourceBackend::with_config(config(dir.path(), SyncMode::Synchronous, Some(hook))).unwrap());
            let report = run_history(Arc::clone(&backend), options(seed, false)).await;
            report.assert_ok();
            let stats = backend.stats().await.unwrap();
            println!("seed {seed}: {report}; {} events stored", stats.events);
            drop(backend);
            let reopened = AllSourceBackend::with_config(config(dir.path(), SyncMode::Synchronous, None)).unwrap();
            let after = report.verify_after_reopen(&reopened).await;
            assert!(after.is_empty(), "after reopen: {after:#?}");
        }
    });
}

#[test]
fn a_failed_sync_never_shows_its_append_and_loses_nothing_acknowledged() {
    let modes = [SyncMode::Synchronous, SyncMode::Interval(Duration::from_millis(2)), SyncMode::NoSync];
    let mut runs = 0;
    runtime().block_on(async {
        for mode in modes {
            // The k-th sync after the open fails (the open's own syncs succeed).
            for k in [1u64, 7, 23] {
                let dir = tempfile::tempdir().unwrap();
                let hook = SlowSync::new();
                let backend =
                    Arc::new(AllSourceBackend::with_config(config(dir.path(), mode, Some(Arc::clone(&hook)))).unwrap());
                let fail_at = hook.syncs.load(Ordering::SeqCst) + k;
                hook.fail_at.store(fail_at, Ordering::SeqCst);
                let report = run_history(Arc::clone(&backend), options(fail_at, true)).await;
                report.assert_ok();
                // A failed sync of the log or the snapshot file poisons the store, in every mode,
                // so flush reports it. (A failed sync of a Parquet conversion only keeps the log
                // segment as it is: nothing acknowledged depends on it.)
                let flushed = backend.flush().await;
                let failed = hook.failed.lock().unwrap().clone();
                let name = failed.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
                if name
                    .as_deref()
                    .is_some_and(|n| (n.starts_with("wal-") && n.ends_with(".log")) || n == "snapshots.log")
                {
                    assert!(flushed.is_err(), "{mode:?}: the sync of {name:?} failed; flush must report it, got Ok");
                }
                drop(backend);
                let reopened = AllSourceBackend::with_config(config(dir.path(), mode, None)).unwrap();
                let after = report.verify_after_reopen(&reopened).await;
                assert!(after.is_empty(), "{mode:?}, sync {k} after open failed; after reopen: {after:#?}");
                runs += 1;
                println!("{mode:?}, sync {k} after open failed ({name:?}): {report}");
            }
        }
    });
    println!("{runs} histories with a failed sync checked, before and after reopen");
}
