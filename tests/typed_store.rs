//! The typed `EventStore`: aggregates, snapshots and their policy, commands with conflict
//! retries, projections, subscriptions, codecs and decoding errors, over the memory backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use allframe::prelude::*;
use allframe::{Codec, DynBackend, EventStoreBackend, NewEvent, StartFrom};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Bank {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}

impl Event for Bank {
    fn event_type(&self) -> &'static str {
        match self {
            Bank::Opened { .. } => "AccountOpened",
            Bank::Deposited { .. } => "MoneyDeposited",
            Bank::Withdrawn { .. } => "MoneyWithdrawn",
        }
    }
    const EVENT_TYPES: &'static [&'static str] = &["AccountOpened", "MoneyDeposited", "MoneyWithdrawn"];
}

#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    open: bool,
    balance: u64,
    applied: u64,
}

impl Aggregate for Account {
    type Event = Bank;
    fn apply(&mut self, event: &Bank) {
        self.applied += 1;
        match event {
            Bank::Opened { .. } => self.open = true,
            Bank::Deposited { amount } => self.balance += amount,
            Bank::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

fn withdraw(amount: u64) -> impl FnMut(&Account) -> Result<Vec<Bank>, String> {
    move |account| {
        if account.balance < amount {
            Err(format!("balance {} is below {amount}", account.balance))
        } else {
            Ok(vec![Bank::Withdrawn { amount }])
        }
    }
}

#[tokio::test]
async fn aggregate_loads_from_snapshot_plus_later_events() {
    let store: EventStore<Bank> = EventStore::new();
    store.append("acc", vec![Bank::Opened { owner: "ada".into() }, Bank::Deposited { amount: 10 }]).await.unwrap();
    store.save_snapshot("acc", &Account { open: true, balance: 10, applied: 2 }, 2).await.unwrap();
    store.append("acc", vec![Bank::Deposited { amount: 5 }]).await.unwrap();
    let loaded = store.load_aggregate::<Account>("acc").await.unwrap();
    assert_eq!(loaded.snapshot_version, Some(2));
    assert_eq!(loaded.version, 3);
    assert_eq!(loaded.state.balance, 15);
    assert_eq!(loaded.state.applied, 3, "two events from the snapshot, one replayed after it");
    let missing = store.load_aggregate::<Account>("nobody").await.unwrap();
    assert_eq!((missing.version, missing.snapshot_version, missing.state), (0, None, Account::default()));
}

#[tokio::test]
async fn snapshot_policy_snapshots_every_n_events() {
    let store: EventStore<Bank> = EventStore::new().with_snapshot_policy(SnapshotPolicy::EveryNEvents(3));
    store.append("acc", vec![Bank::Opened { owner: "bo".into() }]).await.unwrap();
    for _ in 0..7 {
        store.execute::<Account, _, String>("acc", |_| Ok(vec![Bank::Deposited { amount: 1 }])).await.unwrap();
    }
    let snapshot = store.backend().get_latest_snapshot("acc").await.unwrap().expect("a snapshot");
    assert_eq!(snapshot.version, 6, "versions crossed 3 and 6");
    let state: Account = serde_json::from_slice(&snapshot.payload).unwrap();
    assert_eq!(state.balance, 5);
    assert_eq!(store.load_aggregate::<Account>("acc").await.unwrap().state.balance, 7);
}

#[tokio::test]
async fn execute_refuses_by_business_rule_and_writes_nothing() {
    let store: EventStore<Bank> = EventStore::new();
    store.append("acc", vec![Bank::Opened { owner: "cy".into() }, Bank::Deposited { amount: 3 }]).await.unwrap();
    let error = store.execute::<Account, _, _>("acc", withdraw(5)).await.unwrap_err();
    assert!(matches!(error, CommandError::Rejected(ref reason) if reason.contains("below 5")), "{error}");
    assert_eq!(store.get_events("acc").await.unwrap().len(), 2);
}

#[tokio::test]
async fn execute_retries_after_a_conflict_and_decides_again() {
    let store: EventStore<Bank> = EventStore::new();
    store.append("acc", vec![Bank::Opened { owner: "di".into() }, Bank::Deposited { amount: 10 }]).await.unwrap();
    let calls = AtomicU32::new(0);
    let interloper = store.clone();
    let result = store
        .execute::<Account, _, String>("acc", |account| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                // Another writer gets in between our load and our append.
                let interloper = interloper.clone();
                std::thread::spawn(move || {
                    tokio::runtime::Runtime::new().unwrap().block_on(async {
                        interloper.append("acc", vec![Bank::Withdrawn { amount: 8 }]).await.unwrap();
                    })
                })
                .join()
                .unwrap();
            }
            withdraw(5)(account)
        })
        .await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "reloaded and decided again after the conflict");
    assert!(matches!(result, Err(CommandError::Rejected(_))), "the second decision sees balance 2: {result:?}");

