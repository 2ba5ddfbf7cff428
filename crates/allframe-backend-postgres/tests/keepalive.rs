//! Dead connections are noticed: the server probes idle connections (TCP keepalive set on
//! every connection), and the LISTEN task replaces a connection that was terminated or went
//! half-open, so commits of other processes keep waking subscribers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use allframe_backend_postgres::PostgresBackend;
use allframe_cqrs_core::{
    EventStoreBackend, ExpectedVersion, NewEvent, RawSubscription, StartFrom, SubscriptionOptions,
};
use sqlx::Connection;

/// The three keepalive settings as a pool connection of `backend` sees them.
async fn keepalive_settings(backend: &PostgresBackend) -> (String, String, String) {
    sqlx::query_as(
        "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'), \
         current_setting('tcp_keepalives_count')",
    )
    .fetch_one(backend.pool())
    .await
    .expect("settings")
}

#[tokio::test]
async fn the_server_probes_every_connection_with_tcp_keepalive() {
    let Some(default) = common::fresh().await else { return };
    assert_eq!(keepalive_settings(default.inner()).await, ("60".into(), "10".into(), "3".into()));

    let Some(short) = common::fresh_with(|b| b.tcp_keepalive(Some(Duration::from_secs(5)))).await else { return };
    assert_eq!(keepalive_settings(short.inner()).await, ("5".into(), "5".into(), "3".into()));

    // `None` leaves the server's own settings, as a plain connection sees them.
    let Some(untouched) = common::fresh_with(|b| b.tcp_keepalive(None)).await else { return };
    let mut plain = sqlx::PgConnection::connect(&common::database_url()).await.expect("connect");
    let server: (String, String, String) = sqlx::query_as(
        "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'), \
         current_setting('tcp_keepalives_count')",
    )
    .fetch_one(&mut plain)
    .await
    .expect("settings");
    assert_eq!(keepalive_settings(untouched.inner()).await, server);
}

/// A subscriber of `backend` from the end of the log, and a check that the next commit of
/// `other` (another process: its commit reaches `backend` only through LISTEN/NOTIFY or the
/// listener's reconnect) wakes it.
struct Waiter {
    live: Option<RawSubscription<PostgresBackend>>,
}

impl Waiter {
    async fn start(backend: &PostgresBackend) -> Waiter {
        // max_wait long enough that only the listener can wake the subscriber in time.
        let options = SubscriptionOptions { page_size: 10, max_wait: Duration::from_secs(600) };
        let live = RawSubscription::start(Arc::new(backend.clone()), StartFrom::End, options).await.expect("subscribe");
        Waiter { live: Some(live) }
    }

    async fn woken_by(&mut self, other: &PostgresBackend, stream: &str, what: &str) {
        let mut live = self.live.take().expect("subscription");
        let woken = tokio::spawn(async move {
            let event = live.next().await;
            (live, event)
        });
        let appended = other
            .append(stream, ExpectedVersion::Any, vec![NewEvent::new("Live", "{}")])
            .await
            .expect("append by the other process");
        let (live, event) = tokio::time::timeout(Duration::from_secs(30), woken)
            .await
            .unwrap_or_else(|_| panic!("{what}: the subscriber was not woken within 30 s"))
            .expect("task");
        let event = event.expect("next");
        assert_eq!((event.stream_id.as_str(), event.position), (stream, appended.last_position), "{what}");
        self.live = Some(live);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_listen_connection_is_noticed_and_replaced() {
    if !common::server_available().await {
        return;
    }
    let url = common::database_url();
    let proxy = common::proxy::Proxy::in_front_of(&url).await;
    let proxied = proxy.url(&url);
    let schema = common::fresh_schema();
    let backend = PostgresBackend::builder(&proxied)
        .schema(&schema)
        .pool_size(2)
        .listener_health_check(Duration::from_millis(200), Duration::from_millis(500))
        .connect()
        .await
        .expect("connect through the proxy");
    let other = common::second_process(&url, &schema, "allframe-keepalive-other").await;
    proxy.wait_for_listens(1).await;
    let mut waiter = Waiter::start(&backend).await;
    waiter.woken_by(&other, "half-open", "before the fault").await;

    // The LISTEN connection goes half-open: the server's NOTIFYs no longer arrive and
    // nothing says the connection is gone. Only the health check can notice.
    // (At least one: on a loaded machine a slow answer may already have replaced one.)
    assert!(proxy.freeze_listen_connections() >= 1, "a LISTEN connection to freeze");
    waiter.woken_by(&other, "half-open", "after the LISTEN connection went half-open").await;
    proxy.wait_for_listens(2).await;
    waiter.woken_by(&other, "half-open", "on the new LISTEN connection").await;

    other.close().await;
    backend.close().await;
    drop(proxy);
    common::drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listen_connection_is_replaced() {
    let Some(fixture) = common::fresh_with(|b| b.pool_size(1)).await else { return };
    let backend = fixture.inner().clone();
    let other = common::second_process(&common::database_url(), &fixture.schema, "allframe-keepalive-other").await;
    let mut waiter = Waiter::start(&backend).await;
    waiter.woken_by(&other, "terminated", "before the fault").await;

    // The pool has one connection; the backend's other server process is its listener.
    let pool_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(backend.pool()).await.expect("pid");
    let mut admin = sqlx::PgConnection::connect(&common::database_url()).await.expect("admin");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> $2",
    )
    .bind(format!("allframe:{}", fixture.schema))
    .bind(pool_pid)
    .fetch_all(&mut admin)
    .await
    .expect("terminate");
    // The listener is connected (it woke the subscriber); a migration connection still
    // closing may be listed too.
    assert!(killed.contains(&true), "the listener's server process was terminated");
    waiter.woken_by(&other, "terminated", "after the listener was terminated").await;
    waiter.woken_by(&other, "terminated", "on the new LISTEN connection").await;
    other.close().await;
}

/// A pooled connection that went half-open while idle is noticed before use (a ping without
/// an answer within the check's timeout) and replaced, instead of the next statement waiting
/// for the kernel to give up on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_gone_half_open_while_idle_is_replaced_before_use() {
    if !common::server_available().await {
        return;
    }
    let url = common::database_url();
    let proxy = common::proxy::Proxy::in_front_of(&url).await;
    let schema = common::fresh_schema();
    PostgresBackend::migrate(&url, &schema).await.expect("migrate");
    let backend = PostgresBackend::builder(&proxy.url(&url))
        .schema(&schema)
        .pool_size(1)
        .live_notifications(false)
        .idle_check(Duration::from_millis(100), Duration::from_millis(500))
        .run_migrations(false)
        .connect()
        .await
        .expect("connect through the proxy");
    backend.append("idle", ExpectedVersion::NoStream, vec![NewEvent::new("First", "{}")]).await.expect("append");
    // sqlx pings a connection as it goes back to the pool, without a time limit: freeze it once
    // it is back, idle (a connection that goes half-open during that ping is lost to the pool
    // until the kernel gives up on it; docs/POSTGRES.md).
    for _ in 0..500 {
        if backend.pool().num_idle() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(proxy.freeze_all_connections() >= 1, "the pool's connection went half-open");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let appended = tokio::time::timeout(
        Duration::from_secs(10),
        backend.append("idle", ExpectedVersion::Exact(1), vec![NewEvent::new("Second", "{}")]),
    )
    .await
    .expect("the half-open connection was replaced, not waited on");
    assert_eq!(appended.expect("append on a new connection").stream_version, 2);
    drop(backend);
    drop(proxy);
    common::drop_schema(&schema).await;
}
