//! Operations: migrations run separately, schemas, bad configuration, SQL access to the
//! tables, live notifications across processes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use allframe_backend_postgres::{PayloadEncoding, PostgresBackend};
use allframe_cqrs_core::{
    Error, EventStoreBackend, ExpectedVersion, NewEvent, RawSubscription, StartFrom, SubscriptionOptions,
};
use sqlx::Connection;

async fn schema_exists(schema: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(&common::database_url()).await.expect("connect");
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(&mut conn)
        .await
        .expect("query")
}

#[tokio::test]
async fn migrations_run_separately_and_repeatably() {
    if !common::server_available().await {
        return;
    }
    let url = common::database_url();
    let schema = common::fresh_schema();
    // Without migrations, an empty schema is not a store.
    let result = PostgresBackend::builder(&url).schema(&schema).run_migrations(false).connect().await;
    assert!(matches!(result, Err(Error::NotAStore { .. })), "unmigrated schema: {result:?}");
    assert!(!schema_exists(&schema).await, "connect without migrations creates nothing");

    PostgresBackend::migrate(&url, &schema).await.expect("migrate");
    PostgresBackend::migrate(&url, &schema).await.expect("migrate again: nothing to do");
    let backend =
        PostgresBackend::builder(&url).schema(&schema).run_migrations(false).connect().await.expect("connect");
    backend.append("m", ExpectedVersion::NoStream, vec![NewEvent::new("M", "{}")]).await.expect("append");
    // Concurrent connects that all migrate are fine too (the migrator locks).
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let (url, schema) = (url.clone(), schema.clone());
            tokio::spawn(async move { PostgresBackend::builder(&url).schema(&schema).connect().await.map(|_| ()) })
        })
        .collect();
    for connect in connects {
        connect.await.expect("task").expect("concurrent connect");
    }
    assert_eq!(backend.stream_version("m").await.unwrap(), 1);
    backend.close().await;
    common::drop_schema(&schema).await;
}

#[tokio::test]
async fn bad_configuration_is_refused_before_touching_the_database() {
    let url = common::database_url();
    for schema in ["Billing", "a-b", "x; DROP SCHEMA public", "pg_toast", ""] {
        let result = PostgresBackend::builder(&url).schema(schema).connect().await;
        assert!(matches!(result, Err(Error::Configuration { .. })), "schema {schema:?}: {result:?}");
    }
    let result = PostgresBackend::connect("not a url").await;
    assert!(matches!(result, Err(Error::Configuration { .. })), "bad URL: {result:?}");
    // Nothing listens on port 1: a transient error (the server may come back), not a panic.
    let result = PostgresBackend::builder("postgres://postgres@127.0.0.1:1/test")
        .acquire_timeout(Duration::from_millis(300))
        .connect()
        .await;
    assert!(result.as_ref().is_err_and(Error::is_transient), "unreachable server: {result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_keep_applications_apart() {
    let Some(a) = common::fresh().await else { return };
    let Some(b) = common::fresh_with(|b| b.payload_encoding(PayloadEncoding::Bytea)).await else { return };
    a.append(
        "shared-name",
        ExpectedVersion::NoStream,
        vec![NewEvent::new("A", r#"{"app":"a"}"#); 3]
            .into_iter()
            .map(|e| e.with_event_id(allframe_cqrs_core::EventId::new()))
            .collect(),
    )
    .await
    .unwrap();
    let result = b
        .append("shared-name", ExpectedVersion::NoStream, vec![NewEvent::new("B", vec![0u8, 1, 2])])
        .await
        .expect("the same stream name in another schema is another stream");
    assert_eq!(result.stream_version, 1);
    assert_eq!(b.get_all_events().await.unwrap()[0].position, result.first_position);
    assert_eq!(a.stream_version("shared-name").await.unwrap(), 3);
    assert_eq!(b.get_all_events().await.unwrap()[0].payload.as_ref(), &[0u8, 1, 2]);
    assert_eq!(a.stats().await.unwrap().events, 3);
    assert_eq!(b.stats().await.unwrap().events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonb_payloads_are_queryable_from_sql() {
    let Some(backend) = common::fresh().await else { return };
    backend
        .append(
            "acct-1",
            ExpectedVersion::Any,
            vec![NewEvent::new("Deposited", r#"{"amount": 42, "currency": "EUR"}"#)],
        )
        .await
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(&common::database_url()).await.unwrap();
    let (amount, event_type): (String, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT payload->>'amount', event_type FROM {}.events WHERE stream_id = $1",
        backend.schema
    )))
    .bind("acct-1")
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((amount.as_str(), event_type.as_str()), ("42", "Deposited"));
    let stats = backend.stats().await.unwrap();
    assert_eq!(stats.details.get("payload_encoding").map(String::as_str), Some("jsonb"));
    assert!(backend.capabilities().json_payloads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_wake_subscribers_of_other_processes() {
    let Some(reader) = common::fresh().await else { return };
    let writer = PostgresBackend::builder(&common::database_url())
        .schema(&reader.schema)
        .application_name("allframe-test-writer")
        .connect()
        .await
        .unwrap();
    let reader = Arc::new(reader);
    // A max_wait far beyond the test's patience: only a notification can wake it in time.
    let options = SubscriptionOptions { page_size: 16, max_wait: Duration::from_secs(600) };
    let mut subscription = RawSubscription::start(Arc::clone(&reader), StartFrom::End, options).await.unwrap();
    // Let the LISTEN task connect first (its connect re-reads the head, which would also wake us).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = tokio::spawn(async move { subscription.next().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    writer.append("notified", ExpectedVersion::NoStream, vec![NewEvent::new("N", "{}")]).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(30), next).await.expect("woken by NOTIFY").unwrap().unwrap();
    assert_eq!(event.stream_id, "notified");

    let quiet = PostgresBackend::builder(&common::database_url())
        .schema(&reader.schema)
        .live_notifications(false)
        .connect()
        .await
        .unwrap();
    assert!(!quiet.capabilities().live_notifications);
    quiet.append("quiet", ExpectedVersion::NoStream, vec![NewEvent::new("Q", "{}")]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_postgres_cannot_store_read_as_absent() {
    let Some(backend) = common::fresh().await else { return };
    backend.append("a", ExpectedVersion::NoStream, vec![NewEvent::new("A", "{}")]).await.unwrap();
    backend.append("b", ExpectedVersion::NoStream, vec![NewEvent::new("B", "{}")]).await.unwrap();
    // Text with NUL cannot be stored (appends refuse it), so reads find nothing, as in memory.
    assert!(backend.read_stream("a\0x", 0, 10).await.unwrap().is_empty());
    assert_eq!(backend.stream_version("a\0x").await.unwrap(), 0);
    assert_eq!(backend.get_latest_snapshot("a\0x").await.unwrap(), None);
    let after: Vec<String> =
        backend.list_streams(Some("a\0x"), 10).await.unwrap().into_iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(after, vec!["b".to_string()], "`a` sorts before `a\\0x`, `b` after");
}
