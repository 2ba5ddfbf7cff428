//! # AllFrame CQRS: the RocksDB backend
//!
//! [`RocksDbBackend`] stores events in an embedded [RocksDB](https://rocksdb.org) database:
//! an LSM tree built for heavy write loads. It keeps the whole contract of
//! [`EventStoreBackend`] with the memory backend's semantics, survives process crashes, and
//! in its default sync mode survives power loss too: every append is synced to the
//! write-ahead log before it is acknowledged, and concurrent appenders share one sync
//! (group commit).
//!
//! ```no_run
//! use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};
//! use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};
//! # async fn demo() -> allframe_cqrs_core::Result<()> {
//! let backend = RocksDbBackend::open_with("data/events", RocksDbConfig::default().sync(true))?;
//! backend.append("account-1", ExpectedVersion::NoStream, vec![NewEvent::new("Opened", "{}")]).await?;
//! assert_eq!(backend.stream_version("account-1").await?, 1);
//! # Ok(()) }
//! ```
//!
//! Layout: one column family each for events by global position, the stream index, stream
//! heads, event ids and snapshots, with big-endian keys (see `docs/ROCKSDB.md`). All writes go
//! through one writer thread that batches whatever is queued into one `WriteBatch`.
//! Reads run on the caller's thread with RocksDB iterators; they do not wait for the writer.
//!
//! Building needs a C++ compiler and libclang (for bindgen): RocksDB is compiled from source.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod create;
mod health;
mod layout;
mod metrics;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use allframe_cqrs_core::retry::StoredAt;
use allframe_cqrs_core::{
    AppendResult, BackendStats, Capabilities, CommitSignal, Durability, Error, EventId, EventStoreBackend,
    ExpectedVersion, Health, Limits, NewEvent, RecordedEvent, Result, Snapshot, StreamId, async_trait,
};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, ErrorKind, Options,
    ReadOptions, WriteBatch, WriteOptions,
};
use tokio::sync::oneshot;

use crate::layout::Run;
use crate::writer::{Counters, Request, Writer};

/// The backend's name in logs, errors and stats.
pub const BACKEND_NAME: &str = "rocksdb";

/// Block compression of the stored tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4: fast, and the only codec this crate builds RocksDB with.
    #[default]
    Lz4,
}

/// How a [`RocksDbBackend`] is opened.
///
/// Start from the default and change what you need (a setting added later is then not a
/// breaking change): `RocksDbConfig::default().sync(false)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RocksDbConfig {
    /// Sync the write-ahead log before acknowledging each batch (default `true`:
    /// [`Durability::Synchronous`]). With `false`, appends survive a process crash but not a
    /// power loss ([`Durability::NoSync`]); [`EventStoreBackend::flush`] syncs on demand.
    pub sync: bool,
    /// Size of the block cache shared by all column families, in bytes (default 64 MiB).
    pub block_cache_bytes: usize,
    /// Block compression (default [`Compression::Lz4`]).
    pub compression: Compression,
    /// Memtable size per column family, in bytes (default 64 MiB).
    pub write_buffer_bytes: usize,
    /// Most events (a snapshot save counts as one) that one group commit gathers (default 16 384).
    pub max_group_events: usize,
    /// Input limits checked on every append (default [`Limits::default`]).
    pub limits: Limits,
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        RocksDbConfig {
            sync: true,
            block_cache_bytes: 64 << 20,
            compression: Compression::Lz4,
            write_buffer_bytes: 64 << 20,
            max_group_events: 16_384,
            limits: Limits::default(),
        }
    }
}

impl RocksDbConfig {
    /// Whether to sync the write-ahead log before acknowledging each batch.
    pub fn sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// The block cache size, in bytes.
    pub fn block_cache_bytes(mut self, bytes: usize) -> Self {
        self.block_cache_bytes = bytes;
        self
    }

    /// The block compression.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The memtable size per column family, in bytes.
    pub fn write_buffer_bytes(mut self, bytes: usize) -> Self {
        self.write_buffer_bytes = bytes;
        self
    }

    /// The most events one group commit gathers.
    pub fn max_group_events(mut self, events: usize) -> Self {
        self.max_group_events = events;
        self
    }

