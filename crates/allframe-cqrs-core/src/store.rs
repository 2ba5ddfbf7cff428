//! The typed [`EventStore`]: encodes events, decodes them, loads aggregates, feeds projections.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::backend::EventStoreBackend;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::event::{Aggregate, Envelope, Event, EventData, Projection};
use crate::read;
use crate::subscription::{RawSubscription, StartFrom, Subscription, SubscriptionOptions};
use crate::types::{AppendResult, BackendStats, ExpectedVersion, NewEvent, RecordedEvent, Snapshot};

/// The longest a command retry waits for the winning append of a conflict to be readable.
pub(crate) const CONFLICT_WAIT: Duration = Duration::from_secs(5);

/// When [`EventStore::execute`] saves a snapshot of the aggregate it just changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotPolicy {
    /// Never automatically (snapshots can still be saved with [`EventStore::save_snapshot`]).
    #[default]
    Never,
    /// Each time the stream's version crosses a multiple of N.
    EveryNEvents(u64),
}

impl SnapshotPolicy {
    /// Whether going from `old_version` to `new_version` calls for a snapshot.
    pub fn is_due(self, old_version: u64, new_version: u64) -> bool {
        match self {
            SnapshotPolicy::Never => false,
            SnapshotPolicy::EveryNEvents(0) => false,
            SnapshotPolicy::EveryNEvents(n) => old_version / n != new_version / n,
        }
    }
}

/// An aggregate's state and the stream version it includes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadedAggregate<A> {
    /// The state after applying every event up to `version`.
    pub state: A,
    /// The stream's version (0 when the stream does not exist). Append with
    /// `ExpectedVersion::Exact(version)` to detect concurrent changes.
    pub version: u64,
    /// The version of the snapshot the state started from, if one was used.
    pub snapshot_version: Option<u64>,
}

/// The failure of [`EventStore::execute`]: the command was refused, or the store failed.
#[derive(Debug)]
pub enum CommandError<R> {
    /// The aggregate refused the command (a business rule).
    Rejected(R),
    /// The store failed, or conflicts went on after every retry.
    Store(Error),
}

impl<R: fmt::Display> fmt::Display for CommandError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Rejected(reason) => write!(f, "command rejected: {reason}"),
            CommandError::Store(error) => write!(f, "store error: {error}"),
        }
    }
}

impl<R: fmt::Debug + fmt::Display> std::error::Error for CommandError<R> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CommandError::Rejected(_) => None,
            CommandError::Store(error) => Some(error),
        }
    }
}

impl<R> From<Error> for CommandError<R> {
    fn from(error: Error) -> Self {
        CommandError::Store(error)
    }
}

/// A handle to a task started by [`EventStore::subscribe`].
///
/// Dropping the handle leaves the task running until its receiver is dropped;
/// [`SubscriptionHandle::stop`] ends it at once.
#[derive(Debug)]
pub struct SubscriptionHandle {
    task: tokio::task::JoinHandle<()>,
    stopped_on: Arc<std::sync::OnceLock<Error>>,
}

impl SubscriptionHandle {
    /// Stops the subscription task.
    pub fn stop(self) {
        self.task.abort();
    }

    /// Whether the task has ended (its receiver was dropped, it was stopped, or it stopped at
    /// an event it could not decode under [`Undecodable::Stop`]).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The decoding error the task stopped at, under [`Undecodable::Stop`].
    pub fn stopped_on(&self) -> Option<&Error> {
        self.stopped_on.get()
    }
}

/// What [`EventStore::subscribe_with_policy`] does with an event it cannot decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undecodable {
    /// Log it (a warning with its position) and go on: the seed's `subscribe`.
    Skip,
    /// End the subscription there: the receiver sees the channel close, and
    /// [`SubscriptionHandle::stopped_on`] says why. Nothing after the event is sent.
    Stop,
}

/// The typed event store: one API over any [`EventStoreBackend`].
///
/// It encodes events with its [`Codec`] (JSON by default) and hands the backend bytes, so
/// the backend is compiled once for every event type. Cloning is cheap and shares the backend.
///
/// With the memory backend, `EventStore::new()` is available through the
/// `InMemoryEventStore` trait of `allframe-backend-memory` (in `allframe::prelude`).
pub struct EventStore<E, B: ?Sized> {
    backend: Arc<B>,
    codec: Codec,
    snapshot_policy: SnapshotPolicy,
    max_conflict_retries: u32,
    _event: PhantomData<fn() -> E>,
}

