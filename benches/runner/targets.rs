//! The backends and modes a run compares, and how each is opened.

use std::sync::Arc;

use allframe::DynBackend;

/// Every target compiled into this binary, in report order.
pub fn names() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut names = vec!["memory"];
    #[cfg(feature = "allsource")]
    names.extend(["allsource-durable", "allsource-nosync", "allsource-memory"]);
    #[cfg(feature = "rocksdb")]
    names.extend(["rocksdb-sync", "rocksdb-nosync"]);
    #[cfg(feature = "postgres")]
    names.push("postgres");
    names
}

/// Whether a target acknowledges only after its data is on disk.
pub fn is_durable(name: &str) -> bool {
    matches!(name, "allsource-durable" | "rocksdb-sync" | "postgres")
}

/// Opens a fresh, empty store for `name`, or says why it cannot.
pub async fn open(name: &str) -> Result<DynBackend, String> {
    match name {
        "memory" => Ok(Arc::new(allframe::InMemoryBackend::new())),
        #[cfg(feature = "allsource")]
        "allsource-durable" | "allsource-nosync" | "allsource-memory" => {
            use allframe::allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
            let config = match name {
                "allsource-memory" => AllSourceConfig::default(),
                "allsource-durable" => AllSourceConfig::durable(crate::machine::data_dir(name)),
                _ => AllSourceConfig {
                    sync: SyncMode::NoSync,
                    ..AllSourceConfig::durable(crate::machine::data_dir(name))
                },
            };
            Ok(Arc::new(AllSourceBackend::with_config(config).map_err(|e| e.to_string())?))
        }
        #[cfg(feature = "rocksdb")]
        "rocksdb-sync" | "rocksdb-nosync" => {
            use allframe::rocksdb::{RocksDbBackend, RocksDbConfig};
            let config = RocksDbConfig { sync: name == "rocksdb-sync", ..RocksDbConfig::default() };
            Ok(Arc::new(RocksDbBackend::open_with(crate::machine::data_dir(name), config).map_err(|e| e.to_string())?))
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            let url = std::env::var("ALLFRAME_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let schema = format!("bench_{}", std::process::id());
            let backend = allframe::postgres::PostgresBackend::builder(&url)
                .schema(&schema)
                .pool_size(16)
                .connect()
                .await
                .map_err(|e| format!("no PostgreSQL server at {url}: {e}"))?;
            Ok(Arc::new(backend))
        }
        other => Err(format!("unknown target `{other}`")),
    }
}

/// Removes what a target left behind: the data directory, or the PostgreSQL schema.
pub async fn cleanup(name: &str) {
    let dir = crate::machine::target_dir().join("bench-data").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(dir);
    #[cfg(feature = "postgres")]
    if name == "postgres" {
        use sqlx::Connection;
        let url = std::env::var("ALLFRAME_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
            let sql = format!("DROP SCHEMA IF EXISTS bench_{} CASCADE", std::process::id());
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
        }
    }
}
