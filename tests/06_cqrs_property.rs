//! Properties of the command layer over random inputs: command sequences agree with a model of
//! the bank, idempotency keys with repeats land once, the aggregate cache changes no outcome,
//! `event_type` is serde's tag, and concurrent deposits all count; on memory, and on AllSource
//! with fewer cases.

#[path = "support/bank.rs"]
mod bank;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use allframe::cqrs::*;
use bank::*;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// One runtime for every case (a case is a few dispatches).
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
});

/// A fresh store: memory, or AllSource in a new directory (kept alive beside it).
fn fresh(allsource: bool) -> (DynBackend, Option<tempfile::TempDir>) {
    if !allsource {
        return (Arc::new(InMemoryBackend::new()), None);
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = allframe::AllSourceBackend::open(dir.path()).unwrap();
    (Arc::new(backend), Some(dir))
}

/// A bank command on one of a few accounts.
#[derive(Clone, Debug)]
enum Op {
    Open(u8),
    Deposit(u8, u64),
    Withdraw(u8, u64),
    Close(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3).prop_map(Op::Open),
        (0u8..3, 1u64..50).prop_map(|(a, n)| Op::Deposit(a, n)),
        (0u8..3, 1u64..80).prop_map(|(a, n)| Op::Withdraw(a, n)),
        (0u8..3).prop_map(Op::Close),
    ]
}

impl Op {
    fn account(&self) -> u8 {
        match *self {
            Op::Open(a) | Op::Deposit(a, _) | Op::Withdraw(a, _) | Op::Close(a) => a,
        }
    }

    async fn dispatch(&self, bus: &CommandBus) -> Result<Outcome, DispatchError<BankError>> {
        let id = self.account().to_string();
        match *self {
            Op::Open(_) => bus.dispatch(Open { id, owner: "ada".into() }).await,
            Op::Deposit(_, amount) => bus.dispatch(Deposit { id, amount }).await,
            Op::Withdraw(_, amount) => bus.dispatch(Withdraw { id, amount }).await,
            Op::Close(_) => bus.dispatch(Close { id }).await,
        }
    }
}

/// The model of one account: what the bank's rules say, without a store.
#[derive(Clone, Debug, Default)]
struct Model {
    open: bool,
    closed: bool,
    balance: u64,
    version: u64,
}

impl Model {
    /// How many events `op` produces on this account, or the refusal; applies it.
    fn apply(&mut self, op: &Op) -> Result<u64, BankError> {
        let produced = match *op {
            Op::Open(a) if self.open => return Err(BankError::AlreadyOpen(a.to_string())),
            Op::Open(_) => {
                self.open = true;
                1
            }
            _ if !self.open => return Err(BankError::NotOpen),
            Op::Deposit(..) if self.closed => return Err(BankError::Closed),
            Op::Deposit(_, amount) => {
                self.balance += amount;
                1
            }
            Op::Withdraw(_, amount) if self.balance < amount => {
                return Err(BankError::InsufficientFunds { balance: self.balance, requested: amount });
            }
            Op::Withdraw(_, amount) => {
                self.balance -= amount;
                1
            }
            Op::Close(_) if self.closed => 0,
            Op::Close(_) => {
                self.closed = true;
                1
            }
        };
        self.version += produced;
        Ok(produced)
    }
}

/// Checks the stored stream against the model: contiguous versions, a balance that never went
/// below zero, and the model's final balance.
async fn check_stream(backend: &DynBackend, account: u8, model: &Model) {
    let stream = format!("account-{account}");
    let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(backend));
    let events = typed.read_stream(&stream, 0, 1000).await.unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=model.version).collect::<Vec<_>>(), "{stream}: contiguous versions");
    assert!(events.windows(2).all(|w| w[0].position < w[1].position), "{stream}: positions grow");
    let mut balance: i128 = 0;
    for event in &events {
        match event.event {
            BankEvent::Deposited { amount } => balance += i128::from(amount),
            BankEvent::Withdrawn { amount } => balance -= i128::from(amount),
            _ => {}
        }
        assert!(balance >= 0, "{stream}: the balance went below zero at version {}", event.version);
    }
    assert_eq!(balance, i128::from(model.balance), "{stream}");
}

