//! Defining a saga by orchestration: ordered [`Step`]s, each with an action, a compensation that
//! undoes it, a timeout and a [`Retry`] policy, checked by [`Saga::build`] before anything runs.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use allframe_cqrs_core::{Envelope, Event};

use crate::context::{StepContext, StepError};
use crate::error::SagaError;
use crate::route::{Routed, Router};

/// What a step or a compensation does, type-erased.
pub(crate) type Action = Arc<dyn Fn(StepContext) -> BoxFuture<'static, Result<Value, StepError>> + Send + Sync>;

fn action<F, Fut, T>(f: F) -> Action
where
    F: Fn(StepContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, StepError>> + Send + 'static,
    T: Serialize,
{
    Arc::new(move |context| {
        let run = f(context);
        Box::pin(async move {
            let output = run.await?;
            serde_json::to_value(output).map_err(|error| StepError::failed(format!("its output is not JSON: {error}")))
        })
    })
}

/// How often a step (or its compensation) is tried, and how long to wait between attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The wait before the second attempt; each next wait doubles, up to `max_backoff`.
    pub backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl Retry {
    /// One attempt, no retry.
    pub const fn never() -> Self {
        Retry { attempts: 1, backoff: Duration::ZERO, max_backoff: Duration::ZERO }
    }

    /// `attempts` in all, waiting `backoff` before the second, doubling up to 30 s.
    pub const fn times(attempts: u32, backoff: Duration) -> Self {
        Retry { attempts, backoff, max_backoff: Duration::from_secs(30) }
    }

    /// The longest wait between attempts.
    pub const fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// The wait after attempt `attempt` failed (1: before the second).
    pub(crate) fn wait_after(&self, attempt: u32) -> Duration {
        let doubled = self.backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        doubled.min(self.max_backoff.max(self.backoff))
    }
}

/// One step of a saga.
#[derive(Clone)]
pub struct Step {
    pub(crate) name: String,
    pub(crate) action: Action,
    pub(crate) compensation: Option<Action>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Retry,
    pub(crate) compensation_retry: Retry,
    /// A delay step's sleep.
    pub(crate) delay: Option<Duration>,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("compensated", &self.compensation.is_some())
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("delay", &self.delay)
            .finish()
    }
}

impl Step {
    /// A step called `name` (unique in its saga: its records and its commands' idempotency keys
    /// name it) doing `action`, tried once, without a timeout or a compensation.
    pub fn new<F, Fut, T>(name: &str, action: F) -> Self
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StepError>> + Send + 'static,
        T: Serialize,
    {
        Step {
            name: name.to_owned(),
            action: self::action(action),
            compensation: None,
            timeout: None,
            retry: Retry::never(),
            compensation_retry: Retry::times(5, Duration::from_millis(100)),
            delay: None,
        }
    }

    /// A step that only waits, for `delay` ("send the reminder three days later"). The time it
    /// wakes is stored when it begins, so it passes while no process runs, and a process that
    /// starts after it wakes the saga at once; the wait holds no slot of
    /// [`max_concurrent_steps`](crate::SagaOrchestratorBuilder::max_concurrent_steps).
    pub fn delay(name: &str, delay: Duration) -> Self {
        let mut step = Step::new(name, |_ctx: StepContext| async { Ok::<_, StepError>(()) });
        step.delay = Some(delay);
        step
    }

    /// What undoes the step when a later step fails (or this one times out), run with the
    /// step's context (its output under its own name).
    pub fn compensate<F, Fut, T>(mut self, compensation: F) -> Self
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StepError>> + Send + 'static,
        T: Serialize,
    {
        self.compensation = Some(action(compensation));
        self
    }

    /// An attempt not done within `timeout` has failed and is compensated (it may have partly
    /// run). The deadline is stored, so it also passes while no process runs the saga.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How often the step is tried before the saga compensates.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// How often the compensation is tried before the instance waits for an operator (default:
    /// 5 attempts from 100 ms).
    pub fn compensation_retry(mut self, retry: Retry) -> Self {
        self.compensation_retry = retry;
        self
    }
}

/// A saga: a name and ordered steps.
#[derive(Clone, Debug)]
pub struct Saga {
    name: String,
    steps: Vec<Step>,
    router: Option<Router>,
}

/// A checked saga, ready for a [`SagaOrchestrator`](crate::SagaOrchestrator).
#[derive(Clone, Debug)]
pub struct SagaDefinition {
    pub(crate) name: Arc<str>,
    pub(crate) steps: Arc<[Step]>,
    /// What begins an instance from an event, if anything does.
    pub(crate) router: Option<Router>,
}

impl SagaDefinition {
    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The steps' names, in order.
    pub fn steps(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|step| step.name.as_str())
    }

    pub(crate) fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|step| step.name == name)
    }
}

/// Whether `name` may name a saga, a step or a timer: it goes into stream ids and idempotency
/// keys.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Saga {
    /// A saga called `name` (letters, digits, `-`, `_`, `.`; at most 64 bytes).
    pub fn new(name: &str) -> Self {
        Saga { name: name.to_owned(), steps: Vec::new(), router: None }
    }

    /// Begins an instance for each event that `start` maps to an instance id and an input
    /// (`None`: not this saga's). The orchestrator's router reads the log after the position it
    /// had reached when the saga first ran (events stored before are not its business) and
    /// begins each instance once: a second event mapped to a running id is passed over, as a
    /// second [`SagaOrchestrator::begin`](crate::SagaOrchestrator::begin) would be refused.
    ///
    /// Events are decoded as `E` when their stored type is one of `E::EVENT_TYPES` (every
    /// type when `E` lists none; then an event that does not decode as `E` is not this saga's).
    pub fn start_on<E, I, F>(mut self, start: F) -> Self
    where
        E: Event,
        I: Serialize,
        F: Fn(&Envelope<E>) -> Option<(String, I)> + Send + Sync + 'static,
    {
        self.router = Some(Router::typed::<E, _>(&[], move |envelope| {
            let (id, input) = start(envelope)?;
            Some(match serde_json::to_value(input) {
                Ok(input) => Routed::Begin { id, input },
                Err(error) => Routed::Refused(format!("its input is not JSON: {error}")),
            })
        }));
        self
    }

    /// Adds `step` after the others.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Checks the saga: a valid name, at least one step, step names valid and distinct, every
    /// retry policy with at least one attempt.
    ///
    /// # Errors
    ///
    /// [`SagaError::Definition`] saying what is wrong.
    pub fn build(self) -> Result<SagaDefinition, SagaError> {
        let refuse = |problem: String| Err(SagaError::Definition { saga: self.name.clone(), problem });
        if !valid_name(&self.name) {
            return refuse("the name must be 1 to 64 letters, digits, `-`, `_` or `.`".into());
        }
        if self.steps.is_empty() {
            return refuse("it has no steps".into());
        }
        let mut names = BTreeSet::new();
        for step in &self.steps {
            if !valid_name(&step.name) {
                return refuse(format!(
                    "step `{}`: a name must be 1 to 64 letters, digits, `-`, `_` or `.`",
                    step.name
                ));
            }
            if !names.insert(step.name.as_str()) {
                return refuse(format!("two steps are called `{}`", step.name));
            }
            if step.retry.attempts == 0 || step.compensation_retry.attempts == 0 {
                return refuse(format!("step `{}`: a retry policy needs at least one attempt", step.name));
            }
        }
        Ok(SagaDefinition { name: self.name.into(), steps: self.steps.into(), router: self.router })
    }
}
