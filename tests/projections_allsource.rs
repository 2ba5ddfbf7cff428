//! The projection registry on a durable AllSource store: what it stores (checkpoints, dead
//! letters) survives a reopen, and a checkpoint ahead of the log (a log restored from an older
//! backup than its checkpoints) is refused with a typed error that changes nothing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use allframe::cqrs::*;
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Money {
    Deposited { amount: u64 },
}

impl allframe::cqrs::Event for Money {}

/// A total kept "elsewhere" (an atomic shared with the test), resumed from its checkpoint.
struct Total(Arc<AtomicU64>);

impl ReadModel<Money> for Total {
    const NAME: &'static str = "total";
    const RESUME: Resume = Resume::FromCheckpoint;

    fn apply(&mut self, event: &Envelope<Money>) -> Result<(), BoxError> {
        let Money::Deposited { amount } = event.event;
        if amount == 13 {
            return Err("unlucky".into());
        }
        self.0.fetch_add(amount, Ordering::SeqCst);
        Ok(())
    }
}

fn open(dir: &Path) -> EventStore<Money, AllSourceBackend> {
    EventStore::with_backend(AllSourceBackend::production(dir).expect("opens the store"))
}

async fn deposit(store: &EventStore<Money, AllSourceBackend>, amounts: &[u64]) -> u64 {
    let events = amounts.iter().map(|&amount| Money::Deposited { amount }).collect();
    store.append("account", events).await.unwrap().last_position
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_dead_letters_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let total = Arc::new(AtomicU64::new(0));
    let policy = FailurePolicy::dead_letter();
    let last = {
        let store = open(dir.path());
        let registry = ProjectionRegistry::new(store.clone());
        let shared = Arc::clone(&total);
        let handle = registry.register_with_policy(move || Total(Arc::clone(&shared)), policy).unwrap();
        registry.start_all().await.unwrap();
        let last = deposit(&store, &[1, 13, 2]).await;
        handle.read_at_least(last, WAIT).await.unwrap();
        registry.stop_all().await;
        last
    };
    assert_eq!(total.load(Ordering::SeqCst), 3);

    let store = open(dir.path());
    // The dead letter is an event too (of the library's own stream, after `last`), which the
    // runner may have passed before it stopped.
    let head = store.backend().head_position().await.unwrap();
    assert_eq!(head, last + 1);
    let checkpoint = store.backend().load_checkpoint("total@v1").await.unwrap();
    assert!(checkpoint == Some(last) || checkpoint == Some(head), "{checkpoint:?}");
    let registry = ProjectionRegistry::new(store.clone());
    let shared = Arc::clone(&total);
    let handle = registry.register_with_policy(move || Total(Arc::clone(&shared)), policy).unwrap();
    let letters = registry.dead_letters("total").await.unwrap();
    assert_eq!(
        letters.iter().map(|letter| (letter.position, letter.reason.as_str())).collect::<Vec<_>>(),
        [(2, "unlucky")]
    );
    registry.start_all().await.unwrap();
    assert_eq!(registry.status("total").await.unwrap().dead_letters, 1);
    let more = deposit(&store, &[4]).await;
    handle.read_at_least(more, WAIT).await.unwrap();
    assert_eq!(total.load(Ordering::SeqCst), 7, "resumed after its checkpoint: nothing applied twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_ahead_of_a_restored_log_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (live, backup) = (dir.path().join("live"), dir.path().join("backup"));
    {
        let store = open(&live);
        deposit(&store, &[1, 2, 3, 4, 5]).await;
    }
    copy_dir(&live, &backup);
    let total = Arc::new(AtomicU64::new(0));
    {
        let store = open(&live);
        deposit(&store, &[6, 7, 8, 9, 10]).await;
        let registry = ProjectionRegistry::new(store.clone());
        let shared = Arc::clone(&total);
        let handle = registry.register(move || Total(Arc::clone(&shared))).unwrap();
        registry.start_all().await.unwrap();
        handle.read_at_least(10, WAIT).await.unwrap();
        registry.stop_all().await;
        assert_eq!(store.backend().load_checkpoint("total@v1").await.unwrap(), Some(10));
    }
    // The log comes back from the backup (5 events), the checkpoints from the live store.
    std::fs::copy(live.join("CHECKPOINTS"), backup.join("CHECKPOINTS")).unwrap();

    let store = open(&backup);
    assert_eq!(store.backend().head_position().await.unwrap(), 5);
    let registry = ProjectionRegistry::new(store.clone());
    let shared = Arc::clone(&total);
    registry.register(move || Total(Arc::clone(&shared))).unwrap();
    let refused = registry.start_all().await.unwrap_err();
    assert!(
        matches!(&refused, ProjectionError::CheckpointAhead { name, checkpoint: 10, head: 5 } if name == "total"),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("older backup"), "{refused}");
    let status = registry.status("total").await.unwrap();
    assert_eq!(status.state, ProjectionState::Stopped);
    assert_eq!(store.backend().load_checkpoint("total@v1").await.unwrap(), Some(10), "the checkpoint is untouched");
    assert_eq!(store.backend().head_position().await.unwrap(), 5, "nothing was appended");
    assert_eq!(total.load(Ordering::SeqCst), 55, "nothing was applied");

    // The operator rebuilds it: from position 0, against the restored log.
    total.store(0, Ordering::SeqCst);
    registry.rebuild("total").await.unwrap();
    let handle_position = registry.status("total").await.unwrap();
    assert_ne!(handle_position.state, ProjectionState::Stopped);
    for _ in 0..1_000 {
        if total.load(Ordering::SeqCst) == 15 && registry.status("total").await.unwrap().position == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(total.load(Ordering::SeqCst), 15);
}

/// Balances whose events count themselves, so that a query can tell a half-built model.
#[derive(Default)]
struct Deposits {
    events: u64,
    total: u64,
}

impl ReadModel<Money> for Deposits {
    const NAME: &'static str = "deposits";

    fn apply(&mut self, event: &Envelope<Money>) -> Result<(), BoxError> {
        let Money::Deposited { amount } = event.event;
        self.events += 1;
        self.total += amount;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_beside_under_durable_writes_never_shows_a_half_built_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for _ in 0..40 {
        store.append("account", vec![Money::Deposited { amount: 1 }; 500]).await.unwrap();
    }
    let registry = ProjectionRegistry::new(store.clone());
    let deposits = registry.register(Deposits::default).unwrap();
    registry.start_all().await.unwrap();
    deposits.read_at_least(20_000, WAIT).await.unwrap();

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for _ in 0..300 {
                last = deposit(&store, &[1, 1]).await;
            }
            last
        })
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (deposits, registry, done) = (deposits.clone(), registry.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let (mut highest, mut during) = (20_000, 0u64);
            while !done.load(Ordering::SeqCst) {
                let rebuilding = registry.status("deposits").await.unwrap().rebuild_position.is_some();
                let model = deposits.read().await;
                assert!(model.events >= highest, "a query saw {} events after {highest}", model.events);
                assert_eq!(model.total, model.events);
                highest = model.events;
                drop(model);
                during += u64::from(rebuilding);
                tokio::task::yield_now().await;
            }
            during
        })
    };
    registry.rebuild_beside("deposits").await.unwrap();
    done.store(true, Ordering::SeqCst);
    let last = writer.await.unwrap();
    assert!(reader.await.unwrap() > 0, "queries ran during the rebuild");
    let model = deposits.read_at_least(last, WAIT).await.unwrap();
    assert_eq!((model.events, model.total), (20_600, 20_600), "equal to a replay of the log");
}
