//! The registry: projections by name, each run as a task from its checkpoint, with start,
//! stop, pause, status, rebuilds and dead letters.

use std::sync::{Arc, PoisonError, RwLock as StdRwLock};
use std::time::Duration;

use allframe_cqrs_core::{Event, EventStore, EventStoreBackend, Leases, async_trait};
use tokio::sync::{Mutex, RwLock, watch};
use tokio::task::JoinHandle;

use crate::dead_letter::{DeadLetter, Ledger};
use crate::error::ProjectionError;
use crate::handle::{ReadModelHandle, Slot};
use crate::lock::RunnerLock;
use crate::policy::FailurePolicy;
use crate::read_model::{ReadModel, Resume, checkpoint_name};
use crate::runner::{Claim, Control, Exit, Role, RunOptions, Runner, apply_caught, envelope, resume_point};
use crate::status::{ProjectionState, ProjectionStatus, Shared};

/// Named read models over one store, each kept up to date by its own task.
///
/// ```
/// # use allframe_cqrs_core::{BoxError, Envelope, Event};
/// # use allframe_cqrs_projections::{ProjectionRegistry, ReadModel};
/// # use allframe_backend_memory::{EventStore, InMemoryEventStore};
/// # use std::time::Duration;
/// # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
/// # enum AccountEvent { Deposited { amount: u64 } }
/// # impl Event for AccountEvent {}
/// # #[derive(Default)]
/// # struct Deposits { total: u64 }
/// # impl ReadModel<AccountEvent> for Deposits {
/// #     const NAME: &'static str = "deposits";
/// #     fn apply(&mut self, event: &Envelope<AccountEvent>) -> Result<(), BoxError> {
/// #         let AccountEvent::Deposited { amount } = event.event;
/// #         self.total += amount;
/// #         Ok(())
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store: EventStore<AccountEvent> = EventStore::new();
/// let registry = ProjectionRegistry::new(store.clone());
/// let deposits = registry.register(Deposits::default)?;
/// registry.start_all().await?;
///
/// let written = store.append("account-1", vec![AccountEvent::Deposited { amount: 5 }]).await?;
/// // Read your own write: wait until the read model has passed the append's position.
/// let model = deposits.read_at_least(written.last_position, Duration::from_secs(1)).await?;
/// assert_eq!(model.total, 5);
/// # Ok(())
/// # }
/// ```
pub struct ProjectionRegistry<E, B: ?Sized> {
    pub(crate) store: EventStore<E, B>,
    options: RunOptions,
    leases: Option<Arc<dyn Leases>>,
    /// The lag beyond which [`health`](Self::health) says a projection is degraded.
    pub(crate) health_lag: Duration,
    entries: Arc<StdRwLock<Entries<E, B>>>,
}

/// The registered projections, in registration order.
type Entries<E, B> = Vec<Arc<dyn Entry<E, B>>>;

impl<E, B: ?Sized> Clone for ProjectionRegistry<E, B> {
    fn clone(&self) -> Self {
        ProjectionRegistry {
            store: self.store.clone(),
            options: self.options,
            leases: self.leases.clone(),
            health_lag: self.health_lag,
            entries: Arc::clone(&self.entries),
        }
    }
}

impl<E, B: ?Sized> std::fmt::Debug for ProjectionRegistry<E, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|entry| entry.shared().name)
            .collect();
        f.debug_struct("ProjectionRegistry").field("projections", &names).field("options", &self.options).finish()
    }
}

/// How a retry of dead letters went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryReport {
    /// Dead letters whose event applied this time (now resolved).
    pub resolved: u64,
    /// Dead letters that failed again, with why (still open).
    pub still_failing: Vec<(u64, String)>,
}