impl<E, B: ?Sized> Clone for EventStore<E, B> {
    fn clone(&self) -> Self {
        EventStore {
            backend: Arc::clone(&self.backend),
            codec: self.codec,
            snapshot_policy: self.snapshot_policy,
            max_conflict_retries: self.max_conflict_retries,
            _event: PhantomData,
        }
    }
}

impl<E, B: ?Sized> fmt::Debug for EventStore<E, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStore")
            .field("event", &std::any::type_name::<E>())
            .field("codec", &self.codec)
            .field("snapshot_policy", &self.snapshot_policy)
            .finish_non_exhaustive()
    }
}

impl<E: Event, B: EventStoreBackend> EventStore<E, B> {
    /// A store over `backend`.
    pub fn with_backend(backend: B) -> Self {
        Self::from_shared(Arc::new(backend))
    }
}

impl<E: Event, B: EventStoreBackend + ?Sized> EventStore<E, B> {
    /// A store over a backend that is already shared (for example `Arc<dyn EventStoreBackend>`
    /// coerced, or one backend used by stores of several event types).
    pub fn from_shared(backend: Arc<B>) -> Self {
        EventStore {
            backend,
            codec: Codec::default(),
            snapshot_policy: SnapshotPolicy::default(),
            max_conflict_retries: 3,
            _event: PhantomData,
        }
    }

