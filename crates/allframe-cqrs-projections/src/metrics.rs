//! A projection's metrics through the `metrics` facade (feature `metrics`; the names are in
//! [`metric_names`](allframe_cqrs_core::metric_names)). Each projection registers its handles
//! once, when it is registered, with the recorder installed then; without the feature every
//! function here is empty, so the runners call them unconditionally.
//!
//! What the gauges follow:
//! - the position is the checkpoint (where a restart resumes) for a model kept outside the
//!   process, the position passed for an in-memory one (it has no checkpoint);
//! - the lag, in events and in seconds, is taken from the position passed each time a runner
//!   reads a page (0 when the page is empty: caught up) and each time the registry is asked for
//!   a status or its health, so that a stopped runner's lag still moves when someone looks.

use std::time::Duration;

/// The handles of one projection's metrics, labelled with its name.
#[derive(Debug)]
pub(crate) struct ProjectionMetrics {
    #[cfg(feature = "metrics")]
    handles: Handles,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Handles {
    position: metrics::Gauge,
    lag_events: metrics::Gauge,
    lag_seconds: metrics::Gauge,
    events: metrics::Counter,
    failures: metrics::Counter,
    dead_letters: metrics::Counter,
    running: metrics::Gauge,
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
impl ProjectionMetrics {
    /// Registers the metrics of projection `name` (a bounded label: the projection's name).
    pub(crate) fn register(name: &'static str) -> Self {
        #[cfg(feature = "metrics")]
        {
            use allframe_cqrs_core::metric_names as names;
            let handles = Handles {
                position: metrics::gauge!(names::PROJECTION_POSITION, "projection" => name),
                lag_events: metrics::gauge!(names::PROJECTION_LAG_EVENTS, "projection" => name),
                lag_seconds: metrics::gauge!(names::PROJECTION_LAG_SECONDS, "projection" => name),
                events: metrics::counter!(names::PROJECTION_EVENTS, "projection" => name),
                failures: metrics::counter!(names::PROJECTION_FAILURES, "projection" => name),
                dead_letters: metrics::counter!(names::PROJECTION_DEAD_LETTERS, "projection" => name),
                running: metrics::gauge!(names::PROJECTION_RUNNING, "projection" => name),
            };
            ProjectionMetrics { handles }
        }
        #[cfg(not(feature = "metrics"))]
        ProjectionMetrics {}
    }

    /// The projection's position (see the module's note on which position).
    pub(crate) fn position(&self, position: u64) {
        #[cfg(feature = "metrics")]
        self.handles.position.set(position as f64);
    }

    /// How far behind the head it is: `events` positions, the first of them `age` old.
    pub(crate) fn lag(&self, events: u64, age: Duration) {
        #[cfg(feature = "metrics")]
        {
            self.handles.lag_events.set(events as f64);
            self.handles.lag_seconds.set(age.as_secs_f64());
        }
    }

    /// `events` more events applied.
    pub(crate) fn applied(&self, events: u64) {
        #[cfg(feature = "metrics")]
        self.handles.events.increment(events);
    }

    /// One failed attempt: a handler that refused or panicked, an event that did not decode, a
    /// checkpoint (or its transaction) that could not be saved.
    pub(crate) fn failed(&self) {
        #[cfg(feature = "metrics")]
        self.handles.failures.increment(1);
    }

    /// One event recorded as a dead letter.
    pub(crate) fn dead_lettered(&self) {
        #[cfg(feature = "metrics")]
        self.handles.dead_letters.increment(1);
    }

    /// Whether a runner runs (paused and standby count as running: their task is alive).
    pub(crate) fn running(&self, running: bool) {
        #[cfg(feature = "metrics")]
        self.handles.running.set(if running { 1.0 } else { 0.0 });
    }
}
