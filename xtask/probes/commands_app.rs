// The application of the `cqrs-commands` and `cqrs-validation` size probes (`include!`d after
// each defines its `Bump` command and its checks): a handler that may refuse, a dispatch with
// an idempotency key, a query.

#[derive(Debug, serde::Serialize, thiserror::Error)]
#[error("the counter is full")]
struct Full;

impl DomainError for Full {}

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
