//! The command bus: handlers registered by command type, checked at start-up, and the one
//! dispatch path every command takes (validate, idempotency, load, decide, append, retry,
//! cache, snapshot).

use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::sync::Arc;

use allframe_cqrs_core::{
    Aggregate, AppendResult, Codec, DynBackend, Error, Event, EventId, EventStore, EventStoreBackend, ExpectedVersion,
    Metadata, NewEvent, SnapshotPolicy, async_trait,
};

use crate::cache::AggregateCache;
use crate::command::{Command, CommandOptions, Outcome};
use crate::context::{Context, StateMap};
use crate::error::{DispatchError, RegistrationError};
#[cfg(feature = "json-schema")]
use crate::error::{ErasedRejection, ValidationErrors};
use crate::handler::{AggregateHandler, Handler};
use crate::idempotency;
use crate::table::Table;

type Store<E> = EventStore<E, dyn EventStoreBackend>;

/// The longest a retry waits for the winning append of a conflict to become readable.
const CONFLICT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs one command type's handler (the typed half of a registration).
#[async_trait]
trait Run<C: Command>: Send + Sync {
    async fn run(&self, bus: &Inner, command: &C, options: CommandOptions) -> Result<Outcome, DispatchError<C::Error>>;
}

/// Runs a command given by name as JSON (the erased half of a registration).
#[cfg(feature = "json-schema")]
#[async_trait]
trait RunJson: Send + Sync {
    async fn run_json(
        &self,
        bus: &Inner,
        json: serde_json::Value,
        options: CommandOptions,
    ) -> Result<Outcome, DispatchError<ErasedRejection>>;

    fn json_schema(&self) -> Option<serde_json::Value>;
}

/// One registered handler.
struct Registered {
    name: &'static str,
    command_type: &'static str,
    handler_type: &'static str,
    /// The shared services the handler needs.
    required_state: Vec<(TypeId, &'static str)>,
    /// An `Arc<dyn Run<C>>` for the command type `C` of the key it is stored under.
    typed: Box<dyn Any + Send + Sync>,
    #[cfg(feature = "json-schema")]
    json: Arc<dyn RunJson>,
}

/// Sends commands to their handlers over one store.
///
/// ```
/// use std::sync::Arc;
/// use allframe_cqrs_commands::{Command, CommandBus, DomainError, decide};
/// use allframe_cqrs_core::{Aggregate, Event};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// enum CounterEvent { Bumped { by: u32 } }
/// impl Event for CounterEvent {}
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Counter { total: u64 }
/// impl Aggregate for Counter {
///     type Event = CounterEvent;
///     fn apply(&mut self, CounterEvent::Bumped { by }: &CounterEvent) { self.total += u64::from(*by); }
/// }
///
/// #[derive(Debug, thiserror::Error, Serialize)]
/// #[error("too much")]
/// struct TooMuch;
/// impl DomainError for TooMuch {}
///
/// #[derive(Serialize, Deserialize)]
/// struct Bump { counter: String, by: u32 }
/// impl Command for Bump {
///     const NAME: &'static str = "Bump";
///     type Error = TooMuch;
///     fn stream_id(&self) -> String { format!("counter-{}", self.counter) }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let bus = CommandBus::builder(Arc::new(allframe_backend_memory::InMemoryBackend::new()))
///     .aggregate::<Bump, _>(decide(|counter: &Counter, bump: &Bump, _| {
///         if counter.total + u64::from(bump.by) > 10 { return Err(TooMuch) }
///         Ok(vec![CounterEvent::Bumped { by: bump.by }])
///     }))
///     .build()
///     .unwrap();
/// let outcome = bus.dispatch(Bump { counter: "a".into(), by: 4 }).await.unwrap();
/// assert_eq!((outcome.events, outcome.stream_version), (1, 1));
/// assert!(bus.dispatch(Bump { counter: "a".into(), by: 9 }).await.is_err());
/// # });
/// ```
#[derive(Clone)]
pub struct CommandBus {
    inner: Arc<Inner>,
}

struct Inner {
    backend: DynBackend,
    handlers: Table<TypeId, Registered>,
    by_name: Table<&'static str, TypeId>,
    state: Arc<StateMap>,
    codec: Codec,
    conflict_retries: u32,
    snapshot_policy: SnapshotPolicy,
    cache: Option<AggregateCache>,
}

impl std::fmt::Debug for CommandBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.inner.by_name.keys().collect();
        f.debug_struct("CommandBus")
            .field("backend", &self.inner.backend.name())
            .field("commands", &names)
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

/// Wires a [`CommandBus`]: handlers, shared state, settings. [`build`](Self::build) checks
/// the wiring (one handler per command type, one type per name).
pub struct CommandBusBuilder {
    backend: DynBackend,
    registered: Vec<(TypeId, Registered)>,
    state: StateMap,
    codec: Codec,
    conflict_retries: u32,
    snapshot_policy: SnapshotPolicy,
    cache: Option<AggregateCache>,
}

impl std::fmt::Debug for CommandBusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandBusBuilder").field("handlers", &self.registered.len()).finish_non_exhaustive()
    }
}

