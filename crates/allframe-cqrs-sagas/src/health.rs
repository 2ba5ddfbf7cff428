//! The orchestrator's health: which sagas need a person, as a [`Health`] to merge with the
//! store's and the projections'.

use std::sync::PoisonError;

use allframe_cqrs_core::Health;

use crate::orchestrator::SagaOrchestrator;

impl SagaOrchestrator {
    /// Which sagas need a person, each as a degraded finding of component `saga:NAME`: a router
    /// that stopped at an event it cannot route (no event after it reaches the saga until the
    /// cause is fixed), or instances stuck on a compensation or a reaction that failed every
    /// attempt (they wait for [`resume`](Self::resume)). `Ok` otherwise.
    ///
    /// It says what this orchestrator has seen since it started: the instances it drives and
    /// those its start found stuck. A rolled-back instance is not a finding: undoing the steps
    /// is the saga doing its job. Merge it with the store's health:
    /// `store.health().await.merge(sagas.health())`.
    pub fn health(&self) -> Health {
        let inner = &self.inner;
        let routers = inner.routers.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut health = Health::ok();
        for saga in inner.saga_names() {
            let component = format!("saga:{saga}");
            if let Some(reason) = routers.get(saga).and_then(|router| router.stopped.as_ref()) {
                health = health.merge(Health::degraded(&component, format!("its router stopped: {reason}")));
            }
            let stuck = inner.census.count(saga, "stuck");
            if stuck > 0 {
                let reason = format!("{stuck} instance(s) stuck, waiting for an operator to resume them");
                health = health.merge(Health::degraded(&component, reason));
            }
        }
        health
    }
}
