//! Every read path upcasts (issue 20), on all four backends: a store written with version 1 of
//! an account's events (raw records, as an older build stored them) is read through a chain to
//! version 3 (a rename, a split, a drop, a field renamed) by every typed read over the
//! `Upcasting` backend: stream reads, the whole log, streamed reads, aggregate loads, the
//! command bus, a catch-up subscription, `project`, a registry projection and a replay.

#[path = "support/targets.rs"]
mod targets;

use std::sync::Arc;
use std::time::Duration;

use allframe::cqrs::*;
use allframe::{Codec, NewEvent, StartFrom, schema_version::SCHEMA_VERSION_HEADER};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Version 3.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(version = 3)]
enum Account {
    Opened { owner: String },
    Deposited { cents: u64 },
    Withdrawn { cents: u64 },
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Balance {
    cents: i64,
    events: u64,
}

impl Aggregate for Balance {
    type Event = Account;
    fn apply(&mut self, event: &Account) {
        self.events += 1;
        match event {
            Account::Opened { .. } => {}
            Account::Deposited { cents } => self.cents += *cents as i64,
            Account::Withdrawn { cents } => self.cents -= *cents as i64,
        }
    }
}

/// v1 `MoneyDeposited { amount }` → v2 `Deposited { amount }` → v3 `Deposited { cents }`;
/// `Transferred { amount }` (unchanged at v2) splits at v3 into a withdrawal and a deposit;
/// `Audited` is dropped at v2.
fn upcasters() -> Chain {
    Upcasters::<Account>::new()
        .rename("MoneyDeposited", 1, "Deposited")
        .json("Deposited", 2, |mut payload| {
            let amount = payload["Deposited"]["amount"].take();
            payload["Deposited"] = json!({ "cents": amount });
            Ok(payload)
        })
        .unchanged("Transferred", 1)
        .json_into("Transferred", 2, |payload| {
            let amount = payload["Transferred"]["amount"].clone();
            Ok(vec![
                ("Withdrawn".into(), json!({ "Withdrawn": { "cents": amount } })),
                ("Deposited".into(), json!({ "Deposited": { "cents": amount } })),
            ])
        })
        .drop_event("Audited", 1)
        .build()
        .expect("a sound chain")
}

/// What version 1 of the application stored in `account-1`.
async fn write_version_1(backend: &DynBackend) {
    let v1 = |event_type: &'static str, payload: serde_json::Value| {
        NewEvent::new(event_type, serde_json::to_vec(&payload).unwrap())
    };
    let events = vec![
        v1("Opened", json!({ "Opened": { "owner": "ada" } })),
        v1("MoneyDeposited", json!({ "MoneyDeposited": { "amount": 100 } })),
        v1("Audited", json!({ "Audited": {} })),
        v1("Transferred", json!({ "Transferred": { "amount": 30 } })),
        v1("MoneyDeposited", json!({ "MoneyDeposited": { "amount": 5 } })),
    ];
    backend.append("account-1", ExpectedVersion::NoStream, events).await.unwrap();
    // The log's last event is one that is dropped: readers of the whole log must still pass it.
    backend.append("audit-1", ExpectedVersion::NoStream, vec![v1("Audited", json!({ "Audited": {} }))]).await.unwrap();
}

fn current() -> Vec<Account> {
    vec![
        Account::Opened { owner: "ada".into() },
        Account::Deposited { cents: 100 },
        Account::Withdrawn { cents: 30 },
        Account::Deposited { cents: 30 },
        Account::Deposited { cents: 5 },
    ]
}

#[command(stream = "account-{id}", error = NoFunds)]
#[derive(Debug, Serialize, Deserialize)]
struct Withdraw {
    id: String,
    cents: u64,
}

/// The refusal of a withdrawal above the balance.
#[derive(Debug, Serialize, thiserror::Error)]
#[error("not enough money")]
struct NoFunds;

impl DomainError for NoFunds {
    fn code(&self) -> &'static str {
        "no_funds"
    }
}

#[derive(Default)]
struct Seen(Vec<Account>);

