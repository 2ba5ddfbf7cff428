//! Readers never see an append before it is committed, nor ever one that failed: concurrent
//! appenders and readers on small segments with Parquet conversion running, while the group
//! commit that spans a segment roll is held in its final `fdatasync` (and, in one variant,
//! fails there).
//!
//! The hook follows the writer's calls to find a group that wrote into segment `J - 1`, sealed
//! it and went on into `J`, and holds that group's final sync of `J` until the converter has
//! rewritten `J - 1` as Parquet (or at most a few seconds, when, as it should, the converter was
//! never given a segment with uncommitted frames). While it holds, it opens a window in which
//! the test reads everything (`list_streams`, `stream_version`, `read_stream`, `read_all`,
//! `stats`) and checks that no reader counts more events than the committed head. Readers also
//! run all the time and record every event they see; at the end no read may have returned an
//! event of an append that failed, or of an append that had not started when the read ended
//! (a global sequence counter orders the two). The store is then reopened: every acknowledged
//! append is there, no failed one is.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, IoHook, IoOp};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent, RecordedEvent};

const APPENDERS: usize = 12;
const READERS: usize = 3;
/// Most appends per appender before the test gives up waiting for a group that spans a roll.
const MAX_APPENDS: u64 = 400;

/// The global order of starts, acknowledgements and read ends.
static SEQ: AtomicU64 = AtomicU64::new(0);

fn tick() -> u64 {
    SEQ.fetch_add(1, Ordering::SeqCst)
}

/// What the writer did last with log segments, to recognise a group that spans a roll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Track {
    Idle,
    /// Wrote into segment n.
    Wrote(u32),
    /// Wrote into n, then synced it once (the group's sync, or the seal of a roll).
    SyncedOnce(u32),
    /// Wrote into n - 1, sealed it with one sync, and wrote into n: a group spanning a roll.
    Spanning(u32),
}

#[derive(Debug)]
struct Held {
    /// The segment the spanning group rolled into, once found.
    into: Option<u32>,
    /// Set by the converter when it has removed the log segment it converted.
    converted: HashSet<u32>,
    /// The test has done its reads in the window.
    window_done: bool,
}

/// Slows every log sync of the writer a little (bigger groups), finds the first group that
/// spans a roll and holds its final sync as described in the file's doc comment.
#[derive(Debug)]
struct SpanHook {
    dir: PathBuf,
    fail: bool,
    track: Mutex<Track>,
    held: Mutex<Held>,
    changed: Condvar,
    window: Mutex<Option<std::sync::mpsc::Sender<u32>>>,
    /// Whether the held sync was failed.
    failed: AtomicBool,
    /// Whether the converter got the sealed segment while its last group was still held in
    /// its sync (it must not: those frames are not committed).
    converted_early: AtomicBool,
}

fn segment_of(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()
}

impl SpanHook {
    fn hold(&self, into: u32) -> io::Result<()> {
        let mut held = self.held.lock().unwrap();
        held.into = Some(into);
        // Give the converter its chance to convert the sealed segment (it must not have it).
        (held, _) = self
            .changed
            .wait_timeout_while(held, Duration::from_secs(3), |h| !h.converted.contains(&(into - 1)))
            .unwrap();
        if held.converted.contains(&(into - 1)) {
            self.converted_early.store(true, Ordering::SeqCst);
        }
        drop(held);
        if let Some(window) = self.window.lock().unwrap().take() {
            let _ = window.send(into);
            let held = self.held.lock().unwrap();
            let (held, _) = self.changed.wait_timeout_while(held, Duration::from_secs(30), |h| !h.window_done).unwrap();
            drop(held);
        }
        if self.fail {
            self.failed.store(true, Ordering::SeqCst);
            return Err(io::Error::other("injected: the sync of a group spanning a roll fails"));
        }
        Ok(())
    }

    fn close_window(&self) {
        self.held.lock().unwrap().window_done = true;
        self.changed.notify_all();
    }
}

