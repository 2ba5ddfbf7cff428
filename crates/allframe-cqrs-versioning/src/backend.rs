//! The choke point: a backend whose reads pass every stored event through a [`Chain`], so a
//! typed store over it (and a command bus, subscriptions, projections and replays over that)
//! reads events of older schema versions as the current ones, on every read path. Writes and
//! everything else go to the inner backend unchanged; a store without upcasters has none of
//! this code.
//!
//! What the reads keep: a stream read never ends early because events were dropped or split
//! (pages are refilled; a longer page means more to read, as `allframe_cqrs_core::read`
//! expects); the parts of a split event share its version and position; a dropped event of
//! the whole log is read as an event of the library's stream [`DROPPED_STREAM`], which typed
//! readers pass over, so that positions still advance past it.

use std::sync::Arc;
use std::time::Duration;

use allframe_cqrs_core::retry::StoredAt;
use allframe_cqrs_core::{
    AppendResult, BackendStats, Capabilities, Codec, Error, EventId, EventStoreBackend, ExpectedVersion, NewEvent,
    RecordedEvent, Result, Snapshot, StreamId, async_trait, schema_version,
};

use crate::chain::Chain;

/// The stream a dropped event of the whole log is read under (a library stream: typed
/// readers skip it).
pub const DROPPED_STREAM: &str = "$allframe-dropped";

/// `inner`, read through `chain` (payloads in `codec`, the typed store's codec).
///
/// ```
/// # use std::sync::Arc;
/// # use allframe_backend_memory::InMemoryBackend;
/// # use allframe_cqrs_core::{Codec, Event, EventStore};
/// # use allframe_cqrs_versioning::{Upcasters, Upcasting};
/// # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
/// # enum Account { Deposited { cents: u64 } }
/// # impl Event for Account { const SCHEMA_VERSION: u32 = 2; }
/// let chain = Upcasters::<Account>::new().rename("MoneyDeposited", 1, "Deposited").build()?;
/// let backend = Upcasting::new(Arc::new(InMemoryBackend::new()), chain, Codec::Json);
/// let store: EventStore<Account, _> = EventStore::with_backend(backend);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Upcasting<B: ?Sized> {
    chain: Arc<Chain>,
    codec: Codec,
    inner: Arc<B>,
}

impl<B: EventStoreBackend + ?Sized> Upcasting<B> {
    /// Reads of `inner` through `chain`, for payloads in `codec`.
    pub fn new(inner: Arc<B>, chain: Chain, codec: Codec) -> Self {
        Upcasting { chain: Arc::new(chain), codec, inner }
    }

    /// The backend underneath.
    pub fn inner(&self) -> &Arc<B> {
        &self.inner
    }

    /// What `record` stands for now, when that differs from what is stored (`None`: read it
    /// as it is); a dropped event of the whole log as a [`DROPPED_STREAM`] placeholder when
    /// `placeholder` is set.
    fn upcast(&self, record: &RecordedEvent, placeholder: bool) -> Result<Option<Vec<RecordedEvent>>> {
        let upcasted = self.chain.upcast(record, self.codec).map_err(|source| Error::Decode {
            stream: record.stream_id.clone(),
            version: record.version,
            event_type: record.event_type.to_string(),
            source,
        })?;
        let Some(events) = upcasted else { return Ok(None) };
        if events.is_empty() && placeholder {
            return Ok(Some(vec![RecordedEvent { stream_id: StreamId::from(DROPPED_STREAM), ..record.clone() }]));
        }
        let records = events.into_iter().map(|(event_type, payload)| {
            // Each event's metadata is made from the stored one (not copied from a first one).
            let mut metadata = record.metadata.clone();
            metadata.headers.remove(schema_version::SCHEMA_VERSION_HEADER);
            if self.chain.current_version() != 1 {
                let current = self.chain.current_version().to_string();
                metadata.headers.insert(schema_version::SCHEMA_VERSION_HEADER.to_owned(), current);
            }
            RecordedEvent {
                stream_id: record.stream_id.clone(),
                version: record.version,
                position: record.position,
                event_type,
                payload: payload.into(),
                metadata,
            }
        });
        Ok(Some(records.collect()))
    }

    fn expand(&self, record: RecordedEvent, placeholder: bool, out: &mut Vec<RecordedEvent>) -> Result<()> {
        match self.upcast(&record, placeholder)? {
            None => out.push(record),
            Some(records) => out.extend(records),
        }
        Ok(())
    }

    fn expand_all(&self, records: Vec<RecordedEvent>, placeholder: bool) -> Result<Vec<RecordedEvent>> {
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            self.expand(record, placeholder, &mut out)?;
        }
        Ok(out)
    }
}

#[async_trait]
impl<B: EventStoreBackend + ?Sized> EventStoreBackend for Upcasting<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult> {
        self.inner.append(stream, expected, events).await
    }

    /// At least `limit` events when the stream has them: a page shortened by dropped events
    /// is refilled from the next ones.
    async fn read_stream(&self, stream: &str, after_version: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let mut out = Vec::new();
        let mut after = after_version;
        loop {
            let page = self.inner.read_stream(stream, after, limit).await?;
            let full = page.len() == limit;
            let Some(last) = page.last().map(|record| record.version) else { return Ok(out) };
            for record in page {
                self.expand(record, false, &mut out)?;
            }
            if out.len() >= limit || !full {
                return Ok(out);
            }
            after = last;
        }
    }

    /// Visits what each stored event stands for; returns how many stored events were read,
    /// which is what callers page by.
    async fn visit_stream(
        &self,
        stream: &str,
        after_version: u64,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<usize> {
        let mut each = |record: &RecordedEvent| match self.upcast(record, false)? {
            None => visit(record),
            Some(records) => records.iter().try_for_each(&mut *visit),
        };
        self.inner.visit_stream(stream, after_version, limit, &mut each).await
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let page = self.inner.read_all(after_position, limit).await?;
        self.expand_all(page, true)
    }

    async fn stream_version(&self, stream: &str) -> Result<u64> {
        self.inner.stream_version(stream).await
    }

    async fn head_position(&self) -> Result<u64> {
        self.inner.head_position().await
    }

    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>> {
        self.inner.list_streams(after, limit).await
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()> {
        self.inner.save_snapshot(stream, snapshot).await
    }

    async fn get_latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        self.inner.get_latest_snapshot(stream).await
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }

    async fn stats(&self) -> Result<BackendStats> {
        self.inner.stats().await
    }

    /// The inner store's own answer (a poisoned writer, a backlog), not the default check of
    /// the head position; through `Metered`, that answer also sets the health gauge.
    async fn health(&self) -> allframe_cqrs_core::Health {
        self.inner.health().await
    }

    async fn wait_for_commit(&self, after_position: u64, max_wait: Duration) -> Result<()> {
        self.inner.wait_for_commit(after_position, max_wait).await
    }

    async fn get_events(&self, stream: &str) -> Result<Vec<RecordedEvent>> {
        self.get_events_after(stream, 0).await
    }

    async fn get_events_after(&self, stream: &str, version: u64) -> Result<Vec<RecordedEvent>> {
        let records = self.inner.get_events_after(stream, version).await?;
        self.expand_all(records, false)
    }

    async fn get_all_events(&self) -> Result<Vec<RecordedEvent>> {
        let records = self.inner.get_all_events().await?;
        self.expand_all(records, true)
    }

    async fn find_event(&self, id: EventId) -> Result<Option<StoredAt>> {
        self.inner.find_event(id).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()> {
        self.inner.save_checkpoint(name, expected, position).await
    }
}
