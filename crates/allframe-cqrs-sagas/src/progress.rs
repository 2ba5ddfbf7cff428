//! Where an instance is, folded from its records, and what it does next: the one place that
//! decides, so that a runner resuming after a crash and one that never stopped decide alike.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

use crate::definition::SagaDefinition;
use crate::record::{Record, Trigger};

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
    /// A choreography's state after its last reaction, as JSON (null before the first, and for
    /// orchestrations).
    pub data: Value,
    started: bool,
    /// A delay step asleep, and until when.
    sleeping: Option<(String, i64)>,
    /// Whether the instance is a choreography's (it received something to react to).
    choreography: bool,
    /// What a choreography received and has not reacted to yet, in order.
    inbox: VecDeque<Trigger>,
    /// The highest log position routed to it.
    routed_through: u64,
    /// A choreography's timers: name and when each fires.
    timers: BTreeMap<String, i64>,
    /// The reaction under way (its process may have died during it).
    reacting: Option<(Trigger, u32)>,
    /// The last failed reaction: its trigger, attempt, when to try again (none: stuck), why.
    reaction_failed: Option<(Trigger, u32, Option<i64>, String)>,
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
    /// A delay step begins: it sleeps until `until`.
    Sleep { step: String, until: i64 },
    /// A delay step's time has come: it is done.
    Wake { step: String },
    /// Nothing ever again.
    Finished,
}

