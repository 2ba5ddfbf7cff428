//! Sagas across real crashes, on a durable AllSource store and on PostgreSQL: a child process (this test binary,
//! run again) runs an orchestrator over bank transfers (open two accounts and fund one, withdraw,
//! deposit, then a last step that fails for every third transfer so that those are undone), each
//! step pausing a little so that kills land between and inside steps; it is killed with SIGKILL
//! at a varied moment, several times. The parent then runs the orchestrator on the reopened store
//! until every transfer has finished, and checks that each ended as it should and that every
//! account's events count each command (and each compensation) exactly once.
//!
//! Another kills the child at each step boundary in turn (each action's start, after its intent
//! is recorded and before any effect, and its end, after its effects and before its result is
//! recorded, in both directions), on AllSource and on PostgreSQL: after each, a restarted
//! orchestrator ends the transfer as it should, each command counted once (and the test fails
//! when the keys change from one process to the next).
//!
//! A second test kills the child while a step hangs past its timeout: the deadline passes while
//! no process runs, and the next start times the step out and undoes it with the others. A third
//! runs two children on one PostgreSQL schema, each with the backend's leases: one runs the
//! sagas, the other stands by; the first is killed and the second finishes every transfer, each
//! command's effect counted once. A fourth kills a child running a choreography (payouts whose
//! reactions send two commands each and set a timer) six times: after a restart every payout
//! completes, its timer fired even when it came due while no process ran, and each command
//! counts once. Without a PostgreSQL server the PostgreSQL parts are skipped with a notice,
//! except under `CI=true`.

#[path = "support/bank.rs"]
mod bank;
#[path = "support/kill.rs"]
mod kill;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use allframe::backends::{self, Mode, OpenOptions};
use allframe::cqrs::*;
use allframe::postgres::PostgresBackend;
use bank::*;
use serde::{Deserialize, Serialize};

const CHILD_DIR: &str = "ALLFRAME_SAGA_KILL_DIR";
const CHILD_SCHEMA: &str = "ALLFRAME_SAGA_KILL_SCHEMA";
const ROUNDS: u32 = 6;
/// Transfers each child begins (with those earlier children left unfinished).
const BATCH: u32 = 4;
const TRANSFERS: u32 = ROUNDS * BATCH;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Transfer {
    n: u32,
}

impl Transfer {
    fn from(&self) -> String {
        format!("src-{}", self.n)
    }
    fn to(&self) -> String {
        format!("dst-{}", self.n)
    }
    /// Every third transfer is refused at its last step, and undone.
    fn refused(&self) -> bool {
        self.n.is_multiple_of(3)
    }
}

/// Records that this process ran `ctx`'s step (not idempotent on purpose: it counts runs).
async fn ran(ctx: &StepContext) {
    let name = std::env::var("ALLFRAME_SAGA_KILL_NAME").unwrap_or_default();
    let payload = serde_json::json!({ "by": name, "step": ctx.step() }).to_string();
    let event = allframe::NewEvent::new("Ran", payload);
    let stream = format!("ran-{}", ctx.saga_id());
    ctx.bus().backend().append(&stream, ExpectedVersion::Any, vec![event]).await.expect("recorded");
}

