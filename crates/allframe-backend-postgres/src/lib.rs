//! # AllFrame CQRS: the PostgreSQL backend
//!
//! [`PostgresBackend`] stores events in PostgreSQL through sqlx: the path for applications
//! that outgrow one process (replicas, backups, point-in-time recovery and managed services
//! come with PostgreSQL). It keeps the whole contract of [`EventStoreBackend`].
//!
//! ```no_run
//! use allframe_backend_postgres::PostgresBackend;
//! use allframe_cqrs_core::EventStore;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone, Debug, Serialize, Deserialize)]
//! # struct Opened;
//! # impl allframe_cqrs_core::Event for Opened { fn event_type(&self) -> &'static str { "Opened" } }
//! # async fn run() -> allframe_cqrs_core::Result<()> {
//! let backend = PostgresBackend::builder("postgres://postgres@127.0.0.1:5432/test")
//!     .schema("billing")
//!     .pool_size(16)
//!     .connect()
//!     .await?;
//! let store: EventStore<Opened, _> = EventStore::with_backend(backend);
//! store.append("account-1", vec![Opened]).await?;
//! # Ok(()) }
//! ```
//!
//! - **Schema.** Each application lives in its own PostgreSQL schema (default `allframe`),
//!   created and upgraded by embedded migrations, run on connect unless turned off
//!   ([`PostgresBuilder::run_migrations`]); [`PostgresBackend::migrate`] runs them alone.
//! - **Appends** are one statement (one round trip): a PL/pgSQL function takes the events as
//!   arrays, checks the expected version under the stream's lock and inserts them with one
//!   `INSERT ... SELECT FROM unnest(...)`. Appends made while others are in flight go to the
//!   server together, in one transaction, each checked alone (group commit).
//! - **Global order.** Positions come from the appending transaction's id, and readers read
//!   only below the oldest transaction still running (the horizon, taken in the same statement),
//!   so writers in any number of processes never wait for each other and a reader tailing the
//!   log never skips a late commit; an append is acknowledged once it is below the horizon
//!   (`docs/decisions/0203-postgres-transaction-horizon.md`). Reads can go to a streaming
//!   replica ([`PostgresBuilder::read_replica`]).
//! - **Live subscriptions** are woken through LISTEN/NOTIFY by a background task that
//!   reconnects when its connection drops; notifications are only hints.
//! - **Payloads** are `jsonb` by default (queryable from SQL; payloads must be JSON), or
//!   `bytea` for binary codecs ([`PayloadEncoding`]).
//!
//! See `docs/POSTGRES.md` for the table layout and the operations guide.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod errors;
mod group;
mod health;
mod horizon;
mod json;
mod leases;
mod listen;
mod metrics;
mod pgtypes;
mod statements;
mod transactions;

pub use leases::PgLeases;
pub use transactions::PgTransaction;

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use allframe_cqrs_core::retry::{StoredAt, resolve_retry};
use allframe_cqrs_core::{
    AppendResult, BackendStats, Capabilities, CommitSignal, Durability, Error, EventId, EventStoreBackend,
    ExpectedVersion, Health, Limits, Metadata, NewEvent, RecordedEvent, Result, Snapshot, StreamId, Timestamp,
    async_trait,
};
use bytes::Bytes;
use futures_util::TryStreamExt;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};

use pgtypes::{PgTimestamp, PgUuid};
use statements::{Statement, Statements};

/// The backend's name in logs, errors and stats.
pub const BACKEND_NAME: &str = "postgres";

/// The schema used when none is given.
pub const DEFAULT_SCHEMA: &str = "allframe";

/// Longest accepted schema name, in bytes (the notification channel adds a prefix and
/// PostgreSQL identifiers stop at 63 bytes).
pub const MAX_SCHEMA_LEN: usize = 48;

/// Default idle time before the server probes a connection ([`PostgresBuilder::tcp_keepalive`]).
pub const DEFAULT_TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Default quiet time after which the LISTEN task checks its connection
/// ([`PostgresBuilder::listener_health_check`]).
pub const DEFAULT_LISTENER_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Default wait for the LISTEN task's check to be answered.
pub const DEFAULT_LISTENER_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Default idle time after which a pooled connection is pinged before use
/// ([`PostgresBuilder::idle_check`]).
pub const DEFAULT_IDLE_CHECK_AFTER: Duration = Duration::from_secs(15);

/// Default wait for that ping's answer.
pub const DEFAULT_IDLE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Default longest wait for an append to become visible ([`PostgresBuilder::visibility_wait`]).
pub const DEFAULT_VISIBILITY_WAIT: Duration = Duration::from_secs(5);

/// Most events one transaction can store: positions are `(transaction id << 16) + n`.
pub const MAX_EVENTS_PER_TRANSACTION: usize = 65_535;

/// How often a reader looks again for a commit that was announced but is not readable yet
/// (an older transaction still holds the horizon, or the read replica has not replayed it).
const ANNOUNCED_POLL: Duration = Duration::from_millis(2);

/// The version of the newest embedded migration (the schema version this crate writes).
pub const SCHEMA_VERSION: i64 = 3;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "event store", include_str!("../migrations/0001_event_store.sql")),
    (2, "checkpoints", include_str!("../migrations/0002_checkpoints.sql")),
    (3, "transaction horizon", include_str!("../migrations/0003_transaction_horizon.sql")),
];

/// Default number of append groups a backend has in flight at once
/// ([`PostgresBuilder::group_commit`]).
pub const DEFAULT_GROUPS_IN_FLIGHT: usize = 1;

/// How event and snapshot payloads are stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum PayloadEncoding {
    /// `jsonb`: payloads must be JSON documents (refused with [`Error::InvalidPayload`]
    /// otherwise) and can be queried from SQL; they come back equal as JSON, re-formatted
    /// (key order and spacing are PostgreSQL's).
    #[default]
    Jsonb,
    /// `bytea`: any bytes, returned byte for byte (for binary codecs such as postcard).
    Bytea,
}

/// Settings for [`PostgresBackend`]; made by [`PostgresBackend::builder`].
#[derive(Clone, Debug)]
pub struct PostgresBuilder {
    url: String,
    schema: String,
    pool_size: u32,
    statement_timeout: Option<Duration>,
    acquire_timeout: Duration,
    payload: PayloadEncoding,
    run_migrations: bool,
    live_notifications: bool,
    retries: Option<u32>,
    application_name: Option<String>,
    tcp_keepalive: Option<Duration>,
    listener_health: listen::HealthCheck,
    groups_in_flight: usize,
    idle_check: (Duration, Duration),
    read_replica: Option<String>,
    visibility_wait: Duration,
    limits: Limits,
}

impl PostgresBuilder {
    fn new(url: &str) -> Self {
        PostgresBuilder {
            url: url.to_owned(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: 10,
            statement_timeout: None,
            acquire_timeout: Duration::from_secs(30),
            payload: PayloadEncoding::Jsonb,
            run_migrations: true,
            live_notifications: true,
            retries: None,
            application_name: None,
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE_IDLE),
            listener_health: listen::HealthCheck {
                interval: DEFAULT_LISTENER_CHECK_INTERVAL,
                timeout: DEFAULT_LISTENER_CHECK_TIMEOUT,
            },
            groups_in_flight: DEFAULT_GROUPS_IN_FLIGHT,
            idle_check: (DEFAULT_IDLE_CHECK_AFTER, DEFAULT_IDLE_CHECK_TIMEOUT),
            read_replica: None,
            visibility_wait: DEFAULT_VISIBILITY_WAIT,
            limits: Limits::default(),
        }
    }

