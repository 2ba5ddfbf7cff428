//! The store's health answer: ok against a working server; `Failed` (`postgres.server`) when
//! the server is gone or stops answering (within the check's 2 s bound), and once the pool is
//! closed; `Degraded` (`postgres.pool`) while statements wait for a pooled connection, and
//! (`postgres.listener`) while the LISTEN connection is down.

mod common;

use std::time::{Duration, Instant};

use allframe_backend_postgres::PostgresBackend;
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, Health, HealthStatus, NewEvent};

/// Asks for health until `done` holds (10 s at most); the last answer.
async fn health_until(store: &PostgresBackend, what: &str, done: impl Fn(&Health) -> bool) -> Health {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = store.health().await;
        if done(&health) {
            return health;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}; last answer: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has(health: &Health, status: HealthStatus, component: &str) -> bool {
    health.reasons.iter().any(|r| r.status == status && r.component == component)
}

#[tokio::test]
async fn healthy_then_failed_once_the_pool_is_closed() {
    let Some(fixture) = common::fresh().await else { return };
    let store = fixture.inner();
    store.append("s", ExpectedVersion::Any, vec![NewEvent::new("E", "{}")]).await.unwrap();
    // The LISTEN task connects in the background: degraded until it listens.
    let health = health_until(store, "the store is healthy", Health::is_ok).await;
    assert!(health.reasons.is_empty());

    store.close().await;
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Failed, "{health}");
    assert_eq!(health.reasons[0].component, "postgres.pool");
}

#[tokio::test]
async fn a_server_that_stops_answering_or_goes_away_fails_the_check() {
    if !common::server_available().await {
        return;
    }
    let url = common::database_url();
    let proxy = common::proxy::Proxy::in_front_of(&url).await;
    let schema = common::fresh_schema();
    let store = PostgresBackend::builder(&proxy.url(&url))
        .schema(&schema)
        .pool_size(2)
        .listener_health_check(Duration::from_millis(200), Duration::from_millis(500))
        .connect()
        .await
        .expect("connect through the proxy");
    store.append("s", ExpectedVersion::Any, vec![NewEvent::new("E", "{}")]).await.unwrap();
    health_until(&store, "the store is healthy", Health::is_ok).await;

    // Half-open: the pooled connections stay open, nothing comes back. Frozen while idle, so
    // that the check takes one of them (with every connection in use, it would open its own).
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.pool().size() == 0 || store.pool().num_idle() < store.pool().size() as usize {
        assert!(Instant::now() < deadline, "the pool never went idle");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.freeze_all_connections();
    let started = Instant::now();
    let health = store.health().await;
    assert!(started.elapsed() < Duration::from_secs(5), "the check is bounded: took {:?}", started.elapsed());
    assert_eq!(health.status, HealthStatus::Failed, "{health}");
    assert!(has(&health, HealthStatus::Failed, "postgres.server"), "{health}");
    assert!(health.to_string().contains("no answer within 2s"), "{health}");

    // Gone: every connection closed, new ones refused.
    drop(proxy);
    let health = health_until(&store, "the LISTEN connection is seen down", |h| {
        has(h, HealthStatus::Degraded, "postgres.listener")
    })
    .await;
    assert_eq!(health.status, HealthStatus::Failed, "{health}");
    assert!(has(&health, HealthStatus::Failed, "postgres.server"), "{health}");
    assert_eq!(health.status.http_status(), 503);
    drop(store);
    common::drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_waiting_for_a_connection_degrade_the_pool() {
    let Some(fixture) = common::fresh_with(|b| b.pool_size(1)).await else { return };
    let store = fixture.inner().clone();
    health_until(&store, "the store is healthy", Health::is_ok).await;

    // The test holds the only connection; two reads wait for it.
    let held = store.pool().acquire().await.unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.stream_version("s").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Degraded, "{health}");
    assert!(has(&health, HealthStatus::Degraded, "postgres.pool"), "{health}");
    assert!(!has(&health, HealthStatus::Failed, "postgres.server"), "a busy pool is not a failed server: {health}");
    assert_eq!(health.status.http_status(), 200);

    drop(held);
    for read in waiting {
        read.await.unwrap().unwrap();
    }
    health_until(&store, "the pool has room again", Health::is_ok).await;
}

#[tokio::test]
async fn a_read_replica_that_goes_away_fails_the_check() {
    if !common::server_available().await || !common::replica_available().await {
        return;
    }
    let Some(primary) = common::fresh().await else { return };
    common::wait_for_replica_schema(&primary.schema).await;
    let replica_url = common::replica_url();
    let proxy = common::proxy::Proxy::in_front_of(&replica_url).await;
    let reader = PostgresBackend::builder(&common::database_url())
        .schema(&primary.schema)
        .read_replica(proxy.url(&replica_url))
        .pool_size(2)
        .run_migrations(false)
        .connect()
        .await
        .expect("a backend reading from the replica");
    primary.inner().append("s", ExpectedVersion::Any, vec![NewEvent::new("E", "{}")]).await.unwrap();
    // Within the check's bound, the replica replays the append.
    health_until(&reader, "the replica has caught up", Health::is_ok).await;

    drop(proxy);
    let health = reader.health().await;
    assert_eq!(health.status, HealthStatus::Failed, "{health}");
    assert!(has(&health, HealthStatus::Failed, "postgres.replica"), "{health}");
    assert!(!has(&health, HealthStatus::Failed, "postgres.server"), "the primary answers: {health}");
}