    let no_retries = store.clone().with_conflict_retries(0);
    let stale = Arc::new(AtomicU32::new(0));
    let result = no_retries
        .execute::<Account, _, String>("acc", {
            let stale = Arc::clone(&stale);
            let interloper = interloper.clone();
            move |_| {
                stale.fetch_add(1, Ordering::SeqCst);
                let interloper = interloper.clone();
                std::thread::spawn(move || {
                    tokio::runtime::Runtime::new().unwrap().block_on(async {
                        interloper.append("acc", vec![Bank::Deposited { amount: 1 }]).await.unwrap();
                    })
                })
                .join()
                .unwrap();
                Ok(vec![Bank::Deposited { amount: 100 }])
            }
        })
        .await;
    assert!(matches!(result, Err(CommandError::Store(Error::Conflict { .. }))), "{result:?}");
    assert_eq!(stale.load(Ordering::SeqCst), 1);
}

#[derive(Default)]
struct Balances {
    total: i64,
    checkpoint: u64,
}

impl Projection<Bank> for Balances {
    fn apply(&mut self, envelope: &Envelope<Bank>) {
        match envelope.event {
            Bank::Deposited { amount } => self.total += amount as i64,
            Bank::Withdrawn { amount } => self.total -= amount as i64,
            Bank::Opened { .. } => {}
        }
        self.checkpoint = envelope.position;
    }
}

#[tokio::test]
async fn projection_catches_up_and_resumes_from_its_checkpoint() {
    let store: EventStore<Bank> = EventStore::new();
    store.append("a", vec![Bank::Deposited { amount: 5 }, Bank::Withdrawn { amount: 2 }]).await.unwrap();
    store.append("b", vec![Bank::Deposited { amount: 10 }]).await.unwrap();
    let mut balances = Balances::default();
    let checkpoint = store.project(&mut balances, 0).await.unwrap();
    assert_eq!((balances.total, checkpoint, balances.checkpoint), (13, 3, 3));
    store.append("b", vec![Bank::Withdrawn { amount: 1 }]).await.unwrap();
    let checkpoint = store.project(&mut balances, checkpoint).await.unwrap();
    assert_eq!((balances.total, checkpoint), (12, 4), "only the new event is applied");
}

#[tokio::test]
async fn typed_subscription_catches_up_then_goes_live_and_resumes() {
    let store: EventStore<Bank> = EventStore::new();
    store.append("a", vec![Bank::Deposited { amount: 1 }, Bank::Deposited { amount: 2 }]).await.unwrap();
    let mut subscription = store.subscribe_from(StartFrom::Beginning).await.unwrap();
    assert_eq!(subscription.next().await.unwrap().event, Bank::Deposited { amount: 1 });
    let checkpoint = subscription.checkpoint();
    drop(subscription);
    let mut resumed = store.subscribe_from(StartFrom::After(checkpoint)).await.unwrap();
    assert_eq!(resumed.next().await.unwrap().event, Bank::Deposited { amount: 2 });
    let writer = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        writer.append("b", vec![Bank::Withdrawn { amount: 3 }]).await.unwrap();
    });
    let live = tokio::time::timeout(Duration::from_secs(10), resumed.next()).await.unwrap().unwrap();
    assert_eq!((live.event, live.version, live.position), (Bank::Withdrawn { amount: 3 }, 1, 3));
}

