//! [`SagaOrchestrator`]: starts instances, runs them, and shows them.
//!
//! A running orchestrator tails the store's log for its sagas' records: an instance that began
//! (or was resumed by an operator, or received an event) and has not finished gets a driver
//! task, which runs it to its end or to its next wait. On start it finds the unfinished
//! instances from their streams' last records, so instances that a crash interrupted, and
//! timeouts that passed while no process ran, are picked up. Starting an instance is an append to its stream expecting none, so an id
//! is started once, from any process; running it is the business of the one orchestrator that
//! holds the sagas' lease.
//!
//! The same tail routes events to sagas (the router, `route.rs`): for each saga that starts on
//! events or is a choreography, events after its router's checkpoint are mapped to instances,
//! and each is begun or given the event (a `Received` record whose id derives from the
//! instance and the event's position, so routing twice after a crash stores it once). The
//! checkpoint moves past a page once every event of it is routed: at-least-once routing,
//! deduplicated by the store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use allframe_cqrs_commands::CommandBus;
use allframe_cqrs_core::{Codec, DynBackend, Error, ExpectedVersion, Leases, RecordedEvent};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore, watch};

use crate::census::Census;
use crate::choreography::{Choreography, Reactor, Typed};
use crate::definition::{SagaDefinition, valid_name};
use crate::error::SagaError;
use crate::metrics::SagaMetrics;
use crate::progress::{Progress, SagaState};
use crate::record::{Record, Trigger, instance_of, stream_of};
use crate::route::{Routed, Router};
use crate::{driver, inspect, reactions};

/// The runners of this process, by (store address, saga name): one per saga per store.
static RUNNING: Mutex<BTreeSet<(usize, String)>> = Mutex::new(BTreeSet::new());

/// A saga of an orchestrator: ordered steps, or reactions.
#[derive(Clone)]
enum Kind {
    Steps(SagaDefinition),
    Reactions(Arc<dyn Reactor>),
}

impl Kind {
    fn router(&self) -> Option<(Router, bool)> {
        match self {
            Kind::Steps(saga) => saga.router.clone().map(|router| (router, false)),
            Kind::Reactions(reactor) => Some((reactor.router(), reactor.reads_history())),
        }
    }
}

/// What a saga's router has done since this orchestrator started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStatus {
    /// The saga.
    pub saga: String,
    /// The log position through which every event was routed (the router's checkpoint).
    pub position: u64,
    /// Events routed to an instance (instances begun included).
    pub routed: u64,
    /// Events that continue an instance that does not exist (passed over).
    pub uncorrelated: u64,
    /// Events passed over because their instance had finished, or (for a saga that starts on
    /// events) had been begun already.
    pub passed_over: u64,
    /// Why the router stopped, if it did: an event of the saga's that does not decode, an
    /// instance id that cannot be one, a router that panicked. It stays at that event, so
    /// nothing after it is skipped unseen; fix the cause and start the orchestrator again.
    pub stopped: Option<String>,
}

/// What the drivers share.
pub(crate) struct Inner {
    pub(crate) backend: DynBackend,
    pub(crate) bus: CommandBus,
    pub(crate) codec: Codec,
    pub(crate) permits: Semaphore,
    pub(crate) stopped: watch::Sender<bool>,
    sagas: BTreeMap<String, Kind>,
    leases: Option<Arc<dyn Leases>>,
    /// Instances with a driver task now, and how to wake each.
    driving: Mutex<BTreeMap<(String, String), Arc<Notify>>>,
    /// This runner's entries in [`RUNNING`].
    claimed: Mutex<Vec<(usize, String)>>,
    /// The routers' figures, by saga.
    pub(crate) routers: Mutex<BTreeMap<String, RouterStatus>>,
    /// The sagas' metrics (empty without the `metrics` feature).
    pub(crate) metrics: Arc<SagaMetrics>,
    /// The instances by state, as the drivers saw them.
    pub(crate) census: Census,
}

impl Inner {
    /// The names of the sagas, in order.
    pub(crate) fn saga_names(&self) -> impl Iterator<Item = &str> {
        self.sagas.keys().map(String::as_str)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        for claim in self.claimed.get_mut().unwrap_or_else(PoisonError::into_inner).drain(..) {
            running.remove(&claim);
        }
    }
}

