//! Every backend, fresh, for tests that run on all four (memory, AllSource, RocksDB,
//! PostgreSQL), each opened from its address through the facade's descriptors. PostgreSQL uses
//! `ALLFRAME_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`) with a
//! schema per test and process, dropped by `cleanup`; without a server it is skipped with a
//! notice, except under `CI=true`.

#![allow(dead_code)]

use allframe::DynBackend;
use allframe::backends::{self, OpenOptions};

/// One backend under test: where it is, and what to remove afterwards.
pub struct Target {
    pub name: &'static str,
    pub address: String,
    pub durable: bool,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl Target {
    pub async fn open(&self) -> DynBackend {
        let address = backends::parse(&self.address).expect("a valid address");
        assert_eq!(address.backend.scheme, self.name);
        address.open(OpenOptions::new()).await.unwrap_or_else(|e| panic!("{}: cannot open: {e}", self.name))
    }

    /// Drops the PostgreSQL schema the test used.
    pub async fn cleanup(&self) {
        if let Some(schema) = &self.schema {
            drop_schema(schema).await;
        }
    }
}

/// The PostgreSQL server the tests use.
pub fn database_url() -> String {
    std::env::var("ALLFRAME_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Drops a PostgreSQL schema a test made.
pub async fn drop_schema(schema: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.expect("connects to drop the schema");
    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("drops the schema");
}

/// Every backend, fresh; `test` names the PostgreSQL schema (one per test and process).
pub async fn targets(test: &str) -> Vec<Target> {
    let directory = |scheme: &'static str| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let address = format!("{scheme}:{}", dir.path().display());
        Target { name: scheme, address, durable: true, _dir: Some(dir), schema: None }
    };
    let mut targets = vec![
        Target { name: "memory", address: "memory:".into(), durable: false, _dir: None, schema: None },
        directory("allsource"),
        directory("rocksdb"),
    ];
    // A schema name takes `[a-z0-9_]` only: a test named `saga-stuck` gets `t_saga_stuck_PID`.
    let schema = format!("t_{}_{}", test.replace(|c: char| !c.is_ascii_alphanumeric(), "_"), std::process::id());
    let url = database_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    let postgres = Target {
        name: "postgres",
        address: format!("{url}{separator}schema={schema}"),
        durable: true,
        _dir: None,
        schema: Some(schema.clone()),
    };
    match backends::parse(&postgres.address).unwrap().open(OpenOptions::new()).await {
        Ok(_) => {
            drop_schema(&schema).await;
            targets.push(postgres);
        }
        Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and PostgreSQL is not there: {error}")
        }
        Err(error) => eprintln!("skipping PostgreSQL in {test}: no server at {url} ({error})"),
    }
    targets
}
