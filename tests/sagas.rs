//! Sagas on all four backends (memory, AllSource, RocksDB, PostgreSQL): a transfer between two
//! bank accounts (withdraw from one, deposit to the other, then a third step the test controls)
//! that completes, fails and is undone last first, times out and undoes the step that timed
//! out too, retries, gets stuck in a compensation until resumed, and is taken over after its
//! runner's runtime is torn down mid-step, each command's effect counted in the accounts'
//! events. Bad input: definitions, ids, a panicking step.

#[path = "support/bank.rs"]
mod bank;
#[path = "support/targets.rs"]
mod targets;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use allframe::cqrs::sagas::Record;
use allframe::cqrs::*;
use bank::*;
use serde::{Deserialize, Serialize};
use targets::targets;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Transfer {
    from: String,
    to: String,
    amount: u64,
}

/// What the third step does on each attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Third {
    Succeed,
    Fail,
    /// Fail with a transient error this many times, then succeed.
    FlakyTimes(u32),
    /// Sleep past its timeout.
    Hang,
    Panic,
}

/// Counters of the third step and of its compensation.
#[derive(Default, Debug)]
struct Calls {
    third: AtomicU32,
    third_undone: AtomicU32,
    /// Compensation of the deposit: fails while this is above 0 (decremented per call).
    undo_deposit_failures: AtomicU32,
}

fn transfer_saga(third: Third, calls: Arc<Calls>) -> SagaDefinition {
    let (calls_do, calls_undo, calls_deposit) = (Arc::clone(&calls), Arc::clone(&calls), calls);
    Saga::new("transfer")
        .step(
            Step::new("withdraw", |ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                ctx.dispatch(Withdraw { id: t.from, amount: t.amount }).await?;
                Ok(())
            })
            .compensate(|ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                ctx.dispatch(Deposit { id: t.from, amount: t.amount }).await?;
                Ok(())
            }),
        )
        .step(
            Step::new("deposit", |ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                let outcome = ctx.dispatch(Deposit { id: t.to, amount: t.amount }).await?;
                Ok(outcome.stream_version)
            })
            .compensate(move |ctx: StepContext| {
                let calls = Arc::clone(&calls_deposit);
                async move {
                    let failing = calls.undo_deposit_failures.load(Ordering::SeqCst);
                    if failing > 0 {
                        calls.undo_deposit_failures.store(failing - 1, Ordering::SeqCst);
                        return Err(StepError::transient("the bank is closed"));
                    }
                    let t: Transfer = ctx.input()?;
                    ctx.dispatch(Withdraw { id: t.to, amount: t.amount }).await?;
                    Ok(())
                }
            })
            .compensation_retry(Retry::times(3, Duration::from_millis(10))),
        )
        .step(
            Step::new("notify", move |_ctx: StepContext| {
                let calls = Arc::clone(&calls_do);
                async move {
                    let n = calls.third.fetch_add(1, Ordering::SeqCst) + 1;
                    match third {
                        Third::Succeed => Ok("sent".to_owned()),
                        Third::Fail => Err(StepError::failed("the customer has no address")),
                        Third::FlakyTimes(times) if n <= times => Err(StepError::transient("mail server busy")),
                        Third::FlakyTimes(_) => Ok("sent".to_owned()),
                        Third::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            Ok("late".to_owned())
                        }
                        Third::Panic => panic!("the mailer fell over"),
                    }
                }
            })
            .compensate(move |_ctx: StepContext| {
                let calls = Arc::clone(&calls_undo);
                async move {
                    calls.third_undone.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .timeout(Duration::from_millis(300))
            .retry(Retry::times(4, Duration::from_millis(10))),
        )
        .build()
        .expect("a valid saga")
}

async fn setup(backend: &DynBackend) -> CommandBus {
    let (bus, _) = bank_bus(Arc::clone(backend));
    bus.dispatch(Open { id: "a".into(), owner: "ada".into() }).await.unwrap();
    bus.dispatch(Open { id: "b".into(), owner: "bob".into() }).await.unwrap();
    bus.dispatch(Deposit { id: "a".into(), amount: 100 }).await.unwrap();
    bus
}

async fn account(backend: &DynBackend, id: &str) -> Account {
    let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(backend));
    typed.load_aggregate::<Account>(&format!("account-{id}")).await.unwrap().state
}