    /// The input limits checked on every append.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The durability mode this configuration gives.
    pub fn durability(&self) -> Durability {
        if self.sync { Durability::Synchronous } else { Durability::NoSync }
    }
}

/// An event store in a RocksDB database directory.
///
/// Open it once per process and share it (`Arc<RocksDbBackend>`): RocksDB locks the
/// directory, and a second open, in this process or another, fails with [`Error::Locked`].
/// Dropping the backend stops its writer thread and closes the database.
pub struct RocksDbBackend {
    db: Arc<DB>,
    path: PathBuf,
    config: RocksDbConfig,
    signal: Arc<CommitSignal>,
    counters: Arc<Counters>,
    /// Requests sent to the writer and not yet taken (for its linger rule).
    queued: Arc<AtomicUsize>,
    sender: Option<Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    /// Why the writer's last batch failed, if it did (see `health`).
    failure: Arc<std::sync::Mutex<Option<String>>>,
    /// Held from a checkpoint save's read to its write: saves are compare-and-set one at a time
    /// (the database's lock keeps other processes out).
    checkpoint_lock: std::sync::Mutex<()>,
}

impl std::fmt::Debug for RocksDbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbBackend")
            .field("path", &self.path)
            .field("config", &self.config)
            .field("head_position", &self.signal.head())
            .finish_non_exhaustive()
    }
}

