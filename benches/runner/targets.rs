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
pub fn database_url() -> String {
    std::env::var("ALLFRAME_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Opens a fresh, empty store for `name`, or says why it cannot.
pub async fn open(name: &str) -> Result<DynBackend, String> {
    open_labelled(name, None, false).await
}

/// Opens a second fresh store of target `name`, beside its main one, labelled `label` (its
/// own directory or schema; PostgreSQL keeps `binary` payloads as `bytea`); [`cleanup_extra`]
/// removes it.
pub async fn open_extra(name: &str, label: &str, binary: bool) -> Result<DynBackend, String> {
    open_labelled(name, Some(label), binary).await
}

fn schema(label: Option<&str>) -> String {
    match label {
        None => format!("bench_{}", std::process::id()),
        Some(label) => format!("bench_{}_{}", label.replace('-', "_"), std::process::id()),
    }
}

async fn open_labelled(name: &str, label: Option<&str>, binary: bool) -> Result<DynBackend, String> {
    let target = find(name)?;
    let location = match target.backend.location {
        LocationKind::Nothing => String::new(),
        LocationKind::Directory => {
            let dir = match label {
                None => name.to_owned(),
                Some(label) => format!("{name}-{label}"),
            };
            crate::machine::data_dir(&dir).display().to_string()
        }
        LocationKind::Url(_) => {
            let url = database_url();
            let separator = if url.contains('?') { '&' } else { '?' };
            let payload = if binary { "&payload=bytea" } else { "" };
            format!("{url}{separator}schema={}&pool_size=16{payload}", schema(label))
        }
    };
    target
        .backend
        .open(location, OpenOptions::new().mode(target.mode))
        .await
        .map_err(|e| format!("{name}: cannot open ({e})"))
}

/// Removes the store [`open_extra`] made.
pub async fn cleanup_extra(name: &str, label: &str) {
    let dir = crate::machine::target_dir().join("bench-data").join(format!("{name}-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(dir);
    if find(name).is_ok_and(|t| matches!(t.backend.location, LocationKind::Url(_))) {
        drop_schema(&schema(Some(label))).await;
    }
}

/// Drops a PostgreSQL schema the benchmark made.
pub async fn drop_schema(schema: &str) {
    #[cfg(feature = "postgres")]
    {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&database_url()).await {
            let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
        }
    }
    #[cfg(not(feature = "postgres"))]
    let _ = schema;
}

/// Removes what a target left behind: the data directory, or the PostgreSQL schema.
pub async fn cleanup(name: &str) {
    let dir = crate::machine::target_dir().join("bench-data").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(dir);
    if find(name).is_ok_and(|t| matches!(t.backend.location, LocationKind::Url(_))) {
        drop_schema(&schema(None)).await;
    }
}
