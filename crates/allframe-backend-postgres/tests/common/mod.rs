//! Test support: the server URL, one fresh schema per test (dropped at the end), and the
//! skip-or-fail rule when no server is reachable.

#![allow(dead_code)]

pub mod child;
pub mod proxy;

use std::time::Duration;

use allframe_backend_postgres::{PostgresBackend, PostgresBuilder};
use allframe_cqrs_core::{
    AppendResult, BackendStats, Capabilities, EventId, EventStoreBackend, ExpectedVersion, NewEvent, RecordedEvent,
    Result, Snapshot, StreamId, async_trait,
};
use sqlx::Connection;

/// The server the tests use: `ALLFRAME_TEST_DATABASE_URL`, or the local default.
pub fn database_url() -> String {
    std::env::var("ALLFRAME_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema name no other test uses.
/// A second application on an existing store's schema (`url`, `schema`), as another process
/// would connect: its own pool and listener, no migrations, named `name` in `pg_stat_activity`.
pub async fn second_process(url: &str, schema: &str, name: &str) -> PostgresBackend {
    PostgresBackend::builder(url)
        .schema(schema)
        .application_name(name)
        .run_migrations(false)
        .connect()
        .await
        .expect("second process")
}

pub fn fresh_schema() -> String {
    format!("aftest_{}", EventId::new().to_string().replace('-', ""))
}

/// Whether a server answers; when it does not, tests skip with a notice, except under
/// `CI=true`, where a missing server fails the run.
pub async fn server_available() -> bool {
    let url = database_url();
    match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            true
        }
        outcome => {
            let reason = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true and no PostgreSQL server at {url}: {reason}");
            }
            eprintln!(
                "NOTICE: skipping PostgreSQL test: no server at {url} ({reason}); set ALLFRAME_TEST_DATABASE_URL"
            );
            false
        }
    }
}

/// A backend in a fresh schema built from `configure`, or `None` (skip) without a server.
pub async fn fresh_with(configure: impl FnOnce(PostgresBuilder) -> PostgresBuilder) -> Option<TestBackend> {
    if !server_available().await {
        return None;
    }
    Some(in_schema(fresh_schema(), configure).await)
}

/// A backend in the schema `schema`, dropped first if it exists (for fixed names such as
/// SQL keywords) and again when the backend is dropped. Needs a server.
pub async fn named_with(schema: &str, configure: impl FnOnce(PostgresBuilder) -> PostgresBuilder) -> TestBackend {
    drop_schema(schema).await;
    in_schema(schema.to_owned(), configure).await
}

async fn in_schema(schema: String, configure: impl FnOnce(PostgresBuilder) -> PostgresBuilder) -> TestBackend {
    let builder = PostgresBackend::builder(&database_url()).schema(&schema).pool_size(4);
    let backend = configure(builder).connect().await.expect("connect to the test server");
    TestBackend { backend: Some(backend), schema }
}

/// A backend in a fresh schema with test defaults, or `None` (skip) without a server.
pub async fn fresh() -> Option<TestBackend> {
    fresh_with(|b| b).await
}

/// Drops a schema and everything in it.
pub async fn drop_schema(schema: &str) {
    allframe_backend_postgres::validate_schema(schema).expect("test schema name");
    if let Ok(mut conn) = sqlx::PgConnection::connect(&database_url()).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            allframe_backend_postgres::quote_schema(schema)
        )))
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
    }
}

/// A backend that drops its schema when dropped, so tests leave nothing behind.
#[derive(Debug)]
pub struct TestBackend {
    backend: Option<PostgresBackend>,
    /// The schema the backend lives in.
    pub schema: String,
}

impl TestBackend {
    /// The backend itself.
    pub fn inner(&self) -> &PostgresBackend {
        self.backend.as_ref().expect("backend present until drop")
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        drop(self.backend.take());
        let schema = std::mem::take(&mut self.schema);
        // Drop may run inside a runtime: do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(drop_schema(&schema));
        })
        .join();
    }
}

#[async_trait]
impl EventStoreBackend for TestBackend {
    fn name(&self) -> &'static str {
        self.inner().name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }
    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult> {
        self.inner().append(stream, expected, events).await
    }
    async fn read_stream(&self, stream: &str, after_version: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.inner().read_stream(stream, after_version, limit).await
    }
    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.inner().read_all(after_position, limit).await
    }
    async fn stream_version(&self, stream: &str) -> Result<u64> {
        self.inner().stream_version(stream).await
    }
    async fn head_position(&self) -> Result<u64> {
        self.inner().head_position().await
    }
    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>> {
        self.inner().list_streams(after, limit).await
    }
    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()> {
        self.inner().save_snapshot(stream, snapshot).await
    }
    async fn get_latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        self.inner().get_latest_snapshot(stream).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner().flush().await
    }
    async fn stats(&self) -> Result<BackendStats> {
        self.inner().stats().await
    }
    async fn find_event(&self, id: allframe_cqrs_core::EventId) -> Result<Option<allframe_cqrs_core::retry::StoredAt>> {
        self.inner().find_event(id).await
    }
    async fn wait_for_commit(&self, after_position: u64, max_wait: Duration) -> Result<()> {
        self.inner().wait_for_commit(after_position, max_wait).await
    }
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        self.inner().load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()> {
        self.inner().save_checkpoint(name, expected, position).await
    }
}

/// The hot standby the replica tests read from: `ALLFRAME_TEST_REPLICA_URL`, or the port
/// `scripts/postgres-replica-up.sh` gives it.
pub fn replica_url() -> String {
    std::env::var("ALLFRAME_TEST_REPLICA_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/test".into())
}

/// Whether the replica answers and is a standby; when it does not, replica tests skip with a
/// notice, except under `CI=true`, where a missing replica fails the run.
pub async fn replica_available() -> bool {
    let url = replica_url();
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&mut conn).await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(standby)
    })
    .await;
    let reason = match outcome {
        Ok(Ok(true)) => return true,
        Ok(Ok(false)) => "the server is not a standby (pg_is_in_recovery() is false)".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".into(),
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and no PostgreSQL replica at {url}: {reason}");
    }
    eprintln!(
        "NOTICE: skipping PostgreSQL replica test: no hot standby at {url} ({reason}); \
         run `bash scripts/postgres-replica-up.sh` or set ALLFRAME_TEST_REPLICA_URL"
    );
    false
}

/// Waits until the replica has replayed the creation of `schema`'s tables.
pub async fn wait_for_replica_schema(schema: &str) {
    let mut conn = sqlx::PgConnection::connect(&replica_url()).await.expect("connect to the replica");
    for _ in 0..1000 {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'log_head'")
                .bind(schema)
                .fetch_optional(&mut conn)
                .await
                .expect("query the replica");
        if found.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the replica did not replay the creation of schema {schema} within 10 s");
}

/// A session holding the lock of `stream` in `schema` (the advisory lock every append to it
/// takes before writing, decision 0203) until its transaction ends: appends to that stream wait.
pub async fn hold_stream(schema: &str, stream: &str) -> sqlx::PgConnection {
    let mut session = sqlx::PgConnection::connect(&database_url()).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut session).await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))")
        .bind(schema)
        .bind(stream)
        .execute(&mut session)
        .await
        .expect("take the stream's lock");
    session
}

/// Whether positions strictly increase along `log`.
pub fn increasing(log: &[RecordedEvent]) -> bool {
    log.windows(2).all(|pair| pair[0].position < pair[1].position)
}
