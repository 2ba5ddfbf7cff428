//! The backends and modes a run compares, derived from the facade's backend descriptors
//! (`allframe::backends`): every compiled-in backend in each of its modes.

use allframe::DynBackend;
use allframe::backends::{self, BackendDescriptor, LocationKind, Mode, OpenOptions};

/// One backend in one mode: `memory`, `allsource-durable`, `rocksdb-nosync`, `postgres`.
struct Target {
    name: String,
    backend: &'static BackendDescriptor,
    mode: Mode,
}

fn all() -> Vec<Target> {
    backends::compiled_in()
        .flat_map(|backend| {
            backend.modes.iter().map(move |&mode| {
                let name = if backend.modes.len() == 1 {
                    backend.scheme.to_owned()
                } else {
                    format!("{}-{}", backend.scheme, mode.name())
                };
                Target { name, backend, mode }
            })
        })
        .collect()
}

fn find(name: &str) -> Result<Target, String> {
    all().into_iter().find(|t| t.name == name).ok_or_else(|| format!("unknown target `{name}`"))
}

/// Every target compiled into this binary, in report order.
pub fn names() -> Vec<String> {
    all().into_iter().map(|t| t.name).collect()
}

/// Whether a target acknowledges only after its data is on disk.
pub fn is_durable(name: &str) -> bool {
    find(name).is_ok_and(|t| t.mode == Mode::Durable)
}

/// The PostgreSQL database the benchmark uses (`ALLFRAME_TEST_DATABASE_URL`, as the tests).
fn database_url() -> String {
    std::env::var("ALLFRAME_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Opens a fresh, empty store for `name`, or says why it cannot.
pub async fn open(name: &str) -> Result<DynBackend, String> {
    let target = find(name)?;
    let location = match target.backend.location {
        LocationKind::Nothing => String::new(),
        LocationKind::Directory => crate::machine::data_dir(name).display().to_string(),
        LocationKind::Url(_) => {
            let url = database_url();
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}schema=bench_{}&pool_size=16", std::process::id())
        }
    };
    target
        .backend
        .open(location, OpenOptions::new().mode(target.mode))
        .await
        .map_err(|e| format!("{name}: cannot open ({e})"))
}

/// Removes what a target left behind: the data directory, or the PostgreSQL schema.
pub async fn cleanup(name: &str) {
    let dir = crate::machine::target_dir().join("bench-data").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(dir);
    #[cfg(feature = "postgres")]
    if find(name).is_ok_and(|t| matches!(t.backend.location, LocationKind::Url(_))) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&database_url()).await {
            let sql = format!("DROP SCHEMA IF EXISTS bench_{} CASCADE", std::process::id());
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
        }
    }
}
