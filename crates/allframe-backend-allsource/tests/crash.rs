//! Crash test: a child process (this test binary, re-executed) appends from several tasks and
//! prints every acknowledged append; the parent kills it with SIGKILL at a random moment,
//! reopens the store and checks that every acknowledged append is there, whole, with
//! contiguous versions and increasing positions. Repeated on the same directory, so each
//! round also recovers from the previous round's crash.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};

const CHILD_ENV: &str = "ALLSOURCE_CRASH_CHILD_DIR";
const ROUNDS: usize = 24;
const TASKS: u64 = 6;

fn config(dir: &std::path::Path) -> AllSourceConfig {
    // Small segments so that rounds also crash around segment rolls.
    AllSourceConfig::durable(dir).segment_size(64 * 1024)
}

/// The child: appends forever and prints `ACK stream first_version count first_position last_position tag`.
#[test]
#[ignore = "helper process for crash_recovery_keeps_every_acknowledged_append"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let round: u64 = std::env::var("ALLSOURCE_CRASH_ROUND").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let store = std::sync::Arc::new(AllSourceBackend::with_config(config(dir.as_ref())).unwrap());
        println!("READY");
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let own = format!("task-{task}");
                let mut seq = 0u64;
                loop {
                    seq += 1;
                    let count = (seq + task) % 4 + 1;
                    let stream = if seq.is_multiple_of(3) { "shared".to_string() } else { own.clone() };
                    let tag = format!("{round}.{task}.{seq}");
                    let events: Vec<_> = (0..count)
                        .map(|i| NewEvent::new("Crashed", format!("{tag}/{i}/{count}/{}", "p".repeat(100))))
                        .collect();
                    let expected = if stream == "shared" {
                        ExpectedVersion::Any
                    } else {
                        ExpectedVersion::Exact(store.stream_version(&stream).await.unwrap())
                    };
                    let r = store.append(&stream, expected, events).await.unwrap();
                    println!(
                        "ACK {stream} {} {count} {} {} {tag}",
                        r.stream_version - count + 1,
                        r.first_position,
                        r.last_position
                    );
                }
            }));
        }
        // The tasks never end: the parent kills this process.
        let results = futures_join(tasks).await;
        panic!("appender tasks ended: {results:?}");
    });
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) -> Vec<Result<(), tokio::task::JoinError>> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await);
    }
    out
}

struct Ack {
    stream: String,
    first_version: u64,
    count: u64,
    first_position: u64,
    last_position: u64,
    tag: String,
}

fn parse(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    Some(Ack {
        stream: parts.next()?.to_string(),
        first_version: parts.next()?.parse().ok()?,
        count: parts.next()?.parse().ok()?,
        first_position: parts.next()?.parse().ok()?,
        last_position: parts.next()?.parse().ok()?,
        tag: parts.next()?.to_string(),
    })
}

#[test]
fn crash_recovery_keeps_every_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut acks: Vec<Ack> = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut torn_rounds = 0;
    let mut parquet_files = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("ALLSOURCE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.ends_with("READY") {
                    let _ = ready_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        ready_rx.recv_timeout(Duration::from_secs(60)).expect("child opened the store");
        let wait = Duration::from_millis(20 + random() % 400);
        let started = Instant::now();
        while started.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let before = acks.len();
        acks.extend(lines.iter().filter_map(|l| parse(l)));

        rt.block_on(async {
            let store = AllSourceBackend::with_config(config(dir.path())).unwrap();
            let stats = store.engine_stats();
            parquet_files = stats.parquet_files;
            if stats.recovery.torn_tail.is_some() {
                torn_rounds += 1;
            }
            let all = store.get_all_events().await.unwrap();
            assert_eq!(all.len() as u64, store.head_position().await.unwrap());
            // Positions 1..=head, each stream's versions contiguous from 1.
            let mut versions: HashMap<&str, u64> = HashMap::new();
            let mut appends: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for (i, e) in all.iter().enumerate() {
                assert_eq!(e.position, i as u64 + 1, "positions increase without gaps");
                let v = versions.entry(&e.stream_id).or_default();
                *v += 1;
                assert_eq!(e.version, *v, "stream {} versions contiguous", e.stream_id);
                let text = std::str::from_utf8(&e.payload).unwrap();
                let mut parts = text.split('/');
                let tag = parts.next().unwrap().to_string();
                let _index: u64 = parts.next().unwrap().parse().unwrap();
                let count: u64 = parts.next().unwrap().parse().unwrap();
                let entry = appends.entry(tag).or_insert((0, count));
                entry.0 += 1;
            }
            for (tag, (found, count)) in &appends {
                assert_eq!(found, count, "append {tag} is whole, not half there");
            }
            // New acknowledgements every round; all of them again after the last round.
            let check_from = if round + 1 == ROUNDS { 0 } else { before };
            for ack in &acks[check_from..] {
                let events = store.read_stream(&ack.stream, ack.first_version - 1, ack.count as usize).await.unwrap();
                assert_eq!(events.len() as u64, ack.count, "acknowledged append {} is present", ack.tag);
                for (i, e) in events.iter().enumerate() {
                    assert_eq!(e.position, ack.first_position + i as u64);
                    assert!(e.payload.starts_with(format!("{}/{i}/", ack.tag).as_bytes()), "append {}", ack.tag);
                }
                assert_eq!(events.last().unwrap().position, ack.last_position);
            }
        });
    }
    eprintln!(
        "crash test: {ROUNDS} rounds, {} acknowledged appends checked, {torn_rounds} torn tails repaired, {parquet_files} Parquet segments",
        acks.len()
    );
    if acks.len() > 5_000 {
        // Enough data for several 64 KiB segments: conversions ran while the child was killed.
        assert!(parquet_files > 0, "segments were rewritten as Parquet while the child was being killed");
    }
    assert!(!acks.is_empty(), "the child made progress");
}
