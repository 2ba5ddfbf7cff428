//! Concurrent histories, checked: appenders and readers run at once against one backend,
//! every call is recorded with when it started, when it ended and what it returned, and the
//! whole history is then checked against the contract.
//!
//! The checker is small on purpose (see `docs/decisions/0006-history-checker.md`). It does not
//! search for a linearization, which is exponential in general; it checks the properties the
//! contract states, each of which any correct store has. Time is one logical clock shared by
//! every task: a call *precedes* another when it ended before the other started.
//!
//! * **Nothing unacknowledged or failed is visible.** Every event a read returns belongs to an
//!   append that returned `Ok` (so a read can never show an append that later fails), and the
//!   read did not end before that append started.
//! * **Acknowledged means visible.** An append that ended before a read started is seen by
//!   it: `read_stream`, `read_all`, `stream_version`, `head_position` and `list_streams` all
//!   include it (within the page asked for).
//! * **One order.** Per stream, the acknowledged appends' versions tile `1..=n` with no gap or
//!   overlap; positions of different appends never overlap; an append that ended before
//!   another started has lower positions; versions and positions agree within a stream; every
//!   read agrees with every other about each event's stream, version, position and payload.
//! * **No skip.** A reader that tails the log page by page from its last position ends with
//!   every acknowledged event exactly once, in position order (contract 4).
//!
//! [`run_history`] runs one seeded history and returns a [`HistoryReport`] with the violations
//! found; [`HistoryReport::verify_after_reopen`] checks a reopened durable store against it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use allframe_cqrs_core::{
    AppendResult, Error, EventId, EventStoreBackend, ExpectedVersion, NewEvent, RecordedEvent, StreamId,
};

use crate::cases::same_payload;

/// The shape of one history.
#[derive(Clone, Copy, Debug)]
pub struct HistoryOptions {
    /// Tasks that append.
    pub writers: usize,
    /// Tasks that read (the first of them tails the log), at least 1.
    pub readers: usize,
    /// Appends each writer tries.
    pub appends_per_writer: usize,
    /// Streams the writers share (few, so that appends conflict).
    pub streams: usize,
    /// Most events per append.
    pub max_batch: usize,
    /// Bytes of padding in each payload (more bytes per event roll a durable store's segments sooner).
    pub pad: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Whether calls may fail with errors other than conflicts (a run with injected faults);
    /// when false, such an error is itself a violation.
    pub faults_expected: bool,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        HistoryOptions {
            writers: 6,
            readers: 3,
            appends_per_writer: 30,
            streams: 4,
            max_batch: 3,
            pad: 0,
            seed: 1,
            faults_expected: false,
        }
    }
}

/// What a history did and what the checker found.
#[derive(Debug, Default)]
pub struct HistoryReport {
    /// Calls recorded.
    pub calls: usize,
    /// Appends that returned `Ok`.
    pub appends_ok: usize,
    /// Appends refused with a conflict.
    pub conflicts: usize,
    /// Appends that failed otherwise (only with `faults_expected`).
    pub appends_failed: usize,
    /// Read calls.
    pub reads: usize,
    /// Events returned by reads, in total.
    pub events_read: usize,
    /// Every violation found, in words (empty: the history is correct).
    pub violations: Vec<String>,
    /// Acknowledged events: (stream, version, position, id), in position order.
    pub acknowledged: Vec<(StreamId, u64, u64, EventId)>,
    /// Ids of events whose append failed.
    pub failed_ids: HashSet<EventId>,
    prefix: String,
}

impl fmt::Display for HistoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} calls: {} appends acknowledged, {} conflicts, {} failed; {} reads returned {} events; {} violations",
            self.calls,
            self.appends_ok,
            self.conflicts,
            self.appends_failed,
            self.reads,
            self.events_read,
            self.violations.len()
        )
    }
}

impl HistoryReport {
    /// Panics with every violation when there is one.
    pub fn assert_ok(&self) {
        if !self.violations.is_empty() {
            panic!("history check failed ({self}):\n  {}", self.violations.join("\n  "));
        }
    }

