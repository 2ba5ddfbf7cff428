//! The versioning benchmarks' workload (`benches/versioning.rs`, and the instruction counts of
//! `examples/versioning_reads.rs`): an order at version 4, as version 1 stored it, and the chain
//! from one to the other written twice, as `json` closures and as declarative steps.

use std::sync::Arc;

use allframe::cqrs::{Chain, InMemoryBackend, Upcasters, Upcasting};
use allframe::{Codec, DynBackend, Event, EventStore, EventStoreBackend, ExpectedVersion, NewEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Version 4 of an order: `order` became `order_id` (v2), `customer` became `customer_id` (v3),
/// `channel` was added with a default (v4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    order_id: String,
    customer_id: String,
    lines: Vec<(String, u32, u64)>,
    currency: String,
    note: String,
    channel: String,
}

impl Event for OrderPlaced {
    fn event_type(&self) -> &'static str {
        "OrderPlaced"
    }
    const SCHEMA_VERSION: u32 = 4;
}

/// The workload's order `n` (`allframe_benches::order_placed`) at version 4.
pub fn current(n: u64) -> OrderPlaced {
    let order = crate::order_placed(n);
    OrderPlaced {
        order_id: order.order_id,
        customer_id: order.customer_id,
        lines: order.lines,
        currency: order.currency,
        note: order.note,
        channel: "web".into(),
    }
}

/// The same order as version 1 stored it (about 200 bytes of JSON).
pub fn version_1(n: u64) -> Value {
    json!({
        "order": format!("order-{n:010}"),
        "customer": format!("customer-{:06}", n % 100_000),
        "lines": [["SKU-RED-SHOE-42", 1, 8_999], ["SKU-SOCKS-3PK", 2, 1_299]],
        "currency": "EUR",
        "note": "leave at the door, ring twice",
    })
}

/// A `json` step renaming a top-level field.
pub fn rename(
    from: &'static str,
    to: &'static str,
) -> impl Fn(Value) -> Result<Value, allframe::BoxError> + Send + Sync {
    move |mut payload| {
        if let Some(object) = payload.as_object_mut()
            && let Some(value) = object.remove(from)
        {
            object.insert(to.to_owned(), value);
        }
        Ok(payload)
    }
}

/// The three changes as `json` closures on the parsed value.
pub fn chain() -> Chain {
    Upcasters::<OrderPlaced>::new()
        .json("OrderPlaced", 1, rename("order", "order_id"))
        .json("OrderPlaced", 2, rename("customer", "customer_id"))
        .json("OrderPlaced", 3, |mut payload| {
            payload["channel"] = json!("web");
            Ok(payload)
        })
        .build()
        .expect("a sound chain")
}

/// The same three changes declared (`rename_field`, `add_field`): edits of the stored text.
pub fn declared_chain() -> Chain {
    Upcasters::<OrderPlaced>::new()
        .rename_field("OrderPlaced", 1, &[], "order", "order_id")
        .rename_field("OrderPlaced", 2, &[], "customer", "customer_id")
        .add_field("OrderPlaced", 3, &[], "channel", json!("web"))
        .build()
        .expect("a sound chain")
}

/// The three stores the benchmarks read, over one memory backend holding 1,000 orders stored at
/// version 4 (stream `current`) and the same 1,000 stored at version 1 (stream `old`).
pub struct Stores {
    /// The backend's own typed store.
    pub plain: EventStore<OrderPlaced, InMemoryBackend>,
    /// Through the closures' chain.
    pub closures: EventStore<OrderPlaced, dyn EventStoreBackend>,
    /// Through the declarative steps' chain.
    pub declared: EventStore<OrderPlaced, dyn EventStoreBackend>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// The stores, filled, each checked to read `old` as `current`.
pub async fn stores() -> Stores {
    let backend = Arc::new(InMemoryBackend::new());
    let plain: EventStore<OrderPlaced, InMemoryBackend> = EventStore::from_shared(Arc::clone(&backend));
    plain.append("current", (0..1_000).map(current).collect()).await.unwrap();
    let old = (0..1_000).map(|n| NewEvent::new("OrderPlaced", serde_json::to_vec(&version_1(n)).unwrap())).collect();
    backend.append("old", ExpectedVersion::NoStream, old).await.unwrap();
    let through = |chain: Chain| -> EventStore<OrderPlaced, dyn EventStoreBackend> {
        let backend: DynBackend = Arc::new(Upcasting::new(Arc::clone(&backend), chain, Codec::Json));
        EventStore::from_shared(backend)
    };
    let stores = Stores { closures: through(chain()), declared: through(declared_chain()), plain };
    let expected = stores.plain.get_events("current").await.unwrap();
    assert_eq!(stores.closures.get_events("old").await.unwrap(), expected);
    assert_eq!(stores.declared.get_events("old").await.unwrap(), expected);
    stores
}