fn run_against_the_model(ops: &[Op], allsource: bool) {
    RUNTIME.block_on(async {
        let (backend, _dir) = fresh(allsource);
        let (bus, _) = bank_bus(Arc::clone(&backend));
        let mut models: BTreeMap<u8, Model> = BTreeMap::new();
        for op in ops {
            let model = models.entry(op.account()).or_default();
            let expected = model.apply(op);
            let stream = format!("account-{}", op.account());
            match (op.dispatch(&bus).await, expected) {
                (Ok(outcome), Ok(events)) => {
                    assert_eq!((outcome.events, outcome.stream_version), (events, model.version), "{op:?}");
                }
                (Err(DispatchError::Rejected { error, .. }), Err(refusal)) => assert_eq!(error, refusal, "{op:?}"),
                (got, expected) => panic!("{op:?}: the bus said {got:?}, the model {expected:?}"),
            }
            let version = backend.stream_version(&stream).await.unwrap();
            assert_eq!(version, model.version, "{op:?}: a refusal writes nothing");
        }
        for (account, model) in &models {
            check_stream(&backend, *account, model).await;
        }
    });
}

/// A deposit under an idempotency key (whose account and amount it fixes), or one without.
#[derive(Clone, Debug)]
enum Keyed {
    Key(u8),
    Plain(u8, u64),
}

fn keyed_deposit(key: u8) -> (Deposit, CommandOptions) {
    let command = Deposit { id: (key % 2).to_string(), amount: u64::from(key) + 1 };
    (command, CommandOptions::new().idempotency_key(format!("key-{key}")))
}

fn run_keys_with_repeats(ops: &[Keyed], allsource: bool) {
    RUNTIME.block_on(async {
        let (backend, _dir) = fresh(allsource);
        let (bus, decisions) = bank_bus(Arc::clone(&backend));
        for account in ["0", "1"] {
            bus.dispatch(Open { id: account.into(), owner: "ada".into() }).await.unwrap();
        }
        let mut first: BTreeMap<u8, Outcome> = BTreeMap::new();
        let mut balances = [0u64; 2];
        for op in ops {
            match *op {
                Keyed::Plain(account, amount) => {
                    bus.dispatch(Deposit { id: account.to_string(), amount }).await.unwrap();
                    balances[usize::from(account)] += amount;
                }
                Keyed::Key(key) => {
                    let (command, options) = keyed_deposit(key);
                    let before = decisions.count();
                    let outcome = bus.dispatch_with(command.clone(), options).await.unwrap();
                    match first.get(&key) {
                        None => {
                            assert!(!outcome.replayed, "{op:?}: the first use runs");
                            balances[usize::from(key % 2)] += command.amount;
                            first.insert(key, outcome);
                        }
                        Some(earlier) => {
                            assert!(outcome.replayed, "{op:?}: a repeat is answered");
                            assert_eq!(decisions.count(), before, "{op:?}: without deciding");
                            let fields = |o: &Outcome| (o.command_id, o.stream_version, o.first_position, o.events);
                            assert_eq!(fields(&outcome), fields(earlier), "{op:?}: the first outcome");
                        }
                    }
                }
            }
        }
        for account in 0..2u8 {
            let stored = backend.read_stream(&format!("account-{account}"), 0, 1000).await.unwrap();
            let mut keys: BTreeMap<String, usize> = BTreeMap::new();
            for event in &stored {
                if let Some(key) = event.metadata.headers.get(idempotency::HEADER_KEY) {
                    *keys.entry(key.clone()).or_default() += 1;
                }
            }
            let expected: BTreeMap<String, usize> =
                first.keys().filter(|k| *k % 2 == account).map(|k| (format!("key-{k}"), 1)).collect();
            assert_eq!(keys, expected, "account {account}: each distinct key's events exist once");
            let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&backend));
            let loaded = typed.load_aggregate::<Account>(&format!("account-{account}")).await.unwrap();
            assert_eq!(loaded.state.balance, balances[usize::from(account)], "account {account}");
        }
    });
}