/// Where a child stops for the parent's kill, in the boundary test: `STEP:do|undo:in|out`, the
/// start of an action (its intent recorded, nothing done) or its end (everything done, the
/// result not recorded). The process that reaches it says so and waits to be killed.
async fn boundary(label: &str) {
    if std::env::var("ALLFRAME_SAGA_KILL_AT").is_ok_and(|at| at == label) {
        println!("AT {label}");
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// A pause of a few milliseconds inside a step, so that a kill often lands in one.
async fn pause(ctx: &StepContext) {
    ran(ctx).await;
    let n: u64 = ctx.saga_id().bytes().map(u64::from).sum();
    tokio::time::sleep(Duration::from_millis(3 + n % 11)).await;
}

fn transfers(hang_last: bool) -> SagaDefinition {
    Saga::new("transfer")
        .step(Step::new("open", |ctx: StepContext| async move {
            let t: Transfer = ctx.input()?;
            boundary("open:do:in").await;
            ctx.dispatch(Open { id: t.from(), owner: "ada".into() }).await?;
            pause(&ctx).await;
            ctx.dispatch(Open { id: t.to(), owner: "bob".into() }).await?;
            ctx.dispatch(Deposit { id: t.from(), amount: 100 }).await?;
            boundary("open:do:out").await;
            Ok(())
        }))
        .step(
            Step::new("withdraw", |ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                boundary("withdraw:do:in").await;
                pause(&ctx).await;
                ctx.dispatch(Withdraw { id: t.from(), amount: 10 }).await?;
                boundary("withdraw:do:out").await;
                Ok(())
            })
            .compensate(|ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                boundary("withdraw:undo:in").await;
                pause(&ctx).await;
                ctx.dispatch(Deposit { id: t.from(), amount: 10 }).await?;
                boundary("withdraw:undo:out").await;
                Ok(())
            }),
        )
        .step(
            Step::new("deposit", |ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                boundary("deposit:do:in").await;
                ctx.dispatch(Deposit { id: t.to(), amount: 10 }).await?;
                pause(&ctx).await;
                boundary("deposit:do:out").await;
                Ok(())
            })
            .compensate(|ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                boundary("deposit:undo:in").await;
                ctx.dispatch(Withdraw { id: t.to(), amount: 10 }).await?;
                pause(&ctx).await;
                boundary("deposit:undo:out").await;
                Ok(())
            }),
        )
        .step(
            Step::new("confirm", move |ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                boundary("confirm:do:in").await;
                pause(&ctx).await;
                if hang_last {
                    println!("HANGING");
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                if t.refused() {
                    return Err(StepError::failed("the transfer is refused"));
                }
                boundary("confirm:do:out").await;
                Ok(())
            })
            .compensate(|ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                boundary("confirm:undo:in").await;
                // The step's own undoing, counted in an account of its own.
                ctx.dispatch(Open { id: format!("undone-{}", t.n), owner: "audit".into() }).await?;
                boundary("confirm:undo:out").await;
                Ok(())
            })
            // Long enough not to pass between the kills, except where a test wants it to.
            .timeout(if hang_last { Duration::from_millis(400) } else { Duration::from_secs(120) }),
        )
        .build()
        .expect("a valid saga")
}

/// Where the store is.
#[derive(Clone, Debug)]
enum Place {
    AllSource(PathBuf),
    Postgres(String),
}

impl Place {
    fn env(&self) -> (&'static str, String) {
        match self {
            Place::AllSource(dir) => (CHILD_DIR, dir.display().to_string()),
            Place::Postgres(schema) => (CHILD_SCHEMA, schema.clone()),
        }
    }

    fn from_env() -> Option<Place> {
        let dir = std::env::var(CHILD_DIR).ok().map(|dir| Place::AllSource(dir.into()));
        dir.or_else(|| std::env::var(CHILD_SCHEMA).ok().map(Place::Postgres))
    }
}

fn database_url() -> String {
    std::env::var("ALLFRAME_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The store at `place`, with its leases on PostgreSQL.
async fn open(place: &Place) -> (DynBackend, Option<Arc<dyn allframe::Leases>>) {
    match place {
        Place::AllSource(dir) => {
            let address = backends::parse(&format!("allsource:{}", dir.display())).unwrap();
            // The parent's orchestrator of the last round may still be letting go of the store
            // (its tasks end shortly after `stop()`): wait for its lock rather than fail.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                match address.open(OpenOptions::new().mode(Mode::Durable)).await {
                    Ok(backend) => return (backend, None),
                    Err(allframe::Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(error) => panic!("opens the store: {error}"),
                }
            }
        }
        Place::Postgres(schema) => {
            let backend = PostgresBackend::builder(&database_url()).schema(schema).pool_size(4).connect().await;
            let backend = backend.expect("connects");
            let leases: Arc<dyn allframe::Leases> = Arc::new(backend.leases());
            (Arc::new(backend), Some(leases))
        }
    }
}

/// The places to run on: AllSource in `dir`, and a fresh PostgreSQL schema when there is a server.
async fn places(test: &str, dir: &Path) -> Vec<Place> {
    let mut places = vec![Place::AllSource(dir.to_owned())];
    let schema = format!("saga_{test}_{}", std::process::id());
    match sqlx_drop_schema(&schema).await {
        Ok(()) => places.push(Place::Postgres(schema)),
        Err(error) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI=true and no PostgreSQL: {error}"),
        Err(error) => eprintln!("NOTICE: skipping the PostgreSQL saga kill test: {error}"),
    }
    places
}

async fn sqlx_drop_schema(schema: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&database_url()).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))).execute(&mut conn).await?;
    Ok(())
}

