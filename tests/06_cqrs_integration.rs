//! The command layer end to end, on memory and AllSource: handlers found by `discover()`,
//! by-name JSON dispatch, JSON Schema and garde validation before anything is loaded, the
//! aggregate cache (hits, never stale, dropped after a conflict) and the snapshot policy
//! (snapshots saved, and loaded by a reopened store).

#[path = "support/bank.rs"]
mod bank;
#[path = "support/counting.rs"]
mod counting;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use allframe::cqrs::*;
use bank::*;
use counting::Counting;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

/// Pays out of an account; its JSON Schema checks by-name bodies.
#[command(schema, stream = "account-{from}", error = BankError)]
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Pay {
    from: String,
    amount: u64,
}

#[command_handler]
fn pay(account: &Account, cmd: &Pay) -> Result<Vec<BankEvent>, BankError> {
    if !account.open {
        return Err(BankError::NotOpen);
    }
    if account.balance < cmd.amount {
        return Err(BankError::InsufficientFunds { balance: account.balance, requested: cmd.amount });
    }
    Ok(vec![BankEvent::Withdrawn { amount: cmd.amount }])
}

/// A club's members: a second aggregate, whose command is validated with garde.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
enum MemberEvent {
    Joined { name: String, age: u8 },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Member {
    joined: bool,
}

impl Aggregate for Member {
    type Event = MemberEvent;

    fn apply(&mut self, MemberEvent::Joined { .. }: &MemberEvent) {
        self.joined = true;
    }
}

#[command(validate, stream = "member-{email}")]
#[derive(Clone, Debug, Serialize, Deserialize, garde::Validate)]
struct Join {
    #[garde(length(min = 2, max = 20))]
    name: String,
    #[garde(range(min = 18))]
    age: u8,
    #[garde(length(min = 3))]
    email: String,
}

#[command_handler]
fn join(member: &Member, cmd: &Join) -> Result<Vec<MemberEvent>, NoError> {
    if member.joined {
        return Ok(Vec::new());
    }
    Ok(vec![MemberEvent::Joined { name: cmd.name.clone(), age: cmd.age }])
}

/// A deposit whose first decision waits for the test, so that another writer can go first.
#[command(stream = "account-{id}", error = BankError)]
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SlowDeposit {
    id: String,
    amount: u64,
}

/// Holds the next decision of [`SlowDepositHandler`] until released.
#[derive(Debug, Default)]
struct Gate {
    armed: AtomicBool,
    entered: Notify,
    release: Notify,
}

struct SlowDepositHandler(Arc<Gate>);

#[allframe::async_trait]
impl AggregateHandler<SlowDeposit> for SlowDepositHandler {
    type Aggregate = Account;

