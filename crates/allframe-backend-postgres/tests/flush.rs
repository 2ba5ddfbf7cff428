//! `flush()` with `synchronous_commit = off`: the backend reports an interval mode, and
//! flush must force the WAL to disk up to every acknowledged append.
//!
//! Alone in its test binary: a synchronous commit by another test would flush the WAL for
//! this one and hide a flush that does nothing.

mod common;

use allframe_cqrs_core::{Durability, EventStoreBackend, ExpectedVersion, NewEvent};
use sqlx::Connection;

#[tokio::test]
async fn flush_forces_the_wal_to_disk_when_commits_are_asynchronous() {
    let url = common::database_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}options[synchronous_commit]=off");
    if !common::server_available().await {
        return;
    }
    let schema = common::fresh_schema();
    let backend = allframe_backend_postgres::PostgresBackend::builder(&url)
        .schema(&schema)
        .live_notifications(false)
        .connect()
        .await
        .expect("connect");
    assert!(
        matches!(backend.capabilities().durability, Durability::Interval(_)),
        "synchronous_commit = off is reported as an interval mode: {:?}",
        backend.capabilities().durability
    );
    let mut admin = sqlx::PgConnection::connect(&common::database_url()).await.expect("admin connection");
    // A first asynchronous commit wakes a hibernating WAL writer, which then flushes on its
    // own only every wal_writer_delay (200 ms by default): the rounds below run inside it.
    backend.append("warm-up", ExpectedVersion::Any, vec![NewEvent::new("W", "{}")]).await.expect("append");

    // Each round: an acknowledged append, the WAL position just after it, then flush; the
    // WAL must be on disk at least up to that position once flush returns. Without a real
    // flush the WAL writer would have to run inside the few milliseconds of every round.
    const ROUNDS: u32 = 5;
    let mut unflushed_before = 0;
    for round in 0..ROUNDS {
        backend
            .append("flushed", ExpectedVersion::Any, vec![NewEvent::new("F", format!(r#"{{"round":{round}}}"#))])
            .await
            .expect("append");
        let (inserted, flushed_already): (String, bool) = sqlx::query_as(
            "SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()",
        )
        .fetch_one(&mut admin)
        .await
        .expect("insert lsn");
        unflushed_before += u32::from(!flushed_already);
        backend.flush().await.expect("flush");
        let flushed: bool = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn")
            .bind(&inserted)
            .fetch_one(&mut admin)
            .await
            .expect("flush lsn");
        assert!(flushed, "round {round}: after flush() the WAL is not on disk up to {inserted}");
    }
    eprintln!("{unflushed_before} of {ROUNDS} appends were not yet on disk when flush() was called");
    backend.close().await;
    admin.close().await.ok();
    common::drop_schema(&schema).await;
}