    /// The PostgreSQL schema holding this application's tables (default `allframe`).
    ///
    /// Must be a plain lowercase identifier: `[a-z_][a-z0-9_]*`, at most [`MAX_SCHEMA_LEN`]
    /// bytes, not starting with `pg_`; checked by [`connect`](Self::connect).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Most connections the pool opens (default 10); the LISTEN task uses one more.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// A server-side `statement_timeout` for every statement of this backend; a statement
    /// that runs longer fails with [`Error::Timeout`] and changes nothing (default: the server's).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = Some(timeout);
        self
    }

    /// How long an operation waits for a pooled connection before [`Error::Timeout`] (default 30 s).
    ///
    /// This includes opening a connection: while the server refuses connections, `connect`
    /// and operations keep trying for this long.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How payloads are stored (default [`PayloadEncoding::Jsonb`]). Fixed per store: a store
    /// written with one encoding reads back either, but mixing them is not useful.
    pub fn payload_encoding(mut self, encoding: PayloadEncoding) -> Self {
        self.payload = encoding;
        self
    }

    /// Whether [`connect`](Self::connect) runs the embedded migrations (default true). When
    /// false, run them beforehand with [`PostgresBackend::migrate`].
    pub fn run_migrations(mut self, run: bool) -> Self {
        self.run_migrations = run;
        self
    }

    /// Whether appends send NOTIFY and a background task LISTENs to wake subscribers
    /// (default true). When false, subscribers of other processes poll.
    pub fn live_notifications(mut self, enabled: bool) -> Self {
        self.live_notifications = enabled;
        self
    }

    /// How many times an operation is retried on another connection when its connection is
    /// lost (default: the pool size + 1, at least 3, so that a pool full of connections the
    /// server dropped is drained). Appends are retried too: event ids make the retry idempotent.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// The `application_name` the connections show in `pg_stat_activity`
    /// (default `allframe:<schema>`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// TCP keepalive on every connection, set on the server side (default 60 s): the server
    /// probes a connection idle for `idle`, then every 10 s (or `idle`, if shorter), and drops
    /// it after 3 unanswered probes, so it frees the sessions of a client that vanished.
    /// `None` keeps the server's settings (`tcp_keepalives_idle` and friends).
    ///
    /// sqlx offers no client-side keepalive; the client side of the LISTEN connection is
    /// covered by [`listener_health_check`](Self::listener_health_check).
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.tcp_keepalive = idle.map(|idle| idle.max(Duration::from_secs(1)));
        self
    }

    /// How the LISTEN task notices a half-open connection (default every 30 s, 10 s to
    /// answer): after `interval` without a notification it reads the head over its
    /// connection; without an answer within `timeout` it drops the connection and opens
    /// another (which re-reads the head, so waiters miss nothing).
    pub fn listener_health_check(mut self, interval: Duration, timeout: Duration) -> Self {
        self.listener_health = listen::HealthCheck {
            interval: interval.max(Duration::from_millis(1)),
            timeout: timeout.max(Duration::from_millis(1)),
        };
        self
    }

    /// Group commit: how many groups of appends this backend has in flight at once (default
    /// [`DEFAULT_GROUPS_IN_FLIGHT`]); 0 turns group commit off.
    ///
    /// With group commit on, appends made while earlier ones are in flight go to the server
    /// together, as one statement and one transaction (one WAL flush), each still checked on
    /// its own: an append whose expected version does not match fails alone. A lone appender
    /// pays one round trip per append as before; many concurrent appenders share commits.
    /// Groups in flight do not lock each other out (only appends to one stream do), but a later
    /// one is acknowledged only once the earlier is, and in the benchmarks one group in flight
    /// was fastest (docs/decisions/0203-postgres-transaction-horizon.md).
    pub fn group_commit(mut self, groups_in_flight: usize) -> Self {
        self.groups_in_flight = groups_in_flight;
        self
    }

    /// How a pooled connection that has been idle is checked before use (default: idle for
    /// [`DEFAULT_IDLE_CHECK_AFTER`], answer within [`DEFAULT_IDLE_CHECK_TIMEOUT`]): a ping; no
    /// answer in time and the connection is closed and another one opened.
    ///
    /// This is the client side of keepalive for the pool: sqlx 0.9 sets no TCP keepalive on its
    /// sockets and offers no way to, so a connection whose peer vanished without a FIN or RST
    /// (a crashed host, a NAT or firewall that dropped its state) would make the next statement
    /// sent on it wait until the kernel gives up (about 15 minutes on Linux). The server side is
    /// [`tcp_keepalive`](Self::tcp_keepalive); the LISTEN connection has its own check
    /// ([`listener_health_check`](Self::listener_health_check)).
    pub fn idle_check(mut self, after: Duration, timeout: Duration) -> Self {
        self.idle_check = (after, timeout.max(Duration::from_millis(1)));
        self
    }

    /// Reads the log from a streaming replica (a hot standby of the primary at the builder's
    /// URL) while appends and every other write go to the primary.
    ///
    /// Served by the replica: `read_all`, `read_stream`, `head_position`, `list_streams` and
    /// snapshots, so subscriptions, projections and aggregate loads read there. Checkpoints,
    /// stream versions and event-id lookups stay on the primary, whose answers decide writes.
    /// A replica replays commits in the primary's commit order, which is position order, so a
    /// subscriber reading it never skips an event; it only lags: an acknowledged append becomes
    /// readable once the replica has replayed it (`pg_stat_replication.replay_lag`).
    /// `url` is a full connection URL (the replica's user and database may differ).
    pub fn read_replica(mut self, url: impl Into<String>) -> Self {
        self.read_replica = Some(url.into());
        self
    }

    /// The longest an append waits, once committed, for older transactions to finish so that it
    /// is visible to every reader (default [`DEFAULT_VISIBILITY_WAIT`]).
    ///
    /// Readers read below the oldest transaction still open in the cluster (decision 0203), so
    /// an append is acknowledged once every older transaction has ended: usually at once. A
    /// transaction left open (idle in transaction) holds that back; after this wait the append
    /// is acknowledged anyway (it is committed and durable; readers see it once that
    /// transaction ends) and a warning names the transaction. See
    /// [`PostgresBackend::horizon_status`].
    pub fn visibility_wait(mut self, wait: Duration) -> Self {
        self.visibility_wait = wait;
        self
    }

    /// Input limits (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Connects, runs migrations unless turned off, and starts the LISTEN task.
    ///
    /// Fails with [`Error::NotAStore`] when migrations are off and the schema has no tables.
    pub async fn connect(self) -> Result<PostgresBackend> {
        validate_schema(&self.schema)?;
        if self.limits.max_events_per_append > MAX_EVENTS_PER_TRANSACTION {
            return Err(errors::config(format!(
                "limits.max_events_per_append is {}; one transaction stores at most {MAX_EVENTS_PER_TRANSACTION} events",
                self.limits.max_events_per_append
            )));
        }
        let options = self.connect_options(&self.url)?;
        let replica_options = self.read_replica.as_deref().map(|url| self.connect_options(url)).transpose()?;
        if self.run_migrations {
            run_migrations(&options, &self.schema, self.acquire_timeout).await?;
        }
        let sql = Queries::new(&self.schema);
        let check_epoch = sql.check_epoch.clone();
        let idle_check = self.idle_check;
        let pool = PgPoolOptions::new()
            .max_connections(self.pool_size)
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            // A lost connection is detected by the failing operation, which is then retried;
            // testing before each acquire would cost a round trip per operation.
            .test_before_acquire(false)
            // Before a connection is used: positions from this cluster's transaction ids must go
            // above every stored one (after a restore into another cluster they would not).
            .after_connect(move |connection, _| {
                let check_epoch = check_epoch.clone();
                Box::pin(async move { epoch_checked(connection, check_epoch).await })
            })
            // A connection idle for a while may have gone half-open: ping it, briefly.
            .before_acquire(move |connection, meta| {
                let (after, timeout) = idle_check;
                Box::pin(async move {
                    if meta.idle_for < after {
                        return Ok(true);
                    }
                    // An error (not `Ok(false)`) makes sqlx drop the connection without the
                    // goodbye a half-open connection would never answer.
                    match tokio::time::timeout(timeout, sqlx::Connection::ping(connection)).await {
                        Ok(answer) => answer.map(|()| true),
                        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no answer to a ping on an idle pooled connection",
                        ))),
                    }
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(|e| errors::map("connecting", e))?;
        let (head, synchronous_commit, fsync) = sqlx::query(sql.open.clone())
            .fetch_one(&pool)
            .await
            .map_err(|e| {
                if matches!(errors::sqlstate(&e).as_deref(), Some("42P01" | "42883")) {
                    Error::NotAStore {
                        backend: BACKEND_NAME,
                        path: self.schema.clone().into(),
                        reason: "the schema has no AllFrame tables of this version; run PostgresBackend::migrate first"
                            .into(),
                    }
                } else {
                    errors::map("opening the store", e)
                }
            })
            .and_then(|row| {
                let read = || -> std::result::Result<_, sqlx::Error> {
                    Ok((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?, row.try_get::<String, _>(2)?))
                };
                read().map_err(|e| errors::map("opening the store", e))
            })?;
        let read_pool = match replica_options {
            Some(replica) => Some(self.read_pool(replica, &sql).await?),
            None => None,
        };
        let durability = durability_of(&synchronous_commit, &fsync);
        let signal = Arc::new(CommitSignal::new(head.max(0) as u64));
        let channel = format!("allframe_{}", self.schema);
        let visibility = horizon::Visibility::start(
            pool.clone(),
            sql.horizon.clone(),
            sql.horizon_status.clone(),
            self.visibility_wait,
        );
        let notifier = self.live_notifications.then(|| horizon::Notifier::start(pool.clone(), channel.clone()));
        let statements = Arc::new(Statements::default());
        let listening = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let committer = (self.groups_in_flight > 0).then(|| {
            let context = group::GroupContext {
                pool: pool.clone(),
                sql: sql.append_group.clone(),
                single_sql: sql.append.clone(),
                json: self.payload == PayloadEncoding::Jsonb,
                signal: Arc::clone(&signal),
                visibility: Arc::clone(&visibility),
                notifier: notifier.clone(),
                statements: Arc::clone(&statements),
            };
            group::GroupCommitter::start(context, self.groups_in_flight)
        });
        let listener = self.live_notifications.then(|| {
            let config = listen::ListenConfig {
                options: options.clone(),
                channel: channel.clone(),
                head_sql: sql.head.clone(),
                health: self.listener_health,
                listening: Arc::clone(&listening),
            };
            tokio::spawn(listen::run(config, Arc::downgrade(&signal)))
        });
        Ok(PostgresBackend {
            inner: Arc::new(Inner {
                pool,
                sql,
                schema: self.schema,
                payload: self.payload,
                durability,
                signal,
                channel: self.live_notifications.then_some(channel),
                listener,
                committer,
                visibility,
                notifier,
                groups_in_flight: self.groups_in_flight,
                read_pool,
                retries: self.retries.unwrap_or_else(|| self.pool_size.saturating_add(1).clamp(3, 64)),
                limits: self.limits,
                statements,
                listening,
            }),
        })
    }
}

