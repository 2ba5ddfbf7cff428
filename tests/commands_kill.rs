//! Idempotency keys across a real crash: a child process (this test binary, run again) sends
//! keyed commands to a durable AllSource store in a loop and is killed with SIGKILL at a varied
//! moment, between a dispatch and its reply. The parent reopens the store and sends every key
//! the child may have sent again: each key's events exist exactly once, a key whose append the
//! child saw acknowledged is answered with that outcome (`replayed`, nothing decided), and a key
//! whose append never landed runs. Several rounds on one directory.

#[path = "support/bank.rs"]
mod bank;
#[path = "support/kill.rs"]
mod kill;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use allframe::backends::{self, Mode, OpenOptions};
use allframe::cqrs::*;
use bank::*;
use serde::{Deserialize, Serialize};

const CHILD_DIR: &str = "ALLFRAME_KILL_CHILD_DIR";
const CHILD_ROUND: &str = "ALLFRAME_KILL_CHILD_ROUND";
const ROUNDS: u64 = 16;
/// Accounts, one sending task each in the child.
const ACCOUNTS: u64 = 3;

/// A deposit stored as two events (half and half), so that a crash could split it.
#[command(stream = "account-{id}", error = BankError)]
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Split {
    id: String,
    amount: u64,
}

#[command_handler]
fn split(account: &Account, cmd: &Split, decisions: State<Decisions>) -> Result<Vec<BankEvent>, BankError> {
    decisions.decided();
    if !account.open {
        return Err(BankError::NotOpen);
    }
    Ok(vec![
        BankEvent::Deposited { amount: cmd.amount / 2 },
        BankEvent::Deposited { amount: cmd.amount - cmd.amount / 2 },
    ])
}

/// One keyed command of the child: which account, which round and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Sent {
    round: u64,
    account: u64,
    seq: u64,
}

impl Sent {
    fn key(self) -> String {
        format!("r{}-a{}-{}", self.round, self.account, self.seq)
    }

    fn amount(self) -> u64 {
        self.seq % 7 + 2
    }

    /// Every third command is a two-event one.
    fn events(self) -> u64 {
        if self.seq.is_multiple_of(3) { 2 } else { 1 }
    }

    async fn dispatch(self, bus: &CommandBus) -> Result<Outcome, DispatchError<BankError>> {
        let (id, amount, options) =
            (self.account.to_string(), self.amount(), CommandOptions::new().idempotency_key(self.key()));
        if self.events() == 2 {
            bus.dispatch_with(Split { id, amount }, options).await
        } else {
            bus.dispatch_with(Deposit { id, amount }, options).await
        }
    }
}

async fn open_store(dir: &Path) -> DynBackend {
    let address = backends::parse(&format!("allsource:{}", dir.display())).unwrap();
    address.open(OpenOptions::new().mode(Mode::Durable)).await.expect("opens the store")
}

