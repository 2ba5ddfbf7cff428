//! How an appender waits for its group commit: a lone synchronous appender polls for a short
//! while (yielding) before it sleeps until the writer wakes it (decision 0102, `ack_spin`).

use std::time::Duration;

use allframe_cqrs_core::Result;

use crate::AllSourceBackend;

/// Credit one acknowledgement poll that runs out of time costs (see `poll_committed`): after a
/// miss, 8 to 16 lone appends sleep instead of polling.
const POLL_MISS_COST: i32 = 16;
/// Most credit polls that see their commit in time can build up.
const POLL_CREDIT_MAX: i32 = 8;

impl AllSourceBackend {
    /// A lone synchronous appender's short wait: polls for `position` to be committed, yielding
    /// to other tasks between polls, for at most `ack_spin` and twice the writer's last lone
    /// write and sync (0 when the last group was not lone: then it returns at once). Saves the
    /// wake-up of a sleeping worker thread; [`Self::wait_committed`] does the rest.
    ///
    /// Adaptive, like RocksDB's write-thread yield: a poll that runs out of time costs
    /// [`POLL_MISS_COST`] credit (a hit earns one, up to [`POLL_CREDIT_MAX`]), and while the credit
    /// is below zero appenders do not poll.
    pub(crate) async fn poll_committed(&self, position: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let wakeup = &self.shared.wakeup;
        let lone = Duration::from_nanos(wakeup.lone_sync_nanos.load(Relaxed));
        let budget = self.config.ack_spin.min(lone * 2);
        if budget.is_zero() {
            return;
        }
        let credit = wakeup.poll_credit.load(Relaxed);
        let stats = &self.shared.writer_stats;
        if credit < 0 {
            wakeup.poll_credit.store(credit + 1, Relaxed);
            stats.ack_poll_skips.fetch_add(1, Relaxed);
            return;
        }
        let start = std::time::Instant::now();
        loop {
            if self.shared.signal.head() >= position || wakeup.poisoned.load(Relaxed) {
                wakeup.poll_credit.store((credit + 1).min(POLL_CREDIT_MAX), Relaxed);
                stats.ack_poll_hits.fetch_add(1, Relaxed);
                return;
            }
            if start.elapsed() >= budget {
                wakeup.poll_credit.store(credit - POLL_MISS_COST, Relaxed);
                stats.ack_poll_misses.fetch_add(1, Relaxed);
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Waits until `position` is committed: written (and synced, in synchronous mode) by the
    /// writer. Fails with the writer's error if the write holding it failed.
    pub(crate) async fn wait_committed(&self, position: u64) -> Result<()> {
        let wakeup = &self.shared.wakeup;
        loop {
            let notified = wakeup.acks.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.signal.head() >= position {
                return Ok(());
            }
            if wakeup.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
                let state = self.read();
                if state.committed >= position {
                    return Ok(());
                }
                // Below `first_failed` the writer has not decided yet (it may be writing the
                // group right now): wait for it to commit or fail the append.
                if let Some(poison) = &state.poisoned
                    && position >= poison.first_failed
                {
                    return Err(poison.original());
                }
            }
            notified.await;
        }
    }
}
