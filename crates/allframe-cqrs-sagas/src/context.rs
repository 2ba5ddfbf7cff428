//! What a step's action gets ([`StepContext`]: the saga's input, earlier steps' outputs, and a
//! command bus whose dispatches carry idempotency keys derived from the instance and the step)
//! and how it fails ([`StepError`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use allframe_cqrs_commands::{Command, CommandBus, CommandOptions, DispatchError, Outcome};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a step's attempt failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// It will fail again (a refused command, bad input): no retry, the saga compensates.
    #[error("{0}")]
    Failed(String),
    /// It may pass later (a conflict, a store error): retried under the step's policy.
    #[error("{0}")]
    Transient(String),
}

impl StepError {
    /// A failure that will not pass by trying again.
    pub fn failed(reason: impl Into<String>) -> Self {
        StepError::Failed(reason.into())
    }

    /// A failure worth another attempt.
    pub fn transient(reason: impl Into<String>) -> Self {
        StepError::Transient(reason.into())
    }
}

impl<E: std::error::Error> From<DispatchError<E>> for StepError {
    fn from(error: DispatchError<E>) -> Self {
        match error {
            DispatchError::Conflict { .. } | DispatchError::Store(_) => StepError::Transient(error.to_string()),
            _ => StepError::Failed(error.to_string()),
        }
    }
}

/// Which way a step's action goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Do,
    Undo,
}

/// What a step's action (or compensation) works with.
#[derive(Debug)]
pub struct StepContext {
    pub(crate) saga: Arc<str>,
    pub(crate) id: Arc<str>,
    pub(crate) step: String,
    pub(crate) direction: Direction,
    pub(crate) attempt: u32,
    pub(crate) input: Arc<Value>,
    pub(crate) outputs: Arc<Vec<(String, Value)>>,
    pub(crate) bus: CommandBus,
    pub(crate) dispatched: AtomicU32,
}

impl StepContext {
    /// The instance's id.
    pub fn saga_id(&self) -> &str {
        &self.id
    }

    /// The step's name.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// The command bus the saga dispatches through (and, by `bus().backend()`, its store), for
    /// what `dispatch` does not cover; effects sent without `dispatch` need their own
    /// idempotency (`idempotency_key`).
    pub fn bus(&self) -> &CommandBus {
        &self.bus
    }

    /// Which attempt this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The saga's input.
    ///
    /// # Errors
    ///
    /// It does not decode as `T` (a failure: no retry).
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        T::deserialize(&*self.input).map_err(|error| StepError::failed(format!("the saga's input: {error}")))
    }

    /// What step `step` returned (in a compensation, the step's own output too).
    ///
    /// # Errors
    ///
    /// It has not run, or its output does not decode as `T`.
    pub fn output<T: DeserializeOwned>(&self, step: &str) -> Result<T, StepError> {
        let (_, output) = self
            .outputs
            .iter()
            .find(|(name, _)| name == step)
            .ok_or_else(|| StepError::failed(format!("step `{step}` has no output")))?;
        T::deserialize(output).map_err(|error| StepError::failed(format!("the output of `{step}`: {error}")))
    }

    /// The idempotency key of this step's `n`th effect (from 0): the same in every attempt and
    /// after every restart, so a receiver that keeps keys ignores a repeat. For effects outside
    /// the command bus (an HTTP call with an `Idempotency-Key` header).
    pub fn idempotency_key(&self, n: u32) -> String {
        let direction = match self.direction {
            Direction::Do => "do",
            Direction::Undo => "undo",
        };
        format!("saga:{}:{}:{}:{direction}:{n}", self.saga, self.id, self.step)
    }

    /// Dispatches `command` under the idempotency key of this step's next effect: if an earlier
    /// attempt (before a crash, or one that timed out) already ran it, the bus answers with
    /// that first outcome and nothing runs twice.
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
}
