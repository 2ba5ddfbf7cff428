//! The acknowledgement poll of a lone synchronous appender (`AllSourceConfig::ack_spin`): lone
//! appends poll, a poll that runs out of time (a sync far slower than the last) makes the next
//! lone appends sleep without polling, and `ack_spin: 0` turns polling off. Counted through
//! `stats()`; no timing is asserted.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, IoHook, IoOp};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};

/// Makes every sync take 50 ms while switched on: far past any poll's budget.
#[derive(Debug, Default)]
struct SlowSync {
    on: AtomicBool,
}

impl IoHook for SlowSync {
    fn before(&self, op: IoOp, _path: &Path) -> io::Result<()> {
        if op == IoOp::Sync && self.on.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

fn open(dir: &Path, hook: Arc<SlowSync>, ack_spin: Duration) -> AllSourceBackend {
    AllSourceBackend::with_config(AllSourceConfig::durable(dir).io_hook(Some(hook)).ack_spin(ack_spin)).unwrap()
}

async fn counters(store: &AllSourceBackend) -> [u64; 3] {
    let stats = store.engine_stats();
    [stats.ack_poll_hits, stats.ack_poll_misses, stats.ack_poll_skips]
}

async fn append(store: &AllSourceBackend, n: u64) {
    store.append("lone", ExpectedVersion::Exact(n), vec![NewEvent::new("E", vec![b'x'; 200])]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_appends_poll_and_a_missed_poll_makes_the_next_ones_sleep() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Arc::new(SlowSync::default());
    let store = open(dir.path(), hook.clone(), AllSourceConfig::default().ack_spin);
    // The first append has no lone sync to go by; each later one polls (or, after a miss on a
    // busy machine, skips): every one is counted once.
    for n in 0..20 {
        append(&store, n).await;
    }
    let [hits, misses, skips] = counters(&store).await;
    assert_eq!(hits + misses + skips, 19, "hits {hits}, misses {misses}, skips {skips}");

    // A sync 50 ms long runs past any poll's budget (at most `ack_spin`, 400 µs): such an append
    // misses, or skips polling if a recent miss (possible on a busy machine) says so. Skips end
    // after at most 16 appends, so a miss comes; the append right after it must not poll.
    hook.on.store(true, Ordering::SeqCst);
    let mut n = 20;
    let mut before = counters(&store).await;
    loop {
        append(&store, n).await;
        n += 1;
        let now = counters(&store).await;
        assert_eq!(now[0], before[0], "a poll cannot see a 50 ms sync in time");
        assert_eq!(now[1] + now[2], before[1] + before[2] + 1);
        if now[1] > before[1] {
            break;
        }
        assert!(n < 40, "no missed poll after {n} slow appends: {now:?}");
        before = now;
    }
    hook.on.store(false, Ordering::SeqCst);
    let after_miss = counters(&store).await;
    append(&store, n).await;
    n += 1;
    let after = counters(&store).await;
    assert_eq!(after, [after_miss[0], after_miss[1], after_miss[2] + 1], "the append after a miss must not poll");
    assert_eq!(store.get_events("lone").await.unwrap().len() as u64, n);
}

#[tokio::test]
async fn zero_ack_spin_never_polls() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Arc::new(SlowSync::default()), Duration::ZERO);
    for n in 0..10 {
        append(&store, n).await;
    }
    assert_eq!(counters(&store).await, [0, 0, 0]);
    assert_eq!(store.stream_version("lone").await.unwrap(), 10);
}