fn input() -> Transfer {
    Transfer { from: "a".into(), to: "b".into(), amount: 10 }
}

async fn run(backend: &DynBackend, third: Third, calls: Arc<Calls>) -> (SagaOrchestrator, SagaState) {
    let bus = setup(backend).await;
    let sagas = SagaOrchestrator::builder(bus).saga(transfer_saga(third, calls)).build().unwrap();
    sagas.start().await.unwrap();
    sagas.begin("transfer", "t-1", &input()).await.unwrap();
    let state = sagas.wait("transfer", "t-1", Duration::from_secs(20)).await.unwrap();
    (sagas, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_completes_and_each_command_counts_once() {
    for target in targets("saga-completes").await {
        let backend = target.open().await;
        let calls = Arc::new(Calls::default());
        let (sagas, state) = run(&backend, Third::Succeed, Arc::clone(&calls)).await;
        assert_eq!(state, SagaState::Completed, "{}", target.name);
        let (a, b) = (account(&backend, "a").await, account(&backend, "b").await);
        assert_eq!((a.balance, b.balance), (90, 10), "{}", target.name);
        assert_eq!((a.events, b.events), (3, 2), "{}: one withdrawal, one deposit", target.name);
        let progress = sagas.instance("transfer", "t-1").await.unwrap();
        let outputs: Vec<&str> = progress.outputs.iter().map(|(step, _)| step.as_str()).collect();
        assert_eq!(outputs, ["withdraw", "deposit", "notify"], "{}", target.name);
        assert_eq!(progress.history.last(), Some(&Record::Completed), "{}", target.name);
        assert_eq!(sagas.list("transfer").await.unwrap(), [("t-1".to_owned(), SagaState::Completed)]);
        assert!(
            matches!(sagas.begin("transfer", "t-1", &input()).await, Err(SagaError::AlreadyStarted { .. })),
            "{}: an id is started once",
            target.name
        );
        sagas.stop();
        drop((sagas, backend));
        target.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_fails_is_not_retried_and_the_steps_before_it_are_undone_last_first() {
    for target in targets("saga-fails").await {
        let backend = target.open().await;
        let calls = Arc::new(Calls::default());
        let (sagas, state) = run(&backend, Third::Fail, Arc::clone(&calls)).await;
        assert!(
            matches!(&state, SagaState::RolledBack { step, reason } if step == "notify" && reason.contains("no address")),
            "{}: {state:?}",
            target.name
        );
        assert_eq!(calls.third.load(Ordering::SeqCst), 1, "{}: a failure is not retried", target.name);
        assert_eq!(calls.third_undone.load(Ordering::SeqCst), 0, "{}: a step that failed is not undone", target.name);
        let (a, b) = (account(&backend, "a").await, account(&backend, "b").await);
        assert_eq!((a.balance, b.balance), (100, 0), "{}", target.name);
        assert_eq!((a.events, b.events), (4, 3), "{}: each command and its undoing once", target.name);
        let undone: Vec<String> = (sagas.instance("transfer", "t-1").await.unwrap().history.iter())
            .filter_map(|record| match record {
                Record::Compensated { step } => Some(step.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(undone, ["deposit", "withdraw"], "{}: last first", target.name);
        sagas.stop();
        drop((sagas, backend));
        target.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_times_out_is_undone_with_the_others() {
    for target in targets("saga-timeout").await {
        let backend = target.open().await;
        let calls = Arc::new(Calls::default());
        let (sagas, state) = run(&backend, Third::Hang, Arc::clone(&calls)).await;
        assert!(matches!(&state, SagaState::RolledBack { step, .. } if step == "notify"), "{}: {state:?}", target.name);
        assert_eq!(calls.third_undone.load(Ordering::SeqCst), 1, "{}: the step that timed out is undone", target.name);
        let (a, b) = (account(&backend, "a").await, account(&backend, "b").await);
        assert_eq!((a.balance, b.balance), (100, 0), "{}", target.name);
        sagas.stop();
        drop((sagas, backend));
        target.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_with_backoff() {
    let target = targets("saga-retries").await.remove(0);
    let backend = target.open().await;
    let calls = Arc::new(Calls::default());
    let (sagas, state) = run(&backend, Third::FlakyTimes(2), Arc::clone(&calls)).await;
    assert_eq!(state, SagaState::Completed);
    assert_eq!(calls.third.load(Ordering::SeqCst), 3);
    let history = sagas.instance("transfer", "t-1").await.unwrap().history;
    let retries: Vec<u32> = (history.iter())
        .filter_map(|record| match record {
            Record::StepFailed { attempt, retry_at: Some(_), .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [1, 2]);

    // More transient failures than attempts: the saga gives up and compensates.
    let backend = target.open().await;
    let calls = Arc::new(Calls::default());
    let (_sagas, state) = run(&backend, Third::FlakyTimes(10), Arc::clone(&calls)).await;
    assert!(matches!(state, SagaState::RolledBack { .. }), "{state:?}");
    assert_eq!(calls.third.load(Ordering::SeqCst), 4, "the policy's four attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_is_retried_then_stuck_until_an_operator_resumes_it() {
    for target in targets("saga-stuck").await {
        // Fails twice, then succeeds: within the compensation's three attempts.
        let backend = target.open().await;
        let calls = Arc::new(Calls { undo_deposit_failures: AtomicU32::new(2), ..Calls::default() });
        let (sagas, state) = run(&backend, Third::Fail, Arc::clone(&calls)).await;
        assert!(matches!(state, SagaState::RolledBack { .. }), "{}: {state:?}", target.name);
        assert_eq!(account(&backend, "b").await.balance, 0, "{}", target.name);
        sagas.stop();
        drop((sagas, backend));
        target.cleanup().await;
    }
    for target in targets("saga-stuck-resumed").await {
        // Fails more often than its attempts: stuck, visible; resumed, it goes on.
        let backend = target.open().await;
        let calls = Arc::new(Calls { undo_deposit_failures: AtomicU32::new(4), ..Calls::default() });
        let (sagas, state) = run(&backend, Third::Fail, Arc::clone(&calls)).await;
        assert!(
            matches!(&state, SagaState::Stuck { step, error } if step == "deposit" && error.contains("closed")),
            "{}: {state:?}",
            target.name
        );
        assert_eq!(account(&backend, "b").await.balance, 10, "{}: not undone yet", target.name);
        assert_eq!(sagas.list("transfer").await.unwrap()[0].1.label(), "stuck");
        // Resumed: a fresh count of three attempts; the fourth failure is the first of them.
        sagas.resume("transfer", "t-1").await.unwrap();
        let state = sagas.wait("transfer", "t-1", Duration::from_secs(20)).await.unwrap();
        let state = match state {
            // `wait` may see the instance before the resumed run moved it on.
            SagaState::Stuck { .. } => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                sagas.wait("transfer", "t-1", Duration::from_secs(20)).await.unwrap()
            }
            other => other,
        };
        assert!(matches!(state, SagaState::RolledBack { .. }), "{}: {state:?}", target.name);
        let (a, b) = (account(&backend, "a").await, account(&backend, "b").await);
        assert_eq!((a.balance, b.balance), (100, 0), "{}", target.name);
        assert_eq!(b.events, 3, "{}: the deposit undone once", target.name);
        assert!(matches!(sagas.resume("transfer", "t-1").await, Err(SagaError::NotStuck { .. })));
        sagas.stop();
        drop((sagas, backend));
        target.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_torn_down_mid_step_is_taken_over_and_effects_count_once() {
    for target in targets("saga-takeover").await {
        let backend = target.open().await;
        let bus = setup(&backend).await;
        // The first runner lives on a runtime of its own, torn down while the third step hangs
        // (after the first two steps' commands ran): as if its process died.
        let calls = Arc::new(Calls::default());
        let first = SagaOrchestrator::builder(bus.clone()).saga(transfer_saga(Third::Hang, Arc::clone(&calls))).build();
        let first = first.unwrap();
        let (runner, seen) = (first.clone(), Arc::clone(&calls));
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async {
                runner.start().await.unwrap();
                runner.begin("transfer", "t-1", &input()).await.unwrap();
                while seen.third.load(Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            runtime.shutdown_background();
        })
        .await
        .unwrap();
        first.stop();
        // The deadline passes while no runner runs: the next one times the step out at once.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let calls = Arc::new(Calls::default());
        let second = SagaOrchestrator::builder(bus).saga(transfer_saga(Third::Succeed, Arc::clone(&calls))).build();
        let second = second.unwrap();
        second.start().await.unwrap();
        let state = second.wait("transfer", "t-1", Duration::from_secs(20)).await.unwrap();
        assert!(matches!(&state, SagaState::RolledBack { step, .. } if step == "notify"), "{}: {state:?}", target.name);
        assert_eq!(calls.third.load(Ordering::SeqCst), 0, "{}: not run again after its deadline", target.name);
        assert_eq!(calls.third_undone.load(Ordering::SeqCst), 1, "{}", target.name);
        let (a, b) = (account(&backend, "a").await, account(&backend, "b").await);
        assert_eq!((a.balance, b.balance), (100, 0), "{}", target.name);
        assert_eq!((a.events, b.events), (4, 3), "{}", target.name);
        second.stop();
        drop((first, second, backend));
        target.cleanup().await;
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_typed_errors() {
    let message = |saga: Saga| saga.build().unwrap_err().to_string();
    assert_eq!(message(Saga::new("empty")), "saga `empty` is not valid: it has no steps");
    let step = || Step::new("a", |_ctx: StepContext| async { Ok::<_, StepError>(()) });
    assert_eq!(
        message(Saga::new("twice").step(step()).step(step())),
        "saga `twice` is not valid: two steps are called `a`"
    );
    assert!(message(Saga::new("bad name").step(step())).contains("the name must be"));
    assert!(
        message(Saga::new("x").step(step().retry(Retry::times(0, Duration::ZERO)))).contains("at least one attempt")
    );

    let backend: DynBackend = Arc::new(InMemoryBackend::new());
    let bus = setup(&backend).await;
    let definition = transfer_saga(Third::Succeed, Arc::default());
    let duplicate = SagaOrchestrator::builder(bus.clone()).saga(definition.clone()).saga(definition.clone()).build();
    assert!(matches!(duplicate, Err(SagaError::DuplicateSaga(name)) if name == "transfer"));
    let sagas = SagaOrchestrator::builder(bus.clone()).saga(definition.clone()).build().unwrap();
    assert!(matches!(sagas.begin("nope", "1", &input()).await, Err(SagaError::UnknownSaga(_))));
    assert!(matches!(sagas.begin("transfer", "a:b", &input()).await, Err(SagaError::InvalidId(_))));
    assert!(matches!(sagas.begin("transfer", "", &input()).await, Err(SagaError::InvalidId(_))));
    assert!(matches!(sagas.instance("transfer", "missing").await, Err(SagaError::NotFound { .. })));
    sagas.start().await.unwrap();
    let second = SagaOrchestrator::builder(bus).saga(definition).build().unwrap();
    assert!(matches!(second.start().await, Err(SagaError::AlreadyRunning(_))), "one runner per saga and store");
    sagas.stop();

    // A step that panics is a failure: the saga undoes what was done.
    let backend: DynBackend = Arc::new(InMemoryBackend::new());
    let calls = Arc::new(Calls::default());
    let (_sagas, state) = run(&backend, Third::Panic, Arc::clone(&calls)).await;
    assert!(matches!(&state, SagaState::RolledBack { reason, .. } if reason.contains("panicked")), "{state:?}");
    assert_eq!(account(&backend, "a").await.balance, 100);
}
