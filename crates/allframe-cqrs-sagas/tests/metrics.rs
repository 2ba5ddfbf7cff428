//! The sagas' metrics (feature `metrics`) and health: instances by state, steps by outcome,
//! and a router's position and lag, under the names and labels of `metric_names`, read from a
//! debugging recorder; the orchestrator's health turns degraded on a stuck instance and on a
//! stopped router. One test: the recorder is global, and a snapshot resets what it reads.
#![cfg(feature = "metrics")]

use std::sync::Arc;
use std::time::Duration;

use allframe_backend_memory::InMemoryBackend;
use allframe_cqrs_commands::CommandBus;
use allframe_cqrs_core::metric_names as names;
use allframe_cqrs_core::{DynBackend, Envelope, Event, EventStore, EventStoreBackend, HealthStatus};
use allframe_cqrs_sagas::{Retry, Saga, SagaDefinition, SagaOrchestrator, SagaState, Step, StepContext, StepError};
use allframe_cqrs_testkit::metrics::{install, take};
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Bank {
    Opened { owner: String },
}

impl Event for Bank {}

/// Reserves, then charges as its input says: `ok`, `fail` (for good), `flaky` (a transient
/// failure, then it works), `hang` (past its timeout), `stuck` (fails, and undoing the
/// reservation fails too).
fn pay() -> SagaDefinition {
    Saga::new("pay")
        .step(
            Step::new("reserve", |_ctx: StepContext| async { Ok::<_, StepError>(()) })
                .compensate(|ctx: StepContext| async move {
                    match ctx.input::<String>()?.as_str() {
                        "stuck" => Err(StepError::failed("the warehouse is gone")),
                        _ => Ok(()),
                    }
                })
                .compensation_retry(Retry::times(1, Duration::from_millis(1))),
        )
        .step(
            Step::new("charge", |ctx: StepContext| async move {
                match ctx.input::<String>()?.as_str() {
                    "fail" | "stuck" => Err(StepError::failed("card refused")),
                    "flaky" if ctx.attempt() == 1 => Err(StepError::transient("bank busy")),
                    "hang" => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            })
            .timeout(Duration::from_millis(200))
            .retry(Retry::times(2, Duration::from_millis(1))),
        )
        .build()
        .unwrap()
}

/// Begun by each account's opening; its router cannot route an owner called `panic`.
fn greet() -> SagaDefinition {
    Saga::new("greet")
        .start_on(|event: &Envelope<Bank>| {
            let Bank::Opened { owner } = &event.event;
            assert_ne!(owner, "panic", "no such owner");
            Some((owner.clone(), ()))
        })
        .step(Step::new("hello", |_ctx: StepContext| async { Ok::<_, StepError>(()) }))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_report_instances_by_state_steps_by_outcome_and_router_lag_and_their_health() {
    install();
    let backend: DynBackend = Arc::new(InMemoryBackend::new());
    let bus = CommandBus::builder(Arc::clone(&backend)).build().unwrap();
    let sagas = SagaOrchestrator::builder(bus).saga(pay()).saga(greet()).build().unwrap();
    sagas.start().await.unwrap();
    assert!(sagas.health().is_ok());

    for id in ["ok", "fail", "flaky", "hang", "stuck"] {
        sagas.begin("pay", id, &id).await.unwrap();
    }
    for (id, expected) in [
        ("ok", "completed"),
        ("fail", "rolled back"),
        ("flaky", "completed"),
        ("hang", "rolled back"),
        ("stuck", "stuck"),
    ] {
        assert_eq!(sagas.wait("pay", id, WAIT).await.unwrap().label(), expected, "{id}");
    }

    let accounts: EventStore<Bank, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&backend));
    let open = |owner: &str| Bank::Opened { owner: owner.to_owned() };
    accounts.append("account-1", vec![open("ada")]).await.unwrap();
    let refused = accounts.append("account-2", vec![open("panic")]).await.unwrap().last_position;
    let after = accounts.append("account-3", vec![open("bob")]).await.unwrap().last_position;
    while sagas.instance("greet", "ada").await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sagas.wait("greet", "ada", WAIT).await.unwrap(), SagaState::Completed);
    let router = loop {
        let router = sagas.routers().into_iter().find(|router| router.saga == "greet").unwrap();
        if router.stopped.is_some() {
            break router;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(router.position, refused - 1, "it stays before the event it cannot route");
    // Let the idle tail read the log once more.
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let health = sagas.health();
    assert_eq!(health.status, HealthStatus::Degraded, "{health}");
    let findings: Vec<(&str, &str)> =
        health.reasons.iter().map(|reason| (reason.component.as_str(), reason.reason.as_str())).collect();
    assert_eq!(findings.len(), 2, "{health}");
    assert!(findings.iter().any(|(c, r)| *c == "saga:greet" && r.contains("router stopped")), "{health}");
    assert!(findings.iter().any(|(c, r)| *c == "saga:pay" && r.contains("1 instance(s) stuck")), "{health}");

    let seen = take();
    let instances = |saga, state| seen.gauge(names::SAGA_INSTANCES, &[("saga", saga), ("state", state)]).unwrap();
    assert_eq!(instances("pay", "completed"), 2.0);
    assert_eq!(instances("pay", "rolled_back"), 2.0);
    assert_eq!(instances("pay", "stuck"), 1.0);
    for state in ["running", "waiting", "compensating"] {
        assert_eq!(instances("pay", state), 0.0, "{state}");
    }
    assert_eq!(instances("greet", "completed"), 1.0);

    let steps = |saga, outcome| seen.counter(names::SAGA_STEPS, &[("saga", saga), ("outcome", outcome)]) as f64;
    // Reserve succeeds five times, charge twice (ok; flaky on its second attempt).
    assert_eq!(steps("pay", "succeeded"), 7.0);
    assert_eq!(steps("pay", "failed"), 3.0, "fail, stuck, and flaky's first attempt");
    assert_eq!(steps("pay", "timed_out"), 1.0);
    assert_eq!(steps("pay", "compensated"), 2.0, "the reservations of fail and hang");
    assert_eq!(steps("pay", "compensation_failed"), 1.0);
    assert_eq!(steps("greet", "succeeded"), 1.0);

    let head = backend.head_position().await.unwrap();
    let position = seen.gauge(names::SAGA_ROUTER_POSITION, &[("saga", "greet")]).unwrap();
    assert_eq!(position, (refused - 1) as f64);
    let lag = seen.gauge(names::SAGA_ROUTER_LAG_EVENTS, &[("saga", "greet")]).unwrap();
    assert!(lag >= (after - refused + 1) as f64 && lag <= (head - refused + 1) as f64, "lag {lag}, head {head}");
}