impl CommandBus {
    /// A builder for a bus over `backend` (any backend: `Arc::new(AllSourceBackend::open(dir)?)`).
    pub fn builder(backend: DynBackend) -> CommandBusBuilder {
        CommandBusBuilder {
            backend,
            registered: Vec::new(),
            state: StateMap::default(),
            codec: Codec::default(),
            conflict_retries: 3,
            snapshot_policy: SnapshotPolicy::Never,
            cache: None,
        }
    }

    /// Dispatches `command` to its handler.
    pub async fn dispatch<C: Command>(&self, command: C) -> Result<Outcome, DispatchError<C::Error>> {
        self.dispatch_with(command, CommandOptions::default()).await
    }

    /// Dispatches `command` with an idempotency key, ids and headers.
    pub async fn dispatch_with<C: Command>(
        &self,
        command: C,
        options: CommandOptions,
    ) -> Result<Outcome, DispatchError<C::Error>> {
        let Some(registered) = self.inner.handlers.get(&TypeId::of::<C>()) else {
            return Err(DispatchError::NoHandler { command: C::NAME });
        };
        let run = registered.typed.downcast_ref::<Arc<dyn Run<C>>>().expect("registered under its own type id");
        let span = tracing::debug_span!("allframe.dispatch", command = C::NAME);
        tracing::Instrument::instrument(run.run(&self.inner, &command, options), span).await
    }

    /// Dispatches the command named `name` from JSON, as an HTTP endpoint would: checked
    /// against the command's JSON Schema when it has one, decoded, validated and dispatched
    /// typed. The refusal, if any, comes back erased. Feature `json-schema`.
    #[cfg(feature = "json-schema")]
    pub async fn dispatch_json(
        &self,
        name: &str,
        json: serde_json::Value,
        options: CommandOptions,
    ) -> Result<Outcome, DispatchError<ErasedRejection>> {
        let registered = self
            .inner
            .by_name
            .get(name)
            .and_then(|id| self.inner.handlers.get(id))
            .ok_or_else(|| DispatchError::UnknownCommand { name: name.to_owned() })?;
        registered.json.run_json(&self.inner, json, options).await
    }

    /// The names of every registered command, sorted.
    pub fn commands(&self) -> Vec<&'static str> {
        self.inner.by_name.keys().collect()
    }

    /// The JSON Schema of the command named `name`, when its type provides one. Feature
    /// `json-schema`.
    #[cfg(feature = "json-schema")]
    pub fn json_schema(&self, name: &str) -> Option<serde_json::Value> {
        let id = self.inner.by_name.get(name)?;
        self.inner.handlers.get(id)?.json.json_schema()
    }

    /// The store the bus writes to.
    pub fn backend(&self) -> &DynBackend {
        &self.inner.backend
    }

    /// The aggregate cache's (hits, misses, entries), when the bus has one.
    pub fn cache_counters(&self) -> Option<(u64, u64, usize)> {
        self.inner.cache.as_ref().map(AggregateCache::counters)
    }
}

