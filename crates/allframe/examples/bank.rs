//! A small bank on AllFrame CQRS's store API: open accounts, deposit, withdraw under a
//! business rule, retry a concurrency conflict, feed a balance projection from a subscription,
//! and snapshot an account, with `EventStore` alone (`execute`, `append_expected`,
//! `load_aggregate`, `subscribe_from`).
//!
//! ```text
//! cargo run -p allframe --example bank -- --backend memory                  # in memory
//! cargo run -p allframe --features cqrs-allsource --example bank            # AllSource in ./allframe-data
//! ```
//!
//! The same bank through the command bus (`#[command]`, `#[command_handler]`, validation,
//! idempotency keys) is `allframe demo`, in `crates/allframe-cli/src/bank.rs`; the command
//! layer's guide is `docs/COMMANDS.md`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allframe::prelude::*;
use allframe::{DynBackend, StartFrom};
use serde::{Deserialize, Serialize};

/// What can happen to an account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum BankEvent {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}

impl Event for BankEvent {
    fn event_type(&self) -> &'static str {
        match self {
            BankEvent::Opened { .. } => "AccountOpened",
            BankEvent::Deposited { .. } => "MoneyDeposited",
            BankEvent::Withdrawn { .. } => "MoneyWithdrawn",
        }
    }
    const EVENT_TYPES: &'static [&'static str] = &["AccountOpened", "MoneyDeposited", "MoneyWithdrawn"];
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
            BankEvent::Opened { owner } => self.owner = Some(owner.clone()),
            BankEvent::Deposited { amount } => self.balance += amount,
            BankEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

/// Why the bank refuses a command.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("account is already open")]
    AlreadyOpen,
    #[error("account is not open")]
    NotOpen,
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: u64, asked: u64 },
}

fn open(owner: &str) -> impl FnMut(&Account) -> Result<Vec<BankEvent>, Refused> + '_ {
    move |account| match account.owner {
        Some(_) => Err(Refused::AlreadyOpen),
        None => Ok(vec![BankEvent::Opened { owner: owner.to_owned() }]),
    }
}

fn deposit(amount: u64) -> impl FnMut(&Account) -> Result<Vec<BankEvent>, Refused> {
    move |account| match account.owner {
        None => Err(Refused::NotOpen),
        Some(_) => Ok(vec![BankEvent::Deposited { amount }]),
    }
}

fn withdraw(amount: u64) -> impl FnMut(&Account) -> Result<Vec<BankEvent>, Refused> {
    move |account| {
        if account.owner.is_none() {
            Err(Refused::NotOpen)
        } else if account.balance < amount {
            Err(Refused::InsufficientFunds { balance: account.balance, asked: amount })
        } else {
            Ok(vec![BankEvent::Withdrawn { amount }])
        }
    }
}

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

#[tokio::main]
async fn main() {
    let result = match build_backend(&backend_choice()) {
        Ok(backend) => run_demo(backend).await,
        Err(error) => Err(error),
    };
    if let Err(error) = result {
        eprintln!("bank demo: {error}");
        std::process::exit(1);
    }
}

