//! Order fulfilment as a saga: reserve stock, charge the payment, ship; undone last first when a
//! step fails. Three orders: one goes through, one's payment is declined (its stock is released),
//! one's carrier does not answer in time (the payment is refunded and the stock released, the
//! shipment too, since a step that timed out may have partly run).
//!
//! ```text
//! cargo run -p allframe --features cqrs-allsource,cqrs-sagas --example order_fulfilment   # AllSource in ./allframe-sagas-data
//! cargo run -p allframe --features cqrs-sagas --example order_fulfilment -- --backend memory          # in memory
//! ```
//!
//! Every instance's history is a stream of the store (`$allframe-saga:order-fulfilment:ID`): run
//! it again on the same directory and the orders already fulfilled are refused (`AlreadyStarted`),
//! their histories shown as stored. The guide is `docs/SAGAS.md`.

use std::sync::Arc;
use std::time::Duration;

use allframe::cqrs::*;
use serde::{Deserialize, Serialize};

/// Stock, payments and shipments, each an aggregate of its own stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
enum ShopEvent {
    Reserved { quantity: u32 },
    Released { quantity: u32 },
    Charged { cents: u64 },
    Refunded { cents: u64 },
    Shipped,
    ShipmentCancelled,
}

/// What one stream (an order's stock, payment or shipment) has seen.
#[derive(Default, Debug, Serialize, Deserialize)]
struct Ledger {
    reserved: u32,
    charged: u64,
    shipped: bool,
    events: u32,
}

