//! The command bus: decisions from state, typed refusals, checked registration, conflict
//! retries, durable idempotency keys, shared state and metadata, on memory and AllSource.

#[path = "support/bank.rs"]
mod bank;

use std::sync::Arc;

use allframe::cqrs::*;
use bank::*;

async fn open_account(bus: &CommandBus, id: &str) {
    bus.dispatch(Open { id: id.into(), owner: "ada".into() }).await.expect("the account opens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_is_decided_from_the_current_state_and_appended() {
    for store in stores() {
        let (bus, _) = bank_bus(Arc::clone(&store.backend));
        let opened = bus.dispatch(Open { id: "1".into(), owner: "ada".into() }).await.unwrap();
        assert_eq!((opened.command, opened.events, opened.stream_version), ("Open", 1, 1), "{}", store.name);
        let deposited = bus.dispatch(Deposit { id: "1".into(), amount: 70 }).await.unwrap();
        let withdrawn = bus.dispatch(Withdraw { id: "1".into(), amount: 30 }).await.unwrap();
        assert_eq!((deposited.stream_version, withdrawn.stream_version), (2, 3), "{}", store.name);
        assert!(withdrawn.first_position > deposited.last_position, "{}: positions grow", store.name);
        assert!(!withdrawn.replayed && withdrawn.conflict_retries == 0);

        let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&store.backend));
        let loaded = typed.load_aggregate::<Account>("account-1").await.unwrap();
        assert_eq!((loaded.state.balance, loaded.version), (40, 3), "{}", store.name);
        let events = typed.read_stream("account-1", 0, 10).await.unwrap();
        let types: Vec<&str> = events.iter().map(|e| e.event.event_type()).collect();
        assert_eq!(types, ["AccountOpened", "MoneyDeposited", "Withdrawn"], "{}", store.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_the_handlers_own_type_and_writes_nothing() {
    for store in stores() {
        let (bus, _) = bank_bus(Arc::clone(&store.backend));
        let refused = bus.dispatch(Deposit { id: "9".into(), amount: 5 }).await.unwrap_err();
        assert!(matches!(refused, DispatchError::Rejected { error: BankError::NotOpen, .. }), "{refused:?}");
        assert_eq!((refused.code(), refused.http_status()), ("not_open", 404));

        open_account(&bus, "9").await;
        let refused = bus.dispatch(Withdraw { id: "9".into(), amount: 5 }).await.unwrap_err();
        let DispatchError::Rejected { command, error } = &refused else { panic!("{refused:?}") };
        assert_eq!((*command, error), ("WithdrawMoney", &BankError::InsufficientFunds { balance: 0, requested: 5 }));
        let json = serde_json::to_value(&refused).unwrap();
        assert_eq!(json["code"], "insufficient_funds");
        assert_eq!(json["status"], 422);
        assert_eq!(json["details"]["kind"], "insufficient_funds");
        assert_eq!(json["details"]["requested"], 5);
        assert_eq!(
            store.backend.stream_version("account-9").await.unwrap(),
            1,
            "{}: refusals write nothing",
            store.name
        );
    }
}

#[tokio::test]
async fn registration_mistakes_are_typed_errors_at_start_up_or_dispatch() {
    let backend: DynBackend = Arc::new(InMemoryBackend::new());
    let twice = CommandBus::builder(Arc::clone(&backend))
        .shared_state(Arc::new(Decisions::default()))
        .aggregate::<Deposit, _>(DepositHandler)
        .aggregate::<Deposit, _>(decide(|_: &Account, _: &Deposit, _| Ok(Vec::new())))
        .build();
    assert!(matches!(twice, Err(RegistrationError::DuplicateHandler { command: "Deposit", .. })), "{twice:?}");

    let missing_state = CommandBus::builder(Arc::clone(&backend)).aggregate::<Deposit, _>(DepositHandler).build();
    assert!(
        matches!(missing_state, Err(RegistrationError::MissingState { command: "Deposit", type_name }) if type_name.ends_with("Decisions")),
        "{missing_state:?}"
    );

    let only_open = CommandBus::builder(Arc::clone(&backend))
        .shared_state(Arc::new(Decisions::default()))
        .aggregate::<Open, _>(OpenHandler);
    let bus = only_open.build().unwrap();
    let unhandled = bus.dispatch(Close { id: "1".into() }).await.unwrap_err();
    assert!(matches!(unhandled, DispatchError::NoHandler { command: "Close" }), "{unhandled:?}");
    assert_eq!((unhandled.code(), unhandled.http_status()), ("no_handler", 500));
    let unknown = bus.dispatch_json("Transfer", serde_json::json!({}), CommandOptions::new()).await.unwrap_err();
    assert!(matches!(unknown, DispatchError::UnknownCommand { ref name } if name == "Transfer"), "{unknown:?}");
    assert_eq!(bus.commands(), ["Open"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_on_one_aggregate_are_retried_until_each_lands() {
    for store in stores() {
        let (bus, decisions) = bank_bus_with(Arc::clone(&store.backend), |b| b.conflict_retries(64));
        open_account(&bus, "c").await;
        let tasks: Vec<_> = (0..16u64)
            .map(|n| {
                let bus = bus.clone();
                tokio::spawn(async move { bus.dispatch(Deposit { id: "c".into(), amount: n + 1 }).await })
            })
            .collect();
        let mut retries = 0;
        for task in tasks {
            retries += task.await.unwrap().expect("every deposit lands").conflict_retries;
        }
        let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&store.backend));
        let account = typed.load_aggregate::<Account>("account-c").await.unwrap();
        assert_eq!((account.state.balance, account.version), ((1..=16).sum::<u64>(), 17), "{}", store.name);
        assert_eq!(decisions.count(), 1 + 16 + u64::from(retries), "{}: one decision per attempt", store.name);

        let (strict, _) = bank_bus_with(Arc::clone(&store.backend), |b| b.conflict_retries(0));
        let racing: Vec<_> = (0..8)
            .map(|_| {
                let strict = strict.clone();
                tokio::spawn(async move { strict.dispatch(Deposit { id: "c".into(), amount: 1 }).await })
            })
            .collect();
        let mut lost = 0;
        for task in racing {
            match task.await.unwrap() {
                Ok(_) => {}
                Err(DispatchError::Conflict { attempts: 1, ref stream, .. }) if stream == "account-c" => lost += 1,
                Err(other) => panic!("{}: {other:?}", store.name),
            }
        }
        let version = store.backend.stream_version("account-c").await.unwrap();
        assert_eq!(version, 17 + 8 - lost, "{}: every lost race wrote nothing", store.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_answers_with_the_first_outcome() {
    for store in stores() {
        let (bus, decisions) = bank_bus(Arc::clone(&store.backend));
        open_account(&bus, "k").await;
        let key = CommandOptions::new().idempotency_key("deposit-k-1");
        let first = bus.dispatch_with(Deposit { id: "k".into(), amount: 10 }, key.clone()).await.unwrap();
        bus.dispatch(Deposit { id: "k".into(), amount: 5 }).await.unwrap();
        let before = decisions.count();
        let again = bus.dispatch_with(Deposit { id: "k".into(), amount: 10 }, key.clone()).await.unwrap();
        assert!(again.replayed, "{}", store.name);
        assert_eq!(decisions.count(), before, "{}: the handler did not run again", store.name);
        assert_eq!(
            (again.command_id, again.stream_version, again.first_position, again.events),
            (first.command_id, first.stream_version, first.first_position, 1),
            "{}: the first outcome, though the state changed since",
            store.name
        );
        let reused = bus.dispatch_with(Withdraw { id: "k".into(), amount: 1 }, key).await.unwrap_err();
        assert!(matches!(reused, DispatchError::DuplicateCommand { .. }), "{}: {reused:?}", store.name);
        assert_eq!(reused.code(), "duplicate_command");

        // Concurrent dispatches with one key: the handler's events land once.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let bus = bus.clone();
                let options = CommandOptions::new().idempotency_key("deposit-k-2");
                tokio::spawn(async move { bus.dispatch_with(Deposit { id: "k".into(), amount: 100 }, options).await })
            })
            .collect();
        let outcomes: Vec<Outcome> =
            futures_util::future::join_all(tasks).await.into_iter().map(|t| t.unwrap().unwrap()).collect();
        assert_eq!(outcomes.iter().filter(|o| !o.replayed).count(), 1, "{}: one dispatch ran", store.name);
        assert!(outcomes.iter().all(|o| o.first_position == outcomes[0].first_position));
        let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&store.backend));
        let account = typed.load_aggregate::<Account>("account-k").await.unwrap();
        assert_eq!(account.state.balance, 115, "{}: 10 + 5 + 100, each once", store.name);

        // A command that produces no events is remembered too.
        bus.dispatch(Close { id: "k".into() }).await.unwrap();
        let closing = CommandOptions::new().idempotency_key("close-k");
        let nothing = bus.dispatch_with(Close { id: "k".into() }, closing.clone()).await.unwrap();
        assert_eq!((nothing.events, nothing.replayed), (0, false));
        let nothing_again = bus.dispatch_with(Close { id: "k".into() }, closing).await.unwrap();
        assert_eq!(
            (nothing_again.events, nothing_again.replayed, nothing_again.command_id),
            (0, true, nothing.command_id)
        );
        let all = typed.get_all_events().await.expect("typed readers skip the library's own marker");
        assert_eq!(all.len(), 5, "{}: opened, three deposits, closed", store.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_survives_a_restart_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let backend: DynBackend = Arc::new(allframe::AllSourceBackend::open(dir.path()).unwrap());
        let (bus, _) = bank_bus(backend);
        open_account(&bus, "r").await;
        bus.dispatch_with(Deposit { id: "r".into(), amount: 7 }, CommandOptions::new().idempotency_key("r-7"))
            .await
            .unwrap()
    };
    let backend: DynBackend = Arc::new(allframe::AllSourceBackend::open(dir.path()).unwrap());
    let (bus, decisions) = bank_bus(Arc::clone(&backend));
    let again = bus
        .dispatch_with(Deposit { id: "r".into(), amount: 7 }, CommandOptions::new().idempotency_key("r-7"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!((again.command_id, again.first_position), (first.command_id, first.first_position));
    assert_eq!(decisions.count(), 0, "nothing was decided after the restart");
    assert_eq!(backend.stream_version("account-r").await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_commands_ids_and_headers() {
    for store in stores() {
        let (bus, _) = bank_bus(Arc::clone(&store.backend));
        open_account(&bus, "m").await;
        let command_id = EventId::new();
        let correlation = EventId::new();
        let options = CommandOptions::new().command_id(command_id).correlation_id(correlation).header("user", "ada");
        bus.dispatch_with(Deposit { id: "m".into(), amount: 1 }, options).await.unwrap();
        let stored = store.backend.read_stream("account-m", 1, 1).await.unwrap().remove(0);
        assert_eq!(stored.metadata.causation_id, Some(command_id), "{}", store.name);
        assert_eq!(stored.metadata.correlation_id, Some(correlation), "{}", store.name);
        assert_eq!(stored.metadata.headers.get("user").map(String::as_str), Some("ada"));
        assert_eq!(stored.metadata.headers.get("teller").map(String::as_str), Some("handler"), "added by the handler");
    }
}