impl CommandBusBuilder {
    /// Registers the aggregate handler of command type `C`.
    pub fn aggregate<C: Command, H: AggregateHandler<C>>(self, handler: H) -> Self {
        let typed: Arc<dyn Run<C>> = Arc::new(AggregateRun { handler, _command: PhantomData });
        self.register::<C>(std::any::type_name::<H>(), H::required_state(), typed)
    }

    /// Registers the plain handler (no aggregate) of command type `C`.
    pub fn handler<C: Command, H: Handler<C>>(self, handler: H) -> Self {
        let typed: Arc<dyn Run<C>> = Arc::new(PlainRun { handler, _command: PhantomData });
        self.register::<C>(std::any::type_name::<H>(), H::required_state(), typed)
    }

    /// Registers every handler written with `#[command_handler]` in the program.
    pub fn discover(mut self) -> Self {
        for registration in inventory::iter::<crate::registry::Registration> {
            self = (registration.register)(self);
        }
        self
    }

    fn register<C: Command>(
        mut self,
        handler_type: &'static str,
        required_state: Vec<(TypeId, &'static str)>,
        typed: Arc<dyn Run<C>>,
    ) -> Self {
        let registered = Registered {
            #[cfg(feature = "json-schema")]
            json: Arc::new(JsonRun { typed: Arc::clone(&typed) }),
            name: C::NAME,
            command_type: std::any::type_name::<C>(),
            handler_type,
            required_state,
            typed: Box::new(typed),
        };
        self.registered.push((TypeId::of::<C>(), registered));
        self
    }

    /// Gives handlers a shared service of type `T` (`ctx.state::<T>()`, or a `State<T>`
    /// parameter of a `#[command_handler]` function).
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// [`state`](Self::state) for a service the caller keeps a handle to.
    pub fn shared_state<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.state.insert_shared(value);
        self
    }

    /// The codec of payloads and snapshots (default JSON; one store keeps one codec).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// How often a command is decided again after losing a race (default 3).
    pub fn conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// When aggregate handlers' commands save a snapshot (default never).
    pub fn snapshot_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshot_policy = policy;
        self
    }

    /// Keeps up to `capacity` aggregates in memory between commands (see the crate docs).
    pub fn aggregate_cache(mut self, capacity: usize) -> Self {
        // Made here, not in `build`: a program that never asks for a cache links none of it.
        self.cache = Some(AggregateCache::new(capacity));
        self
    }

    /// Checks the wiring and builds the bus.
    pub fn build(self) -> Result<CommandBus, RegistrationError> {
        let mut handlers: Table<TypeId, Registered> = Table::default();
        let mut by_name: Table<&'static str, TypeId> = Table::default();
        for (id, registered) in self.registered {
            if let Some(first) = handlers.get(&id) {
                return Err(RegistrationError::DuplicateHandler {
                    command: registered.name,
                    first: first.handler_type.to_owned(),
                    second: registered.handler_type.to_owned(),
                });
            }
            if let Some(other) = by_name.get(&registered.name).and_then(|other| handlers.get(other)) {
                return Err(RegistrationError::DuplicateName {
                    name: registered.name,
                    first: other.command_type,
                    second: registered.command_type,
                });
            }
            if let Some(&(_, type_name)) = registered.required_state.iter().find(|(id, _)| !self.state.contains(*id)) {
                return Err(RegistrationError::MissingState { command: registered.name, type_name });
            }
            by_name.insert(registered.name, id);
            handlers.insert(id, registered);
        }
        Ok(CommandBus {
            inner: Arc::new(Inner {
                backend: self.backend,
                handlers,
                by_name,
                state: Arc::new(self.state),
                codec: self.codec,
                conflict_retries: self.conflict_retries,
                snapshot_policy: self.snapshot_policy,
                cache: self.cache,
            }),
        })
    }
}

/// What every dispatch starts with: validation, ids, and the idempotency check.
struct Start {
    stream: String,
    command_id: EventId,
    correlation_id: EventId,
}

impl Start {
    /// The outcome of a dispatch that produced no events, on a stream at `version`.
    fn unchanged<C: Command>(&self, version: u64) -> Outcome {
        Outcome {
            command: C::NAME,
            command_id: self.command_id,
            stream_id: self.stream.clone(),
            events: 0,
            stream_version: version,
            first_position: 0,
            last_position: 0,
            replayed: false,
            conflict_retries: 0,
        }
    }