/// Runs sagas over one store and one command bus.
#[derive(Clone)]
pub struct SagaOrchestrator {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SagaOrchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaOrchestrator").field("sagas", &self.inner.sagas.keys().collect::<Vec<_>>()).finish()
    }
}

/// Wires a [`SagaOrchestrator`].
pub struct SagaOrchestratorBuilder {
    bus: CommandBus,
    sagas: Vec<(String, Kind)>,
    leases: Option<Arc<dyn Leases>>,
    concurrency: usize,
    codec: Codec,
}

impl std::fmt::Debug for SagaOrchestratorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.sagas.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("SagaOrchestratorBuilder").field("sagas", &names).finish_non_exhaustive()
    }
}

impl SagaOrchestratorBuilder {
    /// Adds a saga written as ordered steps.
    pub fn saga(mut self, saga: SagaDefinition) -> Self {
        self.sagas.push((saga.name.to_string(), Kind::Steps(saga)));
        self
    }

    /// Adds a saga written as reactions to events.
    pub fn choreography<C: Choreography>(mut self, choreography: C) -> Self {
        self.sagas.push((C::NAME.to_owned(), Kind::Reactions(Arc::new(Typed(Arc::new(choreography))))));
        self
    }

    /// The codec the application's events are stored with, for the routers to decode them
    /// (default JSON, the command bus's default).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Runs the sagas in one process among all those on the store: the one holding the
    /// backend's lease (PostgreSQL: `backend.leases()`); the others stand by and take over when
    /// it dies.
    pub fn with_leases(mut self, leases: Arc<dyn Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// How many steps run at once (default 64); instances waiting hold no slot.
    pub fn max_concurrent_steps(mut self, steps: usize) -> Self {
        self.concurrency = steps.max(1);
        self
    }

    /// Checks the wiring.
    ///
    /// # Errors
    ///
    /// [`SagaError::DuplicateSaga`] (sagas and choreographies share one namespace: their
    /// instances' streams), [`SagaError::Definition`] for a choreography's name.
    pub fn build(self) -> Result<SagaOrchestrator, SagaError> {
        let mut sagas = BTreeMap::new();
        for (name, saga) in self.sagas {
            if !valid_name(&name) {
                return Err(SagaError::Definition {
                    saga: name,
                    problem: "the name must be 1 to 64 letters, digits, `-`, `_` or `.`".into(),
                });
            }
            if sagas.insert(name.clone(), saga).is_some() {
                return Err(SagaError::DuplicateSaga(name));
            }
        }
        let metrics = Arc::new(SagaMetrics::register(sagas.keys().map(String::as_str)));
        let inner = Inner {
            census: Census::new(Arc::clone(&metrics)),
            metrics,
            backend: self.bus.backend().clone(),
            bus: self.bus,
            codec: self.codec,
            permits: Semaphore::new(self.concurrency),
            stopped: watch::Sender::new(false),
            sagas,
            leases: self.leases,
            driving: Mutex::new(BTreeMap::new()),
            claimed: Mutex::new(Vec::new()),
            routers: Mutex::new(BTreeMap::new()),
        };
        Ok(SagaOrchestrator { inner: Arc::new(inner) })
    }
}

/// An instance id goes into a stream id and idempotency keys.
fn check_id(id: &str) -> Result<(), SagaError> {
    let valid = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if valid { Ok(()) } else { Err(SagaError::InvalidId(id.to_owned())) }
}

impl SagaOrchestrator {
    /// An orchestrator dispatching through `bus`, over the bus's store.
    pub fn builder(bus: CommandBus) -> SagaOrchestratorBuilder {
        SagaOrchestratorBuilder { bus, sagas: Vec::new(), leases: None, concurrency: 64, codec: Codec::default() }
    }

    fn saga(&self, name: &str) -> Result<&Kind, SagaError> {
        self.inner.sagas.get(name).ok_or_else(|| SagaError::UnknownSaga(name.to_owned()))
    }

