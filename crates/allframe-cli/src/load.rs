//! `allframe demo --load SECONDS`: the bank under steady load (deposits and withdrawals on 64
//! accounts from 8 workers, so that some decisions conflict and some withdrawals are refused),
//! with the balances projection running: what the metrics dashboard in `docs/OPERATIONS.md`
//! was drawn from.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use allframe::cqrs::*;

use crate::bank::{self, BankStore, Deposit, OpenAccount, Tellers, Withdraw};

/// Accounts the load spreads over.
const ACCOUNTS: u64 = 64;
/// Concurrent workers, each dispatching one command at a time.
const WORKERS: u64 = 8;

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// Counts of what the workers did.
#[derive(Debug, Default)]
struct Done {
    commands: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    /// The first failure that was not a refusal, to print at the end.
    first_failure: std::sync::Mutex<Option<String>>,
}

/// Runs the load on `backend` for `duration` (`None`: until Ctrl-C), printing a line of
/// figures every second.
pub async fn run_load(backend: DynBackend, duration: Option<Duration>) -> Result<()> {
    let backend = bank::upcasting(backend);
    let bus = CommandBus::builder(Arc::clone(&backend))
        .discover()
        .shared_state(Arc::new(Tellers::default()))
        .snapshot_policy(SnapshotPolicy::EveryNEvents(50))
        .build()?;
    let store: BankStore = EventStore::from_shared(Arc::clone(&backend));
    let (registry, _balances) = bank::projections(&store);
    registry.start_all().await?;
    for account in 0..ACCOUNTS {
        let open = OpenAccount { account: format!("load-{account}"), owner: format!("Holder {account}") };
        bus.dispatch_with(open, CommandOptions::new().idempotency_key(format!("load-open-{account}"))).await?;
    }
    let done = Arc::new(Done::default());
    let deadline = duration.map(|d| Instant::now() + d);
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (bus, done) = (bus.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ (worker + 1);
                while deadline.is_none_or(|d| Instant::now() < d) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let account = format!("load-{}", seed % ACCOUNTS);
                    let amount = 1 + (seed >> 8) % 100;
                    let result = if seed.is_multiple_of(3) {
                        bus.dispatch(Withdraw { account, amount, teller: format!("T{worker}") }).await
                    } else {
                        bus.dispatch(Deposit { account, amount }).await
                    };
                    match result {
                        Ok(_) => done.commands.fetch_add(1, Relaxed),
                        Err(DispatchError::Rejected { .. }) => done.refused.fetch_add(1, Relaxed),
                        Err(error) => {
                            let mut first = done.first_failure.lock().unwrap_or_else(|e| e.into_inner());
                            first.get_or_insert_with(|| error.to_string());
                            done.failed.fetch_add(1, Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut last = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        // Keeps the store's gauges and the health gauge current for the scrapes.
        let _ = backend.stats().await;
        let health = backend.health().await.merge(registry.health().await);
        let commands = done.commands.load(Relaxed);
        println!(
            "{:>5.0} s  {:>7} commands/s  {:>9} done  {:>6} refused  {:>3} failed  health {}",
            started.elapsed().as_secs_f64(),
            commands - last,
            commands,
            done.refused.load(Relaxed),
            done.failed.load(Relaxed),
            health.status,
        );
        last = commands;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    for worker in workers {
        worker.abort();
    }
    registry.stop_all().await;
    if let Some(failure) = done.first_failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        println!("first failed command: {failure}");
    }
    Ok(())
}
