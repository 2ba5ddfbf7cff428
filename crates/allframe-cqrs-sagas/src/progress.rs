//! Where an instance is, folded from its records, and what it does next: the one place that
//! decides, so that a runner resuming after a crash and one that never stopped decide alike.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::definition::SagaDefinition;
use crate::record::Record;

/// The state an instance is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SagaState {
    /// Running its steps.
    Running,
    /// Waiting to try a step or a compensation again, until the time given (µs since the epoch).
    Waiting {
        /// When the next attempt starts.
        until: i64,
    },
    /// Undoing its steps after one failed.
    Compensating,
    /// A compensation failed every attempt: waiting for an operator to resume it.
    Stuck {
        /// The step whose compensation failed.
        step: String,
        /// Its last error.
        error: String,
    },
    /// Every step succeeded.
    Completed,
    /// A step failed and every step before it was undone.
    RolledBack {
        /// The step that failed.
        step: String,
        /// Why.
        reason: String,
    },
}

impl SagaState {
    /// Whether nothing more will happen to the instance.
    pub fn is_finished(&self) -> bool {
        matches!(self, SagaState::Completed | SagaState::RolledBack { .. })
    }

    /// A one-word name for lists.
    pub fn label(&self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Waiting { .. } => "waiting",
            SagaState::Compensating => "compensating",
            SagaState::Stuck { .. } => "stuck",
            SagaState::Completed => "completed",
            SagaState::RolledBack { .. } => "rolled back",
        }
    }
}

/// An attempt that began and has not ended (its process may have died during it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Open {
    pub(crate) step: String,
    pub(crate) attempt: u32,
    pub(crate) deadline: Option<i64>,
}

/// An instance as its records left it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// The saga's input.
    pub input: Value,
    /// The steps done, with their outputs, in order.
    pub outputs: Vec<(String, Value)>,
    /// The stream's version after the last record (what the next append expects).
    pub version: u64,
    /// Every record, in order.
    pub history: Vec<Record>,
    started: bool,
    /// The forward attempt under way, if any.
    open: Option<Open>,
    /// The last failed attempt of the current step and when to try again.
    failed: Option<(String, u32, Option<i64>)>,
    /// The step that failed for good (or timed out), and why: the saga compensates.
    failure: Option<(String, String)>,
    /// The step that timed out (compensated with the done ones).
    timed_out: Option<String>,
    compensated: Vec<String>,
    /// The compensation attempt under way.
    undoing: Option<Open>,
    /// The last failed compensation attempt and when to try again.
    undo_failed: Option<(String, u32, Option<i64>)>,
    finished: Option<Record>,
    /// Attempts at compensating, per step, since the last resume.
    undo_attempts: BTreeMap<String, u32>,
}

/// What an instance does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Attempt `attempt` of step `step`; `begun`: its `StepStarted` is already recorded (a
    /// runner died during it), so it runs again under the same deadline and idempotency keys.
    Run { step: String, attempt: u32, deadline: Option<i64>, begun: bool },
    /// The attempt under way passed its deadline.
    TimeOut { step: String, attempt: u32 },
    /// Attempt `attempt` at undoing `step` (`begun` as for `Run`).
    Undo { step: String, attempt: u32, deadline: Option<i64>, begun: bool },
    /// Nothing until then (µs since the epoch).
    Wait { until: i64 },
    /// The last record: every step done.
    Complete,
    /// The last record: compensation done.
    RollBack { step: String, reason: String },
    /// Nothing until an operator resumes it.
    Stuck,
    /// Nothing ever again.
    Finished,
}

impl Progress {
    /// Folds `records` (the instance's stream, in order).
    pub fn fold(records: impl IntoIterator<Item = Record>) -> Progress {
        let mut progress = Progress::default();
        for record in records {
            progress.apply(record);
        }
        progress
    }

    /// Whether the instance has begun (its stream holds `Started`).
    pub fn started(&self) -> bool {
        self.started
    }