    /// Uses another codec for payloads and snapshots.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Sets when [`EventStore::execute`] saves snapshots.
    pub fn with_snapshot_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshot_policy = policy;
        self
    }

    /// Sets how often [`EventStore::execute`] reloads and retries after a conflict (default 3).
    pub fn with_conflict_retries(mut self, retries: u32) -> Self {
        self.max_conflict_retries = retries;
        self
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, shared.
    pub fn shared_backend(&self) -> Arc<B> {
        Arc::clone(&self.backend)
    }

    /// The codec in use.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Decodes one stored event (its type checked against [`Event::EVENT_TYPES`], then its
    /// payload), borrowing the record: for code that reads the backend itself, as the
    /// projection runners do, and decodes only the records it wants.
    pub fn decode_event(&self, record: &RecordedEvent) -> Result<E> {
        decode_event(self.codec, record)
    }

    /// Appends events to a stream without a version check (the seed's `append`).
    pub async fn append(&self, stream: &str, events: Vec<E>) -> Result<AppendResult> {
        self.append_expected(stream, ExpectedVersion::Any, events).await
    }

    /// Appends events if the stream is at `expected`; otherwise fails with [`Error::Conflict`].
    pub async fn append_expected(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<E>,
    ) -> Result<AppendResult> {
        let records =
            events.iter().map(|event| self.encode(event, crate::types::Metadata::new())).collect::<Result<Vec<_>>>()?;
        self.append_raw(stream, expected, records).await
    }

    /// Appends events with their metadata (event ids for idempotent retries, correlation ids, headers).
    pub async fn append_with_metadata(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData<E>>,
    ) -> Result<AppendResult> {
        let records =
            events.into_iter().map(|data| self.encode(&data.event, data.metadata)).collect::<Result<Vec<_>>>()?;
        self.append_raw(stream, expected, records).await
    }

    async fn append_raw(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        records: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let span =
            tracing::debug_span!("allframe.append", backend = self.backend.name(), stream, events = records.len());
        self.backend().append(stream, expected, records).instrument(span).await
    }

    fn encode(&self, event: &E, mut metadata: crate::types::Metadata) -> Result<NewEvent> {
        crate::schema_version::stamp::<E>(&mut metadata);
        let event_type = event.event_type();
        let payload =
            self.codec.encode(event).map_err(|source| Error::Encode { event_type: event_type.to_owned(), source })?;
        Ok(NewEvent { event_type: event_type.into(), payload: Bytes::from(payload), metadata })
    }

    /// All events of a stream (the seed's `get_events`).
    pub async fn get_events(&self, stream: &str) -> Result<Vec<E>> {
        self.get_events_after(stream, 0).await
    }

    /// Events of a stream after `version` (the seed's `get_events_after`).
    pub async fn get_events_after(&self, stream: &str, version: u64) -> Result<Vec<E>> {
        let span = tracing::debug_span!("allframe.read_stream", backend = self.backend.name(), stream, after = version);
        let records = self.backend().get_events_after(stream, version).instrument(span).await?;
        records.into_iter().map(|r| decode_envelope(self.codec, r).map(|e| e.event)).collect()
    }

    /// Every event of the store in global order (the seed's `get_all_events`; for small stores,
    /// see [`EventStore::stream_all`] for large ones), without the library's own streams.
    pub async fn get_all_events(&self) -> Result<Vec<E>> {
        let span = tracing::debug_span!("allframe.read_all", backend = self.backend.name());
        let records = self.backend().get_all_events().instrument(span).await?;
        records
            .into_iter()
            .filter(|r| !crate::types::is_system_stream(&r.stream_id))
            .map(|r| decode_envelope(self.codec, r).map(|e| e.event))
            .collect()
    }

    /// One page of a stream's events with their versions, positions and metadata.
    pub async fn read_stream(&self, stream: &str, after_version: u64, limit: usize) -> Result<Vec<Envelope<E>>> {
        let span = tracing::debug_span!(
            "allframe.read_stream",
            backend = self.backend.name(),
            stream,
            after = after_version,
            limit
        );
        let records = self.backend().read_stream(stream, after_version, limit).instrument(span).await?;
        records.into_iter().map(|r| decode_envelope(self.codec, r)).collect()
    }

    /// A stream's events after `after_version`, streamed page by page.
    pub fn stream_events<'a>(
        &'a self,
        stream: &'a str,
        after_version: u64,
    ) -> impl Stream<Item = Result<Envelope<E>>> + Send + 'a {
        let codec = self.codec;
        read::stream_events(&*self.backend, stream, after_version, crate::backend::DEFAULT_PAGE_SIZE)
            .map(move |r| r.and_then(|record| decode_envelope(codec, record)))
    }

    /// The whole log after `after_position`, streamed page by page (bounded memory). The
    /// library's own streams ([`SYSTEM_STREAM_PREFIX`](crate::SYSTEM_STREAM_PREFIX)) are skipped.
    pub fn stream_all(&self, after_position: u64) -> impl Stream<Item = Result<Envelope<E>>> + Send + '_ {
        let codec = self.codec;
        read::all_events(&*self.backend, after_position, crate::backend::DEFAULT_PAGE_SIZE)
            .filter(|r| {
                let skip = r.as_ref().is_ok_and(|record| crate::types::is_system_stream(&record.stream_id));
                std::future::ready(!skip)
            })
            .map(move |r| r.and_then(|record| decode_envelope(codec, record)))
    }

    /// A catch-up subscription to the whole log from `from`: committed events in global
    /// order, then new ones as they are committed.
    pub async fn subscribe_from(&self, from: StartFrom) -> Result<Subscription<E, B>> {
        self.subscribe_with(from, SubscriptionOptions::default()).await
    }

    /// [`EventStore::subscribe_from`] with explicit options.
    pub async fn subscribe_with(&self, from: StartFrom, options: SubscriptionOptions) -> Result<Subscription<E, B>> {
        let raw = RawSubscription::start(Arc::clone(&self.backend), from, options).await?;
        Ok(Subscription::new(raw, self.codec))
    }

    /// Sends every event committed from now on to `tx`, from a background task (the seed's
    /// `subscribe`). The task ends when the receiver is dropped.
    ///
    /// Events are sent after they are committed, in global order. A slow receiver only
    /// delays its own task; appends never wait for it. Transient read errors are retried;
    /// an event that does not decode is logged and skipped ([`Undecodable::Skip`]; choose with
    /// [`subscribe_with_policy`](Self::subscribe_with_policy), or run a projection, whose
    /// failure policy never lets one pass unrecorded).
    pub async fn subscribe(&self, tx: mpsc::Sender<E>) -> Result<SubscriptionHandle> {
        self.subscribe_with_policy(tx, Undecodable::Skip).await
    }

    /// [`subscribe`](Self::subscribe), with what to do with an event that does not decode.
    pub async fn subscribe_with_policy(
        &self,
        tx: mpsc::Sender<E>,
        undecodable: Undecodable,
    ) -> Result<SubscriptionHandle> {
        let mut subscription = self.subscribe_from(StartFrom::End).await?;
        let backend = self.backend.name();
        let stopped_on = Arc::new(std::sync::OnceLock::new());
        let stop = Arc::clone(&stopped_on);
        let task = tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = subscription.next() => next,
                    () = tx.closed() => return,
                };
                match next {
                    Ok(envelope) => {
                        if tx.send(envelope.event).await.is_err() {
                            return;
                        }
                    }
                    Err(error @ (Error::Decode { .. } | Error::UnknownEventType { .. })) => {
                        let position = subscription.checkpoint();
                        if undecodable == Undecodable::Stop {
                            tracing::error!(backend, position, %error, "subscription stopped at an event it cannot decode");
                            let _ = stop.set(error);
                            return;
                        }
                        tracing::warn!(backend, position, %error, "subscription skipped an event it cannot decode");
                    }
                    Err(error) => {
                        tracing::warn!(backend, %error, "subscription read failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(SubscriptionHandle { task, stopped_on })
    }

    /// Applies every event after `after_position` to `projection`, up to the current head, and
    /// returns the new checkpoint (the last position applied, or `after_position`).
    pub async fn project<P: Projection<E>>(&self, projection: &mut P, after_position: u64) -> Result<u64> {
        let span = tracing::debug_span!("allframe.project", backend = self.backend.name(), after = after_position);
        async {
            let mut checkpoint = after_position;
            let stream = self.stream_all(after_position);
            futures_util::pin_mut!(stream);
            while let Some(envelope) = stream.next().await {
                let envelope = envelope?;
                checkpoint = envelope.position;
                projection.apply(&envelope);
            }
            Ok(checkpoint)
        }
        .instrument(span)
        .await
    }

    /// Loads an aggregate: the latest snapshot, if any, plus the events after it.
    pub async fn load_aggregate<A: Aggregate<Event = E>>(&self, stream: &str) -> Result<LoadedAggregate<A>> {
        let span = tracing::debug_span!("allframe.load_aggregate", backend = self.backend.name(), stream);
        async {
            let mut loaded = LoadedAggregate { state: A::default(), version: 0, snapshot_version: None };
            let snapshot = if self.backend.capabilities().snapshots {
                self.backend().get_latest_snapshot(stream).await?
            } else {
                None
            };
            if let Some(snapshot) = snapshot {
                if A::SCHEMA_VERSION == 1 {
                    loaded.state = self.codec.decode(&snapshot.payload).map_err(|source| Error::Decode {
                        stream: stream.into(),
                        version: snapshot.version,
                        event_type: format!("snapshot of {}", std::any::type_name::<A>()),
                        source,
                    })?;
                    loaded.version = snapshot.version;
                    loaded.snapshot_version = Some(snapshot.version);
                } else {
                    match self.codec.decode::<VersionedState<A>>(&snapshot.payload) {
                        Ok(versioned)
                            if versioned.magic == SNAPSHOT_MAGIC && versioned.version == A::SCHEMA_VERSION =>
                        {
                            loaded.state = versioned.state;
                            loaded.version = snapshot.version;
                            loaded.snapshot_version = Some(snapshot.version);
                        }
                        // Taken under another schema version of the state: rebuilt from events.
                        _ => tracing::debug!(
                            stream,
                            version = snapshot.version,
                            "snapshot of another schema version ignored"
                        ),
                    }
                }
            }
            loaded.version = self.apply_events(stream, loaded.version, &mut loaded.state).await?;
            Ok(loaded)
        }
        .instrument(span)
        .await
    }

    /// Applies the events of `stream` after `after_version` to `state`, page by page, and
    /// returns the version of the last one (`after_version` when there is none): the fold
    /// behind [`EventStore::load_aggregate`], for callers that hold a state already (an
    /// aggregate cache catching up).
    ///
    /// Each stored event is decoded where the backend holds it
    /// ([`EventStoreBackend::visit_stream`]): no page of copies, no [`Envelope`].
    pub async fn apply_events<A: Aggregate<Event = E>>(
        &self,
        stream: &str,
        after_version: u64,
        state: &mut A,
    ) -> Result<u64> {
        let codec = self.codec;
        let page = crate::backend::DEFAULT_PAGE_SIZE;
        let mut version = after_version;
        loop {
            let after = version;
            let mut visit = |record: &RecordedEvent| {
                state.apply(&decode_event::<E>(codec, record)?);
                version = record.version;
                Ok(())
            };
            let visited = self.backend().visit_stream(stream, after, page, &mut visit).await?;
            if visited < page {
                return Ok(version);
            }
        }
    }

    /// Saves a snapshot of an aggregate's state at `version`.
    pub async fn save_snapshot<A: Aggregate<Event = E>>(&self, stream: &str, state: &A, version: u64) -> Result<()> {
        let encoded = if A::SCHEMA_VERSION == 1 {
            self.codec.encode(state)
        } else {
            let versioned = VersionedState { magic: SNAPSHOT_MAGIC, version: A::SCHEMA_VERSION, state };
            self.codec.encode(&versioned)
        };
        let payload = encoded.map_err(|source| Error::Encode {
            event_type: format!("snapshot of {}", std::any::type_name::<A>()),
            source,
        })?;
        let span = tracing::debug_span!("allframe.save_snapshot", backend = self.backend.name(), stream, version);
        self.backend().save_snapshot(stream, Snapshot::new(version, payload)).instrument(span).await
    }

    /// Runs a command against an aggregate: loads it, asks `decide` for new events, and appends
    /// them expecting the version it loaded. On a conflict it reloads and decides again, up to
    /// the configured number of retries. Saves a snapshot when the [`SnapshotPolicy`] says so.
    pub async fn execute<A, F, R>(&self, stream: &str, mut decide: F) -> Result<AppendResult, CommandError<R>>
    where
        A: Aggregate<Event = E>,
        F: FnMut(&A) -> Result<Vec<E>, R>,
    {
        let mut attempt = 0;
        loop {
            let loaded = self.load_aggregate::<A>(stream).await?;
            let events = decide(&loaded.state).map_err(CommandError::Rejected)?;
            let new_state_events =
                if self.snapshot_policy == SnapshotPolicy::Never { Vec::new() } else { events.clone() };
            match self.append_expected(stream, ExpectedVersion::Exact(loaded.version), events).await {
                Ok(result) => {
                    if self.snapshot_policy.is_due(loaded.version, result.stream_version) {
                        let mut state = loaded.state;
                        new_state_events.iter().for_each(|event| state.apply(event));
                        if let Err(error) = self.save_snapshot(stream, &state, result.stream_version).await {
                            tracing::warn!(stream, %error, "snapshot after command failed; events are stored");
                        }
                    }
                    return Ok(result);
                }
                Err(Error::Conflict { actual, .. }) if attempt < self.max_conflict_retries => {
                    attempt += 1;
                    tracing::debug!(stream, attempt, "conflict; reloading and deciding again");
                    // The winner's events may still be committing: wait until they are readable.
                    read::wait_for_version(&*self.backend, stream, actual, CONFLICT_WAIT).await?;
                }
                Err(error) => return Err(CommandError::Store(error)),
            }
        }
    }

    /// Makes every acknowledged append durable now.
    pub async fn flush(&self) -> Result<()> {
        let span = tracing::debug_span!("allframe.flush", backend = self.backend.name());
        self.backend().flush().instrument(span).await
    }

    /// Whether the store can serve, and what needs a person (the backend's checks; see
    /// [`Health`](crate::Health)).
    pub async fn health(&self) -> crate::Health {
        self.backend.health().await
    }

    /// The backend's counters and facts.
    pub async fn stats(&self) -> Result<BackendStats> {
        let span = tracing::debug_span!("allframe.stats", backend = self.backend.name());
        self.backend().stats().instrument(span).await
    }
}

/// Decodes one stored event into an [`Envelope`].
pub(crate) fn decode_envelope<E: Event>(codec: Codec, record: RecordedEvent) -> Result<Envelope<E>> {
    let event = decode_event(codec, &record)?;
    Ok(Envelope {
        stream_id: record.stream_id,
        version: record.version,
        position: record.position,
        event,
        metadata: record.metadata,
    })
}

/// Decodes the event of one stored record, which is only borrowed: its type is checked
/// against [`Event::EVENT_TYPES`], then its payload decoded. Nothing else is copied.
pub(crate) fn decode_event<E: Event>(codec: Codec, record: &RecordedEvent) -> Result<E> {
    if !E::EVENT_TYPES.is_empty() && !E::EVENT_TYPES.contains(&&*record.event_type) {
        return Err(Error::UnknownEventType {
            stream: record.stream_id.clone(),
            version: record.version,
            event_type: record.event_type.to_string(),
        });
    }
    codec.decode::<E>(&record.payload).map_err(|source| Error::Decode {
        stream: record.stream_id.clone(),
        version: record.version,
        event_type: record.event_type.to_string(),
        source,
    })
}

/// Marks a snapshot that records its state's schema version ("AFSV"): with postcard, whose
/// fields have no names, an older snapshot would have to start with these bytes and the same
/// version to be taken for one.
const SNAPSHOT_MAGIC: [u8; 4] = *b"AFSV";

/// A snapshot of a state whose schema version is above 1 ([`Aggregate::SCHEMA_VERSION`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct VersionedState<T> {
    #[serde(rename = "allframe.snapshot")]
    magic: [u8; 4],
    #[serde(rename = "allframe.schema_version")]
    version: u32,
    state: T,
}
