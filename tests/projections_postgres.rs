//! Transactional projections and leases on PostgreSQL, with real processes killed with
//! SIGKILL. The read model is a table whose rows count their deliveries, so an event applied
//! twice shows.
//!
//! - A child appends deposits and runs the projection until it is killed; after each kill the
//!   parent runs it to the head: every deposit has its row, delivered exactly once.
//! - Two children on one schema: one runs the projection, the other stands by; when the
//!   runner is killed the other takes over within the bound below, and still no event is
//!   applied twice.
//! - In process: a poison event under the dead-letter policy (the events before it in its
//!   page still land), and a rebuild that empties the table in the checkpoint's transaction.
//!
//! Without a server the tests skip with a notice, except under `CI=true`.

#[path = "support/kill.rs"]
mod kill;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe::cqrs::*;
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Connection};

const CHILD_SCHEMA: &str = "ALLFRAME_PG_PROJECTION_SCHEMA";
const CHILD_NAME: &str = "ALLFRAME_PG_PROJECTION_NAME";
const CHILD_WRITES: &str = "ALLFRAME_PG_PROJECTION_WRITES";
/// How often a standby instance tries the lease in these tests.
const LEASE_POLL: Duration = Duration::from_millis(100);
/// The takeover bound this test holds the registry to: the lease is free as soon as the
/// server sees the killed process's socket close, then a standby needs one poll.
const TAKEOVER_BOUND: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Money {
    Deposited { amount: u64 },
}

impl allframe::cqrs::Event for Money {}

fn database_url() -> String {
    std::env::var("ALLFRAME_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn sql(statement: String) {
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.expect("connects");
    sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut conn).await.expect("runs");
}

/// The store in `schema` (made by the first connection), or `None` without a server.
async fn connect(schema: &str, name: &str) -> Option<PostgresBackend> {
    match PostgresBackend::builder(&database_url()).schema(schema).application_name(name).pool_size(4).connect().await {
        Ok(backend) => Some(backend),
        Err(error) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI=true and no PostgreSQL: {error}"),
        Err(error) => {
            eprintln!("NOTICE: skipping PostgreSQL projection test: {error}");
            None
        }
    }
}