fn orchestrator(backend: &DynBackend, leases: Option<Arc<dyn allframe::Leases>>, hang_last: bool) -> SagaOrchestrator {
    let (bus, _) = bank_bus(Arc::clone(backend));
    let builder = SagaOrchestrator::builder(bus).saga(transfers(hang_last));
    match leases {
        Some(leases) => builder.with_leases(leases),
        None => builder,
    }
    .build()
    .unwrap()
}

/// The child: begins the transfers not begun yet and runs them until it is killed.
#[test]
#[ignore = "helper process for the saga kill tests"]
fn saga_kill_child() {
    let Some(place) = Place::from_env() else { return };
    let hang = std::env::var("ALLFRAME_SAGA_KILL_HANG").is_ok();
    let round: u32 = std::env::var("ALLFRAME_SAGA_KILL_ROUND").map_or(0, |round| round.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (backend, leases) = open(&place).await;
        let sagas = orchestrator(&backend, leases, hang);
        sagas.start().await.unwrap();
        let all = std::env::var("ALLFRAME_SAGA_KILL_ALL").is_ok();
        let one: Option<u32> = std::env::var("ALLFRAME_SAGA_KILL_ONE").ok().map(|n| n.parse().unwrap());
        let batch = match one {
            Some(n) => n..n + 1,
            None if all => 0..TRANSFERS,
            None => round * BATCH..if hang { 1 } else { (round + 1) * BATCH },
        };
        for (i, n) in batch.enumerate() {
            match sagas.begin("transfer", &format!("t-{n}"), &Transfer { n }).await {
                Ok(()) | Err(SagaError::AlreadyStarted { .. }) => {}
                Err(error) => panic!("{error}"),
            }
            // The parent's clock starts once a transfer is begun, however slow the machine is
            // to get there, so that its kill lands in the transfers' work.
            if i == 0 {
                println!("READY");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
}

async fn account(backend: &DynBackend, id: &str) -> Account {
    let typed: EventStore<BankEvent, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(backend));
    typed.load_aggregate::<Account>(id).await.unwrap().state
}

/// Runs the transfers in the parent until each has finished, and checks how each ended and that
/// every account holds one run of each command and compensation.
async fn finish_and_check(place: &Place) {
    let (backend, leases) = open(place).await;
    let sagas = orchestrator(&backend, leases, false);
    sagas.start().await.unwrap();
    for n in 0..TRANSFERS {
        // Those the kills left unbegun are begun now.
        match sagas.begin("transfer", &format!("t-{n}"), &Transfer { n }).await {
            Ok(()) | Err(SagaError::AlreadyStarted { .. }) => {}
            Err(error) => panic!("{error}"),
        }
    }
    check_transfers(&sagas, &backend, place).await;
    sagas.stop();
}

async fn check_transfers(sagas: &SagaOrchestrator, backend: &DynBackend, place: &Place) {
    check_range(sagas, backend, place, 0..TRANSFERS).await;
}

/// Checks how transfers `range` ended and that their accounts hold one run of each command.
async fn check_range(sagas: &SagaOrchestrator, backend: &DynBackend, place: &Place, range: std::ops::Range<u32>) {
    for n in range {
        let t = Transfer { n };
        let state = sagas.wait("transfer", &format!("t-{n}"), Duration::from_secs(60)).await.unwrap();
        let (src, dst, undone) = (
            account(backend, &format!("account-{}", t.from())).await,
            account(backend, &format!("account-{}", t.to())).await,
            account(backend, &format!("account-undone-{n}")).await,
        );
        if t.refused() {
            assert!(
                matches!(&state, SagaState::RolledBack { step, .. } if step == "confirm"),
                "{place:?} t-{n}: {state:?}"
            );
            assert_eq!((src.balance, src.events), (100, 4), "{place:?} t-{n}: opened, funded, withdrawn, given back");
            assert_eq!((dst.balance, dst.events), (0, 3), "{place:?} t-{n}: opened, deposited, taken back");
        } else {
            assert_eq!(state, SagaState::Completed, "{place:?} t-{n}");
            assert_eq!((src.balance, src.events), (90, 3), "{place:?} t-{n}: opened, funded, withdrawn");
            assert_eq!((dst.balance, dst.events), (10, 2), "{place:?} t-{n}: opened, deposited");
        }
        // A step that failed (not timed out) is not undone.
        assert_eq!(undone.events, 0, "{place:?} t-{n}");
    }
}

#[test]
fn killed_sagas_finish_after_a_restart_and_each_effect_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for place in runtime.block_on(places("kill", dir.path())) {
        let mut random = kill::random_from_clock("saga kill test");
        let mut cut_short = Vec::new();
        for round in 0..ROUNDS {
            let wait = Duration::from_millis(10 + random() % 120);
            let env = [place.env(), ("ALLFRAME_SAGA_KILL_ROUND", round.to_string())];
            kill::run_child("saga_kill_child", &env, wait);
            // How many transfers the kill left unfinished.
            cut_short.push(runtime.block_on(async {
                let (backend, _) = open(&place).await;
                let listed = allframe::cqrs::sagas::list(&*backend, Some("transfer")).await.unwrap();
                listed.iter().filter(|instance| !instance.progress.state().is_finished()).count()
            }));
        }
        eprintln!("{place:?}: transfers unfinished after each kill: {cut_short:?}");
        assert!(cut_short.iter().any(|&n| n > 0), "{place:?}: no kill landed in a transfer: the test proves nothing");
        runtime.block_on(finish_and_check(&place));
        if let Place::Postgres(schema) = &place {
            runtime.block_on(sqlx_drop_schema(schema)).unwrap();
        }
    }
}

/// The boundaries a refused transfer crosses (its compensations run), and the end of the last
/// step, which only a transfer that is not refused reaches.
const BOUNDARIES: [&str; 12] = [
    "open:do:in",
    "open:do:out",
    "withdraw:do:in",
    "withdraw:do:out",
    "deposit:do:in",
    "deposit:do:out",
    "confirm:do:in",
    "deposit:undo:in",
    "deposit:undo:out",
    "withdraw:undo:in",
    "withdraw:undo:out",
    "confirm:do:out",
];

#[test]
fn a_kill_at_every_step_boundary_leaves_each_effect_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for place in runtime.block_on(places("edge", dir.path())) {
        for (i, at) in (0u32..).zip(BOUNDARIES) {
            // Refused transfers (multiples of 3) undo their steps; the last boundary needs one
            // that completes.
            let n = 102 + 3 * i + u32::from(at == "confirm:do:out");
            let env =
                [place.env(), ("ALLFRAME_SAGA_KILL_ONE", n.to_string()), ("ALLFRAME_SAGA_KILL_AT", at.to_owned())];
            let mut child = kill::Spawned::start("saga_kill_child", &env);
            let reached = child.wait_for(&format!("AT {at}"), Duration::from_secs(60));
            assert!(reached, "{place:?}: the child did not reach {at}; it printed:\n{}", child.seen().join("\n"));
            child.kill();
            runtime.block_on(async {
                let (backend, leases) = open(&place).await;
                let sagas = orchestrator(&backend, leases, false);
                sagas.start().await.unwrap();
                check_range(&sagas, &backend, &place, n..n + 1).await;
                sagas.stop();
            });
        }
        eprintln!("{place:?}: killed at each of {} step boundaries; every transfer ended right", BOUNDARIES.len());
        if let Place::Postgres(schema) = &place {
            runtime.block_on(sqlx_drop_schema(schema)).unwrap();
        }
    }
}