/// What a choreography's instance does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NextReaction {
    /// React to `trigger` (`begun`: its `Reacting` is already recorded, as for [`Next::Run`]).
    React { trigger: Trigger, attempt: u32, begun: bool },
    /// Nothing until then (a timer, or a retry).
    Wait { until: i64 },
    /// Nothing until something is routed to it (or it is resumed).
    Idle,
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
                self.sleeping = None;
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
                // A stuck reaction is tried again at once, from its first attempt.
                if let Some((trigger, _, None, error)) = self.reaction_failed.take() {
                    self.reaction_failed = Some((trigger, 0, Some(i64::MIN), error));
                }
            }
            Record::Sleeping { step, until } => self.sleeping = Some((step.clone(), *until)),
            Record::Received { trigger } => {
                self.choreography = true;
                match trigger {
                    // Routed before (the router ran again after a crash): already queued.
                    Trigger::Event { position, .. } if *position <= self.routed_through => {}
                    Trigger::Event { position, .. } => {
                        self.routed_through = *position;
                        self.inbox.push_back(trigger.clone());
                    }
                    _ => self.inbox.push_back(trigger.clone()),
                }
            }
            Record::Reacting { trigger, attempt } => self.reacting = Some((trigger.clone(), *attempt)),
            Record::Reacted { trigger, state, timers } => {
                self.reacting = None;
                self.reaction_failed = None;
                if self.inbox.front() == Some(trigger) {
                    self.inbox.pop_front();
                }
                self.data = state.clone();
                self.timers = timers.clone();
            }
            Record::ReactionFailed { trigger, attempt, error, retry_at } => {
                self.reacting = None;
                self.reaction_failed = Some((trigger.clone(), *attempt, *retry_at, error.clone()));
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
        if self.choreography {
            return self.reaction_state();
        }
        if self.failure.is_some() {
            return match &self.undo_failed {
                Some((step, _, None)) => SagaState::Stuck { step: step.clone(), error: self.last_undo_error() },
                Some((_, _, Some(until))) if self.undoing.is_none() => SagaState::Waiting { until: *until },
                _ => SagaState::Compensating,
            };
        }
        if let Some((_, until)) = &self.sleeping {
            return SagaState::Waiting { until: *until };
        }
        match &self.failed {
            Some((_, _, Some(until))) if self.open.is_none() => SagaState::Waiting { until: *until },
            _ => SagaState::Running,
        }
    }

    /// A choreography's state: stuck on a reaction, waiting for a retry or a timer, or running
    /// (reacting, or ready to react to what comes).
    fn reaction_state(&self) -> SagaState {
        match &self.reaction_failed {
            Some((trigger, _, None, error)) => {
                return SagaState::Stuck { step: trigger.to_string(), error: error.clone() };
            }
            Some((_, _, Some(until), _)) if self.reacting.is_none() => return SagaState::Waiting { until: *until },
            _ => {}
        }
        if self.reacting.is_some() || !self.inbox.is_empty() {
            return SagaState::Running;
        }
        match self.timers.values().min() {
            Some(until) => SagaState::Waiting { until: *until },
            None => SagaState::Running,
        }
    }

    /// A choreography's timers: name and when each fires (µs since the epoch).
    pub fn timers(&self) -> &BTreeMap<String, i64> {
        &self.timers
    }

    /// Whether the instance is a choreography's.
    pub fn is_choreography(&self) -> bool {
        self.choreography
    }

    /// What a choreography's instance does next at time `now`: a reaction under way first (a
    /// runner died during it), then a failed one when its retry is due, then what it received
    /// in order, then its timers as they come due.
    pub(crate) fn next_reaction(&self, now: i64) -> NextReaction {
        if let Some((trigger, attempt)) = &self.reacting {
            return NextReaction::React { trigger: trigger.clone(), attempt: *attempt, begun: true };
        }
        match &self.reaction_failed {
            Some((_, _, None, _)) => return NextReaction::Idle,
            Some((_, _, Some(until), _)) if *until > now => return NextReaction::Wait { until: *until },
            Some((trigger, attempt, Some(_), _)) => {
                return NextReaction::React { trigger: trigger.clone(), attempt: attempt + 1, begun: false };
            }
            None => {}
        }
        if let Some(trigger) = self.inbox.front() {
            return NextReaction::React { trigger: trigger.clone(), attempt: 1, begun: false };
        }
        match self.timers.iter().min_by_key(|(name, at)| (**at, (*name).clone())) {
            Some((name, at)) if *at <= now => NextReaction::React {
                trigger: Trigger::Timer { name: name.clone(), at: *at },
                attempt: 1,
                begun: false,
            },
            Some((_, at)) => NextReaction::Wait { until: *at },
            None => NextReaction::Idle,
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
        if let Some(delay) = step.delay {
            return match &self.sleeping {
                Some((asleep, until)) if *asleep == step.name && *until > now => Next::Wait { until: *until },
                Some((asleep, _)) if *asleep == step.name => Next::Wake { step: step.name.clone() },
                _ => Next::Sleep { step: step.name.clone(), until: now.saturating_add(delay.as_micros() as i64) },
            };
        }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::{Saga, Step, StepContext, StepError};

    fn event(position: u64) -> Trigger {
        Trigger::Event { position, event_type: "Opened".into() }
    }

    fn received(position: u64) -> Record {
        Record::Received { trigger: event(position) }
    }

    #[test]
    fn an_event_routed_twice_is_reacted_to_once_and_in_order() {
        let started = Record::Started { input: Value::Null };
        let progress = Progress::fold([started, received(5), received(5), received(9)]);
        assert_eq!(progress.inbox.len(), 2, "the repeat of position 5 is passed over");
        assert_eq!(progress.next_reaction(0), NextReaction::React { trigger: event(5), attempt: 1, begun: false });
        let reacting = Record::Reacting { trigger: event(5), attempt: 1 };
        let mut progress = Progress::fold(progress.history.clone().into_iter().chain([reacting]));
        assert_eq!(progress.next_reaction(0), NextReaction::React { trigger: event(5), attempt: 1, begun: true });
        progress.apply(Record::Reacted { trigger: event(5), state: Value::from(1), timers: BTreeMap::new() });
        assert_eq!(progress.next_reaction(0), NextReaction::React { trigger: event(9), attempt: 1, begun: false });
        assert_eq!(progress.data, Value::from(1));
    }

    #[test]
    fn a_failed_reaction_is_retried_then_stuck_until_resumed() {
        let mut progress = Progress::fold([Record::Started { input: Value::Null }, received(3)]);
        let failed =
            |attempt, retry_at| Record::ReactionFailed { trigger: event(3), attempt, error: "busy".into(), retry_at };
        progress.apply(failed(1, Some(100)));
        assert_eq!(progress.next_reaction(50), NextReaction::Wait { until: 100 });
        assert_eq!(progress.state(), SagaState::Waiting { until: 100 });
        assert_eq!(progress.next_reaction(100), NextReaction::React { trigger: event(3), attempt: 2, begun: false });
        progress.apply(failed(2, None));
        assert!(matches!(progress.state(), SagaState::Stuck { .. }));
        assert_eq!(progress.next_reaction(i64::MAX), NextReaction::Idle);
        progress.apply(Record::Resumed);
        assert_eq!(progress.next_reaction(0), NextReaction::React { trigger: event(3), attempt: 1, begun: false });
    }

    #[test]
    fn timers_fire_when_due_what_was_received_first() {
        let timers = BTreeMap::from([("late".to_owned(), 500), ("soon".to_owned(), 200)]);
        let mut progress = Progress::fold([
            Record::Started { input: Value::Null },
            received(1),
            Record::Reacted { trigger: event(1), state: Value::Null, timers },
        ]);
        assert_eq!(progress.next_reaction(100), NextReaction::Wait { until: 200 });
        assert_eq!(progress.state(), SagaState::Waiting { until: 200 });
        let soon = Trigger::Timer { name: "soon".into(), at: 200 };
        assert_eq!(progress.next_reaction(300), NextReaction::React { trigger: soon, attempt: 1, begun: false });
        progress.apply(received(2));
        assert_eq!(progress.next_reaction(300), NextReaction::React { trigger: event(2), attempt: 1, begun: false });
    }

    #[test]
    fn a_delay_step_sleeps_until_its_stored_time() {
        let noop = |_ctx: StepContext| async { Ok::<_, StepError>(()) };
        let saga = Saga::new("s").step(Step::delay("wait", Duration::from_micros(1_000))).step(Step::new("go", noop));
        let saga = saga.build().unwrap();
        let mut progress = Progress::fold([Record::Started { input: Value::Null }]);
        assert_eq!(progress.next(&saga, 10), Next::Sleep { step: "wait".into(), until: 1_010 });
        progress.apply(Record::Sleeping { step: "wait".into(), until: 1_010 });
        assert_eq!(progress.state(), SagaState::Waiting { until: 1_010 });
        assert_eq!(progress.next(&saga, 500), Next::Wait { until: 1_010 });
        assert_eq!(progress.next(&saga, 1_010), Next::Wake { step: "wait".into() });
        progress.apply(Record::StepCompleted { step: "wait".into(), output: Value::Null });
        assert!(
            matches!(progress.next(&saga, 1_010), Next::Run { step, attempt: 1, begun: false, .. } if step == "go")
        );
    }
}