    pub(crate) fn apply(&mut self, record: Record) {
        self.version += 1;
        match &record {
            Record::Started { input } => {
                self.started = true;
                self.input = input.clone();
            }
            Record::StepStarted { step, attempt, deadline } => {
                self.open = Some(Open { step: step.clone(), attempt: *attempt, deadline: *deadline });
            }
            Record::StepCompleted { step, output } => {
                self.open = None;
                self.failed = None;
                self.outputs.push((step.clone(), output.clone()));
            }
            Record::StepFailed { step, attempt, error, retry_at } => {
                self.open = None;
                self.failed = Some((step.clone(), *attempt, *retry_at));
                if retry_at.is_none() {
                    self.failure = Some((step.clone(), error.clone()));
                }
            }
            Record::StepTimedOut { step, attempt } => {
                self.open = None;
                self.timed_out = Some(step.clone());
                self.failure = Some((step.clone(), format!("attempt {attempt} timed out")));
            }
            Record::CompensationStarted { step, attempt, deadline } => {
                self.undoing = Some(Open { step: step.clone(), attempt: *attempt, deadline: *deadline });
                self.undo_attempts.insert(step.clone(), *attempt);
            }
            Record::Compensated { step } => {
                self.undoing = None;
                self.undo_failed = None;
                self.compensated.push(step.clone());
            }
            Record::CompensationFailed { step, attempt, retry_at, .. } => {
                self.undoing = None;
                self.undo_failed = Some((step.clone(), *attempt, *retry_at));
            }
            Record::Resumed => {
                self.undo_failed = None;
                self.undo_attempts.clear();
            }
            Record::Completed | Record::RolledBack { .. } => self.finished = Some(record.clone()),
        }
        self.history.push(record);
    }

    /// The state the instance is in, as lists and operators see it.
    pub fn state(&self) -> SagaState {
        match &self.finished {
            Some(Record::RolledBack { step, reason }) => {
                return SagaState::RolledBack { step: step.clone(), reason: reason.clone() };
            }
            Some(_) => return SagaState::Completed,
            None => {}
        }
        if self.failure.is_some() {
            return match &self.undo_failed {
                Some((step, _, None)) => SagaState::Stuck { step: step.clone(), error: self.last_undo_error() },
                Some((_, _, Some(until))) if self.undoing.is_none() => SagaState::Waiting { until: *until },
                _ => SagaState::Compensating,
            };
        }
        match &self.failed {
            Some((_, _, Some(until))) if self.open.is_none() => SagaState::Waiting { until: *until },
            _ => SagaState::Running,
        }
    }

    fn last_undo_error(&self) -> String {
        self.history
            .iter()
            .rev()
            .find_map(|record| match record {
                Record::CompensationFailed { error, .. } => Some(error.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The steps to undo, last first: those done (with a compensation), then the one that
    /// timed out, less those undone.
    fn to_undo<'d>(&self, saga: &'d SagaDefinition) -> impl Iterator<Item = &'d str> + use<'d, '_> {
        let done = self.outputs.iter().map(|(step, _)| step.as_str());
        let all: Vec<&str> = done.chain(self.timed_out.as_deref()).collect();
        saga.steps
            .iter()
            .rev()
            .filter(move |step| all.contains(&step.name.as_str()) && step.compensation.is_some())
            .map(|step| step.name.as_str())
            .filter(move |step| !self.compensated.iter().any(|undone| undone == step))
    }

    /// What the instance does next at time `now` (µs since the epoch).
    pub(crate) fn next(&self, saga: &SagaDefinition, now: i64) -> Next {
        if self.finished.is_some() {
            return Next::Finished;
        }
        if let Some((failed_step, reason)) = &self.failure {
            let Some(step) = self.to_undo(saga).next() else {
                return Next::RollBack { step: failed_step.clone(), reason: reason.clone() };
            };
            if let Some(open) = self.undoing.as_ref().filter(|open| open.step == step) {
                return Next::Undo {
                    step: step.to_owned(),
                    attempt: open.attempt,
                    deadline: open.deadline,
                    begun: true,
                };
            }
            let attempt = self.undo_attempts.get(step).copied().unwrap_or(0) + 1;
            return match &self.undo_failed {
                Some((failed, _, None)) if failed == step => Next::Stuck,
                Some((failed, _, Some(until))) if failed == step && *until > now => Next::Wait { until: *until },
                _ => Next::Undo { step: step.to_owned(), attempt, deadline: None, begun: false },
            };
        }
        let Some(step) = saga.steps.get(self.outputs.len()) else { return Next::Complete };
        if let Some(open) = &self.open {
            if open.deadline.is_some_and(|deadline| deadline <= now) {
                return Next::TimeOut { step: open.step.clone(), attempt: open.attempt };
            }
            return Next::Run { step: open.step.clone(), attempt: open.attempt, deadline: open.deadline, begun: true };
        }
        match &self.failed {
            Some((failed, _, Some(until))) if *failed == step.name && *until > now => Next::Wait { until: *until },
            Some((failed, attempt, _)) if *failed == step.name => {
                Next::Run { step: step.name.clone(), attempt: attempt + 1, deadline: None, begun: false }
            }
            _ => Next::Run { step: step.name.clone(), attempt: 1, deadline: None, begun: false },
        }
    }
}