#[tokio::test]
async fn seed_subscribe_task_ends_when_the_receiver_is_dropped() {
    let store: EventStore<Bank> = EventStore::new();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let handle = store.subscribe(tx).await.unwrap();
    drop(rx);
    tokio::time::timeout(Duration::from_secs(10), async {
        while !handle.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the task ends");
}

#[tokio::test]
async fn a_slow_seed_subscriber_never_blocks_appends() {
    let store: EventStore<Bank> = EventStore::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    store.subscribe(tx).await.unwrap();
    for i in 0..500 {
        store.append("busy", vec![Bank::Deposited { amount: i }]).await.unwrap();
    }
    for i in 0..500 {
        assert_eq!(rx.recv().await, Some(Bank::Deposited { amount: i }), "every event, in order, after commit");
    }
}

#[tokio::test]
async fn a_seed_subscriber_skips_an_undecodable_event_or_stops_there_as_asked() {
    let backend = Arc::new(InMemoryBackend::new());
    let store: EventStore<Bank, InMemoryBackend> = allframe::EventStore::from_shared(Arc::clone(&backend));
    let (skip_tx, mut skipping) = tokio::sync::mpsc::channel(8);
    let (stop_tx, mut stopping) = tokio::sync::mpsc::channel(8);
    let skip = store.subscribe_with_policy(skip_tx, allframe::Undecodable::Skip).await.unwrap();
    let stop = store.subscribe_with_policy(stop_tx, allframe::Undecodable::Stop).await.unwrap();
    store.append("a", vec![Bank::Deposited { amount: 1 }]).await.unwrap();
    backend.append("a", ExpectedVersion::Any, vec![NewEvent::new("MoneyDeposited", "not json")]).await.unwrap();
    store.append("a", vec![Bank::Deposited { amount: 3 }]).await.unwrap();

    let wait = Duration::from_secs(10);
    assert_eq!(tokio::time::timeout(wait, skipping.recv()).await.unwrap(), Some(Bank::Deposited { amount: 1 }));
    assert_eq!(tokio::time::timeout(wait, skipping.recv()).await.unwrap(), Some(Bank::Deposited { amount: 3 }));
    assert!(skip.stopped_on().is_none());

    assert_eq!(tokio::time::timeout(wait, stopping.recv()).await.unwrap(), Some(Bank::Deposited { amount: 1 }));
    assert_eq!(tokio::time::timeout(wait, stopping.recv()).await.unwrap(), None, "the channel closes at the bad event");
    assert!(stop.is_finished());
    assert!(matches!(stop.stopped_on(), Some(Error::Decode { .. })), "{:?}", stop.stopped_on());
}

#[tokio::test]
async fn unknown_types_and_undecodable_payloads_are_typed_errors() {
    let backend = Arc::new(InMemoryBackend::new());
    backend.append("s", ExpectedVersion::Any, vec![NewEvent::new("AccountClosed", r#"{"Closed":{}}"#)]).await.unwrap();
    backend.append("t", ExpectedVersion::Any, vec![NewEvent::new("MoneyDeposited", "not json")]).await.unwrap();
    let store: EventStore<Bank, InMemoryBackend> = allframe::EventStore::from_shared(Arc::clone(&backend));
    let error = store.get_events("s").await.unwrap_err();
    assert!(
        matches!(error, Error::UnknownEventType { ref event_type, version: 1, .. } if event_type == "AccountClosed")
    );
    let error = store.get_events("t").await.unwrap_err();
    assert!(matches!(error, Error::Decode { ref event_type, version: 1, .. } if event_type == "MoneyDeposited"));
    assert_eq!(backend.get_events("t").await.unwrap().len(), 1, "bad payloads are reported, never dropped");
}

#[tokio::test]
async fn postcard_codec_round_trips() {
    let store: EventStore<Bank> = EventStore::new().with_codec(Codec::Postcard);
    store.append("p", vec![Bank::Opened { owner: "ed".into() }, Bank::Deposited { amount: 7 }]).await.unwrap();
    assert_eq!(
        store.get_events("p").await.unwrap(),
        vec![Bank::Opened { owner: "ed".into() }, Bank::Deposited { amount: 7 }]
    );
    let raw = store.backend().get_events("p").await.unwrap();
    assert!(raw[1].payload.len() < 5, "postcard is compact: {:?}", raw[1].payload);
}

#[tokio::test]
async fn idempotent_typed_append_with_event_ids() {
    let store: EventStore<Bank> = EventStore::new();
    let id = EventId::new();
    let batch = vec![EventData::new(Bank::Deposited { amount: 4 }).with_id(id)];
    let first = store.append_with_metadata("i", ExpectedVersion::NoStream, batch.clone()).await.unwrap();
    let retry = store.append_with_metadata("i", ExpectedVersion::NoStream, batch).await.unwrap();
    assert!(retry.deduplicated && !first.deduplicated);
    assert_eq!(store.get_events("i").await.unwrap().len(), 1);
    let envelopes = store.read_stream("i", 0, 10).await.unwrap();
    assert_eq!(envelopes[0].metadata.event_id, id);
}

#[tokio::test]
async fn dyn_backend_store() {
    let backend: DynBackend = Arc::new(InMemoryBackend::new());
    let store: EventStore<Bank, DynBackend> = EventStore::with_backend(backend);
    store.append_expected("d", ExpectedVersion::NoStream, vec![Bank::Opened { owner: "fi".into() }]).await.unwrap();
    let error = store.append_expected("d", ExpectedVersion::NoStream, vec![Bank::Opened { owner: "fi".into() }]).await;
    assert!(matches!(error, Err(Error::Conflict { actual: 1, expected: ExpectedVersion::NoStream, .. })));
}

#[tokio::test]
async fn streamed_reads_decode_page_by_page() {
    use futures_util::TryStreamExt;
    let store: EventStore<Bank> = EventStore::new();
    for chunk in 0..5u64 {
        store.append("big", (0..500).map(|i| Bank::Deposited { amount: chunk * 500 + i }).collect()).await.unwrap();
    }
    let all: Vec<Envelope<Bank>> = store.stream_all(0).try_collect().await.unwrap();
    assert_eq!(all.len(), 2500);
    assert!(all.iter().enumerate().all(|(i, e)| e.event == Bank::Deposited { amount: i as u64 }));
    let tail: Vec<Envelope<Bank>> = store.stream_events("big", 2400).try_collect().await.unwrap();
    assert_eq!(tail.len(), 100);
}
