//! [`SagaOrchestrator`]: starts instances, runs them, and shows them.
//!
//! A running orchestrator tails the store's log for its sagas' records: an instance that began
//! (or was resumed by an operator) and has not finished gets a driver task, which runs it to its
//! end or to its next wait. On start it reads the log from the beginning, so instances that a
//! crash interrupted, and timeouts that passed while no process ran, are picked up. Starting an
//! instance is an append to its stream expecting none, so an id is started once, from any
//! process; running it is the business of the one orchestrator that holds the sagas' lease.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use allframe_cqrs_commands::CommandBus;
use allframe_cqrs_core::{DynBackend, Leases};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};

use crate::definition::SagaDefinition;
use crate::driver;
use crate::error::SagaError;
use crate::inspect;
use crate::progress::{Progress, SagaState};
use crate::record::{Record, instance_of, stream_of};

/// The runners of this process, by (store address, saga name): one per saga per store.
static RUNNING: Mutex<BTreeSet<(usize, String)>> = Mutex::new(BTreeSet::new());

/// What the drivers share.
pub(crate) struct Inner {
    pub(crate) backend: DynBackend,
    pub(crate) bus: CommandBus,
    pub(crate) permits: Semaphore,
    pub(crate) stopped: watch::Sender<bool>,
    sagas: BTreeMap<String, SagaDefinition>,
    leases: Option<Arc<dyn Leases>>,
    /// Instances with a driver task now.
    driving: Mutex<BTreeSet<(String, String)>>,
    /// This runner's entries in [`RUNNING`].
    claimed: Mutex<Vec<(usize, String)>>,
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
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SagaOrchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaOrchestrator").field("sagas", &self.inner.sagas.keys().collect::<Vec<_>>()).finish()
    }
}

/// Wires a [`SagaOrchestrator`].
pub struct SagaOrchestratorBuilder {
    bus: CommandBus,
    sagas: Vec<SagaDefinition>,
    leases: Option<Arc<dyn Leases>>,
    concurrency: usize,
}

impl std::fmt::Debug for SagaOrchestratorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaOrchestratorBuilder").field("sagas", &self.sagas).finish_non_exhaustive()
    }
}

impl SagaOrchestratorBuilder {
    /// Adds a saga.
    pub fn saga(mut self, saga: SagaDefinition) -> Self {
        self.sagas.push(saga);
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
    /// [`SagaError::DuplicateSaga`].
    pub fn build(self) -> Result<SagaOrchestrator, SagaError> {
        let mut sagas = BTreeMap::new();
        for saga in self.sagas {
            if sagas.insert(saga.name.to_string(), saga.clone()).is_some() {
                return Err(SagaError::DuplicateSaga(saga.name.to_string()));
            }
        }
        let inner = Inner {
            backend: self.bus.backend().clone(),
            bus: self.bus,
            permits: Semaphore::new(self.concurrency),
            stopped: watch::Sender::new(false),
            sagas,
            leases: self.leases,
            driving: Mutex::new(BTreeSet::new()),
            claimed: Mutex::new(Vec::new()),
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
        SagaOrchestratorBuilder { bus, sagas: Vec::new(), leases: None, concurrency: 64 }
    }

    fn saga(&self, name: &str) -> Result<&SagaDefinition, SagaError> {
        self.inner.sagas.get(name).ok_or_else(|| SagaError::UnknownSaga(name.to_owned()))
    }

    /// Starts instance `id` of `saga` with `input`, from any process: recorded in the store
    /// (its first record), then run by the orchestrator that runs the saga.
    ///
    /// # Errors
    ///
    /// [`SagaError::AlreadyStarted`] when the id was used before (whatever that instance's
    /// state; nothing is written), an unknown saga, an invalid id, a store error.
    pub async fn begin(&self, saga: &str, id: &str, input: &impl Serialize) -> Result<(), SagaError> {
        self.saga(saga)?;
        check_id(id)?;
        let input = serde_json::to_value(input).map_err(|error| SagaError::Definition {
            saga: saga.to_owned(),
            problem: format!("its input is not JSON: {error}"),
        })?;
        let stream = stream_of(saga, id);
        let started = Record::Started { input };
        let appended = self
            .inner
            .backend
            .append(&stream, allframe_cqrs_core::ExpectedVersion::NoStream, vec![started.to_event()])
            .await;
        match appended {
            Ok(_) => Ok(()),
            Err(allframe_cqrs_core::Error::Conflict { .. } | allframe_cqrs_core::Error::DuplicateEventId { .. }) => {
                Err(SagaError::AlreadyStarted { saga: saga.to_owned(), id: id.to_owned() })
            }
            Err(error) => Err(error.into()),
        }
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

    /// Starts running the sagas: a task tails the log and drives every unfinished instance.
    ///
    /// # Errors
    ///
    /// [`SagaError::AlreadyRunning`] when a runner of one of these sagas runs on this store in
    /// this process.
    pub fn start(&self) -> Result<(), SagaError> {
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
        self.inner.stopped.send_replace(false);
        tokio::spawn(tail(Arc::clone(&self.inner)));
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

/// Where the tail is: the instances it saw begin and not yet end.
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
    let mut open: BTreeSet<(String, String)> = BTreeSet::new();
    let mut after = 0;
    loop {
        if *stopped.borrow() {
            return;
        }
        let page = match inner.backend.read_all(after, 512).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "reading the log for sagas failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let caught_up = page.len() < 512;
        for event in &page {
            after = event.position;
            let Some((saga, id)) = instance_of(event.stream_id.as_str()) else { continue };
            if !inner.sagas.contains_key(saga) {
                continue;
            }
            let key = (saga.to_owned(), id.to_owned());
            match Record::from_event(event) {
                Ok(Record::Started { .. } | Record::Resumed) => {
                    open.insert(key);
                }
                Ok(
                    Record::Completed | Record::RolledBack { .. } | Record::CompensationFailed { retry_at: None, .. },
                ) => {
                    open.remove(&key);
                }
                _ => {}
            }
        }
        for (saga, id) in &open {
            spawn_driver(&inner, saga, id);
        }
        if caught_up {
            tokio::select! {
                _ = inner.backend.wait_for_commit(after, Duration::from_secs(1)) => {}
                _ = stopped.changed() => return,
            }
        }
    }
}

/// Gives instance `id` a driver unless it has one.
fn spawn_driver(inner: &Arc<Inner>, saga: &str, id: &str) {
    let key = (saga.to_owned(), id.to_owned());
    if !inner.driving.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone()) {
        return;
    }
    let (inner, definition) = (Arc::clone(inner), inner.sagas[saga].clone());
    tokio::spawn(async move {
        driver::drive(Arc::clone(&inner), definition, key.1.clone()).await;
        inner.driving.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
    });
}
