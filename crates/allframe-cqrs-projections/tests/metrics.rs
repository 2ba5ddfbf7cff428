//! The projections' metrics (feature `metrics`): position, lag, events, failures, dead letters
//! and running, under the names and labels of `metric_names`, read from a debugging recorder.
//! One test: the recorder is global, and a snapshot resets what it reads.
#![cfg(feature = "metrics")]

use std::sync::OnceLock;
use std::time::Duration;

use allframe_backend_memory::{EventStore, InMemoryEventStore};
use allframe_cqrs_core::metric_names as names;
use allframe_cqrs_core::{BoxError, Envelope, Event, EventStoreBackend, StartFrom, SubscriptionOptions};
use allframe_cqrs_projections::{FailurePolicy, ProjectionRegistry, ProjectionState, ReadModel, Resume};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
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

fn recorder() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder of this test binary");
        snapshotter
    })
}

/// One metric: its name, labels and value.
type Sample = (String, Vec<(String, String)>, DebugValue);

/// The metrics at one moment.
struct Seen(Vec<Sample>);

impl Seen {
    fn take() -> Self {
        let values = recorder().snapshot().into_vec().into_iter().map(|(key, _, _, value)| {
            let key = key.key();
            let labels = key.labels().map(|label| (label.key().to_owned(), label.value().to_owned())).collect();
            (key.name().to_owned(), labels, value)
        });
        Seen(values.collect())
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> &DebugValue {
        self.0
            .iter()
            .find(|(seen, seen_labels, _)| {
                seen == name
                    && seen_labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| seen_labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|(_, _, value)| value)
            .unwrap_or_else(|| panic!("no {name} {labels:?} among {:?}", self.0))
    }

    fn counter(&self, name: &str, projection: &str) -> u64 {
        match self.get(name, &[("projection", projection)]) {
            DebugValue::Counter(value) => *value,
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, projection: &str) -> f64 {
        match self.get(name, &[("projection", projection)]) {
            DebugValue::Gauge(value) => value.into_inner(),
            other => panic!("{name} is not a gauge: {other:?}"),
        }
    }
}

async fn deposit(store: &EventStore<Bank>, amount: u64) -> u64 {
    store.append("account", vec![Bank::Deposited { amount }]).await.unwrap().last_position
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_report_position_lag_events_failures_dead_letters_and_running() {
    recorder();
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

    let seen = Seen::take();
    assert_eq!(seen.get(names::SUBSCRIPTION_EVENTS, &[("backend", "memory")]), &DebugValue::Counter(4));

    // Dead letter: three applied, the refused one tried twice then set aside; caught up.
    assert_eq!(seen.counter(names::PROJECTION_EVENTS, "totals"), 3);
    assert_eq!(seen.counter(names::PROJECTION_FAILURES, "totals"), 2, "the attempt and its retry");
    assert_eq!(seen.counter(names::PROJECTION_DEAD_LETTERS, "totals"), 1);
    assert_eq!(seen.gauge(names::PROJECTION_POSITION, "totals"), head as f64);
    assert_eq!(seen.gauge(names::PROJECTION_LAG_EVENTS, "totals"), 0.0);
    assert_eq!(seen.gauge(names::PROJECTION_LAG_SECONDS, "totals"), 0.0);
    assert_eq!(seen.gauge(names::PROJECTION_RUNNING, "totals"), 1.0);

    // Stop: one applied and checkpointed, stopped at the refused event, behind by the rest.
    assert_eq!(seen.counter(names::PROJECTION_EVENTS, "ledger"), 1);
    assert_eq!(seen.counter(names::PROJECTION_FAILURES, "ledger"), 1);
    assert_eq!(seen.counter(names::PROJECTION_DEAD_LETTERS, "ledger"), 0);
    assert_eq!(seen.gauge(names::PROJECTION_POSITION, "ledger"), first as f64);
    assert_eq!(store.backend().load_checkpoint("ledger@v1").await.unwrap(), Some(first));
    assert_eq!(seen.gauge(names::PROJECTION_LAG_EVENTS, "ledger"), (head - first) as f64);
    let lag = seen.gauge(names::PROJECTION_LAG_SECONDS, "ledger");
    assert!(lag >= 0.02, "the refused event at {refused} is at least 20 ms old: {lag}");
    assert_eq!(seen.gauge(names::PROJECTION_RUNNING, "ledger"), 0.0);
}
