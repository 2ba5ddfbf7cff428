//! Shared benchmark workloads: the event types and payloads every benchmark uses.

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
