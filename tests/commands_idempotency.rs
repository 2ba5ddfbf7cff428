//! Idempotency keys of the command bus on all four backends (memory, AllSource, RocksDB,
//! PostgreSQL), each opened from its address through the facade's descriptors: a repeat answers
//! with the first outcome, concurrent dispatches with one key append once, a key reused by
//! another command is refused, a zero-event command is remembered, and a reopened store answers
//! a repeat without running the handler.
//!
//! PostgreSQL uses `ALLFRAME_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) with a schema per test, dropped at the end; without
//! a server it is skipped with a notice, except under `CI=true`.

#[path = "support/bank.rs"]
mod bank;
#[path = "support/targets.rs"]
mod targets;

use std::sync::Arc;

use allframe::cqrs::*;
use bank::*;
use targets::targets;

async fn open_account(bus: &CommandBus, id: &str) {
    bus.dispatch(Open { id: id.into(), owner: "ada".into() }).await.expect("the account opens");
}

fn key(name: &str) -> CommandOptions {
    CommandOptions::new().idempotency_key(name)
}

/// How many stored events of `stream` carry idempotency key `key`.
async fn events_with_key(backend: &DynBackend, stream: &str, key: &str) -> usize {
    let stored = backend.read_stream(stream, 0, 10_000).await.unwrap();
    stored.iter().filter(|e| e.metadata.headers.get(idempotency::HEADER_KEY).map(String::as_str) == Some(key)).count()
}

async fn balance(backend: &DynBackend, id: &str) -> u64 {
    let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(backend));
    typed.load_aggregate::<Account>(&format!("account-{id}")).await.unwrap().state.balance
}

