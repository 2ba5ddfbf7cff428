//! Every backend, described once: its address scheme, the feature that compiles it in, the
//! modes it opens in, and how to open it from an address.
//!
//! The `allframe` command and the benchmark runner take their backend lists from
//! [`BACKENDS`]; `cargo xtask` takes its dependency guards and size probes from each backend
//! crate's `[package.metadata.allframe]`, and the workspace's tidy test checks that the two
//! agree. Adding a backend: copy a backend crate, give it a feature here and one entry in
//! [`BACKENDS`]; the tidy test names whatever else is missing.
//!
//! ```
//! use allframe::backends::{self, OpenOptions};
//!
//! # tokio_test(async {
//! let address = backends::parse("memory:")?;
//! let store = address.open(OpenOptions::new()).await?;
//! assert_eq!(store.head_position().await?, 0);
//! # Ok::<(), allframe::Error>(())
//! # });
//! # fn tokio_test<F: std::future::Future<Output = Result<(), allframe::Error>>>(f: F) {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f).unwrap();
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use allframe_cqrs_core::{DynBackend, Error, Result};

/// What follows a backend's scheme in an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationKind {
    /// Nothing: `memory:`.
    Nothing,
    /// A directory: `allsource:./data`.
    Directory,
    /// The whole address is a URL starting with one of these prefixes: `postgres://…`.
    Url(&'static [&'static str]),
}

/// How durably a store is opened; each backend lists the modes it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// Every acknowledged append is on disk (the default).
    Durable,
    /// Acknowledged once the OS has it, synced by `flush()`: survives a process crash, not a
    /// power loss. A bulk copy's destination uses it.
    NoSync,
    /// Memory only (a backend's in-memory mode; the address's location is ignored).
    Volatile,
}

impl Mode {
    /// The short name used in benchmark target names (`allsource-nosync`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Durable => "durable",
            Mode::NoSync => "nosync",
            Mode::Volatile => "memory",
        }
    }
}

/// How to open a store from an address. A store that does not exist yet is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// The durability mode; `None` is the backend's default (the first of its
    /// [`modes`](BackendDescriptor::modes)). A backend without the mode refuses with
    /// [`Error::Configuration`].
    pub mode: Option<Mode>,
}

impl OpenOptions {
    /// The backend's default mode.
    pub fn new() -> Self {
        OpenOptions { mode: None }
    }

    /// The same options in `mode`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }
}

/// A future that opens a store.
pub type OpenFuture = Pin<Box<dyn Future<Output = Result<DynBackend>> + Send>>;

/// Opens a store at a location (the address's text after the scheme, or the whole URL).
pub type Opener = fn(location: String, options: OpenOptions) -> OpenFuture;

/// One backend: everything the facade, the command line and the tooling need to know.
#[derive(Debug)]
pub struct BackendDescriptor {
    /// The address scheme (`allsource` in `allsource:./data`), also its name in reports.
    pub scheme: &'static str,
    /// The facade feature that compiles it in.
    pub feature: &'static str,
    /// The crate that implements it.
    pub crate_name: &'static str,
    /// What its addresses hold after the scheme.
    pub location: LocationKind,
    /// The modes it opens in, the default first.
    pub modes: &'static [Mode],
    /// One line for help texts and reports.
    pub summary: &'static str,
    /// `None` when this build does not include the backend.
    pub opener: Option<Opener>,
}

impl BackendDescriptor {
    /// Whether this build includes the backend (its feature is on).
    pub fn is_compiled_in(&self) -> bool {
        self.opener.is_some()
    }

    /// How an address of this backend is written, for help texts: `allsource:PATH`.
    pub fn address_form(&self) -> String {
        match self.location {
            LocationKind::Nothing => format!("{}:", self.scheme),
            LocationKind::Directory => format!("{}:PATH", self.scheme),
            LocationKind::Url(prefixes) => format!("{}USER@HOST/DB[?schema=NAME]", prefixes[0]),
        }
    }