/// Which process ran each step of transfer `n`, in order.
async fn runs(backend: &DynBackend, n: u32) -> Vec<(String, String)> {
    let events = backend.read_stream(&format!("ran-t-{n}"), 0, 1000).await.unwrap();
    let ran = |e: &allframe::RecordedEvent| -> (String, String) {
        let ran: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        (ran["by"].as_str().unwrap().to_owned(), ran["step"].as_str().unwrap().to_owned())
    };
    events.iter().map(ran).collect()
}

#[test]
fn two_processes_on_postgres_run_every_instance_once() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let Some(place) = runtime.block_on(places("two", dir.path())).into_iter().find(|p| matches!(p, Place::Postgres(_)))
    else {
        return;
    };
    // Both begin every transfer (one of them is told `AlreadyStarted` for each); one holds the
    // lease and runs them, the other stands by.
    let child = |name: &str| {
        let env =
            [place.env(), ("ALLFRAME_SAGA_KILL_ALL", "1".to_owned()), ("ALLFRAME_SAGA_KILL_NAME", name.to_owned())];
        let mut child = kill::Spawned::start("saga_kill_child", &env);
        assert!(child.wait_for("READY", Duration::from_secs(60)));
        child
    };
    let mut children = vec![("first", child("first")), ("second", child("second"))];
    let leader = runtime.block_on(async {
        let (backend, _) = open(&place).await;
        // The parent runs no orchestrator: it waits for the children, reading the store.
        let (bus, _) = bank_bus(Arc::clone(&backend));
        let reader = SagaOrchestrator::builder(bus).saga(transfers(false)).build().unwrap();
        check_transfers(&reader, &backend, &place).await;
        let mut by = std::collections::BTreeSet::new();
        for n in 0..TRANSFERS {
            let runs = runs(&backend, n).await;
            let steps: Vec<&str> = runs.iter().map(|(_, step)| step.as_str()).collect();
            let expected: &[&str] = &["open", "withdraw", "deposit", "confirm"];
            let undo: &[&str] = if (Transfer { n }).refused() { &["deposit", "withdraw"] } else { &[] };
            assert_eq!(steps, [expected, undo].concat(), "t-{n}: each step (and undoing) ran once");
            by.extend(runs.into_iter().map(|(name, _)| name));
        }
        assert_eq!(by.len(), 1, "one process ran every step: {by:?}");
        by.pop_first().unwrap()
    });
    // The one that ran them is killed; the other takes the lease over and runs a new transfer.
    let at = children.iter().position(|(name, _)| *name == leader).unwrap();
    children.remove(at).1.kill();
    runtime.block_on(async {
        let (backend, _) = open(&place).await;
        let (bus, _) = bank_bus(Arc::clone(&backend));
        let reader = SagaOrchestrator::builder(bus).saga(transfers(false)).build().unwrap();
        let n = TRANSFERS + 1;
        reader.begin("transfer", &format!("t-{n}"), &Transfer { n }).await.unwrap();
        let state = reader.wait("transfer", &format!("t-{n}"), Duration::from_secs(60)).await.unwrap();
        assert_eq!(state, SagaState::Completed);
        let survivor: Vec<String> = runs(&backend, n).await.into_iter().map(|(name, _)| name).collect();
        assert!(survivor.len() == 4 && survivor.iter().all(|name| *name != leader), "{survivor:?}");
    });
    children.pop().unwrap().1.kill();
    eprintln!("two processes on PostgreSQL: every step ran once, in the lease holder ({leader}); the other took over");
    if let Place::Postgres(schema) = &place {
        runtime.block_on(sqlx_drop_schema(schema)).unwrap();
    }
}