    /// Starts instance `id` of `saga` with `input`, from any process: recorded in the store
    /// (its first record), then run by the orchestrator that runs the saga. A choreography's
    /// instance begun this way first reacts to its beginning ([`Choreography::begin`]).
    ///
    /// # Errors
    ///
    /// [`SagaError::AlreadyStarted`] when the id was used before (whatever that instance's
    /// state; nothing is written), an unknown saga, an invalid id, a store error.
    pub async fn begin(&self, saga: &str, id: &str, input: &impl Serialize) -> Result<(), SagaError> {
        let kind = self.saga(saga)?;
        check_id(id)?;
        let input = serde_json::to_value(input).map_err(|error| SagaError::Definition {
            saga: saga.to_owned(),
            problem: format!("its input is not JSON: {error}"),
        })?;
        begin(&self.inner, kind, saga, id, input).await
    }

    /// What each saga's router has done since [`start`](Self::start): the sagas that start
    /// on events ([`Saga::start_on`](crate::Saga::start_on)) and the choreographies.
    pub fn routers(&self) -> Vec<RouterStatus> {
        self.inner.routers.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// Instance `id` of `saga` as its records say: state, input, outputs, history.
    ///
    /// # Errors
    ///
    /// [`SagaError::NotFound`], an unreadable record, a store error.
    pub async fn instance(&self, saga: &str, id: &str) -> Result<Progress, SagaError> {
        self.saga(saga)?;
        inspect::load(&*self.inner.backend, saga, id).await
    }

    /// Every instance of `saga`, by id, with its state.
    ///
    /// # Errors
    ///
    /// An unreadable record, a store error.
    pub async fn list(&self, saga: &str) -> Result<Vec<(String, SagaState)>, SagaError> {
        self.saga(saga)?;
        let instances = inspect::list(&*self.inner.backend, Some(saga)).await?;
        Ok(instances.into_iter().map(|instance| (instance.id, instance.progress.state())).collect())
    }

    /// Resumes a stuck instance: its compensation is tried again (with a fresh count of
    /// attempts) by the orchestrator that runs the saga.
    ///
    /// # Errors
    ///
    /// [`SagaError::NotStuck`] when it is not stuck, [`SagaError::NotFound`], a store error.
    pub async fn resume(&self, saga: &str, id: &str) -> Result<(), SagaError> {
        self.saga(saga)?;
        inspect::resume(&*self.inner.backend, saga, id).await
    }

    /// Waits until instance `id` is finished (completed or rolled back), or stuck, for at most
    /// `timeout`.
    ///
    /// # Errors
    ///
    /// [`SagaError::Timeout`] with its state then, [`SagaError::NotFound`], a store error.
    pub async fn wait(&self, saga: &str, id: &str, timeout: Duration) -> Result<SagaState, SagaError> {
        let until = Instant::now() + timeout;
        loop {
            let head = self.inner.backend.head_position().await?;
            let state = self.instance(saga, id).await?.state();
            if state.is_finished() || matches!(state, SagaState::Stuck { .. }) {
                return Ok(state);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SagaError::Timeout { saga: saga.to_owned(), id: id.to_owned(), state: state.label() });
            }
            self.inner.backend.wait_for_commit(head, left.min(Duration::from_millis(200))).await?;
        }
    }

    /// Starts running the sagas: a task tails the log, routes events to the sagas that start
    /// on events and to the choreographies, and drives every unfinished instance. Returns once
    /// every router has its place in the log: the first time a saga runs on a store, that is the
    /// log's head (its beginning for a choreography with `FROM_BEGINNING`), so every event
    /// appended after `start` returns is routed.
    ///
    /// # Errors
    ///
    /// [`SagaError::AlreadyRunning`] when a runner of one of these sagas runs on this store in
    /// this process; a store error reading or saving the routers' checkpoints (nothing started).
    pub async fn start(&self) -> Result<(), SagaError> {
        self.claim()?;
        for (name, kind) in &self.inner.sagas {
            let Some((_, from_beginning)) = kind.router() else { continue };
            if let Err(error) = load_router_checkpoint(&self.inner, name, from_beginning).await {
                self.stop();
                return Err(error.into());
            }
        }
        self.inner.stopped.send_replace(false);
        tokio::spawn(tail(Arc::clone(&self.inner)));
        Ok(())
    }