    /// Opens the store at `location` (see [`Address`]).
    pub async fn open(&'static self, location: String, options: OpenOptions) -> Result<DynBackend> {
        let Some(opener) = self.opener else {
            return Err(Error::Configuration {
                reason: format!("this build does not include the {} backend (feature `{}`)", self.scheme, self.feature),
            });
        };
        if let Some(mode) = options.mode.filter(|mode| !self.modes.contains(mode)) {
            return Err(Error::Configuration {
                reason: format!("the {} backend has no {mode:?} mode (it has {:?})", self.scheme, self.modes),
            });
        }
        opener(location, options).await
    }
}

/// Every backend the facade knows, compiled in or not, in the order reports list them.
pub static BACKENDS: &[BackendDescriptor] = &[
    BackendDescriptor {
        scheme: "memory",
        feature: "cqrs",
        crate_name: "allframe-backend-memory",
        location: LocationKind::Nothing,
        modes: &[Mode::Volatile],
        summary: "in memory, for tests and examples",
        opener: openers::MEMORY,
    },
    BackendDescriptor {
        scheme: "allsource",
        feature: "cqrs-allsource",
        crate_name: "allframe-backend-allsource",
        location: LocationKind::Directory,
        modes: &[Mode::Durable, Mode::NoSync, Mode::Volatile],
        summary: "embedded: write-ahead log and Parquet segments in a directory",
        opener: openers::ALLSOURCE,
    },
    BackendDescriptor {
        scheme: "rocksdb",
        feature: "cqrs-rocksdb",
        crate_name: "allframe-backend-rocksdb",
        location: LocationKind::Directory,
        modes: &[Mode::Durable, Mode::NoSync],
        summary: "embedded: RocksDB column families in a directory",
        opener: openers::ROCKSDB,
    },
    BackendDescriptor {
        scheme: "postgres",
        feature: "cqrs-postgres",
        crate_name: "allframe-backend-postgres",
        location: LocationKind::Url(&["postgres://", "postgresql://"]),
        modes: &[Mode::Durable],
        summary: "a PostgreSQL database (one global order, many processes)",
        opener: openers::POSTGRES,
    },
];

/// The backends this build includes.
pub fn compiled_in() -> impl Iterator<Item = &'static BackendDescriptor> {
    BACKENDS.iter().filter(|backend| backend.is_compiled_in())
}

/// The backend with this scheme, compiled in or not.
pub fn by_scheme(scheme: &str) -> Option<&'static BackendDescriptor> {
    BACKENDS.iter().find(|backend| backend.scheme == scheme)
}

/// Every address form, for help texts and errors: `memory:, allsource:PATH, …`.
pub fn address_forms() -> String {
    let forms: Vec<String> = BACKENDS.iter().map(BackendDescriptor::address_form).collect();
    forms.join(", ")
}

/// Where a store is: a backend and a location (`allsource:./data`, `postgres://u@h/db`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The backend the address names.
    pub backend: &'static BackendDescriptor,
    /// The text after `scheme:`, or the whole URL for URL backends.
    pub location: String,
}

impl PartialEq for BackendDescriptor {
    fn eq(&self, other: &Self) -> bool {
        self.scheme == other.scheme
    }
}

impl Eq for BackendDescriptor {}

impl Address {
    /// Opens the store the address names.
    pub async fn open(&self, options: OpenOptions) -> Result<DynBackend> {
        self.backend.open(self.location.clone(), options).await
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.backend.location {
            LocationKind::Url(_) => f.write_str(&self.location),
            _ => write!(f, "{}:{}", self.backend.scheme, self.location),
        }
    }
}

/// Why a text is not an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// No backend has this scheme.
    #[error("unknown store address `{text}`: use {forms}")]
    Unknown {
        /// The text given.
        text: String,
        /// Every address form.
        forms: String,
    },
    /// A directory backend's address without a directory.
    #[error("`{text}` has no path: write {scheme}:PATH, for example {scheme}:./data")]
    NoPath {
        /// The text given.
        text: String,
        /// The backend's scheme.
        scheme: &'static str,
    },
}

