//! Killed first opens: a process killed while it creates a new store leaves a directory that
//! the next open creates again, and directories that are not ours are still refused untouched.
//!
//! RocksDB has no I/O hook to stop at, so the sweep kills a child process (this test binary
//! run again) with SIGKILL at points of time from its start of opening, swept from 0 to a
//! little past the time a whole first open takes; each killed directory is killed once more
//! while the next open takes it over. The states a kill can leave are also built by hand.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use allframe_backend_rocksdb::RocksDbBackend;
use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, NewEvent};

const CHILD_ENV: &str = "ALLFRAME_ROCKSDB_FIRST_OPEN_CHILD";
/// The intent file a creation writes first and removes last (see `src/create.rs`).
const CREATING: &str = "ALLFRAME-CREATING";
const FAMILIES: [&str; 6] = ["default", "events", "stream_index", "stream_heads", "event_ids", "snapshots"];
/// Kill points of the sweep (each used twice: on a new directory and on what it left).
const SWEEP_POINTS: u32 = 96;

/// What the child prints when it starts opening, and once the open returned.
const OPENING: &str = "<first-open: opening>";
const OPENED: &str = "<first-open: opened>";

/// The child: says [`OPENING`] when it starts opening, [`OPENED`] once the open returned, then closes.
#[test]
#[ignore = "child process of the killed first open tests"]
fn first_open_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{OPENING}").unwrap();
    stdout.flush().unwrap();
    let store = RocksDbBackend::open(&path).expect("child opens");
    writeln!(stdout, "{OPENED}").unwrap();
    stdout.flush().unwrap();
    drop(store);
}

/// Runs the child on `path`; kills it `delay` after it said [`OPENING`] (never, when `None`).
/// Returns whether the child's open had returned, and the time it took if it did.
fn run_child(path: &Path, delay: Option<Duration>) -> (bool, Option<Duration>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "first_open_child", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // The test harness prints its own text around ours (bounded by the child's output).
    while stdout.read_line(&mut line).unwrap() > 0 && !line.contains(OPENING) {
        line.clear();
    }
    assert!(line.contains(OPENING), "the child started opening");
    let started = Instant::now();
    if let Some(delay) = delay {
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL on Unix
    }
    let mut opened = None;
    line.clear();
    while stdout.read_line(&mut line).unwrap_or(0) > 0 {
        if line.contains(OPENED) && opened.is_none() {
            opened = Some(started.elapsed());
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    if delay.is_none() {
        assert!(status.success(), "an unkilled child opens and closes the store");
    }
    (opened.is_some(), opened)
}

/// The directory's file names, numbers replaced by `#`: the kind of state a kill left.
fn state_of(path: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(path) else { return "(no directory)".into() };
    let names: BTreeSet<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().chars().filter(|c| !c.is_ascii_digit()).collect())
        .collect();
    if names.is_empty() { "(empty)".into() } else { names.into_iter().collect::<Vec<_>>().join(",") }
}

/// The next open finds an empty store and leaves no intent file; an append survives a reopen.
fn check_opens_empty(path: &Path, label: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = RocksDbBackend::open(path).map_err(|e| format!("{label}: open failed: {e:?}"))?;
        let head = store.head_position().await.unwrap();
        let streams = store.list_streams(None, 10).await.unwrap();
        if head != 0 || !streams.is_empty() {
            return Err(format!("{label}: not empty: head {head}, streams {streams:?}"));
        }
        if path.join(CREATING).exists() {
            return Err(format!("{label}: the intent file outlived the open"));
        }
        store
            .append("after-kill", ExpectedVersion::NoStream, vec![NewEvent::new("Appended", "1")])
            .await
            .map_err(|e| format!("{label}: append failed: {e:?}"))?;
        drop(store);
        let store = RocksDbBackend::open(path).map_err(|e| format!("{label}: second open failed: {e:?}"))?;
        let events = store.get_events("after-kill").await.unwrap();
        if events.len() != 1 || store.stats().await.unwrap().streams != 1 {
            return Err(format!("{label}: the append did not survive the reopen: {events:?}"));
        }
        Ok(())
    })
}

