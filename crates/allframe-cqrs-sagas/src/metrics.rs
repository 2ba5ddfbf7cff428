//! The sagas' metrics through the `metrics` facade (feature `metrics`; the names are in
//! [`metric_names`](allframe_cqrs_core::metric_names)): instances by state, steps and reactions
//! by outcome, and each router's position and lag. Every handle is registered when the
//! orchestrator is built, with the recorder installed then, labelled with the saga's name;
//! without the feature every function here is empty, so the orchestrator calls them
//! unconditionally.

use crate::record::Record;

/// The `outcome` labels of `allframe_saga_steps_total`.
#[cfg(feature = "metrics")]
const OUTCOMES: [&str; 5] = ["succeeded", "failed", "timed_out", "compensated", "compensation_failed"];

/// The outcome a record reports, if it ends an attempt: a step's or a reaction's (succeeded,
/// failed, timed out) or a compensation's (compensated, compensation failed). A failed attempt
/// that will be retried counts as failed too.
#[cfg(feature = "metrics")]
fn outcome(record: &Record) -> Option<usize> {
    match record {
        Record::StepCompleted { .. } | Record::Reacted { .. } => Some(0),
        Record::StepFailed { .. } | Record::ReactionFailed { .. } => Some(1),
        Record::StepTimedOut { .. } => Some(2),
        Record::Compensated { .. } => Some(3),
        Record::CompensationFailed { .. } => Some(4),
        _ => None,
    }
}

/// One saga's handles.
#[cfg(feature = "metrics")]
struct Handles {
    /// By state, in the order of [`crate::census::STATES`].
    instances: Vec<metrics::Gauge>,
    /// By outcome, in the order of [`OUTCOMES`].
    steps: Vec<metrics::Counter>,
    router_position: metrics::Gauge,
    router_lag: metrics::Gauge,
}

/// The handles of an orchestrator's sagas, by saga.
pub(crate) struct SagaMetrics {
    #[cfg(feature = "metrics")]
    sagas: std::collections::BTreeMap<String, Handles>,
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
impl SagaMetrics {
    /// Registers the metrics of the sagas named `sagas`.
    pub(crate) fn register<'a>(sagas: impl Iterator<Item = &'a str>) -> Self {
        #[cfg(feature = "metrics")]
        {
            use allframe_cqrs_core::metric_names as names;
            let sagas = sagas
                .map(|saga| {
                    let label = saga.to_owned();
                    let handles = Handles {
                        instances: crate::census::STATES
                            .iter()
                            .map(|&state| metrics::gauge!(names::SAGA_INSTANCES, "saga" => label.clone(), "state" => state))
                            .collect(),
                        steps: OUTCOMES
                            .iter()
                            .map(|&outcome| metrics::counter!(names::SAGA_STEPS, "saga" => label.clone(), "outcome" => outcome))
                            .collect(),
                        router_position: metrics::gauge!(names::SAGA_ROUTER_POSITION, "saga" => label.clone()),
                        router_lag: metrics::gauge!(names::SAGA_ROUTER_LAG_EVENTS, "saga" => label.clone()),
                    };
                    (label, handles)
                })
                .collect();
            SagaMetrics { sagas }
        }
        #[cfg(not(feature = "metrics"))]
        SagaMetrics {}
    }

    /// `count` instances of `saga` are in `state` (one of [`crate::census::STATES`]).
    pub(crate) fn instances(&self, saga: &str, state: &str, count: u64) {
        #[cfg(feature = "metrics")]
        if let Some(handles) = self.sagas.get(saga)
            && let Some(index) = crate::census::STATES.iter().position(|known| *known == state)
        {
            handles.instances[index].set(count as f64);
        }
    }

    /// Counts the attempts that `records`, just appended to an instance of `saga`, ended.
    pub(crate) fn recorded(&self, saga: &str, records: &[Record]) {
        #[cfg(feature = "metrics")]
        if let Some(handles) = self.sagas.get(saga) {
            for index in records.iter().filter_map(outcome) {
                handles.steps[index].increment(1);
            }
        }
    }

    /// `saga`'s router has routed through `position`; the log's head is at `head`.
    pub(crate) fn router(&self, saga: &str, position: u64, head: u64) {
        #[cfg(feature = "metrics")]
        if let Some(handles) = self.sagas.get(saga) {
            handles.router_position.set(position as f64);
            handles.router_lag.set(head.saturating_sub(position) as f64);
        }
    }
}
