//! Sagas started by events, sagas that wait, and sagas written as reactions (choreography), on
//! all four backends (memory, AllSource, RocksDB, PostgreSQL):
//!
//! - a choreography closes accounts nobody paid into within a time (its timer) and pays a
//!   bonus on an account's first deposit, each effect counted in the accounts' events; an event
//!   that continues no instance, and one for a finished instance, are passed over and counted;
//! - a saga begun by an event waits (a delay step) before its next step;
//! - a reaction that panics after its first command leaves the instance stuck, visible; resumed,
//!   it runs again under the same idempotency keys, so the command counts once;
//! - bad input: names, an id that cannot be one, an event that does not decode.

#[path = "support/bank.rs"]
mod bank;
#[path = "support/targets.rs"]
mod targets;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use allframe::cqrs::sagas::{Record, RouterStatus, Trigger};
use allframe::cqrs::*;
use bank::*;
use serde::{Deserialize, Serialize};
use targets::targets;

const WAIT: Duration = Duration::from_secs(30);

/// The account id of an account's event.
fn account_of(event: &Envelope<BankEvent>) -> String {
    event.stream_id.as_str().trim_start_matches("account-").to_owned()
}

/// Closes an account nobody paid into within `dormant`; pays a bonus of 1 on its first deposit.
struct Dormancy {
    dormant: Duration,
}

#[derive(Default, Serialize, Deserialize)]
struct Watched {
    deposits: u32,
}

#[async_trait]
impl Choreography for Dormancy {
    const NAME: &'static str = "dormancy";
    type Event = BankEvent;
    type State = Watched;

    fn correlate(&self, event: &Envelope<BankEvent>) -> Correlation {
        match event.event {
            BankEvent::Opened { .. } => Correlation::Start(account_of(event)),
            BankEvent::Deposited { .. } => Correlation::Continue(account_of(event)),
            _ => Correlation::Ignore,
        }
    }

    async fn react(
        &self,
        state: &mut Watched,
        event: &Envelope<BankEvent>,
        ctx: &mut Reaction,
    ) -> Result<(), StepError> {
        match event.event {
            BankEvent::Opened { .. } => ctx.schedule("dormant", self.dormant)?,
            BankEvent::Deposited { .. } => {
                state.deposits += 1;
                ctx.cancel("dormant");
                ctx.dispatch(Deposit { id: account_of(event), amount: 1 }).await?;
                // The bonus is itself a deposit: routed to a completed instance, passed over.
                ctx.complete();
            }
            _ => {}
        }
        Ok(())
    }

    async fn wake(&self, _: &mut Watched, timer: &str, ctx: &mut Reaction) -> Result<(), StepError> {
        assert_eq!(timer, "dormant");
        ctx.dispatch(Close { id: ctx.saga_id().to_owned() }).await?;
        ctx.complete();
        Ok(())
    }
}

async fn account(backend: &DynBackend, id: &str) -> Account {
    let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(backend));
    typed.load_aggregate::<Account>(&format!("account-{id}")).await.unwrap().state
}