impl<E: Event, B: EventStoreBackend + ?Sized + 'static> ProjectionRegistry<E, B> {
    /// A registry over `store` (its codec decodes the events), with default [`RunOptions`].
    pub fn new(store: EventStore<E, B>) -> Self {
        Self::with_options(store, RunOptions::default())
    }

    /// A registry whose runners read and checkpoint as `options` say.
    pub fn with_options(store: EventStore<E, B>, options: RunOptions) -> Self {
        ProjectionRegistry {
            store,
            options,
            leases: None,
            health_lag: crate::health::DEFAULT_HEALTH_LAG,
            entries: Arc::new(StdRwLock::new(Vec::new())),
        }
    }

    /// Runs each projection kept outside the process ([`Resume::FromCheckpoint`]) in one
    /// application instance at a time, among all those whose registries share `leases` (for
    /// PostgreSQL, `PostgresBackend::leases()`): the others stand by
    /// ([`ProjectionState::Standby`]) and one takes over, from the checkpoint, when the
    /// holder stops or dies. In-memory models run in every instance (each keeps its own).
    pub fn with_leases(mut self, leases: Arc<dyn Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// Registers read model `P`, made by `factory` (called again for each rebuild), with the
    /// default failure policy ([`FailurePolicy::stop`]). It runs once started.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::DuplicateName`] when a projection of that name is registered.
    pub fn register<P: ReadModel<E>>(
        &self,
        factory: impl Fn() -> P + Send + Sync + 'static,
    ) -> Result<ReadModelHandle<P>, ProjectionError> {
        self.register_with_policy(factory, FailurePolicy::default())
    }

    /// Registers read model `P` with failure policy `policy`.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::DuplicateName`] when a projection of that name is registered.
    pub fn register_with_policy<P: ReadModel<E>>(
        &self,
        factory: impl Fn() -> P + Send + Sync + 'static,
        policy: FailurePolicy,
    ) -> Result<ReadModelHandle<P>, ProjectionError> {
        self.add(Registration::new(P::NAME, P::VERSION, P::EVENTS, P::RESUME, factory, policy), |registration| {
            Arc::new(registration)
        })
    }

    /// Adds `registration` as the entry `wrap` makes of it, unless its name is taken.
    pub(crate) fn add<P: Send + Sync + 'static>(
        &self,
        registration: Registration<P>,
        wrap: impl FnOnce(Registration<P>) -> Arc<dyn Entry<E, B>>,
    ) -> Result<ReadModelHandle<P>, ProjectionError> {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let name = registration.shared.name;
        if entries.iter().any(|entry| entry.shared().name == name) {
            return Err(ProjectionError::DuplicateName { name: name.to_owned() });
        }
        let handle = ReadModelHandle { slot: Arc::clone(&registration.slot), shared: Arc::clone(&registration.shared) };
        entries.push(wrap(registration));
        Ok(handle)
    }

    /// The names of the registered projections, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries().iter().map(|entry| entry.shared().name).collect()
    }

    /// Starts every registered projection that is not running.
    ///
    /// # Errors
    ///
    /// The first projection that cannot start ([`ProjectionError::CheckpointAhead`],
    /// [`ProjectionError::AlreadyRunning`] or a store error); the ones before it run.
    pub async fn start_all(&self) -> Result<(), ProjectionError> {
        for entry in self.entries() {
            if !entry.is_running().await {
                entry.start(&self.context(), ProjectionState::CatchingUp).await?;
            }
        }
        Ok(())
    }

    /// Starts projection `name` from where it is (see [`Resume`]).
    ///
    /// # Errors
    ///
    /// [`ProjectionError::UnknownProjection`], [`ProjectionError::AlreadyRunning`],
    /// [`ProjectionError::CheckpointAhead`] (nothing is started) or a store error.
    pub async fn start(&self, name: &str) -> Result<(), ProjectionError> {
        self.entry(name)?.start(&self.context(), ProjectionState::CatchingUp).await
    }

    /// Stops projection `name` after the page it is applying, saving its checkpoint.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::UnknownProjection`].
    pub async fn stop(&self, name: &str) -> Result<(), ProjectionError> {
        self.entry(name)?.stop().await;
        Ok(())
    }

    /// Stops every projection (at the end of the application).
    pub async fn stop_all(&self) {
        for entry in self.entries() {
            entry.stop().await;
        }
    }

    /// Pauses projection `name` after the page it is applying; [`resume`](Self::resume) goes on
    /// from there.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::UnknownProjection`].
    pub fn pause(&self, name: &str) -> Result<(), ProjectionError> {
        self.entry(name)?.control(Control::Pause);
        Ok(())
    }

    /// Resumes a paused projection.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::UnknownProjection`].
    pub fn resume(&self, name: &str) -> Result<(), ProjectionError> {
        self.entry(name)?.control(Control::Run);
        Ok(())
    }

    /// The status of projection `name`: state, position, lag behind the head in events and in
    /// time, rate.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::UnknownProjection`] or a store error.
    pub async fn status(&self, name: &str) -> Result<ProjectionStatus, ProjectionError> {
        self.status_of(self.entry(name)?.shared()).await
    }

    /// The status of the projection whose facts are `shared`; refreshes its lag gauges.
    pub(crate) async fn status_of(&self, shared: &Shared) -> Result<ProjectionStatus, ProjectionError> {
        let mut status = shared.snapshot();
        let backend = self.store.backend();
        status.head = backend.head_position().await?;
        status.lag_events = status.head.saturating_sub(status.position);
        if status.lag_events > 0
            && let Some(next) = backend.read_all(status.position, 1).await?.first()
        {
            status.lag = next.metadata.timestamp.to_system_time().elapsed().unwrap_or_default();
        }
        shared.metrics.lag(status.lag_events, status.lag);
        Ok(status)
    }

    /// The status of every projection, in registration order.
    ///
    /// # Errors
    ///
    /// A store error.
    pub async fn statuses(&self) -> Result<Vec<ProjectionStatus>, ProjectionError> {
        let mut all = Vec::new();
        for name in self.names() {
            all.push(self.status(name).await?);
        }
        Ok(all)
    }

    /// Rebuilds projection `name` in place: stops it, gives it a fresh read model (from its
    /// factory) and replays the log from position 0 (state `Rebuilding` until it reaches the
    /// head). Queries see the model fill up; [`rebuild_beside`](Self::rebuild_beside) does not
    /// show them a partial model.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::UnknownProjection`] (nothing changes) or a store error.
    pub async fn rebuild(&self, name: &str) -> Result<(), ProjectionError> {
        self.entry(name)?.rebuild(&self.context()).await
    }

    /// Builds a fresh read model for projection `name` beside the live one, from position 0,
    /// while queries go on reading the live one; once it has caught up with the head it
    /// replaces the live one in one step and runs on from there. Returns when it has.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::UnknownProjection`] (nothing changes); [`ProjectionError::Failed`]
    /// when the new model stopped on an event under failure policy `Stop` (the live one is
    /// untouched); a store error.
    pub async fn rebuild_beside(&self, name: &str) -> Result<(), ProjectionError> {
        self.entry(name)?.rebuild_beside(&self.context()).await
    }

    /// The open (unresolved) dead letters of projection `name`, in position order.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::UnknownProjection`] or a store error.
    pub async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, ProjectionError> {
        let entry = self.entry(name)?;
        let ledger = Ledger::load(self.store.backend(), entry.shared().name).await?;
        Ok(ledger.open())
    }

    /// Applies the events of projection `name`'s open dead letters again (after a fix), in
    /// position order, resolving those that apply now.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::UnknownProjection`] or a store error.
    pub async fn retry_dead_letters(&self, name: &str) -> Result<RetryReport, ProjectionError> {
        self.entry(name)?.retry_dead_letters(&self.context()).await
    }

    fn context(&self) -> Context<'_, E, B> {
        Context { store: &self.store, options: self.options, leases: self.leases.clone() }
    }

    pub(crate) fn entries(&self) -> Vec<Arc<dyn Entry<E, B>>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn entry(&self, name: &str) -> Result<Arc<dyn Entry<E, B>>, ProjectionError> {
        self.entries()
            .into_iter()
            .find(|entry| entry.shared().name == name)
            .ok_or_else(|| ProjectionError::UnknownProjection { name: name.to_owned() })
    }
}

