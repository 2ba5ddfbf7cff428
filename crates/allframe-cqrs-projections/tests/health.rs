//! The registry's health: degraded while a projection does not run (not started, stopped by
//! request, failed) or lags more than allowed; ok once every projection runs and keeps up.

use std::time::Duration;

use allframe_backend_memory::{EventStore, InMemoryEventStore};
use allframe_cqrs_core::{BoxError, Envelope, Event, HealthStatus};
use allframe_cqrs_projections::{ProjectionRegistry, ProjectionState, ReadModel};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Bank {
    Deposited { amount: u64 },
}

impl Event for Bank {}

const WAIT: Duration = Duration::from_secs(10);

/// Sums deposits; refuses 13.
#[derive(Debug, Default)]
struct Total(u64);

impl ReadModel<Bank> for Total {
    const NAME: &'static str = "total";

    fn apply(&mut self, event: &Envelope<Bank>) -> Result<(), BoxError> {
        let Bank::Deposited { amount } = event.event;
        if amount == 13 {
            return Err("refused 13".into());
        }
        self.0 += amount;
        Ok(())
    }
}

async fn deposit(store: &EventStore<Bank>, amount: u64) -> u64 {
    store.append("account", vec![Bank::Deposited { amount }]).await.unwrap().last_position
}

/// The one finding of `registry`'s health, which must be a degraded `projection:total`.
async fn degraded(registry: &ProjectionRegistry<Bank, allframe_backend_memory::InMemoryBackend>) -> String {
    let health = registry.health().await;
    assert_eq!(health.status, HealthStatus::Degraded, "{health}");
    assert_eq!(health.reasons.len(), 1, "{health}");
    assert_eq!(health.reasons[0].component, "projection:total");
    health.reasons[0].reason.clone()
}

#[tokio::test]
async fn a_stopped_projection_is_degraded_and_a_running_caught_up_one_is_ok() {
    let store: EventStore<Bank> = EventStore::new();
    let registry = ProjectionRegistry::new(store.clone());
    let total = registry.register(Total::default).unwrap();
    let written = deposit(&store, 5).await;
    assert!(degraded(&registry).await.contains("stopped"), "registered, not started");

    registry.start_all().await.unwrap();
    assert_eq!(total.read_at_least(written, WAIT).await.unwrap().0, 5);
    let health = registry.health().await;
    assert!(health.is_ok(), "{health}");
    assert_eq!(registry.health_with_store().await, health, "the memory store is healthy");

    registry.stop("total").await.unwrap();
    assert!(degraded(&registry).await.contains("stopped"), "stopped by request");
    registry.start("total").await.unwrap();
    total.read_at_least(written, WAIT).await.unwrap();
    assert!(registry.health().await.is_ok());

    let refused = deposit(&store, 13).await;
    total.read_at_least(refused, WAIT).await.unwrap_err();
    let reason = degraded(&registry).await;
    assert!(reason.contains(&format!("position {refused}")) && reason.contains("refused 13"), "{reason}");
}

#[tokio::test]
async fn a_projection_lagging_more_than_allowed_is_degraded() {
    let store: EventStore<Bank> = EventStore::new();
    let registry = ProjectionRegistry::new(store.clone()).with_health_lag(Duration::from_millis(30));
    let total = registry.register(Total::default).unwrap();
    registry.start_all().await.unwrap();
    let written = deposit(&store, 1).await;
    total.read_at_least(written, WAIT).await.unwrap();
    assert!(registry.health().await.is_ok());

    // Paused (still running), it falls behind an append that grows older.
    registry.pause("total").unwrap();
    while registry.status("total").await.unwrap().state != ProjectionState::Paused {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let behind = deposit(&store, 2).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    let reason = degraded(&registry).await;
    assert!(reason.contains("behind the head"), "{reason}");

    registry.resume("total").unwrap();
    total.read_at_least(behind, WAIT).await.unwrap();
    assert!(registry.health().await.is_ok());
}