/// The parts of an outcome a repeat must give back.
fn recorded(o: &Outcome) -> (EventId, &str, u64, u64, u64, u64) {
    (o.command_id, o.stream_id.as_str(), o.events, o.stream_version, o.first_position, o.last_position)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_key_answers_with_the_first_outcome_after_the_state_changed() {
    for target in targets("repeat").await {
        let backend = target.open().await;
        let (bus, decisions) = bank_bus(Arc::clone(&backend));
        open_account(&bus, "a").await;
        let first = bus.dispatch_with(Deposit { id: "a".into(), amount: 10 }, key("a-10")).await.unwrap();
        assert!(!first.replayed && first.events == 1, "{}", target.name);
        bus.dispatch(Deposit { id: "a".into(), amount: 5 }).await.unwrap();
        bus.dispatch(Withdraw { id: "a".into(), amount: 3 }).await.unwrap();

        let before = decisions.count();
        for _ in 0..3 {
            let again = bus.dispatch_with(Deposit { id: "a".into(), amount: 10 }, key("a-10")).await.unwrap();
            assert!(again.replayed, "{}", target.name);
            assert_eq!(recorded(&again), recorded(&first), "{}: the first outcome, not the state now", target.name);
        }
        // The payload is not compared: the key answers for the command it first named.
        let other_fields = bus.dispatch_with(Deposit { id: "a".into(), amount: 99 }, key("a-10")).await.unwrap();
        assert_eq!(recorded(&other_fields), recorded(&first), "{}", target.name);
        assert_eq!(decisions.count(), before, "{}: no repeat ran the handler", target.name);
        assert_eq!(backend.stream_version("account-a").await.unwrap(), 4, "{}", target.name);
        assert_eq!(balance(&backend, "a").await, 12, "{}: the keyed deposit counted once", target.name);
        assert_eq!(events_with_key(&backend, "account-a", "a-10").await, 1, "{}", target.name);
        drop((bus, backend));
        target.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dispatches_with_one_key_from_several_buses_append_once() {
    for target in targets("concurrent").await {
        let backend = target.open().await;
        let buses: Vec<(CommandBus, Arc<Decisions>)> = (0..6).map(|_| bank_bus(Arc::clone(&backend))).collect();
        open_account(&buses[0].0, "c").await;
        for round in 0..4u64 {
            let name = format!("c-{round}");
            let tasks: Vec<_> = buses
                .iter()
                .map(|(bus, _)| {
                    let bus = bus.clone();
                    let options = key(&name);
                    tokio::spawn(
                        async move { bus.dispatch_with(Deposit { id: "c".into(), amount: 100 }, options).await },
                    )
                })
                .collect();
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.push(task.await.unwrap().unwrap_or_else(|e| panic!("{}: {e:?}", target.name)));
            }
            assert_eq!(outcomes.iter().filter(|o| !o.replayed).count(), 1, "{}: one dispatch appended", target.name);
            assert!(
                outcomes.iter().all(|o| recorded(o) == recorded(&outcomes[0])),
                "{}: every dispatch answers with the one outcome: {outcomes:?}",
                target.name
            );
            assert_eq!(events_with_key(&backend, "account-c", &name).await, 1, "{}: round {round}", target.name);
        }
        assert_eq!(backend.stream_version("account-c").await.unwrap(), 5, "{}", target.name);
        assert_eq!(balance(&backend, "c").await, 400, "{}", target.name);
        let decided: u64 = buses.iter().map(|(_, decisions)| decisions.count()).sum();
        assert!(decided >= 5, "{}: at least the open and one decision per round", target.name);
        drop((buses, backend));
        target.cleanup().await;
    }
}

/// A command that the winner's events make the handler refuse (opening an account twice): a
/// concurrent dispatch with the same key that loads the state after the winner appended must
/// answer with the winner's outcome, not with the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_repeat_that_the_winner_would_make_refused_answers_with_the_winners_outcome() {
    for target in targets("concurrent-refusal").await {
        let backend = target.open().await;
        let buses: Vec<(CommandBus, Arc<Decisions>)> = (0..4).map(|_| bank_bus(Arc::clone(&backend))).collect();
        for round in 0..40u64 {
            let (id, name) = (format!("r-{round}"), format!("open-r-{round}"));
            let tasks: Vec<_> = buses
                .iter()
                .map(|(bus, _)| {
                    let (bus, options, id) = (bus.clone(), key(&name), id.clone());
                    tokio::spawn(async move { bus.dispatch_with(Open { id, owner: "ada".into() }, options).await })
                })
                .collect();
            let mut outcomes = Vec::new();
            for task in tasks {
                let outcome = task.await.unwrap();
                outcomes
                    .push(outcome.unwrap_or_else(|e| panic!("{} round {round}: a repeat refused: {e:?}", target.name)));
            }
            assert_eq!(outcomes.iter().filter(|o| !o.replayed).count(), 1, "{}: one dispatch appended", target.name);
            assert!(outcomes.iter().all(|o| recorded(o) == recorded(&outcomes[0])), "{}", target.name);
        }
        drop((buses, backend));
        target.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_used_by_another_command_is_refused_and_nothing_runs() {
    for target in targets("reused").await {
        let backend = target.open().await;
        let (bus, decisions) = bank_bus(Arc::clone(&backend));
        open_account(&bus, "u").await;
        open_account(&bus, "v").await;
        bus.dispatch_with(Deposit { id: "u".into(), amount: 10 }, key("u-1")).await.unwrap();
        let before = (decisions.count(), backend.head_position().await.unwrap());

        let other_name = bus.dispatch_with(Withdraw { id: "u".into(), amount: 1 }, key("u-1")).await.unwrap_err();
        let DispatchError::DuplicateCommand { key: used, first } = &other_name else {
            panic!("{}: {other_name:?}", target.name)
        };
        assert_eq!((used.as_str(), first.as_str()), ("u-1", "Deposit on account-u"), "{}", target.name);
        assert_eq!((other_name.code(), other_name.http_status()), ("duplicate_command", 409));
        let other_stream = bus.dispatch_with(Deposit { id: "v".into(), amount: 10 }, key("u-1")).await.unwrap_err();
        assert!(matches!(other_stream, DispatchError::DuplicateCommand { .. }), "{}: {other_stream:?}", target.name);
        let by_name =
            bus.dispatch_json("Close", serde_json::json!({"id": "u"}), key("u-1")).await.expect_err("reused by name");
        assert_eq!(by_name.code(), "duplicate_command", "{}", target.name);

        assert_eq!((decisions.count(), backend.head_position().await.unwrap()), before, "{}", target.name);
        assert_eq!(balance(&backend, "v").await, 0, "{}", target.name);
        drop((bus, backend));
        target.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_produced_no_events_is_remembered() {
    for target in targets("zero").await {
        let backend = target.open().await;
        let (bus, decisions) = bank_bus(Arc::clone(&backend));
        open_account(&bus, "z").await;
        bus.dispatch(Close { id: "z".into() }).await.unwrap();
        let first = bus.dispatch_with(Close { id: "z".into() }, key("z-close")).await.unwrap();
        assert_eq!((first.events, first.replayed, first.stream_version), (0, false, 2), "{}", target.name);
        let before = decisions.count();
        let again = bus.dispatch_with(Close { id: "z".into() }, key("z-close")).await.unwrap();
        assert!(again.replayed, "{}", target.name);
        assert_eq!(recorded(&again), recorded(&first), "{}", target.name);
        assert_eq!(decisions.count(), before, "{}: answered from the marker", target.name);
        assert_eq!(events_with_key(&backend, idempotency::RECORD_STREAM, "z-close").await, 1, "{}", target.name);
        assert_eq!(backend.stream_version("account-z").await.unwrap(), 2, "{}", target.name);
        let reused = bus.dispatch_with(Deposit { id: "z".into(), amount: 1 }, key("z-close")).await.unwrap_err();
        assert!(matches!(reused, DispatchError::DuplicateCommand { .. }), "{}: {reused:?}", target.name);

        // Concurrent zero-event dispatches with one key leave one marker.
        let buses: Vec<CommandBus> = (0..4).map(|_| bank_bus(Arc::clone(&backend)).0).collect();
        let tasks: Vec<_> = buses
            .into_iter()
            .map(|bus| tokio::spawn(async move { bus.dispatch_with(Close { id: "z".into() }, key("z-again")).await }))
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap().unwrap_or_else(|e| panic!("{}: {e:?}", target.name)));
        }
        assert!(outcomes.iter().all(|o| o.events == 0 && recorded(o) == recorded(&outcomes[0])), "{outcomes:?}");
        assert_eq!(events_with_key(&backend, idempotency::RECORD_STREAM, "z-again").await, 1, "{}", target.name);
        drop((bus, backend));
        target.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_answers_a_repeat_without_running_the_handler() {
    for target in targets("reopen").await.into_iter().filter(|t| t.durable) {
        let (deposited, closed) = {
            let backend = target.open().await;
            let (bus, _) = bank_bus(Arc::clone(&backend));
            open_account(&bus, "r").await;
            let deposited = bus.dispatch_with(Deposit { id: "r".into(), amount: 7 }, key("r-7")).await.unwrap();
            bus.dispatch(Close { id: "r".into() }).await.unwrap();
            let closed = bus.dispatch_with(Close { id: "r".into() }, key("r-close")).await.unwrap();
            assert_eq!(closed.events, 0);
            (deposited, closed)
        };
        let backend = target.open().await;
        let (bus, decisions) = bank_bus(Arc::clone(&backend));
        let again = bus.dispatch_with(Deposit { id: "r".into(), amount: 7 }, key("r-7")).await.unwrap();
        assert!(again.replayed, "{}", target.name);
        assert_eq!(recorded(&again), recorded(&deposited), "{}", target.name);
        let closed_again = bus.dispatch_with(Close { id: "r".into() }, key("r-close")).await.unwrap();
        assert!(closed_again.replayed, "{}", target.name);
        assert_eq!(recorded(&closed_again), recorded(&closed), "{}", target.name);
        assert_eq!(decisions.count(), 0, "{}: nothing was decided after reopening", target.name);
        assert_eq!(backend.stream_version("account-r").await.unwrap(), 3, "{}", target.name);
        assert_eq!(balance(&backend, "r").await, 7, "{}", target.name);
        let reused = bus.dispatch_with(Withdraw { id: "r".into(), amount: 7 }, key("r-7")).await.unwrap_err();
        assert!(matches!(reused, DispatchError::DuplicateCommand { .. }), "{}: {reused:?}", target.name);
        drop((bus, backend));
        target.cleanup().await;
    }
}