/// The child: sends keyed commands from one task per account until it is killed, printing
/// `SENT account seq` before each dispatch and `ACK account seq first_position command_id` after.
#[test]
#[ignore = "helper process for a_killed_dispatcher_leaves_every_key_exactly_once"]
fn kill_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let (bus, _) = bank_bus(open_store(Path::new(&dir)).await);
        println!("READY");
        let tasks: Vec<_> = (0..ACCOUNTS)
            .map(|account| {
                let bus = bus.clone();
                tokio::spawn(async move {
                    for seq in 0.. {
                        let sent = Sent { round, account, seq };
                        println!("SENT {account} {seq}");
                        match sent.dispatch(&bus).await {
                            Ok(o) => println!("ACK {account} {seq} {} {}", o.first_position, o.command_id),
                            Err(error) => println!("ERR {account} {seq} {error}"),
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// What the child printed before it was killed.
#[derive(Default)]
struct Report {
    sent: BTreeSet<Sent>,
    acked: BTreeMap<Sent, (u64, String)>,
    errors: Vec<String>,
}

fn read_report(round: u64, lines: &[String]) -> Report {
    let mut report = Report::default();
    for line in lines {
        let mut parts = line.split(' ');
        let tag = parts.next().unwrap_or_default();
        let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
        let (Some(account), Some(seq)) = (number(), number()) else { continue };
        let sent = Sent { round, account, seq };
        match tag {
            "SENT" => {
                report.sent.insert(sent);
            }
            "ACK" => {
                let position = number().expect("ACK has a position");
                let id = line.rsplit(' ').next().unwrap().to_owned();
                report.acked.insert(sent, (position, id));
            }
            "ERR" => report.errors.push(line.clone()),
            _ => {}
        }
    }
    report
}

/// Runs one child until it is killed after `wait`; returns what it printed.
fn run_child(dir: &Path, round: u64, wait: Duration) -> Vec<String> {
    kill::run_child("kill_child", &[(CHILD_DIR, dir.display().to_string()), (CHILD_ROUND, round.to_string())], wait)
}

/// Every stored event id of the accounts, and each account's balance.
async fn stored(backend: &DynBackend) -> (BTreeMap<EventId, usize>, Vec<u64>) {
    let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(backend));
    let mut ids: BTreeMap<EventId, usize> = BTreeMap::new();
    let mut balances = Vec::new();
    for account in 0..ACCOUNTS {
        let stream = format!("account-{account}");
        let events = backend.get_events(&stream).await.unwrap();
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=events.len() as u64).collect::<Vec<_>>(), "{stream}: contiguous versions");
        for event in &events {
            *ids.entry(event.metadata.event_id).or_default() += 1;
        }
        balances.push(typed.load_aggregate::<Account>(&stream).await.unwrap().state.balance);
    }
    (ids, balances)
}

#[test]
fn a_killed_dispatcher_leaves_every_key_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut random = kill::random_from_clock("commands kill test");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (bus, _) = bank_bus(open_store(dir.path()).await);
        for account in 0..ACCOUNTS {
            bus.dispatch(Open { id: account.to_string(), owner: "ada".into() }).await.unwrap();
        }
    });
    let mut every_key: Vec<Sent> = Vec::new();
    let (mut acked_total, mut landed_unacked, mut ran) = (0, 0, 0);
    for round in 0..ROUNDS {
        // Early kills (while the child starts sending) and later ones (mid-stream).
        let wait = Duration::from_millis(if round % 4 == 0 { random() % 10 } else { 20 + random() % 300 });
        let lines = run_child(dir.path(), round, wait);
        let report = read_report(round, &lines);
        assert!(report.errors.is_empty(), "round {round}: the child's dispatches failed: {:?}", report.errors);
        assert!(report.acked.keys().all(|sent| report.sent.contains(sent)));

        runtime.block_on(async {
            let backend = open_store(dir.path()).await;
            let (bus, decisions) = bank_bus(Arc::clone(&backend));
            for &sent in &report.sent {
                let landed = backend.find_event(idempotency::event_id(&sent.key(), 0)).await.unwrap().is_some();
                let acked = report.acked.get(&sent);
                assert!(landed || acked.is_none(), "round {round}: {} was acknowledged but is not stored", sent.key());
                let before = decisions.count();
                let outcome = sent.dispatch(&bus).await.unwrap_or_else(|e| panic!("{}: {e:?}", sent.key()));
                assert_eq!(outcome.events, sent.events(), "{}", sent.key());
                assert_eq!(outcome.replayed, landed, "{}: replayed exactly when its append had landed", sent.key());
                assert_eq!(
                    decisions.count() - before,
                    u64::from(!landed),
                    "{}: decided only if it had not",
                    sent.key()
                );
                match acked {
                    Some((position, command_id)) => {
                        acked_total += 1;
                        assert_eq!(
                            (outcome.first_position, outcome.command_id.to_string()),
                            (*position, command_id.clone()),
                            "{}: the outcome the child was given",
                            sent.key()
                        );
                    }
                    None if landed => landed_unacked += 1,
                    None => ran += 1,
                }
            }
            every_key.extend(report.sent.iter().copied());

            // Each key's events exist exactly once (all of them, from every round so far).
            let (ids, balances) = stored(&backend).await;
            assert!(ids.values().all(|&n| n == 1), "round {round}: an event id stored twice");
            let mut expected = vec![0u64; ACCOUNTS as usize];
            for sent in &every_key {
                for index in 0..sent.events() {
                    let id = idempotency::event_id(&sent.key(), index);
                    assert_eq!(ids.get(&id), Some(&1), "round {round}: event {index} of {}", sent.key());
                }
                expected[sent.account as usize] += sent.amount();
            }
            let keyed: usize = every_key.iter().map(|s| s.events() as usize).sum();
            assert_eq!(ids.len(), keyed + ACCOUNTS as usize, "round {round}: only the keys' events and the opens");
            assert_eq!(balances, expected, "round {round}: every key's deposit counted once");
        });
    }
    eprintln!(
        "kill test: {ROUNDS} rounds, {} keys: {acked_total} acknowledged and replayed, {landed_unacked} stored but \
         unacknowledged (replayed), {ran} never stored (ran on re-dispatch)",
        every_key.len()
    );
    assert!(acked_total > 0, "the child made progress before it was killed");
    assert!(ran > 0, "some kills came between a dispatch and its append");
}