/// What an entry needs from its registry.
pub(crate) struct Context<'a, E, B: ?Sized> {
    pub(crate) store: &'a EventStore<E, B>,
    pub(crate) options: RunOptions,
    pub(crate) leases: Option<Arc<dyn Leases>>,
}

impl<E: Event, B: EventStoreBackend + ?Sized> Context<'_, E, B> {
    /// The address of the shared backend: which store a runner lock is for.
    fn store_key(&self) -> usize {
        Arc::as_ptr(&self.store.shared_backend()).cast::<u8>() as usize
    }

    /// How a runner of a projection kept as `resume` says holds it: a model kept outside the
    /// process waits for the backend's lease when the registry has leases (one instance runs
    /// it); any other is claimed in this process at once (every instance keeps its own
    /// in-memory copy), or refused when this process runs it already.
    pub(crate) fn claim(&self, shared: &Shared, resume: Resume) -> Result<Claim, ProjectionError> {
        match (&self.leases, resume) {
            (Some(leases), Resume::FromCheckpoint) => Ok(Claim::Wait(Arc::clone(leases))),
            _ => Ok(Claim::Held(RunnerLock::local(self.store_key(), shared.name)?)),
        }
    }
}

/// One registered projection, with its read model type erased.
#[async_trait]
pub(crate) trait Entry<E, B: ?Sized>: Send + Sync {
    fn shared(&self) -> &Arc<Shared>;
    async fn is_running(&self) -> bool;
    async fn start(&self, context: &Context<'_, E, B>, catching_up: ProjectionState) -> Result<(), ProjectionError>;
    async fn stop(&self);
    fn control(&self, control: Control);
    async fn rebuild(&self, context: &Context<'_, E, B>) -> Result<(), ProjectionError>;
    async fn rebuild_beside(&self, context: &Context<'_, E, B>) -> Result<(), ProjectionError>;
    async fn retry_dead_letters(&self, context: &Context<'_, E, B>) -> Result<RetryReport, ProjectionError>;
}

/// A registered projection: its facts, read model, factory and runner.
pub(crate) struct Registration<P> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) slot: Arc<Slot<P>>,
    pub(crate) factory: Box<dyn Fn() -> P + Send + Sync>,
    pub(crate) policy: FailurePolicy,
    pub(crate) control: watch::Sender<Control>,
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    /// The live runner's task; held across start, stop and rebuilds so they do not interleave.
    pub(crate) task: Mutex<Option<JoinHandle<Exit>>>,
}

impl<P> Registration<P> {
    pub(crate) fn new(
        name: &'static str,
        version: u32,
        handles: &'static [&'static str],
        resume: Resume,
        factory: impl Fn() -> P + Send + Sync + 'static,
        policy: FailurePolicy,
    ) -> Self {
        Registration {
            shared: Arc::new(Shared::new(name, version, handles, resume)),
            slot: Arc::new(Slot::new(factory())),
            factory: Box::new(factory),
            policy,
            control: watch::Sender::new(Control::Run),
            ledger: Arc::new(Mutex::new(Ledger::default())),
            task: Mutex::new(None),
        }
    }

    pub(crate) fn checkpoint_name(&self) -> String {
        checkpoint_name(self.shared.name, self.shared.version)
    }
}

impl<P: Send + Sync + 'static> Registration<P> {
    /// Stops the live runner held in `task` and waits for it (it saves its checkpoint).
    pub(crate) async fn stop_task(&self, task: &mut Option<JoinHandle<Exit>>) {
        if let Some(running) = task.take() {
            self.control.send_replace(Control::Stop);
            if let Err(error) = running.await {
                tracing::error!(projection = self.shared.name, %error, "projection runner panicked");
            }
        }
    }
}