/// A command through the bus under test, or a write by another bus to the same store.
#[derive(Clone, Debug)]
enum Step {
    Bus(Op),
    Other(u8, u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![4 => op().prop_map(Step::Bus), 1 => (0u8..3, 1u64..30).prop_map(|(a, n)| Step::Other(a, n))]
}

/// What an outcome says, without the ids that differ between two runs.
fn summary(result: &Result<Outcome, DispatchError<BankError>>) -> String {
    match result {
        Ok(o) => {
            format!("ok {} {} {} {} {}", o.events, o.stream_version, o.first_position, o.last_position, o.replayed)
        }
        Err(error) => format!("err {error:?}"),
    }
}

/// Runs `steps` on a fresh memory store through a bus with or without a cache.
async fn run_steps(steps: &[Step], cache: Option<usize>) -> (Vec<String>, Vec<(String, String, u64)>) {
    let backend: DynBackend = Arc::new(InMemoryBackend::new());
    let (bus, _) = bank_bus_with(Arc::clone(&backend), |b| match cache {
        Some(capacity) => b.aggregate_cache(capacity),
        None => b,
    });
    let (other, _) = bank_bus(Arc::clone(&backend));
    let mut outcomes = Vec::new();
    for step in steps {
        match step {
            Step::Bus(op) => outcomes.push(summary(&op.dispatch(&bus).await)),
            Step::Other(account, amount) => {
                let result = other.dispatch(Deposit { id: account.to_string(), amount: *amount }).await;
                outcomes.push(format!("other {}", summary(&result)));
            }
        }
    }
    if let Some(capacity) = cache {
        let (_, _, entries) = bus.cache_counters().expect("a cache");
        assert!(entries <= capacity, "{entries} entries in a cache of {capacity}");
    }
    let stored = backend.read_all(0, 10_000).await.unwrap();
    let log = stored
        .iter()
        .map(|e| (e.stream_id.to_string(), e.event_type.to_string(), e.version))
        .chain(std::iter::once(("payloads".to_owned(), payloads(&stored), 0)))
        .collect();
    (outcomes, log)
}

fn payloads(stored: &[allframe::RecordedEvent]) -> String {
    stored.iter().map(|e| String::from_utf8_lossy(&e.payload).into_owned()).collect::<Vec<_>>().join(";")
}

/// An enum with the default `event_type`, of every variant shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Shapes {
    Unit,
    Newtype(u32),
    Tuple(u8, String),
    Fields {
        a: i64,
        b: Option<String>,
    },
    #[serde(rename = "renamed.one")]
    Renamed {
        x: bool,
    },
}

impl Event for Shapes {}

/// A derived enum under one `rename_all` rule, with awkward variant names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Screaming {
    HTTPRequest(u8),
    Item2Added {
        v: Vec<u8>,
    },
    A,
    #[serde(rename = "x-4")]
    Fourth(String),
}

/// Another rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
#[serde(rename_all = "camelCase")]
enum Camel {
    FirstThing(u16),
    SecondThingHere { ok: bool },
    Z,
}

/// And another (`ABC`: every letter a word boundary).
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
#[serde(rename_all = "kebab-case")]
enum Kebab {
    MoneyMovedOut(i32),
    ABC,
}

fn shapes() -> impl Strategy<Value = Shapes> {
    prop_oneof![
        Just(Shapes::Unit),
        any::<u32>().prop_map(Shapes::Newtype),
        (any::<u8>(), "[a-z]{0,8}").prop_map(|(n, s)| Shapes::Tuple(n, s)),
        (any::<i64>(), proptest::option::of("[a-z]{0,4}")).prop_map(|(a, b)| Shapes::Fields { a, b }),
        any::<bool>().prop_map(|x| Shapes::Renamed { x }),
    ]
}

fn screaming() -> impl Strategy<Value = Screaming> {
    prop_oneof![
        any::<u8>().prop_map(Screaming::HTTPRequest),
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(|v| Screaming::Item2Added { v }),
        Just(Screaming::A),
        "[a-z]{0,6}".prop_map(Screaming::Fourth),
    ]
}

fn camel() -> impl Strategy<Value = Camel> {
    prop_oneof![
        any::<u16>().prop_map(Camel::FirstThing),
        any::<bool>().prop_map(|ok| Camel::SecondThingHere { ok }),
        Just(Camel::Z)
    ]
}

fn kebab() -> impl Strategy<Value = Kebab> {
    prop_oneof![any::<i32>().prop_map(Kebab::MoneyMovedOut), Just(Kebab::ABC)]
}

/// The key serde writes for an externally tagged value (or the string of a unit variant).
fn tag<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value).unwrap() {
        serde_json::Value::Object(map) => {
            assert_eq!(map.len(), 1, "externally tagged: one key");
            map.keys().next().unwrap().clone()
        }
        serde_json::Value::String(name) => name,
        other => panic!("not externally tagged: {other}"),
    }
}

/// `event_type` is serde's tag, the derive lists it, and the value comes back from JSON.
fn check_tag<T: Event + PartialEq + std::fmt::Debug>(value: &T, derived: bool) {
    assert_eq!(value.event_type(), tag(value), "{value:?}");
    if derived {
        assert!(T::EVENT_TYPES.contains(&value.event_type()), "{value:?} is listed in {:?}", T::EVENT_TYPES);
    }
    let back: T = serde_json::from_value(serde_json::to_value(value).unwrap()).unwrap();
    assert_eq!(&back, value);
}