#[test]
fn a_timeout_that_expires_while_no_process_runs_fires_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let place = Place::AllSource(dir.path().to_owned());
    let env = [place.env(), ("ALLFRAME_SAGA_KILL_HANG", "1".to_owned())];
    let mut child = kill::Spawned::start("saga_kill_child", &env);
    assert!(child.wait_for("HANGING", Duration::from_secs(60)), "the last step began");
    child.kill();
    // The step's 400 ms pass while nothing runs.
    std::thread::sleep(Duration::from_millis(600));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (backend, leases) = open(&place).await;
        let sagas = orchestrator(&backend, leases, true);
        sagas.start().await.unwrap();
        let state = sagas.wait("transfer", "t-0", Duration::from_secs(60)).await.unwrap();
        assert!(matches!(&state, SagaState::RolledBack { step, reason } if step == "confirm" && reason.contains("timed out")));
        let history = sagas.instance("transfer", "t-0").await.unwrap().history;
        assert!(history.contains(&allframe::cqrs::sagas::Record::StepTimedOut { step: "confirm".into(), attempt: 1 }));
        assert_eq!(account(&backend, "account-undone-0").await.events, 1, "the step that timed out is undone");
        assert_eq!(account(&backend, "account-src-0").await.balance, 100);
        assert_eq!(account(&backend, "account-dst-0").await.balance, 0);
        sagas.stop();
    });
}

