//! Sagas by choreography: a handler that reacts to events (and to its own timers) and decides
//! the next commands, with its state kept in the instance's stream. The orchestrator routes
//! each event to the instance [`Choreography::correlate`] names; the instance reacts to what it
//! received one thing at a time, in order, each reaction recorded as intended before it runs
//! and as done (with the new state and timers) after.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use allframe_cqrs_commands::{Command, CommandBus, CommandOptions, Outcome};
use allframe_cqrs_core::{Codec, Envelope, Event, RecordedEvent, async_trait};
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::StepError;
use crate::definition::{Retry, valid_name};
use crate::record::{Trigger, now_micros};
use crate::route::{Routed, Router};

/// Which instance of a choreography an event belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Correlation {
    /// The instance with this id, begun by this event if it does not exist yet.
    Start(String),
    /// The instance with this id, if it exists and has not completed; otherwise the event is
    /// passed over and counted ([`RouterStatus::uncorrelated`](crate::RouterStatus)).
    Continue(String),
    /// Not this choreography's business.
    Ignore,
}

/// A saga written as reactions: to the events it correlates, to its own timers, and to its
/// beginning when an application begins it by id ([`SagaOrchestrator::begin`](crate::SagaOrchestrator::begin)).
///
/// Its effects happen once as seen from outside: the commands a reaction dispatches through
/// [`Reaction::dispatch`] carry idempotency keys derived from the instance, what it reacts to
/// and the command's place in the reaction, so a reaction run again (after a crash, or a
/// transient failure) is answered with the first outcomes. Like a step's action, a reaction
/// should dispatch the same commands in the same order when it runs again.
///
/// ```
/// use allframe_cqrs_core::{Envelope, Event, async_trait};
/// use allframe_cqrs_sagas::{Choreography, Correlation, Reaction, StepError};
/// use serde::{Deserialize, Serialize};
/// use std::time::Duration;
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// enum OrderEvent { Placed { order: String }, Paid { order: String } }
/// impl Event for OrderEvent {}
///
/// /// Reminds a customer who has not paid three days after ordering.
/// struct PaymentReminder;
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Reminded { times: u32 }
///
/// #[async_trait]
/// impl Choreography for PaymentReminder {
///     const NAME: &'static str = "payment-reminder";
///     type Event = OrderEvent;
///     type State = Reminded;
///
///     fn correlate(&self, event: &Envelope<OrderEvent>) -> Correlation {
///         match &event.event {
///             OrderEvent::Placed { order } => Correlation::Start(order.clone()),
///             OrderEvent::Paid { order } => Correlation::Continue(order.clone()),
///         }
///     }
///
///     async fn react(&self, _: &mut Reminded, event: &Envelope<OrderEvent>, ctx: &mut Reaction) -> Result<(), StepError> {
///         match event.event {
///             OrderEvent::Placed { .. } => ctx.schedule("remind", Duration::from_secs(3 * 24 * 3600))?,
///             OrderEvent::Paid { .. } => ctx.complete(),
///         }
///         Ok(())
///     }
///
///     async fn wake(&self, state: &mut Reminded, _timer: &str, ctx: &mut Reaction) -> Result<(), StepError> {
///         state.times += 1; // ctx.dispatch(SendReminder { .. }).await?;
///         ctx.complete();
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Choreography: Send + Sync + 'static {
    /// The stable name: the instances' streams (`$allframe-saga:NAME:ID`), their commands'
    /// idempotency keys and the router's checkpoint are kept under it.
    const NAME: &'static str;
    /// The stored event types it reacts to; empty: `Event::EVENT_TYPES` of its event type (or,
    /// when that lists none, every event that decodes as one). Others are passed over undecoded.
    const EVENTS: &'static [&'static str] = &[];
    /// Whether the router starts at the beginning of the log the first time the choreography
    /// runs on a store, rather than at its head (the default: a new process manager reacts to
    /// what happens from now on, not to every order ever placed).
    const FROM_BEGINNING: bool = false;

    /// The events it reacts to.
    type Event: Event;
    /// What an instance remembers between reactions (stored as JSON with each reaction).
    type State: Default + Serialize + DeserializeOwned + Send + Sync;

    /// Which instance `event` belongs to.
    fn correlate(&self, event: &Envelope<Self::Event>) -> Correlation;

    /// Reacts to `event`, routed to this instance.
    ///
    /// # Errors
    ///
    /// [`StepError::Transient`] is retried under [`retry`](Self::retry); a failure (or a panic,
    /// or transient failures past the policy) leaves the instance stuck on this event, visible,
    /// until an operator resumes it.
    async fn react(
        &self,
        state: &mut Self::State,
        event: &Envelope<Self::Event>,
        ctx: &mut Reaction,
    ) -> Result<(), StepError>;

    /// Reacts to timer `timer` (set by [`Reaction::schedule`]) coming due; the default does
    /// nothing.
    ///
    /// # Errors
    ///
    /// As for [`react`](Self::react).
    async fn wake(&self, state: &mut Self::State, timer: &str, ctx: &mut Reaction) -> Result<(), StepError> {
        let _ = (state, timer, ctx);
        Ok(())
    }

    /// Reacts to being begun by id with `input` ([`SagaOrchestrator::begin`](crate::SagaOrchestrator::begin));
    /// the default does nothing.
    ///
    /// # Errors
    ///
    /// As for [`react`](Self::react).
    async fn begin(&self, state: &mut Self::State, input: &Value, ctx: &mut Reaction) -> Result<(), StepError> {
        let _ = (state, input, ctx);
        Ok(())
    }

    /// How often a reaction is tried when it fails with [`StepError::Transient`] (default: 5
    /// attempts from 100 ms).
    fn retry(&self) -> Retry {
        Retry::times(5, Duration::from_millis(100))
    }
}

