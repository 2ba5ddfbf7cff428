//! Group commit (docs/decisions/0203-postgres-group-commit.md): appends made while others are
//! in flight go to the server together, in one transaction, and each is still checked alone.
//!
//! To make a group deterministic, a test session holds the lock of the stream `first`: the
//! first append (to it; a group of its own) waits for it, the appends made meanwhile queue up
//! and form the next group, which runs once the session lets go. Rows of one transaction share their
//! `xmin`, which shows what was grouped.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use allframe_backend_postgres::{PayloadEncoding, PostgresBackend};
use allframe_cqrs_core::{AppendResult, Error, EventId, EventStoreBackend, ExpectedVersion, NewEvent, Result};
use sqlx::{Connection, PgConnection};

/// A session holding the lock of the stream `first` of `schema` until [`Held::release`].
struct Held {
    session: PgConnection,
}

impl Held {
    async fn take(schema: &str) -> Held {
        Held { session: common::hold_stream(schema, "first").await }
    }

    async fn release(mut self) {
        sqlx::query("COMMIT").execute(&mut self.session).await.unwrap();
    }
}

/// Waits until a connection named `application` waits for a lock.
async fn wait_until_blocked(application: &str) {
    let mut session = PgConnection::connect(&common::database_url()).await.expect("connect");
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(application)
        .fetch_one(&mut session)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no append of {application} waited for the stream's lock");
}

/// Starts an append in a task of its own, and gives it time to reach the queue.
async fn start(
    backend: &Arc<PostgresBackend>,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> tokio::task::JoinHandle<Result<AppendResult>> {
    let backend = Arc::clone(backend);
    let stream = stream.to_owned();
    let task = tokio::spawn(async move { backend.append(&stream, expected, events).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    task
}

fn event(payload: &str) -> NewEvent {
    NewEvent::new("Grouped", payload.to_owned())
}

/// The transaction (`xmin`) that wrote each event of `stream`, in version order.
async fn writers(schema: &str, stream: &str) -> Vec<String> {
    let mut session = PgConnection::connect(&common::database_url()).await.expect("connect");
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT xmin::text FROM {schema}.events WHERE stream_id = $1 ORDER BY version"
    )))
    .bind(stream)
    .fetch_all(&mut session)
    .await
    .unwrap()
}

