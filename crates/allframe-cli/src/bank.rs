//! The bank demo of `allframe demo`: a small bank whose commands go through the command bus
//! (`allframe::cqrs::CommandBus`): a validation error, a business rule, two commands racing on
//! one account (one is decided again), idempotency keys, a snapshot, and a projection run by
//! the projection registry, queried with read-your-writes, on memory or AllSource.
//!
//! ```text
//! cargo run -p allframe-cli -- demo                     # AllSource in ./allframe-data
//! cargo run -p allframe-cli -- demo --backend memory    # or ALLFRAME_BACKEND=memory
//! ```
//!
//! Every command that changes the account carries an idempotency key, so a second run on the
//! same AllSource directory stores nothing twice: each of them answers with its first run's
//! outcome (`replayed`). The store-level version of this bank (`EventStore::execute`,
//! `append_expected`) is `crates/allframe/examples/bank.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use allframe::cqrs::*;
use serde::{Deserialize, Serialize};

/// What can happen to an account (the names the demo has always stored), at version 3 of their
/// schema: version 2 added the teller who paid a withdrawal out, version 3 calls the account's
/// owner its holder (see [`upcasters`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event, schemars::JsonSchema)]
#[event(version = 3)]
pub enum BankEvent {
    #[event(name = "AccountOpened")]
    Opened { holder: String },
    #[event(name = "MoneyDeposited")]
    Deposited { amount: u64 },
    #[event(name = "MoneyWithdrawn")]
    Withdrawn { amount: u64, teller: String },
}

/// The teller of a withdrawal stored at version 1, which did not record one.
pub const UNKNOWN_TELLER: &str = "unknown";

/// How stores written by earlier builds of the demo are read: a version-1 withdrawal gets the
/// teller [`UNKNOWN_TELLER`] (a new field with a default); an opening stored before version 3
/// has its `owner` read as `holder` (a renamed field). Golden examples of every version:
/// `crates/allframe-cli/tests/golden/bank/`.
pub fn upcasters() -> Chain {
    Upcasters::<BankEvent>::new()
        .json("MoneyWithdrawn", 1, |mut payload| {
            payload["Withdrawn"]["teller"] = serde_json::Value::from(UNKNOWN_TELLER);
            Ok(payload)
        })
        .unchanged("MoneyWithdrawn", 2)
        .unchanged("AccountOpened", 1)
        .json("AccountOpened", 2, |mut payload| {
            let owner = payload["Opened"]["owner"].take();
            payload["Opened"] = serde_json::json!({ "holder": owner });
            Ok(payload)
        })
        .build()
        .expect("the demo's chain is sound")
}

/// The demo's view of a store: every read through [`upcasters`], so that a store an earlier
/// build wrote reads as the current events.
pub fn upcasting(backend: DynBackend) -> DynBackend {
    Arc::new(Upcasting::new(backend, upcasters(), Codec::Json))
}

/// One account's state, rebuilt from its events (and snapshotted).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Account {
    owner: Option<String>,
    balance: u64,
}

impl Aggregate for Account {
    type Event = BankEvent;

    fn apply(&mut self, event: &BankEvent) {
        match event {
            BankEvent::Opened { holder } => self.owner = Some(holder.clone()),
            BankEvent::Deposited { amount } => self.balance += amount,
            BankEvent::Withdrawn { amount, .. } => self.balance -= amount,
        }
    }
}

/// Why the bank refuses a command: a stable code and an HTTP status each, which the bus puts
/// in its `DispatchError`.
#[derive(Debug, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum BankError {
    #[error("account is already open")]
    AlreadyOpen,
    #[error("account is not open")]
    NotOpen,
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: u64, asked: u64 },
}

impl DomainError for BankError {
    fn code(&self) -> &'static str {
        match self {
            BankError::AlreadyOpen => "already_open",
            BankError::NotOpen => "not_open",
            BankError::InsufficientFunds { .. } => "insufficient_funds",
        }
    }

    fn http_status(&self) -> u16 {
        match self {
            BankError::AlreadyOpen => 409,
            BankError::NotOpen => 404,
            BankError::InsufficientFunds { .. } => 422,
        }
    }
}