impl PostgresBuilder {
    /// The connection settings for `url`: the application name, statement timeout and
    /// keepalive of this builder.
    fn connect_options(&self, url: &str) -> Result<PgConnectOptions> {
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| errors::config(format!("invalid PostgreSQL URL: {e}")))?
            .application_name(self.application_name.as_deref().unwrap_or(&format!("allframe:{}", self.schema)));
        if let Some(timeout) = self.statement_timeout {
            options = options.options([("statement_timeout", format!("{}ms", timeout.as_millis().max(1)))]);
        }
        if let Some(idle) = self.tcp_keepalive {
            let idle = idle.as_secs().max(1);
            options = options.options([
                ("tcp_keepalives_idle", idle),
                ("tcp_keepalives_interval", idle.min(10)),
                ("tcp_keepalives_count", 3),
            ]);
        }
        Ok(options)
    }

    /// The pool of the read replica, once it has answered with the store's head.
    async fn read_pool(&self, options: PgConnectOptions, sql: &Queries) -> Result<PgPool> {
        let pool = PgPoolOptions::new()
            .max_connections(self.pool_size)
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| errors::map("connecting to the read replica", e))?;
        if let Err(error) = sqlx::query_scalar::<_, i64>(sql.head.clone()).fetch_one(&pool).await {
            return Err(if errors::sqlstate(&error).as_deref() == Some("42P01") {
                Error::NotAStore {
                    backend: BACKEND_NAME,
                    path: self.schema.clone().into(),
                    reason: "the read replica has no AllFrame tables in this schema (is it a replica of the primary?)"
                        .into(),
                }
            } else {
                errors::map("opening the store on the read replica", error)
            });
        }
        Ok(pool)
    }
}

/// Checks a schema name: `[a-z_][a-z0-9_]*`, at most [`MAX_SCHEMA_LEN`] bytes, not `pg_*`.
///
/// The schema name is the only text put into SQL other than as a parameter. It goes in as a
/// quoted identifier ([`quote_schema`]), so SQL keywords such as `user` or `order` are fine
/// names; the character rule keeps the quoting trivial and the name the same as typed
/// (unquoted PostgreSQL names fold to lowercase).
pub fn validate_schema(schema: &str) -> Result<()> {
    let mut bytes = schema.bytes();
    let first_ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'));
    let rest_ok = bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'));
    if !first_ok || !rest_ok || schema.len() > MAX_SCHEMA_LEN || schema.starts_with("pg_") {
        return Err(errors::config(format!(
            "invalid schema name `{schema}`: use [a-z_][a-z0-9_]*, at most {MAX_SCHEMA_LEN} bytes, not starting with pg_"
        )));
    }
    Ok(())
}

/// The schema name as a quoted SQL identifier, `"name"`; `schema` must have passed
/// [`validate_schema`] (which leaves no character that needs escaping).
pub fn quote_schema(schema: &str) -> String {
    debug_assert!(validate_schema(schema).is_ok(), "quote_schema of an unchecked name");
    format!("\"{schema}\"")
}

async fn run_migrations(options: &PgConnectOptions, schema: &str, acquire_timeout: Duration) -> Result<()> {
    // The migrations name their tables without a schema: they run with the search path set
    // to the application's schema only, and `append_events` pins that search path.
    let quoted = quote_schema(schema);
    let options = options.clone().options([("search_path", quoted.as_str())]);
    // A one-connection pool rather than a bare connection: `Migrator::run(&PgPool)` keeps the
    // future `Send` for any caller (with `&mut PgConnection` it is not general enough).
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|e| errors::map("connecting", e))?;
    let mut migrator = Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(version, description.into(), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect(),
    );
    migrator.create_schema(quoted.clone());
    migrator.dangerous_set_table_name(format!("{quoted}._sqlx_migrations"));
    let result = migrator.run(&pool).await.map_err(errors::migrate);
    pool.close().await;
    result
}