impl ReadModel<Account> for Seen {
    const NAME: &'static str = "seen";
    fn apply(&mut self, event: &Envelope<Account>) -> Result<(), BoxError> {
        self.0.push(event.event.clone());
        Ok(())
    }
}

struct Collect(Vec<Account>);

impl Projection<Account> for Collect {
    fn apply(&mut self, event: &Envelope<Account>) {
        self.0.push(event.event.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_path_reads_version_1_events_as_version_3_on_every_backend() {
    for target in targets::targets("upcast").await {
        let name = target.name;
        let backend = target.open().await;
        write_version_1(&backend).await;
        let upcasting: DynBackend = Arc::new(Upcasting::new(Arc::clone(&backend), upcasters(), Codec::Json));
        let store: EventStore<Account, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&upcasting));

        assert_eq!(store.get_events("account-1").await.unwrap(), current(), "{name}: get_events");
        assert_eq!(store.get_events_after("account-1", 2).await.unwrap(), current()[2..], "{name}: get_events_after");
        assert_eq!(store.get_all_events().await.unwrap(), current(), "{name}: get_all_events");
        let page: Vec<_> = store.read_stream("account-1", 0, 100).await.unwrap();
        assert_eq!(page.iter().map(|e| e.event.clone()).collect::<Vec<_>>(), current(), "{name}: read_stream");
        assert_eq!(
            page.iter().map(|e| e.version).collect::<Vec<_>>(),
            [1, 2, 4, 4, 5],
            "{name}: split events share their version"
        );
        let streamed: Vec<_> = store.stream_events("account-1", 0).map_ok(|e| e.event).try_collect().await.unwrap();
        assert_eq!(streamed, current(), "{name}: stream_events");
        let all: Vec<_> = store.stream_all(0).map_ok(|e| e.event).try_collect().await.unwrap();
        assert_eq!(all, current(), "{name}: stream_all");

        let loaded = store.load_aggregate::<Balance>("account-1").await.unwrap();
        assert_eq!((loaded.state.cents, loaded.state.events, loaded.version), (105, 5, 5), "{name}: load_aggregate");

        // The command bus decides from the upcast state and appends at the current version.
        let bus = CommandBus::builder(Arc::clone(&upcasting))
            .aggregate::<Withdraw, _>(decide(|balance: &Balance, cmd: &Withdraw, _ctx: &Context| {
                if balance.cents < cmd.cents as i64 {
                    return Err(NoFunds);
                }
                Ok(vec![Account::Withdrawn { cents: cmd.cents }])
            }))
            .build()
            .unwrap();
        let outcome = bus.dispatch(Withdraw { id: "1".into(), cents: 105 }).await.unwrap();
        assert_eq!(outcome.stream_version, 6, "{name}: decided from version 5");
        assert!(bus.dispatch(Withdraw { id: "1".into(), cents: 1 }).await.is_err(), "{name}: the balance is 0 now");
        let expected: Vec<Account> = current().into_iter().chain([Account::Withdrawn { cents: 105 }]).collect();

        let mut subscription = store.subscribe_from(StartFrom::Beginning).await.unwrap();
        let mut caught_up = Vec::new();
        for _ in 0..5 {
            let next = tokio::time::timeout(Duration::from_secs(10), subscription.next()).await.unwrap().unwrap();
            caught_up.push(next.event);
        }
        assert_eq!(caught_up, current(), "{name}: subscription");

        let mut collect = Collect(Vec::new());
        store.project(&mut collect, 0).await.unwrap();
        assert_eq!(collect.0, expected, "{name}: project");

        let registry = ProjectionRegistry::new(store.clone());
        let seen = registry.register(Seen::default).unwrap();
        registry.start_all().await.unwrap();
        let head = backend.head_position().await.unwrap();
        assert_eq!(seen.read_at_least(head, Duration::from_secs(10)).await.unwrap().0, expected, "{name}: registry");
        registry.stop_all().await;

        let mut replayed = Vec::new();
        Replay::new(&store)
            .run(
                |envelope| {
                    replayed.push(envelope.event);
                    Ok(())
                },
                |_| {},
            )
            .await
            .unwrap();
        assert_eq!(replayed, expected, "{name}: replay");

        // New events are stored at version 3 and read as they are.
        let last = backend.read_stream("account-1", 5, 1).await.unwrap().remove(0);
        assert_eq!(last.metadata.headers.get(SCHEMA_VERSION_HEADER).map(String::as_str), Some("3"));
        assert_eq!(store.get_events_after("account-1", 5).await.unwrap(), [Account::Withdrawn { cents: 105 }]);
        target.cleanup().await;
    }
}

#[tokio::test]
async fn without_upcasters_a_version_1_event_is_a_typed_decoding_error_and_stays_stored() {
    let backend: DynBackend = Arc::new(InMemoryBackend::new());
    write_version_1(&backend).await;
    let store: EventStore<Account, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&backend));
    let error = store.get_events("account-1").await.unwrap_err();
    assert!(
        matches!(error, allframe::Error::UnknownEventType { ref event_type, .. } if event_type == "MoneyDeposited"),
        "{error:?}"
    );
    assert_eq!(backend.stream_version("account-1").await.unwrap(), 5, "nothing changed");
}

