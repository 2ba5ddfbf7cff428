//! Event names and metadata: the default `event_type` is serde's name, `#[derive(Event)]` keeps
//! those names (so switching to it is safe), `#[event(...)]` renames and versions, commands
//! stamp causation and correlation, and the library's own marker stream stays out of typed
//! readers of the whole log; on memory and AllSource.

#[path = "support/bank.rs"]
mod bank;

use std::sync::Arc;

use allframe::cqrs::*;
use allframe::{NewEvent, RecordedEvent};
use bank::*;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// An enum with the default `event_type` (an empty impl): every shape of variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Ledger {
    Opened {
        owner: String,
    },
    #[serde(rename = "MoneyDeposited")]
    Deposited {
        amount: u64,
    },
    Frozen(String),
    Pair(u64, u64),
    Closed,
}

impl Event for Ledger {}

/// A struct event with the default name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct UserRegistered {
    name: String,
}

impl Event for UserRegistered {}

/// A struct event renamed for serde.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "user.renamed")]
struct UserRenamed {
    name: String,
}

impl Event for UserRenamed {}

/// An application's events before `#[derive(Event)]`: an empty impl.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Before {
    AccountOpened {
        owner: String,
    },
    #[serde(rename = "money.in")]
    MoneyDeposited {
        amount: u64,
    },
    AccountClosed,
}

impl Event for Before {}

/// The same enum after switching to `#[derive(Event)]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
#[serde(rename_all = "snake_case")]
enum After {
    AccountOpened {
        owner: String,
    },
    #[serde(rename = "money.in")]
    MoneyDeposited {
        amount: u64,
    },
    AccountClosed,
}

/// Another `rename_all` rule, derived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
#[serde(rename_all = "kebab-case")]
enum Kebab {
    ItemAdded(u32),
    ItemRemovedAgain { id: u32 },
}

/// Stored names chosen with `#[event(name = ...)]`, and a version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(version = 3)]
enum Order {
    #[event(name = "order.placed")]
    Placed {
        id: u32,
    },
    #[serde(rename = "order.shipped")]
    Shipped,
    Cancelled,
}

/// A derived struct event with its own stored name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "audit.entry")]
struct AuditEntry {
    text: String,
}

/// A derived struct renamed for serde, without `#[event]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
#[serde(rename = "user.renamed")]
struct DerivedRenamed {
    name: String,
}

/// Opens an account and deposits into it, both decided at once (a command with two events).
#[command(stream = "account-{id}", error = BankError)]
#[derive(Clone, Debug, Serialize, Deserialize)]
struct OpenFunded {
    id: String,
    amount: u64,
}

fn typed<E: Event>(store: &TestStore) -> EventStore<E, dyn EventStoreBackend> {
    EventStore::from_shared(Arc::clone(&store.backend))
}

async fn raw_stream(store: &TestStore, stream: &str) -> Vec<RecordedEvent> {
    store.backend.read_stream(stream, 0, 100).await.unwrap()
}

