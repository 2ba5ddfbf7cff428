//! The bank every command test uses: an `Account` aggregate, its events, commands written with
//! `#[command]`, handlers written with `#[command_handler]`, and the backends the tests run on
//! (memory and AllSource, each fresh).

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use allframe::cqrs::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(version = 2)]
pub enum BankEvent {
    #[event(name = "AccountOpened")]
    Opened {
        owner: String,
    },
    #[serde(rename = "MoneyDeposited")]
    Deposited {
        amount: u64,
    },
    Withdrawn {
        amount: u64,
    },
    Closed,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub open: bool,
    pub closed: bool,
    pub balance: u64,
    pub events: u64,
}

impl Aggregate for Account {
    type Event = BankEvent;

    fn apply(&mut self, event: &BankEvent) {
        self.events += 1;
        match event {
            BankEvent::Opened { .. } => self.open = true,
            BankEvent::Deposited { amount } => self.balance += amount,
            BankEvent::Withdrawn { amount } => self.balance -= amount,
            BankEvent::Closed => self.closed = true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BankError {
    #[error("account {0} is already open")]
    AlreadyOpen(String),
    #[error("no such account")]
    NotOpen,
    #[error("balance {balance} is below {requested}")]
    InsufficientFunds { balance: u64, requested: u64 },
    #[error("the account is closed")]
    Closed,
}

impl DomainError for BankError {
    fn code(&self) -> &'static str {
        match self {
            BankError::AlreadyOpen(_) => "already_open",
            BankError::NotOpen => "not_open",
            BankError::InsufficientFunds { .. } => "insufficient_funds",
            BankError::Closed => "closed",
        }
    }

    fn http_status(&self) -> u16 {
        match self {
            BankError::NotOpen => 404,
            BankError::AlreadyOpen(_) => 409,
            _ => 422,
        }
    }
}

#[command(stream = "account-{id}", error = BankError)]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Open {
    pub id: String,
    pub owner: String,
}

#[command(stream = "account-{id}", error = BankError)]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deposit {
    pub id: String,
    pub amount: u64,
}

#[command(name = "WithdrawMoney", stream = "account-{id}", error = BankError)]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Withdraw {
    pub id: String,
    pub amount: u64,
}

/// A command that changes nothing when the account is already closed.
#[command(stream = "account-{id}", error = BankError)]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Close {
    pub id: String,
}

/// Counts the decisions handlers made, to prove a handler did or did not run.
#[derive(Debug, Default)]
pub struct Decisions(pub AtomicU64);

impl Decisions {
    pub fn decided(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    pub fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[command_handler]
pub async fn open(account: &Account, cmd: &Open, decisions: State<Decisions>) -> Result<Vec<BankEvent>, BankError> {
    decisions.decided();
    if account.open {
        return Err(BankError::AlreadyOpen(cmd.id.clone()));
    }
    Ok(vec![BankEvent::Opened { owner: cmd.owner.clone() }])
}

#[command_handler]
pub fn deposit(
    account: &Account,
    cmd: &Deposit,
    ctx: &Context,
    decisions: State<Decisions>,
) -> Result<Vec<BankEvent>, BankError> {
    decisions.decided();
    if !account.open {
        return Err(BankError::NotOpen);
    }
    if account.closed {
        return Err(BankError::Closed);
    }
    ctx.add_header("teller", "handler");
    Ok(vec![BankEvent::Deposited { amount: cmd.amount }])
}

#[command_handler]
pub fn withdraw(account: &Account, cmd: &Withdraw, decisions: State<Decisions>) -> Result<Vec<BankEvent>, BankError> {
    decisions.decided();
    if !account.open {
        return Err(BankError::NotOpen);
    }
    if account.balance < cmd.amount {
        return Err(BankError::InsufficientFunds { balance: account.balance, requested: cmd.amount });
    }
    Ok(vec![BankEvent::Withdrawn { amount: cmd.amount }])
}

#[command_handler]
pub fn close(account: &Account, _cmd: &Close, decisions: State<Decisions>) -> Result<Vec<BankEvent>, BankError> {
    decisions.decided();
    if !account.open {
        return Err(BankError::NotOpen);
    }
    if account.closed {
        return Ok(Vec::new());
    }
    Ok(vec![BankEvent::Closed])
}

/// A fresh store of each backend the command tests run on, with its directory.
pub struct TestStore {
    pub name: &'static str,
    pub backend: DynBackend,
    pub dir: Option<tempfile::TempDir>,
}

/// A fresh memory store and a fresh durable AllSource store.
pub fn stores() -> Vec<TestStore> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let allsource = allframe::AllSourceBackend::open(dir.path()).expect("a new AllSource store");
    vec![
        TestStore { name: "memory", backend: Arc::new(InMemoryBackend::new()), dir: None },
        TestStore { name: "allsource", backend: Arc::new(allsource), dir: Some(dir) },
    ]
}

/// The bank's bus over `backend`: every `#[command_handler]` of this program, and a fresh
/// decision counter (returned beside it).
pub fn bank_bus(backend: DynBackend) -> (CommandBus, Arc<Decisions>) {
    bank_bus_with(backend, |builder| builder)
}

/// [`bank_bus`] with more settings.
pub fn bank_bus_with(
    backend: DynBackend,
    settings: impl FnOnce(CommandBusBuilder) -> CommandBusBuilder,
) -> (CommandBus, Arc<Decisions>) {
    let decisions = Arc::new(Decisions::default());
    let builder = CommandBus::builder(backend).discover().shared_state(Arc::clone(&decisions));
    let bus = settings(builder).build().expect("the bank's bus is wired right");
    (bus, decisions)
}
