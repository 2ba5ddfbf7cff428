//! Global order under load (contract point 4; docs/decisions/0203-postgres-transaction-horizon.md):
//! many concurrent writers over several connection pools (as several processes would), large
//! and small appends mixed so that transactions of different lengths overlap, and a reader in
//! yet another pool tailing the log by position. At the end the reader has seen every
//! committed event exactly once, in position order.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use allframe_backend_postgres::PostgresBackend;
use allframe_cqrs_core::{EventId, EventStoreBackend, ExpectedVersion, NewEvent};

const WRITERS: usize = 24;
const APPENDS_PER_WRITER: usize = 40;

/// The number of events of append `i` of writer `w`: mostly small, sometimes large (a large
/// insert holds its transaction open longer, which is what lets a later position commit
/// first in designs that assign positions from a plain sequence).
fn batch_size(w: usize, i: usize) -> usize {
    if (w + i).is_multiple_of(13) { 150 } else { 1 + (w * 7 + i) % 4 }
}

fn batch(w: usize, i: usize) -> Vec<NewEvent> {
    (0..batch_size(w, i))
        .map(|k| NewEvent::new("Tailed", format!(r#"{{"w":{w},"i":{i},"k":{k}}}"#)).with_event_id(EventId::new()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_writers_over_several_pools_never_let_a_tailing_reader_skip() {
    let Some(first) = common::fresh_with(|b| b.pool_size(12)).await else { return };
    let url = common::database_url();
    let schema = first.schema.clone();
    let connect = |pool: u32| {
        let (url, schema) = (url.clone(), schema.clone());
        async move { PostgresBackend::builder(&url).schema(&schema).pool_size(pool).connect().await.expect("connect") }
    };
    // Three writer pools (one of them the fixture's) and a reader pool of its own.
    let writers_pools: Vec<Arc<PostgresBackend>> =
        vec![Arc::new(first.inner().clone()), Arc::new(connect(6).await), Arc::new(connect(6).await)];
    let reader_pool = connect(2).await;
    let total: usize = (0..WRITERS).flat_map(|w| (0..APPENDS_PER_WRITER).map(move |i| batch_size(w, i))).sum();

    let reader = tokio::spawn(async move {
        let mut seen: Vec<(u64, EventId)> = Vec::with_capacity(total);
        let mut after = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while seen.len() < total {
            assert!(tokio::time::Instant::now() < deadline, "reader saw {} of {total} events", seen.len());
            let page = reader_pool.read_all(after, 50).await.expect("read_all");
            if page.is_empty() {
                reader_pool.wait_for_commit(after, Duration::from_millis(20)).await.expect("wait");
            }
            for event in page {
                assert!(event.position > after, "position {} after {after}: the log went backwards", event.position);
                after = event.position;
                seen.push((event.position, event.metadata.event_id));
            }
        }
        seen
    });

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let backend = Arc::clone(&writers_pools[w % writers_pools.len()]);
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..APPENDS_PER_WRITER {
                // Writers share streams in groups of three, so stream locks are contended too.
                let stream = format!("order-{}", w / 3);
                let events = batch(w, i);
                let ids: Vec<EventId> = events.iter().map(|e| e.metadata.event_id).collect();
                let result = backend.append(&stream, ExpectedVersion::Any, events).await.expect("append");
                assert_eq!(result.last_position - result.first_position + 1, ids.len() as u64, "contiguous positions");
                acknowledged.push((result.first_position, ids));
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("writer"));
    }
    let seen = reader.await.expect("reader");

    // Exactly once, in order (the reader checked that positions only increase).
    assert_eq!(seen.len(), total);
    let unique: HashSet<EventId> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(unique.len(), total, "no event seen twice");

    // What the reader saw is the log, and every acknowledged append is there, where it was reported.
    let log = first.get_all_events().await.expect("log");
    assert_eq!(log.iter().map(|e| (e.position, e.metadata.event_id)).collect::<Vec<_>>(), seen);
    let by_position: HashMap<u64, EventId> = seen.into_iter().collect();
    for (first_position, ids) in acknowledged {
        for (offset, id) in ids.iter().enumerate() {
            assert_eq!(by_position.get(&(first_position + offset as u64)), Some(id), "acknowledged event in place");
        }
    }
    let mut versions: HashMap<&str, Vec<u64>> = HashMap::new();
    for event in &log {
        versions.entry(event.stream_id.as_str()).or_default().push(event.version);
    }
    for (stream, versions) in versions {
        assert!(versions.iter().enumerate().all(|(i, v)| *v == i as u64 + 1), "versions of {stream} are 1..=n");
    }
    assert_eq!(first.head_position().await.unwrap(), log.last().expect("events").position);
}

/// The mechanism itself, step by step: while one append's transaction is open (here held
/// open on purpose from another session, after it took its position), a second append waits
/// instead of committing a higher position first; a reader sees neither until the first
/// commits, then both, in order. With positions from a plain sequence the second append would
/// commit position 2 while position 1 is invisible, and a reader checkpointing at 2 would
/// never see 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_append_cannot_commit_before_an_earlier_position() {
    use sqlx::Connection;
    let Some(fixture) = common::fresh().await else { return };
    let backend = Arc::new(fixture.inner().clone());
    let mut session = sqlx::PgConnection::connect(&common::database_url()).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut session).await.unwrap();
    let metadata = allframe_cqrs_core::Metadata::new();
    let hex: String = metadata.encode().iter().map(|b| format!("{b:02x}")).collect();
    let first: (i64, i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM {}.append_events('held', -1, ARRAY['{}'::uuid], ARRAY['Held'], ARRAY['{{}}'], NULL, \
         ARRAY['\\x{hex}'::bytea], ARRAY[now()], NULL)",
        fixture.schema, metadata.event_id
    )))
    .fetch_one(&mut session)
    .await
    .unwrap();
    assert_eq!(first.0, 1, "the held transaction appended version 1");
    assert_eq!(first.1, first.2, "one event");

    let second = {
        let backend = Arc::clone(&backend);
        tokio::spawn(
            async move { backend.append("later", ExpectedVersion::Any, vec![NewEvent::new("Later", "{}")]).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second append committed while an earlier position was in flight");
    assert!(backend.read_all(0, 10).await.unwrap().is_empty(), "nothing is visible before the first commits");
    assert_eq!(backend.head_position().await.unwrap(), 0, "nor is the head");

    sqlx::query("COMMIT").execute(&mut session).await.unwrap();
    let second = second.await.unwrap().expect("second append");
    assert!(second.first_position > first.2 as u64, "the later transaction has the higher position");
    let positions: Vec<u64> = backend.read_all(0, 10).await.unwrap().iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![first.1 as u64, second.first_position]);
}

/// A stream's versions get increasing positions even when a group that appends to it waited
/// for another stream first (decision 0203): a transaction gets its id at its first write, so
/// a group that wrote to stream `a` and then waited for `b` would hold an id older than the
/// append to `b` that went meanwhile, and its version of `b` would come before that one in the
/// log. Streams are locked before anything is written, so that cannot happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_versions_get_increasing_positions_when_a_group_waited_for_another_stream() {
    let Some(fixture) = common::fresh_with(|b| {
        b.group_commit(1).visibility_wait(Duration::from_millis(200)).application_name("waiting-group")
    })
    .await
    else {
        return;
    };
    let backend = Arc::new(fixture.inner().clone());
    let schema = fixture.schema.clone();
    // The streams exist (a new stream's first append waits before it writes anything).
    for stream in ["a", "b"] {
        backend.append(stream, ExpectedVersion::NoStream, vec![NewEvent::new("First", "{}")]).await.unwrap();
    }
    let append_held = |stream: &'static str| {
        let schema = schema.clone();
        async move {
            let mut session = common::hold_stream(&schema, stream).await;
            let metadata = allframe_cqrs_core::Metadata::new();
            let hex: String = metadata.encode().iter().map(|b| format!("{b:02x}")).collect();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SELECT * FROM {schema}.append_events('{stream}', -1, ARRAY['{}'::uuid], ARRAY['Held'], ARRAY['{{}}'], \
                 NULL, ARRAY['\\x{hex}'::bytea], ARRAY[now()], NULL)",
                metadata.event_id
            )))
            .execute(&mut session)
            .await
            .unwrap();
            session
        }
    };
    // `x` keeps the first group busy, so that the appends to `a` and `b` form the next one.
    let mut holds_x = common::hold_stream(&schema, "x").await;
    let spawn = |stream: &'static str| {
        let backend = Arc::clone(&backend);
        tokio::spawn(async move { backend.append(stream, ExpectedVersion::Any, vec![NewEvent::new("G", "{}")]).await })
    };
    let x = spawn("x");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (a, b) = (spawn("a"), spawn("b"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // `a` is held (appended to, uncommitted) by another session: the group will wait for it.
    let mut holds_a = append_held("a").await;
    sqlx::query("COMMIT").execute(&mut holds_x).await.unwrap();
    x.await.unwrap().expect("append to x");
    let mut session = <sqlx::PgConnection as sqlx::Connection>::connect(&common::database_url()).await.unwrap();
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'waiting-group' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut session)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Meanwhile another process appends to `b` (it may have to wait for the group, when the
    // group locked `b` first), then `a`'s holder commits and the group goes on.
    let other = {
        let schema = schema.clone();
        tokio::spawn(async move {
            let other = common::second_process(&common::database_url(), &schema, "other-process").await;
            other.append("b", ExpectedVersion::Any, vec![NewEvent::new("Other", "{}")]).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    sqlx::query("COMMIT").execute(&mut holds_a).await.unwrap();
    a.await.unwrap().expect("append to a");
    b.await.unwrap().expect("append to b");
    other.await.unwrap().expect("the other process's append to b");

    for stream in ["a", "b"] {
        let events = backend.read_stream(stream, 0, 10).await.unwrap();
        assert_eq!(events.len(), 3, "three events in {stream}");
        for pair in events.windows(2) {
            assert!(
                pair[0].position < pair[1].position,
                "{stream}: version {} at {}, version {} at {}: a later version came first in the log",
                pair[0].version,
                pair[0].position,
                pair[1].version,
                pair[1].position
            );
        }
    }
    let log = backend.get_all_events().await.unwrap();
    assert!(common::increasing(&log));
}