    /// Checks a store reopened after the history (a durable backend): every acknowledged event
    /// is there at its stream, version and position, and no event of a failed append is.
    pub async fn verify_after_reopen<B: EventStoreBackend + ?Sized>(&self, backend: &B) -> Vec<String> {
        let mut violations = Vec::new();
        let log = match backend.get_all_events().await {
            Ok(log) => log,
            Err(error) => return vec![format!("reading the reopened store failed: {error}")],
        };
        let by_id: HashMap<EventId, &RecordedEvent> = log.iter().map(|e| (e.metadata.event_id, e)).collect();
        for (stream, version, position, id) in &self.acknowledged {
            match by_id.get(id) {
                None => {
                    violations.push(format!("acknowledged event {stream} v{version} (position {position}) is lost"))
                }
                Some(e) if e.stream_id != *stream || e.version != *version || e.position != *position => violations
                    .push(format!(
                        "acknowledged event {stream} v{version} at {position} came back as {} v{} at {}",
                        e.stream_id, e.version, e.position
                    )),
                Some(_) => {}
            }
        }
        for e in &log {
            if self.failed_ids.contains(&e.metadata.event_id) {
                violations.push(format!(
                    "event of a failed append is stored: {} v{} at {}",
                    e.stream_id, e.version, e.position
                ));
            }
        }
        let ours = log.iter().filter(|e| e.stream_id.starts_with(&self.prefix)).count();
        if ours != self.acknowledged.len() && violations.is_empty() {
            violations.push(format!("{ours} events stored, {} acknowledged", self.acknowledged.len()));
        }
        violations.extend(self.check_find_event(backend).await);
        violations
    }

    /// Contract 13: `find_event` names every acknowledged event's stream, version and position,
    /// and no event of a failed append.
    pub async fn check_find_event<B: EventStoreBackend + ?Sized>(&self, backend: &B) -> Vec<String> {
        let mut violations = Vec::new();
        for (stream, version, position, id) in &self.acknowledged {
            match backend.find_event(*id).await {
                Ok(Some(at)) if at.stream == *stream && at.version == *version && at.position == *position => {}
                Ok(Some(at)) => violations.push(format!(
                    "find_event of {stream} v{version} at {position} named {} v{} at {}",
                    at.stream, at.version, at.position
                )),
                Ok(None) => violations.push(format!("find_event does not find acknowledged {stream} v{version}")),
                Err(error) => violations.push(format!("find_event of {stream} v{version} failed: {error}")),
            }
        }
        for id in &self.failed_ids {
            if let Ok(Some(at)) = backend.find_event(*id).await {
                violations.push(format!("find_event names an event of a failed append: {} v{}", at.stream, at.version));
            }
        }
        violations.truncate(50);
        violations
    }
}

/// Runs one history against `backend` (fresh, or at least without streams of this run's
/// prefix) and checks it.
pub async fn run_history<B: EventStoreBackend + ?Sized>(backend: Arc<B>, options: HistoryOptions) -> HistoryReport {
    let prefix = format!("history-{}", EventId::new());
    let clock = Arc::new(AtomicU64::new(1));
    let writers_done = Arc::new(AtomicBool::new(false));
    let mut writer_tasks = Vec::new();
    for writer in 0..options.writers {
        let (backend, clock, prefix) = (Arc::clone(&backend), Arc::clone(&clock), prefix.clone());
        writer_tasks.push(tokio::spawn(async move { write(&*backend, &clock, &prefix, writer, options).await }));
    }
    let mut reader_tasks = Vec::new();
    for reader in 0..options.readers.max(1) {
        let (backend, clock, prefix, done) =
            (Arc::clone(&backend), Arc::clone(&clock), prefix.clone(), Arc::clone(&writers_done));
        reader_tasks.push(tokio::spawn(async move { read(&*backend, &clock, &prefix, reader, options, &done).await }));
    }
    let mut records = Vec::new();
    for task in writer_tasks {
        records.extend(task.await.expect("a writer task panicked"));
    }
    writers_done.store(true, Ordering::SeqCst);
    let mut tail = Vec::new();
    for (index, task) in reader_tasks.into_iter().enumerate() {
        let (recorded, tailed) = task.await.expect("a reader task panicked");
        records.extend(recorded);
        if index == 0 {
            tail = tailed;
        }
    }
    // A last read of the whole log, after every call has ended.
    let start = clock.fetch_add(1, Ordering::SeqCst);
    let whole = backend.get_all_events().await.map_err(|e| e.to_string());
    let end = clock.fetch_add(1, Ordering::SeqCst);
    records.push(Record {
        task: usize::MAX,
        start,
        end,
        call: Call::ReadAll { after: 0, limit: usize::MAX, result: whole },
    });
    let caps = backend.capabilities();
    let mut report = check(records, &tail, &prefix, options, &caps);
    // Contract 13 after the history, on a store that took every append and is still open (one
    // poisoned by an injected fault refuses every call, also when the fault came after the last
    // acknowledgement, as a background sync of an interval mode can; `verify_after_reopen`
    // checks it after reopening).
    let poisoned = options.faults_expected && matches!(backend.flush().await, Err(Error::Closed { .. }));
    if report.appends_failed == 0 && !poisoned {
        let found = report.check_find_event(&*backend).await;
        report.violations.extend(found);
    }
    report
}

