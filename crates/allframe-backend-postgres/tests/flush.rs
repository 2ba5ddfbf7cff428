//! `flush()` with `synchronous_commit = off`: the backend reports an interval mode, and
//! flush must force the WAL to disk up to every acknowledged append; also when the setting
//! changed after connecting (which `stats()` then reports).
//!
//! The tests of this binary run one at a time, and no other test shares it: a synchronous
//! commit by another test would flush the WAL for this one and hide a flush that does nothing.

mod common;

use allframe_cqrs_core::{Durability, EventStoreBackend, ExpectedVersion, NewEvent};
use sqlx::Connection;

/// Serialises the tests of this binary.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Rounds of append, WAL position, flush, check.
const ROUNDS: u32 = 5;

/// The WAL insert position now, and whether the WAL is already on disk up to it.
async fn wal_insert_position(admin: &mut sqlx::PgConnection) -> (String, bool) {
    sqlx::query_as(
        "SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()",
    )
    .fetch_one(admin)
    .await
    .expect("insert lsn")
}

/// Whether the WAL is on disk up to `position`.
async fn wal_flushed_to(admin: &mut sqlx::PgConnection, position: &str) -> bool {
    sqlx::query_scalar("SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn")
        .bind(position)
        .fetch_one(admin)
        .await
        .expect("flush lsn")
}

/// Each round: an acknowledged append, the WAL position just after it, then flush; the WAL
/// must be on disk at least up to that position once flush returns. Without a real flush
/// the WAL writer would have to run inside the few milliseconds of every round. Returns how
/// many appends were not on disk yet when flush was called.
async fn append_then_flush_rounds(backend: &impl EventStoreBackend, admin: &mut sqlx::PgConnection) -> u32 {
    // A first asynchronous commit wakes a hibernating WAL writer, which then flushes on its
    // own only every wal_writer_delay (200 ms by default): the rounds run inside it.
    backend.append("warm-up", ExpectedVersion::Any, vec![NewEvent::new("W", "{}")]).await.expect("append");
    let mut unflushed_before = 0;
    for round in 0..ROUNDS {
        backend
            .append("flushed", ExpectedVersion::Any, vec![NewEvent::new("F", format!(r#"{{"round":{round}}}"#))])
            .await
            .expect("append");
        let (inserted, flushed_already) = wal_insert_position(admin).await;
        unflushed_before += u32::from(!flushed_already);
        backend.flush().await.expect("flush");
        assert!(
            wal_flushed_to(admin, &inserted).await,
            "round {round}: after flush() the WAL is not on disk up to {inserted}"
        );
    }
    unflushed_before
}

#[tokio::test]
async fn flush_forces_the_wal_to_disk_when_commits_are_asynchronous() {
    let _serial = ONE_AT_A_TIME.lock().await;
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
    let unflushed = append_then_flush_rounds(&backend, &mut admin).await;
    eprintln!("{unflushed} of {ROUNDS} appends were not yet on disk when flush() was called");
    assert!(unflushed > 0, "no round had an append that was not yet on disk: the test proved nothing about flush()");
    backend.close().await;
    admin.close().await.ok();
    common::drop_schema(&schema).await;
}

#[tokio::test]
async fn flush_follows_the_setting_in_force_not_the_one_seen_at_connect() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // Connected with synchronous_commit on (reported Synchronous); the setting then changes
    // under the running backend, as a configuration reload would. One pooled connection,
    // so the session setting is the one every append and the flush run with.
    let Some(fixture) = common::fresh_with(|b| b.pool_size(1).live_notifications(false)).await else { return };
    let backend = fixture.inner();
    assert_eq!(backend.capabilities().durability, Durability::Synchronous);
    sqlx::query("SET synchronous_commit = off").execute(backend.pool()).await.expect("set");
    assert!(
        matches!(backend.stats().await.expect("stats").durability, Durability::Interval(_)),
        "stats() reports the mode in force"
    );
    let mut admin = sqlx::PgConnection::connect(&common::database_url()).await.expect("admin connection");
    let unflushed = append_then_flush_rounds(backend, &mut admin).await;
    eprintln!("{unflushed} of {ROUNDS} appends were not yet on disk when flush() was called");
    assert!(unflushed > 0, "no round had an append that was not yet on disk: the test proved nothing about flush()");
    admin.close().await.ok();
}
