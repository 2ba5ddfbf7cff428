//! The query bus: typed answers from a read model projected from the events the command bus
//! wrote, checked registration, shared state, read-your-writes and typed handler errors, on
//! memory and AllSource.

#[path = "support/bank.rs"]
mod bank;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use allframe::cqrs::*;
use bank::*;

/// Balances by account, built from the bank's events, and the position it was built to.
#[derive(Debug, Default)]
struct Balances {
    by_account: BTreeMap<String, u64>,
    checkpoint: u64,
}

impl Projection<BankEvent> for Balances {
    fn apply(&mut self, envelope: &Envelope<BankEvent>) {
        self.checkpoint = envelope.position;
        let Some(id) = envelope.stream_id.strip_prefix("account-") else { return };
        match &envelope.event {
            BankEvent::Opened { .. } => {
                self.by_account.insert(id.to_owned(), 0);
            }
            BankEvent::Deposited { amount } => *self.by_account.entry(id.to_owned()).or_default() += amount,
            BankEvent::Withdrawn { amount } => *self.by_account.entry(id.to_owned()).or_default() -= amount,
            BankEvent::Closed => {
                self.by_account.remove(id);
            }
        }
    }
}

/// The read model as the query handlers share it.
type Model = Arc<tokio::sync::Mutex<Balances>>;

/// What the read model's queries fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ReadError {
    #[error("no account {0}")]
    NoAccount(String),
    #[error("the bus was given no read model")]
    NoModel,
}

/// One account's balance.
struct BalanceOf(String);

impl Query for BalanceOf {
    const NAME: &'static str = "BalanceOf";
    type Output = u64;
    type Error = ReadError;
}

/// The account with the highest balance, if any.
struct Richest;

impl Query for Richest {
    const NAME: &'static str = "Richest";
    type Output = Option<(String, u64)>;
    type Error = ReadError;
}

/// A balance with the bank's currency, from a second shared service.
struct Statement(String);

impl Query for Statement {
    const NAME: &'static str = "Statement";
    type Output = String;
    type Error = ReadError;
}

/// A second shared service.
struct Currency {
    code: &'static str,
}

async fn balance_of(query: BalanceOf, ctx: QueryContext) -> Result<u64, ReadError> {
    let model = ctx.state::<Model>().ok_or(ReadError::NoModel)?;
    let balances = model.lock().await;
    balances.by_account.get(&query.0).copied().ok_or(ReadError::NoAccount(query.0))
}

/// A handler written as a type.
struct RichestHandler;

#[allframe::async_trait]
impl QueryHandler<Richest> for RichestHandler {
    async fn handle(&self, _: Richest, ctx: &QueryContext) -> Result<Option<(String, u64)>, ReadError> {
        let model = ctx.state::<Model>().ok_or(ReadError::NoModel)?;
        let balances = model.lock().await;
        Ok(balances.by_account.iter().max_by_key(|(_, balance)| **balance).map(|(id, b)| (id.clone(), *b)))
    }
}

fn query_bus(model: &Model) -> QueryBus {
    QueryBus::builder()
        .state(Arc::clone(model))
        .state(Currency { code: "EUR" })
        .handler::<BalanceOf, _>(balance_of)
        .handler::<Richest, _>(RichestHandler)
        .handler::<Statement, _>(|query: Statement, ctx: QueryContext| async move {
            let currency = ctx.state::<Currency>().ok_or(ReadError::NoModel)?;
            let balance = balance_of(BalanceOf(query.0), ctx).await?;
            Ok::<_, ReadError>(format!("{balance} {}", currency.code))
        })
        .build()
        .expect("one handler per query")
}

/// Projects the store's events into `model` until it includes `position`.
async fn project_until(store: &TestStore, model: &Model, position: u64) {
    let events: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&store.backend));
    let mut balances = model.lock().await;
    for _ in 0..100 {
        let from = balances.checkpoint;
        balances.checkpoint = events.project(&mut *balances, from).await.unwrap();
        if balances.checkpoint >= position {
            return;
        }
        store.backend.wait_for_commit(balances.checkpoint, Duration::from_millis(100)).await.unwrap();
    }
    panic!("{}: the read model never reached position {position}", store.name);
}

