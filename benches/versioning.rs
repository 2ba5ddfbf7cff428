//! Criterion benchmarks of event versioning (issue 20): one upcast step on a 200-byte JSON
//! event, and a 1,000-event stream read through a three-step chain (closures on the parsed
//! value, and the same changes declared as edits of the text) beside the same read of
//! events stored at the current version: `cargo bench -p allframe-benches --bench versioning`.

use std::sync::Arc;

use allframe::cqrs::{Chain, InMemoryBackend, Upcasters, Upcasting};
use allframe::{Codec, DynBackend, Event, EventStore, EventStoreBackend, ExpectedVersion, NewEvent};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Version 4 of an order: `order` became `order_id` (v2), `customer` became `customer_id` (v3),
/// `channel` was added with a default (v4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
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
fn current(n: u64) -> OrderPlaced {
    let order = allframe_benches::order_placed(n);
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
fn version_1(n: u64) -> Value {
    json!({
        "order": format!("order-{n:010}"),
        "customer": format!("customer-{:06}", n % 100_000),
        "lines": [["SKU-RED-SHOE-42", 1, 8_999], ["SKU-SOCKS-3PK", 2, 1_299]],
        "currency": "EUR",
        "note": "leave at the door, ring twice",
    })
}

fn rename(from: &'static str, to: &'static str) -> impl Fn(Value) -> Result<Value, allframe::BoxError> + Send + Sync {
    move |mut payload| {
        if let Some(object) = payload.as_object_mut()
            && let Some(value) = object.remove(from)
        {
            object.insert(to.to_owned(), value);
        }
        Ok(payload)
    }
}

fn chain() -> Chain {
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
fn declared_chain() -> Chain {
    Upcasters::<OrderPlaced>::new()
        .rename_field("OrderPlaced", 1, &[], "order", "order_id")
        .rename_field("OrderPlaced", 2, &[], "customer", "customer_id")
        .add_field("OrderPlaced", 3, &[], "channel", json!("web"))
        .build()
        .expect("a sound chain")
}

fn upcasting(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let backend = Arc::new(InMemoryBackend::new());
    let plain: EventStore<OrderPlaced, InMemoryBackend> = EventStore::from_shared(Arc::clone(&backend));
    rt.block_on(plain.append("current", (0..1_000).map(current).collect())).unwrap();
    let old = (0..1_000).map(|n| NewEvent::new("OrderPlaced", serde_json::to_vec(&version_1(n)).unwrap())).collect();
    rt.block_on(backend.append("old", ExpectedVersion::NoStream, old)).unwrap();
    let through: DynBackend = Arc::new(Upcasting::new(Arc::clone(&backend), chain(), Codec::Json));
    let upcast: EventStore<OrderPlaced, dyn EventStoreBackend> = EventStore::from_shared(through);
    assert_eq!(rt.block_on(upcast.get_events("old")).unwrap(), rt.block_on(plain.get_events("current")).unwrap());
    let declared: DynBackend = Arc::new(Upcasting::new(Arc::clone(&backend), declared_chain(), Codec::Json));
    let declared: EventStore<OrderPlaced, dyn EventStoreBackend> = EventStore::from_shared(declared);
    assert_eq!(rt.block_on(declared.get_events("old")).unwrap(), rt.block_on(plain.get_events("current")).unwrap());

    let mut group = c.benchmark_group("versioning/read_1000");
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("stored_current", |b| b.iter(|| rt.block_on(plain.get_events("current")).unwrap()));
    group.bench_function("stored_current_through_upcasting", |b| {
        b.iter(|| rt.block_on(upcast.get_events("current")).unwrap())
    });
    group.bench_function("stored_v1_three_steps", |b| b.iter(|| rt.block_on(upcast.get_events("old")).unwrap()));
    group.bench_function("stored_v1_three_declared_steps", |b| {
        b.iter(|| rt.block_on(declared.get_events("old")).unwrap())
    });
    group.finish();

    let one_step = Upcasters::<OrderPlaced>::new()
        .json("OrderPlaced", 3, rename("customer", "customer_id"))
        .build()
        .expect("a sound chain");
    let payload = serde_json::to_vec(&version_1(7)).unwrap();
    let mut group = c.benchmark_group("versioning/one_step");
    group.throughput(Throughput::Elements(1));
    group.bench_function("field_rename_200_bytes", |b| {
        b.iter(|| one_step.apply("OrderPlaced", 3, &payload, Codec::Json).unwrap())
    });
    let one_declared = Upcasters::<OrderPlaced>::new()
        .rename_field("OrderPlaced", 3, &[], "customer", "customer_id")
        .build()
        .expect("a sound chain");
    group.bench_function("declared_field_rename_200_bytes", |b| {
        b.iter(|| one_declared.apply("OrderPlaced", 3, &payload, Codec::Json).unwrap())
    });
    group.finish();
}

criterion_group!(benches, upcasting);
criterion_main!(benches);
