//! The visibility horizon (docs/decisions/0203-postgres-transaction-horizon.md): positions come
//! from transaction ids, and readers read only below `(xmin of their snapshot + offset) << 16`.
//! An append is acknowledged once it is below that horizon, that is once every transaction
//! older than it has finished, so that an acknowledged append is visible to every reader.
//!
//! Each append learns at its end which older transactions were still running. Usually none
//! was, and the append is visible as soon as it has committed. Otherwise it waits here until
//! they have ended: an append of this backend that commits says so at once (the usual case:
//! appends of one process in flight at once), and one task per backend reads the horizon from the
//! server for the others (after 1 ms, then up to every 5 ms); every append's own answer moves
//! the horizon too.
//! After `max_wait` an append is acknowledged anyway (it is committed and durable; readers will
//! see it once the transaction holding them back ends) and a warning names that transaction.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgPool;
use tokio::sync::{Notify, oneshot};

use crate::Sql;

/// An append waiting to become visible.
#[derive(Debug)]
struct Waiter {
    last_position: u64,
    /// Older transactions still running at its end, not yet known to have ended.
    older: Vec<u64>,
    wake: oneshot::Sender<()>,
}

/// Stands for older transactions whose ids are not known: only the horizon releases a waiter
/// holding it (no transaction has this id).
pub(crate) const UNKNOWN_OLDER: u64 = u64::MAX;

/// What an append saw at its end, to know when it is visible.
#[derive(Clone, Debug, Default)]
pub(crate) struct Seen {
    /// The horizon its events are below once committed, if nothing older was running.
    pub(crate) visible_below: u64,
    /// Its transaction id.
    pub(crate) xid: u64,
    /// The older transactions still running at its end.
    pub(crate) older: Vec<u64>,
}

/// The horizon as this process knows it, and the appends waiting for it.
#[derive(Debug)]
pub(crate) struct Visibility {
    /// Every position below this is visible to every new snapshot.
    horizon: AtomicU64,
    waiters: Mutex<Vec<Waiter>>,
    wake: Notify,
    max_wait: Duration,
}

impl Visibility {
    /// Starts the task that reads the horizon (`sql`) while appends wait.
    pub(crate) fn start(pool: PgPool, sql: Sql, status_sql: Sql, max_wait: Duration) -> Arc<Visibility> {
        let visibility = Arc::new(Visibility {
            horizon: AtomicU64::new(0),
            waiters: Mutex::new(Vec::new()),
            wake: Notify::new(),
            max_wait,
        });
        tokio::spawn(poll(Arc::downgrade(&visibility), pool, sql, status_sql));
        visibility
    }

    /// Records a horizon read from the server and releases the appends below it.
    pub(crate) fn observe(&self, horizon: u64) {
        let before = self.horizon.fetch_max(horizon, Ordering::SeqCst);
        if horizon <= before {
            return;
        }
        self.release(|waiter| waiter.last_position < horizon);
    }

    /// Records that transaction `xid` (an append of this backend) has committed, and releases
    /// the appends that waited only for it and others already ended.
    pub(crate) fn committed(&self, xid: u64) {
        self.release(|waiter| {
            waiter.older.retain(|older| *older != xid);
            waiter.older.is_empty()
        });
    }

