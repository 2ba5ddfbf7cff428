//! Global order across processes (contract point 4; decisions 0201 and 0203): writers in four
//! processes, each with its own backend (pool, group commit, LISTEN connection) and sixteen
//! appending tasks, small appends mixed with large ones on streams the processes share, and a
//! subscriber in a fifth process tailing the log from the start. Every acknowledged event is
//! delivered to it exactly once, in position order, and what it saw is the log.
//!
//! The processes are this test binary's own `#[ignore]`d tests, started as children.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use allframe_backend_postgres::PostgresBackend;
use allframe_cqrs_core::{
    EventId, EventStoreBackend, ExpectedVersion, NewEvent, RawSubscription, StartFrom, SubscriptionOptions,
};
use common::child::{ChildProcess, env, read_stdin_line};

const WRITER_PROCESSES: usize = 4;
const TASKS: usize = 16;
const APPENDS_PER_TASK: usize = 20;

/// Mostly small appends, sometimes a large one (a long insert is what lets a later position
/// commit first in designs that take positions from a plain sequence).
fn batch_size(process: usize, task: usize, i: usize) -> usize {
    if (process * 7 + task + i).is_multiple_of(17) { 150 } else { 1 + (task + i) % 4 }
}

#[test]
fn writers_in_four_processes_and_a_tailing_reader_in_a_fifth_see_every_event_once_in_order() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let Some(fixture) = runtime.block_on(common::fresh()) else { return };
    let environment = |extra: Option<(&'static str, String)>| {
        let mut vars = vec![("AF_TEST_URL", common::database_url()), ("AF_TEST_SCHEMA", fixture.schema.clone())];
        vars.extend(extra);
        vars
    };
    let mut reader = ChildProcess::start("tailing_reader_process", &environment(None));
    reader.lines_until("READY", Duration::from_secs(60));
    let mut writers: Vec<ChildProcess> = (0..WRITER_PROCESSES)
        .map(|w| ChildProcess::start("writer_process", &environment(Some(("AF_TEST_WRITER", w.to_string())))))
        .collect();
    for writer in &mut writers {
        writer.lines_until("READY", Duration::from_secs(60));
    }
    for writer in &mut writers {
        writer.send("GO");
    }

    // What each writer process was told: (first position, ids) per acknowledged append.
    let mut acknowledged: Vec<(u64, Vec<EventId>)> = Vec::new();
    for writer in writers {
        let mut writer = writer;
        for line in writer.lines_until("DONE", Duration::from_secs(180)) {
            let Some(rest) = line.strip_prefix("ACK ") else { continue };
            let (first, ids) = rest.split_once(' ').expect("ACK first ids");
            let ids = ids.split(',').map(|id| id.parse::<EventId>().expect("event id")).collect();
            acknowledged.push((first.parse().expect("position"), ids));
        }
        writer.finish();
    }
    let total: usize = acknowledged.iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!(acknowledged.len(), WRITER_PROCESSES * TASKS * APPENDS_PER_TASK, "every append acknowledged");
    reader.send(&format!("TOTAL {total}"));
    let seen: Vec<(u64, EventId)> = reader
        .lines_until("DONE", Duration::from_secs(180))
        .iter()
        .filter_map(|line| line.strip_prefix("SEEN "))
        .map(|rest| {
            let (position, id) = rest.split_once(' ').expect("SEEN position id");
            (position.parse().expect("position"), id.parse().expect("id"))
        })
        .collect();
    reader.finish();

    assert_eq!(seen.len(), total, "the reader saw every acknowledged event");
    assert!(seen.windows(2).all(|pair| pair[0].0 < pair[1].0), "the reader saw positions in increasing order");
    let unique: HashSet<EventId> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(unique.len(), total, "the reader saw no event twice");
    let log = runtime.block_on(fixture.get_all_events()).expect("the log");
    assert_eq!(log.iter().map(|e| (e.position, e.metadata.event_id)).collect::<Vec<_>>(), seen, "it saw the log");
    let at: HashMap<u64, EventId> = seen.into_iter().collect();
    for (first, ids) in &acknowledged {
        for (offset, id) in ids.iter().enumerate() {
            assert_eq!(at.get(&(first + offset as u64)), Some(id), "an acknowledged event is where it was reported");
        }
    }
    eprintln!("{} appends ({total} events) by {WRITER_PROCESSES} processes, tailed by a fifth", acknowledged.len());
}