/// SQL text, built once per backend with the schema name (validated, quoted) as the only
/// interpolation.
#[derive(Debug)]
struct Queries {
    /// The head and the durability settings.
    open: Sql,
    /// Raises the transaction id offset when this cluster's ids are below the stored positions.
    check_epoch: Sql,
    /// The horizon: every position below it belongs to a finished transaction.
    horizon: Sql,
    /// Committed events at or above the horizon, and the oldest transaction holding an id.
    horizon_status: Sql,
    head: Sql,
    append: Sql,
    /// Several appends in one statement (group commit).
    append_group: Sql,
    find_ids: Sql,
    stream_version: Sql,
    /// Casts JSON texts to `jsonb` as an append does, to find one the server refuses.
    check_json: Sql,
    read_stream: Sql,
    read_all: Sql,
    list_streams_first: Sql,
    list_streams_after: Sql,
    save_snapshot: Sql,
    get_snapshot: Sql,
    load_checkpoint: Sql,
    /// A first save of a checkpoint: changes nothing when the name exists.
    insert_checkpoint: Sql,
    /// A later save: changes nothing unless the checkpoint holds the expected position.
    update_checkpoint: Sql,
    stats: Sql,
    /// One synchronous transaction that writes WAL when commits are asynchronous: waits
    /// until the WAL is on disk.
    flush: Sql,
}

/// One statement's text, cheap to clone.
#[derive(Clone, Debug)]
struct Sql(Arc<str>);

impl SqlSafeStr for Sql {
    fn into_sql_str(self) -> sqlx::SqlStr {
        // The only interpolated text is the schema name, checked by `validate_schema` and quoted.
        AssertSqlSafe(self.0).into_sql_str()
    }
}

impl Queries {
    fn new(schema: &str) -> Self {
        let quoted = quote_schema(schema);
        // The horizon, read in the statement that uses it (one snapshot): the oldest transaction
        // still running gives it, and no later event can appear below it (decision 0203).
        let horizon = format!(
            "(SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::bigint + xid_offset) << 16 FROM {quoted}.log_epoch)"
        );
        let sql = |text: &str| Sql(text.replace("{h}", &horizon).replace("{s}", &quoted).into());
        Queries {
            open: sql("SELECT (SELECT coalesce(max(position), 0) FROM {s}.events WHERE position < {h}), \
                 current_setting('synchronous_commit'), current_setting('fsync')"),
            check_epoch: sql("SELECT {s}.check_epoch()"),
            horizon: sql("SELECT {h}"),
            horizon_status: sql("SELECT (SELECT count(*) FROM {s}.events WHERE position >= {h}), \
                 b.pid, b.application_name, b.datname, b.state, \
                 extract(epoch FROM now() - b.xact_start)::float8 \
                 FROM (SELECT 1) AS one LEFT JOIN LATERAL ( \
                 SELECT pid, coalesce(application_name, '') AS application_name, coalesce(datname, '') AS datname, \
                 coalesce(state, '') AS state, xact_start FROM pg_stat_activity \
                 WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
                 ORDER BY age(backend_xid) DESC LIMIT 1) AS b ON true"),
            head: sql("SELECT coalesce(max(position), 0) FROM {s}.events WHERE position < {h}"),
            append: sql("SELECT stream_version, first_position, last_position, visible_below, txid, older_running \
                 FROM {s}.append_events($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
            append_group: sql(
                "SELECT ok, stream_version, first_position, last_position, visible_below, txid, older_running \
                 FROM {s}.append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            ),
            find_ids: sql("SELECT t.n, e.stream_id, e.version, e.position \
                 FROM unnest($1::uuid[]) WITH ORDINALITY AS t (id, n) JOIN {s}.events e ON e.event_id = t.id"),
            stream_version: sql("SELECT version FROM {s}.streams WHERE stream_id = $1"),
            check_json: sql("SELECT count(*) FROM unnest($1::text[]) AS t (body) WHERE body::jsonb IS NULL"),
            read_stream: sql(
                "SELECT position, version, event_type, payload::text, payload_bytes, metadata FROM {s}.events \
                 WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3",
            ),
            read_all: sql("SELECT position, version, event_type, payload::text, payload_bytes, metadata, stream_id \
                 FROM {s}.events WHERE position > $1 AND position < {h} ORDER BY position LIMIT $2"),
            list_streams_first: sql("SELECT stream_id, version FROM {s}.streams ORDER BY stream_id LIMIT $1"),
            list_streams_after: sql(
                "SELECT stream_id, version FROM {s}.streams WHERE stream_id > $1 ORDER BY stream_id LIMIT $2",
            ),
            save_snapshot: sql(
                "INSERT INTO {s}.snapshots AS cur (stream_id, version, payload, payload_bytes, taken_at_us) \
                 VALUES ($1, $2, $3::jsonb, $4, $5) \
                 ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, payload = EXCLUDED.payload, \
                 payload_bytes = EXCLUDED.payload_bytes, taken_at_us = EXCLUDED.taken_at_us \
                 WHERE cur.version <= EXCLUDED.version",
            ),
            get_snapshot: sql(
                "SELECT version, payload::text, payload_bytes, taken_at_us FROM {s}.snapshots WHERE stream_id = $1",
            ),
            load_checkpoint: sql("SELECT position FROM {s}.checkpoints WHERE name = $1"),
            insert_checkpoint: sql(
                "INSERT INTO {s}.checkpoints (name, position) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            ),
            update_checkpoint: sql(
                "UPDATE {s}.checkpoints SET position = $2, updated_at = now() WHERE name = $1 AND position = $3",
            ),
            // Two statements in one simple query run as one implicit transaction: a no-change
            // update (it writes WAL and takes a transaction id, without which the commit would
            // wait for nothing), then SET LOCAL, which makes that commit synchronous. It runs
            // whatever this session's setting is: the appends it must cover may have committed
            // asynchronously on other pooled connections with another setting.
            flush: sql("UPDATE {s}.log_head SET position = position WHERE id; SET LOCAL synchronous_commit = on"),
            stats: sql("SELECT (SELECT coalesce(max(position), 0) FROM {s}.events WHERE position < {h}), \
                 (SELECT count(*) FROM {s}.streams), (SELECT count(*) FROM {s}.snapshots), \
                 pg_total_relation_size('{s}.events'::regclass), pg_database_size(current_database()), \
                 current_setting('server_version'), current_setting('synchronous_commit'), \
                 current_setting('fsync'), (SELECT count(*) FROM {s}.events WHERE position < {h})"),
        }
    }
}

/// An event store in a PostgreSQL schema. Cheap to clone (clones share the pool).
#[derive(Clone, Debug)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    sql: Queries,
    schema: String,
    payload: PayloadEncoding,
    durability: Durability,
    signal: Arc<CommitSignal>,
    /// The NOTIFY channel, when live notifications are on.
    channel: Option<String>,
    listener: Option<tokio::task::JoinHandle<()>>,
    /// The read replica's pool, when reads go to a replica.
    read_pool: Option<PgPool>,
    /// The horizon, for acknowledging appends once they are visible.
    visibility: Arc<horizon::Visibility>,
    /// Sends NOTIFY after appends, when live notifications are on.
    notifier: Option<Arc<horizon::Notifier>>,
    /// The group commit queue, when group commit is on.
    committer: Option<group::GroupCommitter>,
    groups_in_flight: usize,
    retries: u32,
    limits: Limits,
    /// The statements running now (timed, and compared with the pool by `health`).
    statements: Arc<Statements>,
    /// Whether the LISTEN task is listening now (false while it connects or reconnects).
    listening: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
    }
}

impl PostgresBackend {
    /// Connects with the default settings: schema `allframe`, JSONB payloads, migrations on connect.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url).connect().await
    }

    /// A builder for the other settings.
    pub fn builder(url: &str) -> PostgresBuilder {
        PostgresBuilder::new(url)
    }