/// Payouts written as reactions: an account's opening opens its fee account and funds it with
/// 100, then sets a timer; when the timer fires, 30 moves to the fee account and the instance
/// completes. Each reaction pauses between its commands, so kills land inside reactions, and
/// its timer often comes due while no process runs.
struct Payouts;

#[derive(Default, Serialize, Deserialize)]
struct Payout {
    funded: bool,
}

impl Payouts {
    async fn pause(ctx: &Reaction) {
        let n: u64 = ctx.saga_id().bytes().map(u64::from).sum();
        tokio::time::sleep(Duration::from_millis(3 + n % 11)).await;
    }
}

#[async_trait]
impl Choreography for Payouts {
    const NAME: &'static str = "payouts";
    // Every opening of the store's life, whenever the first process started.
    const FROM_BEGINNING: bool = true;
    type Event = BankEvent;
    type State = Payout;

    fn correlate(&self, event: &Envelope<BankEvent>) -> Correlation {
        match (&event.event, event.stream_id.as_str().strip_prefix("account-p-")) {
            (BankEvent::Opened { .. }, Some(n)) => Correlation::Start(n.to_owned()),
            _ => Correlation::Ignore,
        }
    }

    async fn react(&self, state: &mut Payout, _: &Envelope<BankEvent>, ctx: &mut Reaction) -> Result<(), StepError> {
        let n = ctx.saga_id().to_owned();
        ctx.dispatch(Open { id: format!("fee-{n}"), owner: "bank".into() }).await?;
        Self::pause(ctx).await;
        ctx.dispatch(Deposit { id: format!("p-{n}"), amount: 100 }).await?;
        state.funded = true;
        // Short for half of them (kills land in their `wake`), long for the others (their
        // timers come due while no process runs).
        let after = if n.parse::<u32>().is_ok_and(|n| n % 2 == 0) { 20 } else { 250 };
        ctx.schedule("settle", Duration::from_millis(after))?;
        Ok(())
    }

    async fn wake(&self, state: &mut Payout, _: &str, ctx: &mut Reaction) -> Result<(), StepError> {
        assert!(state.funded);
        let n = ctx.saga_id().to_owned();
        ctx.dispatch(Withdraw { id: format!("p-{n}"), amount: 30 }).await?;
        Self::pause(ctx).await;
        ctx.dispatch(Deposit { id: format!("fee-{n}"), amount: 30 }).await?;
        ctx.complete();
        Ok(())
    }
}

