//! The registry's behaviour on the memory backend: catch-up then live, read-your-writes,
//! failure policies (including panics and events that do not decode), dead letters, pause,
//! rebuilds (in place and beside, under a live write load), resuming from a checkpoint, one
//! runner per projection, and bad input.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allframe_backend_memory::{EventStore, InMemoryBackend, InMemoryEventStore};
use allframe_cqrs_core::{BoxError, Envelope, Event, EventStoreBackend, ExpectedVersion, NewEvent};
use allframe_cqrs_projections::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Bank {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}

impl Event for Bank {}

const WAIT: Duration = Duration::from_secs(10);

/// Balances by account, and how many events built them.
#[derive(Clone, Debug, Default, PartialEq)]
struct Balances {
    by_account: BTreeMap<String, i64>,
    events: u64,
}

impl Balances {
    fn add(&mut self, event: &Envelope<Bank>) {
        let delta = match event.event {
            Bank::Deposited { amount } => amount as i64,
            Bank::Withdrawn { amount } => -(amount as i64),
            Bank::Opened { .. } => 0,
        };
        *self.by_account.entry(event.stream_id.as_str().to_owned()).or_default() += delta;
        self.events += 1;
    }
}

impl ReadModel<Bank> for Balances {
    const NAME: &'static str = "balances";
    const EVENTS: &'static [&'static str] = &["Deposited", "Withdrawn"];

    fn apply(&mut self, event: &Envelope<Bank>) -> Result<(), BoxError> {
        self.add(event);
        Ok(())
    }
}

/// What a fresh replay of the whole log gives.
async fn replayed(store: &EventStore<Bank>) -> Balances {
    let mut fresh = Balances::default();
    Replay::new(store)
        .event_types(Balances::EVENTS.iter().copied())
        .run(
            |envelope| {
                fresh.add(&envelope);
                Ok(())
            },
            |_| {},
        )
        .await
        .unwrap();
    fresh
}

async fn deposit(store: &EventStore<Bank>, account: &str, amount: u64) -> u64 {
    store.append(account, vec![Bank::Deposited { amount }]).await.unwrap().last_position
}

#[tokio::test]
async fn a_projection_added_after_events_exist_catches_up_then_follows_live_appends() {
    let store: EventStore<Bank> = EventStore::new();
    for i in 0..1_500u64 {
        store
            .append(
                &format!("account-{}", i % 7),
                vec![Bank::Opened { owner: "x".into() }, Bank::Deposited { amount: i }],
            )
            .await
            .unwrap();
    }
    let registry = ProjectionRegistry::new(store.clone());
    let balances = registry.register(Balances::default).unwrap();
    registry.start_all().await.unwrap();
    let head = store.backend().head_position().await.unwrap();
    let model = balances.read_at_least(head, WAIT).await.unwrap();
    assert_eq!(model.events, 1_500, "each handled event once");
    drop(model);

    let written = deposit(&store, "account-1", 1_000_000).await;
    let model = balances.read_at_least(written, WAIT).await.unwrap();
    assert_eq!(*model, replayed(&store).await);
    drop(model);

    let status = registry.status("balances").await.unwrap();
    assert_eq!(status.state, ProjectionState::Running);
    assert_eq!((status.position, status.head, status.lag_events), (written, written, 0));
    assert_eq!(status.applied, 1_501);
    registry.stop_all().await;
    assert_eq!(registry.status("balances").await.unwrap().state, ProjectionState::Stopped);
}

#[tokio::test]
async fn read_at_least_times_out_with_a_typed_error_when_the_projection_is_not_there() {
    let store: EventStore<Bank> = EventStore::new();
    let registry = ProjectionRegistry::new(store.clone());
    let balances = registry.register(Balances::default).unwrap();
    let written = deposit(&store, "a", 5).await;
    // Not started: it cannot reach the position.
    let error = balances.read_at_least(written, Duration::from_millis(50)).await.unwrap_err();
    assert!(matches!(error, ProjectionError::Timeout { position: 0, wanted, .. } if wanted == written), "{error:?}");
    registry.start("balances").await.unwrap();
    assert_eq!(balances.read_at_least(written, WAIT).await.unwrap().events, 1);
}