    /// Claims the sagas for this runner among those of this process.
    fn claim(&self) -> Result<(), SagaError> {
        let store = Arc::as_ptr(&self.inner.backend).cast::<()>() as usize;
        {
            let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(name) = self.inner.sagas.keys().find(|name| running.contains(&(store, (*name).clone()))) {
                return Err(SagaError::AlreadyRunning(name.clone()));
            }
            let mut claimed = self.inner.claimed.lock().unwrap_or_else(PoisonError::into_inner);
            for name in self.inner.sagas.keys() {
                running.insert((store, name.clone()));
                claimed.push((store, name.clone()));
            }
        }
        Ok(())
    }

    /// Stops running: drivers stop at their next record or wait (an attempt under way ends
    /// first; one cut short by the process ending is run again, under its idempotency keys, by
    /// the next runner).
    pub fn stop(&self) {
        self.inner.stopped.send_replace(true);
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        for claim in self.inner.claimed.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            running.remove(&claim);
        }
    }
}

/// Begins instance `id` of `saga`: its first records, expecting no stream.
async fn begin(inner: &Inner, kind: &Kind, saga: &str, id: &str, input: Value) -> Result<(), SagaError> {
    let mut records = vec![Record::Started { input }];
    if let Kind::Reactions(_) = kind {
        records.push(Record::Received { trigger: Trigger::Begin });
    }
    let events = records.iter().map(Record::to_event).collect();
    match inner.backend.append(&stream_of(saga, id), ExpectedVersion::NoStream, events).await {
        Ok(_) => Ok(()),
        Err(Error::Conflict { .. } | Error::DuplicateEventId { .. }) => {
            Err(SagaError::AlreadyStarted { saga: saga.to_owned(), id: id.to_owned() })
        }
        Err(error) => Err(error.into()),
    }
}

/// The log page size of the tail.
const PAGE: usize = 512;
/// How many instances the router gives events to at once.
const ROUTING: usize = 64;

/// The checkpoint of saga `saga`'s router.
fn router_checkpoint(saga: &str) -> String {
    format!("allframe-saga-router:{saga}")
}

