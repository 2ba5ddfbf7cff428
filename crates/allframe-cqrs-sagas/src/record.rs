//! What a saga instance stores: its history as events of its own stream
//! (`$allframe-saga:NAME:ID`), one [`Record`] per thing that happened, so that the instance
//! survives restarts, its history can be read by anyone, and two runners racing on it are told
//! apart by the stream's expected version.

use allframe_cqrs_core::{NewEvent, RecordedEvent, Timestamp};
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
    /// Every step succeeded.
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

    /// The record an event of an instance's stream holds.
    pub(crate) fn from_event(event: &RecordedEvent) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(&event.payload)
    }
}

/// Now, in the records' unit (µs since the epoch).
pub(crate) fn now_micros() -> i64 {
    Timestamp::now().as_micros()
}