async fn dispatch(bus: &CommandBus, command: impl Command<Error = BankError>) -> Outcome {
    bus.dispatch(command).await.expect("the command is accepted")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_typed_results_from_a_read_model_of_the_commands_events() {
    for store in stores() {
        let (bus, _) = bank_bus(Arc::clone(&store.backend));
        for (id, owner) in [("1", "ada"), ("2", "bob"), ("3", "cy")] {
            dispatch(&bus, Open { id: id.into(), owner: owner.into() }).await;
        }
        dispatch(&bus, Deposit { id: "1".into(), amount: 60 }).await;
        dispatch(&bus, Deposit { id: "2".into(), amount: 80 }).await;
        dispatch(&bus, Withdraw { id: "2".into(), amount: 30 }).await;
        dispatch(&bus, Deposit { id: "3".into(), amount: 70 }).await;
        let last = dispatch(&bus, Close { id: "3".into() }).await;

        let model = Model::default();
        project_until(&store, &model, last.last_position).await;
        let queries = query_bus(&model);
        let one: u64 = queries.query(BalanceOf("1".into())).await.unwrap();
        let two: u64 = queries.query(BalanceOf("2".into())).await.unwrap();
        assert_eq!((one, two), (60, 50), "{}", store.name);
        let richest: Option<(String, u64)> = queries.query(Richest).await.unwrap();
        assert_eq!(richest, Some(("1".to_owned(), 60)), "{}: the closed account (70) is gone", store.name);
        let statement: String = queries.query(Statement("2".into())).await.unwrap();
        assert_eq!(statement, "50 EUR");
        assert!(matches!(queries.query(BalanceOf("3".into())).await, Err(QueryError::Failed { .. })));
    }
}

#[tokio::test]
async fn a_query_without_a_handler_is_a_typed_error() {
    let model = Model::default();
    let only_balances =
        QueryBus::builder().state(Arc::clone(&model)).handler::<BalanceOf, _>(balance_of).build().unwrap();
    let missing = only_balances.query(Richest).await.unwrap_err();
    assert!(matches!(missing, QueryError::NoHandler { query: "Richest" }), "{missing:?}");
    assert_eq!(missing.to_string(), "no handler is registered for query Richest");

    let empty = QueryBus::builder().build().unwrap();
    assert!(matches!(empty.query(BalanceOf("1".into())).await, Err(QueryError::NoHandler { query: "BalanceOf" })));
    assert!(matches!(empty.query(Statement("1".into())).await, Err(QueryError::NoHandler { query: "Statement" })));
}

#[test]
fn two_handlers_for_one_query_are_refused_when_the_bus_is_built() {
    let twice = QueryBus::builder()
        .handler::<BalanceOf, _>(balance_of)
        .handler::<Richest, _>(RichestHandler)
        .handler::<BalanceOf, _>(|_: BalanceOf, _: QueryContext| async { Ok::<_, ReadError>(0) })
        .build();
    assert!(
        matches!(twice, Err(RegistrationError::DuplicateQueryHandler { query: "BalanceOf" })),
        "{:?}",
        twice.map(|_| ())
    );
    let error = QueryBus::builder()
        .handler::<Richest, _>(RichestHandler)
        .handler::<Richest, _>(RichestHandler)
        .build()
        .unwrap_err();
    assert_eq!(error, RegistrationError::DuplicateQueryHandler { query: "Richest" });
    assert!(
        QueryBus::builder().handler::<BalanceOf, _>(balance_of).handler::<Richest, _>(RichestHandler).build().is_ok()
    );
}

#[tokio::test]
async fn handlers_share_the_buss_state_through_the_query_context() {
    let model = Model::default();
    let queries = query_bus(&model);
    let clone = queries.clone();
    model.lock().await.by_account.insert("s".into(), 12);
    assert_eq!(queries.query(Statement("s".into())).await.unwrap(), "12 EUR", "the model and the currency");
    model.lock().await.by_account.insert("s".into(), 13);
    assert_eq!(clone.query(BalanceOf("s".into())).await.unwrap(), 13, "one model behind every clone of the bus");

    // A bus given neither service: the handler finds none in its context.
    let bare = QueryBus::builder().handler::<BalanceOf, _>(balance_of).build().unwrap();
    let failed = bare.query(BalanceOf("s".into())).await.unwrap_err();
    assert!(matches!(failed, QueryError::Failed { query: "BalanceOf", error: ReadError::NoModel }), "{failed:?}");
    let only_model = QueryBus::builder()
        .state(Arc::clone(&model))
        .handler::<Statement, _>(|q: Statement, ctx: QueryContext| async move {
            let currency = ctx.state::<Currency>().ok_or(ReadError::NoModel)?;
            Ok::<_, ReadError>(format!("{} {}", q.0, currency.code))
        })
        .build()
        .unwrap();
    assert!(matches!(only_model.query(Statement("s".into())).await, Err(QueryError::Failed { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_after_projecting_to_the_outcomes_position_reads_the_commands_write() {
    for store in stores() {
        let (bus, _) = bank_bus(Arc::clone(&store.backend));
        let model = Model::default();
        let queries = query_bus(&model);
        let opened = dispatch(&bus, Open { id: "w".into(), owner: "ada".into() }).await;
        project_until(&store, &model, opened.last_position).await;
        assert_eq!(queries.query(BalanceOf("w".into())).await.unwrap(), 0);
        for round in 1..=5u64 {
            let outcome = dispatch(&bus, Deposit { id: "w".into(), amount: 10 }).await;
            assert_eq!(
                queries.query(BalanceOf("w".into())).await.unwrap(),
                10 * (round - 1),
                "{}: not projected yet, the model answers what it has",
                store.name
            );
            project_until(&store, &model, outcome.last_position).await;
            assert_eq!(model.lock().await.checkpoint, outcome.last_position, "{}", store.name);
            assert_eq!(queries.query(BalanceOf("w".into())).await.unwrap(), 10 * round, "{}", store.name);
        }
    }
}

#[tokio::test]
async fn a_handlers_error_comes_back_typed() {
    let model = Model::default();
    let queries = query_bus(&model);
    let failed = queries.query(BalanceOf("nobody".into())).await.unwrap_err();
    let QueryError::Failed { query, error } = &failed else { panic!("{failed:?}") };
    assert_eq!((*query, error), ("BalanceOf", &ReadError::NoAccount("nobody".into())));
    assert_eq!(failed.to_string(), "query BalanceOf failed: no account nobody");
    let through = queries.query(Statement("nobody".into())).await.unwrap_err();
    assert!(
        matches!(&through, QueryError::Failed { query: "Statement", error: ReadError::NoAccount(id) } if id == "nobody"),
        "{through:?}"
    );
}
