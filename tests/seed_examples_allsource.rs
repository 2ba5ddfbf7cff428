//! The seed's AllSource examples, as written, with the imports a user would add and the
//! return type that `?` needs (the seed's `#[test] fn test_persistence()` uses `?`).

use allframe::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum OrderEvent {
    Placed { id: u64 },
}

impl Event for OrderEvent {
    fn event_type(&self) -> &'static str {
        "OrderPlaced"
    }
}

type TestResult = Result<(), Box<dyn std::error::Error>>;

// Seed, "Production (One Line Change)".
#[tokio::test]
async fn production_one_line_change() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::env::set_current_dir(dir.path())?;
    let backend = AllSourceBackend::production("./data")?;
    let store = EventStore::with_backend(backend);
    store.append("order-1", vec![OrderEvent::Placed { id: 1 }]).await?;
    drop(store);
    // Reopened, the event is still there: persistence, WAL, recovery.
    let store: EventStore<OrderEvent, AllSourceBackend> =
        EventStore::with_backend(AllSourceBackend::production("./data")?);
    assert_eq!(store.get_events("order-1").await?, vec![OrderEvent::Placed { id: 1 }]);
    Ok(())
}

// Seed, "Step 2: Add AllSource (Zero Code Changes)".
#[tokio::test]
async fn add_allsource_in_memory() -> TestResult {
    let backend = AllSourceBackend::new()?;
    let store = EventStore::with_backend(backend);
    store.append("order-2", vec![OrderEvent::Placed { id: 2 }]).await?;
    assert_eq!(store.get_events("order-2").await?.len(), 1);
    Ok(())
}

// Seed, "Testing Strategy / Integration Tests (Real)".
#[tokio::test]
async fn test_persistence() -> TestResult {
    let dir = tempfile::tempdir()?;
    let test_data = dir.path().join("test_data");
    let backend = AllSourceBackend::production(&test_data)?;
    let store = EventStore::with_backend(backend);
    // Real persistence, WAL, recovery
    store.append("order-3", vec![OrderEvent::Placed { id: 3 }]).await?;
    store.flush().await?;
    let stats = store.stats().await?;
    assert_eq!(stats.events, 1);
    Ok(())
}

// Seed, "Gradual Adoption": start here, move here, scale here.
#[tokio::test]
async fn gradual_adoption() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Start here
    let store = EventStore::new();
    store.append("o", vec![OrderEvent::Placed { id: 4 }]).await?;
    // Move here when ready
    let backend = AllSourceBackend::new()?;
    let store2 = EventStore::with_backend(backend);
    store2.append("o", vec![OrderEvent::Placed { id: 4 }]).await?;
    // Scale here when needed
    let backend = AllSourceBackend::production(dir.path().join("data"))?;
    let store3 = EventStore::with_backend(backend);
    store3.append("o", vec![OrderEvent::Placed { id: 4 }]).await?;
    assert_eq!(store.get_events("o").await?, store3.get_events("o").await?);
    assert_eq!(store2.get_events("o").await?.len(), 1);
    Ok(())
}

/// The seed's examples as a user of the AllFrame 0.1 crates pastes them: `use allframe::cqrs::*`
/// and an empty `impl Event` (the stored names are serde's).
mod as_allframe_0_1_users_write_them {
    use allframe::cqrs::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    enum OrderEvent {
        Placed {
            id: u64,
        },
        #[serde(rename = "OrderShipped")]
        Shipped {
            id: u64,
        },
    }

    impl Event for OrderEvent {}

    #[tokio::test]
    async fn mvp_then_step_2_then_step_3() -> super::TestResult {
        // MVP.
        let store = EventStore::new();
        store.append("order-1", vec![OrderEvent::Placed { id: 1 }]).await?;
        assert_eq!(store.get_events("order-1").await?, vec![OrderEvent::Placed { id: 1 }]);
        // Step 2: AllSource in memory.
        let backend = AllSourceBackend::new()?;
        let store = EventStore::with_backend(backend);
        store.append("order-1", vec![OrderEvent::Placed { id: 1 }, OrderEvent::Shipped { id: 1 }]).await?;
        // Step 3: persistence.
        let dir = tempfile::tempdir()?;
        let backend = AllSourceBackend::production(dir.path())?;
        let store = EventStore::with_backend(backend);
        store.append("order-2", vec![OrderEvent::Shipped { id: 2 }]).await?;
        let stored = store.backend().read_stream("order-2", 0, 1).await?;
        assert_eq!(stored[0].event_type, "OrderShipped", "the stored name is serde's");
        Ok(())
    }
}
