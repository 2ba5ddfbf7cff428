//! One projection's task: read the log after its position, apply the events it handles, save
//! its checkpoint, and follow its failure policy. Reading goes by position and waits for the
//! backend's commit signal once caught up, as subscriptions do (contract point 8), so the
//! read model sees committed events only, in global order, with no gap or duplicate.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe_cqrs_core::{Envelope, Error, Event, EventStore, EventStoreBackend, Leases, RecordedEvent};
use tokio::sync::{Mutex, RwLock, watch};

use crate::dead_letter::{DeadLetter, Ledger};
use crate::error::ProjectionError;
use crate::lock::{RunnerLock, wait_for_lease};
use crate::policy::{FailurePolicy, GiveUp};
use crate::read_model::ReadModel;
use crate::status::{ProjectionState, Shared};

/// What the registry asks of a runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    Run,
    Pause,
    Stop,
}

/// How runners read and checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Events read per page (and applied under one hold of the read model's write lock).
    pub page_size: usize,
    /// Longest wait for a commit signal before reading again.
    pub max_wait: Duration,
    /// Under [`Resume::FromCheckpoint`](crate::Resume::FromCheckpoint): the checkpoint is
    /// saved after this many events at most...
    pub checkpoint_every: u64,
    /// ...and after this long at most, when something was passed.
    pub checkpoint_interval: Duration,
    /// How often a standby instance tries to take a projection's lease (with
    /// [`ProjectionRegistry::with_leases`](crate::ProjectionRegistry::with_leases)).
    pub lease_poll: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            page_size: 512,
            max_wait: Duration::from_millis(500),
            checkpoint_every: 1_000,
            checkpoint_interval: Duration::from_secs(1),
            lease_poll: Duration::from_millis(500),
        }
    }
}

/// Whether a runner keeps the live read model or builds a new one beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Reports its position to read-your-writes waits; runs until stopped.
    Live,
    /// Reports its position as the rebuild's; returns once it has caught up with the head.
    Beside,
}

/// Why a runner returned.
#[derive(Debug)]
pub(crate) enum Exit {
    Stopped,
    CaughtUp { position: u64 },
    Failed(ProjectionError),
}

pub(crate) struct Runner<E, B: ?Sized, P> {
    pub(crate) store: EventStore<E, B>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) model: Arc<RwLock<P>>,
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    pub(crate) policy: FailurePolicy,
    pub(crate) options: RunOptions,
    pub(crate) control: watch::Receiver<Control>,
    pub(crate) role: Role,
    /// The state shown until the runner first reaches the head.
    pub(crate) catching_up: ProjectionState,
    /// The position of the last event passed.
    pub(crate) position: u64,
    /// The checkpoint's name and what it holds, when this runner saves it.
    pub(crate) checkpoint: Option<(String, Option<u64>)>,
    /// Held while the runner runs (one runner per projection), or the leases to wait on.
    pub(crate) claim: Option<Claim>,
}