impl Drop for RocksDbBackend {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has answered what is queued; joining it
        // releases its handle on the database, so the directory is unlocked when this returns.
        drop(self.sender.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The column family handles of an open store.
pub(crate) struct Handles<'a> {
    pub(crate) meta: &'a ColumnFamily,
    pub(crate) events: &'a ColumnFamily,
    pub(crate) index: &'a ColumnFamily,
    pub(crate) heads: &'a ColumnFamily,
    pub(crate) ids: &'a ColumnFamily,
    pub(crate) snapshots: &'a ColumnFamily,
}

/// The stream and version of the stored event at `position` (contract points 9 and 13).
pub(crate) fn locate_position(db: &DB, handles: &Handles<'_>, path: &Path, position: u64) -> Result<StoredAt> {
    let record = db
        .get_pinned_cf(handles.events, layout::position_key(position))
        .map_err(|e| map_err(path, e))?
        .ok_or_else(|| corruption(path, position, "an event id points at a missing event"))?;
    let header = layout::decode_header(&record).map_err(|reason| corruption(path, position, reason))?;
    let stream =
        std::str::from_utf8(header.stream).map_err(|_| corruption(path, position, "stream id is not UTF-8"))?;
    Ok(StoredAt { position, stream: StreamId::from(stream), version: header.version })
}

impl<'a> Handles<'a> {
    pub(crate) fn new(db: &'a DB, path: &Path) -> Result<Self> {
        let get = |name: &str| {
            db.cf_handle(name).ok_or_else(|| Error::NotAStore {
                backend: BACKEND_NAME,
                path: path.to_path_buf(),
                reason: format!("the column family `{name}` is missing"),
            })
        };
        Ok(Handles {
            meta: get(layout::CF_META)?,
            events: get(layout::CF_EVENTS)?,
            index: get(layout::CF_STREAM_INDEX)?,
            heads: get(layout::CF_STREAM_HEADS)?,
            ids: get(layout::CF_EVENT_IDS)?,
            snapshots: get(layout::CF_SNAPSHOTS)?,
        })
    }
}

/// Maps a RocksDB error to the typed error, keeping it as the source.
pub(crate) fn map_err(path: &Path, error: rocksdb::Error) -> Error {
    match error.kind() {
        ErrorKind::Corruption => corruption(path, 0, error.into_string()),
        ErrorKind::IOError => Error::io(BACKEND_NAME, Some(path.to_path_buf()), std::io::Error::other(error)),
        ErrorKind::Busy | ErrorKind::TimedOut | ErrorKind::TryAgain | ErrorKind::Incomplete => {
            Error::backend(BACKEND_NAME, true, error)
        }
        ErrorKind::ShutdownInProgress => Error::Closed { backend: BACKEND_NAME, reason: Some(error.into_string()) },
        _ => Error::backend(BACKEND_NAME, false, error),
    }
}

/// A corruption error at `offset` (a global position when known, else 0).
pub(crate) fn corruption(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption { backend: BACKEND_NAME, file: path.to_path_buf(), offset, reason: reason.into() }
}

/// Maps an error from opening the database: a held lock is [`Error::Locked`].
pub(crate) fn open_error(path: &Path, error: rocksdb::Error) -> Error {
    let message = error.as_ref().to_ascii_lowercase();
    if error.kind() == ErrorKind::IOError && message.contains("lock") {
        return Error::Locked { path: path.to_path_buf(), source: Some(Box::new(error)) };
    }
    map_err(path, error)
}

/// The version of `stream` as stored (0: no such stream).
pub(crate) fn read_head(db: &DB, handles: &Handles<'_>, path: &Path, stream: &str) -> Result<u64> {
    match db.get_pinned_cf(handles.heads, stream.as_bytes()).map_err(|e| map_err(path, e))? {
        Some(value) => layout::read_u64(&value).map_err(|reason| corruption(path, 0, reason)),
        None => Ok(0),
    }
}

/// Database options; `create` only for a new store (an existing one has all its column
/// families, checked before the open).
fn db_options(config: &RocksDbConfig, create: bool) -> Options {
    let mut options = Options::default();
    options.create_if_missing(create);
    options.create_missing_column_families(create);
    options.set_max_background_jobs(2);
    options.set_bytes_per_sync(1 << 20);
    options.set_keep_log_file_num(4);
    options.set_max_log_file_size(4 << 20);
    // The WAL may only be deleted once every column family with data in it has flushed; this
    // bound makes the small column families flush instead of pinning old WAL files.
    options.set_max_total_wal_size(4 * config.write_buffer_bytes as u64);
    options
}

fn cf_options(name: &str, config: &RocksDbConfig, cache: &Cache) -> Options {
    let mut options = Options::default();
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    if name != layout::CF_EVENTS && name != layout::CF_STREAM_INDEX {
        // Point lookups (event ids, heads, snapshots): a Bloom filter makes misses cheap.
        table.set_bloom_filter(10.0, false);
    }
    options.set_block_based_table_factory(&table);
    options.set_compression_type(match config.compression {
        Compression::None => DBCompressionType::None,
        Compression::Lz4 => DBCompressionType::Lz4,
    });
    options.set_write_buffer_size(config.write_buffer_bytes);
    // Room for two memtables waiting to be flushed before writes stall: a burst of appends
    // fills the large column families (events, event ids) faster than one flush drains them.
    options.set_max_write_buffer_number(4);
    if config.compression != Compression::None {
        // Freshly flushed data is compacted again soon: compress only from level 2 on, so the
        // flush that keeps appends from stalling costs no compression.
        let compressed = DBCompressionType::Lz4;
        let none = DBCompressionType::None;
        options.set_compression_per_level(&[none, none, compressed, compressed, compressed, compressed, compressed]);
    }
    if name == layout::CF_EVENT_IDS {
        // Every append looks up each of its event ids, nearly always a miss: filter the memtable too.
        options.set_memtable_prefix_bloom_ratio(0.05);
        options.set_memtable_whole_key_filtering(true);
    }
    options
}

impl RocksDbBackend {
    /// Opens (or creates) the store at `path` with the default [`RocksDbConfig`] (sync on).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, RocksDbConfig::default())
    }