/// A tiny deterministic generator (SplitMix64), so histories are reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, task: usize) -> Self {
        Rng(seed ^ (task as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

#[derive(Debug)]
enum Call {
    Append { stream: usize, events: Vec<NewEvent>, result: Result<AppendResult, (bool, String)> },
    ReadStream { stream: usize, after: u64, limit: usize, result: Result<Vec<RecordedEvent>, String> },
    ReadAll { after: u64, limit: usize, result: Result<Vec<RecordedEvent>, String> },
    StreamVersion { stream: usize, result: Result<u64, String> },
    Head { result: Result<u64, String> },
    ListStreams { result: Result<Vec<(StreamId, u64)>, String> },
}

#[derive(Debug)]
struct Record {
    task: usize,
    start: u64,
    end: u64,
    call: Call,
}

fn stream_name(prefix: &str, stream: usize) -> String {
    format!("{prefix}-{stream}")
}

async fn write<B: EventStoreBackend + ?Sized>(
    backend: &B,
    clock: &AtomicU64,
    prefix: &str,
    writer: usize,
    options: HistoryOptions,
) -> Vec<Record> {
    let mut rng = Rng::new(options.seed, writer);
    let mut known = vec![0u64; options.streams.max(1)];
    let mut records = Vec::new();
    for append in 0..options.appends_per_writer {
        let stream = rng.below(options.streams);
        let count = 1 + rng.below(options.max_batch);
        let expected = match rng.below(10) {
            0..=6 => ExpectedVersion::Any,
            7 | 8 => ExpectedVersion::Exact(known[stream]),
            _ => ExpectedVersion::NoStream,
        };
        let pad = "p".repeat(options.pad);
        let events: Vec<NewEvent> = (0..count)
            .map(|i| NewEvent::new("History", format!(r#"{{"w":{writer},"a":{append},"i":{i},"pad":"{pad}"}}"#)))
            .collect();
        let start = clock.fetch_add(1, Ordering::SeqCst);
        let result = backend.append(&stream_name(prefix, stream), expected, events.clone()).await;
        let end = clock.fetch_add(1, Ordering::SeqCst);
        let result = match result {
            Ok(result) => {
                known[stream] = result.stream_version;
                Ok(result)
            }
            Err(error) => {
                if let Error::Conflict { actual, .. } = &error {
                    known[stream] = *actual;
                }
                Err((error.is_conflict(), error.to_string()))
            }
        };
        records.push(Record { task: writer, start, end, call: Call::Append { stream, events, result } });
    }
    records
}

async fn read<B: EventStoreBackend + ?Sized>(
    backend: &B,
    clock: &AtomicU64,
    prefix: &str,
    reader: usize,
    options: HistoryOptions,
    writers_done: &AtomicBool,
) -> (Vec<Record>, Vec<RecordedEvent>) {
    let task = options.writers + reader;
    let mut rng = Rng::new(options.seed, task);
    let mut records = Vec::new();
    let mut tail: Vec<RecordedEvent> = Vec::new();
    let mut checkpoint = 0u64;
    let mut max_position = 0u64;
    // Bounded: a reader stops after this many calls even if the writers are slow.
    let budget = 40 * options.writers.max(1) * options.appends_per_writer.max(1);
    let mut calls = 0;
    loop {
        let done = writers_done.load(Ordering::SeqCst);
        let start = clock.fetch_add(1, Ordering::SeqCst);
        if reader == 0 {
            // The tailer: the next page after its checkpoint, as a catch-up subscriber reads.
            let (after, limit) = (checkpoint, 1 + rng.below(6));
            let result = backend.read_all(after, limit).await.map_err(|e| e.to_string());
            let end = clock.fetch_add(1, Ordering::SeqCst);
            let (caught_up, empty) = match &result {
                Ok(page) => {
                    if let Some(last) = page.last() {
                        checkpoint = last.position;
                    }
                    tail.extend(page.iter().cloned());
                    (done && page.len() < limit, page.is_empty())
                }
                Err(_) => (done, true),
            };
            records.push(Record { task, start, end, call: Call::ReadAll { after, limit, result } });
            if caught_up {
                break;
            }
            if empty {
                // Caught up while the writers go on: wait for a commit, as a subscriber does.
                let _ = backend.wait_for_commit(checkpoint, std::time::Duration::from_millis(20)).await;
            }
            continue;
        }
        let stream = rng.below(options.streams);
        let name = stream_name(prefix, stream);
        let call = match rng.below(5) {
            0 => {
                let (after, limit) = (rng.below(12) as u64, 1 + rng.below(6));
                let result = backend.read_stream(&name, after, limit).await.map_err(|e| e.to_string());
                Call::ReadStream { stream, after, limit, result }
            }
            1 => {
                let after = rng.below(max_position as usize + 2) as u64;
                let limit = 1 + rng.below(10);
                let result = backend.read_all(after, limit).await.map_err(|e| e.to_string());
                Call::ReadAll { after, limit, result }
            }
            2 => Call::StreamVersion { stream, result: backend.stream_version(&name).await.map_err(|e| e.to_string()) },
            3 => {
                let result = backend.head_position().await.map_err(|e| e.to_string());
                if let Ok(head) = result {
                    max_position = max_position.max(head);
                }
                Call::Head { result }
            }
            _ => Call::ListStreams {
                result: backend.list_streams(Some(prefix), 10_000).await.map_err(|e| e.to_string()),
            },
        };
        let end = clock.fetch_add(1, Ordering::SeqCst);
        records.push(Record { task, start, end, call });
        calls += 1;
        if done || calls >= budget {
            break;
        }
        // Reads of in-memory backends never wait: let the writers have the workers too.
        tokio::task::yield_now().await;
    }
    (records, tail)
}

/// What the acknowledged appends say about one event.
struct Truth {
    append: usize,
    stream: usize,
    version: u64,
    /// Known exactly when the append's positions are contiguous; otherwise learned from reads.
    position: Option<u64>,
    payload: allframe_cqrs_core::Bytes,
}

fn check(
    mut records: Vec<Record>,
    tail: &[RecordedEvent],
    prefix: &str,
    options: HistoryOptions,
    caps: &allframe_cqrs_core::Capabilities,
) -> HistoryReport {
    records.sort_by_key(|r| r.start);
    let mut report = HistoryReport { calls: records.len(), prefix: prefix.to_owned(), ..HistoryReport::default() };
    let mut v = Vec::new();
    let stream_of = |name: &str| -> Option<usize> { name.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok() };

    // Acknowledged appends: (record index, stream, result, events).
    let mut acked: Vec<(usize, usize, AppendResult)> = Vec::new();
    let mut truth: HashMap<EventId, Truth> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        let Call::Append { stream, events, result } = &record.call else { continue };
        match result {
            Ok(result) => {
                report.appends_ok += 1;
                if result.deduplicated {
                    v.push(format!("append {index} of new ids was reported as a deduplicated retry"));
                }
                let n = events.len() as u64;
                let contiguous = result.last_position.checked_sub(result.first_position) == Some(n - 1);
                for (i, event) in events.iter().enumerate() {
                    let i = i as u64;
                    let position = if contiguous {
                        Some(result.first_position + i)
                    } else if i == 0 {
                        Some(result.first_position)
                    } else if i == n - 1 {
                        Some(result.last_position)
                    } else {
                        None
                    };
                    truth.insert(
                        event.metadata.event_id,
                        Truth {
                            append: index,
                            stream: *stream,
                            version: result.stream_version + 1 + i - n,
                            position,
                            payload: event.payload.clone(),
                        },
                    );
                }
                acked.push((index, *stream, *result));
            }
            Err((true, _)) => {
                report.conflicts += 1;
                report.failed_ids.extend(events.iter().map(|e| e.metadata.event_id));
            }
            Err((false, error)) => {
                report.appends_failed += 1;
                report.failed_ids.extend(events.iter().map(|e| e.metadata.event_id));
                if !options.faults_expected {
                    v.push(format!("append by task {} failed: {error}", record.task));
                }
            }
        }
    }

    // One order: versions tile each stream, positions of appends do not overlap.
    for stream in 0..options.streams {
        let mut ranges: Vec<(u64, u64)> = acked
            .iter()
            .filter(|(_, s, _)| *s == stream)
            .map(|(i, _, r)| {
                let n = match &records[*i].call {
                    Call::Append { events, .. } => events.len() as u64,
                    _ => 0,
                };
                (r.stream_version + 1 - n, r.stream_version)
            })
            .collect();
        ranges.sort_unstable();
        let mut next = 1;
        for (first, last) in ranges {
            if first != next {
                v.push(format!("stream {stream}: an acknowledged append covers versions {first}..={last}, expected it to start at {next} (gap or overlap)"));
            }
            next = last + 1;
        }
    }
    let mut spans: Vec<(u64, u64)> = acked.iter().map(|(_, _, r)| (r.first_position, r.last_position)).collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        if pair[0].1 >= pair[1].0 || pair[0].0 > pair[0].1 {
            v.push(format!("positions of two acknowledged appends overlap: {:?} and {:?}", pair[0], pair[1]));
        }
    }
    for (a_index, a_stream, a) in &acked {
        for (b_index, b_stream, b) in &acked {
            let (ra, rb) = (&records[*a_index], &records[*b_index]);
            if ra.end < rb.start && a.last_position >= b.first_position {
                v.push(format!(
                    "append at positions {}..={} ended before an append at {}..={} started, yet is not below it",
                    a.first_position, a.last_position, b.first_position, b.last_position
                ));
            }
            if a_stream == b_stream && a.stream_version < b.stream_version && a.last_position >= b.first_position {
                v.push(format!(
                    "stream {a_stream}: version {} is at position {}, after version {} at {}",
                    a.stream_version, a.last_position, b.stream_version, b.first_position
                ));
            }
        }
    }

    // Positions learned from reads, so that every read agrees with every other.
    let mut seen_at: HashMap<EventId, u64> = HashMap::new();
    for record in &records {
        let page = match &record.call {
            Call::ReadStream { result: Ok(page), .. } | Call::ReadAll { result: Ok(page), .. } => page,
            _ => continue,
        };
        for event in page {
            match seen_at.insert(event.metadata.event_id, event.position) {
                Some(other) if other != event.position => v.push(format!(
                    "event {} v{} read at position {} and at {other}",
                    event.stream_id, event.version, event.position
                )),
                _ => {}
            }
        }
    }
    let position_of = |id: &EventId| truth.get(id).and_then(|t| t.position).or_else(|| seen_at.get(id).copied());

    // Bounds from the appends around a read: acknowledged before it started, or started before it ended.
    let recs = &records;
    let acked_before = |start: u64| acked.iter().filter(move |(i, _, _)| recs[*i].end < start);
    let started_before = |end: u64| acked.iter().filter(move |(i, _, _)| recs[*i].start < end);
    let failed_ids = report.failed_ids.clone();

    for record in &records {
        let (start, end) = (record.start, record.end);
        let check_event = |event: &RecordedEvent, v: &mut Vec<String>| {
            let Some(stream) = stream_of(&event.stream_id) else { return };
            let id = event.metadata.event_id;
            let Some(t) = truth.get(&id) else {
                if failed_ids.contains(&id) {
                    v.push(format!(
                        "a read by task {} saw {} v{} at {}, an event of a FAILED append",
                        record.task, event.stream_id, event.version, event.position
                    ));
                } else {
                    v.push(format!("a read saw {} v{}, which no append wrote", event.stream_id, event.version));
                }
                return;
            };
            if recs[t.append].start > end {
                v.push(format!("a read saw {} v{} before its append started", event.stream_id, event.version));
            }
            if t.stream != stream || t.version != event.version {
                v.push(format!(
                    "event read as {} v{}; its append put it at stream {} v{}",
                    event.stream_id, event.version, t.stream, t.version
                ));
            }
            if t.position.is_some_and(|p| p != event.position) {
                v.push(format!(
                    "event {} v{} read at position {}, acknowledged at {:?}",
                    event.stream_id, event.version, event.position, t.position
                ));
            }
            if !same_payload(caps, &event.payload, &t.payload) || event.event_type != "History" {
                v.push(format!("event {} v{} came back with another type or payload", event.stream_id, event.version));
            }
        };
        match &record.call {
            Call::Append { .. } => {}
            Call::ReadStream { result: Err(e), .. }
            | Call::ReadAll { result: Err(e), .. }
            | Call::StreamVersion { result: Err(e), .. }
            | Call::Head { result: Err(e) }
            | Call::ListStreams { result: Err(e) } => {
                report.reads += 1;
                if !options.faults_expected {
                    v.push(format!("a read by task {} failed: {e}", record.task));
                }
            }
            Call::ReadStream { stream, after, limit, result: Ok(page) } => {
                report.reads += 1;
                report.events_read += page.len();
                let name = stream_name(prefix, *stream);
                for (i, event) in page.iter().enumerate() {
                    if event.stream_id != *name.as_str() || event.version != after + 1 + i as u64 {
                        v.push(format!(
                            "read_stream({name}, after {after}) returned {} v{} at index {i}",
                            event.stream_id, event.version
                        ));
                    }
                    check_event(event, &mut v);
                }
                if page.len() > *limit {
                    v.push(format!("read_stream returned {} events for a limit of {limit}", page.len()));
                }
                let lower = acked_before(start).filter(|(_, s, _)| s == stream).map(|(_, _, r)| r.stream_version).max();
                if let Some(lower) = lower.filter(|l| l > after) {
                    let want = ((lower - after) as usize).min(*limit);
                    if page.len() < want {
                        v.push(format!(
                            "read_stream({name}, after {after}, limit {limit}) returned {} events; version {lower} was acknowledged before it started",
                            page.len()
                        ));
                    }
                }
            }
            Call::ReadAll { after, limit, result: Ok(page) } => {
                report.reads += 1;
                report.events_read += page.len();
                let mut previous = *after;
                for event in page {
                    if event.position <= previous {
                        v.push(format!(
                            "read_all(after {after}) returned position {} after {previous}",
                            event.position
                        ));
                    }
                    previous = event.position;
                    check_event(event, &mut v);
                }
                if page.len() > *limit {
                    v.push(format!("read_all returned {} events for a limit of {limit}", page.len()));
                }
                let returned: HashSet<EventId> = page.iter().map(|e| e.metadata.event_id).collect();
                let upto = if page.len() < *limit { u64::MAX } else { page.last().map_or(*after, |e| e.position) };
                for (index, _, _) in acked_before(start) {
                    let Call::Append { events, .. } = &recs[*index].call else { continue };
                    for event in events {
                        let id = event.metadata.event_id;
                        let Some(position) = position_of(&id) else { continue };
                        if position > *after && position <= upto && !returned.contains(&id) {
                            v.push(format!(
                                "read_all(after {after}, limit {limit}) skipped position {position}, acknowledged before the read started"
                            ));
                        }
                    }
                }
            }
            Call::StreamVersion { stream, result: Ok(version) } => {
                report.reads += 1;
                let lower = acked_before(start).filter(|(_, s, _)| s == stream).map(|(_, _, r)| r.stream_version).max();
                let reachable =
                    *version == 0 || started_before(end).any(|(_, s, r)| s == stream && r.stream_version == *version);
                check_version(&mut v, "stream_version", *stream, *version, lower.unwrap_or(0), reachable);
            }
            Call::ListStreams { result: Ok(list) } => {
                report.reads += 1;
                let listed: HashMap<usize, u64> =
                    list.iter().filter_map(|(id, version)| Some((stream_of(id)?, *version))).collect();
                for stream in 0..options.streams {
                    let version = listed.get(&stream).copied().unwrap_or(0);
                    let lower =
                        acked_before(start).filter(|(_, s, _)| *s == stream).map(|(_, _, r)| r.stream_version).max();
                    let reachable = version == 0
                        || started_before(end).any(|(_, s, r)| *s == stream && r.stream_version == version);
                    check_version(&mut v, "list_streams", stream, version, lower.unwrap_or(0), reachable);
                }
            }
            Call::Head { result: Ok(head) } => {
                report.reads += 1;
                let lower = acked_before(start).map(|(_, _, r)| r.last_position).max().unwrap_or(0);
                let upper = started_before(end).map(|(_, _, r)| r.last_position).max().unwrap_or(0);
                if *head < lower {
                    v.push(format!("head_position {head} is below position {lower}, acknowledged before the call"));
                }
                if *head > upper {
                    v.push(format!(
                        "head_position {head} is above every acknowledged append begun before it ended ({upper})"
                    ));
                }
            }
        }
    }

    // No skip: the tailer has every acknowledged event once, in position order.
    let tailed: Vec<&RecordedEvent> = tail.iter().filter(|e| stream_of(&e.stream_id).is_some()).collect();
    if tail.windows(2).any(|w| w[0].position >= w[1].position) {
        v.push("the tailing reader got positions out of order or twice".to_owned());
    }
    let tailed_ids: HashSet<EventId> = tailed.iter().map(|e| e.metadata.event_id).collect();
    // Counted by id: an event no read saw has no known position, and must still count.
    let missed: Vec<&EventId> = truth.keys().filter(|id| !tailed_ids.contains(id)).collect();
    if !missed.is_empty() {
        let known: Vec<u64> = missed.iter().filter_map(|id| position_of(id)).take(5).collect();
        v.push(format!("the tailing reader skipped {} acknowledged events (known positions {known:?}…)", missed.len()));
    }
    // Every acknowledged event was read somewhere (the last whole-log read at least), so its
    // position is known; one that is not was never returned by any read.
    let unplaced = truth.keys().filter(|id| position_of(id).is_none()).count();
    if unplaced > 0 {
        v.push(format!("{unplaced} acknowledged events were never returned by any read"));
    }

    let mut acknowledged: Vec<(StreamId, u64, u64, EventId)> = truth
        .iter()
        .map(|(id, t)| (StreamId::from(stream_name(prefix, t.stream)), t.version, position_of(id).unwrap_or(0), *id))
        .collect();
    acknowledged.sort_by_key(|(_, _, position, _)| *position);
    report.acknowledged = acknowledged;
    v.truncate(50);
    report.violations = v;
    report
}

/// A stream version read at some point: at least what was acknowledged before the read
/// started (`lower`), and one that an acknowledged append reached (`reachable`).
fn check_version(v: &mut Vec<String>, call: &str, stream: usize, version: u64, lower: u64, reachable: bool) {
    if version < lower {
        v.push(format!(
            "{call}: stream {stream} at version {version}, but version {lower} was acknowledged before the call"
        ));
    }
    if !reachable {
        v.push(format!(
            "{call}: stream {stream} at version {version}, which no acknowledged append begun before the call ended reached"
        ));
    }
}
