//! Faults: the server drops the backend's connections (`pg_terminate_backend`) while it
//! appends and reads; a statement timeout. The backend reports transient errors or retries,
//! never acknowledges an append that did not commit, and recovers (including its LISTEN task).
//! Without retries, every append is either acknowledged and stored where reported, or an
//! error and stored whole or not at all; a subscriber running through the faults delivers
//! every committed event once, in order.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use allframe_backend_postgres::PostgresBackend;
use allframe_cqrs_core::{
    Error, EventId, EventStoreBackend, ExpectedVersion, NewEvent, RawSubscription, StartFrom, SubscriptionOptions,
};
use sqlx::Connection;

const WRITERS: usize = 4;
const APPENDS: u64 = 60;

async fn admin() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&common::database_url()).await.expect("admin connection")
}

/// Terminates every server process whose application_name is `name`; returns how many.
async fn terminate(conn: &mut sqlx::PgConnection, name: &str) -> u64 {
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(conn)
    .await
    .expect("terminate");
    killed.into_iter().filter(|k| *k).count() as u64
}

/// Terminates the connections named `app_name` every 15 ms until `stop`; returns how many.
fn spawn_killer(stop: &Arc<AtomicBool>, app_name: &str) -> tokio::task::JoinHandle<u64> {
    let (stop, app_name) = (Arc::clone(stop), app_name.to_owned());
    tokio::spawn(async move {
        let mut conn = admin().await;
        let mut killed = 0;
        while !stop.load(Ordering::SeqCst) {
            killed += terminate(&mut conn, &app_name).await;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        killed
    })
}

/// Waits for every writer, then stops the killer: the writers' results and how many
/// connections it terminated.
async fn join_writers<T>(
    writers: Vec<tokio::task::JoinHandle<T>>,
    stop: &AtomicBool,
    killer: tokio::task::JoinHandle<u64>,
) -> (Vec<T>, u64) {
    let mut results = Vec::new();
    for writer in writers {
        results.push(writer.await.expect("writer"));
    }
    stop.store(true, Ordering::SeqCst);
    (results, killer.await.expect("killer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_connections_never_acknowledge_uncommitted_appends_and_recover() {
    let Some(fixture) = common::fresh_with(|b| b.pool_size(4)).await else { return };
    let backend = Arc::new(fixture.inner().clone());
    let app_name = format!("allframe:{}", fixture.schema);
    let stop = Arc::new(AtomicBool::new(false));
    let transient_errors = Arc::new(AtomicU64::new(0));

    // Kill the backend's connections every few milliseconds while it works.
    let killer = spawn_killer(&stop, &app_name);

    // Readers: every error is transient; every page is in position order.
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (backend, stop, transient_errors) =
                (Arc::clone(&backend), Arc::clone(&stop), Arc::clone(&transient_errors));
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let result = if r == 0 {
                        backend.read_all(0, 200).await
                    } else {
                        backend.read_stream("fault-0", 0, 200).await
                    };
                    match result {
                        Ok(page) => {
                            assert!(page.windows(2).all(|w| w[0].position < w[1].position));
                            reads += 1;
                        }
                        Err(e) => {
                            assert!(e.is_transient(), "a read failed with a non-transient error: {e:?}");
                            transient_errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                reads
            })
        })
        .collect();

    // Writers: each append is tried until acknowledged, always with the same event ids and
    // expected version, so a retry of an append that did commit is recognised (deduplicated).
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (backend, transient_errors) = (Arc::clone(&backend), Arc::clone(&transient_errors));
            tokio::spawn(async move {
                let stream = format!("fault-{w}");
                let mut acknowledged = Vec::new();
                for i in 0..APPENDS {
                    let events: Vec<NewEvent> = (0..1 + i % 3)
                        .map(|k| NewEvent::new("Faulted", format!(r#"{{"w":{w},"i":{i},"k":{k}}}"#)))
                        .collect();
                    let ids: Vec<EventId> = events.iter().map(|e| e.metadata.event_id).collect();
                    let expected = ExpectedVersion::Exact(
                        acknowledged.iter().map(|(_, ids): &(_, Vec<_>)| ids.len() as u64).sum(),
                    );
                    let mut tries = 0;
                    let result = loop {
                        tries += 1;
                        match backend.append(&stream, expected, events.clone()).await {
                            Ok(result) => break result,
                            Err(e) => {
                                assert!(e.is_transient(), "an append failed with a non-transient error: {e:?}");
                                assert!(tries < 200, "append never recovered: {e:?}");
                                transient_errors.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    };
                    acknowledged.push((result, ids));
                }
                (stream, acknowledged)
            })
        })
        .collect();

    let (acknowledged, killed) = join_writers(writers, &stop, killer).await;
    let reads: u64 = futures_util::future::join_all(readers).await.into_iter().map(|r| r.expect("reader")).sum();
    assert!(killed > 0, "the test terminated no connection");
    let deduplicated = acknowledged.iter().flat_map(|(_, a)| a).filter(|(r, _)| r.deduplicated).count();
    eprintln!(
        "terminated {killed} connections; {} transient errors surfaced; {reads} reads succeeded; \
         {deduplicated} appends were acknowledged as retries of an append whose reply was lost",
        transient_errors.load(Ordering::SeqCst)
    );

    // Every acknowledged append is stored, once, where it was reported; nothing else is stored.
    let log = backend.get_all_events().await.expect("log after the faults");
    let by_id: HashMap<EventId, (String, u64, u64)> =
        log.iter().map(|e| (e.metadata.event_id, (e.stream_id.to_string(), e.version, e.position))).collect();
    assert_eq!(by_id.len(), log.len(), "no event stored twice");
    let mut expected_events = 0;
    for (stream, appends) in &acknowledged {
        let mut version = 0;
        for (result, ids) in appends {
            for (offset, id) in ids.iter().enumerate() {
                version += 1;
                let stored = by_id.get(id).unwrap_or_else(|| panic!("acknowledged event {id} is not stored"));
                assert_eq!(stored, &(stream.clone(), version, result.first_position + offset as u64));
                expected_events += 1;
            }
            assert_eq!(result.stream_version, version);
        }
    }
    assert_eq!(log.len(), expected_events, "only acknowledged appends are stored");
    assert!(common::increasing(&log), "positions increase along the log after the faults");

    // The LISTEN task reconnected: a commit by another process (another pool, so this
    // backend's own commit signal is not involved) wakes a subscriber waiting on this one.
    let other = common::second_process(&common::database_url(), &fixture.schema, "allframe-fault-other").await;
    let options = SubscriptionOptions { page_size: 10, max_wait: Duration::from_secs(600) };
    let mut live = RawSubscription::start(Arc::clone(&backend), StartFrom::End, options).await.expect("subscribe");
    // The first commit may wake it through the listener's reconnect (which re-reads the head);
    // by the second, the listener is connected and only NOTIFY can wake it in time.
    for round in 0..2u64 {
        let woken = tokio::spawn(async move {
            let event = live.next().await;
            (live, event)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        other
            .append("fault-live", ExpectedVersion::Exact(round), vec![NewEvent::new("Live", "{}")])
            .await
            .expect("append by the other process");
        let (returned, event) = tokio::time::timeout(Duration::from_secs(30), woken)
            .await
            .expect("the subscriber was not woken by NOTIFY after the LISTEN connection was dropped")
            .expect("task");
        live = returned;
        let event = event.expect("next");
        assert_eq!((event.stream_id.as_str(), event.version), ("fault-live", round + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_is_a_typed_error_and_changes_nothing() {
    let Some(fixture) = common::fresh_with(|b| b.statement_timeout(Duration::from_millis(300))).await else { return };
    let backend = fixture.inner();
    backend.append("timed", ExpectedVersion::Any, vec![NewEvent::new("T", "{}")]).await.expect("append");
    let head = backend.head_position().await.unwrap();

    // Another session holds the stream's lock, so the next append waits on it until the
    // statement timeout cancels it.
    let mut blocker = common::hold_stream(&fixture.schema, "timed").await;
    let result = backend.append("timed", ExpectedVersion::Exact(1), vec![NewEvent::new("T", "{}")]).await;
    assert!(matches!(result, Err(Error::Timeout { backend: "postgres", .. })), "expected a timeout, got {result:?}");
    assert!(result.unwrap_err().is_transient());
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();

    assert_eq!(backend.stream_version("timed").await.unwrap(), 1, "the timed-out append stored nothing");
    assert_eq!(backend.head_position().await.unwrap(), head);
    let result = backend.append("timed", ExpectedVersion::Exact(1), vec![NewEvent::new("T", "{}")]).await.unwrap();
    assert_eq!(result.stream_version, 2, "the store works after the timeout");
    assert!(result.first_position > head);
}

/// One append's outcome under faults: its event ids and what the backend answered.
type Outcome = (Vec<EventId>, Result<allframe_cqrs_core::AppendResult, Error>);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_retries_every_append_is_acknowledged_and_stored_or_an_error_and_a_subscriber_sees_each_commit_once() {
    // No automatic retry: every lost connection surfaces, so both outcomes are exercised.
    let Some(fixture) = common::fresh_with(|b| b.pool_size(4).retries(0)).await else { return };
    let backend = Arc::new(fixture.inner().clone());
    let app_name = format!("allframe:{}", fixture.schema);
    let stop = Arc::new(AtomicBool::new(false));

    // Kill the pool's connections and the listener's every few milliseconds.
    let killer = spawn_killer(&stop, &app_name);

    // A subscriber from the beginning, on the faulted backend, until it reaches the final head.
    let (final_head_tx, final_head) = tokio::sync::watch::channel(None::<u64>);
    let subscriber = {
        let backend = Arc::clone(&backend);
        tokio::spawn(async move {
            let options = SubscriptionOptions { page_size: 25, max_wait: Duration::from_millis(100) };
            let mut subscription = loop {
                match RawSubscription::start(Arc::clone(&backend), StartFrom::Beginning, options).await {
                    Ok(subscription) => break subscription,
                    Err(e) => assert!(e.is_transient(), "subscribe: {e:?}"),
                }
            };
            let (mut seen, mut errors) = (Vec::new(), 0u64);
            while final_head.borrow().is_none_or(|head| subscription.checkpoint() < head) {
                // `next` is cancel-safe: a timeout only lets the loop look at the final head.
                match tokio::time::timeout(Duration::from_millis(200), subscription.next()).await {
                    Ok(Ok(event)) => seen.push((event.position, event.metadata.event_id)),
                    Ok(Err(e)) => {
                        assert!(e.is_transient(), "the subscription failed with a non-transient error: {e:?}");
                        errors += 1;
                    }
                    Err(_) => {}
                }
            }
            (seen, errors)
        })
    };

    // Writers: one attempt per append, fresh ids each time.
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move {
                let stream = format!("once-{w}");
                let mut outcomes: Vec<Outcome> = Vec::new();
                for i in 0..APPENDS {
                    let events: Vec<NewEvent> = (0..1 + i % 3)
                        .map(|k| NewEvent::new("Once", format!(r#"{{"w":{w},"i":{i},"k":{k}}}"#)))
                        .collect();
                    let ids = events.iter().map(|e| e.metadata.event_id).collect();
                    let result = backend.append(&stream, ExpectedVersion::Any, events).await;
                    if let Err(e) = &result {
                        assert!(e.is_transient(), "an append failed with a non-transient error: {e:?}");
                    }
                    outcomes.push((ids, result));
                }
                (stream, outcomes)
            })
        })
        .collect();
    let (outcomes, killed) = join_writers(writers, &stop, killer).await;
    assert!(killed > 0, "the test terminated no connection");

    // The pool recovers: once the dead pooled connections are used up (each fails one
    // call), appends succeed again, and then keep succeeding.
    let mut failed_after = 0;
    let recovered = loop {
        match backend.append("after", ExpectedVersion::Any, vec![NewEvent::new("After", "{}")]).await {
            Ok(result) => break result,
            Err(e) => {
                assert!(e.is_transient(), "{e:?}");
                failed_after += 1;
                assert!(failed_after <= 5, "the pool did not recover: {e:?}");
            }
        }
    };
    for _ in 0..5 {
        backend.append("after", ExpectedVersion::Any, vec![NewEvent::new("After", "{}")]).await.expect("recovered");
    }
    let log = backend.get_all_events().await.expect("log after the faults");
    final_head_tx.send(Some(log.last().map_or(0, |e| e.position))).expect("subscriber running");
    let (seen, subscriber_errors) =
        tokio::time::timeout(Duration::from_secs(60), subscriber).await.expect("subscriber finished").expect("task");

    // Every acknowledged append is stored where reported; every failed one is stored whole
    // (its commit's reply was lost) or not at all; versions stay contiguous.
    let by_id: HashMap<EventId, (String, u64, u64)> =
        log.iter().map(|e| (e.metadata.event_id, (e.stream_id.to_string(), e.version, e.position))).collect();
    assert_eq!(by_id.len(), log.len(), "no event stored twice");
    assert!(common::increasing(&log), "positions increase along the log");
    let (mut acknowledged, mut failed, mut failed_but_stored, mut checked) = (0, 0, 0, 0);
    for (stream, appends) in &outcomes {
        for (ids, result) in appends {
            let stored: Vec<_> = ids.iter().map(|id| by_id.get(id)).collect();
            match result {
                Ok(result) => {
                    acknowledged += 1;
                    for (offset, slot) in stored.iter().enumerate() {
                        let expected = (
                            stream.clone(),
                            result.stream_version - (ids.len() - 1 - offset) as u64,
                            result.first_position + offset as u64,
                        );
                        assert_eq!(*slot, Some(&expected), "acknowledged event {offset} of {ids:?}");
                        checked += 1;
                    }
                }
                Err(_) => {
                    failed += 1;
                    if stored.iter().all(Option::is_some) {
                        failed_but_stored += 1;
                        let first = stored[0].expect("stored");
                        for (offset, slot) in stored.iter().enumerate() {
                            let expected = (stream.clone(), first.1 + offset as u64, first.2 + offset as u64);
                            assert_eq!(*slot, Some(&expected), "a failed append stored whole, contiguous");
                        }
                    } else {
                        assert!(stored.iter().all(Option::is_none), "a failed append stored in part: {stored:?}");
                    }
                    checked += ids.len();
                }
            }
        }
        let versions: Vec<u64> = log.iter().filter(|e| e.stream_id.as_str() == stream).map(|e| e.version).collect();
        assert!(versions.iter().enumerate().all(|(i, v)| *v == i as u64 + 1), "contiguous versions in {stream}");
    }
    assert!(recovered.stream_version >= 1);

    // The subscriber saw the whole log, each event once, in order, despite its own errors.
    let expected: Vec<(u64, EventId)> = log.iter().map(|e| (e.position, e.metadata.event_id)).collect();
    assert_eq!(seen, expected, "the subscriber delivered every committed event exactly once, in order");
    eprintln!(
        "terminated {killed} connections; {acknowledged} appends acknowledged, {failed} failed \
         ({failed_but_stored} of them committed before the reply was lost); {checked} events checked; \
         {failed_after} failed calls before the pool recovered; the subscriber met {subscriber_errors} \
         transient errors and delivered all {} events",
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_reply_is_lost_after_its_commit_is_an_error_or_a_deduplicated_retry() {
    if !common::server_available().await {
        return;
    }
    let url = common::database_url();
    let proxy = common::proxy::Proxy::in_front_of(&url).await;
    let schema = common::fresh_schema();
    let direct = PostgresBackend::builder(&url).schema(&schema).connect().await.expect("direct backend");
    let through = |retries: u32| {
        PostgresBackend::builder(&proxy.url(&url)).schema(&schema).retries(retries).pool_size(2).connect()
    };

    // Without retries: the caller gets a transient error, yet the append committed; the
    // caller's own retry with the same ids is recognised and answered with the original.
    let once = through(0).await.expect("backend without retries");
    once.append("lost", ExpectedVersion::NoStream, vec![NewEvent::new("Before", "{}")]).await.expect("append");
    let events = vec![NewEvent::new("Lost", r#"{"marker":"reply-lost-1"}"#), NewEvent::new("Lost", "{}")];
    proxy.lose_reply_to(b"reply-lost-1");
    let result = once.append("lost", ExpectedVersion::Exact(1), events.clone()).await;
    assert!(proxy.reply_lost(), "the proxy saw the append");
    assert!(result.as_ref().is_err_and(Error::is_transient), "a lost reply is a transient error: {result:?}");
    let stored = direct.read_stream("lost", 0, 10).await.expect("read");
    assert_eq!(stored.len(), 3, "the append committed before its reply was lost");
    let retried = once.append("lost", ExpectedVersion::Exact(1), events.clone()).await.expect("retry");
    assert!(retried.deduplicated, "the retry is recognised: {retried:?}");
    assert_eq!(
        (retried.stream_version, retried.first_position, retried.last_position),
        (3, stored[1].position, stored[2].position)
    );

    // With retries (the default): the backend retries on another connection by itself and
    // answers with the original positions; the events are stored once.
    let retrying = through(3).await.expect("backend with retries");
    let events = vec![NewEvent::new("Lost", r#"{"marker":"reply-lost-2"}"#)];
    proxy.lose_reply_to(b"reply-lost-2");
    let result = retrying.append("lost", ExpectedVersion::Exact(3), events).await.expect("retried append");
    assert!(proxy.reply_lost(), "the proxy saw the append");
    assert!(result.deduplicated, "the automatic retry found the committed append: {result:?}");
    let log = direct.read_all(0, 100).await.expect("log");
    assert_eq!(log.len(), 4, "every event stored once");
    assert_eq!((result.stream_version, result.first_position), (4, log[3].position));
    assert!(common::increasing(&log) && log.iter().enumerate().all(|(i, e)| e.version == i as u64 + 1));

    once.close().await;
    retrying.close().await;
    direct.close().await;
    drop(proxy);
    common::drop_schema(&schema).await;
}
