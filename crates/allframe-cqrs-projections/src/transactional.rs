//! Transactional projections: where the read model lives with the store (PostgreSQL), its
//! handler writes in the transaction that moves its checkpoint
//! ([`CheckpointTransactions`]), so a crash never applies an event twice or skips one.
//!
//! A page of events is applied in one transaction, committed with the checkpoint at the
//! page's last position. When an event fails, that transaction is rolled back and the page
//! is applied again one event per transaction, so the events before the failed one land and
//! the failure policy deals with that one alone.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use allframe_cqrs_core::{
    BoxError, CheckpointTransactions, Envelope, Error, Event, EventStore, RecordedEvent, async_trait,
};
use futures_util::FutureExt;
use tokio::sync::{Mutex, RwLock, watch};
use tokio::task::JoinHandle;

use crate::dead_letter::Ledger;
use crate::error::ProjectionError;
use crate::handle::ReadModelHandle;
use crate::policy::{FailurePolicy, GiveUp};
use crate::read_model::Resume;
use crate::registry::{Context, Entry, ProjectionRegistry, Registration, RetryReport};
use crate::runner::{
    About, Claim, Control, Exit, Failure, RunOptions, handles, panic_message, read_page, record_dead_letter,
    resume_point, sample_lag, show_exit, take_over, wait_for_commits,
};
use crate::status::{ProjectionState, Shared};

/// A read model written in the store's own transactions: exactly-once.
///
/// `T` is the backend's transaction (for PostgreSQL, `allframe::cqrs::PgTransaction`, sqlx's):
/// write the read model with it, as `sqlx::query(..).execute(&mut **transaction)`.
#[async_trait]
pub trait TransactionalReadModel<E: Event, T: Send + 'static>: Send + Sync + 'static {
    /// The projection's stable name (see [`ReadModel::NAME`](crate::ReadModel::NAME)).
    const NAME: &'static str;
    /// The version of its logic; its checkpoint is `NAME@vVERSION`.
    const VERSION: u32 = 1;
    /// The event types it handles, by stored name; empty means every type.
    const EVENTS: &'static [&'static str] = &[];

    /// Applies one event in `transaction`. An error or a panic rolls the transaction back and
    /// is a failure under the projection's [`FailurePolicy`].
    async fn apply(&mut self, transaction: &mut T, event: &Envelope<E>) -> Result<(), BoxError>;

    /// Empties the read model in `transaction`, before a rebuild replays the log into it (in
    /// the transaction that sets its checkpoint back to 0). The default does nothing.
    async fn reset(&mut self, transaction: &mut T) -> Result<(), BoxError> {
        let _ = transaction;
        Ok(())
    }
}

impl<E: Event, B: CheckpointTransactions + 'static> ProjectionRegistry<E, B> {
    /// Registers a transactional read model (see [`TransactionalReadModel`]) with failure
    /// policy `policy`. With leases ([`with_leases`](Self::with_leases)) it runs in one
    /// application instance at a time.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::DuplicateName`] when a projection of that name is registered.
    pub fn register_transactional<P: TransactionalReadModel<E, B::Transaction>>(
        &self,
        factory: impl Fn() -> P + Send + Sync + 'static,
        policy: FailurePolicy,
    ) -> Result<ReadModelHandle<P>, ProjectionError> {
        self.add(
            Registration::new(P::NAME, P::VERSION, P::EVENTS, Resume::FromCheckpoint, factory, policy),
            |registration| Arc::new(Transactional(registration)),
        )
    }
}

/// A registration whose runner applies in transactions.
struct Transactional<P>(Registration<P>);