/// Opens an account for its owner.
#[command(name = "OpenAccount", stream = "account-{account}", error = BankError, validate)]
#[derive(Clone, Debug, Serialize, Deserialize, garde::Validate)]
pub(crate) struct OpenAccount {
    #[garde(length(min = 1, max = 64))]
    pub(crate) account: String,
    #[garde(length(min = 1, max = 100))]
    pub(crate) owner: String,
}

/// Puts money on an account.
#[command(name = "DepositMoney", stream = "account-{account}", error = BankError, validate)]
#[derive(Clone, Debug, Serialize, Deserialize, garde::Validate)]
pub(crate) struct Deposit {
    #[garde(length(min = 1, max = 64))]
    pub(crate) account: String,
    #[garde(range(min = 1, max = 1_000_000))]
    pub(crate) amount: u64,
}

/// Takes money from an account, if the balance covers it.
#[command(name = "WithdrawMoney", stream = "account-{account}", error = BankError, validate)]
#[derive(Clone, Debug, Serialize, Deserialize, garde::Validate)]
pub(crate) struct Withdraw {
    #[garde(length(min = 1, max = 64))]
    pub(crate) account: String,
    #[garde(range(min = 1, max = 1_000_000))]
    pub(crate) amount: u64,
    /// Who pays it out.
    #[garde(length(min = 1, max = 32))]
    pub(crate) teller: String,
}

#[command_handler]
fn open(account: &Account, cmd: &OpenAccount) -> Result<Vec<BankEvent>, BankError> {
    if account.owner.is_some() {
        return Err(BankError::AlreadyOpen);
    }
    Ok(vec![BankEvent::Opened { holder: cmd.owner.clone() }])
}

#[command_handler]
fn deposit(account: &Account, cmd: &Deposit, ctx: &Context) -> Result<Vec<BankEvent>, BankError> {
    if account.owner.is_none() {
        return Err(BankError::NotOpen);
    }
    ctx.add_header("teller", "counter");
    Ok(vec![BankEvent::Deposited { amount: cmd.amount }])
}

#[command_handler]
async fn withdraw(account: &Account, cmd: &Withdraw, tellers: State<Tellers>) -> Result<Vec<BankEvent>, BankError> {
    tellers.meet().await;
    if account.owner.is_none() {
        return Err(BankError::NotOpen);
    }
    if account.balance < cmd.amount {
        return Err(BankError::InsufficientFunds { balance: account.balance, asked: cmd.amount });
    }
    Ok(vec![BankEvent::Withdrawn { amount: cmd.amount, teller: cmd.teller.clone() }])
}

/// The tellers' desk, a shared service the withdraw handler takes as `State<Tellers>`. While a
/// meeting is arranged, that many decisions wait for each other before deciding, so they decide
/// from the same version of the account: the demo's way to make a conflict happen every time
/// instead of by chance.
#[derive(Debug, Default)]
pub(crate) struct Tellers {
    meeting: Mutex<Option<(Arc<tokio::sync::Barrier>, usize)>>,
}

impl Tellers {
    /// Makes the next `tellers` decisions wait for each other.
    fn arrange(&self, tellers: usize) {
        *self.meeting.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Arc::new(tokio::sync::Barrier::new(tellers)), tellers));
    }

    /// Ends the meeting (nobody waits any more).
    fn cancel(&self) {
        *self.meeting.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Waits for the other tellers when a meeting is arranged and this decision is one of it
    /// (a decision after a conflict is not: the meeting is over by then).
    async fn meet(&self) {
        let barrier = {
            let mut meeting = self.meeting.lock().unwrap_or_else(PoisonError::into_inner);
            let seat = meeting.as_mut().filter(|(_, left)| *left > 0).map(|(barrier, left)| {
                *left -= 1;
                (Arc::clone(barrier), *left)
            });
            if seat.as_ref().is_some_and(|(_, left)| *left == 0) {
                *meeting = None;
            }
            seat.map(|(barrier, _)| barrier)
        };
        if let Some(barrier) = barrier {
            // Bounded, so that a teller whose colleague never comes still decides.
            let _ = tokio::time::timeout(Duration::from_secs(10), barrier.wait()).await;
        }
    }
}

