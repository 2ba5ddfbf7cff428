//! The registry's health: which projections need a person, as a [`Health`] to merge with the
//! store's and the sagas'.

use std::time::Duration;

use allframe_cqrs_core::{Event, EventStoreBackend, Health};

use crate::registry::ProjectionRegistry;
use crate::status::ProjectionState;

/// The lag beyond which a projection is degraded unless the registry says otherwise.
pub(crate) const DEFAULT_HEALTH_LAG: Duration = Duration::from_secs(60);

impl<E: Event, B: EventStoreBackend + ?Sized + 'static> ProjectionRegistry<E, B> {
    /// Sets how far behind the head (in time: the age of the first event not applied) a
    /// projection may be before [`health`](Self::health) calls it degraded; 60 s by default.
    /// Queries of a lagging projection read old data, which a person should know about.
    pub fn with_health_lag(mut self, lag: Duration) -> Self {
        self.health_lag = lag;
        self
    }

    /// Which projections need a person, each as a degraded finding of component
    /// `projection:NAME`: one that does not run (never started, stopped by request, or failed
    /// at an event: its queries go stale), or one that lags more than
    /// [`with_health_lag`](Self::with_health_lag) allows. `Ok` when every projection runs
    /// (paused and standby count as running) and keeps up.
    ///
    /// A projection is never `Failed`: the store serves without it. A store error reading a
    /// lag is a degraded finding here; the store's own checks are in
    /// [`health_with_store`](Self::health_with_store). Refreshes the lag gauges (feature
    /// `metrics`).
    pub async fn health(&self) -> Health {
        let mut health = Health::ok();
        for entry in self.entries() {
            let shared = entry.shared();
            // Read for every projection, stopped ones too, so that their lag gauges move.
            let status = self.status_of(shared).await;
            let finding = match shared.state() {
                ProjectionState::Stopped => Some("stopped: not started, or stopped by request".to_owned()),
                ProjectionState::Failed { position, reason } => {
                    Some(format!("stopped at the event at position {position}: {reason}"))
                }
                _ => match status {
                    Ok(status) if status.lag > self.health_lag => Some(format!(
                        "{:.1} s ({} positions) behind the head, more than the {:.1} s allowed",
                        status.lag.as_secs_f64(),
                        status.lag_events,
                        self.health_lag.as_secs_f64()
                    )),
                    Ok(_) => None,
                    Err(error) => Some(format!("its lag could not be read: {error}")),
                },
            };
            if let Some(reason) = finding {
                health = health.merge(Health::degraded(format!("projection:{}", shared.name), reason));
            }
        }
        health
    }

    /// The store's health ([`EventStore::health`](allframe_cqrs_core::EventStore::health))
    /// and the projections' ([`health`](Self::health)) together: what an application's
    /// health endpoint answers when it runs projections.
    pub async fn health_with_store(&self) -> Health {
        self.store.health().await.merge(self.health().await)
    }
}