    /// The outcome of this dispatch's append.
    fn appended<C: Command>(&self, events: u64, result: &AppendResult, conflict_retries: u32) -> Outcome {
        Outcome {
            events,
            stream_version: result.stream_version,
            first_position: result.first_position,
            last_position: result.last_position,
            conflict_retries,
            ..self.unchanged::<C>(0)
        }
    }
}

impl Inner {
    /// Validates the command and gives the dispatch its ids.
    fn start<C: Command>(&self, command: &C, options: &CommandOptions) -> Result<Start, DispatchError<C::Error>> {
        command.validate().map_err(|errors| DispatchError::Invalid { command: C::NAME, errors })?;
        // A new id: `EventId::default()` is the nil id, not a new one.
        #[allow(clippy::unwrap_or_default)]
        let command_id = options.command_id.unwrap_or_else(EventId::new);
        let correlation_id = options.correlation_id.unwrap_or(command_id);
        Ok(Start { stream: command.stream_id(), command_id, correlation_id })
    }

    /// The outcome of an earlier dispatch with this dispatch's idempotency key, if it has one
    /// and there was one. Concurrent dispatches with one key may all decide: the store lets
    /// one append (its events have the key's ids), and the others find its outcome here.
    async fn recorded<C: Command>(
        &self,
        start: &Start,
        options: &CommandOptions,
    ) -> Result<Option<Outcome>, DispatchError<C::Error>> {
        match &options.idempotency_key {
            Some(key) => idempotency::recorded(&*self.backend, key, C::NAME, &start.stream).await,
            None => Ok(None),
        }
    }

    fn context<C: Command>(&self, start: &Start, options: &CommandOptions) -> Context {
        Context::new(C::NAME, start.command_id, start.correlation_id, Arc::clone(&self.state), options.headers.clone())
    }

