//! Store addresses (`memory:`, `allsource:./data`, `rocksdb:./db`, `postgres://…`) and opening them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use allframe::DynBackend;

use crate::CliError;

/// Where a store is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A new, empty in-memory store (lives as long as the command).
    Memory,
    /// An AllSource store in a directory.
    AllSource(PathBuf),
    /// A RocksDB store in a directory.
    RocksDb(PathBuf),
    /// A PostgreSQL database, with an optional `schema=` parameter.
    Postgres {
        /// The connection URL without the `schema` parameter.
        url: String,
        /// The schema holding the store (`allframe` when not given).
        schema: Option<String>,
    },
}

/// The addresses `allframe` understands, for error messages and `--help`.
pub const FORMS: &str = "memory:, allsource:PATH, rocksdb:PATH or postgres://USER@HOST/DB[?schema=NAME]";

impl FromStr for Address {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let nonempty = |path: &str, scheme: &str| {
            if path.is_empty() {
                Err(format!("`{text}` has no path: write {scheme}:PATH, for example {scheme}:./data"))
            } else {
                Ok(PathBuf::from(path))
            }
        };
        if text == "memory:" || text == "memory" {
            Ok(Address::Memory)
        } else if let Some(path) = text.strip_prefix("allsource:") {
            Ok(Address::AllSource(nonempty(path, "allsource")?))
        } else if let Some(path) = text.strip_prefix("rocksdb:") {
            Ok(Address::RocksDb(nonempty(path, "rocksdb")?))
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            let (base, query) = text.split_once('?').unwrap_or((text, ""));
            let mut schema = None;
            let mut rest = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.strip_prefix("schema=") {
                    Some(name) => schema = Some(name.to_owned()),
                    None => rest.push(pair),
                }
            }
            let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
            Ok(Address::Postgres { url, schema })
        } else {
            Err(format!("unknown store address `{text}`: use {FORMS}"))
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Memory => f.write_str("memory:"),
            Address::AllSource(path) => write!(f, "allsource:{}", path.display()),
            Address::RocksDb(path) => write!(f, "rocksdb:{}", path.display()),
            Address::Postgres { url, schema } => {
                write!(f, "{url}")?;
                match schema {
                    Some(schema) => write!(f, "{}schema={schema}", if url.contains('?') { '&' } else { '?' }),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Whether opening may create the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// The store must exist (a source, or a store to inspect or check).
    Existing,
    /// The store is created when missing (the demo's store).
    CreateIfMissing,
    /// A copy's destination: created when missing and written without a sync per append
    /// (the copy flushes at the end; an interrupted copy is resumed, so nothing is lost).
    BulkDestination,
}

/// Opens the store at `address`.
pub async fn open(address: &Address, mode: Open) -> Result<DynBackend, CliError> {
    let fail = |error: allframe::Error| CliError::store(address, &error);
    match address {
        Address::Memory => Ok(Arc::new(allframe::InMemoryBackend::new())),
        Address::AllSource(path) | Address::RocksDb(path) if mode == Open::Existing && !path.exists() => {
            Err(CliError::new(address, "no store at this path", "check the path, or copy a store there first"))
        }
        #[cfg(feature = "cqrs-allsource")]
        Address::AllSource(path) => {
            use allframe::allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
            let mut config = AllSourceConfig::durable(path);
            if mode == Open::BulkDestination {
                config.sync = SyncMode::NoSync;
            }
            Ok(Arc::new(AllSourceBackend::with_config(config).map_err(fail)?))
        }
        #[cfg(feature = "cqrs-rocksdb")]
        Address::RocksDb(path) => {
            use allframe::rocksdb::{RocksDbBackend, RocksDbConfig};
            let config = RocksDbConfig { sync: mode != Open::BulkDestination, ..RocksDbConfig::default() };
            Ok(Arc::new(RocksDbBackend::open_with(path, config).map_err(fail)?))
        }
        #[cfg(feature = "cqrs-postgres")]
        Address::Postgres { url, schema } => {
            let mut builder = allframe::postgres::PostgresBackend::builder(url);
            if let Some(schema) = schema {
                builder = builder.schema(schema.clone());
            }
            Ok(Arc::new(builder.connect().await.map_err(fail)?))
        }
        #[allow(unreachable_patterns)]
        other => Err(CliError::new(
            other,
            "this build of allframe does not include that backend",
            "rebuild with `cargo install allframe-cli --features cqrs-allsource,cqrs-postgres,cqrs-rocksdb`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("memory:".parse(), Ok(Address::Memory));
        assert_eq!("allsource:./data".parse(), Ok(Address::AllSource("./data".into())));
        assert_eq!("rocksdb:/var/db".parse(), Ok(Address::RocksDb("/var/db".into())));
        assert_eq!(
            "postgres://u@h/db?schema=app&sslmode=disable".parse(),
            Ok(Address::Postgres { url: "postgres://u@h/db?sslmode=disable".into(), schema: Some("app".into()) })
        );
        let address: Address = "postgres://u@h/db?schema=app".parse().unwrap();
        assert_eq!(address.to_string(), "postgres://u@h/db?schema=app");
    }

    #[test]
    fn refuses_unknown_or_empty_addresses() {
        assert!("mysql://x".parse::<Address>().unwrap_err().contains("unknown store address"));
        assert!("allsource:".parse::<Address>().unwrap_err().contains("has no path"));
        assert!("./data".parse::<Address>().is_err());
    }
}
