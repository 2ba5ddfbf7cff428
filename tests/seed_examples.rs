//! The seed document's examples (`shared/seed/000_db91827c0d73de0e.txt`), copied as written,
//! with the imports a user would add. Where the seed writes a comment standing for the
//! user's own code (`// Fast, isolated tests`), a few lines below it use the store, as any
//! real test does: that use is also what tells Rust the event type, exactly as with
//! `Vec::new()` (see docs/decisions/0003-event-store-new.md).

use allframe::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: u64 },
}

impl Event for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "AccountOpened",
            AccountEvent::Deposited { .. } => "MoneyDeposited",
        }
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

// Seed, "Usage Examples / MVP (No Changes Required)".
#[tokio::test]
async fn mvp_existing_code_works_unchanged() {
    // Existing code works unchanged
    let store = EventStore::new();
    store.append("account-1", vec![AccountEvent::Opened { owner: "ada".into() }]).await.unwrap();
    assert_eq!(store.get_events("account-1").await.unwrap().len(), 1);
}

// Seed, "Testing Strategy / Unit Tests (Fast)".
#[test]
fn test_my_logic() {
    let store = EventStore::new(); // InMemoryBackend
    // Fast, isolated tests
    block_on(async {
        store.append("account-2", vec![AccountEvent::Deposited { amount: 5 }]).await.unwrap();
        assert_eq!(store.get_events("account-2").await.unwrap(), vec![AccountEvent::Deposited { amount: 5 }]);
    });
}

// Seed, "Key Achievements / Zero Breaking Changes" and the seed's list of methods:
// append, get_events, get_events_after, get_all_events, subscribe, flush, stats, backend().
#[tokio::test]
async fn this_still_works() {
    // This still works!
    let store = EventStore::new();
    store.append("a", vec![AccountEvent::Opened { owner: "bo".into() }]).await.unwrap();
    store
        .append("a", vec![AccountEvent::Deposited { amount: 1 }, AccountEvent::Deposited { amount: 2 }])
        .await
        .unwrap();
    assert_eq!(store.get_events_after("a", 1).await.unwrap().len(), 2);
    assert_eq!(store.get_all_events().await.unwrap().len(), 3);
    store.flush().await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.total_events(), stats.total_aggregates(), stats.total_snapshots()), (3, 1, 0));
    let _backend: &InMemoryBackend = store.backend();

    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    store.subscribe(tx).await.unwrap();
    store.append("a", vec![AccountEvent::Deposited { amount: 3 }]).await.unwrap();
    assert_eq!(rx.recv().await, Some(AccountEvent::Deposited { amount: 3 }));
}

// Seed, "Production (One Line Change)": `EventStore::with_backend(backend)`, here with the
// memory backend built explicitly; the AllSource form is in `seed_examples_allsource.rs`.
#[tokio::test]
async fn with_backend_takes_any_backend() {
    let backend = InMemoryBackend::new();
    let store = EventStore::with_backend(backend);
    store.append("b", vec![AccountEvent::Deposited { amount: 9 }]).await.unwrap();
    assert_eq!(store.get_events("b").await.unwrap(), vec![AccountEvent::Deposited { amount: 9 }]);
}

// The seed's struct: `EventStore<E, B = InMemoryBackend>` names a memory store in type position.
#[test]
fn default_backend_type_parameter() {
    struct App {
        store: EventStore<AccountEvent>,
    }
    let app = App { store: EventStore::new() };
    let _: &InMemoryBackend = app.store.backend();
}