    /// Opens (or creates) the store at `path`.
    ///
    /// Creating a store is atomic as seen from the next open: a process killed during its
    /// first open leaves a directory that the next open creates the store in again.
    ///
    /// Fails with [`Error::Locked`] when the store is open (or being created) elsewhere, and with
    /// [`Error::NotAStore`] when `path` is a file, a non-empty directory that is not a RocksDB
    /// database, or a RocksDB database that is not an AllFrame store.
    pub fn open_with(path: impl AsRef<Path>, config: RocksDbConfig) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let found = create::inspect(&path)?;
        let existing = matches!(found, create::Found::Store { .. });
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let families = layout::ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name, &config, &cache)))
            .collect::<Vec<_>>();
        let db = DB::open_cf_descriptors(&db_options(&config, !existing), &path, families)
            .map_err(|e| open_error(&path, e))?;
        let (streams, snapshots, head) = recover(&db, &path, existing)?;
        // `found` (the directory's lock) is dropped after `db` if anything below fails.
        if let create::Found::New(creation) = &found {
            // The database, its column families and its marker are synced: the store exists.
            creation.finish()?;
        }
        let db = Arc::new(db);
        let signal = Arc::new(CommitSignal::new(head));
        let counters = Arc::new(Counters::default());
        let queued = Arc::new(AtomicUsize::new(0));
        counters.streams.store(streams, Ordering::SeqCst);
        counters.snapshots.store(snapshots, Ordering::SeqCst);
        let failure = Arc::default();
        let mut write_options = WriteOptions::default();
        write_options.set_sync(config.sync);
        let writer = Writer {
            db: Arc::clone(&db),
            path: path.clone(),
            signal: Arc::clone(&signal),
            counters: Arc::clone(&counters),
            write_options,
            max_group_events: config.max_group_events.max(1),
            next_position: head + 1,
            queued: Arc::clone(&queued),
            linger: config.sync,
            sync: config.sync,
            failure: Arc::clone(&failure),
        };
        let (sender, receiver) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("allframe-rocksdb-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| Error::io(BACKEND_NAME, Some(path.clone()), e))?;
        Ok(RocksDbBackend {
            db,
            path,
            config,
            signal,
            counters,
            queued,
            sender: Some(sender),
            writer: Some(writer),
            failure,
            checkpoint_lock: std::sync::Mutex::new(()),
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &RocksDbConfig {
        &self.config
    }

    fn handles(&self) -> Result<Handles<'_>> {
        Handles::new(&self.db, &self.path)
    }

    fn closed() -> Error {
        Error::Closed { backend: BACKEND_NAME, reason: Some("the writer thread stopped".into()) }
    }

    fn send(&self, request: Request) -> Result<()> {
        let sender = self.sender.as_ref().ok_or_else(Self::closed)?;
        self.queued.fetch_add(1, Ordering::SeqCst);
        sender.send(request).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            Self::closed()
        })
    }

    /// The stored position of checkpoint `name`.
    fn read_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        let handles = self.handles()?;
        match self.db.get_pinned_cf(handles.meta, layout::checkpoint_key(name)).map_err(|e| map_err(&self.path, e))? {
            Some(value) => Ok(Some(layout::read_u64(&value).map_err(self.decode_err(0))?)),
            None => Ok(None),
        }
    }

    fn decode_err(&self, position: u64) -> impl Fn(layout::DecodeError) -> Error + '_ {
        move |reason| corruption(&self.path, position, reason)
    }
}

/// Checks the format marker (writing it into a new store) and reads the counters and the head.
fn recover(db: &DB, path: &Path, existing: bool) -> Result<(u64, u64, u64)> {
    let handles = Handles::new(db, path)?;
    let not_a_store = |reason: String| Error::NotAStore { backend: BACKEND_NAME, path: path.to_path_buf(), reason };
    let is_empty = |cf: &ColumnFamily| {
        let mut iter = db.raw_iterator_cf(cf);
        iter.seek_to_first();
        iter.status().map(|()| !iter.valid()).map_err(|e| map_err(path, e))
    };
    match db.get_pinned_cf(handles.meta, layout::KEY_FORMAT).map_err(|e| map_err(path, e))? {
        Some(format) if *format == *layout::FORMAT_V1 => {}
        Some(format) => {
            return Err(not_a_store(format!("unknown layout `{}`", String::from_utf8_lossy(&format))));
        }
        // A new store, or one whose creation was cut short before the marker was written.
        None if !existing || (is_empty(handles.meta)? && is_empty(handles.events)?) => {
            let mut batch = WriteBatch::default();
            batch.put_cf(handles.meta, layout::KEY_FORMAT, layout::FORMAT_V1);
            batch.put_cf(handles.meta, layout::KEY_COUNTERS, layout::counters_value(0, 0));
            let mut options = WriteOptions::default();
            options.set_sync(true);
            db.write_opt(batch, &options).map_err(|e| map_err(path, e))?;
        }
        None => return Err(not_a_store("a RocksDB database without the AllFrame format marker".into())),
    }
    let counters = db
        .get_pinned_cf(handles.meta, layout::KEY_COUNTERS)
        .map_err(|e| map_err(path, e))?
        .ok_or_else(|| corruption(path, 0, "the counters record is missing"))?;
    let (streams, snapshots) = layout::decode_counters(&counters).map_err(|reason| corruption(path, 0, reason))?;
    let mut last = db.raw_iterator_cf(handles.events);
    last.seek_to_last();
    last.status().map_err(|e| map_err(path, e))?;
    let head = match last.key() {
        Some(key) => layout::read_u64(key).map_err(|reason| corruption(path, 0, reason))?,
        None => 0,
    };
    Ok((streams, snapshots, head))
}