    /// Creates `schema` if needed and runs the embedded migrations there, then returns: the
    /// deployment step for applications that connect with
    /// [`run_migrations(false)`](PostgresBuilder::run_migrations). Safe to run concurrently
    /// and repeatedly (sqlx's migrator takes an advisory lock and skips applied versions).
    pub async fn migrate(url: &str, schema: &str) -> Result<()> {
        validate_schema(schema)?;
        let options =
            PgConnectOptions::from_str(url).map_err(|e| errors::config(format!("invalid PostgreSQL URL: {e}")))?;
        run_migrations(&options, schema, Duration::from_secs(30)).await
    }

    /// The schema holding this store.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The payload encoding in use.
    pub fn payload_encoding(&self) -> PayloadEncoding {
        self.inner.payload
    }

    /// The connection pool, for applications that run their own SQL beside the store
    /// (for example read models updated in the same database).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Closes the pool's connections and stops the LISTEN task.
    pub async fn close(&self) {
        if let Some(listener) = &self.inner.listener {
            listener.abort();
            self.inner.listening.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.pool.close().await;
    }

    /// The pool that serves reads of the log: the read replica's, or the primary's.
    fn reader(&self) -> &PgPool {
        self.inner.read_pool.as_ref().unwrap_or(&self.inner.pool)
    }

    /// Runs `attempt` until it succeeds, fails with an error other than a lost connection, or
    /// the retries are used up. Each attempt is timed as `statement`.
    async fn retrying<T, F, Fut>(&self, statement: Statement, mut attempt: F) -> std::result::Result<T, sqlx::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, sqlx::Error>>,
    {
        let mut tries = 0;
        loop {
            let on_primary = self.inner.read_pool.is_none() || !statement.served_by_replica();
            let running = self.inner.statements.start(statement, &self.inner.pool, on_primary);
            let outcome = attempt().await;
            drop(running);
            match outcome {
                Err(error) if errors::retryable(&error) && tries < self.inner.retries => {
                    tries += 1;
                    tracing::debug!(%error, tries, "postgres: connection lost, retrying");
                    // The first retry goes at once (another pooled connection is likely fine);
                    // later ones back off while the server may be restarting.
                    if tries > 1 {
                        tokio::time::sleep(Duration::from_millis(20 << tries.min(6))).await;
                    }
                }
                other => return other,
            }
        }
    }

    async fn current_version(&self, stream: &str) -> Result<u64> {
        if stream.contains('\0') {
            // PostgreSQL text cannot hold NUL, and appends refuse such ids: no such stream.
            return Ok(0);
        }
        let sql = &self.inner.sql.stream_version;
        let version: Option<i64> = self
            .retrying(Statement::StreamVersion, || {
                sqlx::query_scalar(sql.clone()).bind(stream).fetch_optional(&self.inner.pool)
            })
            .await
            .map_err(|e| errors::map("reading a stream version", e))?;
        Ok(version.unwrap_or(0).max(0) as u64)
    }

    /// Contract 9: where the database stores each of the append's ids, decided by the core's
    /// retry rule (`retry::resolve_retry`).
    async fn find_retry(&self, stream: &str, events: &[NewEvent]) -> Result<Option<AppendResult>> {
        let ids: Vec<EventId> = events.iter().map(|e| e.metadata.event_id).collect();
        resolve_retry(stream, events, &self.locate_ids(&ids).await?)
    }

    /// Where each of `ids` is stored (contract points 9 and 13), in one query.
    async fn locate_ids(&self, ids: &[EventId]) -> Result<Vec<Option<StoredAt>>> {
        let uuids: Vec<PgUuid> = ids.iter().map(|id| PgUuid(id.0)).collect();
        let sql = &self.inner.sql.find_ids;
        let rows = self
            .retrying(Statement::FindEvent, || sqlx::query(sql.clone()).bind(&uuids).fetch_all(&self.inner.pool))
            .await
            .map_err(|e| errors::map("looking up event ids", e))?;
        let mut found: Vec<Option<StoredAt>> = vec![None; ids.len()];
        for row in rows {
            let decode = || -> std::result::Result<_, sqlx::Error> {
                Ok((
                    row.try_get::<i64, _>(0)?,
                    row.try_get::<String, _>(1)?,
                    row.try_get::<i64, _>(2)?,
                    row.try_get::<i64, _>(3)?,
                ))
            };
            let (n, stored_stream, version, position) = decode().map_err(|e| errors::map("looking up event ids", e))?;
            if let Some(slot) = usize::try_from(n - 1).ok().and_then(|i| found.get_mut(i)) {
                *slot = Some(StoredAt {
                    stream: StreamId::from(stored_stream),
                    version: version as u64,
                    position: position as u64,
                });
            }
        }
        Ok(found)
    }

    fn check_payload<'a>(&self, what: &str, payload: &'a [u8]) -> Result<&'a str> {
        let invalid = |reason: String| Error::InvalidPayload { event_type: what.to_owned(), reason };
        let text = std::str::from_utf8(payload).map_err(|e| invalid(format!("not UTF-8 JSON: {e}")))?;
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| invalid(format!("not a JSON document: {e}")))?;
        if json::has_nul_escape(text) {
            return Err(invalid("PostgreSQL jsonb cannot store the NUL character (\\u0000)".into()));
        }
        Ok(text)
    }

    /// The first of `bodies` that PostgreSQL refuses as `jsonb` (a number out of `numeric`'s
    /// range, an escape serde_json accepts and PostgreSQL does not), with the server's error;
    /// `None` when every one is accepted, so the append's error was not about a payload.
    ///
    /// Runs only after an append failed with one of those errors: it halves the batch at
    /// each step, so a batch of n events costs about log2(n) + 1 statements.
    async fn first_refused_payload(&self, bodies: &[&str]) -> Result<Option<(usize, sqlx::Error)>> {
        let sql = &self.inner.sql.check_json;
        let probe = |range: std::ops::Range<usize>| {
            let part = &bodies[range];
            self.retrying(Statement::CheckPayload, move || {
                sqlx::query(sql.clone()).bind(part).execute(&self.inner.pool)
            })
        };
        let mut refusal = match probe(0..bodies.len()).await {
            Ok(_) => return Ok(None),
            Err(error) if errors::payload_refused(&error) => error,
            Err(error) => return Err(errors::map("checking payloads", error)),
        };
        // Invariant: bodies[..lo] are accepted and bodies[lo..hi] hold a refused one.
        let (mut lo, mut hi) = (0, bodies.len());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match probe(lo..mid).await {
                Ok(_) => lo = mid,
                Err(error) if errors::payload_refused(&error) => {
                    hi = mid;
                    refusal = error;
                }
                Err(error) => return Err(errors::map("checking payloads", error)),
            }
        }
        Ok(Some((lo, refusal)))
    }

    fn decode_event(&self, row: &PgRow, stream: Option<&StreamId>) -> Result<RecordedEvent> {
        let decode = || -> std::result::Result<_, sqlx::Error> {
            Ok((
                row.try_get::<i64, _>(0)?,
                row.try_get::<i64, _>(1)?,
                row.try_get::<String, _>(2)?,
                row.try_get::<Option<String>, _>(3)?,
                row.try_get::<Option<Vec<u8>>, _>(4)?,
                row.try_get::<&[u8], _>(5)?,
            ))
        };
        let (position, version, event_type, json, binary, metadata) =
            decode().map_err(|e| errors::map("decoding an event", e))?;
        let metadata = Metadata::decode(metadata).map_err(|e| self.corruption(position, e.to_string()))?;
        let stream_id = match stream {
            Some(stream) => stream.clone(),
            None => StreamId::from(row.try_get::<String, _>(6).map_err(|e| errors::map("decoding an event", e))?),
        };
        let payload = match (json, binary) {
            (Some(json), _) => Bytes::from(json),
            (None, Some(binary)) => Bytes::from(binary),
            (None, None) => return Err(self.corruption(position, "event without a payload".into())),
        };
        Ok(RecordedEvent {
            stream_id,
            version: version as u64,
            position: position as u64,
            event_type: event_type.into(),
            payload,
            metadata,
        })
    }

    fn corruption(&self, position: i64, reason: String) -> Error {
        Error::Corruption {
            backend: BACKEND_NAME,
            file: format!("{}.events", self.inner.schema).into(),
            offset: position.max(0) as u64,
            reason,
        }
    }
}

