//! The LISTEN task: turns NOTIFYs of appends (from any process) into commit-signal wake-ups,
//! reconnecting when its connection is lost and checking that a quiet connection still
//! answers, so a half-open connection (peer gone without a FIN or RST) is replaced.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use allframe_cqrs_core::CommitSignal;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::Sql;

/// How the LISTEN task checks a connection that has been quiet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HealthCheck {
    /// Quiet time after which the task asks the server for the head.
    pub(crate) interval: Duration,
    /// Longest wait for that answer (and for connecting) before the connection is given up.
    pub(crate) timeout: Duration,
}

/// What the task needs, fixed for the backend's life.
pub(crate) struct ListenConfig {
    pub(crate) options: PgConnectOptions,
    pub(crate) channel: String,
    pub(crate) head_sql: Sql,
    pub(crate) health: HealthCheck,
    /// Set while a connection listens; cleared when it is lost (the backend's health reads it).
    pub(crate) listening: Arc<AtomicBool>,
}

type ListenError = Box<dyn std::error::Error + Send + Sync>;

/// Runs until the commit signal is dropped. On a lost connection it reconnects with backoff
/// (20 ms doubling to 2 s) and re-reads the head, so a notification missed while
/// disconnected only delays a waiter until then (or its own timeout).
pub(crate) async fn run(config: ListenConfig, signal: Weak<CommitSignal>) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let outcome = listen_once(&config, &signal, &mut backoff).await;
        config.listening.store(false, Ordering::SeqCst);
        if signal.strong_count() == 0 {
            return;
        }
        if let Err(error) = outcome {
            tracing::debug!(%error, "postgres: LISTEN connection lost or silent; reconnecting");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn listen_once(
    config: &ListenConfig,
    signal: &Weak<CommitSignal>,
    backoff: &mut Duration,
) -> Result<(), ListenError> {
    // A pool of its own per connection: a connection given up on is still held by
    // PgListener's drop (it sends UNLISTEN) until TCP fails it, and must not keep the next
    // connection from being opened.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .test_before_acquire(false)
        .acquire_timeout(config.health.timeout)
        .connect_lazy_with(config.options.clone());
    let timeout = config.health.timeout;
    let mut listener = bounded(timeout, PgListener::connect_with(&pool)).await?;
    listener.eager_reconnect(false);
    bounded(timeout, listener.listen(&config.channel)).await?;
    // Commits made while no connection listened were not notified: read the head once now.
    let head: i64 = bounded(timeout, sqlx::query_scalar(config.head_sql.clone()).fetch_one(&mut listener)).await?;
    let Some(live) = signal.upgrade() else { return Ok(()) };
    live.publish(head.max(0) as u64);
    drop(live);
    config.listening.store(true, Ordering::SeqCst);
    *backoff = Duration::from_millis(20);
    loop {
        // `try_recv` is cancel-safe (sqlx keeps a partly read message buffered).
        let received = tokio::time::timeout(config.health.interval, listener.try_recv()).await;
        let Some(signal) = signal.upgrade() else { return Ok(()) };
        match received {
            Ok(Ok(Some(notification))) => match notification.payload().parse::<u64>() {
                Ok(position) => signal.publish(position),
                Err(_) => tracing::warn!(payload = notification.payload(), "postgres: unexpected NOTIFY payload"),
            },
            // The connection was closed: reconnect.
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(error)) => return Err(error.into()),
            // Quiet for a whole interval: a half-open connection would stay quiet forever.
            // Ask for the head (which also catches up on anything missed); no answer in time
            // means the connection is given up and replaced.
            Err(_) => {
                let head: i64 =
                    bounded(timeout, sqlx::query_scalar(config.head_sql.clone()).fetch_one(&mut listener)).await?;
                signal.publish(head.max(0) as u64);
            }
        }
    }
}

/// `future`'s result, or an error when it takes longer than `timeout`.
async fn bounded<T>(timeout: Duration, future: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, ListenError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(format!("no answer from the server within {timeout:?}").into()),
    }
}
