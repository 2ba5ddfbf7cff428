//! Backups that do not break the log (contract point 4 across a restore): a store dumped with
//! `pg_dump` and restored with `pg_restore` into a fresh database reads back the same, and new
//! appends get positions above every restored one. Positions come from transaction ids
//! (decision 0203), which start again near zero in a fresh cluster: the same holds when the
//! stored positions are far above what this cluster's ids give, because the backend raises its
//! offset on every new connection (`check_epoch`).
//!
//! Needs `pg_dump` and `pg_restore` on the PATH (the PostgreSQL client package); without them
//! the test skips with a notice, except under `CI=true`, where it fails.

mod common;

use std::process::Command;

use allframe_backend_postgres::PostgresBackend;
use allframe_cqrs_core::{EventId, EventStoreBackend, ExpectedVersion, NewEvent, Snapshot};
use sqlx::Connection;

/// The URL of database `name` on the test server.
fn database(name: &str) -> String {
    let url = common::database_url();
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base.to_owned(), format!("?{query}")),
        None => (url.clone(), String::new()),
    };
    let server = base.rsplit_once('/').map_or(base.as_str(), |(server, _)| server).to_owned();
    format!("{server}/{name}{query}")
}

fn tools_available() -> bool {
    let found = ["pg_dump", "pg_restore"]
        .iter()
        .all(|tool| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()));
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and pg_dump or pg_restore is missing");
        eprintln!("NOTICE: skipping the restore test: pg_dump and pg_restore are not on the PATH");
    }
    found
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

async fn admin(sql: &str) {
    let mut conn = sqlx::PgConnection::connect(&common::database_url()).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.expect(sql);
}

/// The log as (stream, version, position, id).
async fn log_of(backend: &PostgresBackend) -> Vec<(String, u64, u64, EventId)> {
    backend
        .get_all_events()
        .await
        .expect("read the log")
        .into_iter()
        .map(|e| (e.stream_id.to_string(), e.version, e.position, e.metadata.event_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_dump_and_restore_new_appends_go_above_every_restored_position() {
    if !common::server_available().await || !tools_available() {
        return;
    }
    let Some(original) = common::fresh().await else { return };
    let schema = original.schema.clone();
    for i in 0..20u64 {
        let events = (0..=(i % 3)).map(|k| NewEvent::new("Saved", format!(r#"{{"i":{i},"k":{k}}}"#))).collect();
        original.append(&format!("account-{}", i % 4), ExpectedVersion::Any, events).await.unwrap();
    }
    original.inner().save_snapshot("account-1", Snapshot::new(3, r#"{"s":3}"#)).await.unwrap();
    original.save_checkpoint("projection", None, 10).await.unwrap();
    let before = log_of(original.inner()).await;
    let head = original.head_position().await.unwrap();

    let dump = std::env::temp_dir().join(format!("{schema}.dump"));
    run(Command::new("pg_dump")
        .args(["--schema", &schema, "--format=custom", "-f"])
        .arg(&dump)
        .arg(common::database_url()));

    // A full restore into a fresh database.
    let restored_db = format!("{schema}_restored");
    admin(&format!("CREATE DATABASE {restored_db}")).await;
    run(Command::new("pg_restore").args(["--no-owner", "-d", &database(&restored_db)]).arg(&dump));
    let restored = PostgresBackend::builder(&database(&restored_db)).schema(&schema).connect().await.expect("connect");
    assert_eq!(log_of(&restored).await, before, "the restored log is the original");
    assert_eq!(restored.head_position().await.unwrap(), head);
    assert_eq!(restored.load_checkpoint("projection").await.unwrap(), Some(10));
    assert_eq!(restored.get_latest_snapshot("account-1").await.unwrap().map(|s| s.version), Some(3));
    let next = restored.append("after-restore", ExpectedVersion::NoStream, vec![NewEvent::new("New", "{}")]).await;
    let next = next.expect("an append after the restore");
    assert!(next.first_position > head, "new positions go on above every restored one");
    let next = restored.append("account-2", ExpectedVersion::Any, vec![NewEvent::new("New", "{}")]).await.unwrap();
    assert!(next.first_position > head && next.stream_version > 1, "streams go on where they were");
    restored.close().await;

    // A restore into a cluster whose transaction ids are far below the ones that gave the
    // stored positions (a fresh cluster: ids start again near zero). Here the restored
    // positions are moved up by 2^50 instead (as if made with transaction ids around 2^34):
    // the backend raises its offset on connecting, so new positions go above them.
    let lower_db = format!("{schema}_lower");
    admin(&format!("CREATE DATABASE {lower_db}")).await;
    run(Command::new("pg_restore").args(["--no-owner", "-d", &database(&lower_db)]).arg(&dump));
    let mut conn = sqlx::PgConnection::connect(&database(&lower_db)).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("UPDATE {schema}.events SET position = position + (1::bigint << 50)")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let lower = PostgresBackend::builder(&database(&lower_db)).schema(&schema).connect().await.expect("connect");
    let moved = head + (1 << 50);
    assert_eq!(lower.head_position().await.unwrap(), moved, "every restored event is readable");
    let next = lower.append("after-lower", ExpectedVersion::NoStream, vec![NewEvent::new("New", "{}")]).await;
    let next = next.expect("an append after the restore");
    assert!(
        next.first_position > moved,
        "new positions go above every restored one: {} <= {moved}",
        next.first_position
    );
    let log = lower.get_all_events().await.unwrap();
    assert_eq!(log.len(), before.len() + 1);
    assert_eq!(log.last().map(|e| e.position), Some(next.first_position), "the new event comes last");
    lower.close().await;

    let _ = std::fs::remove_file(&dump);
    for db in [restored_db, lower_db] {
        admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    }
}
