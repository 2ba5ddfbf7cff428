//! What the store's health answer checks: the server answers a read of the head within
//! [`HEALTH_TIMEOUT`] (else `Failed`, `postgres.server`); the pool has a connection for every
//! statement (else `Degraded`, `postgres.pool`); the LISTEN task listens (else `Degraded`,
//! `postgres.listener`: subscribers fall back to polling); a read replica answers (else
//! `Failed`: the reads of the log go there) and has replayed the primary's head within the
//! same bound (else `Degraded`, `postgres.replica`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use allframe_cqrs_core::Health;
use sqlx::postgres::PgPool;

use crate::PostgresBackend;

/// The longest a health check waits for the server (and for a replica to catch up).
pub(crate) const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

const SERVER: &str = "postgres.server";
const POOL: &str = "postgres.pool";
const LISTENER: &str = "postgres.listener";
const REPLICA: &str = "postgres.replica";

impl PostgresBackend {
    /// The store's health (see [`EventStoreBackend::health`](allframe_cqrs_core::EventStoreBackend::health)).
    pub(crate) async fn check_health(&self) -> Health {
        let inner = &self.inner;
        crate::metrics::pool_observed(&inner.pool);
        if inner.pool.is_closed() {
            return Health::failed(POOL, "the connection pool is closed (PostgresBackend::close)");
        }
        let mut health = Health::ok();
        let max = inner.pool.options().get_max_connections();
        // Statements beyond the pool's connections wait for one (sqlx does not count waiters).
        let exhausted = || inner.pool.size() >= max && inner.pool.num_idle() == 0;
        let waiting = inner.statements.running().saturating_sub(max as usize);
        if exhausted() && waiting > 0 {
            health = health.merge(Health::degraded(
                POOL,
                format!("all {max} connections are in use and about {waiting} statements wait for one"),
            ));
        }
        // With every connection in use, waiting for one would test the pool, not the server:
        // the check then asks on a connection of its own.
        let probe = if exhausted() {
            head_alone(&inner.pool, &inner.sql.head).await
        } else {
            head(&inner.pool, &inner.sql.head).await
        };
        let head = match probe {
            Ok(head) => Some(head),
            Err(error) => {
                health = health
                    .merge(Health::failed(SERVER, format!("the server did not answer a read of the head: {error}")));
                None
            }
        };
        if let Some(listener) = &inner.listener {
            if listener.is_finished() {
                health = health.merge(Health::degraded(LISTENER, "the LISTEN task stopped; subscribers poll"));
            } else if !inner.listening.load(Ordering::SeqCst) {
                health = health.merge(Health::degraded(
                    LISTENER,
                    "the LISTEN connection is down and reconnecting; subscribers poll meanwhile",
                ));
            }
        }
        if let (Some(replica), Some(primary)) = (&inner.read_pool, head) {
            health = health.merge(replica_health(replica, &inner.sql.head, primary).await);
        }
        health
    }
}

/// Why a read of the head got no answer.
enum Unanswered {
    /// No pooled connection within [`HEALTH_TIMEOUT`].
    NoConnection,
    /// No answer within [`HEALTH_TIMEOUT`].
    Timeout,
    /// An error.
    Failed(sqlx::Error),
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unanswered::NoConnection => write!(f, "no connection within {HEALTH_TIMEOUT:?}"),
            Unanswered::Timeout => write!(f, "no answer within {HEALTH_TIMEOUT:?}"),
            Unanswered::Failed(error) => write!(f, "{error}"),
        }
    }
}

/// The readable head on `pool`, bounded by [`HEALTH_TIMEOUT`] (waiting for a connection included).
async fn head(pool: &PgPool, sql: &crate::Sql) -> Result<i64, Unanswered> {
    let deadline = tokio::time::Instant::now() + HEALTH_TIMEOUT;
    let mut connection = match tokio::time::timeout_at(deadline, pool.acquire()).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => return Err(Unanswered::Failed(error)),
        Err(_) => return Err(Unanswered::NoConnection),
    };
    let read = sqlx::query_scalar::<_, i64>(sql.clone()).fetch_one(&mut *connection);
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(head)) => Ok(head),
        Ok(Err(error)) => Err(Unanswered::Failed(error)),
        Err(_) => Err(Unanswered::Timeout),
    }
}

/// The readable head on a new connection to `pool`'s server (closed after), bounded by
/// [`HEALTH_TIMEOUT`].
async fn head_alone(pool: &PgPool, sql: &crate::Sql) -> Result<i64, Unanswered> {
    let deadline = tokio::time::Instant::now() + HEALTH_TIMEOUT;
    let options = pool.connect_options();
    let mut connection =
        match tokio::time::timeout_at(deadline, <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)).await
        {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(Unanswered::Failed(error)),
            Err(_) => return Err(Unanswered::NoConnection),
        };
    let read = sqlx::query_scalar::<_, i64>(sql.clone()).fetch_one(&mut connection);
    let answer = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(head)) => Ok(head),
        Ok(Err(error)) => Err(Unanswered::Failed(error)),
        Err(_) => Err(Unanswered::Timeout),
    };
    let _ = tokio::time::timeout(HEALTH_TIMEOUT, sqlx::Connection::close(connection)).await;
    answer
}

/// Whether the replica answers and has replayed the primary's head `primary` (polled until
/// [`HEALTH_TIMEOUT`]: a healthy replica is a few milliseconds behind under load).
async fn replica_health(replica: &PgPool, sql: &crate::Sql, primary: i64) -> Health {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        match head(replica, sql).await {
            Ok(replayed) if replayed >= primary => return Health::ok(),
            Ok(replayed) if Instant::now() >= deadline => {
                return Health::degraded(
                    REPLICA,
                    format!(
                        "the read replica lags: it serves the log up to position {replayed}, the primary up to {primary} (not caught up within {HEALTH_TIMEOUT:?})"
                    ),
                );
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(error) => {
                return Health::failed(
                    REPLICA,
                    format!("the read replica, which serves the reads of the log, did not answer: {error}"),
                );
            }
        }
    }
}