/// An address mistake is a configuration mistake, so `?` works in functions returning the
/// store's [`Error`].
impl From<AddressError> for Error {
    fn from(error: AddressError) -> Self {
        Error::Configuration { reason: error.to_string() }
    }
}

/// Parses `memory:`, `allsource:PATH`, `rocksdb:PATH` or `postgres://…` (whether or not the
/// backend is compiled in: opening says so).
pub fn parse(text: &str) -> std::result::Result<Address, AddressError> {
    for backend in BACKENDS {
        let location = match backend.location {
            LocationKind::Url(prefixes) if prefixes.iter().any(|p| text.starts_with(p)) => text.to_owned(),
            LocationKind::Url(_) => continue,
            LocationKind::Nothing if text == backend.scheme || text.strip_prefix(backend.scheme) == Some(":") => {
                String::new()
            }
            LocationKind::Nothing => continue,
            LocationKind::Directory => match text.strip_prefix(backend.scheme).and_then(|t| t.strip_prefix(':')) {
                Some("") => return Err(AddressError::NoPath { text: text.to_owned(), scheme: backend.scheme }),
                Some(path) => path.to_owned(),
                None => continue,
            },
        };
        return Ok(Address { backend, location });
    }
    Err(AddressError::Unknown { text: text.to_owned(), forms: address_forms() })
}

/// One opener per backend, `None` when its feature is off.
mod openers {
    #[allow(unused_imports)] // `Mode` is used by the durable backends' openers only.
    use super::{Mode, OpenFuture, OpenOptions, Opener};

    #[cfg(feature = "cqrs")]
    pub const MEMORY: Option<Opener> = Some(memory);
    #[cfg(not(feature = "cqrs"))]
    pub const MEMORY: Option<Opener> = None;

    #[cfg(feature = "cqrs")]
    fn memory(_: String, _: OpenOptions) -> OpenFuture {
        Box::pin(async { Ok(std::sync::Arc::new(allframe_backend_memory::InMemoryBackend::new()) as _) })
    }

    #[cfg(feature = "cqrs-allsource")]
    pub const ALLSOURCE: Option<Opener> = Some(allsource);
    #[cfg(not(feature = "cqrs-allsource"))]
    pub const ALLSOURCE: Option<Opener> = None;

    #[cfg(feature = "cqrs-allsource")]
    fn allsource(location: String, options: OpenOptions) -> OpenFuture {
        use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
        Box::pin(async move {
            let config = match options.mode {
                Some(Mode::Volatile) => AllSourceConfig::in_memory(),
                Some(Mode::NoSync) => AllSourceConfig::durable(location).sync(SyncMode::NoSync),
                _ => AllSourceConfig::durable(location),
            };
            Ok(std::sync::Arc::new(AllSourceBackend::with_config(config)?) as _)
        })
    }

    #[cfg(feature = "cqrs-rocksdb")]
    pub const ROCKSDB: Option<Opener> = Some(rocksdb);
    #[cfg(not(feature = "cqrs-rocksdb"))]
    pub const ROCKSDB: Option<Opener> = None;