fn payouts_orchestrator(backend: &DynBackend, leases: Option<Arc<dyn allframe::Leases>>) -> SagaOrchestrator {
    let (bus, _) = bank_bus(Arc::clone(backend));
    let builder = SagaOrchestrator::builder(bus).choreography(Payouts);
    match leases {
        Some(leases) => builder.with_leases(leases),
        None => builder,
    }
    .build()
    .unwrap()
}

/// Opens payout accounts `range` (each under a key: opened once however often this runs).
async fn open_payouts(bus: &CommandBus, range: std::ops::Range<u32>) {
    for n in range {
        let options = CommandOptions::new().idempotency_key(format!("open-p-{n}"));
        bus.dispatch_with(Open { id: format!("p-{n}"), owner: "ada".into() }, options).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The child: opens this round's payout accounts while the choreography runs, until killed.
#[test]
#[ignore = "helper process for the choreography kill test"]
fn choreography_kill_child() {
    let Some(place) = Place::from_env() else { return };
    let round: u32 = std::env::var("ALLFRAME_SAGA_KILL_ROUND").unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (backend, leases) = open(&place).await;
        let sagas = payouts_orchestrator(&backend, leases);
        sagas.start().await.unwrap();
        let (bus, _) = bank_bus(Arc::clone(&backend));
        let first = round * BATCH;
        open_payouts(&bus, first..first + 1).await;
        // The parent's clock starts once the first payout has reacted (and set its timer),
        // however slow the machine is to get there.
        loop {
            match sagas.instance("payouts", &first.to_string()).await {
                Ok(progress) if !progress.timers().is_empty() || progress.state().is_finished() => break,
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
        println!("READY");
        open_payouts(&bus, first + 1..(round + 1) * BATCH).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
}

#[test]
fn killed_choreographies_finish_after_a_restart_and_each_effect_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for place in runtime.block_on(places("chor", dir.path())) {
        let mut random = kill::random_from_clock("choreography kill test");
        let mut cut_short = Vec::new();
        for round in 0..ROUNDS {
            let wait = Duration::from_millis(5 + random() % 200);
            let env = [place.env(), ("ALLFRAME_SAGA_KILL_ROUND", round.to_string())];
            kill::run_child("choreography_kill_child", &env, wait);
            // How many instances the kill left reacting or with a timer set.
            cut_short.push(runtime.block_on(async {
                let (backend, _) = open(&place).await;
                let listed = allframe::cqrs::sagas::list(&*backend, Some("payouts")).await.unwrap();
                let timers = listed.iter().filter(|i| !i.progress.timers().is_empty()).count();
                let unfinished = listed.iter().filter(|i| !i.progress.state().is_finished()).count();
                (unfinished, timers)
            }));
        }
        eprintln!("{place:?}: payouts (unfinished, with a timer set) after each kill: {cut_short:?}");
        assert!(
            cut_short.iter().any(|&(_, timers)| timers > 0),
            "{place:?}: no kill left a timer to come due while no process ran: the test proves nothing"
        );
        runtime.block_on(async {
            let (backend, leases) = open(&place).await;
            let sagas = payouts_orchestrator(&backend, leases);
            sagas.start().await.unwrap();
            let (bus, _) = bank_bus(Arc::clone(&backend));
            // Those the kills left unopened are opened now.
            open_payouts(&bus, 0..TRANSFERS).await;
            for n in 0..TRANSFERS {
                let state = sagas.wait("payouts", &n.to_string(), Duration::from_secs(60)).await.unwrap();
                assert_eq!(state, SagaState::Completed, "{place:?} payout {n}");
                let (payout, fee) = (
                    account(&backend, &format!("account-p-{n}")).await,
                    account(&backend, &format!("account-fee-{n}")).await,
                );
                assert_eq!((payout.balance, payout.events), (70, 3), "{place:?} p-{n}: opened, funded, paid out once");
                assert_eq!((fee.balance, fee.events), (30, 2), "{place:?} fee-{n}: opened, paid once");
            }
            sagas.stop();
        });
        if let Place::Postgres(schema) = &place {
            runtime.block_on(sqlx_drop_schema(schema)).unwrap();
        }
    }
}
