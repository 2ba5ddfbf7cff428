//! Copy round trips between every pair of available backends along the migration path
//! (memory -> AllSource -> RocksDB -> PostgreSQL -> memory): each copy verifies equal, the
//! chain ends equal to where it started, and interrupted copies resume.

use std::sync::Arc;

use allframe::allsource::AllSourceBackend;
use allframe::migrate::{CopyOptions, copy_store, verify_stores};
use allframe::{DynBackend, InMemoryBackend};
use allframe_cqrs_testkit::migrate;

/// A backend and what must outlive it (a temporary directory, a schema to drop).
struct Held {
    backend: DynBackend,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            std::thread::spawn(move || {
                tokio::runtime::Runtime::new().unwrap().block_on(async move {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&database_url()).await {
                        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                    }
                })
            })
            .join()
            .unwrap();
        }
    }
}

fn database_url() -> String {
    std::env::var("ALLFRAME_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn memory() -> Held {
    Held { backend: Arc::new(InMemoryBackend::new()), _dir: None, schema: None }
}

fn allsource() -> Held {
    let dir = tempfile::tempdir().unwrap();
    Held { backend: Arc::new(AllSourceBackend::production(dir.path()).unwrap()), _dir: Some(dir), schema: None }
}

#[cfg(feature = "cqrs-rocksdb")]
fn rocksdb() -> Option<Held> {
    let dir = tempfile::tempdir().unwrap();
    let backend = allframe::rocksdb::RocksDbBackend::open(dir.path()).unwrap();
    Some(Held { backend: Arc::new(backend), _dir: Some(dir), schema: None })
}

#[cfg(not(feature = "cqrs-rocksdb"))]
fn rocksdb() -> Option<Held> {
    eprintln!("NOTICE: RocksDB not compiled in (feature cqrs-rocksdb); the chain skips it");
    None
}

async fn postgres() -> Option<Held> {
    let schema = format!("afcli_{}", allframe::EventId::new().to_string().replace('-', ""));
    match allframe::postgres::PostgresBackend::builder(&database_url()).schema(&schema).pool_size(4).connect().await {
        Ok(backend) => Some(Held { backend: Arc::new(backend), _dir: None, schema: Some(schema) }),
        Err(error) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI=true and no PostgreSQL: {error}"),
        Err(error) => {
            eprintln!("NOTICE: no PostgreSQL server at {} ({error}); the chain skips it", database_url());
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_path_chain_ends_where_it_started() {
    let mut chain = vec![("memory", memory()), ("allsource", allsource())];
    if let Some(held) = rocksdb() {
        chain.push(("rocksdb", held));
    }
    if let Some(held) = postgres().await {
        chain.push(("postgres", held));
    }
    chain.push(("memory", memory()));
    let written = migrate::fill_sample(&*chain[0].1.backend, 90).await;
    for pair in chain.windows(2) {
        let ((from_name, from), (to_name, to)) = (&pair[0], &pair[1]);
        let copied = copy_store(&*from.backend, &*to.backend, CopyOptions::default(), |_| {}).await.unwrap();
        assert_eq!(copied.written, written, "{from_name} -> {to_name}");
        let report = verify_stores(&*from.backend, &*to.backend, 100).await.unwrap();
        assert_eq!(report.difference, None, "{from_name} -> {to_name}");
    }
    let (first, last) = (&chain[0].1, &chain[chain.len() - 1].1);
    assert_eq!(verify_stores(&*first.backend, &*last.backend, 64).await.unwrap().difference, None, "round trip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_to_allsource_round_trip_and_resume() {
    let (a, b) = (memory(), allsource());
    migrate::copy_round_trip(a.backend.clone(), b.backend.clone()).await;
    let (c, d) = (allsource(), memory());
    migrate::interrupted_copy_resumes(c.backend.clone(), d.backend.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_round_trip_and_resume() {
    let (Some(pg), Some(pg2), Some(pg3)) = (postgres().await, postgres().await, postgres().await) else { return };
    let a = allsource();
    migrate::copy_round_trip(a.backend.clone(), pg.backend.clone()).await;
    migrate::interrupted_copy_resumes(pg2.backend.clone(), memory().backend.clone()).await;
    migrate::interrupted_copy_resumes(memory().backend.clone(), pg3.backend.clone()).await;
}

#[cfg(feature = "cqrs-rocksdb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_round_trip_and_resume() {
    let (a, b) = (allsource(), rocksdb().unwrap());
    migrate::copy_round_trip(a.backend.clone(), b.backend.clone()).await;
    let (c, d) = (rocksdb().unwrap(), memory());
    migrate::interrupted_copy_resumes(c.backend.clone(), d.backend.clone()).await;
}