/// Runs `check_epoch` on a new connection (see the migration 3). A schema without it (not a
/// store yet, or an older version) is left to `connect`, which says what is missing.
async fn epoch_checked(connection: &mut sqlx::PgConnection, check_epoch: Sql) -> std::result::Result<(), sqlx::Error> {
    match sqlx::query_scalar::<_, i64>(check_epoch).fetch_one(connection).await {
        Ok(0) => Ok(()),
        Ok(moved) => {
            tracing::warn!(
                moved,
                "postgres: this cluster's transaction ids are below the stored positions (a restore into another \
                 cluster?); raised the offset so that new positions go above every stored one"
            );
            Ok(())
        }
        Err(error) if matches!(errors::sqlstate(&error).as_deref(), Some("42P01" | "42883" | "3F000")) => Ok(()),
        Err(error) => Err(error),
    }
}

/// What holds readers back ([`PostgresBackend::horizon_status`]).
#[derive(Clone, Debug, PartialEq)]
pub struct HorizonStatus {
    /// Committed events readers cannot read yet, because an older transaction is still open.
    pub held_back_events: u64,
    /// The oldest transaction holding a transaction id in the cluster (any database), which is
    /// what the horizon waits for; `None` when no other session holds one.
    pub oldest_transaction: Option<OpenTransaction>,
}

/// A session with an open transaction that holds a transaction id.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenTransaction {
    /// Its server process id (for `pg_terminate_backend`).
    pub pid: i32,
    /// Its `application_name`.
    pub application_name: String,
    /// Its database.
    pub database: String,
    /// Its state (`active`, `idle in transaction`, ...).
    pub state: String,
    /// How long its transaction has been open.
    pub open_for: Duration,
}

impl std::fmt::Display for OpenTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}, database {}, {}) open for {:.1} s",
            self.pid,
            if self.application_name.is_empty() { "no application_name" } else { &self.application_name },
            self.database,
            self.state,
            self.open_for.as_secs_f64()
        )
    }
}

impl PostgresBackend {
    /// What holds readers back now: committed events not yet readable, and the oldest open
    /// transaction in the cluster, whose end they wait for (decision 0203). A transaction left
    /// open holds every reader of every store on the cluster back; end it with
    /// `pg_terminate_backend(pid)`, and bound it with `idle_in_transaction_session_timeout`.
    pub async fn horizon_status(&self) -> Result<HorizonStatus> {
        let sql = &self.inner.sql.horizon_status;
        let row = self
            .retrying(Statement::HorizonStatus, || sqlx::query(sql.clone()).fetch_one(&self.inner.pool))
            .await
            .map_err(|e| errors::map("horizon_status", e))?;
        let read = || -> std::result::Result<_, sqlx::Error> {
            let held_back: i64 = row.try_get(0)?;
            let oldest = match row.try_get::<Option<i32>, _>(1)? {
                Some(pid) => Some(OpenTransaction {
                    pid,
                    application_name: row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                    database: row.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                    state: row.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
                    open_for: Duration::from_secs_f64(row.try_get::<Option<f64>, _>(5)?.unwrap_or(0.0).max(0.0)),
                }),
                None => None,
            };
            Ok(HorizonStatus { held_back_events: held_back.max(0) as u64, oldest_transaction: oldest })
        };
        read().map_err(|e| errors::map("horizon_status", e))
    }
}

/// The durability mode that the server settings `synchronous_commit` and `fsync` give.
fn durability_of(synchronous_commit: &str, fsync: &str) -> Durability {
    if fsync == "off" {
        Durability::NoSync
    } else if synchronous_commit == "off" {
        // The WAL writer flushes at most three `wal_writer_delay`s (default 200 ms) later.
        Durability::Interval(Duration::from_millis(600))
    } else {
        Durability::Synchronous
    }
}

/// The expected version as `append_events` takes it: -1 any, -2 the stream exists, n exact.
fn expected_code(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::StreamExists => -2,
        ExpectedVersion::NoStream => 0,
        ExpectedVersion::Exact(n) => i64::try_from(n).unwrap_or(i64::MAX),
    }
}