/// The read model: balances per account, kept by the projection registry (in memory, so
/// replayed from the log at each start).
#[derive(Debug, Default)]
pub struct Balances(BTreeMap<String, i64>);

impl ReadModel<BankEvent> for Balances {
    const NAME: &'static str = "balances";
    const EVENTS: &'static [&'static str] = &["MoneyDeposited", "MoneyWithdrawn"];

    fn apply(&mut self, event: &Envelope<BankEvent>) -> std::result::Result<(), BoxError> {
        let delta = match event.event {
            BankEvent::Deposited { amount } => amount as i64,
            BankEvent::Withdrawn { amount, .. } => -(amount as i64),
            BankEvent::Opened { .. } => 0,
        };
        *self.0.entry(event.stream_id.as_str().to_owned()).or_default() += delta;
        Ok(())
    }
}

/// The demo's projection registry over `store`, with its projections registered (not
/// started), and the handle of `balances`.
pub fn projections(
    store: &BankStore,
) -> (ProjectionRegistry<BankEvent, dyn EventStoreBackend>, ReadModelHandle<Balances>) {
    let registry = ProjectionRegistry::new(store.clone());
    let balances = registry.register(Balances::default).expect("one projection of each name");
    (registry, balances)
}

/// The demo's typed store over any backend.
pub type BankStore = EventStore<BankEvent, dyn EventStoreBackend>;

/// The query side: an account's balance as the projection knows it, once it has passed the
/// position the caller wrote (read your own writes).
#[derive(Debug)]
struct BalanceOf {
    stream: String,
    seen: u64,
}

impl Query for BalanceOf {
    const NAME: &'static str = "BalanceOf";
    type Output = Option<i64>;
    type Error = ProjectionError;
}

async fn balance_of(query: BalanceOf, ctx: QueryContext) -> std::result::Result<Option<i64>, ProjectionError> {
    let balances = ctx.state::<ReadModelHandle<Balances>>().expect("given to the query bus");
    let model = balances.read_at_least(query.seen, Duration::from_secs(10)).await?;
    Ok(model.0.get(&query.stream).copied())
}

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// The account every run uses, so that a second run on one store meets the first run's keys.
const ACCOUNT: &str = "ada";

/// The idempotency key of one of the demo's commands.
fn key(name: &str) -> CommandOptions {
    CommandOptions::new().idempotency_key(format!("demo-{ACCOUNT}-{name}"))
}

/// ` (replayed)` after an outcome an idempotency key answered.
fn replayed(outcome: &Outcome) -> &'static str {
    if outcome.replayed { " (replayed)" } else { "" }
}