#[async_trait]
impl EventStoreBackend for RocksDbBackend {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::full(self.config.durability(), true)
    }

    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult> {
        self.config.limits.check_append(stream, &events)?;
        if events.is_empty() {
            let current = read_head(&self.db, &self.handles()?, &self.path, stream)?;
            expected.check(stream, current)?;
            return Ok(AppendResult { stream_version: current, ..AppendResult::default() });
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Append { stream: stream.to_owned(), expected, events, reply })?;
        answer.await.map_err(|_| Self::closed())?
    }

    async fn read_stream(&self, stream: &str, after_version: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let Some(start) = after_version.checked_add(1) else { return Ok(Vec::new()) };
        if limit == 0 || !layout::can_be_stored(stream) {
            return Ok(Vec::new());
        }
        let handles = self.handles()?;
        let prefix = layout::stream_prefix(stream);
        let prefix_len = prefix.len();
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(layout::stream_upper_bound(stream));
        let mut runs = self.db.raw_iterator_cf_opt(handles.index, options);
        runs.seek(layout::index_key(stream, start));
        let mut events = self.db.raw_iterator_cf(handles.events);
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut stream_id = None;
        let mut next_version = start;
        while out.len() < limit {
            let Some((key, value)) = runs.item() else { break };
            if !layout::is_index_key_of(key, &prefix) {
                return Err(corruption(
                    &self.path,
                    0,
                    format!("an index key in the range of `{stream}` is not its own"),
                ));
            }
            let run = Run::decode(key, value, prefix_len).map_err(self.decode_err(0))?;
            let from = next_version.max(run.first_version);
            if from != next_version {
                return Err(corruption(&self.path, 0, format!("stream `{stream}` has a gap before version {from}")));
            }
            let count = (run.last_version - from + 1).min((limit - out.len()) as u64);
            let first_position = run.first_position + (from - run.first_version);
            events.seek(layout::position_key(first_position));
            for offset in 0..count {
                let (position, version) = (first_position + offset, from + offset);
                let Some((key, record)) = events.item() else {
                    events.status().map_err(|e| map_err(&self.path, e))?;
                    return Err(corruption(&self.path, position, "the stream index points past the log"));
                };
                if key != layout::position_key(position) {
                    return Err(corruption(&self.path, position, "the stream index points at a missing event"));
                }
                let event =
                    layout::decode_event(record, position, &mut stream_id).map_err(self.decode_err(position))?;
                if event.version != version || event.stream_id != *stream {
                    return Err(corruption(&self.path, position, "the stream index and the event disagree"));
                }
                out.push(event);
                events.next();
            }
            next_version = run.last_version + 1;
            runs.next();
        }
        runs.status().map_err(|e| map_err(&self.path, e))?;
        Ok(out)
    }

    async fn find_event(&self, id: EventId) -> Result<Option<StoredAt>> {
        let handles = self.handles()?;
        let Some(value) =
            self.db.get_pinned_cf(handles.ids, layout::event_id_key(&id)).map_err(|e| map_err(&self.path, e))?
        else {
            return Ok(None);
        };
        let position = layout::read_u64(&value).map_err(|reason| corruption(&self.path, 0, reason))?;
        locate_position(&self.db, &handles, &self.path, position).map(Some)
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let Some(start) = after_position.checked_add(1) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let handles = self.handles()?;
        let mut events = self.db.raw_iterator_cf(handles.events);
        events.seek(layout::position_key(start));
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut stream_id = None;
        while out.len() < limit {
            let Some((key, record)) = events.item() else { break };
            let position = layout::read_u64(key).map_err(self.decode_err(0))?;
            out.push(layout::decode_event(record, position, &mut stream_id).map_err(self.decode_err(position))?);
            events.next();
        }
        events.status().map_err(|e| map_err(&self.path, e))?;
        Ok(out)
    }

    async fn stream_version(&self, stream: &str) -> Result<u64> {
        read_head(&self.db, &self.handles()?, &self.path, stream)
    }

    async fn head_position(&self) -> Result<u64> {
        Ok(self.signal.head())
    }

    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>> {
        let handles = self.handles()?;
        let mut heads = self.db.raw_iterator_cf(handles.heads);
        match after {
            Some(after) => {
                heads.seek(after.as_bytes());
                if heads.key() == Some(after.as_bytes()) {
                    heads.next();
                }
            }
            None => heads.seek_to_first(),
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let Some((key, value)) = heads.item() else { break };
            let stream = std::str::from_utf8(key).map_err(|_| corruption(&self.path, 0, "stream id is not UTF-8"))?;
            let version = layout::read_u64(value).map_err(self.decode_err(0))?;
            out.push((StreamId::from(stream), version));
            heads.next();
        }
        heads.status().map_err(|e| map_err(&self.path, e))?;
        Ok(out)
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()> {
        self.config.limits.check_snapshot(stream, &snapshot)?;
        let (reply, answer) = oneshot::channel();
        self.send(Request::Snapshot { stream: stream.to_owned(), snapshot, reply })?;
        answer.await.map_err(|_| Self::closed())?
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        self.read_checkpoint(name)
    }

    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()> {
        let head = self.signal.head();
        let _one_at_a_time = self.checkpoint_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let actual = self.read_checkpoint(name)?;
        allframe_cqrs_core::checkpoint::compare_and_set(&self.config.limits, name, expected, actual, position, head)?;
        let mut options = WriteOptions::default();
        options.set_sync(self.config.sync);
        let handles = self.handles()?;
        self.db
            .put_cf_opt(handles.meta, layout::checkpoint_key(name), position.to_be_bytes(), &options)
            .map_err(|e| map_err(&self.path, e))
    }

    async fn get_latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        let handles = self.handles()?;
        match self.db.get_pinned_cf(handles.snapshots, stream.as_bytes()).map_err(|e| map_err(&self.path, e))? {
            Some(record) => Ok(Some(layout::decode_snapshot(&record).map_err(self.decode_err(0))?)),
            None => Ok(None),
        }
    }

    async fn flush(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(|e| map_err(&self.path, e))
    }

    async fn stats(&self) -> Result<BackendStats> {
        let mut stats = BackendStats::new(BACKEND_NAME, self.config.durability());
        stats.head_position = self.signal.head();
        // Positions are assigned without gaps from 1, so the head is also the event count.
        stats.events = stats.head_position;
        stats.streams = self.counters.streams.load(Ordering::SeqCst);
        stats.snapshots = self.counters.snapshots.load(Ordering::SeqCst);
        let handles = self.handles()?;
        let mut sst_bytes = 0;
        let mut memtable_bytes = 0;
        for cf in [handles.meta, handles.events, handles.index, handles.heads, handles.ids, handles.snapshots] {
            let property = |name: &str| self.db.property_int_value_cf(cf, name).map_err(|e| map_err(&self.path, e));
            sst_bytes += property("rocksdb.total-sst-files-size")?.unwrap_or(0);
            memtable_bytes += property("rocksdb.cur-size-all-mem-tables")?.unwrap_or(0);
        }
        let details = &mut stats.details;
        details.insert("path".into(), self.path.display().to_string());
        details.insert("sst_bytes".into(), sst_bytes.to_string());
        details.insert("memtable_bytes".into(), memtable_bytes.to_string());
        details.insert("group_commits".into(), self.counters.groups.load(Ordering::Relaxed).to_string());
        details.insert("grouped_writes".into(), self.counters.grouped_requests.load(Ordering::Relaxed).to_string());
        Ok(stats)
    }

    async fn wait_for_commit(&self, after_position: u64, max_wait: Duration) -> Result<()> {
        self.signal.wait_past(after_position, max_wait).await;
        Ok(())
    }

    /// `Failed` when the writer thread stopped or its last batch failed (`rocksdb.writer`),
    /// or a point read fails (`rocksdb.read`); `Degraded` while RocksDB stops or slows
    /// writes for compaction (`rocksdb.writes`).
    async fn health(&self) -> Health {
        self.check_health()
    }
}
