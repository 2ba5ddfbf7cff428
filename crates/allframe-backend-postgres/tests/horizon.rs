//! A transaction left open holds readers back, visibly (decision 0203): readers read below the
//! oldest transaction still running in the cluster, so while one stays open, events committed
//! after it are stored but not readable. The backend names that transaction
//! (`horizon_status`, `stats`), an append waits at most `visibility_wait` to become visible,
//! and readers go on, skipping nothing, once the transaction ends; for example when the server
//! ends it after `idle_in_transaction_session_timeout`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe_cqrs_core::{
    EventStoreBackend, ExpectedVersion, NewEvent, RawSubscription, StartFrom, SubscriptionOptions,
};
use sqlx::Connection;

/// A session that opens a transaction, takes a transaction id and stays idle in it.
async fn forgotten_transaction(name: &str) -> (sqlx::PgConnection, i32) {
    let url = common::database_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    let mut session =
        sqlx::PgConnection::connect(&format!("{url}{separator}application_name={name}")).await.expect("connect");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut session).await.unwrap();
    sqlx::query("BEGIN").execute(&mut session).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut session).await.unwrap();
    (session, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holds_readers_back_visibly_and_they_skip_nothing_when_it_ends() {
    let Some(fixture) = common::fresh_with(|b| b.visibility_wait(Duration::from_millis(400))).await else { return };
    let backend = Arc::new(fixture.inner().clone());
    let before = backend.append("held", ExpectedVersion::NoStream, vec![NewEvent::new("Before", "{}")]).await.unwrap();
    let options = SubscriptionOptions { page_size: 10, max_wait: Duration::from_millis(100) };
    let mut subscription =
        RawSubscription::start(Arc::clone(&backend), StartFrom::Beginning, options).await.expect("subscribe");
    assert_eq!(subscription.next().await.unwrap().position, before.first_position);

    let (mut forgotten, pid) = forgotten_transaction("forgotten-session").await;
    let started = Instant::now();
    let held = backend.append("held", ExpectedVersion::Exact(1), vec![NewEvent::new("Held", "{}")]).await;
    let held = held.expect("an append is acknowledged even while readers are held back");
    assert!(started.elapsed() >= Duration::from_millis(400), "it waited up to visibility_wait to become visible");
    assert_eq!(backend.stream_version("held").await.unwrap(), 2, "it is committed (stream reads see it)");
    assert!(backend.read_all(before.last_position, 10).await.unwrap().is_empty(), "readers do not see it yet");
    assert_eq!(backend.head_position().await.unwrap(), before.last_position);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), subscription.next()).await.is_err(),
        "the subscriber waits"
    );

    // What holds readers back is visible, named. (Another test's transaction, older still,
    // may hold it for a moment on a shared server: ask until the forgotten one is the oldest.)
    let mut status = backend.horizon_status().await.unwrap();
    for _ in 0..100 {
        if status.oldest_transaction.as_ref().is_some_and(|t| t.pid == pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = backend.horizon_status().await.unwrap();
    }
    assert_eq!(status.held_back_events, 1);
    let oldest = status.oldest_transaction.expect("the open transaction is named");
    assert_eq!((oldest.pid, oldest.application_name.as_str()), (pid, "forgotten-session"));
    assert_eq!(oldest.state, "idle in transaction");
    let stats = backend.stats().await.unwrap();
    assert_eq!(stats.details.get("horizon_held_back_events").map(String::as_str), Some("1"));
    let named = stats.details.get("oldest_transaction").cloned().unwrap_or_default();
    assert!(named.contains(&format!("pid {pid}")) && named.contains("forgotten-session"), "{named}");

    // The server ends it (idle_in_transaction_session_timeout, as the guide recommends): the
    // subscriber then gets the held event, and nothing is skipped.
    sqlx::query("SET idle_in_transaction_session_timeout = '200ms'").execute(&mut forgotten).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("the subscriber goes on once the transaction ends")
        .unwrap();
    assert_eq!((event.position, event.version), (held.first_position, 2));
    assert!(sqlx::query("SELECT 1").execute(&mut forgotten).await.is_err(), "the server ended the session");
    let status = backend.horizon_status().await.unwrap();
    assert_eq!(status.held_back_events, 0);
    assert_ne!(status.oldest_transaction.map(|t| t.pid), Some(pid));

    // With nothing older open, an append is visible when acknowledged.
    let after = backend.append("held", ExpectedVersion::Exact(2), vec![NewEvent::new("After", "{}")]).await.unwrap();
    assert_eq!(backend.read_all(held.last_position, 10).await.unwrap()[0].position, after.first_position);
}