/// What a reaction works with: the command bus under derived idempotency keys, the instance's
/// timers, and a way to say the instance is done.
#[derive(Debug)]
pub struct Reaction {
    pub(crate) saga: Arc<str>,
    pub(crate) id: Arc<str>,
    pub(crate) trigger: Trigger,
    pub(crate) attempt: u32,
    pub(crate) bus: CommandBus,
    pub(crate) dispatched: AtomicU32,
    pub(crate) timers: BTreeMap<String, i64>,
    pub(crate) completed: bool,
}

impl Reaction {
    /// The instance's id.
    pub fn saga_id(&self) -> &str {
        &self.id
    }

    /// What the instance reacts to.
    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }

    /// Which attempt this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The command bus (and, by `bus().backend()`, the store), for what `dispatch` does not
    /// cover; effects sent without `dispatch` need their own idempotency (`idempotency_key`).
    pub fn bus(&self) -> &CommandBus {
        &self.bus
    }

    /// The idempotency key of this reaction's `n`th effect (from 0): the same in every attempt
    /// and after every restart.
    pub fn idempotency_key(&self, n: u32) -> String {
        format!("saga:{}:{}:{}:{n}", self.saga, self.id, self.trigger.key())
    }

    /// Dispatches `command` under the idempotency key of this reaction's next effect: if an
    /// earlier attempt already ran it, the bus answers with that first outcome.
    ///
    /// # Errors
    ///
    /// A refusal or an invalid command is [`StepError::Failed`]; a conflict or a store error
    /// [`StepError::Transient`].
    pub async fn dispatch<C: Command>(&self, command: C) -> Result<Outcome, StepError> {
        let n = self.dispatched.fetch_add(1, Ordering::Relaxed);
        let options = CommandOptions::new().idempotency_key(self.idempotency_key(n));
        Ok(self.bus.dispatch_with(command, options).await?)
    }

    /// Sets timer `name` to fire `after` from now (replacing a timer of that name). It is
    /// stored with the reaction, so it fires after a restart too, at once if its time passed
    /// while no process ran; [`Choreography::wake`] reacts to it.
    ///
    /// # Errors
    ///
    /// A name that is not 1 to 64 letters, digits, `-`, `_` or `.` ([`StepError::Failed`]).
    pub fn schedule(&mut self, name: &str, after: Duration) -> Result<(), StepError> {
        if !valid_name(name) {
            return Err(StepError::failed(format!(
                "timer `{name}`: a name must be 1 to 64 letters, digits, `-`, `_` or `.`"
            )));
        }
        let at = now_micros().saturating_add(i64::try_from(after.as_micros()).unwrap_or(i64::MAX));
        self.timers.insert(name.to_owned(), at);
        Ok(())
    }

    /// Cancels timer `name` (nothing happens if it is not set).
    pub fn cancel(&mut self, name: &str) {
        self.timers.remove(name);
    }

    /// The timers set, with when each fires (µs since the epoch).
    pub fn timers(&self) -> &BTreeMap<String, i64> {
        &self.timers
    }

    /// Ends the instance once this reaction is recorded: later events routed to it are passed
    /// over, its timers never fire.
    pub fn complete(&mut self) {
        self.completed = true;
    }
}