async fn a_conflicting_append_fails_alone(encoding: PayloadEncoding) {
    let Some(fixture) =
        common::fresh_with(|b| b.group_commit(1).payload_encoding(encoding).application_name("grouped")).await
    else {
        return;
    };
    let backend = Arc::new(fixture.inner().clone());
    let schema = fixture.schema.clone();
    backend.append("existing", ExpectedVersion::NoStream, vec![event("{}")]).await.expect("setup");

    let held = Held::take(&schema).await;
    let first = start(&backend, "first", ExpectedVersion::Any, vec![event(r#"{"n":0}"#)]).await;
    wait_until_blocked("grouped").await;
    // These queue behind the blocked group and form the next one together.
    let ok_any = start(&backend, "s1", ExpectedVersion::Any, vec![event(r#"{"n":1}"#), event(r#"{"n":2}"#)]).await;
    let stale = start(&backend, "existing", ExpectedVersion::Exact(5), vec![event(r#"{"n":3}"#)]).await;
    let racer_a = start(&backend, "s2", ExpectedVersion::NoStream, vec![event(r#"{"n":4}"#)]).await;
    let missing = start(&backend, "s3", ExpectedVersion::StreamExists, vec![event(r#"{"n":5}"#)]).await;
    let racer_b = start(&backend, "s2", ExpectedVersion::NoStream, vec![event(r#"{"n":6}"#)]).await;
    let ok_exact = start(&backend, "existing", ExpectedVersion::Exact(1), vec![event(r#"{"n":7}"#)]).await;
    held.release().await;

    let first = first.await.unwrap().expect("the blocked append");
    let ok_any = ok_any.await.unwrap().expect("an append with no expectation");
    let ok_exact = ok_exact.await.unwrap().expect("an append at the right version");
    match stale.await.unwrap() {
        Err(Error::Conflict { expected: ExpectedVersion::Exact(5), actual: 1, .. }) => {}
        other => panic!("a stale append conflicts alone, naming the actual version: {other:?}"),
    }
    match missing.await.unwrap() {
        Err(Error::Conflict { expected: ExpectedVersion::StreamExists, actual: 0, .. }) => {}
        other => panic!("StreamExists on a missing stream conflicts alone: {other:?}"),
    }
    // Two appends at NoStream in one group: exactly one is stored.
    let racers = [racer_a.await.unwrap(), racer_b.await.unwrap()];
    let winners: Vec<&AppendResult> = racers.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one of two appends at NoStream succeeds: {racers:?}");
    assert!(
        racers.iter().any(|r| matches!(r, Err(Error::Conflict { actual: 1, .. }))),
        "the other conflicts with version 1: {racers:?}"
    );
    let racer = winners[0];

    // The stored appends of the second group went in one transaction, after the first.
    let grouped = [writers(&schema, "s1").await, writers(&schema, "s2").await, writers(&schema, "existing").await];
    let group_xid = &grouped[0][0];
    assert_eq!(grouped[0], vec![group_xid.clone(), group_xid.clone()], "one transaction wrote s1");
    assert_eq!(grouped[1], vec![group_xid.clone()], "the winner at NoStream is in the same transaction");
    assert_eq!(grouped[2][1], *group_xid, "the append at the right version too");
    assert_ne!(writers(&schema, "first").await, vec![group_xid.clone()], "the blocked append was a group of its own");
    assert!(writers(&schema, "s3").await.is_empty(), "nothing stored for the conflicting appends");

    // The blocked append's transaction came first; the group's appends have contiguous
    // positions (one transaction), in the order they were queued; the log holds exactly these.
    let mut grouped = vec![ok_any, ok_exact, *racer];
    grouped.sort_by_key(|r| r.first_position);
    assert!(first.last_position < grouped[0].first_position, "the blocked append comes first");
    assert!(ok_any.last_position < ok_exact.first_position, "queue order within the group");
    for pair in grouped.windows(2) {
        assert_eq!(pair[1].first_position, pair[0].last_position + 1, "one transaction's positions: {grouped:?}");
    }
    assert_eq!((ok_any.stream_version, ok_any.last_position - ok_any.first_position), (2, 1));
    assert_eq!(ok_exact.stream_version, 2);
    let log = backend.read_all(0, 100).await.unwrap();
    assert_eq!(log.len(), 6, "1 + 1 + 2 + 1 + 1 events");
    assert!(common::increasing(&log));
    assert_eq!(backend.stream_version("s3").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_append_fails_alone_and_its_group_commits() {
    a_conflicting_append_fails_alone(PayloadEncoding::Jsonb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_append_fails_alone_and_its_group_commits_bytea() {
    a_conflicting_append_fails_alone(PayloadEncoding::Bytea).await;
}

/// A repeated event id makes the server refuse the whole group; each of its appends then goes
/// alone and gets what it would have got alone: the retry is recognised, the partial repeat is
/// a duplicate, the bad payload is named, and the innocent appends are stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_the_server_refuses_fails_no_other_append_of_its_group() {
    let Some(fixture) = common::fresh_with(|b| b.group_commit(1).application_name("refused")).await else { return };
    let backend = Arc::new(fixture.inner().clone());
    let original_events = vec![event(r#"{"o":1}"#), event(r#"{"o":2}"#)];
    let stored_id = original_events[0].metadata.event_id;
    let original = backend.append("orders", ExpectedVersion::NoStream, original_events.clone()).await.unwrap();

    let held = Held::take(&fixture.schema).await;
    let first = start(&backend, "first", ExpectedVersion::Any, vec![event("{}")]).await;
    wait_until_blocked("refused").await;
    let innocent = start(&backend, "innocent", ExpectedVersion::NoStream, vec![event(r#"{"i":1}"#)]).await;
    let retry = start(&backend, "orders", ExpectedVersion::Any, original_events.clone()).await;
    let partial = start(
        &backend,
        "other",
        ExpectedVersion::Any,
        vec![event("{}").with_event_id(EventId::new()), event("{}").with_event_id(stored_id)],
    )
    .await;
    // jsonb cannot hold this number: the server refuses it (the client cannot tell beforehand).
    let refused = start(&backend, "refused", ExpectedVersion::Any, vec![event(r#"{"n":1e999999}"#)]).await;
    // After a failed group its appends go alone at the same time, in no particular order: an
    // innocent append on another stream, not one expecting the version the first one leaves.
    let innocent_too = start(&backend, "innocent-2", ExpectedVersion::NoStream, vec![event(r#"{"i":2}"#)]).await;
    held.release().await;

    first.await.unwrap().expect("the blocked append");
    let retried = retry.await.unwrap().expect("a retry of a stored append succeeds");
    assert!(retried.deduplicated);
    assert_eq!(
        (retried.first_position, retried.last_position, retried.stream_version),
        (original.first_position, original.last_position, 2)
    );
    assert!(matches!(partial.await.unwrap(), Err(Error::DuplicateEventId { .. })), "a partial repeat is refused");
    match refused.await.unwrap() {
        Err(Error::InvalidPayload { reason, .. }) => assert!(reason.contains("event 0"), "{reason}"),
        other => panic!("the refused payload is named: {other:?}"),
    }
    let innocent = innocent.await.unwrap().expect("an innocent append of the group is stored");
    let innocent_too = innocent_too.await.unwrap().expect("and another one");
    assert_eq!((innocent.stream_version, innocent_too.stream_version), (1, 1));

    let log = backend.read_all(0, 100).await.unwrap();
    let ids: HashSet<EventId> = log.iter().map(|e| e.metadata.event_id).collect();
    assert_eq!(ids.len(), log.len(), "no event stored twice");
    assert_eq!(log.len(), 2 + 1 + 2, "the original, the blocked append and the two innocent ones");
    assert_eq!(backend.stream_version("other").await.unwrap(), 0);
    assert_eq!(backend.stream_version("refused").await.unwrap(), 0);
}

/// Many appenders of one backend share commits: far fewer transactions than appends, and
/// the log is exactly what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_share_transactions() {
    let Some(fixture) = common::fresh_with(|b| b.pool_size(4)).await else { return };
    let backend = Arc::new(fixture.inner().clone());
    let mut tasks = Vec::new();
    for task in 0..32 {
        let backend = Arc::clone(&backend);
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for i in 0..20u64 {
                let events = vec![event(&format!(r#"{{"t":{task},"i":{i}}}"#))];
                results.push(backend.append(&format!("t{task}"), ExpectedVersion::Exact(i), events).await.unwrap());
            }
            results
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    let log = backend.read_all(0, 1000).await.unwrap();
    assert_eq!(log.len(), 640);
    assert!(common::increasing(&log), "positions increase along the log");
    let at: std::collections::HashMap<u64, u64> = log.iter().map(|e| (e.position, e.version)).collect();
    for result in &acknowledged {
        assert_eq!(result.first_position, result.last_position);
        assert_eq!(at.get(&result.first_position), Some(&result.stream_version), "stored where reported");
    }
    let mut session = PgConnection::connect(&common::database_url()).await.expect("connect");
    let transactions: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(DISTINCT xmin::text) FROM {}.events",
        fixture.schema
    )))
    .fetch_one(&mut session)
    .await
    .unwrap();
    eprintln!("640 appends by 32 tasks in {transactions} transactions");
    assert!(transactions < 640, "concurrent appends shared transactions ({transactions} for 640 appends)");
}
