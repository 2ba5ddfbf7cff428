//! What a saga instance stores: its history as events of its own stream
//! (`$allframe-saga:NAME:ID`), one [`Record`] per thing that happened, so that the instance
//! survives restarts, its history can be read by anyone, and two runners racing on it are told
//! apart by the stream's expected version.

use std::collections::BTreeMap;

use allframe_cqrs_core::{EventId, NewEvent, RecordedEvent, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The prefix of every saga instance's stream.
pub const SAGA_STREAM_PREFIX: &str = "$allframe-saga:";

/// The stream of instance `id` of saga `saga`.
pub fn stream_of(saga: &str, id: &str) -> String {
    format!("{SAGA_STREAM_PREFIX}{saga}:{id}")
}

/// The saga and instance id a stream belongs to (`None`: not a saga instance's stream).
pub fn instance_of(stream: &str) -> Option<(&str, &str)> {
    stream.strip_prefix(SAGA_STREAM_PREFIX)?.split_once(':')
}

/// One thing that happened to a saga instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// The instance began with `input`.
    Started {
        /// The saga's input, as JSON.
        input: Value,
    },
    /// An attempt at a step began; it must end by `deadline` (µs since the epoch) or it has
    /// timed out, also when the process that ran it died.
    StepStarted {
        /// The step's name.
        step: String,
        /// 1 for the first attempt.
        attempt: u32,
        /// When the attempt times out, if the step has a timeout.
        deadline: Option<i64>,
    },
    /// The step succeeded with `output`.
    StepCompleted {
        /// The step's name.
        step: String,
        /// What the step returned, as JSON (later steps read it).
        output: Value,
    },
    /// An attempt failed; retried at `retry_at`, or (none) the saga compensates.
    StepFailed {
        /// The step's name.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: String,
        /// When the next attempt starts (µs since the epoch); none: no more attempts.
        retry_at: Option<i64>,
    },
    /// An attempt did not end in time: the step may have partly run, so it is compensated too.
    StepTimedOut {
        /// The step's name.
        step: String,
        /// The attempt that timed out.
        attempt: u32,
    },
    /// An attempt at undoing a step began.
    CompensationStarted {
        /// The step being undone.
        step: String,
        /// 1 for the first attempt (counted again from 1 after a resume).
        attempt: u32,
        /// When the attempt times out, if the compensation has a timeout.
        deadline: Option<i64>,
    },
    /// The step was undone.
    Compensated {
        /// The step undone.
        step: String,
    },
    /// An attempt at undoing a step failed; retried at `retry_at`, or (none) the instance is
    /// stuck until an operator resumes it.
    CompensationFailed {
        /// The step.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: String,
        /// When the next attempt starts; none: stuck.
        retry_at: Option<i64>,
    },
    /// An operator resumed a stuck instance: its compensation is tried again.
    Resumed,
    /// A delay step began: the instance sleeps until `until` (µs since the epoch), also while no
    /// process runs, then the step is done.
    Sleeping {
        /// The delay step's name.
        step: String,
        /// When it wakes.
        until: i64,
    },
    /// Something for a choreography to react to, queued in the instance's stream (in the order
    /// received): an event the router correlated to it, or its beginning. Routed events carry ids
    /// derived from the instance and the event's position, so routing one twice stores it once.
    Received {
        /// What it reacts to.
        trigger: Trigger,
    },
    /// A choreography began reacting to `trigger`: the intent, recorded before any effect.
    Reacting {
        /// What it reacts to.
        trigger: Trigger,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// A choreography reacted to `trigger`: its state and timers after the reaction.
    Reacted {
        /// What it reacted to.
        trigger: Trigger,
        /// The choreography's state, as JSON.
        state: Value,
        /// Every timer set after the reaction: name and when it fires (µs since the epoch).
        timers: BTreeMap<String, i64>,
    },
    /// A reaction failed; retried at `retry_at`, or (none) the instance is stuck until an
    /// operator resumes it.
    ReactionFailed {
        /// What it reacted to.
        trigger: Trigger,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: String,
        /// When the next attempt starts; none: stuck.
        retry_at: Option<i64>,
    },
    /// Every step succeeded (a choreography: it said it is done).
    Completed,
    /// A step failed for good and every step before it was undone.
    RolledBack {
        /// The step that failed.
        step: String,
        /// Why it failed.
        reason: String,
    },
}

impl Record {
    /// The stored event type: one per kind of record, so tools show what happened.
    pub fn event_type(&self) -> &'static str {
        match self {
            Record::Started { .. } => "allframe.SagaStarted",
            Record::StepStarted { .. } => "allframe.SagaStepStarted",
            Record::StepCompleted { .. } => "allframe.SagaStepCompleted",
            Record::StepFailed { .. } => "allframe.SagaStepFailed",
            Record::StepTimedOut { .. } => "allframe.SagaStepTimedOut",
            Record::CompensationStarted { .. } => "allframe.SagaCompensationStarted",
            Record::Compensated { .. } => "allframe.SagaCompensated",
            Record::CompensationFailed { .. } => "allframe.SagaCompensationFailed",
            Record::Resumed => "allframe.SagaResumed",
            Record::Sleeping { .. } => "allframe.SagaSleeping",
            Record::Received { .. } => "allframe.SagaReceived",
            Record::Reacting { .. } => "allframe.SagaReacting",
            Record::Reacted { .. } => "allframe.SagaReacted",
            Record::ReactionFailed { .. } => "allframe.SagaReactionFailed",
            Record::Completed => "allframe.SagaCompleted",
            Record::RolledBack { .. } => "allframe.SagaRolledBack",
        }
    }

    /// The record as an event to append (a fresh id: a writer whose append failed reads the
    /// stream again rather than repeating it, so no id needs to repeat).
    pub(crate) fn to_event(&self) -> NewEvent {
        let payload = serde_json::to_vec(self).unwrap_or_default();
        NewEvent::new(self.event_type(), payload)
    }

    /// The record as an event whose id derives from `key` (`index`: its place among the
    /// records derived from one key): appending it again stores it once.
    pub(crate) fn to_event_with_id(&self, key: &str, index: u64) -> NewEvent {
        self.to_event().with_event_id(EventId::derived("allframe.saga.v1", key, index))
    }

    /// The record an event of an instance's stream holds.
    pub(crate) fn from_event(event: &RecordedEvent) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(&event.payload)
    }
}

/// What a choreography reacts to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// The instance was begun with an input (`SagaOrchestrator::begin`).
    Begin,
    /// The event at `position` of the log.
    Event {
        /// Its global position.
        position: u64,
        /// Its stored type.
        event_type: String,
    },
    /// Timer `name`, set to fire at `at` (µs since the epoch).
    Timer {
        /// The timer's name.
        name: String,
        /// When it was set to fire.
        at: i64,
    },
}

impl Trigger {
    /// A stable name for the trigger, part of the idempotency keys of the commands a reaction
    /// to it sends: the same in every attempt and after every restart.
    pub fn key(&self) -> String {
        match self {
            Trigger::Begin => "begin".to_owned(),
            Trigger::Event { position, .. } => format!("event-{position}"),
            Trigger::Timer { name, at } => format!("timer-{name}-{at}"),
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Begin => write!(f, "its beginning"),
            Trigger::Event { position, event_type } => write!(f, "event {event_type} at position {position}"),
            Trigger::Timer { name, .. } => write!(f, "timer `{name}`"),
        }
    }
}

/// Now, in the records' unit (µs since the epoch).
pub(crate) fn now_micros() -> i64 {
    Timestamp::now().as_micros()
}