/// Waits until every router has routed the log through its head.
async fn routed(sagas: &SagaOrchestrator, backend: &DynBackend) -> Vec<RouterStatus> {
    let head = backend.head_position().await.unwrap();
    let until = Instant::now() + WAIT;
    loop {
        let routers = sagas.routers();
        let done = |router: &RouterStatus| router.position >= head || router.stopped.is_some();
        if !routers.is_empty() && routers.iter().all(done) {
            return routers;
        }
        assert!(Instant::now() < until, "the routers did not reach {head}: {routers:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn kinds(history: &[Record]) -> Vec<&'static str> {
    history.iter().map(Record::event_type).map(|name| name.trim_start_matches("allframe.Saga")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_choreography_reacts_to_events_and_to_its_timers_and_each_effect_counts_once() {
    for target in targets("choreography").await {
        let backend = target.open().await;
        let (bus, _) = bank_bus(Arc::clone(&backend));
        // Opened before the choreography first ran: not its business (it starts at the head).
        bus.dispatch(Open { id: "old".into(), owner: "eve".into() }).await.unwrap();
        let sagas = SagaOrchestrator::builder(bus.clone())
            .choreography(Dormancy { dormant: Duration::from_millis(300) })
            .build()
            .unwrap();
        sagas.start().await.unwrap();
        routed(&sagas, &backend).await;

        bus.dispatch(Open { id: "paid".into(), owner: "ada".into() }).await.unwrap();
        bus.dispatch(Open { id: "idle".into(), owner: "bob".into() }).await.unwrap();
        bus.dispatch(Deposit { id: "paid".into(), amount: 50 }).await.unwrap();
        // Continues no instance: passed over, counted.
        bus.dispatch(Deposit { id: "old".into(), amount: 7 }).await.unwrap();
        routed(&sagas, &backend).await;

        assert_eq!(sagas.wait("dormancy", "paid", WAIT).await.unwrap(), SagaState::Completed, "{}", target.name);
        assert_eq!(sagas.wait("dormancy", "idle", WAIT).await.unwrap(), SagaState::Completed, "{}", target.name);
        let (paid, idle, old) =
            (account(&backend, "paid").await, account(&backend, "idle").await, account(&backend, "old").await);
        assert_eq!((paid.balance, paid.events, paid.closed), (51, 3, false), "{}: the bonus once", target.name);
        assert_eq!((idle.events, idle.closed), (2, true), "{}: closed once, by its timer", target.name);
        assert_eq!((old.events, old.closed), (2, false), "{}: not the choreography's", target.name);
        assert!(matches!(sagas.instance("dormancy", "old").await, Err(SagaError::NotFound { .. })));

        let paid = sagas.instance("dormancy", "paid").await.unwrap();
        let mut sorted = kinds(&paid.history);
        let (first, last) = (sorted.first().copied(), sorted.last().copied());
        assert_eq!((first, last), (Some("Started"), Some("Completed")), "{}", target.name);
        // What was received may come before or after the reaction to the one before it, and
        // the bonus may be received before the instance completes (it is never reacted to).
        let received = sorted.iter().filter(|kind| **kind == "Received").count();
        assert!((2..=3).contains(&received), "{}: {sorted:?}", target.name);
        sorted.retain(|kind| *kind != "Received");
        sorted.sort_unstable();
        assert_eq!(sorted, ["Completed", "Reacted", "Reacted", "Reacting", "Reacting", "Started"], "{}", target.name);
        let reacted: Vec<&str> = (paid.history.iter())
            .filter_map(|record| match record {
                Record::Reacted { trigger: Trigger::Event { event_type, .. }, .. } => Some(event_type.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(reacted, ["AccountOpened", "MoneyDeposited"], "{}: in the log's order", target.name);
        assert_eq!(paid.data, serde_json::json!({ "deposits": 1 }), "{}: the state after each reaction", target.name);
        let idle = sagas.instance("dormancy", "idle").await.unwrap();
        assert!(
            idle.history.iter().any(
                |r| matches!(r, Record::Reacted { trigger: Trigger::Timer { name, .. }, .. } if name == "dormant")
            ),
            "{}: {:?}",
            target.name,
            idle.history
        );

        let routers = routed(&sagas, &backend).await;
        assert_eq!(routers.len(), 1);
        let before = routers[0].clone();
        assert_eq!(before.uncorrelated, 1, "{}: the deposit into `old`: {before:?}", target.name);
        // Two openings and a deposit; the bonus deposit raced `paid`'s completion: received
        // (and never reacted to) or passed over.
        assert_eq!(before.routed + before.passed_over, 4, "{}: {before:?}", target.name);
        // After its completion, a deposit into `paid` is passed over.
        bus.dispatch(Deposit { id: "paid".into(), amount: 2 }).await.unwrap();
        let after = routed(&sagas, &backend).await.remove(0);
        assert_eq!((after.routed, after.passed_over), (before.routed, before.passed_over + 1), "{}", target.name);
        assert_eq!(account(&backend, "paid").await.events, 4, "{}: no bonus for it", target.name);
        sagas.stop();

        // An account opened while no orchestrator runs: the next one routes from the router's
        // checkpoint, not from its own start, so the event is not missed; nothing before it is
        // routed again.
        bus.dispatch(Open { id: "between".into(), owner: "cy".into() }).await.unwrap();
        let again = SagaOrchestrator::builder(bus)
            .choreography(Dormancy { dormant: Duration::from_millis(300) })
            .build()
            .unwrap();
        again.start().await.unwrap();
        let routers = routed(&again, &backend).await;
        assert_eq!((routers[0].routed, routers[0].uncorrelated), (1, 0), "{}: {routers:?}", target.name);
        assert_eq!(again.wait("dormancy", "between", WAIT).await.unwrap(), SagaState::Completed, "{}", target.name);
        assert!(account(&backend, "between").await.closed, "{}", target.name);
        assert_eq!(account(&backend, "paid").await.events, 4, "{}", target.name);
        again.stop();
        drop((sagas, again, backend));
        target.cleanup().await;
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Welcome {
    account: String,
}

/// Begun by an account's opening; pays a bonus after a wait.
fn welcome(wait: Duration) -> SagaDefinition {
    Saga::new("welcome")
        .start_on(|event: &Envelope<BankEvent>| match event.event {
            BankEvent::Opened { .. } => Some((account_of(event), Welcome { account: account_of(event) })),
            _ => None,
        })
        .step(Step::delay("wait", wait))
        .step(Step::new("bonus", |ctx: StepContext| async move {
            let welcome: Welcome = ctx.input()?;
            ctx.dispatch(Deposit { id: welcome.account, amount: 5 }).await?;
            Ok(())
        }))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_begun_by_an_event_waits_then_goes_on() {
    for target in targets("saga-start-on").await {
        let backend = target.open().await;
        let (bus, _) = bank_bus(Arc::clone(&backend));
        let sagas = SagaOrchestrator::builder(bus.clone()).saga(welcome(Duration::from_millis(400))).build().unwrap();
        sagas.start().await.unwrap();
        routed(&sagas, &backend).await;
        bus.dispatch(Open { id: "w".into(), owner: "ada".into() }).await.unwrap();
        routed(&sagas, &backend).await;

        // Asleep: waiting, the bonus not paid yet.
        let until = Instant::now() + WAIT;
        let state = loop {
            match sagas.instance("welcome", "w").await {
                Ok(progress) if matches!(progress.state(), SagaState::Waiting { .. }) => break progress.state(),
                _ if Instant::now() > until => panic!("{}: the instance never waited", target.name),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        assert!(matches!(state, SagaState::Waiting { .. }), "{}", target.name);
        assert_eq!(account(&backend, "w").await.balance, 0, "{}: not before the wait", target.name);
        assert_eq!(sagas.list("welcome").await.unwrap()[0].1.label(), "waiting", "{}", target.name);

        assert_eq!(sagas.wait("welcome", "w", WAIT).await.unwrap(), SagaState::Completed, "{}", target.name);
        let w = account(&backend, "w").await;
        assert_eq!((w.balance, w.events), (5, 2), "{}: the bonus once", target.name);
        let history = sagas.instance("welcome", "w").await.unwrap().history;
        let Some(Record::Sleeping { until, .. }) = history.iter().find(|r| matches!(r, Record::Sleeping { .. })) else {
            panic!("{}: no Sleeping record: {history:?}", target.name)
        };
        assert!(*until > 0, "{}", target.name);
        sagas.stop();
        drop((sagas, backend));
        target.cleanup().await;
    }
}

/// Deposits on its beginning, then panics the first time (after the deposit), as a process
/// that dies half-way through a reaction would leave it.
struct Flaky {
    panicked: Arc<AtomicBool>,
}

#[async_trait]
impl Choreography for Flaky {
    const NAME: &'static str = "flaky";
    type Event = BankEvent;
    type State = ();

    fn correlate(&self, _: &Envelope<BankEvent>) -> Correlation {
        Correlation::Ignore
    }

    async fn react(&self, _: &mut (), _: &Envelope<BankEvent>, _: &mut Reaction) -> Result<(), StepError> {
        Ok(())
    }

    async fn begin(&self, _: &mut (), input: &serde_json::Value, ctx: &mut Reaction) -> Result<(), StepError> {
        let account = input["account"].as_str().unwrap_or_default().to_owned();
        ctx.dispatch(Deposit { id: account, amount: 10 }).await?;
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("the reaction fell over after its deposit");
        }
        ctx.complete();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaction_that_panics_is_stuck_until_resumed_and_its_command_counts_once() {
    for target in targets("choreography-stuck").await {
        let backend = target.open().await;
        let (bus, _) = bank_bus(Arc::clone(&backend));
        bus.dispatch(Open { id: "f".into(), owner: "ada".into() }).await.unwrap();
        let sagas = SagaOrchestrator::builder(bus).choreography(Flaky { panicked: Arc::default() }).build().unwrap();
        sagas.start().await.unwrap();
        sagas.begin("flaky", "f-1", &Welcome { account: "f".into() }).await.unwrap();
        assert!(matches!(sagas.begin("flaky", "f-1", &()).await, Err(SagaError::AlreadyStarted { .. })));

        let state = sagas.wait("flaky", "f-1", WAIT).await.unwrap();
        assert!(
            matches!(&state, SagaState::Stuck { step, error } if step == "its beginning" && error.contains("fell over")),
            "{}: {state:?}",
            target.name
        );
        assert_eq!(account(&backend, "f").await.balance, 10, "{}: the deposit ran", target.name);
        assert_eq!(sagas.list("flaky").await.unwrap()[0].1.label(), "stuck");

        sagas.resume("flaky", "f-1").await.unwrap();
        let until = Instant::now() + WAIT;
        while !sagas.instance("flaky", "f-1").await.unwrap().state().is_finished() {
            assert!(Instant::now() < until, "{}: not finished after the resume", target.name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let f = account(&backend, "f").await;
        assert_eq!((f.balance, f.events), (10, 2), "{}: the deposit counted once", target.name);
        sagas.stop();
        drop((sagas, backend));
        target.cleanup().await;
    }
}

/// Correlates deposits to an instance named by the amount: 13 names one that cannot be an id.
struct BadIds;

#[async_trait]
impl Choreography for BadIds {
    const NAME: &'static str = "bad-ids";
    type Event = BankEvent;
    type State = ();

    fn correlate(&self, event: &Envelope<BankEvent>) -> Correlation {
        match event.event {
            BankEvent::Deposited { amount: 13 } => Correlation::Start("a:b".into()),
            BankEvent::Deposited { amount } => Correlation::Start(format!("d-{amount}")),
            _ => Correlation::Ignore,
        }
    }

    async fn react(&self, _: &mut (), _: &Envelope<BankEvent>, ctx: &mut Reaction) -> Result<(), StepError> {
        ctx.complete();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_a_router_stops_rather_than_skip() {
    let backend: DynBackend = Arc::new(InMemoryBackend::new());
    let (bus, _) = bank_bus(Arc::clone(&backend));

    // Names: a choreography's is checked like a saga's, and the two share one namespace.
    struct Named;
    #[async_trait]
    impl Choreography for Named {
        const NAME: &'static str = "welcome";
        type Event = BankEvent;
        type State = ();
        fn correlate(&self, _: &Envelope<BankEvent>) -> Correlation {
            Correlation::Ignore
        }
        async fn react(&self, _: &mut (), _: &Envelope<BankEvent>, _: &mut Reaction) -> Result<(), StepError> {
            Ok(())
        }
    }
    let twice = SagaOrchestrator::builder(bus.clone()).saga(welcome(Duration::ZERO)).choreography(Named).build();
    assert!(matches!(twice, Err(SagaError::DuplicateSaga(name)) if name == "welcome"));
    struct Badly;
    #[async_trait]
    impl Choreography for Badly {
        const NAME: &'static str = "bad name";
        type Event = BankEvent;
        type State = ();
        fn correlate(&self, _: &Envelope<BankEvent>) -> Correlation {
            Correlation::Ignore
        }
        async fn react(&self, _: &mut (), _: &Envelope<BankEvent>, ctx: &mut Reaction) -> Result<(), StepError> {
            ctx.schedule("a timer?", Duration::ZERO)
        }
    }
    let bad = SagaOrchestrator::builder(bus.clone()).choreography(Badly).build();
    assert!(matches!(bad, Err(SagaError::Definition { problem, .. }) if problem.contains("the name must be")));

    // An id that cannot be one stops the router at that event: nothing after it is routed, so
    // nothing is skipped unseen; the events before it are.
    bus.dispatch(Open { id: "x".into(), owner: "ada".into() }).await.unwrap();
    let sagas = SagaOrchestrator::builder(bus.clone()).choreography(BadIds).build().unwrap();
    sagas.start().await.unwrap();
    routed(&sagas, &backend).await;
    bus.dispatch(Deposit { id: "x".into(), amount: 1 }).await.unwrap();
    let bad = bus.dispatch(Deposit { id: "x".into(), amount: 13 }).await.unwrap().first_position;
    bus.dispatch(Deposit { id: "x".into(), amount: 2 }).await.unwrap();
    let router = routed(&sagas, &backend).await.remove(0);
    assert_eq!(router.position, bad - 1, "{router:?}");
    let reason = router.stopped.expect("the router stopped");
    assert!(reason.contains("names instance `a:b`, which cannot be an id"), "{reason}");
    assert_eq!(sagas.wait("bad-ids", "d-1", WAIT).await.unwrap(), SagaState::Completed);
    assert!(matches!(sagas.instance("bad-ids", "d-2").await, Err(SagaError::NotFound { .. })), "not past the stop");
    sagas.stop();

    // An event of a listed type that does not decode stops it too.
    let backend: DynBackend = Arc::new(InMemoryBackend::new());
    let (bus, _) = bank_bus(Arc::clone(&backend));
    let sagas = SagaOrchestrator::builder(bus.clone()).choreography(BadIds).build().unwrap();
    sagas.start().await.unwrap();
    routed(&sagas, &backend).await;
    let broken = allframe::NewEvent::new("MoneyDeposited", &b"{\"amount\": \"lots\"}"[..]);
    backend.append("account-y", ExpectedVersion::Any, vec![broken]).await.unwrap();
    let router = routed(&sagas, &backend).await.remove(0);
    let reason = router.stopped.expect("the router stopped");
    assert!(reason.contains("MoneyDeposited at position") && reason.contains("does not decode"), "{reason}");
    sagas.stop();
}