fn stored_types(records: &[RecordedEvent]) -> Vec<String> {
    records.iter().map(|r| r.event_type.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_event_type_is_the_name_serde_gives_the_value() {
    let ledger = vec![
        Ledger::Opened { owner: "ada".into() },
        Ledger::Deposited { amount: 3 },
        Ledger::Frozen("audit".into()),
        Ledger::Pair(1, 2),
        Ledger::Closed,
    ];
    let names: Vec<&str> = ledger.iter().map(Event::event_type).collect();
    assert_eq!(names, ["Opened", "MoneyDeposited", "Frozen", "Pair", "Closed"]);
    assert_eq!(UserRegistered { name: "a".into() }.event_type(), "UserRegistered");
    assert_eq!(UserRenamed { name: "a".into() }.event_type(), "user.renamed");
    assert!(Ledger::EVENT_TYPES.is_empty(), "an empty impl lists nothing");
    assert_eq!((Ledger::SCHEMA_VERSION, UserRenamed::SCHEMA_VERSION), (1, 1));

    for store in stores() {
        typed::<Ledger>(&store).append("ledger-1", ledger.clone()).await.unwrap();
        let stored = raw_stream(&store, "ledger-1").await;
        assert_eq!(stored_types(&stored), names, "{}: the stored names", store.name);
        assert_eq!(typed::<Ledger>(&store).get_events("ledger-1").await.unwrap(), ledger, "{}", store.name);

        let renamed = typed::<UserRenamed>(&store);
        renamed.append("user-1", vec![UserRenamed { name: "b".into() }]).await.unwrap();
        assert_eq!(stored_types(&raw_stream(&store, "user-1").await), ["user.renamed"], "{}", store.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_event_keeps_serdes_names_so_switching_to_it_changes_nothing_stored() {
    let before = vec![
        Before::AccountOpened { owner: "ada".into() },
        Before::MoneyDeposited { amount: 9 },
        Before::AccountClosed,
    ];
    let after =
        vec![After::AccountOpened { owner: "ada".into() }, After::MoneyDeposited { amount: 9 }, After::AccountClosed];
    let before_names: Vec<&str> = before.iter().map(Event::event_type).collect();
    let after_names: Vec<&str> = after.iter().map(Event::event_type).collect();
    assert_eq!(before_names, ["account_opened", "money.in", "account_closed"]);
    assert_eq!(after_names, before_names, "the derive names variants as serde does");
    assert_eq!(After::EVENT_TYPES, ["account_opened", "money.in", "account_closed"]);
    assert_eq!(Kebab::EVENT_TYPES, ["item-added", "item-removed-again"]);
    assert_eq!(Kebab::ItemRemovedAgain { id: 1 }.event_type(), serde_name_of(&Kebab::ItemRemovedAgain { id: 1 }));
    assert_eq!(DerivedRenamed { name: "x".into() }.event_type(), UserRenamed { name: "x".into() }.event_type());
    assert_eq!(DerivedRenamed::EVENT_TYPES, ["user.renamed"]);

    for store in stores() {
        // Events stored before the switch are read after it, and the other way round.
        typed::<Before>(&store).append("switch-1", before.clone()).await.unwrap();
        typed::<After>(&store).append("switch-1", after.clone()).await.unwrap();
        let stored = raw_stream(&store, "switch-1").await;
        assert_eq!(stored_types(&stored[..3]), stored_types(&stored[3..]), "{}", store.name);
        let read_after = typed::<After>(&store).get_events("switch-1").await.expect("every stored name is listed");
        assert_eq!(read_after, [after.clone(), after.clone()].concat(), "{}", store.name);
        let read_before = typed::<Before>(&store).get_events("switch-1").await.unwrap();
        assert_eq!(read_before, [before.clone(), before.clone()].concat(), "{}", store.name);
    }
}

/// The key serde writes for an externally tagged value, or the string of a unit variant.
fn serde_name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value).unwrap() {
        serde_json::Value::Object(map) => map.keys().next().unwrap().clone(),
        serde_json::Value::String(name) => name,
        other => panic!("not externally tagged: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_name_overrides_and_an_unlisted_stored_type_is_a_typed_error() {
    let placed = Order::Placed { id: 7 };
    assert_eq!(placed.event_type(), "order.placed");
    assert_eq!(serde_name_of(&placed), "Placed", "#[event(name)] leaves serde's name alone");
    assert_eq!(Order::Shipped.event_type(), "order.shipped");
    assert_eq!(Order::Cancelled.event_type(), "Cancelled");
    assert_eq!(Order::EVENT_TYPES, ["order.placed", "order.shipped", "Cancelled"]);
    assert_eq!(AuditEntry { text: "t".into() }.event_type(), "audit.entry");
    assert_eq!(AuditEntry::EVENT_TYPES, ["audit.entry"]);

    for store in stores() {
        let orders = typed::<Order>(&store);
        let events = vec![placed.clone(), Order::Shipped, Order::Cancelled];
        orders.append("order-7", events.clone()).await.unwrap();
        assert_eq!(
            stored_types(&raw_stream(&store, "order-7").await),
            ["order.placed", "order.shipped", "Cancelled"],
            "{}",
            store.name
        );
        assert_eq!(orders.get_events("order-7").await.unwrap(), events, "{}", store.name);

        // A type this program does not know, stored by another program.
        let refunded = NewEvent::new("order.refunded", r#"{"Refunded":{"id":7}}"#);
        store.backend.append("order-7", ExpectedVersion::Exact(3), vec![refunded]).await.unwrap();
        let unknown = orders.read_stream("order-7", 0, 10).await.unwrap_err();
        assert!(
            matches!(&unknown, Error::UnknownEventType { stream, version: 4, event_type }
                if stream.as_str() == "order-7" && event_type == "order.refunded"),
            "{}: {unknown:?}",
            store.name
        );
        assert!(matches!(orders.get_all_events().await, Err(Error::UnknownEventType { .. })), "{}", store.name);
        assert_eq!(orders.read_stream("order-7", 0, 3).await.unwrap().len(), 3, "the known ones still read");

        // Without a list, the same record is only a payload that does not decode.
        let unlisted = typed::<Ledger>(&store).get_events("order-7").await.unwrap_err();
        assert!(matches!(unlisted, Error::Decode { .. }), "{}: {unlisted:?}", store.name);
    }
}

#[test]
fn event_version_sets_the_schema_version() {
    assert_eq!(Order::SCHEMA_VERSION, 3);
    assert_eq!(BankEvent::SCHEMA_VERSION, 2, "the bank's #[event(version = 2)]");
    assert_eq!(After::SCHEMA_VERSION, 1, "derived without a version: 1");
    assert_eq!(AuditEntry::SCHEMA_VERSION, 1);
    assert_eq!(Before::SCHEMA_VERSION, 1, "an empty impl: 1");
}

fn funded_bus(backend: DynBackend) -> CommandBus {
    let (bus, _) = bank_bus_with(backend, |builder| {
        builder.aggregate::<OpenFunded, _>(decide(|account: &Account, cmd: &OpenFunded, _: &Context| {
            if account.open {
                return Err(BankError::AlreadyOpen(cmd.id.clone()));
            }
            Ok(vec![BankEvent::Opened { owner: "ada".into() }, BankEvent::Deposited { amount: cmd.amount }])
        }))
    });
    bus
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_produced_by_the_bus_carry_the_command_as_causation_and_the_correlation_id() {
    for store in stores() {
        let bus = funded_bus(Arc::clone(&store.backend));
        let first = bus.dispatch(OpenFunded { id: "a".into(), amount: 5 }).await.unwrap();
        let stored = raw_stream(&store, "account-a").await;
        assert_eq!(stored.len(), 2);
        for event in &stored {
            assert_eq!(event.metadata.causation_id, Some(first.command_id), "{}", store.name);
            assert_eq!(event.metadata.correlation_id, Some(first.command_id), "{}: default: the command's", store.name);
        }
        assert_ne!(stored[0].metadata.event_id, stored[1].metadata.event_id);

        // A request's correlation id is carried; each command has its own id.
        let request = EventId::new();
        let options = CommandOptions::new().correlation_id(request);
        let second = bus.dispatch_with(OpenFunded { id: "b".into(), amount: 6 }, options.clone()).await.unwrap();
        let third = bus.dispatch_with(Deposit { id: "b".into(), amount: 1 }, options).await.unwrap();
        assert_ne!(second.command_id, third.command_id);
        let stored = raw_stream(&store, "account-b").await;
        let causes: Vec<_> = stored.iter().map(|e| e.metadata.causation_id).collect();
        assert_eq!(causes, [Some(second.command_id), Some(second.command_id), Some(third.command_id)]);
        assert!(stored.iter().all(|e| e.metadata.correlation_id == Some(request)), "{}", store.name);

        // Under an idempotency key the ids are derived, and the causation is the first dispatch's.
        let keyed = CommandOptions::new().idempotency_key("funded-c").correlation_id(request);
        let fourth = bus.dispatch_with(OpenFunded { id: "c".into(), amount: 2 }, keyed.clone()).await.unwrap();
        let again = bus.dispatch_with(OpenFunded { id: "c".into(), amount: 2 }, keyed).await.unwrap();
        assert!(again.replayed && again.command_id == fourth.command_id, "{}", store.name);
        let stored = raw_stream(&store, "account-c").await;
        let ids: Vec<EventId> = stored.iter().map(|e| e.metadata.event_id).collect();
        assert_eq!(ids, [idempotency::event_id("funded-c", 0), idempotency::event_id("funded-c", 1)]);
        assert!(stored.iter().all(|e| e.metadata.causation_id == Some(fourth.command_id)));
        assert!(stored.iter().all(|e| e.metadata.correlation_id == Some(request)));
        assert_eq!(
            (again.events, again.first_position, again.last_position),
            (2, fourth.first_position, fourth.last_position)
        );
    }
}

/// Collects what a projection is fed.
#[derive(Default)]
struct Seen(Vec<(String, &'static str)>);

impl Projection<BankEvent> for Seen {
    fn apply(&mut self, event: &Envelope<BankEvent>) {
        self.0.push((event.stream_id.to_string(), event.event.event_type()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marker_of_a_zero_event_command_is_skipped_by_typed_readers_of_the_whole_log() {
    for store in stores() {
        let (bus, _) = bank_bus(Arc::clone(&store.backend));
        let bank = typed::<BankEvent>(&store);
        let mut live = bank.subscribe_from(StartFrom::Beginning).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let _seed_style = bank.subscribe(tx).await.unwrap();

        bus.dispatch(Open { id: "z".into(), owner: "ada".into() }).await.unwrap();
        bus.dispatch(Close { id: "z".into() }).await.unwrap();
        let keyed = CommandOptions::new().idempotency_key("close-z");
        let nothing = bus.dispatch_with(Close { id: "z".into() }, keyed).await.unwrap();
        assert_eq!((nothing.events, nothing.replayed), (0, false));
        bus.dispatch(Open { id: "y".into(), owner: "bob".into() }).await.unwrap();

        // Raw readers see the marker, between the account's events.
        let raw = store.backend.read_all(0, 100).await.unwrap();
        let streams: Vec<&str> = raw.iter().map(|r| r.stream_id.as_str()).collect();
        assert_eq!(streams, ["account-z", "account-z", idempotency::RECORD_STREAM, "account-y"], "{}", store.name);
        assert_eq!(raw[2].event_type, idempotency::RECORD_EVENT_TYPE);
        assert!(
            !BankEvent::EVENT_TYPES.contains(&idempotency::RECORD_EVENT_TYPE),
            "a typed reader that did not skip it would fail with UnknownEventType"
        );

        let expected = [("account-z", "AccountOpened"), ("account-z", "Closed"), ("account-y", "AccountOpened")];
        let all = bank.get_all_events().await.expect("get_all_events skips the marker");
        let names: Vec<&str> = all.iter().map(Event::event_type).collect();
        assert_eq!(names, expected.map(|(_, name)| name), "{}", store.name);

        let streamed: Vec<Envelope<BankEvent>> =
            bank.stream_all(0).map(|e| e.expect("stream_all skips the marker")).collect().await;
        let positions: Vec<u64> = streamed.iter().map(|e| e.position).collect();
        assert_eq!(positions, [raw[0].position, raw[1].position, raw[3].position], "{}", store.name);

        let mut seen = Seen::default();
        let checkpoint = bank.project(&mut seen, 0).await.expect("project skips the marker");
        assert_eq!(checkpoint, raw[3].position);
        let seen: Vec<(&str, &str)> = seen.0.iter().map(|(s, t)| (s.as_str(), *t)).collect();
        assert_eq!(seen, expected, "{}", store.name);
        let mut after_marker = Seen::default();
        assert_eq!(bank.project(&mut after_marker, raw[1].position).await.unwrap(), raw[3].position);
        assert_eq!(after_marker.0.len(), 1, "{}: from a checkpoint before the marker", store.name);

        for (stream, name) in expected {
            let next = live.next().await.expect("the subscription skips the marker");
            assert_eq!((next.stream_id.as_str(), next.event.event_type()), (stream, name), "{}", store.name);
        }
        assert_eq!(live.checkpoint(), raw[3].position);
        assert!(live.try_next().await.unwrap().is_none());
        for (_, name) in expected {
            let received = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
            assert_eq!(received.unwrap().unwrap().event_type(), name, "{}: subscribe(tx)", store.name);
        }
    }
}