    #[cfg(feature = "cqrs-rocksdb")]
    fn rocksdb(location: String, options: OpenOptions) -> OpenFuture {
        use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};
        Box::pin(async move {
            let config = RocksDbConfig::default().sync(options.mode != Some(Mode::NoSync));
            Ok(std::sync::Arc::new(RocksDbBackend::open_with(location, config)?) as _)
        })
    }

    #[cfg(feature = "cqrs-postgres")]
    pub const POSTGRES: Option<Opener> = Some(postgres);
    #[cfg(not(feature = "cqrs-postgres"))]
    pub const POSTGRES: Option<Opener> = None;

    /// `postgres://…[?schema=NAME][&pool_size=N][&payload=jsonb|bytea]`: those parameters are
    /// the backend's (`bytea` for binary codecs such as postcard), the others go to sqlx.
    #[cfg(feature = "cqrs-postgres")]
    fn postgres(location: String, _: OpenOptions) -> OpenFuture {
        Box::pin(async move {
            let (base, query) = location.split_once('?').unwrap_or((&location, ""));
            let (mut schema, mut pool_size, mut payload, mut rest) = (None, None, None, Vec::new());
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                if let Some(name) = pair.strip_prefix("schema=") {
                    schema = Some(name.to_owned());
                } else if let Some(size) = pair.strip_prefix("pool_size=") {
                    let size = size.parse::<u32>().map_err(|_| allframe_cqrs_core::Error::Configuration {
                        reason: format!("pool_size=`{size}` in the address is not a number"),
                    })?;
                    pool_size = Some(size);
                } else if let Some(encoding) = pair.strip_prefix("payload=") {
                    payload = Some(match encoding {
                        "jsonb" => allframe_backend_postgres::PayloadEncoding::Jsonb,
                        "bytea" => allframe_backend_postgres::PayloadEncoding::Bytea,
                        other => {
                            return Err(allframe_cqrs_core::Error::Configuration {
                                reason: format!("payload=`{other}` in the address is not `jsonb` or `bytea`"),
                            });
                        }
                    });
                } else {
                    rest.push(pair);
                }
            }
            let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
            let mut builder = allframe_backend_postgres::PostgresBackend::builder(&url);
            if let Some(schema) = schema {
                builder = builder.schema(schema);
            }
            if let Some(size) = pool_size {
                builder = builder.pool_size(size);
            }
            if let Some(payload) = payload {
                builder = builder.payload_encoding(payload);
            }
            Ok(std::sync::Arc::new(builder.connect().await?) as _)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let parsed = |text: &str| parse(text).map(|a| (a.backend.scheme, a.location));
        assert_eq!(parsed("memory:"), Ok(("memory", String::new())));
        assert_eq!(parsed("memory"), Ok(("memory", String::new())));
        assert_eq!(parsed("allsource:./data"), Ok(("allsource", "./data".into())));
        assert_eq!(parsed("rocksdb:/var/db"), Ok(("rocksdb", "/var/db".into())));
        let url = "postgres://u@h/db?schema=app&sslmode=disable";
        assert_eq!(parsed(url), Ok(("postgres", url.into())));
        assert_eq!(parse(url).unwrap().to_string(), url);
        assert_eq!(parse("allsource:./data").unwrap().to_string(), "allsource:./data");
    }

    #[test]
    fn refuses_unknown_or_empty_addresses() {
        assert!(matches!(parse("mysql://x"), Err(AddressError::Unknown { .. })));
        assert!(parse("mysql://x").unwrap_err().to_string().contains("allsource:PATH"));
        assert!(matches!(parse("allsource:"), Err(AddressError::NoPath { scheme: "allsource", .. })));
        assert!(parse("./data").is_err());
        assert!(parse("memoryx:").is_err());
    }

    #[test]
    fn every_backend_is_described_once() {
        let mut schemes: Vec<&str> = BACKENDS.iter().map(|b| b.scheme).collect();
        schemes.sort_unstable();
        schemes.dedup();
        assert_eq!(schemes.len(), BACKENDS.len());
        assert!(BACKENDS.iter().all(|b| !b.modes.is_empty()));
    }

    #[cfg(feature = "cqrs")]
    #[test]
    fn refuses_a_mode_the_backend_lacks() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let address = parse("memory:").unwrap();
        let refused = rt.block_on(address.open(OpenOptions::new().mode(Mode::Durable)));
        assert!(matches!(refused, Err(Error::Configuration { .. })));
        assert!(rt.block_on(address.open(OpenOptions::new().mode(Mode::Volatile))).is_ok());
        assert!(rt.block_on(address.open(OpenOptions::new())).is_ok());
    }
}