impl IoHook for SpanHook {
    fn before(&self, op: IoOp, path: &Path) -> io::Result<()> {
        match std::thread::current().name() {
            Some("allsource-parquet") if op == IoOp::Sync && path == self.dir => {
                // After a conversion the log segment is removed, then the directory synced.
                let mut held = self.held.lock().unwrap();
                if let Some(into) = held.into
                    && !self.dir.join(format!("wal-{:010}.log", into - 1)).exists()
                {
                    held.converted.insert(into - 1);
                    self.changed.notify_all();
                }
                Ok(())
            }
            Some("allsource-writer") => {
                let Some(seg) = segment_of(path) else { return Ok(()) };
                let mut track = self.track.lock().unwrap();
                match op {
                    IoOp::Write => {
                        *track = match *track {
                            Track::SyncedOnce(prev) if prev + 1 == seg => Track::Spanning(seg),
                            Track::Spanning(n) if n == seg => Track::Spanning(seg),
                            _ => Track::Wrote(seg),
                        };
                        Ok(())
                    }
                    IoOp::Sync => {
                        let now = *track;
                        *track = match now {
                            Track::Wrote(n) if n == seg => Track::SyncedOnce(seg),
                            _ => Track::Idle,
                        };
                        drop(track);
                        std::thread::sleep(Duration::from_millis(1));
                        let first = self.held.lock().unwrap().into.is_none();
                        match now {
                            Track::Spanning(n) if n == seg && first => self.hold(seg),
                            _ => Ok(()),
                        }
                    }
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

/// One append as its appender saw it.
#[derive(Debug, Clone)]
struct Append {
    tags: Vec<String>,
    started: u64,
    acked: Option<(String, u64, u64)>,
}

/// One read: the tags it returned and when it ended.
#[derive(Debug)]
struct Read {
    tags: Vec<String>,
    ended: u64,
}

fn tag_of(event: &RecordedEvent) -> String {
    let text = std::str::from_utf8(&event.payload).unwrap();
    text.split('|').next().unwrap().to_string()
}

/// Reads everything once; returns the tags seen and a description of any count beyond the head.
async fn read_everything(store: &AllSourceBackend, streams: &[String]) -> (Vec<String>, Option<String>) {
    let listed = store.list_streams(None, usize::MAX).await.unwrap();
    let listed_sum: u64 = listed.iter().map(|(_, v)| v).sum();
    let mut versions = 0;
    let mut tags = Vec::new();
    let mut read_count = 0;
    for stream in streams {
        versions += store.stream_version(stream).await.unwrap();
        let events = store.read_stream(stream, 0, usize::MAX).await.unwrap();
        read_count += events.len() as u64;
        tags.extend(events.iter().map(tag_of));
    }
    let stats = store.stats().await.unwrap();
    let all = store.read_all(0, usize::MAX).await.unwrap();
    tags.extend(all.iter().map(tag_of));
    // Read last: the head only grows, so every count above must be at most it.
    let head = store.head_position().await.unwrap();
    let over = [("list_streams", listed_sum), ("stream_version", versions), ("read_stream", read_count)]
        .into_iter()
        .chain([("stats().events", stats.events), ("read_all", all.len() as u64)])
        .filter(|(_, n)| *n > head)
        .map(|(what, n)| format!("{what} counts {n} events, the committed head is {head}"))
        .reduce(|a, b| format!("{a}; {b}"));
    (tags, over)
}

fn run(fail: bool) {
    let dir = tempfile::tempdir().unwrap();
    let hook = Arc::new(SpanHook {
        dir: dir.path().to_path_buf(),
        fail,
        track: Mutex::new(Track::Idle),
        held: Mutex::new(Held { into: None, converted: HashSet::new(), window_done: false }),
        changed: Condvar::new(),
        window: Mutex::new(None),
        failed: AtomicBool::new(false),
        converted_early: AtomicBool::new(false),
    });
    let (window_tx, window_rx) = std::sync::mpsc::channel();
    *hook.window.lock().unwrap() = Some(window_tx);
    let config = AllSourceConfig::durable(dir.path()).segment_size(64 * 1024).io_hook(Some(hook.clone()));
    let streams: Vec<String> = (0..APPENDERS / 2).map(|i| format!("stream-{i}")).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(3).enable_all().build().unwrap();
    let (appends, reads, window_over) = rt.block_on(async {
        let store = Arc::new(AllSourceBackend::with_config(config.clone()).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let mut appenders = Vec::new();
        for a in 0..APPENDERS {
            let (store, stop, stream) = (store.clone(), stop.clone(), streams[a / 2].clone());
            appenders.push(tokio::spawn(async move {
                let mut done = Vec::new();
                for n in 0..MAX_APPENDS {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let count = 1 + (n + a as u64) % 3;
                    let tags: Vec<String> = (0..count).map(|j| format!("a{a}-{n}-{j}")).collect();
                    let events =
                        tags.iter().map(|t| NewEvent::new("Seen", format!("{t}|{}", "v".repeat(500)))).collect();
                    let started = tick();
                    let result = store.append(&stream, ExpectedVersion::Any, events).await;
                    let failed = result.is_err();
                    let acked = result.ok().map(|r| (stream.clone(), r.stream_version - count + 1, r.first_position));
                    done.push(Append { tags, started, acked });
                    if failed {
                        break;
                    }
                }
                done
            }));
        }
        let mut readers = Vec::new();
        for _ in 0..READERS {
            let (store, stop, streams) = (store.clone(), stop.clone(), streams.clone());
            readers.push(tokio::spawn(async move {
                let mut reads = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let (tags, over) = read_everything(&store, &streams).await;
                    reads.push(Read { tags, ended: tick() });
                    assert!(over.is_none(), "a reader counted uncommitted events: {}", over.unwrap());
                    tokio::task::yield_now().await;
                }
                reads
            }));
        }
        // The window: the writer holds the spanning group's sync while we read everything.
        let window = {
            let (store, streams, hook) = (store.clone(), streams.clone(), hook.clone());
            tokio::spawn(async move {
                let opened = tokio::task::spawn_blocking(move || window_rx.recv().ok()).await.unwrap();
                let result = match opened {
                    Some(_) => {
                        let (tags, over) = read_everything(&store, &streams).await;
                        Some((Read { tags, ended: tick() }, over))
                    }
                    None => None,
                };
                hook.close_window();
                result
            })
        };
        // Appenders stop on their own (a failure, or MAX_APPENDS), or once the window has
        // been seen; if they all stop without one, the window is closed unseen.
        let appenders = {
            let hook = hook.clone();
            tokio::spawn(async move {
                let mut appends = Vec::new();
                for a in appenders {
                    appends.extend(a.await.unwrap());
                }
                hook.window.lock().unwrap().take();
                appends
            })
        };
        let window = window.await.unwrap();
        stop.store(true, Ordering::SeqCst);
        let appends = appenders.await.unwrap();
        let mut reads = Vec::new();
        for r in readers {
            reads.extend(r.await.unwrap());
        }
        let Some((window_read, over)) = window else { panic!("no group commit spanned a segment roll") };
        reads.push(window_read);
        drop(store);
        (appends, reads, over)
    });
    // Unblock a hold that never happened (the store is closed by now).
    hook.close_window();
    assert!(window_over.is_none(), "while the spanning group was unacknowledged: {}", window_over.unwrap());
    assert_eq!(hook.failed.load(Ordering::SeqCst), fail);
    assert!(
        !hook.converted_early.load(Ordering::SeqCst),
        "the sealed segment was converted while the group with its last frame was still in its sync"
    );
    let failed: HashSet<&str> =
        appends.iter().filter(|a| a.acked.is_none()).flat_map(|a| a.tags.iter().map(String::as_str)).collect();
    if fail {
        assert!(!failed.is_empty(), "the failed sync failed appends");
    } else {
        assert!(failed.is_empty(), "no append fails without a fault");
    }
    let started: HashMap<&str, u64> =
        appends.iter().flat_map(|a| a.tags.iter().map(move |t| (t.as_str(), a.started))).collect();
    for read in &reads {
        for tag in &read.tags {
            assert!(!failed.contains(tag.as_str()), "a read returned `{tag}`, an event of an append that failed");
            assert!(started[tag.as_str()] < read.ended, "a read returned `{tag}` before its append started");
        }
    }
    let read_events: usize = reads.iter().map(|r| r.tags.len()).sum();
    println!(
        "visibility ({}): {} appends ({} failed), {} reads of {read_events} events checked, the held group rolled into segment {}",
        if fail { "failing sync" } else { "held sync" },
        appends.len(),
        appends.iter().filter(|a| a.acked.is_none()).count(),
        reads.len(),
        hook.held.lock().unwrap().into.unwrap_or(0),
    );
    // Reopened: exactly the acknowledged appends.
    rt.block_on(async {
        let store = AllSourceBackend::with_config(config.io_hook(None)).unwrap();
        let all = store.read_all(0, usize::MAX).await.unwrap();
        let found: HashSet<String> = all.iter().map(tag_of).collect();
        for tag in &failed {
            assert!(!found.contains(*tag), "`{tag}` of a failed append is there after reopen");
        }
        let mut acked = 0;
        for append in appends.iter().filter(|a| a.acked.is_some()) {
            let (stream, first_version, first_position) = append.acked.clone().unwrap();
            for (i, tag) in append.tags.iter().enumerate() {
                let event = all.get((first_position - 1) as usize + i).unwrap_or_else(|| panic!("`{tag}` is lost"));
                assert_eq!(tag_of(event), *tag, "acknowledged `{tag}` is at its position after reopen");
                assert_eq!((event.stream_id.as_str(), event.version), (stream.as_str(), first_version + i as u64));
                acked += 1;
            }
        }
        assert_eq!(all.len(), acked, "after reopen the log holds exactly the acknowledged events");
    });
}

#[test]
fn readers_see_no_append_of_a_group_spanning_a_roll_before_it_is_synced() {
    run(false);
}

#[test]
fn readers_never_see_the_appends_of_a_group_whose_sync_fails_after_a_roll() {
    run(true);
}