/// Deposits from several buses (one with a cache) over one store at once.
fn run_concurrent_deposits(deposits: &[(usize, u64)], retries: u32, allsource: bool) {
    RUNTIME.block_on(async {
        let (backend, _dir) = fresh(allsource);
        let buses: Vec<CommandBus> = (0..3)
            .map(|n| {
                let (bus, _) = bank_bus_with(Arc::clone(&backend), |b| {
                    let b = b.conflict_retries(retries);
                    if n == 0 { b.aggregate_cache(2) } else { b }
                });
                bus
            })
            .collect();
        buses[0].dispatch(Open { id: "c".into(), owner: "ada".into() }).await.unwrap();
        let tasks: Vec<_> = deposits
            .iter()
            .map(|&(bus, amount)| {
                let bus = buses[bus].clone();
                tokio::spawn(async move { (amount, bus.dispatch(Deposit { id: "c".into(), amount }).await) })
            })
            .collect();
        let (mut accepted, mut sum) = (0u64, 0u64);
        for task in tasks {
            match task.await.unwrap() {
                (amount, Ok(outcome)) => {
                    assert!(!outcome.replayed && outcome.events == 1);
                    accepted += 1;
                    sum += amount;
                }
                (_, Err(DispatchError::Conflict { attempts, .. })) => assert_eq!(attempts, retries + 1),
                (_, Err(other)) => panic!("{other:?}"),
            }
        }
        let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&backend));
        let account = typed.load_aggregate::<Account>("account-c").await.unwrap();
        assert_eq!((account.state.balance, account.version), (sum, 1 + accepted), "the accepted deposits, each once");
        for bus in &buses {
            let seen = bus.dispatch(Withdraw { id: "c".into(), amount: u64::MAX }).await.unwrap_err();
            let DispatchError::Rejected { error: BankError::InsufficientFunds { balance, .. }, .. } = seen else {
                panic!("{seen:?}")
            };
            assert_eq!(balance, sum, "every bus decides from the same state");
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn command_sequences_agree_with_the_model_on_memory(ops in proptest::collection::vec(op(), 1..40)) {
        run_against_the_model(&ops, false);
    }

    #[test]
    fn repeated_idempotency_keys_land_once_on_memory(
        ops in proptest::collection::vec(
            prop_oneof![3 => (0u8..6).prop_map(Keyed::Key), 1 => (0u8..2, 1u64..9).prop_map(|(a, n)| Keyed::Plain(a, n))],
            1..30,
        )
    ) {
        run_keys_with_repeats(&ops, false);
    }

    #[test]
    fn the_aggregate_cache_changes_no_outcome_and_no_state(
        steps in proptest::collection::vec(step(), 1..40),
        capacity in 1usize..4,
    ) {
        let (uncached, cached) = RUNTIME.block_on(async { (run_steps(&steps, None).await, run_steps(&steps, Some(capacity)).await) });
        prop_assert_eq!(&uncached.0, &cached.0, "outcomes");
        prop_assert_eq!(&uncached.1, &cached.1, "stored events");
    }

    #[test]
    fn event_type_is_the_tag_serde_writes(a in shapes(), b in screaming(), c in camel(), d in kebab()) {
        check_tag(&a, false);
        check_tag(&b, true);
        check_tag(&c, true);
        check_tag(&d, true);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn concurrent_deposits_end_in_the_sum_of_the_accepted_ones_on_memory(
        deposits in proptest::collection::vec((0usize..3, 1u64..100), 1..24),
        retries in 0u32..3,
    ) {
        run_concurrent_deposits(&deposits, retries, false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn command_sequences_agree_with_the_model_on_allsource(ops in proptest::collection::vec(op(), 1..25)) {
        run_against_the_model(&ops, true);
    }

    #[test]
    fn repeated_idempotency_keys_land_once_on_allsource(
        ops in proptest::collection::vec(
            prop_oneof![3 => (0u8..6).prop_map(Keyed::Key), 1 => (0u8..2, 1u64..9).prop_map(|(a, n)| Keyed::Plain(a, n))],
            1..20,
        )
    ) {
        run_keys_with_repeats(&ops, true);
    }

    #[test]
    fn concurrent_deposits_end_in_the_sum_of_the_accepted_ones_on_allsource(
        deposits in proptest::collection::vec((0usize..3, 1u64..100), 1..16),
        retries in 0u32..3,
    ) {
        run_concurrent_deposits(&deposits, retries, true);
    }
}
