//! Size probe: an application on the command bus, with the feature `cqrs` alone: a command
//! with field checks (written by hand; garde's are the `cqrs-validation` probe), its
//! `#[command_handler]`, a dispatch with an idempotency key, and a query.

use std::sync::Arc;

use allframe::cqrs::*;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, Event)]
enum CounterEvent {
    Bumped { by: u32 },
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Counter {
    total: u64,
}

impl Aggregate for Counter {
    type Event = CounterEvent;
    fn apply(&mut self, CounterEvent::Bumped { by }: &CounterEvent) {
        self.total += u64::from(*by);
    }
}

#[derive(Debug, serde::Serialize, thiserror::Error)]
#[error("the counter is full")]
struct Full;

impl DomainError for Full {}

#[derive(serde::Serialize, serde::Deserialize)]
struct Bump {
    name: String,
    by: u32,
}

impl Command for Bump {
    const NAME: &'static str = "Bump";
    type Error = Full;
    fn stream_id(&self) -> String {
        format!("counter-{}", self.name)
    }
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if self.name.is_empty() || self.name.len() > 32 {
            errors.push("name", "length", "length is lower than 1 or greater than 32");
        }
        if !(1..=100).contains(&self.by) {
            errors.push("by", "range", "greater than 100 or lower than 1");
        }
        errors.into_result()
    }
}

#[command_handler]
fn bump(counter: &Counter, command: &Bump) -> Result<Vec<CounterEvent>, Full> {
    if counter.total > 1_000 {
        return Err(Full);
    }
    Ok(vec![CounterEvent::Bumped { by: command.by }])
}

struct Total(String);

impl Query for Total {
    const NAME: &'static str = "Total";
    type Output = u64;
    type Error = Error;
}

async fn total(query: Total, ctx: QueryContext) -> Result<u64, Error> {
    let store = ctx.state::<EventStore<CounterEvent, dyn EventStoreBackend>>().expect("given");
    Ok(store.load_aggregate::<Counter>(&query.0).await?.state.total)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let backend: DynBackend = Arc::new(InMemoryBackend::new());
    let bus = CommandBus::builder(Arc::clone(&backend)).discover().build().expect("wired");
    let by = std::env::args().count() as u32;
    match bus.dispatch_with(Bump { name: "a".into(), by }, CommandOptions::new().idempotency_key("k")).await {
        Ok(outcome) => println!("{}", outcome.stream_version),
        Err(error) => eprintln!("{error}"),
    }
    let store: EventStore<CounterEvent, dyn EventStoreBackend> = EventStore::from_shared(backend);
    let queries = QueryBus::builder().state(store).handler::<Total, _>(total).build().expect("wired");
    match queries.query(Total("counter-a".into())).await {
        Ok(total) => println!("{total}"),
        Err(error) => eprintln!("{error}"),
    }
}