#[async_trait]
impl<E: Event, B: CheckpointTransactions + 'static, P: TransactionalReadModel<E, B::Transaction>> Entry<E, B>
    for Transactional<P>
{
    fn shared(&self) -> &Arc<Shared> {
        &self.0.shared
    }

    async fn is_running(&self) -> bool {
        self.0.task.lock().await.as_ref().is_some_and(|task| !task.is_finished())
    }

    async fn start(&self, context: &Context<'_, E, B>, catching_up: ProjectionState) -> Result<(), ProjectionError> {
        let mut task = self.0.task.lock().await;
        self.start_locked(context, &mut task, catching_up).await
    }

    async fn stop(&self) {
        let mut task = self.0.task.lock().await;
        self.0.stop_task(&mut task).await;
    }

    fn control(&self, control: Control) {
        self.0.control.send_replace(control);
    }

    async fn rebuild(&self, context: &Context<'_, E, B>) -> Result<(), ProjectionError> {
        let mut task = self.0.task.lock().await;
        self.0.stop_task(&mut task).await;
        let backend = context.store.backend();
        let name = self.0.checkpoint_name();
        let model = self.0.slot.current();
        let mut model = model.write().await;
        let mut transaction = backend.begin().await?;
        model
            .reset(&mut transaction)
            .await
            .map_err(|error| self.failed(0, format!("resetting the read model failed: {error}")))?;
        let held = backend.load_checkpoint(&name).await?;
        backend.commit_with_checkpoint(transaction, &name, held, 0).await?;
        drop(model);
        self.0.shared.reset(0);
        self.start_locked(context, &mut task, ProjectionState::Rebuilding).await
    }

    async fn rebuild_beside(&self, _context: &Context<'_, E, B>) -> Result<(), ProjectionError> {
        Err(ProjectionError::Unsupported {
            name: self.0.shared.name.to_owned(),
            what: "a rebuild beside a transactional read model (give the new version its own tables and \
                   VERSION, or rebuild it in place)",
        })
    }

    async fn retry_dead_letters(&self, context: &Context<'_, E, B>) -> Result<RetryReport, ProjectionError> {
        let backend = context.store.backend();
        let name = self.0.checkpoint_name();
        let mut ledger = self.0.ledger.lock().await;
        *ledger = Ledger::load(backend, self.0.shared.name).await?;
        let mut report = RetryReport::default();
        let model = self.0.slot.current();
        // The runner holds the model while it commits, so the checkpoint does not move here.
        let mut model = model.write().await;
        for letter in ledger.open() {
            let Some(record) = letter.event(backend).await? else {
                report.still_failing.push((letter.position, "the event is not in the log".to_owned()));
                continue;
            };
            let mut transaction = backend.begin().await?;
            match apply_in(&mut *model, &mut transaction, context.store, &record).await {
                Ok(()) => {
                    let held = backend.load_checkpoint(&name).await?;
                    backend.commit_with_checkpoint(transaction, &name, held, held.unwrap_or(0)).await?;
                    ledger.resolve(backend, letter.position).await?;
                    report.resolved += 1;
                }
                Err(failure) => report.still_failing.push((letter.position, failure.reason)),
            }
        }
        self.0.shared.facts().dead_letters = ledger.open_count();
        Ok(report)
    }
}

impl<P> Transactional<P> {
    fn failed(&self, position: u64, reason: String) -> ProjectionError {
        ProjectionError::Failed { name: self.0.shared.name.to_owned(), position, reason }
    }

    async fn start_locked<E: Event, B: CheckpointTransactions + 'static>(
        &self,
        context: &Context<'_, E, B>,
        task: &mut Option<JoinHandle<Exit>>,
        catching_up: ProjectionState,
    ) -> Result<(), ProjectionError>
    where
        P: TransactionalReadModel<E, B::Transaction>,
    {
        let registration = &self.0;
        if task.as_ref().is_some_and(|task| !task.is_finished()) {
            return Err(ProjectionError::AlreadyRunning { name: registration.shared.name.to_owned() });
        }
        let name = registration.checkpoint_name();
        let held = resume_point(context.store.backend(), &registration.shared, &name).await?;
        let claim = context.claim(&registration.shared, Resume::FromCheckpoint)?;
        registration.control.send_replace(Control::Run);
        registration.shared.set_state(catching_up.clone());
        let runner = TxRunner {
            store: context.store.clone(),
            shared: Arc::clone(&registration.shared),
            model: registration.slot.current(),
            ledger: Arc::clone(&registration.ledger),
            policy: registration.policy,
            options: context.options,
            control: registration.control.subscribe(),
            catching_up,
            name,
            held,
            position: held.unwrap_or(0),
            unanswered: None,
            claim: Some(claim),
        };
        *task = Some(tokio::spawn(runner.run()));
        Ok(())
    }
}

struct TxRunner<E, B: ?Sized, P> {
    store: EventStore<E, B>,
    shared: Arc<Shared>,
    model: Arc<RwLock<P>>,
    ledger: Arc<Mutex<Ledger>>,
    policy: FailurePolicy,
    options: RunOptions,
    control: watch::Receiver<Control>,
    catching_up: ProjectionState,
    /// The checkpoint's name, and the position it holds.
    name: String,
    held: Option<u64>,
    /// The position of the last event passed (committed with the checkpoint, or about to be).
    position: u64,
    /// A commit whose answer was lost (it may have landed), at this position.
    unanswered: Option<u64>,
    claim: Option<Claim>,
}