    async fn handle(&self, account: &Account, cmd: &SlowDeposit, _: &Context) -> Result<Vec<BankEvent>, BankError> {
        if self.0.armed.swap(false, Ordering::SeqCst) {
            self.0.entered.notify_one();
            self.0.release.notified().await;
        }
        if !account.open {
            return Err(BankError::NotOpen);
        }
        Ok(vec![BankEvent::Deposited { amount: cmd.amount }])
    }
}

fn counted(store: &TestStore) -> (Arc<Counting>, DynBackend) {
    let counting = Counting::new(Arc::clone(&store.backend));
    let backend: DynBackend = counting.clone();
    (counting, backend)
}

/// The balance the bus decides from: a withdrawal no account covers reports it.
async fn seen_balance(bus: &CommandBus, id: &str) -> u64 {
    match bus.dispatch(Withdraw { id: id.into(), amount: u64::MAX }).await {
        Err(DispatchError::Rejected { error: BankError::InsufficientFunds { balance, .. }, .. }) => balance,
        other => panic!("{other:?}"),
    }
}

/// The balance in the store.
async fn stored_balance(backend: &DynBackend, id: &str) -> u64 {
    let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(backend));
    typed.load_aggregate::<Account>(&format!("account-{id}")).await.unwrap().state.balance
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_registers_every_command_handler_of_the_program() {
    for store in stores() {
        let (bus, decisions) = bank_bus(Arc::clone(&store.backend));
        assert_eq!(bus.commands(), ["Close", "Deposit", "Join", "Open", "Pay", "WithdrawMoney"], "{}", store.name);
        bus.dispatch(Open { id: "d".into(), owner: "ada".into() }).await.unwrap();
        bus.dispatch(Deposit { id: "d".into(), amount: 9 }).await.unwrap();
        let paid = bus.dispatch(Pay { from: "d".into(), amount: 4 }).await.unwrap();
        assert_eq!(paid.stream_version, 3, "{}", store.name);
        let joined = bus.dispatch(Join { name: "ada".into(), age: 36, email: "ada@x".into() }).await.unwrap();
        assert_eq!((joined.stream_id.as_str(), joined.events), ("member-ada@x", 1), "{}", store.name);
        assert_eq!(decisions.count(), 2, "{}: the bank's handlers took their shared state", store.name);
        assert_eq!(stored_balance(&store.backend, "d").await, 5);

        let bare = CommandBus::builder(Arc::clone(&store.backend)).build().unwrap();
        assert!(bare.commands().is_empty(), "without discover() nothing is registered");
        let none = bare.dispatch(Pay { from: "d".into(), amount: 1 }).await.unwrap_err();
        assert!(matches!(none, DispatchError::NoHandler { command: "Pay" }), "{none:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_dispatched_by_name_from_json() {
    for store in stores() {
        let (counting, backend) = counted(&store);
        let (bus, _) = bank_bus(backend);
        let none = CommandOptions::new;
        let opened = bus.dispatch_json("Open", json!({"id": "j", "owner": "ada"}), none()).await.unwrap();
        let deposited = bus.dispatch_json("Deposit", json!({"id": "j", "amount": 5}), none()).await.unwrap();
        assert_eq!((opened.command, deposited.command, deposited.stream_version), ("Open", "Deposit", 2));

        let (reads, writes) = (counting.reads(), counting.writes());
        let wrong = bus.dispatch_json("Deposit", json!({"id": "j", "amount": "five"}), none()).await.unwrap_err();
        let DispatchError::Invalid { command: "Deposit", errors } = &wrong else { panic!("{wrong:?}") };
        assert_eq!((errors.0.len(), errors.0[0].code.as_str()), (1, "type"), "{errors:?}");
        assert!(errors.0[0].message.contains("invalid type"), "{errors}");
        let missing = bus.dispatch_json("Deposit", json!({"id": "j"}), none()).await.unwrap_err();
        assert!(missing.to_string().contains("missing field `amount`"), "{missing}");
        assert_eq!((missing.code(), missing.http_status()), ("invalid_command", 400));
        let unknown = bus.dispatch_json("Deposti", json!({"id": "j"}), none()).await.unwrap_err();
        assert!(matches!(&unknown, DispatchError::UnknownCommand { name } if name == "Deposti"), "{unknown:?}");
        assert_eq!((unknown.code(), unknown.http_status()), ("unknown_command", 404));
        assert_eq!((counting.reads(), counting.writes()), (reads, writes), "{}: nothing was loaded", store.name);

        // A refusal comes back erased, with the handler's code, status and fields.
        let refused = bus.dispatch_json("WithdrawMoney", json!({"id": "j", "amount": 50}), none()).await.unwrap_err();
        let DispatchError::Rejected { command: "WithdrawMoney", error } = &refused else { panic!("{refused:?}") };
        assert_eq!((error.code, error.status), ("insufficient_funds", 422));
        assert_eq!(error.message, "balance 5 is below 50");
        assert_eq!(error.details, json!({"kind": "insufficient_funds", "balance": 5, "requested": 50}));
        assert_eq!((refused.code(), refused.http_status()), ("insufficient_funds", 422));
        let body = serde_json::to_value(&refused).unwrap();
        assert_eq!(body["code"], "insufficient_funds");
        assert_eq!(body["status"], 422);
        assert_eq!(body["details"]["balance"], 5, "{body}");
        let typed = bus.dispatch(Withdraw { id: "j".into(), amount: 50 }).await.unwrap_err();
        assert_eq!(body, serde_json::to_value(&typed).unwrap(), "by name or typed, an API sends the same body");
        let not_open = bus.dispatch_json("Deposit", json!({"id": "nobody", "amount": 1}), none()).await.unwrap_err();
        assert_eq!((not_open.code(), not_open.http_status()), ("not_open", 404));
        assert_eq!(
            store.backend.stream_version("account-j").await.unwrap(),
            2,
            "{}: refusals write nothing",
            store.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_the_json_schema_is_refused_before_any_state_is_loaded() {
    for store in stores() {
        let (counting, backend) = counted(&store);
        let (bus, _) = bank_bus(backend);
        let schema = bus.json_schema("Pay").expect("#[command(schema)] gives Pay a schema");
        assert_eq!(schema["properties"]["amount"]["type"], "integer", "{schema}");
        assert_eq!(schema["properties"]["amount"]["minimum"], 0, "{schema}");
        assert!(schema["required"].as_array().unwrap().contains(&json!("amount")), "{schema}");
        assert!(bus.json_schema("Deposit").is_none(), "a command without #[command(schema)] has none");
        assert!(bus.json_schema("Nope").is_none());

        bus.dispatch(Open { id: "p".into(), owner: "ada".into() }).await.unwrap();
        bus.dispatch(Deposit { id: "p".into(), amount: 10 }).await.unwrap();
        let (reads, writes) = (counting.reads(), counting.writes());
        for (body, problem) in [
            (json!({"from": "p", "amount": -5}), "negative"),
            (json!({"from": "p"}), "missing"),
            (json!({"from": "p", "amount": "ten"}), "a string"),
        ] {
            let refused = bus.dispatch_json("Pay", body, CommandOptions::new()).await.unwrap_err();
            let DispatchError::Invalid { command: "Pay", errors } = &refused else { panic!("{problem}: {refused:?}") };
            assert!(
                errors.0.iter().any(|e| e.field == "amount" && e.code == "schema"),
                "{}: {problem} amount: the schema's error names the field: {errors:?}",
                store.name
            );
            assert_eq!(serde_json::to_value(&refused).unwrap()["status"], 400);
        }
        assert_eq!((counting.reads(), counting.writes()), (reads, writes), "{}: nothing was loaded", store.name);

        let paid = bus.dispatch_json("Pay", json!({"from": "p", "amount": 4}), CommandOptions::new()).await.unwrap();
        assert_eq!(paid.stream_version, 3);
        assert!(counting.reads() > reads, "a valid body is loaded and decided");
        assert_eq!(stored_balance(&store.backend, "p").await, 6);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_fails_its_garde_rules_is_refused_with_field_errors_and_nothing_loaded() {
    for store in stores() {
        let (counting, backend) = counted(&store);
        let (bus, _) = bank_bus(backend);
        let invalid = Join { name: "a".into(), age: 7, email: "ada@x".into() };
        let key = CommandOptions::new().idempotency_key("join-1");
        let refused = bus.dispatch_with(invalid.clone(), key).await.unwrap_err();
        let DispatchError::Invalid { command: "Join", errors } = &refused else { panic!("{refused:?}") };
        let mut fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["age", "name"], "{}: {errors:?}", store.name);
        assert!(errors.0.iter().all(|e| !e.message.is_empty()));
        assert_eq!((refused.code(), refused.http_status()), ("invalid_command", 400));
        let body = serde_json::to_value(&refused).unwrap();
        assert_eq!(body["details"].as_array().map(Vec::len), Some(2), "{body}");

        let by_name = bus.dispatch_json("Join", serde_json::to_value(&invalid).unwrap(), CommandOptions::new()).await;
        assert!(
            matches!(by_name, Err(DispatchError::Invalid { ref errors, .. }) if errors.0.len() == 2),
            "{by_name:?}"
        );
        assert_eq!((counting.reads(), counting.writes()), (0, 0), "{}: not even the key was looked up", store.name);
        assert_eq!(store.backend.head_position().await.unwrap(), 0);

        let valid = Join { name: "ada".into(), age: 36, email: "ada@x".into() };
        let joined = bus.dispatch_with(valid, CommandOptions::new().idempotency_key("join-1")).await.unwrap();
        assert_eq!((joined.events, joined.replayed), (1, false), "the refused key was not used");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregate_cache_hits_and_sees_every_write_by_another_bus() {
    for store in stores() {
        let (counting, backend) = counted(&store);
        let (cached, _) = bank_bus_with(backend, |b| b.aggregate_cache(4));
        let (other, _) = bank_bus(Arc::clone(&store.backend));
        assert_eq!(other.cache_counters(), None, "a bus without a cache has no counters");

        cached.dispatch(Open { id: "h".into(), owner: "ada".into() }).await.unwrap();
        assert_eq!(cached.cache_counters(), Some((0, 1, 1)), "{}: the first load is a miss", store.name);
        for _ in 0..3 {
            cached.dispatch(Deposit { id: "h".into(), amount: 10 }).await.unwrap();
        }
        assert_eq!(cached.cache_counters(), Some((3, 1, 1)), "{}", store.name);
        assert_eq!(counting.snapshot_reads(), 1, "{}: only the miss loaded the aggregate", store.name);

        other.dispatch(Deposit { id: "h".into(), amount: 100 }).await.unwrap();
        assert_eq!(seen_balance(&cached, "h").await, 130, "{}: the other bus's write is seen", store.name);
        assert_eq!(cached.cache_counters(), Some((4, 1, 1)), "{}: and it was still a hit", store.name);
        cached.dispatch(Withdraw { id: "h".into(), amount: 130 }).await.expect("decided from 130");
        other.dispatch(Deposit { id: "h".into(), amount: 1 }).await.unwrap();
        other.dispatch(Deposit { id: "h".into(), amount: 2 }).await.unwrap();
        assert_eq!(seen_balance(&cached, "h").await, 3, "{}", store.name);
        assert_eq!(stored_balance(&store.backend, "h").await, 3);

        // A small cache evicts the least recently used aggregate, which then loads again.
        let (small, _) = bank_bus_with(Arc::clone(&store.backend), |b| b.aggregate_cache(1));
        for id in ["e1", "e2"] {
            small.dispatch(Open { id: id.into(), owner: "ada".into() }).await.unwrap();
        }
        assert_eq!(seen_balance(&small, "e1").await, 0);
        assert_eq!(small.cache_counters(), Some((0, 3, 1)), "{}: e1 was evicted by e2", store.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_never_leaves_a_stale_aggregate_in_the_cache() {
    for store in stores() {
        let gate = Arc::new(Gate::default());
        let handler = SlowDepositHandler(Arc::clone(&gate));
        let (strict, _) = bank_bus_with(Arc::clone(&store.backend), |b| {
            b.aggregate_cache(4).conflict_retries(0).aggregate::<SlowDeposit, _>(handler)
        });
        let (other, _) = bank_bus(Arc::clone(&store.backend));
        strict.dispatch(Open { id: "x".into(), owner: "ada".into() }).await.unwrap();
        strict.dispatch(Deposit { id: "x".into(), amount: 10 }).await.unwrap();

        // The cached bus decides from version 2; another bus writes version 3 meanwhile.
        gate.armed.store(true, Ordering::SeqCst);
        let racing = {
            let strict = strict.clone();
            tokio::spawn(async move { strict.dispatch(SlowDeposit { id: "x".into(), amount: 1 }).await })
        };
        gate.entered.notified().await;
        other.dispatch(Deposit { id: "x".into(), amount: 100 }).await.unwrap();
        gate.release.notify_one();
        let lost = racing.await.unwrap().unwrap_err();
        assert!(matches!(lost, DispatchError::Conflict { attempts: 1, .. }), "{}: {lost:?}", store.name);
        assert_eq!(strict.cache_counters().map(|(_, _, entries)| entries), Some(0), "{}: dropped", store.name);
        assert_eq!(seen_balance(&strict, "x").await, 110, "{}", store.name);
        assert_eq!(stored_balance(&store.backend, "x").await, 110);

        // With retries, the command is decided again from the store and lands once.
        let gate = Arc::new(Gate::default());
        let handler = SlowDepositHandler(Arc::clone(&gate));
        let (retrying, _) = bank_bus_with(Arc::clone(&store.backend), |b| {
            b.aggregate_cache(4).conflict_retries(2).aggregate::<SlowDeposit, _>(handler)
        });
        assert_eq!(seen_balance(&retrying, "x").await, 110, "warms the cache at version 3");
        gate.armed.store(true, Ordering::SeqCst);
        let racing = {
            let retrying = retrying.clone();
            tokio::spawn(async move { retrying.dispatch(SlowDeposit { id: "x".into(), amount: 1 }).await })
        };
        gate.entered.notified().await;
        other.dispatch(Deposit { id: "x".into(), amount: 100 }).await.unwrap();
        gate.release.notify_one();
        let landed = racing.await.unwrap().expect("decided again after the conflict");
        assert_eq!((landed.conflict_retries, landed.stream_version), (1, 5), "{}", store.name);
        assert_eq!(seen_balance(&retrying, "x").await, 211, "{}: the cached state is the store's", store.name);
        assert_eq!(seen_balance(&strict, "x").await, 211, "{}", store.name);
        assert_eq!(stored_balance(&store.backend, "x").await, 211);
    }
}

/// A keyed command that loses its last race: the first outcome is looked up once more (none),
/// the conflict is the answer, and the key stays free, so its retry decides and lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_command_that_loses_its_last_race_fails_and_its_key_stays_free() {
    for store in stores() {
        let gate = Arc::new(Gate::default());
        let handler = SlowDepositHandler(Arc::clone(&gate));
        let (strict, _) =
            bank_bus_with(Arc::clone(&store.backend), |b| b.conflict_retries(0).aggregate::<SlowDeposit, _>(handler));
        let (other, _) = bank_bus(Arc::clone(&store.backend));
        strict.dispatch(Open { id: "k".into(), owner: "ada".into() }).await.unwrap();
        let keyed = || CommandOptions::new().idempotency_key("slow-deposit-1");
        gate.armed.store(true, Ordering::SeqCst);
        let racing = {
            let strict = strict.clone();
            let options = keyed();
            tokio::spawn(async move { strict.dispatch_with(SlowDeposit { id: "k".into(), amount: 1 }, options).await })
        };
        gate.entered.notified().await;
        other.dispatch(Deposit { id: "k".into(), amount: 100 }).await.unwrap();
        gate.release.notify_one();
        let lost = racing.await.unwrap().unwrap_err();
        assert!(matches!(lost, DispatchError::Conflict { attempts: 1, .. }), "{}: {lost:?}", store.name);
        assert_eq!(stored_balance(&store.backend, "k").await, 100, "{}: nothing stored under the key", store.name);

        let landed = strict.dispatch_with(SlowDeposit { id: "k".into(), amount: 1 }, keyed()).await.unwrap();
        assert!(!landed.replayed && landed.events == 1, "{}: {landed:?}", store.name);
        let again = strict.dispatch_with(SlowDeposit { id: "k".into(), amount: 1 }, keyed()).await.unwrap();
        assert!(again.replayed, "{}", store.name);
        assert_eq!((again.command_id, again.stream_version), (landed.command_id, landed.stream_version));
        assert_eq!(stored_balance(&store.backend, "k").await, 101, "{}: the keyed deposit once", store.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_policy_saves_snapshots_that_a_reopened_store_loads_from() {
    for store in stores() {
        let TestStore { name, backend, dir } = store;
        {
            let (bus, _) = bank_bus_with(Arc::clone(&backend), |b| b.snapshot_policy(SnapshotPolicy::EveryNEvents(3)));
            bus.dispatch(Open { id: "s".into(), owner: "ada".into() }).await.unwrap();
            for amount in 1..=6 {
                bus.dispatch(Deposit { id: "s".into(), amount }).await.unwrap();
            }
        }
        let snapshot = backend.get_latest_snapshot("account-s").await.unwrap().expect("a snapshot was saved");
        assert_eq!(snapshot.version, 6, "{name}: at versions 3 and 6 of 7");
        let state: Account = serde_json::from_slice(&snapshot.payload).unwrap();
        assert_eq!((state.balance, state.events), (15, 6), "{name}: the state at version 6");

        let backend: DynBackend = match dir {
            None => backend,
            Some(dir) => {
                drop(backend);
                Arc::new(allframe::AllSourceBackend::open(dir.path()).expect("reopens")) as DynBackend
            }
        };
        let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&backend));
        let loaded = typed.load_aggregate::<Account>("account-s").await.unwrap();
        assert_eq!((loaded.snapshot_version, loaded.version, loaded.state.balance), (Some(6), 7, 21), "{name}");

        let counting = Counting::new(Arc::clone(&backend));
        let (bus, _) = bank_bus(counting.clone());
        bus.dispatch(Deposit { id: "s".into(), amount: 100 }).await.unwrap();
        let reads: Vec<(String, u64)> = counting.stream_reads();
        assert_eq!(reads.first(), Some(&("account-s".to_owned(), 6)), "{name}: the bus read after the snapshot");
        assert_eq!(stored_balance(&backend, "s").await, 121);
    }
}
