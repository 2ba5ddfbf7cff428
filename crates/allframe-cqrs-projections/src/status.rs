//! What a projection is doing, as its runner reports it and [`ProjectionRegistry::status`]
//! returns it.
//!
//! [`ProjectionRegistry::status`]: crate::ProjectionRegistry::status

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::ProjectionMetrics;
use crate::read_model::Resume;

/// Where a projection's runner is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectionState {
    /// No runner (not started yet, or stopped).
    Stopped,
    /// Reading events that were in the log when it started, to reach the head.
    CatchingUp,
    /// At the head, applying new events as they are committed.
    Running,
    /// Replaying the log into a fresh read model after [`rebuild`](crate::ProjectionRegistry::rebuild).
    Rebuilding,
    /// Paused by the operator; resumes where it was.
    Paused,
    /// Waiting for the projection's lease, which another application instance holds: it
    /// takes over when that one stops or dies.
    Standby,
    /// Stopped at an event it could not apply (failure policy `Stop`).
    Failed {
        /// The event's position.
        position: u64,
        /// Why it failed.
        reason: String,
    },
}

/// A projection's status: state, position, lag and rate.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: &'static str,
    /// The version of its logic.
    pub version: u32,
    /// The event types it handles (empty: all).
    pub handles: &'static [&'static str],
    /// Where its state lives.
    pub resume: Resume,
    /// What its runner is doing.
    pub state: ProjectionState,
    /// The position of the last event it has passed (applied, dead-lettered or not handled).
    pub position: u64,
    /// The log's head when the status was taken.
    pub head: u64,
    /// Events committed and not yet passed: `head - position`.
    pub lag_events: u64,
    /// How long ago the oldest event not yet passed was written (zero when caught up).
    pub lag: Duration,
    /// Events passed per second, over the last second or so.
    pub events_per_second: f64,
    /// Events applied since the runner started.
    pub applied: u64,
    /// Dead letters recorded and not yet resolved.
    pub dead_letters: u64,
    /// The position a rebuild beside the live model has reached, while one runs.
    pub rebuild_position: Option<u64>,
}

/// A projection's live facts, shared by its runner, the registry and its read model handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: &'static str,
    pub(crate) version: u32,
    pub(crate) handles: &'static [&'static str],
    pub(crate) resume: Resume,
    /// Position passed, and whether the runner has failed: what read-your-writes waits on.
    pub(crate) mark: watch::Sender<Mark>,
    pub(crate) facts: Mutex<Facts>,
    /// Its metrics (empty without the `metrics` feature).
    pub(crate) metrics: ProjectionMetrics,
}

/// What a read-your-writes wait watches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) position: u64,
    pub(crate) failed: bool,
}

#[derive(Debug)]
pub(crate) struct Facts {
    pub(crate) state: ProjectionState,
    pub(crate) applied: u64,
    pub(crate) dead_letters: u64,
    pub(crate) rebuild_position: Option<u64>,
    rate: Rate,
}

impl Shared {
    pub(crate) fn new(name: &'static str, version: u32, handles: &'static [&'static str], resume: Resume) -> Self {
        let metrics = ProjectionMetrics::register(name);
        metrics.running(false);
        Shared {
            name,
            version,
            handles,
            resume,
            mark: watch::Sender::new(Mark::default()),
            facts: Mutex::new(Facts {
                state: ProjectionState::Stopped,
                applied: 0,
                dead_letters: 0,
                rebuild_position: None,
                rate: Rate::new(),
            }),
            metrics,
        }
    }

    pub(crate) fn facts(&self) -> std::sync::MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set_state(&self, state: ProjectionState) {
        let failed = matches!(state, ProjectionState::Failed { .. });
        self.metrics.running(!failed && state != ProjectionState::Stopped);
        self.facts().state = state;
        self.mark.send_if_modified(|mark| std::mem::replace(&mut mark.failed, failed) != failed);
    }

    pub(crate) fn state(&self) -> ProjectionState {
        self.facts().state.clone()
    }

    /// Records that the runner passed `passed` events (`applied` of them applied), up to `position`.
    pub(crate) fn advance(&self, position: u64, passed: u64, applied: u64) {
        {
            let mut facts = self.facts();
            facts.applied += applied;
            facts.rate.add(passed);
        }
        self.metrics.applied(applied);
        if self.resume == Resume::FromScratch {
            // No checkpoint: the position passed is the position.
            self.metrics.position(position);
        }
        self.mark.send_if_modified(|mark| {
            let moved = position != mark.position;
            mark.position = position;
            moved
        });
    }

    /// Puts the projection at `position` with nothing applied: a fresh or swapped read model.
    pub(crate) fn reset(&self, position: u64) {
        self.facts().applied = 0;
        self.metrics.position(position);
        self.mark.send_if_modified(|mark| std::mem::replace(&mut mark.position, position) != position);
    }

    /// Records that the checkpoint was saved at `position`.
    pub(crate) fn checkpointed(&self, position: u64) {
        self.metrics.position(position);
    }

    pub(crate) fn position(&self) -> u64 {
        self.mark.borrow().position
    }

    /// The status without the head's facts, which the registry fills in.
    pub(crate) fn snapshot(&self) -> ProjectionStatus {
        let position = self.position();
        let facts = self.facts();
        ProjectionStatus {
            name: self.name,
            version: self.version,
            handles: self.handles,
            resume: self.resume,
            state: facts.state.clone(),
            position,
            head: position,
            lag_events: 0,
            lag: Duration::ZERO,
            events_per_second: facts.rate.per_second(),
            applied: facts.applied,
            dead_letters: facts.dead_letters,
            rebuild_position: facts.rebuild_position,
        }
    }
}

/// Events per second over windows of about a second: the last full window's rate, or the
/// current one's once it is longer.
#[derive(Debug)]
struct Rate {
    started: Instant,
    count: u64,
    last: f64,
}

impl Rate {
    fn new() -> Self {
        Rate { started: Instant::now(), count: 0, last: 0.0 }
    }

    fn add(&mut self, events: u64) {
        self.count += events;
        let elapsed = self.started.elapsed();
        if elapsed >= Duration::from_secs(1) {
            self.last = self.count as f64 / elapsed.as_secs_f64();
            self.started = Instant::now();
            self.count = 0;
        }
    }

    fn per_second(&self) -> f64 {
        let elapsed = self.started.elapsed();
        if elapsed >= Duration::from_secs(2) {
            // Nothing passed for a while: the rate is what the current window says.
            self.count as f64 / elapsed.as_secs_f64()
        } else {
            self.last
        }
    }
}