/// What a reaction is given, before it is decoded for the choreography.
pub(crate) enum Input<'a> {
    Begin(&'a Value),
    Event(RecordedEvent),
    Timer(&'a str),
}

/// A choreography, type-erased for the orchestrator.
pub(crate) trait Reactor: Send + Sync {
    fn name(&self) -> &'static str;
    fn router(&self) -> Router;
    fn reads_history(&self) -> bool;
    fn retry(&self) -> Retry;
    /// Runs one reaction on `state` (null: the state's default); the new state.
    fn react<'a>(
        &'a self,
        state: &'a Value,
        input: Input<'a>,
        codec: Codec,
        ctx: &'a mut Reaction,
    ) -> BoxFuture<'a, Result<Value, StepError>>;
}

/// A typed choreography behind [`Reactor`].
pub(crate) struct Typed<C>(pub(crate) Arc<C>);

impl<C: Choreography> Reactor for Typed<C> {
    fn name(&self) -> &'static str {
        C::NAME
    }

    fn router(&self) -> Router {
        let choreography = Arc::clone(&self.0);
        Router::typed::<C::Event, _>(C::EVENTS, move |envelope| match choreography.correlate(envelope) {
            Correlation::Start(id) => Some(Routed::Start(id)),
            Correlation::Continue(id) => Some(Routed::Continue(id)),
            Correlation::Ignore => None,
        })
    }

    fn reads_history(&self) -> bool {
        C::FROM_BEGINNING
    }

    fn retry(&self) -> Retry {
        self.0.retry()
    }

    fn react<'a>(
        &'a self,
        state: &'a Value,
        input: Input<'a>,
        codec: Codec,
        ctx: &'a mut Reaction,
    ) -> BoxFuture<'a, Result<Value, StepError>> {
        Box::pin(async move {
            let mut typed: C::State = match state {
                Value::Null => C::State::default(),
                state => C::State::deserialize(state)
                    .map_err(|error| StepError::failed(format!("its stored state does not decode: {error}")))?,
            };
            match input {
                Input::Begin(input) => self.0.begin(&mut typed, input, ctx).await?,
                Input::Timer(name) => self.0.wake(&mut typed, name, ctx).await?,
                Input::Event(record) => {
                    let event = codec.decode::<C::Event>(&record.payload).map_err(|error| {
                        StepError::failed(format!("event {} does not decode: {error}", record.event_type))
                    })?;
                    let envelope = Envelope {
                        stream_id: record.stream_id,
                        version: record.version,
                        position: record.position,
                        event,
                        metadata: record.metadata,
                    };
                    self.0.react(&mut typed, &envelope, ctx).await?;
                }
            }
            serde_json::to_value(&typed).map_err(|error| StepError::failed(format!("its state is not JSON: {error}")))
        })
    }
}