/// Follows the log: routes events to the sagas, and gives every instance that began and has
/// not finished a driver.
async fn tail(inner: Arc<Inner>) {
    let mut stopped = inner.stopped.subscribe();
    let _lease = match &inner.leases {
        None => None,
        Some(leases) => {
            let name = format!("allframe-sagas:{}", inner.sagas.keys().cloned().collect::<Vec<_>>().join(","));
            loop {
                match leases.try_lease(&name).await {
                    Ok(Some(lease)) => break Some(lease),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "taking the sagas' lease failed; retrying"),
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stopped.changed() => return,
                }
            }
        }
    };
    let routers: Vec<(String, Router, bool)> = inner
        .sagas
        .iter()
        .filter_map(|(name, kind)| kind.router().map(|(router, all)| (name.clone(), router, all)))
        .collect();
    let mut routed = BTreeMap::new();
    for (saga, _, from_beginning) in &routers {
        loop {
            match load_router_checkpoint(&inner, saga, *from_beginning).await {
                Ok(position) => {
                    routed.insert(saga.clone(), position);
                    break;
                }
                Err(error) => tracing::warn!(saga, %error, "reading the router's checkpoint failed; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stopped.changed() => return,
            }
        }
        let status = RouterStatus { saga: saga.clone(), position: routed[saga], ..RouterStatus::default() };
        inner.routers.lock().unwrap_or_else(PoisonError::into_inner).insert(saga.clone(), status);
    }
    // The unfinished instances, from their streams rather than the whole log, which is read from
    // the head read before listing them (or the routers' lower checkpoints): none begun is missed.
    let (mut open, mut after) = loop {
        match unfinished(&inner).await {
            Ok((open, after, ended)) => {
                inner.census.reset();
                ended.into_iter().for_each(|(saga, id, state)| inner.census.seed(&saga, &id, state));
                break (open, after);
            }
            Err(error) => tracing::warn!(%error, "listing the sagas' instances failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stopped.changed() => return,
        }
    };
    after = routed.values().copied().fold(after, u64::min);
    let mut live = false;
    loop {
        if *stopped.borrow() {
            return;
        }
        let page = match inner.backend.read_all(after, PAGE).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "reading the log for sagas failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if let Err(error) = route_page(&inner, &routers, &mut routed, &page).await {
            // Routing is idempotent: the page is routed again.
            tracing::warn!(%error, "routing events to sagas failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let caught_up = page.len() < PAGE;
        let mut touched = BTreeSet::new();
        for event in &page {
            after = event.position;
            let Some((saga, id)) = instance_of(event.stream_id.as_str()) else { continue };
            if !inner.sagas.contains_key(saga) {
                continue;
            }
            let key = (saga.to_owned(), id.to_owned());
            match Record::from_event(event) {
                Ok(Record::Started { .. } | Record::Resumed | Record::Received { .. }) => {
                    open.insert(key.clone());
                }
                Ok(
                    Record::Completed
                    | Record::RolledBack { .. }
                    | Record::CompensationFailed { retry_at: None, .. }
                    | Record::ReactionFailed { retry_at: None, .. },
                ) => {
                    open.remove(&key);
                }
                _ => {}
            }
            touched.insert(key);
        }
        let head = if caught_up { after } else { inner.backend.head_position().await.unwrap_or(after) };
        for (saga, position) in &routed {
            inner.metrics.router(saga, *position, head);
        }
        // Once live, only instances with something new need a look (a driver waiting for a
        // time is woken); while reading history, every unfinished instance gets one at the end.
        if live {
            for (saga, id) in touched.intersection(&open) {
                spawn_driver(&inner, saga, id);
            }
        }
        if caught_up {
            if !live {
                for (saga, id) in &open {
                    spawn_driver(&inner, saga, id);
                }
                live = true;
            }
            tokio::select! {
                _ = inner.backend.wait_for_commit(after, Duration::from_secs(1)) => {}
                _ = stopped.changed() => return,
            }
        }
    }
}

/// The instances that ended (finished, or stuck), with the state of their last record.
type Ended = Vec<(String, String, &'static str)>;

/// The log's head, then the instances of this orchestrator's sagas that have not finished (nor
/// wait stuck for an operator), found from their streams' last records, and those that have.
async fn unfinished(inner: &Inner) -> Result<(BTreeSet<(String, String)>, u64, Ended), SagaError> {
    let head = inner.backend.head_position().await?;
    let mut open = BTreeSet::new();
    let mut ended = Vec::new();
    for saga in inner.sagas.keys() {
        let prefix = stream_of(saga, "");
        let mut after = prefix.clone();
        'pages: loop {
            let page = inner.backend.list_streams(Some(&after), PAGE).await?;
            for (stream, version) in &page {
                if !stream.as_str().starts_with(&prefix) {
                    break 'pages;
                }
                let Some((_, id)) = instance_of(stream.as_str()) else { continue };
                let last = inner.backend.read_stream(stream.as_str(), version.saturating_sub(1), 1).await?;
                let state = match last.first().map(Record::from_event) {
                    Some(Ok(Record::Completed)) => Some("completed"),
                    Some(Ok(Record::RolledBack { .. })) => Some("rolled_back"),
                    Some(Ok(
                        Record::CompensationFailed { retry_at: None, .. }
                        | Record::ReactionFailed { retry_at: None, .. },
                    )) => Some("stuck"),
                    _ => None,
                };
                match state {
                    Some(state) => ended.push((saga.clone(), id.to_owned(), state)),
                    None => {
                        open.insert((saga.clone(), id.to_owned()));
                    }
                }
            }
            match page.last() {
                Some((stream, _)) if page.len() == PAGE => after = stream.as_str().to_owned(),
                _ => break,
            }
        }
    }
    Ok((open, head, ended))
}

/// Where saga `saga`'s router is: its checkpoint, or, the first time, the log's head (the
/// beginning, for a choreography that asks for it), saved so that every later start agrees.
async fn load_router_checkpoint(inner: &Inner, saga: &str, from_beginning: bool) -> Result<u64, Error> {
    let name = router_checkpoint(saga);
    if let Some(position) = inner.backend.load_checkpoint(&name).await? {
        return Ok(position);
    }
    let first = if from_beginning { 0 } else { inner.backend.head_position().await? };
    match inner.backend.save_checkpoint(&name, None, first).await {
        Ok(()) => Ok(first),
        // Saved meanwhile by another process: that one counts.
        Err(Error::CheckpointConflict { actual: Some(position), .. }) => Ok(position),
        Err(error) => Err(error),
    }
}

/// One event for one instance.
struct Delivery<'a> {
    saga: &'a str,
    id: String,
    event: &'a RecordedEvent,
    routed: Routed,
}

/// What routing one event did.
enum Delivered {
    Routed,
    Uncorrelated,
    PassedOver,
}

/// Routes the events of `page` beyond each router's checkpoint: instances get their events in
/// log order, different instances at once. Then moves the checkpoints past the page (or to
/// just before an event a router refused, which stops that router).
async fn route_page(
    inner: &Inner,
    routers: &[(String, Router, bool)],
    routed: &mut BTreeMap<String, u64>,
    page: &[RecordedEvent],
) -> Result<(), SagaError> {
    let Some(last) = page.last().map(|event| event.position) else { return Ok(()) };
    let mut through: BTreeMap<&str, u64> = BTreeMap::new();
    let mut instances: BTreeMap<(&str, String), Vec<Delivery<'_>>> = BTreeMap::new();
    for (saga, router, _) in routers {
        let saga = saga.as_str();
        let from = routed[saga];
        let mut until = last;
        let stopped = inner.routers.lock().unwrap_or_else(PoisonError::into_inner)[saga].stopped.is_some();
        if stopped || from >= last {
            continue;
        }
        for event in page.iter().filter(|event| event.position > from) {
            let refused = match router.route(event, inner.codec) {
                None => continue,
                Some(Routed::Refused(reason)) => Some(reason),
                Some(routed) => {
                    let id = match &routed {
                        Routed::Begin { id, .. } | Routed::Start(id) | Routed::Continue(id) => id.clone(),
                        Routed::Refused(reason) => reason.clone(),
                    };
                    match check_id(&id) {
                        Err(_) => Some(format!(
                            "event {} at position {} names instance `{id}`, which cannot be an id",
                            event.event_type, event.position
                        )),
                        Ok(()) => {
                            instances.entry((saga, id.clone())).or_default().push(Delivery { saga, id, event, routed });
                            None
                        }
                    }
                }
            };
            if let Some(reason) = refused {
                tracing::error!(saga, %reason, "the saga's router stops: no event after this one is routed until the cause is fixed");
                let mut status = inner.routers.lock().unwrap_or_else(PoisonError::into_inner);
                status.get_mut(saga).expect("a status per router").stopped = Some(reason);
                until = event.position - 1;
                // Events after it stay unrouted.
                for deliveries in instances.values_mut() {
                    deliveries.retain(|delivery| delivery.saga != saga || delivery.event.position < event.position);
                }
                break;
            }
        }
        through.insert(saga, until);
    }
    let gate = Semaphore::new(ROUTING);
    let results =
        futures_util::future::join_all(instances.into_values().map(|deliveries| deliver_all(inner, &gate, deliveries)));
    let results: Vec<(&str, Result<Delivered, SagaError>)> = results.await.into_iter().flatten().collect();
    let mut first_error = None;
    {
        let mut status = inner.routers.lock().unwrap_or_else(PoisonError::into_inner);
        for (saga, result) in results {
            let figures = status.get_mut(saga).expect("a status per router");
            match result {
                Ok(Delivered::Routed) => figures.routed += 1,
                Ok(Delivered::Uncorrelated) => figures.uncorrelated += 1,
                Ok(Delivered::PassedOver) => figures.passed_over += 1,
                Err(error) => first_error = first_error.or(Some(error)),
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    for (saga, until) in through {
        let from = routed[saga];
        if until <= from {
            continue;
        }
        match inner.backend.save_checkpoint(&router_checkpoint(saga), Some(from), until).await {
            Ok(()) => {}
            // Another router moved it (a process without the lease): it routed the same events.
            Err(Error::CheckpointConflict { actual: Some(actual), .. }) if actual > from => {}
            Err(error) => return Err(error.into()),
        }
        routed.insert(saga.to_owned(), until);
        let mut status = inner.routers.lock().unwrap_or_else(PoisonError::into_inner);
        status.get_mut(saga).expect("a status per router").position = until;
    }
    Ok(())
}

/// Gives one instance its events, in order, stopping at a failure; at most [`ROUTING`]
/// instances at once.
async fn deliver_all<'a>(
    inner: &Inner,
    gate: &Semaphore,
    deliveries: Vec<Delivery<'a>>,
) -> Vec<(&'a str, Result<Delivered, SagaError>)> {
    let _permit = gate.acquire().await;
    let mut done = Vec::new();
    for delivery in deliveries {
        let result = deliver(inner, &delivery).await;
        let failed = result.is_err();
        done.push((delivery.saga, result));
        if failed {
            break;
        }
    }
    done
}

/// Gives one event to its instance.
async fn deliver(inner: &Inner, delivery: &Delivery<'_>) -> Result<Delivered, SagaError> {
    let (saga, id, event) = (delivery.saga, delivery.id.as_str(), delivery.event);
    let stream = stream_of(saga, id);
    let received = Record::Received {
        trigger: Trigger::Event { position: event.position, event_type: event.event_type.to_string() },
    };
    // Its id derives from the instance and the event: routed again, it is stored once.
    let received = received.to_event_with_id(&stream, event.position);
    match &delivery.routed {
        Routed::Begin { input, .. } => {
            let kind = &inner.sagas[saga];
            return match begin(inner, kind, saga, id, input.clone()).await {
                Ok(()) => Ok(Delivered::Routed),
                Err(SagaError::AlreadyStarted { .. }) => Ok(Delivered::PassedOver),
                Err(error) => Err(error),
            };
        }
        Routed::Start(_) => {
            let started = Record::Started { input: Value::Null }.to_event_with_id(&stream, 0);
            match inner.backend.append(&stream, ExpectedVersion::NoStream, vec![started, received.clone()]).await {
                Ok(_) => return Ok(Delivered::Routed),
                // It exists (begun by this event's earlier routing, or another): continue it.
                Err(Error::Conflict { .. } | Error::DuplicateEventId { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Routed::Continue(_) | Routed::Refused(_) => {}
    }
    // Appended expecting the version read, so that an instance that completes meanwhile is seen
    // completed (a driver's append moves the version): read again after a conflict.
    loop {
        let version = inner.backend.stream_version(&stream).await?;
        if version == 0 {
            tracing::debug!(saga, id, position = event.position, "an event continues no instance; passed over");
            return Ok(Delivered::Uncorrelated);
        }
        let last = inner.backend.read_stream(&stream, version - 1, 1).await?;
        if let Some(Ok(Record::Completed)) = last.first().map(Record::from_event) {
            return Ok(Delivered::PassedOver);
        }
        match inner.backend.append(&stream, ExpectedVersion::Exact(version), vec![received.clone()]).await {
            Ok(_) => return Ok(Delivered::Routed),
            Err(Error::Conflict { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// Gives instance `id` a driver unless it has one, which is woken instead. A driver that ends
/// looks at the stream's version once more after leaving the table, so that a record appended
/// while it was leaving is not left without one.
fn spawn_driver(inner: &Arc<Inner>, saga: &str, id: &str) {
    let key = (saga.to_owned(), id.to_owned());
    let wake = {
        let mut driving = inner.driving.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(wake) = driving.get(&key) {
            wake.notify_one();
            return;
        }
        let wake = Arc::new(Notify::new());
        driving.insert(key.clone(), Arc::clone(&wake));
        wake
    };
    let (inner, kind) = (Arc::clone(inner), inner.sagas[saga].clone());
    tokio::spawn(async move {
        let stream = stream_of(&key.0, &key.1);
        let mut wake = wake;
        loop {
            let seen = match &kind {
                Kind::Steps(saga) => {
                    driver::drive(Arc::clone(&inner), saga.clone(), key.1.clone(), Arc::clone(&wake)).await
                }
                Kind::Reactions(reactor) => {
                    reactions::drive(Arc::clone(&inner), Arc::clone(reactor), key.1.clone(), Arc::clone(&wake)).await
                }
            };
            inner.driving.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
            let Some(seen) = seen else { return };
            let newer = matches!(inner.backend.stream_version(&stream).await, Ok(version) if version > seen);
            if !newer || *inner.stopped.borrow() {
                return;
            }
            let mut driving = inner.driving.lock().unwrap_or_else(PoisonError::into_inner);
            if driving.contains_key(&key) {
                return;
            }
            wake = Arc::new(Notify::new());
            driving.insert(key.clone(), Arc::clone(&wake));
        }
    });
}