#[async_trait]
impl<E: Event, B: EventStoreBackend + ?Sized + 'static, P: ReadModel<E>> Entry<E, B> for Registration<P> {
    fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    async fn is_running(&self) -> bool {
        self.task.lock().await.as_ref().is_some_and(|task| !task.is_finished())
    }

    async fn start(&self, context: &Context<'_, E, B>, catching_up: ProjectionState) -> Result<(), ProjectionError> {
        let mut task = self.task.lock().await;
        self.start_locked(context, &mut task, catching_up).await
    }

    async fn stop(&self) {
        let mut task = self.task.lock().await;
        self.stop_task(&mut task).await;
    }

    fn control(&self, control: Control) {
        self.control.send_replace(control);
    }

    async fn rebuild(&self, context: &Context<'_, E, B>) -> Result<(), ProjectionError> {
        let mut task = self.task.lock().await;
        self.stop_task(&mut task).await;
        let backend = context.store.backend();
        if P::RESUME == Resume::FromCheckpoint {
            let name = self.checkpoint_name();
            let held = backend.load_checkpoint(&name).await?;
            if held.is_some_and(|position| position > 0) {
                backend.save_checkpoint(&name, held, 0).await?;
            }
        }
        self.slot.replace(Arc::new(RwLock::new((self.factory)())));
        self.shared.reset(0);
        self.start_locked(context, &mut task, ProjectionState::Rebuilding).await
    }

    async fn rebuild_beside(&self, context: &Context<'_, E, B>) -> Result<(), ProjectionError> {
        let fresh = Arc::new(RwLock::new((self.factory)()));
        let runner = self.runner(context, Arc::clone(&fresh), Role::Beside, 0, None, ProjectionState::Rebuilding, None);
        self.shared.facts().rebuild_position = Some(0);
        let exit = runner.run().await;
        self.shared.facts().rebuild_position = None;
        let position = match exit {
            Exit::CaughtUp { position } => position,
            Exit::Stopped => return Ok(()),
            Exit::Failed(error) => return Err(error),
        };
        // Caught up: stop the live runner, put the new model in its place, run on from there.
        let mut task = self.task.lock().await;
        let was_running = task.as_ref().is_some_and(|task| !task.is_finished());
        self.stop_task(&mut task).await;
        if P::RESUME == Resume::FromCheckpoint {
            let name = self.checkpoint_name();
            fresh.write().await.commit(position).await.map_err(|error| ProjectionError::Failed {
                name: self.shared.name.to_owned(),
                position,
                reason: format!("committing the rebuilt read model failed: {error}"),
            })?;
            let backend = context.store.backend();
            let held = backend.load_checkpoint(&name).await?;
            backend.save_checkpoint(&name, held, position).await?;
        }
        self.slot.replace(fresh);
        self.shared.reset(position);
        if was_running {
            self.start_locked(context, &mut task, ProjectionState::CatchingUp).await?;
        }
        Ok(())
    }

    async fn retry_dead_letters(&self, context: &Context<'_, E, B>) -> Result<RetryReport, ProjectionError> {
        let backend = context.store.backend();
        let mut ledger = self.ledger.lock().await;
        *ledger = Ledger::load(backend, self.shared.name).await?;
        let mut report = RetryReport::default();
        let model = self.slot.current();
        for letter in ledger.open() {
            let Some(record) = letter.event(backend).await? else {
                report.still_failing.push((letter.position, "the event is not in the log".to_owned()));
                continue;
            };
            let applied = match context.store.decode_event(&record) {
                Err(error) => Err(error.to_string()),
                Ok(event) => apply_caught(&mut *model.write().await, &envelope(record, event)),
            };
            match applied {
                Ok(()) => {
                    ledger.resolve(backend, letter.position).await?;
                    report.resolved += 1;
                }
                Err(reason) => report.still_failing.push((letter.position, reason)),
            }
        }
        if report.resolved > 0 && P::RESUME == Resume::FromCheckpoint {
            let position = self.shared.position();
            model.write().await.commit(position).await.map_err(|error| ProjectionError::Failed {
                name: self.shared.name.to_owned(),
                position,
                reason: format!("committing the read model failed: {error}"),
            })?;
        }
        self.shared.facts().dead_letters = ledger.open_count();
        Ok(report)
    }
}

