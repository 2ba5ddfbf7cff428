//! The instances of an orchestrator's sagas, counted by state: the last state a driver saw of
//! each instance it drives, and, from the start-up listing, the instances that had finished or
//! were stuck then. The `allframe_saga_instances` gauge and [`SagaOrchestrator::health`]
//! read it.
//!
//! [`SagaOrchestrator::health`]: crate::SagaOrchestrator::health

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::metrics::SagaMetrics;
use crate::progress::SagaState;

/// The states an instance is counted in, as the `state` label says them.
#[cfg_attr(not(feature = "metrics"), allow(dead_code, reason = "the gauge's labels"))]
pub(crate) const STATES: [&str; 6] = ["running", "waiting", "compensating", "stuck", "completed", "rolled_back"];

/// The label of `state`: [`SagaState::label`] in lower snake case.
pub(crate) fn state_name(state: &SagaState) -> &'static str {
    match state {
        SagaState::Running => "running",
        SagaState::Waiting { .. } => "waiting",
        SagaState::Compensating => "compensating",
        SagaState::Stuck { .. } => "stuck",
        SagaState::Completed => "completed",
        SagaState::RolledBack { .. } => "rolled_back",
    }
}

fn finished(state: &str) -> bool {
    matches!(state, "completed" | "rolled_back")
}

/// Instances by state, per saga.
pub(crate) struct Census {
    metrics: Arc<SagaMetrics>,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// The last state seen of each unfinished instance, by saga and id (a finished one leaves:
    /// it cannot change again, so the memory stays that of the instances under way).
    unfinished: BTreeMap<(String, String), &'static str>,
    /// How many instances are in each state, by saga.
    by_state: BTreeMap<(String, &'static str), u64>,
}

impl Census {
    pub(crate) fn new(metrics: Arc<SagaMetrics>) -> Self {
        Census { metrics, counts: Mutex::new(Counts::default()) }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets everything: the orchestrator starts (again) and lists the instances anew.
    pub(crate) fn reset(&self) {
        let mut counts = self.counts();
        for (saga, state) in std::mem::take(&mut counts.by_state).into_keys() {
            self.metrics.instances(&saga, state, 0);
        }
        counts.unfinished.clear();
    }

    /// Counts an instance that the start-up listing found finished or stuck (`state`); its
    /// driver, if it gets one, goes on from there.
    pub(crate) fn seed(&self, saga: &str, id: &str, state: &'static str) {
        let mut counts = self.counts();
        if !finished(state) {
            counts.unfinished.insert((saga.to_owned(), id.to_owned()), state);
        }
        self.add(&mut counts, saga, state, 1);
    }

    /// Notes that a driver found instance `id` of `saga` in `state`. A finished state of an
    /// instance not seen unfinished is not counted: it was counted from the start-up listing,
    /// or finished before this orchestrator saw it.
    pub(crate) fn observe(&self, saga: &str, id: &str, state: &SagaState) {
        let state = state_name(state);
        let key = (saga.to_owned(), id.to_owned());
        let mut counts = self.counts();
        match counts.unfinished.get(&key).copied() {
            Some(last) if last == state => return,
            Some(last) => self.add(&mut counts, saga, last, -1),
            None if finished(state) => return,
            None => {}
        }
        self.add(&mut counts, saga, state, 1);
        if finished(state) {
            counts.unfinished.remove(&key);
        } else {
            counts.unfinished.insert(key, state);
        }
    }

    /// How many instances of `saga` are in `state`.
    pub(crate) fn count(&self, saga: &str, state: &'static str) -> u64 {
        self.counts().by_state.get(&(saga.to_owned(), state)).copied().unwrap_or(0)
    }

    fn add(&self, counts: &mut Counts, saga: &str, state: &'static str, delta: i64) {
        let count = counts.by_state.entry((saga.to_owned(), state)).or_default();
        *count = count.saturating_add_signed(delta);
        self.metrics.instances(saga, state, *count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_moves_between_states_and_leaves_once_finished() {
        let census = Census::new(Arc::new(SagaMetrics::register(std::iter::empty())));
        census.seed("s", "old", "completed");
        census.seed("s", "held", "stuck");
        census.observe("s", "a", &SagaState::Running);
        census.observe("s", "a", &SagaState::Running);
        assert_eq!(census.count("s", "running"), 1);
        census.observe("s", "a", &SagaState::Compensating);
        assert_eq!((census.count("s", "running"), census.count("s", "compensating")), (0, 1));
        census.observe("s", "a", &SagaState::RolledBack { step: "x".into(), reason: "no".into() });
        assert_eq!((census.count("s", "compensating"), census.count("s", "rolled_back")), (0, 1));
        // Seen again finished (a driver looking once more): counted once.
        census.observe("s", "a", &SagaState::Completed);
        census.observe("s", "old", &SagaState::Completed);
        assert_eq!((census.count("s", "completed"), census.count("s", "rolled_back")), (1, 1));
        // A stuck instance resumed by an operator.
        census.observe("s", "held", &SagaState::Compensating);
        assert_eq!((census.count("s", "stuck"), census.count("s", "compensating")), (0, 1));
        census.reset();
        assert_eq!(census.count("s", "completed"), 0);
    }
}