/// A writer process: sixteen tasks append, printing `ACK <first position> <ids>` for each
/// acknowledged append, then `DONE`.
#[test]
#[ignore = "run as a child process by the test above"]
fn writer_process() {
    let process: usize = env("AF_TEST_WRITER").parse().expect("writer number");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let backend = Arc::new(
            PostgresBackend::builder(&env("AF_TEST_URL"))
                .schema(env("AF_TEST_SCHEMA"))
                .application_name(format!("writer-{process}"))
                .pool_size(8)
                .run_migrations(false)
                .connect()
                .await
                .expect("connect"),
        );
        println!("READY");
        assert_eq!(read_stdin_line(), "GO");
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let backend = Arc::clone(&backend);
                tokio::spawn(async move {
                    for i in 0..APPENDS_PER_TASK {
                        // Streams shared by tasks of every process: stream locks are contended too.
                        let stream = format!("order-{}", (process * TASKS + task) % 24);
                        let events: Vec<NewEvent> = (0..batch_size(process, task, i))
                            .map(|k| {
                                NewEvent::new("Placed", format!(r#"{{"p":{process},"t":{task},"i":{i},"k":{k}}}"#))
                            })
                            .collect();
                        let ids: Vec<String> = events.iter().map(|e| e.metadata.event_id.to_string()).collect();
                        let result = backend.append(&stream, ExpectedVersion::Any, events).await.expect("append");
                        assert_eq!(result.last_position - result.first_position + 1, ids.len() as u64);
                        println!("ACK {} {}", result.first_position, ids.join(","));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("appending task");
        }
        println!("DONE");
    });
}

/// The reader process: subscribes from the start of the log, printing `SEEN <position> <id>`
/// for each delivered event, until it has seen the total the parent sends (`TOTAL n`); then
/// checks that nothing more is there and prints `DONE`.
#[test]
#[ignore = "run as a child process by the test above"]
fn tailing_reader_process() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let backend = Arc::new(
            PostgresBackend::builder(&env("AF_TEST_URL"))
                .schema(env("AF_TEST_SCHEMA"))
                .application_name("tailing-reader")
                .pool_size(2)
                .run_migrations(false)
                .connect()
                .await
                .expect("connect"),
        );
        let total = Arc::new(AtomicU64::new(u64::MAX));
        {
            let total = Arc::clone(&total);
            std::thread::spawn(move || {
                let line = read_stdin_line();
                let n = line.strip_prefix("TOTAL ").and_then(|n| n.parse().ok()).expect("TOTAL n");
                total.store(n, Ordering::SeqCst);
            });
        }
        let options = SubscriptionOptions { page_size: 50, max_wait: Duration::from_millis(100) };
        let mut subscription =
            RawSubscription::start(Arc::clone(&backend), StartFrom::Beginning, options).await.expect("subscribe");
        println!("READY");
        let mut last = 0;
        let mut seen = 0u64;
        let mut progress = tokio::time::Instant::now();
        while seen < total.load(Ordering::SeqCst) {
            // Once every writer is done, a reader short of the total has skipped events.
            let total = total.load(Ordering::SeqCst);
            assert!(
                total == u64::MAX || progress.elapsed() < Duration::from_secs(10),
                "the reader saw {seen} of {total} events: it skipped some"
            );
            let Ok(event) = tokio::time::timeout(Duration::from_millis(200), subscription.next()).await else {
                continue;
            };
            progress = tokio::time::Instant::now();
            let event = event.expect("next event");
            assert!(event.position > last, "position {} after {last}: the log went backwards", event.position);
            last = event.position;
            seen += 1;
            println!("SEEN {} {}", event.position, event.metadata.event_id);
        }
        assert!(backend.read_all(last, 10).await.expect("read").is_empty(), "nothing beyond what was acknowledged");
        println!("DONE");
    });
}
