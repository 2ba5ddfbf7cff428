//! Sagas across real crashes, on a durable AllSource store: a child process (this test binary,
//! run again) runs an orchestrator over bank transfers (open two accounts and fund one, withdraw,
//! deposit, then a last step that fails for every third transfer so that those are undone), each
//! step pausing a little so that kills land between and inside steps; it is killed with SIGKILL
//! at a varied moment, several times. The parent then runs the orchestrator on the reopened store
//! until every transfer has finished, and checks that each ended as it should and that every
//! account's events count each command (and each compensation) exactly once.
//!
//! A second test kills the child while a step hangs past its timeout: the deadline passes while
//! no process runs, and the next start times the step out and undoes it with the others.

#[path = "support/bank.rs"]
mod bank;
#[path = "support/kill.rs"]
mod kill;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use allframe::backends::{self, Mode, OpenOptions};
use allframe::cqrs::*;
use bank::*;
use serde::{Deserialize, Serialize};

const CHILD_DIR: &str = "ALLFRAME_SAGA_KILL_DIR";
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

/// A pause of a few milliseconds inside a step, so that a kill often lands in one.
async fn pause(ctx: &StepContext) {
    let n: u64 = ctx.saga_id().bytes().map(u64::from).sum();
    tokio::time::sleep(Duration::from_millis(3 + n % 11)).await;
}

fn transfers(hang_last: bool) -> SagaDefinition {
    Saga::new("transfer")
        .step(Step::new("open", |ctx: StepContext| async move {
            let t: Transfer = ctx.input()?;
            ctx.dispatch(Open { id: t.from(), owner: "ada".into() }).await?;
            pause(&ctx).await;
            ctx.dispatch(Open { id: t.to(), owner: "bob".into() }).await?;
            ctx.dispatch(Deposit { id: t.from(), amount: 100 }).await?;
            Ok(())
        }))
        .step(
            Step::new("withdraw", |ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                pause(&ctx).await;
                ctx.dispatch(Withdraw { id: t.from(), amount: 10 }).await?;
                Ok(())
            })
            .compensate(|ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                pause(&ctx).await;
                ctx.dispatch(Deposit { id: t.from(), amount: 10 }).await?;
                Ok(())
            }),
        )
        .step(
            Step::new("deposit", |ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                ctx.dispatch(Deposit { id: t.to(), amount: 10 }).await?;
                pause(&ctx).await;
                Ok(())
            })
            .compensate(|ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                ctx.dispatch(Withdraw { id: t.to(), amount: 10 }).await?;
                pause(&ctx).await;
                Ok(())
            }),
        )
        .step(
            Step::new("confirm", move |ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                pause(&ctx).await;
                if hang_last {
                    println!("HANGING");
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                if t.refused() {
                    return Err(StepError::failed("the transfer is refused"));
                }
                Ok(())
            })
            .compensate(|ctx: StepContext| async move {
                let t: Transfer = ctx.input()?;
                // The step's own undoing, counted in an account of its own.
                ctx.dispatch(Open { id: format!("undone-{}", t.n), owner: "audit".into() }).await?;
                Ok(())
            })
            // Long enough not to pass between the kills, except where a test wants it to.
            .timeout(if hang_last { Duration::from_millis(400) } else { Duration::from_secs(120) }),
        )
        .build()
        .expect("a valid saga")
}

async fn open(dir: &Path) -> DynBackend {
    let address = backends::parse(&format!("allsource:{}", dir.display())).unwrap();
    address.open(OpenOptions::new().mode(Mode::Durable)).await.expect("opens the store")
}

fn orchestrator(backend: &DynBackend, hang_last: bool) -> SagaOrchestrator {
    let (bus, _) = bank_bus(Arc::clone(backend));
    SagaOrchestrator::builder(bus).saga(transfers(hang_last)).build().unwrap()
}