#[tokio::test]
async fn bad_input_is_a_typed_error_and_changes_nothing() {
    let store: EventStore<Bank> = EventStore::new();
    let registry = ProjectionRegistry::new(store.clone());
    registry.register(Balances::default).unwrap();
    let twice = registry.register(Balances::default).unwrap_err();
    assert!(matches!(&twice, ProjectionError::DuplicateName { name } if name == "balances"), "{twice:?}");
    assert_eq!(registry.names(), ["balances"]);
    for result in [registry.rebuild("nope").await, registry.rebuild_beside("nope").await, registry.start("nope").await]
    {
        assert!(matches!(&result, Err(ProjectionError::UnknownProjection { name }) if name == "nope"), "{result:?}");
    }
    assert!(matches!(registry.dead_letters("nope").await, Err(ProjectionError::UnknownProjection { .. })));
    assert_eq!(store.backend().head_position().await.unwrap(), 0, "nothing was written");
}

#[tokio::test]
async fn one_runner_per_projection_and_store_even_from_two_registries() {
    let store: EventStore<Bank> = EventStore::new();
    let first = ProjectionRegistry::new(store.clone());
    let second = ProjectionRegistry::new(store.clone());
    first.register(Balances::default).unwrap();
    second.register(Balances::default).unwrap();
    first.start_all().await.unwrap();
    let again = first.start("balances").await.unwrap_err();
    assert!(matches!(again, ProjectionError::AlreadyRunning { .. }), "{again:?}");
    let other = second.start_all().await.unwrap_err();
    assert!(matches!(other, ProjectionError::AlreadyRunning { .. }), "{other:?}");
    // Once the first stops, the second may take over.
    first.stop_all().await;
    second.start_all().await.unwrap();
    // Another store is another projection.
    let elsewhere = ProjectionRegistry::new(EventStore::<Bank>::new());
    elsewhere.register(Balances::default).unwrap();
    elsewhere.start_all().await.unwrap();
}

#[tokio::test]
async fn pause_holds_the_position_and_resume_goes_on() {
    let store: EventStore<Bank> = EventStore::new();
    let registry = ProjectionRegistry::new(store.clone());
    let balances = registry.register(Balances::default).unwrap();
    registry.start_all().await.unwrap();
    let first = deposit(&store, "a", 1).await;
    balances.read_at_least(first, WAIT).await.unwrap();
    registry.pause("balances").unwrap();
    wait_for_state(&registry, ProjectionState::Paused).await;
    let second = deposit(&store, "a", 2).await;
    assert!(balances.read_at_least(second, Duration::from_millis(200)).await.is_err(), "paused");
    assert_eq!(registry.status("balances").await.unwrap().lag_events, 1);
    registry.resume("balances").unwrap();
    assert_eq!(balances.read_at_least(second, WAIT).await.unwrap().by_account["a"], 3);
}