/// Runs the demo on `backend`, printing each step.
pub async fn run_demo(backend: DynBackend) -> Result<()> {
    println!("bank demo on the `{}` backend ({})", backend.name(), backend.capabilities().durability);
    // The schemas of this build's events, kept in the store (`allframe schema list`), each new
    // version checked against what earlier builds registered.
    let chain = upcasters();
    let registered = SchemaRegistration::<BankEvent>::new(&chain).register(&*backend).await?;
    println!(
        "event schemas: version {} of {} types{}",
        BankEvent::SCHEMA_VERSION,
        registered.registered.len() + registered.unchanged,
        if registered.registered.is_empty() {
            " (registered by an earlier run)".to_owned()
        } else {
            format!(", {} newly registered", registered.registered.len())
        }
    );
    let backend = upcasting(backend);
    let tellers = Arc::new(Tellers::default());
    let bus = CommandBus::builder(Arc::clone(&backend))
        .discover()
        .shared_state(Arc::clone(&tellers))
        .snapshot_policy(SnapshotPolicy::EveryNEvents(4))
        .build()?;
    println!("command bus: {}", bus.commands().join(", "));
    let store: BankStore = EventStore::from_shared(Arc::clone(&backend));

    let (registry, balances) = projections(&store);
    registry.start_all().await?;
    let queries = QueryBus::builder().state(balances).handler::<BalanceOf, _>(balance_of).build()?;

    let stream = format!("account-{ACCOUNT}");
    let mut replays = 0;
    let opened = bus.dispatch_with(OpenAccount { account: ACCOUNT.into(), owner: "Ada".into() }, key("open")).await?;
    if opened.replayed {
        replays += 1;
        println!("{stream} was opened by an earlier run (key `demo-{ACCOUNT}-open` replayed its outcome)");
        println!("this store has run the demo before: each command with an idempotency key answers with its");
        println!("first run's outcome (replayed) and stores nothing again");
    } else {
        println!("opened {stream} for Ada -> version {}", opened.stream_version);
    }

    let mut deposits = Vec::new();
    for (n, amount) in [100, 50, 25].into_iter().enumerate() {
        let options = key(&format!("deposit-{n}")).header("channel", "demo");
        let outcome = bus.dispatch_with(Deposit { account: ACCOUNT.into(), amount }, options).await?;
        replays += u32::from(outcome.replayed);
        println!("deposited {amount:>4}  -> version {}{}", outcome.stream_version, replayed(&outcome));
        deposits.push(outcome);
    }

    // A client that timed out sends its last deposit again, with the same key.
    let again = bus.dispatch_with(Deposit { account: ACCOUNT.into(), amount: 25 }, key("deposit-2")).await?;
    replays += u32::from(again.replayed);
    println!(
        "deposit 25 sent again with key `demo-{ACCOUNT}-deposit-2`: replayed: {}, same command id: {}, version {}: stored once",
        again.replayed,
        again.command_id == deposits[2].command_id,
        again.stream_version,
    );

    // Field rules (garde, `#[command(validate)]`) run before anything is loaded.
    match bus.dispatch(Deposit { account: ACCOUNT.into(), amount: 0 }).await {
        Err(error @ DispatchError::Invalid { .. }) => {
            println!(
                "deposit 0 refused before anything was loaded: {error} ({}, HTTP {})",
                error.code(),
                error.http_status()
            )
        }
        other => println!("deposit 0 unexpectedly gave {other:?}"),
    }

    // A business rule: the handler's own error, with its code and status.
    match bus.dispatch(Withdraw { account: ACCOUNT.into(), amount: 1_000, teller: "A".into() }).await {
        Err(error) => {
            if let DispatchError::Rejected { error: reason, .. } = &error {
                println!("withdraw 1000 refused: {reason} ({}, HTTP {})", error.code(), error.http_status());
            } else {
                println!("withdraw 1000 failed: {error}");
            }
            println!("  as an API answers it: {}", serde_json::to_string(&error)?);
        }
        Ok(outcome) => println!("withdraw 1000 unexpectedly succeeded: {outcome:?}"),
    }

    // Two tellers withdraw at once: both decide from the same version, one append conflicts,
    // and the bus decides that command again from the new state.
    let version = backend.stream_version(&stream).await?;
    tellers.arrange(2);
    let race = |amount: u64, teller: &str| {
        let (bus, options) = (bus.clone(), key(&format!("teller-{teller}")));
        let teller = teller.to_uppercase();
        tokio::spawn(
            async move { bus.dispatch_with(Withdraw { account: ACCOUNT.into(), amount, teller }, options).await },
        )
    };
    let (a, b) = (race(60, "a"), race(70, "b"));
    let (a, b) = (a.await??, b.await??);
    let last_write = a.last_position.max(b.last_position);
    tellers.cancel();
    if a.replayed && b.replayed {
        println!("tellers A and B withdrew 60 and 70 at the same moment in the first run:");
    } else {
        println!("tellers A and B withdraw 60 and 70 at the same moment, both deciding from version {version};");
        println!("one append conflicts, and the bus decides that command again from the new state:");
    }
    for (teller, amount, outcome) in [("A", 60, a), ("B", 70, b)] {
        replays += u32::from(outcome.replayed);
        let retries = if outcome.replayed {
            "replayed".to_owned()
        } else {
            format!("conflict_retries: {}", outcome.conflict_retries)
        };
        println!("  teller {teller} withdrew {amount} -> version {} ({retries})", outcome.stream_version);
    }

    let loaded = store.load_aggregate::<Account>(&stream).await?;
    let snapshot = store.backend().get_latest_snapshot(&stream).await?;
    println!(
        "account balance {} at version {} (loaded from the snapshot at version {:?}, then {} events)",
        loaded.state.balance,
        loaded.version,
        snapshot.as_ref().map(|s| s.version),
        loaded.version - loaded.snapshot_version.unwrap_or(0),
    );

    // What the bus wrote beside each event: the command's id as causation, headers.
    let first_deposit = backend.read_stream(&stream, 1, 1).await?;
    if let Some(event) = first_deposit.first() {
        let headers: Vec<String> = event.metadata.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let causation = event.metadata.causation_id;
        println!(
            "event {} ({}): causation id {} ({}), correlation id {}, headers {}",
            event.version,
            event.event_type,
            causation.map_or_else(|| "none".into(), |id| id.to_string()),
            if causation == Some(deposits[0].command_id) { "its command's id" } else { "another command's id" },
            event.metadata.correlation_id.map_or_else(|| "none".into(), |id| id.to_string()),
            headers.join(" "),
        );
    }

    // The projection follows the log; a query that carries the position a command wrote
    // waits until the projection has passed it.
    let last = last_write;
    let answer = queries.query(BalanceOf { stream: stream.clone(), seen: last }).await?;
    let status = registry.status("balances").await?;
    println!(
        "projection `balances`: {stream} balance {answer:?} (query BalanceOf at least at position {last}); \
         {:?} at position {} of {}, lag {} events",
        status.state, status.position, status.head, status.lag_events
    );
    registry.stop_all().await;

    store.flush().await?;
    let stats = store.stats().await?;
    println!(
        "store: {} events in {} streams, {} snapshots, durability: {}",
        stats.events, stats.streams, stats.snapshots, stats.durability
    );
    if opened.replayed {
        println!("{replays} commands were answered by their idempotency keys; nothing was stored twice");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every version the demo ever stored reads as today's events (migration testing).
    #[test]
    fn the_demos_golden_examples_read_as_the_current_events() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/bank");
        let report = allframe_cqrs_testkit::golden::check_golden::<super::BankEvent>(&dir, &super::upcasters())
            .unwrap_or_else(|problems| panic!("{problems}"));
        assert_eq!((report.examples, report.steps_covered), (5, 4));
    }

    /// Version 2 of the demo's events, as the build before this one had them.
    mod v2 {
        use allframe::cqrs::*;
        use serde::{Deserialize, Serialize};

        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event, schemars::JsonSchema)]
        #[event(version = 2)]
        pub enum BankEvent {
            #[event(name = "AccountOpened")]
            Opened { owner: String },
            #[event(name = "MoneyDeposited")]
            Deposited { amount: u64 },
            #[event(name = "MoneyWithdrawn")]
            Withdrawn { amount: u64, teller: String },
        }
    }

    /// The refusal `docs/VERSIONING.md` shows: version 3 without the upcaster of its rename.
    #[tokio::test]
    async fn version_3_without_its_rename_upcaster_is_refused_at_start_up() {
        use allframe::cqrs::*;
        let store = InMemoryBackend::new();
        let v2_chain = Upcasters::<v2::BankEvent>::new().unchanged("MoneyWithdrawn", 1).build().unwrap();
        SchemaRegistration::<v2::BankEvent>::new(&v2_chain).register(&store).await.unwrap();
        let forgot = Upcasters::<super::BankEvent>::new()
            .unchanged("MoneyWithdrawn", 1)
            .unchanged("MoneyWithdrawn", 2)
            .build()
            .unwrap();
        let error = SchemaRegistration::<super::BankEvent>::new(&forgot).register(&store).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "version 3 of `AccountOpened` is not backward compatible with version 2 of `AccountOpened`: \
             at `/Opened`: \"holder\" is a required property, so a stored version 2 event cannot be read \
             (for example {\"Opened\":{\"owner\":\"text\"}})"
        );
        let fixed = SchemaRegistration::<super::BankEvent>::new(&super::upcasters()).register(&store).await.unwrap();
        assert_eq!(fixed.registered.len(), 3);
    }
}