impl Aggregate for Ledger {
    type Event = ShopEvent;
    fn apply(&mut self, event: &ShopEvent) {
        self.events += 1;
        match event {
            ShopEvent::Reserved { quantity } => self.reserved += quantity,
            ShopEvent::Released { quantity } => self.reserved -= quantity,
            ShopEvent::Charged { cents } => self.charged += cents,
            ShopEvent::Refunded { cents } => self.charged -= cents,
            ShopEvent::Shipped => self.shipped = true,
            ShopEvent::ShipmentCancelled => self.shipped = false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
enum ShopError {
    #[error("card declined for {0} cents")]
    Declined(u64),
}

impl DomainError for ShopError {
    fn code(&self) -> &'static str {
        "declined"
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[command(stream = "stock-{order}", error = ShopError)]
struct Reserve {
    order: String,
    quantity: u32,
    undo: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[command(stream = "payment-{order}", error = ShopError)]
struct Charge {
    order: String,
    cents: u64,
    undo: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[command(stream = "shipment-{order}", error = ShopError)]
struct Ship {
    order: String,
    undo: bool,
}

#[command_handler]
fn reserve(_stock: &Ledger, cmd: &Reserve) -> Result<Vec<ShopEvent>, ShopError> {
    let quantity = cmd.quantity;
    Ok(vec![if cmd.undo { ShopEvent::Released { quantity } } else { ShopEvent::Reserved { quantity } }])
}

#[command_handler]
fn charge(_payment: &Ledger, cmd: &Charge) -> Result<Vec<ShopEvent>, ShopError> {
    if cmd.undo {
        return Ok(vec![ShopEvent::Refunded { cents: cmd.cents }]);
    }
    // The bank declines anything above 500 €.
    if cmd.cents > 50_000 {
        return Err(ShopError::Declined(cmd.cents));
    }
    Ok(vec![ShopEvent::Charged { cents: cmd.cents }])
}

#[command_handler]
fn ship(_shipment: &Ledger, cmd: &Ship) -> Result<Vec<ShopEvent>, ShopError> {
    Ok(vec![if cmd.undo { ShopEvent::ShipmentCancelled } else { ShopEvent::Shipped }])
}

/// The saga's input.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    id: String,
    quantity: u32,
    cents: u64,
    /// The carrier this order goes with (`slow` never answers in time).
    carrier: String,
}

fn fulfilment() -> Result<SagaDefinition, SagaError> {
    Saga::new("order-fulfilment")
        .step(
            Step::new("reserve-stock", |ctx: StepContext| async move {
                let order: Order = ctx.input()?;
                ctx.dispatch(Reserve { order: order.id, quantity: order.quantity, undo: false }).await?;
                Ok(())
            })
            .compensate(|ctx: StepContext| async move {
                let order: Order = ctx.input()?;
                ctx.dispatch(Reserve { order: order.id, quantity: order.quantity, undo: true }).await?;
                Ok(())
            })
            .timeout(Duration::from_secs(5)),
        )
        .step(
            Step::new("charge-payment", |ctx: StepContext| async move {
                let order: Order = ctx.input()?;
                ctx.dispatch(Charge { order: order.id, cents: order.cents, undo: false }).await?;
                Ok(order.cents)
            })
            .compensate(|ctx: StepContext| async move {
                let order: Order = ctx.input()?;
                ctx.dispatch(Charge { order: order.id, cents: order.cents, undo: true }).await?;
                Ok(())
            })
            .timeout(Duration::from_secs(5))
            .retry(Retry::times(3, Duration::from_millis(50))),
        )
        .step(
            Step::new("ship", |ctx: StepContext| async move {
                let order: Order = ctx.input()?;
                if order.carrier == "slow" {
                    // The carrier's API hangs; the step's timeout fires.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                ctx.dispatch(Ship { order: order.id, undo: false }).await?;
                Ok(format!("{} tracking {}", order.carrier, ctx.idempotency_key(0)))
            })
            .compensate(|ctx: StepContext| async move {
                let order: Order = ctx.input()?;
                ctx.dispatch(Ship { order: order.id, undo: true }).await?;
                Ok(())
            })
            .timeout(Duration::from_millis(500)),
        )
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backend = backend()?;
    let bus = CommandBus::builder(Arc::clone(&backend)).discover().build()?;
    let sagas = SagaOrchestrator::builder(bus).saga(fulfilment()?).build()?;
    sagas.start().await?;

    let orders = [
        Order { id: "order-1".into(), quantity: 2, cents: 4_999, carrier: "fast".into() },
        Order { id: "order-2".into(), quantity: 1, cents: 99_900, carrier: "fast".into() },
        Order { id: "order-3".into(), quantity: 5, cents: 12_500, carrier: "slow".into() },
    ];
    for order in &orders {
        match sagas.begin("order-fulfilment", &order.id, order).await {
            Ok(()) => println!("began {}", order.id),
            Err(SagaError::AlreadyStarted { id, .. }) => println!("{id} was begun by an earlier run"),
            Err(error) => return Err(error.into()),
        }
    }
    println!();
    println!("{:<8} {:<12} {:>9} {:>8} {:>8}  history", "order", "state", "reserved", "charged", "shipped");
    let store: EventStore<ShopEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&backend));
    for order in &orders {
        let state = sagas.wait("order-fulfilment", &order.id, Duration::from_secs(30)).await?;
        let history = sagas.instance("order-fulfilment", &order.id).await?.history;
        let ledger = |kind: &str| format!("{kind}-{}", order.id);
        let stock = store.load_aggregate::<Ledger>(&ledger("stock")).await?.state;
        let payment = store.load_aggregate::<Ledger>(&ledger("payment")).await?.state;
        let shipment = store.load_aggregate::<Ledger>(&ledger("shipment")).await?.state;
        println!(
            "{:<8} {:<12} {:>9} {:>8} {:>8}  {}",
            order.id.trim_start_matches("order-"),
            state.label(),
            stock.reserved,
            payment.charged,
            shipment.shipped,
            summary(&history)
        );
        if let SagaState::RolledBack { step, reason } = state {
            println!("{:<8} rolled back at `{step}`: {reason}", "");
        }
    }
    sagas.stop();
    Ok(())
}

/// An instance's history in a line: each step done (✓), failed (✗), timed out (⏱) or undone (↶).
fn summary(history: &[allframe::cqrs::sagas::Record]) -> String {
    use allframe::cqrs::sagas::Record;
    let marks = history.iter().filter_map(|record| match record {
        Record::StepCompleted { step, .. } => Some(format!("{step} ✓")),
        Record::StepFailed { step, retry_at: None, .. } => Some(format!("{step} ✗")),
        Record::StepFailed { step, attempt, .. } => Some(format!("{step} retry {attempt}")),
        Record::StepTimedOut { step, .. } => Some(format!("{step} ⏱")),
        Record::Compensated { step } => Some(format!("↶ {step}")),
        _ => None,
    });
    marks.collect::<Vec<_>>().join(", ")
}

/// `--backend memory`, or AllSource in `./allframe-sagas-data` when it is compiled in.
fn backend() -> Result<DynBackend, Box<dyn std::error::Error>> {
    let memory = std::env::args().any(|arg| arg == "memory") || cfg!(not(feature = "cqrs-allsource"));
    if memory {
        return Ok(Arc::new(InMemoryBackend::new()));
    }
    #[cfg(feature = "cqrs-allsource")]
    return Ok(Arc::new(allframe::allsource::AllSourceBackend::production("./allframe-sagas-data")?));
    #[cfg(not(feature = "cqrs-allsource"))]
    unreachable!("memory above")
}