/// Why a page could not be committed as it was.
enum PageError {
    /// An event failed: apply the page one event at a time.
    Event,
    /// The store failed and nothing is known to be committed: read again from the position.
    Retry,
    /// The runner ends.
    Exit(Exit),
}

impl<E: Event, B: CheckpointTransactions + 'static, P: TransactionalReadModel<E, B::Transaction>> TxRunner<E, B, P> {
    async fn run(mut self) -> Exit {
        let exit = match self.claim().await {
            Ok(true) => self.run_inner().await,
            Ok(false) => Exit::Stopped,
            Err(error) => Exit::Failed(error),
        };
        show_exit(&self.shared, &exit, self.position);
        exit
    }

    /// Waits for the projection's lease when it has none yet (see the live runner's).
    async fn claim(&mut self) -> Result<bool, ProjectionError> {
        let Some(Claim::Wait(leases)) = &self.claim else { return Ok(true) };
        let leases = Arc::clone(leases);
        let backend = self.store.shared_backend();
        let taken =
            take_over(&*backend, &*leases, &self.name, &mut self.control, &self.shared, &self.ledger, self.options)
                .await?;
        let Some((lock, held)) = taken else { return Ok(false) };
        self.claim = Some(Claim::Held(lock));
        self.held = held;
        self.position = held.unwrap_or(0);
        self.shared.set_state(self.catching_up.clone());
        Ok(true)
    }

    async fn run_inner(&mut self) -> Exit {
        self.shared.set_state(self.catching_up.clone());
        self.shared.reset(self.position);
        let mut caught_up = false;
        loop {
            let control = *self.control.borrow_and_update();
            match control {
                Control::Stop => return Exit::Stopped,
                Control::Pause => {
                    self.shared.set_state(ProjectionState::Paused);
                    let _ = self.control.changed().await;
                    self.shared.set_state(if caught_up { ProjectionState::Running } else { self.catching_up.clone() });
                    continue;
                }
                Control::Run => {}
            }
            let Some(page) = read_page(self.store.backend(), &self.shared, self.position, self.options).await else {
                continue;
            };
            sample_lag(self.store.backend(), &self.shared, self.position, &page, self.options).await;
            if page.is_empty() {
                if !caught_up {
                    caught_up = true;
                    self.shared.set_state(ProjectionState::Running);
                }
                wait_for_commits(self.store.backend(), &self.shared, self.position, self.options, &mut self.control)
                    .await;
                continue;
            }
            let model = Arc::clone(&self.model);
            let mut model = model.write().await;
            let result = match self.apply_page(&mut model, &page).await {
                Err(PageError::Event) => self.apply_one_by_one(&mut model, &page).await,
                other => other,
            };
            match result {
                Ok(()) | Err(PageError::Retry | PageError::Event) => {}
                Err(PageError::Exit(exit)) => return exit,
            }
        }
    }

    /// The whole page in one transaction, committed with the checkpoint at its end.
    async fn apply_page(&mut self, model: &mut P, page: &[RecordedEvent]) -> Result<(), PageError> {
        let through = page.last().map_or(self.position, |record| record.position);
        let mut transaction = self.begin().await?;
        let mut applied = 0;
        for record in page.iter().filter(|record| handles(P::EVENTS, record)) {
            if apply_in(model, &mut transaction, &self.store, record).await.is_err() {
                return Err(PageError::Event);
            }
            applied += 1;
        }
        self.commit(transaction, through).await?;
        self.shared.advance(through, page.len() as u64, applied);
        Ok(())
    }

    /// One transaction per event, each failure under the failure policy.
    async fn apply_one_by_one(&mut self, model: &mut P, page: &[RecordedEvent]) -> Result<(), PageError> {
        let backend = self.store.shared_backend();
        for record in page {
            if !handles(P::EVENTS, record) {
                continue;
            }
            let mut attempts = 0;
            let failure = loop {
                attempts += 1;
                let mut transaction = self.begin().await?;
                match apply_in(model, &mut transaction, &self.store, record).await {
                    Ok(()) => {
                        self.commit(transaction, record.position).await?;
                        self.shared.advance(record.position, 1, 1);
                        break None;
                    }
                    Err(failure) if failure.retryable && attempts <= self.policy.retries => {
                        self.shared.metrics.failed();
                        drop(transaction);
                        tracing::warn!(projection = P::NAME, position = record.position, attempts, reason = %failure.reason, "apply failed; retrying");
                        tokio::time::sleep(self.policy.backoff_before(attempts)).await;
                        if *self.control.borrow() == Control::Stop {
                            return Err(PageError::Exit(Exit::Stopped));
                        }
                    }
                    Err(failure) => {
                        self.shared.metrics.failed();
                        break Some(Failure { reason: failure.reason, attempts });
                    }
                }
            };
            let Some(failure) = failure else { continue };
            match self.policy.give_up {
                GiveUp::Stop => {
                    return Err(PageError::Exit(Exit::Failed(ProjectionError::Failed {
                        name: P::NAME.to_owned(),
                        position: record.position,
                        reason: failure.reason,
                    })));
                }
                GiveUp::DeadLetter => {
                    record_dead_letter(&*backend, &self.ledger, &self.shared, About::of(record), failure)
                        .await
                        .map_err(|error| PageError::Exit(Exit::Failed(error.into())))?;
                    // Past it, with nothing written: the checkpoint alone.
                    let transaction = self.begin().await?;
                    self.commit(transaction, record.position).await?;
                    self.shared.advance(record.position, 1, 0);
                }
            }
        }
        // The events after the last handled one.
        let through = page.last().map_or(self.position, |record| record.position);
        if through > self.position {
            let transaction = self.begin().await?;
            self.commit(transaction, through).await?;
            self.shared.advance(through, 0, 0);
        }
        Ok(())
    }

    async fn begin(&self) -> Result<B::Transaction, PageError> {
        let mut wait = Duration::from_millis(50);
        loop {
            match self.store.backend().begin().await {
                Ok(transaction) => return Ok(transaction),
                Err(error) => {
                    self.shared.metrics.failed();
                    tracing::warn!(projection = P::NAME, %error, "opening a transaction failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    if *self.control.borrow() == Control::Stop {
                        return Err(PageError::Exit(Exit::Stopped));
                    }
                }
            }
        }
    }

    /// Commits `transaction` with the checkpoint at `through`. A conflict means another
    /// runner moved the checkpoint: this one stops, unless the checkpoint is where a commit
    /// of its own whose answer was lost put it. Other errors: read again from the position.
    async fn commit(&mut self, transaction: B::Transaction, through: u64) -> Result<(), PageError> {
        let committed = self.store.backend().commit_with_checkpoint(transaction, &self.name, self.held, through).await;
        match committed {
            Ok(()) => {
                self.held = Some(through);
                self.position = through;
                self.unanswered = None;
                self.shared.checkpointed(through);
                Ok(())
            }
            Err(Error::CheckpointConflict { actual, .. }) if actual.is_some() && actual == self.unanswered => {
                // The earlier commit landed after all: go on from it.
                self.held = actual;
                self.position = actual.unwrap_or(0);
                self.unanswered = None;
                self.shared.checkpointed(self.position);
                self.shared.advance(self.position, 0, 0);
                Err(PageError::Retry)
            }
            Err(error @ (Error::CheckpointConflict { .. } | Error::InvalidCheckpoint { .. })) => {
                self.shared.metrics.failed();
                Err(PageError::Exit(Exit::Failed(error.into())))
            }
            Err(error) => {
                self.shared.metrics.failed();
                tracing::warn!(projection = P::NAME, %error, "committing failed; reading the events again");
                self.unanswered = Some(through);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(PageError::Retry)
            }
        }
    }
}

/// A failed apply, and whether trying it again can help (not for an event that does not decode).
struct ApplyFailure {
    reason: String,
    retryable: bool,
}

/// Decodes `record` and applies it in `transaction`, catching a panic.
async fn apply_in<E: Event, B: CheckpointTransactions + ?Sized, P: TransactionalReadModel<E, B::Transaction>>(
    model: &mut P,
    transaction: &mut B::Transaction,
    store: &EventStore<E, B>,
    record: &RecordedEvent,
) -> Result<(), ApplyFailure> {
    let event =
        store.decode_event(record).map_err(|error| ApplyFailure { reason: error.to_string(), retryable: false })?;
    let envelope = Envelope {
        stream_id: record.stream_id.clone(),
        version: record.version,
        position: record.position,
        event,
        metadata: record.metadata.clone(),
    };
    match AssertUnwindSafe(model.apply(transaction, &envelope)).catch_unwind().await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(ApplyFailure { reason: error.to_string(), retryable: true }),
        Err(panic) => Err(ApplyFailure { reason: panic_message(&*panic), retryable: true }),
    }
}
