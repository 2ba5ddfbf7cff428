//! The projections' metrics (feature `metrics`): position, lag, events, failures, dead letters
//! and running, under the names and labels of `metric_names`, read from a debugging recorder.
//! One test: the recorder is global, and a snapshot resets what it reads.
#![cfg(feature = "metrics")]

use std::time::Duration;

use allframe_backend_memory::{EventStore, InMemoryEventStore};
use allframe_cqrs_core::metric_names as names;
use allframe_cqrs_core::{BoxError, Envelope, Event, EventStoreBackend, StartFrom, SubscriptionOptions};
use allframe_cqrs_projections::{FailurePolicy, ProjectionRegistry, ProjectionState, ReadModel, Resume};
use allframe_cqrs_testkit::metrics::{install, take};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Bank {
    Deposited { amount: u64 },
}

impl Event for Bank {}

const WAIT: Duration = Duration::from_secs(10);
/// The amount every handler here refuses.
const REFUSED: u64 = 13;

fn refuse(event: &Envelope<Bank>) -> Result<(), BoxError> {
    let Bank::Deposited { amount } = event.event;
    if amount == REFUSED { Err(format!("refused {amount}").into()) } else { Ok(()) }
}

/// Kept in memory, dead-letters what it refuses.
#[derive(Debug, Default)]
struct Totals;

impl ReadModel<Bank> for Totals {
    const NAME: &'static str = "totals";

    fn apply(&mut self, event: &Envelope<Bank>) -> Result<(), BoxError> {
        refuse(event)
    }
}

/// Kept outside the process (a checkpoint), stops at what it refuses.
#[derive(Debug, Default)]
struct Ledger;

impl ReadModel<Bank> for Ledger {
    const NAME: &'static str = "ledger";
    const RESUME: Resume = Resume::FromCheckpoint;

    fn apply(&mut self, event: &Envelope<Bank>) -> Result<(), BoxError> {
        refuse(event)
    }
}

async fn deposit(store: &EventStore<Bank>, amount: u64) -> u64 {
    store.append("account", vec![Bank::Deposited { amount }]).await.unwrap().last_position
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_report_position_lag_events_failures_dead_letters_and_running() {
    install();
    let store: EventStore<Bank> = EventStore::new();
    let first = deposit(&store, 5).await;
    let refused = deposit(&store, REFUSED).await;
    deposit(&store, 7).await;
    let last = deposit(&store, 8).await;

    // A subscription counts the events it reads, by backend.
    let options = SubscriptionOptions { page_size: 2, ..SubscriptionOptions::default() };
    let mut subscription = store.subscribe_with(StartFrom::Beginning, options).await.unwrap();
    while subscription.try_next().await.unwrap().is_some() {}

    let registry = ProjectionRegistry::new(store.clone());
    let policy = FailurePolicy::dead_letter().with_retries(1, Duration::from_millis(1));
    let totals = registry.register_with_policy(Totals::default, policy).unwrap();
    let ledger = registry.register(Ledger::default).unwrap();
    registry.start_all().await.unwrap();
    totals.read_at_least(last, WAIT).await.unwrap();
    ledger.read_at_least(last, WAIT).await.unwrap_err();
    assert!(matches!(registry.status("ledger").await.unwrap().state, ProjectionState::Failed { .. }));
    // The ledger's first unapplied event grows older; its lag is read again with the health.
    tokio::time::sleep(Duration::from_millis(20)).await;
    registry.health().await;

    // The log's head: the deposits and the dead letter (an event of the library's own stream).
    let head = store.backend().head_position().await.unwrap();
    assert_eq!(head, last + 1);
    totals.read_at_least(head, WAIT).await.unwrap();

    let seen = take();
    assert_eq!(seen.counter(names::SUBSCRIPTION_EVENTS, &[("backend", "memory")]), 4);

    // Dead letter: three applied, the refused one tried twice then set aside; caught up.
    assert_eq!(seen.counter(names::PROJECTION_EVENTS, &[("projection", "totals")]), 3);
    assert_eq!(seen.counter(names::PROJECTION_FAILURES, &[("projection", "totals")]), 2, "the attempt and its retry");
    assert_eq!(seen.counter(names::PROJECTION_DEAD_LETTERS, &[("projection", "totals")]), 1);
    assert_eq!(seen.gauge(names::PROJECTION_POSITION, &[("projection", "totals")]).unwrap(), head as f64);
    assert_eq!(seen.gauge(names::PROJECTION_LAG_EVENTS, &[("projection", "totals")]).unwrap(), 0.0);
    assert_eq!(seen.gauge(names::PROJECTION_LAG_SECONDS, &[("projection", "totals")]).unwrap(), 0.0);
    assert_eq!(seen.gauge(names::PROJECTION_RUNNING, &[("projection", "totals")]).unwrap(), 1.0);

    // Stop: one applied and checkpointed, stopped at the refused event, behind by the rest.
    assert_eq!(seen.counter(names::PROJECTION_EVENTS, &[("projection", "ledger")]), 1);
    assert_eq!(seen.counter(names::PROJECTION_FAILURES, &[("projection", "ledger")]), 1);
    assert_eq!(seen.counter(names::PROJECTION_DEAD_LETTERS, &[("projection", "ledger")]), 0);
    assert_eq!(seen.gauge(names::PROJECTION_POSITION, &[("projection", "ledger")]).unwrap(), first as f64);
    assert_eq!(store.backend().load_checkpoint("ledger@v1").await.unwrap(), Some(first));
    assert_eq!(seen.gauge(names::PROJECTION_LAG_EVENTS, &[("projection", "ledger")]).unwrap(), (head - first) as f64);
    let lag = seen.gauge(names::PROJECTION_LAG_SECONDS, &[("projection", "ledger")]).unwrap();
    assert!(lag >= 0.02, "the refused event at {refused} is at least 20 ms old: {lag}");
    assert_eq!(seen.gauge(names::PROJECTION_RUNNING, &[("projection", "ledger")]).unwrap(), 0.0);
}