async fn wait_for_state<E: Event, B: EventStoreBackend + ?Sized + 'static>(
    registry: &ProjectionRegistry<E, B>,
    state: ProjectionState,
) {
    for _ in 0..1_000 {
        if registry.status("balances").await.unwrap().state == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("projection never reached {state:?}: {:?}", registry.status("balances").await.unwrap());
}

/// A read model that fails on chosen amounts: by error, by panic, or a number of times.
#[derive(Debug, Default)]
struct Picky {
    seen: Vec<u64>,
    rules: Arc<Rules>,
}

#[derive(Debug, Default)]
struct Rules {
    /// Amounts refused with an error, as long as they are listed.
    refuse: Mutex<Vec<u64>>,
    /// Amounts the handler panics on.
    panic_on: Mutex<Vec<u64>>,
    /// Failures left before the amount 7 applies.
    flaky_left: AtomicU64,
    attempts: AtomicU64,
}

impl ReadModel<Bank> for Picky {
    const NAME: &'static str = "picky";

    fn apply(&mut self, event: &Envelope<Bank>) -> Result<(), BoxError> {
        let Bank::Deposited { amount } = event.event else { return Ok(()) };
        self.rules.attempts.fetch_add(1, Ordering::SeqCst);
        if self.rules.panic_on.lock().unwrap().contains(&amount) {
            panic!("cannot take {amount}");
        }
        if self.rules.refuse.lock().unwrap().contains(&amount) {
            return Err(format!("refused {amount}").into());
        }
        if amount == 7 && self.rules.flaky_left.load(Ordering::SeqCst) > 0 {
            self.rules.flaky_left.fetch_sub(1, Ordering::SeqCst);
            return Err("not yet".into());
        }
        self.seen.push(amount);
        Ok(())
    }
}

fn picky(
    registry: &ProjectionRegistry<Bank, InMemoryBackend>,
    rules: &Arc<Rules>,
    policy: FailurePolicy,
) -> ReadModelHandle<Picky> {
    let rules = Arc::clone(rules);
    registry.register_with_policy(move || Picky { seen: Vec::new(), rules: Arc::clone(&rules) }, policy).unwrap()
}

/// Appends an event named `Deposited` whose payload is not one.
async fn poison(store: &EventStore<Bank>) -> u64 {
    let bad = NewEvent::new("Deposited", b"{not json".to_vec());
    store.backend().append("poison", ExpectedVersion::Any, vec![bad]).await.unwrap().last_position
}

#[tokio::test]
async fn under_stop_a_failing_event_stops_the_projection_before_it_and_others_go_on() {
    let store: EventStore<Bank> = EventStore::new();
    let registry = ProjectionRegistry::new(store.clone());
    let rules = Arc::new(Rules::default());
    rules.refuse.lock().unwrap().push(3);
    let handle = picky(&registry, &rules, FailurePolicy::stop());
    let balances = registry.register(Balances::default).unwrap();
    registry.start_all().await.unwrap();
    deposit(&store, "a", 1).await;
    let bad = deposit(&store, "a", 3).await;
    let after = deposit(&store, "a", 4).await;

    let failed = handle.read_at_least(after, WAIT).await.unwrap_err();
    assert!(
        matches!(&failed, ProjectionError::Failed { position, reason, .. } if *position == bad && reason == "refused 3"),
        "{failed:?}"
    );
    let status = registry.status("picky").await.unwrap();
    assert_eq!(status.state, ProjectionState::Failed { position: bad, reason: "refused 3".into() });
    assert_eq!(status.position, bad - 1, "it stopped before the event");
    assert_eq!(handle.read().await.seen, [1]);
    // The other projection is not affected.
    assert_eq!(balances.read_at_least(after, WAIT).await.unwrap().by_account["a"], 8);

    // Fixed: started again, it goes on from the failed event.
    rules.refuse.lock().unwrap().clear();
    registry.start("picky").await.unwrap();
    assert_eq!(handle.read_at_least(after, WAIT).await.unwrap().seen, [1, 3, 4]);
}

#[tokio::test]
async fn retries_with_backoff_apply_a_flaky_event_once() {
    let store: EventStore<Bank> = EventStore::new();
    let registry = ProjectionRegistry::new(store.clone());
    let rules = Arc::new(Rules::default());
    rules.flaky_left.store(2, Ordering::SeqCst);
    let handle = picky(&registry, &rules, FailurePolicy::stop().with_retries(3, Duration::from_millis(5)));
    registry.start_all().await.unwrap();
    deposit(&store, "a", 7).await;
    let last = deposit(&store, "a", 8).await;
    assert_eq!(handle.read_at_least(last, WAIT).await.unwrap().seen, [7, 8]);
    assert_eq!(rules.attempts.load(Ordering::SeqCst), 4, "two failures, one success, then 8");

    // Spent retries end as the policy says.
    rules.flaky_left.store(10, Ordering::SeqCst);
    let bad = deposit(&store, "a", 7).await;
    let failed = handle.read_at_least(bad, WAIT).await.unwrap_err();
    assert!(matches!(failed, ProjectionError::Failed { position, .. } if position == bad), "{failed:?}");
    assert_eq!(rules.flaky_left.load(Ordering::SeqCst), 6, "tried once and retried three times");
}

#[tokio::test]
async fn under_dead_letter_poison_and_panics_are_recorded_durably_and_the_projection_goes_on() {
    let store: EventStore<Bank> = EventStore::new();
    let registry = ProjectionRegistry::new(store.clone());
    let rules = Arc::new(Rules::default());
    rules.refuse.lock().unwrap().push(3);
    rules.panic_on.lock().unwrap().push(5);
    let handle = picky(&registry, &rules, FailurePolicy::dead_letter().with_retries(1, Duration::from_millis(1)));
    registry.start_all().await.unwrap();
    deposit(&store, "a", 1).await;
    let refused = deposit(&store, "a", 3).await;
    let undecodable = poison(&store).await;
    let panicked = deposit(&store, "a", 5).await;
    let last = deposit(&store, "a", 6).await;
    assert_eq!(handle.read_at_least(last, WAIT).await.unwrap().seen, [1, 6]);

    let letters = registry.dead_letters("picky").await.unwrap();
    let summary: Vec<_> =
        letters.iter().map(|letter| (letter.position, letter.attempts, letter.reason.as_str())).collect();
    assert_eq!(summary[0], (refused, 2, "refused 3"));
    assert_eq!((summary[1].0, summary[1].1), (undecodable, 1), "a decoding failure is not retried");
    assert!(summary[1].2.contains("decode"), "{}", summary[1].2);
    assert_eq!(summary[2], (panicked, 2, "the handler panicked: cannot take 5"));
    assert_eq!(letters[0].stream_id, "a");
    assert_eq!(letters[0].event_type, "Deposited");
    assert_eq!(registry.status("picky").await.unwrap().dead_letters, 3);

    // Stored in the log: a second registry on the same store sees them.
    let other = ProjectionRegistry::new(store.clone());
    picky(&other, &rules, FailurePolicy::dead_letter());
    assert_eq!(other.dead_letters("picky").await.unwrap(), letters);

    // After a fix, a retry resolves what now applies; the poison stays open.
    rules.refuse.lock().unwrap().clear();
    rules.panic_on.lock().unwrap().clear();
    let report = registry.retry_dead_letters("picky").await.unwrap();
    assert_eq!(report.resolved, 2);
    assert_eq!(report.still_failing.iter().map(|failing| failing.0).collect::<Vec<_>>(), [undecodable]);
    assert_eq!(handle.read().await.seen, [1, 6, 3, 5]);
    let open: Vec<_> = registry.dead_letters("picky").await.unwrap().iter().map(|letter| letter.position).collect();
    assert_eq!(open, [undecodable]);
    assert_eq!(registry.status("picky").await.unwrap().dead_letters, 1);
}

#[tokio::test]
async fn a_replay_from_scratch_does_not_record_an_open_dead_letter_twice() {
    let store: EventStore<Bank> = EventStore::new();
    let rules = Arc::new(Rules::default());
    let bad = poison(&store).await;
    let last = deposit(&store, "a", 1).await;
    for _ in 0..2 {
        let registry = ProjectionRegistry::new(store.clone());
        let handle = picky(&registry, &rules, FailurePolicy::dead_letter());
        registry.start_all().await.unwrap();
        assert_eq!(handle.read_at_least(last, WAIT).await.unwrap().seen, [1]);
        registry.stop_all().await;
    }
    let registry = ProjectionRegistry::new(store.clone());
    picky(&registry, &rules, FailurePolicy::dead_letter());
    let letters = registry.dead_letters("picky").await.unwrap();
    assert_eq!(letters.iter().map(|letter| letter.position).collect::<Vec<_>>(), [bad]);
    let stream = allframe_cqrs_projections::dead_letter::stream("picky");
    assert_eq!(store.backend().stream_version(&stream).await.unwrap(), 1, "one record");
}

#[tokio::test]
async fn a_rebuild_in_place_starts_from_a_fresh_model_and_applies_each_event_once() {
    let store: EventStore<Bank> = EventStore::new();
    let registry = ProjectionRegistry::new(store.clone());
    let balances = registry.register(Balances::default).unwrap();
    registry.start_all().await.unwrap();
    let mut last = 0;
    for i in 0..300 {
        last = deposit(&store, &format!("a{}", i % 3), i).await;
    }
    balances.read_at_least(last, WAIT).await.unwrap();
    registry.rebuild("balances").await.unwrap();
    let model = balances.read_at_least(last, WAIT).await.unwrap();
    assert_eq!(model.events, 300, "not applied on top of the old state");
    assert_eq!(*model, replayed(&store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_beside_under_live_writes_never_shows_a_half_built_model_and_ends_equal_to_a_replay() {
    let store: EventStore<Bank> = EventStore::new();
    for i in 0..2_000u64 {
        store.append(&format!("a{}", i % 10), vec![Bank::Deposited { amount: 1 }; 100]).await.unwrap();
    }
    let registry = ProjectionRegistry::new(store.clone());
    let balances = registry.register(Balances::default).unwrap();
    registry.start_all().await.unwrap();
    let head = store.backend().head_position().await.unwrap();
    balances.read_at_least(head, WAIT).await.unwrap();

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for i in 0..2_000u64 {
                last = deposit(&store, &format!("a{}", i % 10), 1).await;
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            last
        })
    };
    let rebuilt = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (balances, registry, rebuilt) = (balances.clone(), registry.clone(), Arc::clone(&rebuilt));
        tokio::spawn(async move {
            // Every event is a deposit of 1: a whole model has `events` at least as high as
            // any earlier read, and the 200,000 it had before; a model being rebuilt from 0
            // would show fewer.
            let mut highest = 200_000;
            let mut reads_during_rebuild = 0u64;
            while !rebuilt.load(Ordering::SeqCst) {
                let rebuilding = registry.status("balances").await.unwrap().rebuild_position.is_some();
                let model = balances.read().await;
                assert!(model.events >= highest, "a query saw {} events after seeing {highest}", model.events);
                assert_eq!(model.by_account.values().sum::<i64>() as u64, model.events);
                highest = model.events;
                drop(model);
                reads_during_rebuild += u64::from(rebuilding);
                tokio::task::yield_now().await;
            }
            reads_during_rebuild
        })
    };
    registry.rebuild_beside("balances").await.unwrap();
    rebuilt.store(true, Ordering::SeqCst);
    let last = writer.await.unwrap();
    assert!(reader.await.unwrap() > 0, "queries ran while the rebuild did");
    let model = balances.read_at_least(last, WAIT).await.unwrap();
    assert_eq!(model.events, 202_000);
    assert_eq!(*model, replayed(&store).await);
    assert_eq!(registry.status("balances").await.unwrap().rebuild_position, None);
}

/// A read model kept outside the process's registry state (here: behind an `Arc`, standing
/// for a database), which resumes from its checkpoint.
struct Ledger {
    rows: Arc<Mutex<BTreeMap<u64, u64>>>,
    commits: Arc<AtomicU64>,
}

#[allframe_cqrs_core::async_trait]
impl ReadModel<Bank> for Ledger {
    const NAME: &'static str = "ledger";
    const RESUME: Resume = Resume::FromCheckpoint;

    fn apply(&mut self, event: &Envelope<Bank>) -> Result<(), BoxError> {
        if let Bank::Deposited { amount } = event.event {
            let previous = self.rows.lock().unwrap().insert(event.position, amount);
            assert!(previous.is_none(), "position {} applied twice", event.position);
        }
        Ok(())
    }

    async fn commit(&mut self, _position: u64) -> Result<(), BoxError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_projection_from_a_checkpoint_resumes_there_after_a_clean_stop() {
    let store: EventStore<Bank> = EventStore::new();
    let rows = Arc::new(Mutex::new(BTreeMap::new()));
    let commits = Arc::new(AtomicU64::new(0));
    let make = |rows: &Arc<Mutex<BTreeMap<u64, u64>>>| {
        let (rows, commits) = (Arc::clone(rows), Arc::clone(&commits));
        move || Ledger { rows: Arc::clone(&rows), commits: Arc::clone(&commits) }
    };
    let mut last = 0;
    for round in 0..3u64 {
        for i in 0..400 {
            last = deposit(&store, "a", round * 1000 + i).await;
        }
        let registry = ProjectionRegistry::new(store.clone());
        let ledger = registry.register(make(&rows)).unwrap();
        registry.start_all().await.unwrap();
        ledger.read_at_least(last, WAIT).await.unwrap();
        registry.stop_all().await;
        assert_eq!(store.backend().load_checkpoint("ledger@v1").await.unwrap(), Some(last));
    }
    assert_eq!(rows.lock().unwrap().len(), 1_200);
    assert!(commits.load(Ordering::SeqCst) >= 3, "the model is committed before each checkpoint");
}

#[tokio::test]
async fn the_replay_manager_filters_a_range_reports_progress_and_can_be_cancelled() {
    let store: EventStore<Bank> = EventStore::new();
    for i in 0..1_000u64 {
        store.append(&format!("s{}", i % 4), vec![Bank::Deposited { amount: i }]).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut reports = 0;
    let report = Replay::new(&store)
        .after(100)
        .through(199)
        .streams(["s1"])
        .page_size(7)
        .run(
            |envelope| {
                seen.push(envelope.position);
                Ok(())
            },
            |_| reports += 1,
        )
        .await
        .unwrap();
    assert_eq!(seen, (101..=199).filter(|position| (position - 1) % 4 == 1).collect::<Vec<_>>());
    assert_eq!((report.progress.read, report.progress.handled, report.progress.position), (99, 25, 199));
    assert!(!report.cancelled && reports >= 1);
    assert_eq!(report.progress.fraction(), 1.0);

    let token = CancelToken::new();
    let mut handled = 0;
    let report = Replay::new(&store)
        .page_size(10)
        .cancel_with(&token)
        .run(
            |_| {
                handled += 1;
                if handled == 25 {
                    token.cancel();
                }
                Ok(())
            },
            |_| {},
        )
        .await
        .unwrap();
    assert!(report.cancelled);
    assert_eq!(report.progress.read, 30, "stopped at the end of the page it was in");

    let failed = Replay::new(&store)
        .run(|envelope| if envelope.position == 10 { Err("no".into()) } else { Ok(()) }, |_| {})
        .await;
    assert!(matches!(failed, Err(ProjectionError::Failed { position: 10, .. })), "{failed:?}");
}

#[tokio::test]
async fn a_rate_limited_replay_keeps_under_its_rate() {
    let store: EventStore<Bank> = EventStore::new();
    for i in 0..60u64 {
        deposit(&store, "a", i).await;
    }
    let started = std::time::Instant::now();
    let report = Replay::new(&store).page_size(10).max_rate(300.0).run(|_| Ok(()), |_| {}).await.unwrap();
    assert_eq!(report.progress.read, 60);
    // 60 events at 300 per second take 200 ms at least (the last page's wait included).
    assert!(started.elapsed() >= Duration::from_millis(190), "{:?}", started.elapsed());
}