impl PostgresBackend {
    /// Moves checkpoint `name` from `expected` to `position` with one conditional statement
    /// on `executor` (the pool, or a consumer's transaction); whether it did. The caller has
    /// checked the name and position.
    async fn write_checkpoint<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        name: &str,
        expected: Option<u64>,
        position: u64,
    ) -> Result<bool> {
        let _running = self.inner.statements.start(Statement::SaveCheckpoint, &self.inner.pool, true);
        let written = match expected {
            None => {
                sqlx::query(self.inner.sql.insert_checkpoint.clone())
                    .bind(name)
                    .bind(to_i64(position))
                    .execute(executor)
                    .await
            }
            Some(expected) => {
                sqlx::query(self.inner.sql.update_checkpoint.clone())
                    .bind(name)
                    .bind(to_i64(position))
                    .bind(to_i64(expected))
                    .execute(executor)
                    .await
            }
        }
        .map_err(|e| errors::map("save_checkpoint", e))?;
        Ok(written.rows_affected() == 1)
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PostgresBackend {
    /// One append in its own statement (`append_events`): the path without group commit, and
    /// the one an append of a failed group takes. Its errors are exact: a conflict (after the
    /// retry check), a duplicate event id, a payload the server refuses, named.
    async fn append_alone(&self, stream: &str, expected: ExpectedVersion, events: &[NewEvent]) -> Result<AppendResult> {
        let ids: Vec<PgUuid> = events.iter().map(|e| PgUuid(e.metadata.event_id.0)).collect();
        let types: Vec<&str> = events.iter().map(|e| &*e.event_type).collect();
        let (json, binary): (Option<Vec<&str>>, Option<Vec<&[u8]>>) = match self.inner.payload {
            PayloadEncoding::Jsonb => (
                Some(events.iter().map(|e| self.check_payload(&e.event_type, &e.payload)).collect::<Result<_>>()?),
                None,
            ),
            PayloadEncoding::Bytea => (None, Some(events.iter().map(|e| &*e.payload).collect())),
        };
        let metadata: Vec<Vec<u8>> = events.iter().map(|e| e.metadata.encode()).collect();
        let created: Vec<PgTimestamp> =
            events.iter().map(|e| PgTimestamp::from_unix_micros(e.metadata.timestamp.as_micros())).collect();
        let expected_code = expected_code(expected);
        let sql = &self.inner.sql.append;
        let attempt = || {
            sqlx::query_as::<_, group::AppendRow>(sql.clone())
                .bind(stream)
                .bind(expected_code)
                .bind(&ids)
                .bind(&types)
                .bind(&json)
                .bind(&binary)
                .bind(&metadata)
                .bind(&created)
                // NOTIFY is sent after the commit, outside the append (`horizon::Notifier`).
                .bind(None::<&str>)
                // `fetch_all` reads up to ReadyForQuery, which the server sends only after the
                // implicit transaction has committed: an acknowledged append is committed.
                .fetch_all(&self.inner.pool)
        };
        match self.retrying(Statement::Append, attempt).await {
            Ok(rows) => {
                let Some((version, first, last, visible_below, xid, older)) = rows.first() else {
                    return Err(Error::backend(BACKEND_NAME, false, "the append function returned no row"));
                };
                let (version, first, last) = (*version, *first, *last);
                let seen = group::seen(*visible_below, *xid, older);
                let result = AppendResult {
                    stream_version: version as u64,
                    first_position: first as u64,
                    last_position: last as u64,
                    deduplicated: false,
                };
                // Acknowledged once visible to every reader (older transactions have ended).
                self.inner.visibility.committed(seen.xid);
                self.inner.visibility.wait(result.last_position, seen).await;
                self.inner.signal.publish(result.last_position);
                if let Some(notifier) = &self.inner.notifier {
                    notifier.announce(result.last_position);
                }
                Ok(result)
            }
            Err(error) => {
                let code = errors::sqlstate(&error);
                if code.as_deref() == Some(errors::WRONG_EXPECTED_VERSION) {
                    // A retry of a stored append is recognised before the version check.
                    if let Some(original) = self.find_retry(stream, events).await? {
                        return Ok(original);
                    }
                    let actual = errors::detail(&error).and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
                    return Err(Error::Conflict { stream: StreamId::from(stream), expected, actual });
                }
                if errors::is_unique_violation(&error) {
                    match errors::constraint(&error) {
                        Some("events_event_id_key") => {
                            if let Some(original) = self.find_retry(stream, events).await? {
                                return Ok(original);
                            }
                        }
                        Some("events_stream_version_key") => {
                            // Not expected (the stream's row lock orders appends), but typed anyway.
                            let actual = self.current_version(stream).await?;
                            return Err(Error::Conflict { stream: StreamId::from(stream), expected, actual });
                        }
                        _ => {}
                    }
                }
                if errors::payload_refused(&error)
                    && let Some(json) = &json
                    && let Some((index, refusal)) = self.first_refused_payload(json).await?
                {
                    return Err(Error::InvalidPayload {
                        event_type: events[index].event_type.to_string(),
                        reason: format!(
                            "PostgreSQL jsonb refused the payload of event {index} of this append: {refusal}"
                        ),
                    });
                }
                Err(errors::map("append", error))
            }
        }
    }
}

#[async_trait]
impl EventStoreBackend for PostgresBackend {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::full(self.inner.durability, true);
        capabilities.json_payloads = self.inner.payload == PayloadEncoding::Jsonb;
        capabilities.live_notifications = self.inner.channel.is_some();
        capabilities
    }

    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult> {
        self.inner.limits.check_append(stream, &events)?;
        if events.is_empty() {
            let current = self.current_version(stream).await?;
            expected.check(stream, current)?;
            return Ok(AppendResult { stream_version: current, ..AppendResult::default() });
        }
        let Some(committer) = &self.inner.committer else {
            return self.append_alone(stream, expected, &events).await;
        };
        if self.inner.payload == PayloadEncoding::Jsonb {
            for event in &events {
                self.check_payload(&event.event_type, &event.payload)?;
            }
        }
        let metadata: Vec<Vec<u8>> = events.iter().map(|e| e.metadata.encode()).collect();
        let events = Arc::new(events);
        match committer.submit(stream, expected_code(expected), Arc::clone(&events), metadata).await {
            group::Outcome::Stored(result) => Ok(result),
            group::Outcome::Conflict { actual } => {
                // A retry of a stored append is recognised before the version check.
                if let Some(original) = self.find_retry(stream, &events).await? {
                    return Ok(original);
                }
                Err(Error::Conflict { stream: StreamId::from(stream), expected, actual })
            }
            // The group failed as a whole (nothing of it stored, or, after a lost connection,
            // perhaps all of it): alone, the append gets its exact outcome, and event ids make
            // it idempotent.
            // Without retries, a lost connection is the caller's to handle, as on the single path.
            group::Outcome::Failed { lost: Some(error) } if self.inner.retries == 0 => {
                Err(Error::backend(BACKEND_NAME, true, error))
            }
            group::Outcome::Failed { .. } => self.append_alone(stream, expected, &events).await,
        }
    }

    async fn read_stream(&self, stream: &str, after_version: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        if limit == 0 || stream.contains('\0') {
            return Ok(Vec::new());
        }
        let stream_id = StreamId::from(stream);
        let sql = &self.inner.sql.read_stream;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = to_i64(after_version);
        self.retrying(Statement::ReadStream, || {
            let stream_id = &stream_id;
            async move {
                let mut rows = sqlx::query(sql.clone()).bind(stream).bind(after).bind(limit).fetch(self.reader());
                let mut out = Vec::new();
                while let Some(row) = rows.try_next().await? {
                    out.push(self.decode_event(&row, Some(stream_id)));
                }
                Ok(out)
            }
        })
        .await
        .map_err(|e| errors::map("read_stream", e))?
        .into_iter()
        .collect()
    }

    async fn find_event(&self, id: EventId) -> Result<Option<StoredAt>> {
        Ok(self.locate_ids(&[id]).await?.pop().flatten())
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sql = &self.inner.sql.read_all;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = to_i64(after_position);
        self.retrying(Statement::ReadAll, || async move {
            let mut rows = sqlx::query(sql.clone()).bind(after).bind(limit).fetch(self.reader());
            let mut out = Vec::new();
            while let Some(row) = rows.try_next().await? {
                out.push(self.decode_event(&row, None));
            }
            Ok(out)
        })
        .await
        .map_err(|e| errors::map("read_all", e))?
        .into_iter()
        .collect()
    }

    async fn stream_version(&self, stream: &str) -> Result<u64> {
        self.current_version(stream).await
    }

    async fn head_position(&self) -> Result<u64> {
        let sql = &self.inner.sql.head;
        let head: i64 = self
            .retrying(Statement::HeadPosition, || sqlx::query_scalar(sql.clone()).fetch_one(self.reader()))
            .await
            .map_err(|e| errors::map("head_position", e))?;
        Ok(head.max(0) as u64)
    }

    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>> {
        // No stored id contains NUL, so "after `a\0b`" is "after `a`" (PostgreSQL text cannot hold NUL).
        let after = after.map(|after| after.split('\0').next().unwrap_or(after));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = &self.inner.sql;
        let rows: Vec<(String, i64)> = self
            .retrying(Statement::ListStreams, || match after {
                Some(after) => {
                    sqlx::query_as(sql.list_streams_after.clone()).bind(after).bind(limit).fetch_all(self.reader())
                }
                None => sqlx::query_as(sql.list_streams_first.clone()).bind(limit).fetch_all(self.reader()),
            })
            .await
            .map_err(|e| errors::map("list_streams", e))?;
        Ok(rows.into_iter().map(|(id, version)| (StreamId::from(id), version.max(0) as u64)).collect())
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()> {
        self.inner.limits.check_snapshot(stream, &snapshot)?;
        let (json, binary) = match self.inner.payload {
            PayloadEncoding::Jsonb => (Some(self.check_payload("snapshot", &snapshot.payload)?), None),
            PayloadEncoding::Bytea => (None, Some(&*snapshot.payload)),
        };
        let current = self.current_version(stream).await?;
        snapshot.check_version(stream, current)?;
        let sql = &self.inner.sql.save_snapshot;
        let version = to_i64(snapshot.version);
        let taken_at = snapshot.timestamp.as_micros();
        self.retrying(Statement::SaveSnapshot, || {
            sqlx::query(sql.clone())
                .bind(stream)
                .bind(version)
                .bind(json)
                .bind(binary)
                .bind(taken_at)
                .execute(&self.inner.pool)
        })
        .await
        .map_err(|e| {
            if errors::payload_refused(&e) && json.is_some() {
                Error::InvalidPayload {
                    event_type: "snapshot".into(),
                    reason: format!("PostgreSQL jsonb refused the snapshot payload: {e}"),
                }
            } else {
                errors::map("save_snapshot", e)
            }
        })?;
        Ok(())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        if name.contains('\0') {
            return Ok(None);
        }
        let sql = &self.inner.sql.load_checkpoint;
        let position: Option<i64> = self
            .retrying(Statement::LoadCheckpoint, || {
                sqlx::query_scalar(sql.clone()).bind(name).fetch_optional(&self.inner.pool)
            })
            .await
            .map_err(|e| errors::map("load_checkpoint", e))?;
        Ok(position.map(|p| p.max(0) as u64))
    }

    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()> {
        // The head only grows: a position within it now is within it at the write.
        let head = self.head_position().await?;
        self.inner.limits.check_checkpoint(name, position, head)?;
        // One conditional statement is the compare-and-set. Not retried after a lost
        // connection: the first try may have committed, and a retry would then report a
        // conflict with the caller's own save.
        if self.write_checkpoint(&self.inner.pool, name, expected, position).await? {
            return Ok(());
        }
        let actual = self.load_checkpoint(name).await?;
        Err(Error::CheckpointConflict { name: name.to_owned(), expected, actual })
    }

    async fn get_latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        if stream.contains('\0') {
            return Ok(None);
        }
        let sql = &self.inner.sql.get_snapshot;
        let row: Option<(i64, Option<String>, Option<Vec<u8>>, i64)> = self
            .retrying(Statement::GetSnapshot, || sqlx::query_as(sql.clone()).bind(stream).fetch_optional(self.reader()))
            .await
            .map_err(|e| errors::map("get_latest_snapshot", e))?;
        let Some((version, json, binary, taken_at)) = row else { return Ok(None) };
        let payload = match (json, binary) {
            (Some(json), _) => Bytes::from(json),
            (None, Some(binary)) => Bytes::from(binary),
            (None, None) => {
                return Err(Error::Corruption {
                    backend: BACKEND_NAME,
                    file: format!("{}.snapshots", self.inner.schema).into(),
                    offset: version.max(0) as u64,
                    reason: format!("snapshot of stream `{stream}` without a payload"),
                });
            }
        };
        Ok(Some(Snapshot { version: version.max(0) as u64, payload, timestamp: Timestamp::from_micros(taken_at) }))
    }

    async fn flush(&self) -> Result<()> {
        // With synchronous_commit on (the server's default) an acknowledged append's commit
        // has reached the WAL on disk already. With it off, commits were acknowledged before
        // the WAL writer flushed them; a commit made with synchronous_commit on waits until
        // the WAL is on disk up to its own commit record, which lies after every commit
        // acknowledged before, so one small synchronous transaction makes them all durable.
        // It must write WAL and have a transaction id, or its commit waits for nothing: a
        // no-change update of the counter row does both with the privileges the store
        // already needs (it waits for an append in flight). It runs whatever this session's
        // setting is now: appends made on other pooled connections, or before a configuration
        // reload, may have committed asynchronously (it costs one small WAL flush).
        let sql = &self.inner.sql.flush;
        self.retrying(Statement::Flush, || sqlx::raw_sql(sql.clone()).execute(&self.inner.pool))
            .await
            .map_err(|e| errors::map("flush", e))?;
        Ok(())
    }

    async fn stats(&self) -> Result<BackendStats> {
        let sql = &self.inner.sql.stats;
        type StatsRow = (i64, i64, i64, i64, i64, String, String, String, i64);
        let (head, streams, snapshots, events_bytes, database_bytes, server_version, synchronous_commit, fsync, events): StatsRow = self
            .retrying(Statement::Stats, || sqlx::query_as(sql.clone()).fetch_one(&self.inner.pool))
            .await
            .map_err(|e| errors::map("stats", e))?;
        // The mode in force now (a configuration reload may have changed it since connect;
        // `capabilities()` keeps the one seen at connect).
        let mut stats = BackendStats::new(BACKEND_NAME, durability_of(&synchronous_commit, &fsync));
        // Positions are not contiguous (they come from transaction ids): the events are counted.
        stats.events = events.max(0) as u64;
        stats.head_position = head.max(0) as u64;
        stats.streams = streams.max(0) as u64;
        stats.snapshots = snapshots.max(0) as u64;
        let details = &mut stats.details;
        details.insert("schema".into(), self.inner.schema.clone());
        details.insert("payload_encoding".into(), format!("{:?}", self.inner.payload).to_lowercase());
        details.insert("events_table_bytes".into(), events_bytes.to_string());
        details.insert("database_bytes".into(), database_bytes.to_string());
        details.insert("server_version".into(), server_version);
        details.insert("pool_connections".into(), self.inner.pool.size().to_string());
        details.insert("pool_idle".into(), self.inner.pool.num_idle().to_string());
        details.insert("schema_version".into(), SCHEMA_VERSION.to_string());
        details.insert("groups_in_flight".into(), self.inner.groups_in_flight.to_string());
        details.insert("read_replica".into(), self.inner.read_pool.is_some().to_string());
        let horizon = self.horizon_status().await?;
        details.insert("horizon_held_back_events".into(), horizon.held_back_events.to_string());
        if let Some(oldest) = horizon.oldest_transaction {
            details.insert("oldest_transaction".into(), oldest.to_string());
        }
        Ok(stats)
    }

    /// `Failed` when the server does not answer a read of the head within 2 s
    /// (`postgres.server`), the pool is closed, or a read replica does not answer;
    /// `Degraded` when statements wait for a pooled connection (`postgres.pool`), the LISTEN
    /// connection is down (`postgres.listener`) or the replica lags (`postgres.replica`).
    async fn health(&self) -> Health {
        self.check_health().await
    }

    async fn wait_for_commit(&self, after_position: u64, max_wait: Duration) -> Result<()> {
        // Without notifications, commits of other processes are only seen by polling.
        let max_wait = if self.inner.channel.is_some() { max_wait } else { max_wait.min(Duration::from_millis(50)) };
        if self.inner.signal.head() > after_position {
            // Announced (committed), not yet readable: an older transaction still holds the
            // horizon, or the read replica has not replayed it. Look again shortly.
            tokio::time::sleep(max_wait.min(ANNOUNCED_POLL)).await;
            return Ok(());
        }
        self.inner.signal.wait_past(after_position, max_wait).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["allframe", "app_1", "_x", &"a".repeat(MAX_SCHEMA_LEN)] {
            assert!(validate_schema(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "Billing",
            "a-b",
            "a b",
            "x\"; DROP SCHEMA public; --",
            "pg_catalog",
            "café",
            &"a".repeat(MAX_SCHEMA_LEN + 1),
        ] {
            assert!(matches!(validate_schema(bad), Err(Error::Configuration { .. })), "{bad}");
        }
    }

    #[test]
    fn expected_versions_encode_for_the_append_function() {
        assert_eq!(expected_code(ExpectedVersion::Any), -1);
        assert_eq!(expected_code(ExpectedVersion::StreamExists), -2);
        assert_eq!(expected_code(ExpectedVersion::NoStream), 0);
        assert_eq!(expected_code(ExpectedVersion::Exact(0)), 0);
        assert_eq!(expected_code(ExpectedVersion::Exact(7)), 7);
        assert_eq!(expected_code(ExpectedVersion::Exact(u64::MAX)), i64::MAX);
    }

    #[test]
    fn queries_name_only_the_schema() {
        let queries = Queries::new("app");
        assert!(queries.append.0.contains("\"app\".append_events("));
        assert!(queries.stats.0.contains("'\"app\".events'::regclass"));
        assert!(!format!("{queries:?}").contains("{s}"));
    }
}