#[test]
fn first_opens_killed_at_swept_times_open_again() {
    let dir = tempfile::tempdir().unwrap();
    // How long a whole first open takes here, from the child's start of opening.
    let mut full = Duration::ZERO;
    for i in 0..3 {
        let path = dir.path().join(format!("measure-{i}"));
        let (opened, took) = run_child(&path, None);
        assert!(opened, "an unkilled child finished its open");
        full = full.max(took.unwrap());
        check_opens_empty(&path, "measured").unwrap();
    }
    let span = full.mul_f64(1.25) + Duration::from_millis(1);
    let mut failures = Vec::new();
    let mut states = BTreeSet::new();
    let (mut points, mut cut_short) = (0u32, 0u32);
    for i in 0..SWEEP_POINTS {
        let delay = span.mul_f64(f64::from(i) / f64::from(SWEEP_POINTS - 1));
        let path = dir.path().join(format!("sweep-{i}"));
        if i % 2 == 1 {
            std::fs::create_dir(&path).unwrap(); // an empty directory made beforehand
        }
        // First kill on a new directory, then a second kill while an open takes over its state.
        for round in 0..2 {
            let (opened, _) = run_child(&path, Some(delay));
            points += 1;
            cut_short += u32::from(!opened);
            let state = state_of(&path);
            if !opened {
                states.insert(state.clone());
            }
            if round == 1 {
                let label = format!("kill point {i} ({delay:?}), state {state}");
                if let Err(failure) = check_opens_empty(&path, &label) {
                    failures.push(failure);
                }
            }
        }
    }
    eprintln!(
        "first open: {points} kill points checked from 0 to {span:?} (a first open took {full:?}), \
         {cut_short} cut the open short; {} kinds of directory state left:",
        states.len()
    );
    for state in &states {
        eprintln!("  {state}");
    }
    assert!(failures.is_empty(), "{} of {SWEEP_POINTS} killed directories did not open:\n{}", failures.len(), {
        failures.join("\n")
    });
    assert!(cut_short > 0, "no kill landed inside a first open");
}

/// Writes the intent file a creation starts with.
fn intent(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::write(path.join(CREATING), b"being created").unwrap();
}

/// A RocksDB database at `path` with only `families`, written by RocksDB itself.
fn rocksdb_with(path: &Path, families: &[&str]) {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let db = rocksdb::DB::open_cf(&options, path, families).unwrap();
    drop(db);
}

#[test]
fn states_a_killed_creation_leaves_open_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut check = |name: &str, build: &dyn Fn(&Path)| {
        let path = dir.path().join(name);
        build(&path);
        check_opens_empty(&path, name).unwrap();
        checked += 1;
    };
    check("intent-only", &|p| intent(p));
    check("intent-empty-file", &|p| {
        std::fs::create_dir(p).unwrap();
        std::fs::write(p.join(CREATING), b"").unwrap();
    });
    check("intent-and-log", &|p| {
        intent(p);
        std::fs::write(p.join("LOG"), b"2026/12/01-09:00:00.000000 1 RocksDB version: 9.10.0\n").unwrap();
    });
    check("intent-and-half-new-db", &|p| {
        // Killed inside RocksDB's creation of the database: its manifest and CURRENT's
        // temporary file half written, no CURRENT yet.
        intent(p);
        std::fs::write(p.join("LOG"), b"log").unwrap();
        std::fs::write(p.join("LOCK"), b"").unwrap();
        std::fs::write(p.join("IDENTITY"), b"").unwrap();
        std::fs::write(p.join("MANIFEST-000001"), b"\x01\x02").unwrap();
        std::fs::write(p.join("000001.dbtmp"), b"MANIFEST-0").unwrap();
    });
    check("intent-and-default-family-only", &|p| {
        intent(p);
        rocksdb_with(p, &["default"]);
    });
    check("intent-and-some-families", &|p| {
        intent(p);
        rocksdb_with(p, &FAMILIES[..3]);
    });
    check("intent-and-all-families-no-marker", &|p| {
        intent(p);
        rocksdb_with(p, &FAMILIES);
    });
    check("intent-and-finished-store", &|p| {
        // Killed after the marker was synced, before the intent file was removed.
        drop(RocksDbBackend::open(p).unwrap());
        std::fs::write(p.join(CREATING), b"being created").unwrap();
    });
    check("all-families-no-marker-no-intent", &|p| rocksdb_with(p, &FAMILIES));
    check("empty-directory", &|p| std::fs::create_dir(p).unwrap());
    eprintln!("first open: {checked} hand-built states checked");
}