/// The child: begins the transfers not begun yet and runs them until it is killed.
#[test]
#[ignore = "helper process for the saga kill tests"]
fn saga_kill_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let hang = std::env::var("ALLFRAME_SAGA_KILL_HANG").is_ok();
    let round: u32 = std::env::var("ALLFRAME_SAGA_KILL_ROUND").map_or(0, |round| round.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let backend = open(Path::new(&dir)).await;
        let sagas = orchestrator(&backend, hang);
        sagas.start().unwrap();
        println!("READY");
        for n in round * BATCH..if hang { 1 } else { (round + 1) * BATCH } {
            match sagas.begin("transfer", &format!("t-{n}"), &Transfer { n }).await {
                Ok(()) | Err(SagaError::AlreadyStarted { .. }) => {}
                Err(error) => panic!("{error}"),
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

#[test]
fn killed_sagas_finish_after_a_restart_and_each_effect_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut random = kill::random_from_clock("saga kill test");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut cut_short = Vec::new();
    for round in 0..ROUNDS {
        let wait = Duration::from_millis(10 + random() % 120);
        let env = [(CHILD_DIR, dir.path().display().to_string()), ("ALLFRAME_SAGA_KILL_ROUND", round.to_string())];
        kill::run_child("saga_kill_child", &env, wait);
        // How many transfers the kill left unfinished.
        cut_short.push(runtime.block_on(async {
            let backend = open(dir.path()).await;
            let sagas = orchestrator(&backend, false);
            let listed = sagas.list("transfer").await.unwrap();
            listed.iter().filter(|(_, state)| !state.is_finished()).count()
        }));
    }
    eprintln!("transfers unfinished after each kill: {cut_short:?}");
    assert!(cut_short.iter().any(|&n| n > 0), "no kill landed in a transfer: the test proves nothing");
    runtime.block_on(async {
        let backend = open(dir.path()).await;
        let sagas = orchestrator(&backend, false);
        sagas.start().unwrap();
        for n in 0..TRANSFERS {
            // Those the kills left unbegun are begun now.
            match sagas.begin("transfer", &format!("t-{n}"), &Transfer { n }).await {
                Ok(()) | Err(SagaError::AlreadyStarted { .. }) => {}
                Err(error) => panic!("{error}"),
            }
        }
        for n in 0..TRANSFERS {
            let t = Transfer { n };
            let state = sagas.wait("transfer", &format!("t-{n}"), Duration::from_secs(60)).await.unwrap();
            let (src, dst, undone) = (
                account(&backend, &format!("account-{}", t.from())).await,
                account(&backend, &format!("account-{}", t.to())).await,
                account(&backend, &format!("account-undone-{n}")).await,
            );
            if t.refused() {
                assert!(matches!(&state, SagaState::RolledBack { step, .. } if step == "confirm"), "t-{n}: {state:?}");
                assert_eq!((src.balance, src.events), (100, 4), "t-{n}: opened, funded, withdrawn, given back");
                assert_eq!((dst.balance, dst.events), (0, 3), "t-{n}: opened, deposited, taken back");
            } else {
                assert_eq!(state, SagaState::Completed, "t-{n}");
                assert_eq!((src.balance, src.events), (90, 3), "t-{n}: opened, funded, withdrawn");
                assert_eq!((dst.balance, dst.events), (10, 2), "t-{n}: opened, deposited");
            }
            // A step that failed (not timed out) is not undone.
            assert_eq!(undone.events, 0, "t-{n}");
        }
        sagas.stop();
    });
}

#[test]
fn a_timeout_that_expires_while_no_process_runs_fires_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(CHILD_DIR, dir.path().display().to_string()), ("ALLFRAME_SAGA_KILL_HANG", "1".to_owned())];
    let mut child = kill::Spawned::start("saga_kill_child", &env);
    assert!(child.wait_for("HANGING", Duration::from_secs(60)), "the last step began");
    child.kill();
    // The step's 400 ms pass while nothing runs.
    std::thread::sleep(Duration::from_millis(600));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let backend = open(dir.path()).await;
        let sagas = orchestrator(&backend, true);
        sagas.start().unwrap();
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
