//! Store addresses (`memory:`, `allsource:./data`, `rocksdb:./db`, `postgres://…`) and opening
//! them, through the facade's backend descriptors (`allframe::backends`): this file names no
//! backend.

use std::fmt;
use std::str::FromStr;

use allframe::DynBackend;
use allframe::backends::{self, LocationKind, Mode, OpenOptions};

use crate::CliError;

/// Where a store is: a backend and a location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address(backends::Address);

impl Address {
    /// The address of the backend with `scheme` at `location` (the demo's two stores).
    pub fn of(scheme: &str, location: &str) -> Option<Address> {
        let backend = backends::by_scheme(scheme)?;
        Some(Address(backends::Address { backend, location: location.to_owned() }))
    }

    /// Whether the address names a new in-memory store (never the same store twice).
    pub fn is_volatile(&self) -> bool {
        self.0.backend.location == LocationKind::Nothing
    }
}

impl FromStr for Address {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        backends::parse(text).map(Address).map_err(|error| error.to_string())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether opening may create the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// The store must exist (a source, or a store to inspect or check).
    Existing,
    /// The store is created when missing (the demo's store).
    CreateIfMissing,
    /// A copy's destination: created when missing and written without a sync per append where
    /// the backend has that mode (the copy flushes at the end; an interrupted copy is resumed,
    /// so nothing is lost).
    BulkDestination,
}

/// Opens the store at `address`.
pub async fn open(address: &Address, mode: Open) -> Result<DynBackend, CliError> {
    let backend = address.0.backend;
    if !backend.is_compiled_in() {
        return Err(CliError::new(
            address,
            "this build of allframe does not include that backend",
            format!("rebuild with `cargo install allframe-cli --features {}`", backend.feature),
        ));
    }
    let directory = backend.location == LocationKind::Directory;
    if mode == Open::Existing && directory && !std::path::Path::new(&address.0.location).exists() {
        return Err(CliError::new(address, "no store at this path", "check the path, or copy a store there first"));
    }
    let mut options = OpenOptions::new();
    if mode == Open::BulkDestination && backend.modes.contains(&Mode::NoSync) {
        options = options.mode(Mode::NoSync);
    }
    address.0.open(options).await.map_err(|error| CliError::store(address, &error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for text in ["memory:", "allsource:./data", "rocksdb:/var/db", "postgres://u@h/db?schema=app&sslmode=disable"] {
            let address: Address = text.parse().unwrap();
            assert_eq!(address.to_string(), text);
        }
        assert!("memory:".parse::<Address>().unwrap().is_volatile());
        assert!(!"allsource:./data".parse::<Address>().unwrap().is_volatile());
    }

    #[test]
    fn refuses_unknown_or_empty_addresses() {
        assert!("mysql://x".parse::<Address>().unwrap_err().contains("unknown store address"));
        assert!("allsource:".parse::<Address>().unwrap_err().contains("has no path"));
        assert!("./data".parse::<Address>().is_err());
    }
}