/// Every file's name and bytes, to check that a refused directory was left as it was.
fn contents(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = if e.file_type().unwrap().is_file() { std::fs::read(e.path()).unwrap() } else { Vec::new() };
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn foreign_directories_are_still_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut refused = 0;
    let mut refuse = |name: &str, build: &dyn Fn(&Path)| {
        let path = dir.path().join(name);
        build(&path);
        let before = contents(&path);
        match RocksDbBackend::open(&path) {
            Err(Error::NotAStore { backend: "rocksdb", .. }) => {}
            other => panic!("{name}: expected NotAStore, got {other:?}"),
        }
        assert_eq!(contents(&path), before, "{name}: the directory was left as it was");
        refused += 1;
    };
    // Without our intent file, RocksDB's files alone do not make a directory ours.
    refuse("log-only", &|p| {
        std::fs::create_dir(p).unwrap();
        std::fs::write(p.join("LOG"), b"someone else's log").unwrap();
    });
    refuse("rocksdb-default-family-only", &|p| rocksdb_with(p, &["default"]));
    refuse("rocksdb-unknown-families", &|p| rocksdb_with(p, &["default", "events", "theirs"]));
    refuse("other-files", &|p| {
        std::fs::create_dir(p).unwrap();
        std::fs::write(p.join("notes.txt"), b"mine").unwrap();
    });
    // Our intent file beside files that RocksDB does not write: not deleted.
    refuse("intent-and-other-files", &|p| {
        intent(p);
        std::fs::write(p.join("LOG"), b"log").unwrap();
        std::fs::write(p.join("notes.txt"), b"mine").unwrap();
    });
    refuse("intent-and-subdirectory", &|p| {
        intent(p);
        std::fs::create_dir(p.join("backup")).unwrap();
    });
    eprintln!("first open: {refused} foreign directories refused untouched");
}

/// While another open holds the directory's lock (it is looking or creating), an open is
/// `Locked` and deletes nothing.
#[test]
fn a_creation_in_progress_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    intent(&path);
    std::fs::write(path.join("LOG"), b"log").unwrap();
    let held = std::fs::File::open(&path).unwrap();
    held.try_lock().unwrap();
    let before = contents(&path);
    match RocksDbBackend::open(&path) {
        Err(Error::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(contents(&path), before, "nothing was deleted");
    drop(held);
    check_opens_empty(&path, "after the lock was released").unwrap();
}

/// Threads opening one new directory at once: exactly one opens it, the others are `Locked`
/// (none sees another's creation in progress as foreign or as cut short), and the store is whole.
#[test]
fn concurrent_first_opens_create_one_store() {
    const OPENERS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    for round in 0..8 {
        let path = dir.path().join(format!("store-{round}"));
        let barrier = std::sync::Barrier::new(OPENERS);
        let outcomes: Vec<Result<(), Error>> = std::thread::scope(|scope| {
            let openers: Vec<_> = (0..OPENERS)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        let opened = RocksDbBackend::open(&path);
                        // The one that opened keeps the store until all have tried.
                        barrier.wait();
                        opened.map(drop)
                    })
                })
                .collect();
            openers.into_iter().map(|o| o.join().unwrap()).collect()
        });
        let opened = outcomes.iter().filter(|o| o.is_ok()).count();
        for outcome in &outcomes {
            assert!(matches!(outcome, Ok(()) | Err(Error::Locked { .. })), "round {round}: {outcome:?}");
        }
        assert_eq!(opened, 1, "round {round}: exactly one open succeeded: {outcomes:?}");
        check_opens_empty(&path, &format!("round {round}")).unwrap();
    }
}