    /// The events as records: the command's ids and headers, derived ids under a key.
    fn records<C: Command, E: Event>(
        &self,
        events: &[E],
        start: &Start,
        ctx: &Context,
        options: &CommandOptions,
    ) -> Result<Vec<NewEvent>, Error> {
        let headers = ctx.headers();
        let mut records = events
            .iter()
            .map(|event| {
                let event_type = event.event_type();
                let payload = self
                    .codec
                    .encode(event)
                    .map_err(|source| Error::Encode { event_type: event_type.to_owned(), source })?;
                let mut metadata = Metadata::new().with_causation_id(start.command_id);
                metadata.correlation_id = Some(start.correlation_id);
                if !headers.is_empty() {
                    metadata.headers = headers.clone();
                }
                allframe_cqrs_core::schema_version::stamp::<E>(&mut metadata);
                Ok(NewEvent { event_type: event_type.into(), payload: payload.into(), metadata })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if let Some(key) = &options.idempotency_key {
            idempotency::stamp(&mut records, key, C::NAME);
        }
        Ok(records)
    }

    /// A dispatch that produced no events: under a key its marker is recorded, so a retry
    /// answers the same.
    async fn nothing_to_append<C: Command>(
        &self,
        start: &Start,
        version: u64,
        options: &CommandOptions,
    ) -> Result<Outcome, DispatchError<C::Error>> {
        if let Some(key) = &options.idempotency_key {
            let marker = self.marker::<C>(start, version, key);
            let stored = (*self.backend).append(idempotency::RECORD_STREAM, ExpectedVersion::Any, vec![marker]).await;
            match stored {
                Ok(result) if !result.deduplicated => {}
                Ok(_) | Err(Error::DuplicateEventId { .. }) => return self.replay::<C>(key, &start.stream).await,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(start.unchanged::<C>(version))
    }

    /// The marker of a dispatch with idempotency `key` that produced no events.
    fn marker<C: Command>(&self, start: &Start, version: u64, key: &str) -> NewEvent {
        let mut metadata = Metadata::new().with_causation_id(start.command_id);
        metadata.correlation_id = Some(start.correlation_id);
        idempotency::marker(key, C::NAME, &start.stream, version, metadata)
    }

    /// The recorded outcome of an earlier dispatch with `key` that this one raced with.
    async fn replay<C: Command>(&self, key: &str, stream: &str) -> Result<Outcome, DispatchError<C::Error>> {
        match idempotency::recorded(&*self.backend, key, C::NAME, stream).await? {
            Some(outcome) => Ok(outcome),
            None => Err(Error::backend(
                self.backend.name(),
                true,
                "the events of an idempotency key were reported stored but are not found",
            )
            .into()),
        }
    }

    /// The aggregate's state and version: from the cache (with anything appended since
    /// applied on top), else from the store (snapshot plus events).
    async fn load<A: Aggregate>(&self, store: &Store<A::Event>, stream: &str) -> Result<(A, u64), Error> {
        if let Some((mut state, version)) = self.cache.as_ref().and_then(|cache| cache.take::<A>(stream)) {
            let version = store.apply_events(stream, version, &mut state).await?;
            return Ok((state, version));
        }
        let loaded = store.load_aggregate::<A>(stream).await?;
        Ok((loaded.state, loaded.version))
    }

    fn keep<A: Aggregate>(&self, stream: &str, state: A, version: u64) {
        if let Some(cache) = &self.cache {
            cache.put(stream, state, version);
        }
    }
}

/// An aggregate handler's dispatch.
struct AggregateRun<C, H> {
    handler: H,
    _command: PhantomData<fn() -> C>,
}

#[async_trait]
impl<C: Command, H: AggregateHandler<C>> Run<C> for AggregateRun<C, H> {
    async fn run(&self, bus: &Inner, command: &C, options: CommandOptions) -> Result<Outcome, DispatchError<C::Error>> {
        let start = bus.start(command, &options)?;
        let store: Store<<H::Aggregate as Aggregate>::Event> =
            EventStore::from_shared(Arc::clone(&bus.backend)).with_codec(bus.codec);
        let mut attempts = 0u32;
        // The last attempt's failure, answered only if no dispatch with the key has won.
        let mut failed = None;
        loop {
            // Before each attempt (and after the last one failed): a dispatch with the same
            // key may have won, whose outcome is the answer.
            if let Some(outcome) = bus.recorded::<C>(&start, &options).await? {
                return Ok(outcome);
            }
            if let Some(failure) = failed {
                return Err(failure);
            }
            attempts += 1;
            let (mut state, version) = bus.load::<H::Aggregate>(&store, &start.stream).await?;
            let ctx = bus.context::<C>(&start, &options);
            let events = match self.handler.handle(&state, command, &ctx).await {
                Ok(events) => events,
                Err(error) => {
                    bus.keep(&start.stream, state, version);
                    let rejected = DispatchError::Rejected { command: C::NAME, error };
                    if options.idempotency_key.is_none() {
                        return Err(rejected);
                    }
                    // The state may hold the events of a dispatch with the same key that won
                    // since the check above (a second `Open` is refused): its outcome answers.
                    failed = Some(rejected);
                    continue;
                }
            };
            // What this attempt appends: the events, to the command's stream at the version they
            // were decided from; or, for a keyed command that produced none, its marker.
            let (target, expected, records) = match (&options.idempotency_key, events.is_empty()) {
                (None, true) => {
                    bus.keep(&start.stream, state, version);
                    return Ok(start.unchanged::<C>(version));
                }
                (Some(key), true) => {
                    (idempotency::RECORD_STREAM, ExpectedVersion::Any, vec![bus.marker::<C>(&start, version, key)])
                }
                (_, false) => (
                    start.stream.as_str(),
                    ExpectedVersion::Exact(version),
                    bus.records::<C, _>(&events, &start, &ctx, &options)?,
                ),
            };
            let count = if events.is_empty() { 0 } else { records.len() as u64 };
            match (*bus.backend).append(target, expected, records).await {
                Ok(result) if result.deduplicated => {
                    let key = options.idempotency_key.as_deref().unwrap_or_default();
                    return bus.replay::<C>(key, &start.stream).await;
                }
                Ok(_) if count == 0 => {
                    bus.keep(&start.stream, state, version);
                    return Ok(start.unchanged::<C>(version));
                }
                Ok(result) => {
                    events.iter().for_each(|event| state.apply(event));
                    if bus.snapshot_policy.is_due(version, result.stream_version)
                        && let Err(error) = store.save_snapshot(&start.stream, &state, result.stream_version).await
                    {
                        tracing::warn!(stream = %start.stream, %error, "snapshot after command failed; events are stored");
                    }
                    bus.keep(&start.stream, state, result.stream_version);
                    return Ok(start.appended::<C>(count, &result, attempts - 1));
                }
                Err(Error::Conflict { actual, .. }) if attempts <= bus.conflict_retries => {
                    tracing::debug!(command = C::NAME, stream = %start.stream, attempts, "conflict; deciding again");
                    // The winner's events may still be committing: wait until they are readable.
                    allframe_cqrs_core::read::wait_for_version(&*bus.backend, &start.stream, actual, CONFLICT_WAIT)
                        .await?;
                }
                Err(error @ (Error::Conflict { .. } | Error::DuplicateEventId { .. })) => {
                    let failure = match error {
                        Error::Conflict { .. } => {
                            DispatchError::Conflict { command: C::NAME, stream: start.stream.clone(), attempts }
                        }
                        error => error.into(),
                    };
                    if options.idempotency_key.is_none() {
                        return Err(failure);
                    }
                    failed = Some(failure);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// A plain handler's dispatch.
struct PlainRun<C, H> {
    handler: H,
    _command: PhantomData<fn() -> C>,
}

#[async_trait]
impl<C: Command, H: Handler<C>> Run<C> for PlainRun<C, H> {
    async fn run(&self, bus: &Inner, command: &C, options: CommandOptions) -> Result<Outcome, DispatchError<C::Error>> {
        let start = bus.start(command, &options)?;
        if let Some(outcome) = bus.recorded::<C>(&start, &options).await? {
            return Ok(outcome);
        }
        let ctx = bus.context::<C>(&start, &options);
        let events = self
            .handler
            .handle(command, &ctx)
            .await
            .map_err(|error| DispatchError::Rejected { command: C::NAME, error })?;
        if events.is_empty() {
            let version = (*bus.backend).stream_version(&start.stream).await?;
            return bus.nothing_to_append::<C>(&start, version, &options).await;
        }
        let records = bus.records::<C, _>(&events, &start, &ctx, &options)?;
        let count = records.len() as u64;
        match (*bus.backend).append(&start.stream, ExpectedVersion::Any, records).await {
            Ok(result) if result.deduplicated => {
                bus.replay::<C>(options.idempotency_key.as_deref().unwrap_or_default(), &start.stream).await
            }
            Ok(result) => Ok(start.appended::<C>(count, &result, 0)),
            Err(Error::DuplicateEventId { .. }) if options.idempotency_key.is_some() => {
                bus.replay::<C>(options.idempotency_key.as_deref().unwrap_or_default(), &start.stream).await
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// By-name dispatch of one command type.
#[cfg(feature = "json-schema")]
struct JsonRun<C: Command> {
    typed: Arc<dyn Run<C>>,
}

#[cfg(feature = "json-schema")]
#[async_trait]
impl<C: Command> RunJson for JsonRun<C> {
    async fn run_json(
        &self,
        bus: &Inner,
        json: serde_json::Value,
        options: CommandOptions,
    ) -> Result<Outcome, DispatchError<ErasedRejection>> {
        crate::json::check_schema::<C>(&json).map_err(|errors| DispatchError::Invalid { command: C::NAME, errors })?;
        let command: C = serde_json::from_value(json).map_err(|error| DispatchError::Invalid {
            command: C::NAME,
            errors: ValidationErrors::single("", "type", error.to_string()),
        })?;
        self.typed.run(bus, &command, options).await.map_err(|error| error.map_rejection(|e| ErasedRejection::new(&e)))
    }

    fn json_schema(&self) -> Option<serde_json::Value> {
        C::json_schema()
    }
}