/// A fresh schema with the read model's table.
async fn fresh(test: &str) -> Option<(String, PostgresBackend)> {
    let schema = format!("proj_{test}_{}", std::process::id());
    sql(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    let backend = connect(&schema, "parent").await?;
    sql(format!(
        "CREATE TABLE {schema}.applied (position bigint PRIMARY KEY, amount bigint NOT NULL, \
         deliveries int NOT NULL DEFAULT 1, applied_by text NOT NULL)"
    ))
    .await;
    Some((schema, backend))
}

/// The read model: one row per deposit, in the table of `schema`; a second delivery of an
/// event adds to its row's `deliveries` instead of failing.
struct Applied {
    schema: String,
    by: String,
}

#[async_trait]
impl TransactionalReadModel<Money, PgTransaction> for Applied {
    const NAME: &'static str = "applied";

    async fn apply(&mut self, transaction: &mut PgTransaction, event: &Envelope<Money>) -> Result<(), BoxError> {
        let Money::Deposited { amount } = event.event;
        if amount == 13 {
            return Err("unlucky".into());
        }
        let statement = format!(
            "INSERT INTO {}.applied (position, amount, applied_by) VALUES ($1, $2, $3) \
             ON CONFLICT (position) DO UPDATE SET deliveries = applied.deliveries + 1",
            self.schema
        );
        sqlx::query(AssertSqlSafe(statement))
            .bind(event.position as i64)
            .bind(amount as i64)
            .bind(&self.by)
            .execute(&mut **transaction)
            .await?;
        Ok(())
    }

    async fn reset(&mut self, transaction: &mut PgTransaction) -> Result<(), BoxError> {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {}.applied", self.schema))).execute(&mut **transaction).await?;
        Ok(())
    }
}

type Registry = ProjectionRegistry<Money, PostgresBackend>;

fn registry(
    backend: &PostgresBackend,
    schema: &str,
    by: &str,
    policy: FailurePolicy,
) -> (Registry, ReadModelHandle<Applied>) {
    let options = RunOptions { lease_poll: LEASE_POLL, page_size: 64, ..RunOptions::default() };
    let registry = ProjectionRegistry::with_options(EventStore::with_backend(backend.clone()), options)
        .with_leases(Arc::new(backend.leases()));
    let (schema, by) = (schema.to_owned(), by.to_owned());
    let handle =
        registry.register_transactional(move || Applied { schema: schema.clone(), by: by.clone() }, policy).unwrap();
    (registry, handle)
}

/// Rows of the table: position → (amount, deliveries, applied by).
async fn rows(schema: &str) -> BTreeMap<u64, (u64, i32, String)> {
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let statement = format!("SELECT position, amount, deliveries, applied_by FROM {schema}.applied");
    let rows: Vec<(i64, i64, i32, String)> =
        sqlx::query_as(AssertSqlSafe(statement)).fetch_all(&mut conn).await.unwrap();
    rows.into_iter().map(|(p, a, d, by)| (p as u64, (a as u64, d, by))).collect()
}

/// Every deposit of the log: position → amount.
async fn deposits(backend: &PostgresBackend) -> BTreeMap<u64, u64> {
    let store: EventStore<Money, PostgresBackend> = EventStore::with_backend(backend.clone());
    let mut all = BTreeMap::new();
    Replay::new(&store)
        .run(
            |envelope| {
                let Money::Deposited { amount } = envelope.event;
                all.insert(envelope.position, amount);
                Ok(())
            },
            |_| {},
        )
        .await
        .unwrap();
    all
}

async fn append(backend: &PostgresBackend, count: u64) -> u64 {
    let store: EventStore<Money, PostgresBackend> = EventStore::with_backend(backend.clone());
    let mut last = 0;
    for i in 0..count {
        last = store.append("account", vec![Money::Deposited { amount: 100 + i }]).await.unwrap().last_position;
    }
    last
}

/// The child: runs the projection (printing each change of its state) and, when asked,
/// appends deposits, until it is killed.
#[test]
#[ignore = "helper process for the PostgreSQL projection tests"]
fn pg_projection_child() {
    let Ok(schema) = std::env::var(CHILD_SCHEMA) else { return };
    let name = std::env::var(CHILD_NAME).unwrap();
    let writes = std::env::var(CHILD_WRITES).is_ok();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let backend = connect(&schema, &name).await.expect("a server");
        let (registry, _handle) = registry(&backend, &schema, &name, FailurePolicy::stop());
        registry.start_all().await.unwrap();
        println!("READY");
        if writes {
            let store: EventStore<Money, PostgresBackend> = EventStore::with_backend(backend.clone());
            tokio::spawn(async move {
                for i in 0u64.. {
                    let events = vec![Money::Deposited { amount: 1_000 + i }; 1 + (i % 3) as usize];
                    store.append("account", events).await.unwrap();
                }
            });
        }
        let mut last = None;
        loop {
            let state = registry.status("applied").await.unwrap().state;
            if last.as_ref() != Some(&state) {
                println!("STATE {state:?}");
                last = Some(state);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

fn child_env(schema: &str, name: &str, writes: bool) -> Vec<(&'static str, String)> {
    let mut env = vec![(CHILD_SCHEMA, schema.to_owned()), (CHILD_NAME, name.to_owned())];
    if writes {
        env.push((CHILD_WRITES, "1".into()));
    }
    env
}

#[test]
fn a_killed_transactional_projection_applies_every_event_exactly_once() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let Some((schema, backend)) = runtime.block_on(fresh("kill")) else { return };
    let mut random = kill::random_from_clock("transactional projection kill test");
    for round in 0..6 {
        let wait = Duration::from_millis(if round % 3 == 0 { random() % 30 } else { 100 + random() % 600 });
        kill::run_child("pg_projection_child", &child_env(&schema, &format!("child-{round}"), true), wait);
        runtime.block_on(async {
            // The rows first, then the checkpoint: a transaction the killed child had sent its
            // COMMIT for may still commit on the server between two reads; read in this order,
            // every row seen has its checkpoint visible to the second read.
            let before = rows(&schema).await;
            let checkpoint = backend.load_checkpoint("applied@v1").await.unwrap().unwrap_or(0);
            let through = before.keys().next_back().copied().unwrap_or(0);
            assert!(
                through <= checkpoint,
                "round {round}: row {through} beyond the checkpoint {checkpoint}: written outside its transaction"
            );
            let (registry, handle) = registry(&backend, &schema, "parent", FailurePolicy::stop());
            registry.start_all().await.unwrap();
            let head = backend.head_position().await.unwrap();
            handle.read_at_least(head, WAIT).await.unwrap();
            registry.stop_all().await;
            let rows = rows(&schema).await;
            let twice: Vec<_> = rows.iter().filter(|(_, row)| row.1 != 1).collect();
            assert!(twice.is_empty(), "round {round}: events applied more than once: {twice:?}");
            let applied: BTreeMap<u64, u64> = rows.iter().map(|(position, row)| (*position, row.0)).collect();
            assert_eq!(applied, deposits(&backend).await, "round {round}: the table equals a replay");
        });
    }
    runtime.block_on(sql(format!("DROP SCHEMA {schema} CASCADE")));
}

#[test]
fn two_instances_run_a_projection_once_and_the_standby_takes_over_when_the_runner_dies() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let Some((schema, backend)) = runtime.block_on(fresh("lease")) else { return };
    let mut first = kill::Spawned::start("pg_projection_child", &child_env(&schema, "first", false));
    assert!(first.wait_for("STATE Running", WAIT), "the first instance runs the projection");
    let mut second = kill::Spawned::start("pg_projection_child", &child_env(&schema, "second", false));
    assert!(second.wait_for("STATE Standby", WAIT), "the second stands by");

    let last = runtime.block_on(append(&backend, 200));
    let until = Instant::now() + WAIT;
    while runtime.block_on(rows(&schema)).len() < 200 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let table = runtime.block_on(rows(&schema));
    assert_eq!(table.len(), 200);
    assert!(table.values().all(|row| row.1 == 1 && row.2 == "first"), "applied once, by the runner only");
    assert_eq!(runtime.block_on(backend.load_checkpoint("applied@v1")).unwrap(), Some(last));

    let killed = Instant::now();
    first.kill();
    assert!(second.wait_for("STATE Running", TAKEOVER_BOUND + Duration::from_secs(1)), "the standby took over");
    let takeover = killed.elapsed();
    eprintln!("lease takeover after SIGKILL: {takeover:?} (bound {TAKEOVER_BOUND:?}, lease poll {LEASE_POLL:?})");
    assert!(takeover <= TAKEOVER_BOUND, "took {takeover:?}");

    runtime.block_on(append(&backend, 200));
    let until = Instant::now() + WAIT;
    while runtime.block_on(rows(&schema)).len() < 400 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let table = runtime.block_on(rows(&schema));
    assert_eq!(table.len(), 400);
    assert!(table.values().all(|row| row.1 == 1), "still applied once each");
    assert_eq!(table.values().filter(|row| row.2 == "second").count(), 200, "the new events, by the new runner");
    second.kill();
    runtime.block_on(sql(format!("DROP SCHEMA {schema} CASCADE")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_the_rest_of_its_page_lands_and_a_rebuild_resets_the_table() {
    let Some((schema, backend)) = fresh("policy").await else { return };
    let store: EventStore<Money, PostgresBackend> = EventStore::with_backend(backend.clone());
    let amounts = [1, 2, 13, 4, 5];
    let appended =
        store.append("account", amounts.iter().map(|&amount| Money::Deposited { amount }).collect()).await.unwrap();
    // Positions on PostgreSQL follow transaction ids: consecutive within one append only.
    let (last, unlucky) = (appended.last_position, appended.first_position + 2);
    let (registry, handle) = registry(&backend, &schema, "parent", FailurePolicy::dead_letter());
    registry.start_all().await.unwrap();
    handle.read_at_least(last, WAIT).await.unwrap();
    let table = rows(&schema).await;
    assert_eq!(table.values().map(|row| row.0).collect::<Vec<_>>(), [1, 2, 4, 5]);
    let letters = registry.dead_letters("applied").await.unwrap();
    assert_eq!(
        letters.iter().map(|letter| (letter.position, letter.reason.as_str())).collect::<Vec<_>>(),
        [(unlucky, "unlucky")]
    );

    let beside = registry.rebuild_beside("applied").await.unwrap_err();
    assert!(matches!(beside, ProjectionError::Unsupported { .. }), "{beside:?}");

    sql(format!("UPDATE {schema}.applied SET amount = 0")).await;
    registry.rebuild("applied").await.unwrap();
    let head = backend.head_position().await.unwrap();
    handle.read_at_least(head, WAIT).await.unwrap();
    let table = rows(&schema).await;
    assert_eq!(table.values().map(|row| (row.0, row.1)).collect::<Vec<_>>(), [(1, 1), (2, 1), (4, 1), (5, 1)]);
    registry.stop_all().await;
    sql(format!("DROP SCHEMA {schema} CASCADE")).await;
}