/// Runs the example on `backend`, printing each step.
async fn run_demo(backend: DynBackend) -> Result<()> {
    println!("bank demo on the `{}` backend ({})", backend.name(), backend.capabilities().durability);
    let store: EventStore<BankEvent, DynBackend> =
        EventStore::with_backend(backend).with_snapshot_policy(SnapshotPolicy::EveryNEvents(4));

    // A read model: balances per account, fed by a catch-up subscription from the start.
    let balances = Arc::new(Mutex::new(BTreeMap::<String, i64>::new()));
    let mut subscription = store.subscribe_from(StartFrom::Beginning).await?;
    let projection = {
        let balances = Arc::clone(&balances);
        tokio::spawn(async move {
            loop {
                let Ok(envelope) = subscription.next().await else { continue };
                let delta = match envelope.event {
                    BankEvent::Deposited { amount } => amount as i64,
                    BankEvent::Withdrawn { amount } => -(amount as i64),
                    BankEvent::Opened { .. } => 0,
                };
                *balances.lock().unwrap().entry(envelope.stream_id.to_string()).or_default() += delta;
            }
        })
    };

    let account = format!("account-{}", EventId::new());
    store.execute::<Account, _, _>(&account, open("Ada")).await?;
    println!("opened {account} for Ada");
    for amount in [100, 50, 25] {
        let result = store.execute::<Account, _, _>(&account, deposit(amount)).await?;
        println!("deposited {amount:>4}  -> version {}", result.stream_version);
    }
    match store.execute::<Account, _, _>(&account, withdraw(1_000)).await {
        Err(CommandError::Rejected(reason)) => println!("withdraw 1000 refused: {reason}"),
        other => println!("withdraw 1000 unexpectedly gave {other:?}"),
    }

    // Two tellers look at the account at the same moment (both see version 4) and decide.
    let teller_a = store.load_aggregate::<Account>(&account).await?;
    let teller_b = store.load_aggregate::<Account>(&account).await?;
    let decided_a = withdraw(60)(&teller_a.state)?;
    let decided_b = withdraw(70)(&teller_b.state)?;
    let result = store.append_expected(&account, ExpectedVersion::Exact(teller_a.version), decided_a).await?;
    println!("teller A withdrew 60 at version {} -> version {}", teller_a.version, result.stream_version);
    match store.append_expected(&account, ExpectedVersion::Exact(teller_b.version), decided_b).await {
        Err(Error::Conflict { expected, actual, .. }) => {
            println!("teller B conflicts (expected {expected}, actual version {actual}); retrying through `execute`");
            let result = store.execute::<Account, _, _>(&account, withdraw(70)).await?;
            println!("teller B re-checked the balance and withdrew 70 -> version {}", result.stream_version);
        }
        other => println!("teller B unexpectedly got {other:?}"),
    }

    let loaded = store.load_aggregate::<Account>(&account).await?;
    let snapshot = store.backend().get_latest_snapshot(&account).await?;
    println!(
        "account balance {} at version {} (loaded from the snapshot at version {:?}, then {} events)",
        loaded.state.balance,
        loaded.version,
        snapshot.as_ref().map(|s| s.version),
        loaded.version - loaded.snapshot_version.unwrap_or(0),
    );

    // The projection sees every committed event, in order, a moment after commit.
    let head = store.backend().head_position().await?;
    for _ in 0..200 {
        if balances.lock().unwrap().get(&account).copied() == Some(loaded.state.balance as i64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "projection: {account} balance {:?} (log head at position {head})",
        balances.lock().unwrap().get(&account)
    );
    projection.abort();

    store.flush().await?;
    let stats = store.stats().await?;
    println!(
        "store: {} events in {} streams, {} snapshots, durability: {}",
        stats.events, stats.streams, stats.snapshots, stats.durability
    );
    Ok(())
}

/// The backend named by `--backend NAME` or `ALLFRAME_BACKEND`, else the default
/// (AllSource in `./allframe-data` when it is compiled in, memory otherwise).
fn backend_choice() -> String {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--backend" {
            if let Some(name) = args.next() {
                return name;
            }
        } else if let Some(name) = arg.strip_prefix("--backend=") {
            return name.to_owned();
        }
    }
    let default = if cfg!(feature = "cqrs-allsource") { "allsource" } else { "memory" };
    std::env::var("ALLFRAME_BACKEND").unwrap_or_else(|_| default.to_owned())
}

/// The example's backends: `memory`, or `allsource` (durable, in `./allframe-data`).
fn build_backend(choice: &str) -> Result<DynBackend> {
    match choice {
        "memory" => Ok(Arc::new(InMemoryBackend::new())),
        #[cfg(feature = "cqrs-allsource")]
        "allsource" => Ok(Arc::new(allframe::allsource::AllSourceBackend::production("./allframe-data")?)),
        other => Err(format!("unknown backend `{other}`: this build offers `memory` and `allsource`").into()),
    }
}