/// How a runner holds its projection.
pub(crate) enum Claim {
    /// Held already.
    Held(#[allow(dead_code, reason = "held for its drop")] RunnerLock),
    /// To be taken from these leases before running.
    Wait(Arc<dyn Leases>),
}

/// Shows how a runner ended in its projection's state: stopped, or failed at an event (or
/// just after `position` when the failure was the store's).
pub(crate) fn show_exit(shared: &Shared, exit: &Exit, position: u64) {
    match exit {
        Exit::Stopped | Exit::CaughtUp { .. } => shared.set_state(ProjectionState::Stopped),
        Exit::Failed(error) => {
            tracing::error!(projection = shared.name, %error, "projection runner stopped");
            let (position, reason) = match error {
                ProjectionError::Failed { position, reason, .. } => (*position, reason.clone()),
                other => (position + 1, other.to_string()),
            };
            shared.set_state(ProjectionState::Failed { position, reason });
        }
    }
}

/// Waits for the lease on checkpoint `name` from `leases`, then reads where the instance that
/// held it left off: the checkpoint (checked against the head) and the dead letters. `None`
/// when the runner is stopped while waiting.
pub(crate) async fn take_over<B: EventStoreBackend + ?Sized>(
    backend: &B,
    leases: &dyn Leases,
    name: &str,
    control: &mut watch::Receiver<Control>,
    shared: &Shared,
    ledger: &Mutex<Ledger>,
    options: RunOptions,
) -> Result<Option<(RunnerLock, Option<u64>)>, ProjectionError> {
    let Some(lock) = wait_for_lease(leases, name, control, shared, options.lease_poll).await else {
        return Ok(None);
    };
    let held = resume_point(backend, shared, name).await?;
    shared.reset(held.unwrap_or(0));
    let loaded = Ledger::load(backend, shared.name).await?;
    shared.facts().dead_letters = loaded.open_count();
    *ledger.lock().await = loaded;
    Ok(Some((lock, held)))
}

/// The page of the log after `position`; `None` after a failed read (logged, and waited for a
/// moment): read again.
pub(crate) async fn read_page<B: EventStoreBackend + ?Sized>(
    backend: &B,
    shared: &Shared,
    position: u64,
    options: RunOptions,
) -> Option<Vec<RecordedEvent>> {
    match backend.read_all(position, options.page_size).await {
        Ok(page) => Some(page),
        Err(error) => {
            tracing::warn!(projection = shared.name, %error, "projection read failed; retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Updates the lag gauges from `page`, just read after `position`: nothing left (caught up),
/// or the age of its first event and the positions up to the head (the page's last one when the
/// page was not full, so that a runner at the head does not ask the store for it).
pub(crate) async fn sample_lag<B: EventStoreBackend + ?Sized>(
    backend: &B,
    shared: &Shared,
    position: u64,
    page: &[RecordedEvent],
    options: RunOptions,
) {
    let (Some(first), Some(last)) = (page.first(), page.last()) else {
        shared.metrics.lag(0, Duration::ZERO);
        return;
    };
    let head = if page.len() < options.page_size {
        last.position
    } else {
        match backend.head_position().await {
            Ok(head) => head,
            Err(_) => return,
        }
    };
    let age = first.metadata.timestamp.to_system_time().elapsed().unwrap_or_default();
    shared.metrics.lag(head.saturating_sub(position), age);
}

/// Waits, caught up at `position`, for a commit after it, a change of `control`, or
/// `options.max_wait`.
pub(crate) async fn wait_for_commits<B: EventStoreBackend + ?Sized>(
    backend: &B,
    shared: &Shared,
    position: u64,
    options: RunOptions,
    control: &mut watch::Receiver<Control>,
) {
    tokio::select! {
        waited = backend.wait_for_commit(position, options.max_wait) => {
            if let Err(error) = waited {
                tracing::warn!(projection = shared.name, %error, "waiting for commits failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        _ = control.changed() => {}
    }
}

/// The checkpoint `name` holds, checked against the log's head: a checkpoint beyond it means
/// the log was restored from an older backup than the checkpoint.
pub(crate) async fn resume_point<B: EventStoreBackend + ?Sized>(
    backend: &B,
    shared: &Shared,
    name: &str,
) -> Result<Option<u64>, ProjectionError> {
    let held = backend.load_checkpoint(name).await?;
    let head = backend.head_position().await?;
    if let Some(checkpoint) = held.filter(|checkpoint| *checkpoint > head) {
        return Err(ProjectionError::CheckpointAhead { name: shared.name.to_owned(), checkpoint, head });
    }
    Ok(held)
}

/// A failed event, with what a dead letter needs to say.
pub(crate) struct Failure {
    pub(crate) reason: String,
    pub(crate) attempts: u32,
}

/// Records a dead letter for the event `about` (unless its position has one open already).
pub(crate) async fn record_dead_letter<B: EventStoreBackend + ?Sized>(
    backend: &B,
    ledger: &Mutex<Ledger>,
    shared: &Shared,
    about: About,
    failure: Failure,
) -> Result<(), Error> {
    let mut ledger = ledger.lock().await;
    if ledger.is_open(about.position) {
        return Ok(());
    }
    tracing::warn!(projection = shared.name, position = about.position, reason = %failure.reason, "event dead-lettered");
    let letter = DeadLetter {
        projection: shared.name.to_owned(),
        version: shared.version,
        position: about.position,
        stream_id: about.stream_id,
        stream_version: about.stream_version,
        event_type: about.event_type,
        event_id: about.event_id,
        reason: failure.reason,
        attempts: failure.attempts,
        occurrence: 0,
    };
    ledger.record(backend, letter).await?;
    shared.metrics.dead_lettered();
    shared.facts().dead_letters = ledger.open_count();
    Ok(())
}

impl<E: Event, B: EventStoreBackend + ?Sized, P: ReadModel<E>> Runner<E, B, P> {
    pub(crate) async fn run(mut self) -> Exit {
        let exit = match self.claim().await {
            Ok(true) => self.run_inner().await,
            Ok(false) => Exit::Stopped,
            Err(error) => Exit::Failed(error),
        };
        if self.role == Role::Live {
            show_exit(&self.shared, &exit, self.position);
        }
        exit
    }

    /// Waits for the projection's lease when it has none yet, then starts from where the
    /// instance that held it left off. `false` when stopped while waiting.
    async fn claim(&mut self) -> Result<bool, ProjectionError> {
        let Some(Claim::Wait(leases)) = &self.claim else { return Ok(true) };
        let leases = Arc::clone(leases);
        let Some((name, _)) = &self.checkpoint else { return Ok(true) };
        let name = name.clone();
        let backend = self.store.shared_backend();
        let taken =
            take_over(&*backend, &*leases, &name, &mut self.control, &self.shared, &self.ledger, self.options).await?;
        let Some((lock, held)) = taken else { return Ok(false) };
        self.claim = Some(Claim::Held(lock));
        self.position = held.unwrap_or(0);
        self.checkpoint = Some((name, held));
        self.show(self.catching_up.clone());
        Ok(true)
    }

    async fn run_inner(&mut self) -> Exit {
        self.show(self.catching_up.clone());
        let mut caught_up = false;
        let mut unsaved = 0u64;
        let mut saved_at = Instant::now();
        loop {
            let control = *self.control.borrow_and_update();
            match control {
                Control::Stop => return self.checkpoint_or(Exit::Stopped).await,
                Control::Pause => {
                    if let Err(error) = self.save_checkpoint().await {
                        return Exit::Failed(error);
                    }
                    unsaved = 0;
                    self.show(ProjectionState::Paused);
                    let _ = self.control.changed().await;
                    self.show(if caught_up { ProjectionState::Running } else { self.catching_up.clone() });
                    continue;
                }
                Control::Run => {}
            }
            let Some(page) = read_page(self.store.backend(), &self.shared, self.position, self.options).await else {
                continue;
            };
            if self.role == Role::Live {
                sample_lag(self.store.backend(), &self.shared, self.position, &page, self.options).await;
            }
            if page.is_empty() {
                if unsaved > 0 {
                    if let Err(error) = self.save_checkpoint().await {
                        return Exit::Failed(error);
                    }
                    unsaved = 0;
                    saved_at = Instant::now();
                }
                if !caught_up {
                    caught_up = true;
                    if self.role == Role::Beside {
                        return Exit::CaughtUp { position: self.position };
                    }
                    self.show(ProjectionState::Running);
                }
                wait_for_commits(self.store.backend(), &self.shared, self.position, self.options, &mut self.control)
                    .await;
                continue;
            }
            match self.apply_page(page).await {
                Ok(passed) => unsaved += passed,
                Err(exit) => return exit,
            }
            if unsaved >= self.options.checkpoint_every || saved_at.elapsed() >= self.options.checkpoint_interval {
                if let Err(error) = self.save_checkpoint().await {
                    return Exit::Failed(error);
                }
                unsaved = 0;
                saved_at = Instant::now();
            }
        }
    }

    /// Applies one page under one hold of the write lock (released for retry waits). Returns
    /// how many events were passed, or why the runner ends.
    async fn apply_page(&mut self, page: Vec<RecordedEvent>) -> Result<u64, Exit> {
        let model = Arc::clone(&self.model);
        let mut guard = model.write().await;
        let (mut passed, mut applied) = (0u64, 0u64);
        for record in page {
            let position = record.position;
            if handles(P::EVENTS, &record) {
                let failure = match self.store.decode_event(&record) {
                    Err(error) => {
                        self.shared.metrics.failed();
                        Some((About::of(&record), Failure { reason: error.to_string(), attempts: 1 }))
                    }
                    Ok(event) => {
                        let envelope = envelope(record, event);
                        let mut attempts = 0;
                        loop {
                            attempts += 1;
                            let outcome = apply_caught(&mut *guard, &envelope);
                            if outcome.is_err() {
                                self.shared.metrics.failed();
                            }
                            match outcome {
                                Ok(()) => break None,
                                Err(reason) if attempts > self.policy.retries => {
                                    break Some((About::of_envelope(&envelope), Failure { reason, attempts }));
                                }
                                Err(reason) => {
                                    tracing::warn!(projection = P::NAME, position, attempts, %reason, "apply failed; retrying");
                                    drop(guard);
                                    tokio::time::sleep(self.policy.backoff_before(attempts)).await;
                                    if *self.control.borrow() == Control::Stop {
                                        self.report(passed, applied);
                                        return Err(self.checkpoint_or(Exit::Stopped).await);
                                    }
                                    guard = model.write().await;
                                }
                            }
                        }
                    }
                };
                match failure {
                    None => applied += 1,
                    Some((about, failure)) => match self.policy.give_up {
                        GiveUp::Stop => {
                            drop(guard);
                            self.report(passed, applied);
                            let error =
                                ProjectionError::Failed { name: P::NAME.to_owned(), position, reason: failure.reason };
                            return Err(self.checkpoint_or(Exit::Failed(error)).await);
                        }
                        GiveUp::DeadLetter => {
                            if let Err(error) = self.dead_letter(about, failure).await {
                                drop(guard);
                                self.report(passed, applied);
                                return Err(self.checkpoint_or(Exit::Failed(error.into())).await);
                            }
                        }
                    },
                }
            }
            self.position = position;
            passed += 1;
        }
        drop(guard);
        self.report(passed, applied);
        Ok(passed)
    }

    async fn dead_letter(&self, about: About, failure: Failure) -> Result<(), Error> {
        record_dead_letter(self.store.backend(), &self.ledger, &self.shared, about, failure).await
    }

    fn report(&self, passed: u64, applied: u64) {
        match self.role {
            Role::Live => self.shared.advance(self.position, passed, applied),
            Role::Beside => self.shared.facts().rebuild_position = Some(self.position),
        }
    }

    fn show(&self, state: ProjectionState) {
        if self.role == Role::Live {
            self.shared.set_state(state);
        }
    }

    /// Saves the checkpoint (after committing the read model), then returns `exit`, or the
    /// save's error.
    async fn checkpoint_or(&mut self, exit: Exit) -> Exit {
        match self.save_checkpoint().await {
            Ok(()) => exit,
            Err(error) => Exit::Failed(error),
        }
    }

    async fn save_checkpoint(&mut self) -> Result<(), ProjectionError> {
        let Some((name, held)) = &mut self.checkpoint else { return Ok(()) };
        if *held == Some(self.position) {
            return Ok(());
        }
        self.model.write().await.commit(self.position).await.map_err(|error| {
            self.shared.metrics.failed();
            ProjectionError::Failed {
                name: P::NAME.to_owned(),
                position: self.position,
                reason: format!("committing the read model failed: {error}"),
            }
        })?;
        let mut wait = Duration::from_millis(50);
        loop {
            match self.store.backend().save_checkpoint(name, *held, self.position).await {
                Ok(()) => {
                    *held = Some(self.position);
                    self.shared.checkpointed(self.position);
                    return Ok(());
                }
                // Another runner moved it: this one is not the projection's runner any more.
                Err(error @ (Error::CheckpointConflict { .. } | Error::InvalidCheckpoint { .. })) => {
                    self.shared.metrics.failed();
                    return Err(error.into());
                }
                Err(error) => {
                    self.shared.metrics.failed();
                    tracing::warn!(projection = P::NAME, %error, "saving the checkpoint failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    if *self.control.borrow() == Control::Stop && wait >= Duration::from_secs(5) {
                        return Err(error.into());
                    }
                }
            }
        }
    }
}

/// Whether a projection of the event types `events` (all when empty) handles `record`; the
/// library's own streams never. Checked before decoding.
pub(crate) fn handles(events: &[&str], record: &RecordedEvent) -> bool {
    !allframe_cqrs_core::is_system_stream(&record.stream_id)
        && (events.is_empty() || events.contains(&&*record.event_type))
}

/// Applies one event, turning an error or a panic into a failure message.
pub(crate) fn apply_caught<E: Event, P: ReadModel<E>>(model: &mut P, envelope: &Envelope<E>) -> Result<(), String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| model.apply(envelope))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(panic) => Err(panic_message(&*panic)),
    }
}

/// What a caught panic said.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    format!("the handler panicked: {message}")
}

/// The envelope of a decoded record.
pub(crate) fn envelope<E>(record: RecordedEvent, event: E) -> Envelope<E> {
    Envelope {
        stream_id: record.stream_id,
        version: record.version,
        position: record.position,
        event,
        metadata: record.metadata,
    }
}

/// What a dead letter says about its event, taken before the record is decoded.
pub(crate) struct About {
    pub(crate) position: u64,
    pub(crate) stream_id: String,
    pub(crate) stream_version: u64,
    pub(crate) event_type: String,
    pub(crate) event_id: String,
}

impl About {
    pub(crate) fn of_envelope<E: Event>(envelope: &Envelope<E>) -> Self {
        About {
            position: envelope.position,
            stream_id: envelope.stream_id.as_str().to_owned(),
            stream_version: envelope.version,
            event_type: envelope.event.event_type().to_owned(),
            event_id: envelope.metadata.event_id.to_string(),
        }
    }

    pub(crate) fn of(record: &RecordedEvent) -> Self {
        About {
            position: record.position,
            stream_id: record.stream_id.as_str().to_owned(),
            stream_version: record.version,
            event_type: record.event_type.to_string(),
            event_id: record.metadata.event_id.to_string(),
        }
    }
}
