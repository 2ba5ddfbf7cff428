//! Shared benchmark workloads: the event types and payloads every benchmark uses.

pub mod upcast_workload;

use allframe::Event;
use serde::{Deserialize, Serialize};

/// A small domain event (about 90 bytes of JSON), for the micro-benchmarks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BenchEvent {
    /// Money moved into an account.
    Deposited {
        /// The account.
        account: String,
        /// Cents.
        amount: u64,
        /// A note.
        memo: String,
    },
}

impl Event for BenchEvent {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

/// The event numbered `n`.
pub fn bench_event(n: u64) -> BenchEvent {
    BenchEvent::Deposited {
        account: format!("acct-{:06}", n % 1_000_000),
        amount: n * 7 % 10_000,
        memo: "monthly salary, march".into(),
    }
}

/// A domain event of about 200 bytes of JSON, like a real one: the workload event of
/// `cargo xtask bench`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// Order id.
    pub order_id: String,
    /// Customer id.
    pub customer_id: String,
    /// Line items as (sku, quantity, price in cents).
    pub lines: Vec<(String, u32, u64)>,
    /// Currency code.
    pub currency: String,
    /// Shipping note.
    pub note: String,
}

impl Event for OrderPlaced {
    fn event_type(&self) -> &'static str {
        "OrderPlaced"
    }
}

/// The workload event numbered `n` (about 200 bytes as JSON).
pub fn order_placed(n: u64) -> OrderPlaced {
    OrderPlaced {
        order_id: format!("order-{n:010}"),
        customer_id: format!("customer-{:06}", n % 100_000),
        lines: vec![("SKU-RED-SHOE-42".into(), 1, 8_999), ("SKU-SOCKS-3PK".into(), 2, 1_299)],
        currency: "EUR".into(),
        note: "leave at the door, ring twice".into(),
    }
}

/// A fold over `OrderPlaced` events for the aggregate-load workload.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CustomerTotals {
    /// Orders seen.
    pub orders: u64,
    /// Sum of line totals in cents.
    pub cents: u64,
}

impl allframe::Aggregate for CustomerTotals {
    type Event = OrderPlaced;
    fn apply(&mut self, event: &OrderPlaced) {
        self.orders += 1;
        self.cents += event.lines.iter().map(|(_, q, p)| u64::from(*q) * p).sum::<u64>();
    }
}

/// The command workloads' event, the one of cqrs-es's `MemStore` comparison (issue 18):
/// `Bumped { index, data: "payload" }`, about 40 bytes of JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, allframe::cqrs::Event)]
pub enum CounterEvent {
    /// The counter went up.
    Bumped {
        /// The counter's value after this event.
        index: u64,
        /// A short string, so that decoding allocates as real events do.
        data: String,
    },
}

/// The event that takes a counter at `bumps` one further.
pub fn bumped(bumps: u64) -> CounterEvent {
    CounterEvent::Bumped { index: bumps + 1, data: "payload".into() }
}

/// The aggregate of the command workloads: a counter folded from `Bumped` events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    /// Events applied.
    pub bumps: u64,
    /// The index of the last event applied.
    pub last_index: u64,
}

impl allframe::Aggregate for Counter {
    type Event = CounterEvent;
    fn apply(&mut self, CounterEvent::Bumped { index, .. }: &CounterEvent) {
        self.bumps += 1;
        self.last_index = *index;
    }
}

/// The command of the command workloads: bump counter number `counter` by one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bump {
    /// Which counter (its stream is `counter-N`).
    pub counter: u32,
}

impl allframe::cqrs::Command for Bump {
    const NAME: &'static str = "Bump";
    type Error = allframe::cqrs::NoError;
    fn stream_id(&self) -> String {
        counter_stream(self.counter)
    }
}

/// The stream of counter number `counter`.
pub fn counter_stream(counter: u32) -> String {
    format!("counter-{counter}")
}

/// A command bus over `backend` with the `Bump` handler, the given codec and, when
/// `cache` is given, an aggregate cache of that many entries.
pub fn counter_bus(
    backend: allframe::DynBackend,
    codec: allframe::Codec,
    cache: Option<usize>,
) -> allframe::cqrs::CommandBus {
    use allframe::cqrs::{CommandBus, decide};
    let mut builder = CommandBus::builder(backend)
        .codec(codec)
        .aggregate::<Bump, _>(decide(|counter: &Counter, _: &Bump, _| Ok(vec![bumped(counter.bumps)])));
    if let Some(capacity) = cache {
        builder = builder.aggregate_cache(capacity);
    }
    builder.build().expect("one handler")
}