    fn release(&self, mut visible: impl FnMut(&mut Waiter) -> bool) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let mut index = 0;
        while index < waiters.len() {
            if visible(&mut waiters[index]) {
                let waiter = waiters.swap_remove(index);
                let _ = waiter.wake.send(());
            } else {
                index += 1;
            }
        }
    }

    /// Returns once `last_position` is below the horizon (`seen` is what the append itself saw
    /// at its end), or after the longest wait; whether it became visible. Call it after the
    /// append has committed.
    pub(crate) async fn wait(&self, last_position: u64, seen: Seen) -> bool {
        self.observe(seen.visible_below);
        if seen.older.is_empty() || last_position < self.horizon.load(Ordering::SeqCst) {
            return true;
        }
        let (wake, woken) = oneshot::channel();
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            // Checked again under the lock: `observe` may have run in between.
            if last_position < self.horizon.load(Ordering::SeqCst) {
                return true;
            }
            waiters.push(Waiter { last_position, older: seen.older, wake });
        }
        self.wake.notify_one();
        tokio::time::timeout(self.max_wait, woken).await.is_ok_and(|woken| woken.is_ok())
    }

    fn waiting(&self) -> bool {
        !self.waiters.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

/// Reads the horizon while appends wait, until the backend is dropped.
async fn poll(visibility: std::sync::Weak<Visibility>, pool: PgPool, sql: Sql, status_sql: Sql) {
    loop {
        let Some(live) = visibility.upgrade() else { return };
        if !live.waiting() {
            let wake = live.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if !live.waiting() {
                // Woken by a new waiter; look again now and then, in case the backend went away
                // (this task holds it only while it waits here).
                let _ = tokio::time::timeout(Duration::from_secs(1), wake).await;
                continue;
            }
        }
        // Appends of this backend release most waiters without a query: give them a moment.
        let mut pause = Duration::from_millis(1);
        tokio::time::sleep(pause).await;
        let mut waited = pause;
        let mut warned = false;
        while live.waiting() {
            match sqlx::query_scalar::<_, i64>(sql.clone()).fetch_one(&pool).await {
                Ok(horizon) => live.observe(horizon.max(0) as u64),
                Err(error) => tracing::debug!(%error, "postgres: reading the visibility horizon failed"),
            }
            if !live.waiting() {
                break;
            }
            if !warned && waited >= live.max_wait.min(Duration::from_secs(1)) {
                warned = true;
                warn_blocked(&pool, &status_sql, waited).await;
            }
            tokio::time::sleep(pause).await;
            waited += pause;
            pause = (pause * 2).clamp(Duration::from_millis(1), Duration::from_millis(5));
        }
    }
}

/// Logs which transaction holds readers back, when appends have waited long.
async fn warn_blocked(pool: &PgPool, status_sql: &Sql, waited: Duration) {
    let Ok(row) = sqlx::query(status_sql.clone()).fetch_one(pool).await else { return };
    let held_back: i64 = row.try_get(0).unwrap_or(0);
    let pid: Option<i32> = row.try_get(1).ok().flatten();
    let application: Option<String> = row.try_get(2).ok().flatten();
    let database: Option<String> = row.try_get(3).ok().flatten();
    let state: Option<String> = row.try_get(4).ok().flatten();
    let age: Option<f64> = row.try_get(5).ok().flatten();
    tracing::warn!(
        waited_ms = waited.as_millis() as u64,
        held_back,
        blocking_pid = pid,
        blocking_application = application.as_deref().unwrap_or(""),
        blocking_database = database.as_deref().unwrap_or(""),
        blocking_state = state.as_deref().unwrap_or(""),
        blocking_transaction_seconds = age.unwrap_or(0.0),
        "postgres: appends wait to become visible: an older transaction is still open and holds readers back \
         (set idle_in_transaction_session_timeout and statement_timeout; see docs/POSTGRES.md)"
    );
}

/// Sends the NOTIFY that wakes other processes' subscribers, after the commit and outside the
/// append's transaction: a transaction that NOTIFYs holds PostgreSQL's database-wide notify
/// lock from its commit's start to its end (WAL flush included), which would queue every
/// append behind every other again. Many appends finishing together send one NOTIFY (with the
/// highest position); a notification is only a hint, so one lost in a crash only delays
/// subscribers until they look again.
#[derive(Debug)]
pub(crate) struct Notifier {
    pending: AtomicU64,
    wake: Notify,
}

impl Notifier {
    /// Starts the task that sends notifications on `channel` through `pool`.
    pub(crate) fn start(pool: PgPool, channel: String) -> Arc<Notifier> {
        let notifier = Arc::new(Notifier { pending: AtomicU64::new(0), wake: Notify::new() });
        tokio::spawn(notify(Arc::downgrade(&notifier), pool, channel));
        notifier
    }

    /// Announces that events up to `position` are readable.
    pub(crate) fn announce(&self, position: u64) {
        self.pending.fetch_max(position, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

async fn notify(notifier: std::sync::Weak<Notifier>, pool: PgPool, channel: String) {
    let mut sent = 0;
    loop {
        let position = {
            let Some(live) = notifier.upgrade() else { return };
            let wake = live.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let position = live.pending.load(Ordering::SeqCst);
            if position <= sent {
                // Look again now and then, in case the backend went away.
                let _ = tokio::time::timeout(Duration::from_secs(1), wake).await;
                continue;
            }
            position
        };
        match sqlx::query("SELECT pg_notify($1, $2)").bind(&channel).bind(position.to_string()).execute(&pool).await {
            Ok(_) => sent = position,
            Err(error) => {
                tracing::debug!(%error, "postgres: NOTIFY failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
