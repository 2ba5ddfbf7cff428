//! The orchestrator's health: ok while nothing needs a person; degraded by a stuck instance,
//! also one that an orchestrator started later finds stuck; ok again once it is resumed and
//! finished.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use allframe_backend_memory::InMemoryBackend;
use allframe_cqrs_commands::CommandBus;
use allframe_cqrs_core::{DynBackend, Health, HealthStatus};
use allframe_cqrs_sagas::{Retry, Saga, SagaDefinition, SagaOrchestrator, SagaState, Step, StepContext, StepError};

const WAIT: Duration = Duration::from_secs(10);

/// Fails its second step; undoing the first fails while `broken` is set.
fn order(broken: Arc<AtomicBool>) -> SagaDefinition {
    Saga::new("order")
        .step(
            Step::new("reserve", |_ctx: StepContext| async { Ok::<_, StepError>(()) })
                .compensate(move |_ctx: StepContext| {
                    let broken = broken.load(Ordering::SeqCst);
                    async move { if broken { Err(StepError::failed("the warehouse is gone")) } else { Ok(()) } }
                })
                .compensation_retry(Retry::times(1, Duration::from_millis(1))),
        )
        .step(Step::new("charge", |_ctx: StepContext| async { Err::<(), _>(StepError::failed("card refused")) }))
        .build()
        .unwrap()
}

/// The orchestrator's health once it says `status`, within a while.
async fn health_becomes(sagas: &SagaOrchestrator, status: HealthStatus) -> Health {
    let until = Instant::now() + WAIT;
    loop {
        let health = sagas.health();
        if health.status == status || Instant::now() > until {
            return health;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_instance_is_degraded_until_resumed_also_after_a_restart() {
    let backend: DynBackend = Arc::new(InMemoryBackend::new());
    let bus = CommandBus::builder(Arc::clone(&backend)).build().unwrap();
    let broken = Arc::new(AtomicBool::new(true));
    let first = SagaOrchestrator::builder(bus.clone()).saga(order(Arc::clone(&broken))).build().unwrap();
    first.start().await.unwrap();
    assert!(first.health().is_ok());
    first.begin("order", "o-1", &()).await.unwrap();
    assert!(matches!(first.wait("order", "o-1", WAIT).await.unwrap(), SagaState::Stuck { .. }));
    let health = health_becomes(&first, HealthStatus::Degraded).await;
    assert_eq!(health.status, HealthStatus::Degraded, "{health}");
    assert_eq!(health.reasons[0].component, "saga:order");
    first.stop();
    drop(first);

    // Started later, an orchestrator finds the instance stuck in the store.
    let second = SagaOrchestrator::builder(bus).saga(order(Arc::clone(&broken))).build().unwrap();
    second.start().await.unwrap();
    let health = health_becomes(&second, HealthStatus::Degraded).await;
    assert!(health.reasons.iter().any(|reason| reason.reason.contains("1 instance(s) stuck")), "{health}");

    broken.store(false, Ordering::SeqCst);
    second.resume("order", "o-1").await.unwrap();
    assert!(matches!(second.wait("order", "o-1", WAIT).await.unwrap(), SagaState::RolledBack { .. }));
    let health = health_becomes(&second, HealthStatus::Ok).await;
    assert!(health.is_ok(), "{health}");
}