impl<P> Registration<P> {
    /// Starts the live runner into `task`, which the caller holds locked, after checking that
    /// it can start.
    async fn start_locked<E: Event, B: EventStoreBackend + ?Sized + 'static>(
        &self,
        context: &Context<'_, E, B>,
        task: &mut Option<JoinHandle<Exit>>,
        catching_up: ProjectionState,
    ) -> Result<(), ProjectionError>
    where
        P: ReadModel<E>,
    {
        if task.as_ref().is_some_and(|task| !task.is_finished()) {
            return Err(ProjectionError::AlreadyRunning { name: self.shared.name.to_owned() });
        }
        let backend = context.store.backend();
        let (after, checkpoint) = match P::RESUME {
            Resume::FromScratch => (self.shared.position(), None),
            Resume::FromCheckpoint => {
                let name = self.checkpoint_name();
                let held = resume_point(backend, &self.shared, &name).await?;
                self.shared.reset(held.unwrap_or(0));
                (held.unwrap_or(0), Some((name, held)))
            }
        };
        let claim = context.claim(&self.shared, P::RESUME)?;
        let ledger = Ledger::load(backend, self.shared.name).await?;
        self.shared.facts().dead_letters = ledger.open_count();
        *self.ledger.lock().await = ledger;
        self.control.send_replace(Control::Run);
        // Shown before the task runs, so that a wait right after this call does not see
        // an earlier failure.
        self.shared.set_state(catching_up.clone());
        let runner = self.runner(context, self.slot.current(), Role::Live, after, checkpoint, catching_up, Some(claim));
        *task = Some(tokio::spawn(runner.run()));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn runner<E: Event, B: EventStoreBackend + ?Sized + 'static>(
        &self,
        context: &Context<'_, E, B>,
        model: Arc<RwLock<P>>,
        role: Role,
        after: u64,
        checkpoint: Option<(String, Option<u64>)>,
        catching_up: ProjectionState,
        claim: Option<Claim>,
    ) -> Runner<E, B, P>
    where
        P: ReadModel<E>,
    {
        Runner {
            store: context.store.clone(),
            shared: Arc::clone(&self.shared),
            model,
            ledger: Arc::clone(&self.ledger),
            policy: self.policy,
            options: context.options,
            control: self.control.subscribe(),
            role,
            catching_up,
            position: after,
            checkpoint,
            claim,
        }
    }
}
