//! Schema names that are SQL keywords (`user`, `order`): names go into SQL quoted, so such a
//! schema is created, migrated, written, read, listened on and dropped like any other.

mod common;

use std::sync::Arc;
use std::time::Duration;

use allframe_backend_postgres::PostgresBackend;
use allframe_cqrs_core::{
    EventStoreBackend, ExpectedVersion, NewEvent, RawSubscription, Snapshot, StartFrom, SubscriptionOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_schemas_work_for_every_operation() {
    if !common::server_available().await {
        return;
    }
    let url = common::database_url();
    for schema in ["user", "order"] {
        let fixture = common::named_with(schema, |b| b).await;
        let backend = Arc::new(fixture.inner().clone());
        let result = backend
            .append("s-1", ExpectedVersion::NoStream, vec![NewEvent::new("E", r#"{"n":1}"#), NewEvent::new("E", "{}")])
            .await
            .unwrap_or_else(|e| panic!("append in schema `{schema}`: {e:?}"));
        assert_eq!((result.stream_version, result.last_position - result.first_position), (2, 1));
        assert_eq!(backend.read_stream("s-1", 0, 10).await.expect("read_stream").len(), 2);
        assert_eq!(backend.read_all(0, 10).await.expect("read_all").len(), 2);
        assert_eq!(backend.stream_version("s-1").await.expect("stream_version"), 2);
        assert_eq!(backend.head_position().await.expect("head"), result.last_position);
        assert_eq!(backend.list_streams(None, 10).await.expect("list").len(), 1);
        backend.save_snapshot("s-1", Snapshot::new(2, r#"{"state":2}"#)).await.expect("save_snapshot");
        assert_eq!(backend.get_latest_snapshot("s-1").await.expect("snapshot").map(|s| s.version), Some(2));
        assert_eq!(backend.stats().await.expect("stats").events, 2);
        backend.flush().await.expect("flush");

        // The deployment step and a second process on the same schema.
        PostgresBackend::migrate(&url, schema).await.expect("migrate again");
        let other = common::second_process(&url, schema, "allframe-schema-names-other").await;
        // Its commit wakes a subscriber of the first through LISTEN/NOTIFY on the schema's channel.
        let options = SubscriptionOptions { page_size: 10, max_wait: Duration::from_secs(600) };
        let mut live = RawSubscription::start(Arc::clone(&backend), StartFrom::End, options).await.expect("subscribe");
        let woken = tokio::spawn(async move { live.next().await });
        let appended =
            other.append("s-2", ExpectedVersion::NoStream, vec![NewEvent::new("E", "{}")]).await.expect("append");
        let event = tokio::time::timeout(Duration::from_secs(30), woken)
            .await
            .expect("the subscriber was not woken by NOTIFY")
            .expect("task")
            .expect("next");
        assert_eq!((event.stream_id.as_str(), event.position), ("s-2", appended.first_position));
        other.close().await;
        backend.close().await;
        drop(fixture);
        assert_schema_gone(schema).await;
    }
}

async fn assert_schema_gone(schema: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&common::database_url()).await.expect("connect");
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert!(!exists, "schema `{schema}` was dropped after the test");
}