/// A total as version 1 of the application kept it.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct TotalV1 {
    total: u64,
}

impl Aggregate for TotalV1 {
    type Event = Account;
    fn apply(&mut self, event: &Account) {
        if let Account::Deposited { cents } = event {
            self.total += cents;
        }
    }
}

/// The same total at version 2 of its state: another serialized form.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct TotalV2 {
    cents: u64,
    count: u64,
}

impl Aggregate for TotalV2 {
    type Event = Account;
    const SCHEMA_VERSION: u32 = 2;
    fn apply(&mut self, event: &Account) {
        if let Account::Deposited { cents } = event {
            self.cents += cents;
            self.count += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_under_another_schema_version_is_not_decoded_on_every_backend() {
    for target in targets::targets("snapshot_version").await {
        let name = target.name;
        let backend = target.open().await;
        let store: EventStore<Account, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&backend));
        let deposits = (1..=3).map(|cents| Account::Deposited { cents }).collect();
        store.append("total-1", deposits).await.unwrap();
        // A version-1 snapshot whose figure no replay gives: if it were used, it would show.
        store.save_snapshot("total-1", &TotalV1 { total: 999 }, 3).await.unwrap();
        assert_eq!(store.load_aggregate::<TotalV1>("total-1").await.unwrap().state, TotalV1 { total: 999 });

        let rebuilt = store.load_aggregate::<TotalV2>("total-1").await.unwrap();
        assert_eq!(rebuilt.snapshot_version, None, "{name}: the version-1 snapshot is not decoded as version 2");
        assert_eq!(rebuilt.state, TotalV2 { cents: 6, count: 3 }, "{name}: rebuilt from the events");

        store.save_snapshot("total-1", &TotalV2 { cents: 12_345, count: 3 }, 3).await.unwrap();
        let loaded = store.load_aggregate::<TotalV2>("total-1").await.unwrap();
        assert_eq!((loaded.snapshot_version, loaded.state.cents), (Some(3), 12_345), "{name}: its own version is used");
        let older = store.load_aggregate::<TotalV1>("total-1").await;
        assert!(matches!(older, Err(allframe::Error::Decode { .. })), "{name}: version 1 cannot read it: {older:?}");
        target.cleanup().await;
    }
}

#[test]
fn the_golden_examples_of_every_historical_version_read_as_the_current_events() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/account");
    let report = allframe_cqrs_testkit::golden::check_golden::<Account>(&dir, &upcasters())
        .unwrap_or_else(|problems| panic!("{problems}"));
    assert_eq!(report.examples, 6);
    assert_eq!(report.steps_covered, upcasters().steps().count());
    // A step without an example fails the check.
    let more = Upcasters::<Account>::new()
        .rename("MoneyDeposited", 1, "Deposited")
        .unchanged("Deposited", 1)
        .json("Deposited", 2, Ok)
        .build()
        .unwrap();
    let missing = allframe_cqrs_testkit::golden::check_golden::<Account>(&dir, &more).unwrap_err();
    assert!(missing.contains("no golden example of `Deposited` at schema version 1"), "{missing}");
}
