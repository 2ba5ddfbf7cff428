//! The conformance cases. Each is a plain `async fn` taking a fresh, empty backend, and
//! quotes the point of the contract (on `EventStoreBackend`) that it checks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use allframe_cqrs_core::read;
use allframe_cqrs_core::{
    Capabilities, Error, EventId, EventStoreBackend, ExpectedVersion, Metadata, NewEvent, RawSubscription,
    RecordedEvent, Snapshot, StartFrom, SubscriptionOptions, Timestamp,
};
use futures_util::TryStreamExt;

mod checkpoints;
mod visit;

/// Longest any case waits for something that should happen (a commit to be seen); only a
/// safety net against hangs, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

/// A JSON event payload, distinct per `n`.
pub fn event(event_type: &'static str, n: u64) -> NewEvent {
    NewEvent::new(event_type, format!(r#"{{"n":{n},"kind":"{event_type}","pad":"{}"}}"#, "x".repeat((n % 7) as usize)))
}

/// `count` events numbered from `first`.
pub fn events(first: u64, count: u64) -> Vec<NewEvent> {
    (first..first + count).map(|n| event("Tested", n)).collect()
}

/// A stream id unique to this run.
pub fn unique_stream(prefix: &str) -> String {
    format!("{prefix}-{}", EventId::new())
}

/// Whether two payloads are equal as the backend promises: byte for byte, or as JSON for
/// backends that store JSON documents.
pub fn same_payload(caps: &Capabilities, left: &[u8], right: &[u8]) -> bool {
    if caps.json_payloads {
        let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
        matches!((parse(left), parse(right)), (Some(l), Some(r)) if l == r)
    } else {
        left == right
    }
}

pub(crate) fn assert_same_events<B: EventStoreBackend + ?Sized>(
    backend: &B,
    stored: &[RecordedEvent],
    appended: &[NewEvent],
) {
    let caps = backend.capabilities();
    assert_eq!(stored.len(), appended.len(), "number of events read back");
    for (s, a) in stored.iter().zip(appended) {
        assert_eq!(s.event_type, a.event_type, "event type read back");
        assert!(same_payload(&caps, &s.payload, &a.payload), "payload read back: {:?} vs {:?}", s.payload, a.payload);
        assert_eq!(s.metadata, a.metadata, "metadata read back");
    }
}

async fn whole_log<B: EventStoreBackend + ?Sized>(backend: &B) -> Vec<RecordedEvent> {
    backend.get_all_events().await.expect("read the whole log")
}

fn expect_conflict<T: std::fmt::Debug>(result: Result<T, Error>, stream: &str, expected: ExpectedVersion, actual: u64) {
    match result {
        Err(Error::Conflict { stream: s, expected: e, actual: a }) => {
            assert_eq!(s, stream, "conflict names the stream");
            assert_eq!(e, expected, "conflict names the expected version");
            assert_eq!(a, actual, "conflict names the actual version");
        }
        other => panic!("contract 2: expected a conflict (expected {expected}, actual {actual}), got {other:?}"),
    }
}

/// Contract 1: the first event of a stream has version 1; positions start above 0.
pub async fn append_to_new_stream_starts_at_version_1<B: EventStoreBackend>(backend: B) {
    let stream = unique_stream("first");
    let appended = events(1, 1);
    let result = backend.append(&stream, ExpectedVersion::NoStream, appended.clone()).await.expect("append");
    assert_eq!(result.stream_version, 1);
    assert!(result.first_position > 0 && result.first_position == result.last_position);
    assert!(!result.deduplicated);
    let stored = backend.read_stream(&stream, 0, 10).await.expect("read");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].version, 1);
    assert_eq!(stored[0].position, result.first_position);
    assert_eq!(stored[0].stream_id, stream.as_str());
    assert_same_events(&backend, &stored, &appended);
}

/// Contract 1: versions are contiguous across appends, with no gap or duplicate.
pub async fn versions_are_contiguous<B: EventStoreBackend>(backend: B) {
    let stream = unique_stream("contiguous");
    let mut all = Vec::new();
    for (i, size) in [3u64, 1, 5, 2].into_iter().enumerate() {
        let batch = events(i as u64 * 10, size);
        let result = backend.append(&stream, ExpectedVersion::Any, batch.clone()).await.expect("append");
        all.extend(batch);
        assert_eq!(result.stream_version, all.len() as u64);
    }
    let stored = backend.get_events(&stream).await.expect("read");
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=all.len() as u64).collect::<Vec<_>>(), "contract 1: versions 1..=n");
    assert_same_events(&backend, &stored, &all);
    assert_eq!(backend.stream_version(&stream).await.expect("version"), all.len() as u64);
}

/// Contract 2: `NoStream` conflicts on an existing stream, naming expected and actual versions.
pub async fn no_stream_conflicts_on_existing_stream<B: EventStoreBackend>(backend: B) {
    let stream = unique_stream("nostream");
    backend.append(&stream, ExpectedVersion::NoStream, events(1, 2)).await.expect("first append");
    let result = backend.append(&stream, ExpectedVersion::NoStream, events(3, 1)).await;
    expect_conflict(result, &stream, ExpectedVersion::NoStream, 2);
    let result = backend.append(&stream, ExpectedVersion::Exact(0), events(3, 1)).await;
    expect_conflict(result, &stream, ExpectedVersion::Exact(0), 2);
    assert_eq!(backend.stream_version(&stream).await.unwrap(), 2, "contract 2: a conflict writes nothing");
}

/// Contract 2: `StreamExists` conflicts on a missing stream; `Any` never conflicts.
pub async fn stream_exists_conflicts_on_missing_stream<B: EventStoreBackend>(backend: B) {
    let stream = unique_stream("exists");
    let result = backend.append(&stream, ExpectedVersion::StreamExists, events(1, 1)).await;
    expect_conflict(result, &stream, ExpectedVersion::StreamExists, 0);
    assert!(backend.read_stream(&stream, 0, 10).await.unwrap().is_empty(), "contract 2: nothing written");
    backend.append(&stream, ExpectedVersion::Any, events(1, 1)).await.expect("Any on a missing stream");
    backend
        .append(&stream, ExpectedVersion::StreamExists, events(2, 1))
        .await
        .expect("StreamExists on an existing stream");
    backend.append(&stream, ExpectedVersion::Any, events(3, 1)).await.expect("Any on an existing stream");
    assert_eq!(backend.stream_version(&stream).await.unwrap(), 3);
}

/// Contract 2: `Exact(n)` conflicts when the stream is below or above n, and succeeds at n.
pub async fn exact_conflicts_on_other_versions<B: EventStoreBackend>(backend: B) {
    let stream = unique_stream("exact");
    let result = backend.append(&stream, ExpectedVersion::Exact(1), events(1, 1)).await;
    expect_conflict(result, &stream, ExpectedVersion::Exact(1), 0);
    backend.append(&stream, ExpectedVersion::Exact(0), events(1, 3)).await.expect("Exact(0) on a missing stream");
    for wrong in [1, 2, 4, 100] {
        let result = backend.append(&stream, ExpectedVersion::Exact(wrong), events(10, 1)).await;
        expect_conflict(result, &stream, ExpectedVersion::Exact(wrong), 3);
    }
    let result = backend.append(&stream, ExpectedVersion::Exact(3), events(4, 2)).await.expect("Exact(3)");
    assert_eq!(result.stream_version, 5);
}

/// Contract 2: an empty append checks the expected version and writes nothing.
pub async fn empty_append_checks_expected_version<B: EventStoreBackend>(backend: B) {
    let stream = unique_stream("empty");
    let result = backend.append(&stream, ExpectedVersion::NoStream, Vec::new()).await.expect("empty append");
    assert_eq!(result.stream_version, 0);
    assert_eq!(backend.stream_version(&stream).await.unwrap(), 0, "an empty append creates no stream");
    let result = backend.append(&stream, ExpectedVersion::StreamExists, Vec::new()).await;
    expect_conflict(result, &stream, ExpectedVersion::StreamExists, 0);
    assert_eq!(backend.head_position().await.unwrap(), 0);
}

/// Contract 2: of N concurrent appends at the same expected version, exactly one succeeds;
/// the others get conflicts and write nothing.
pub async fn concurrent_appends_at_same_version_have_one_winner<B: EventStoreBackend>(backend: B) {
    let backend = Arc::new(backend);
    let stream = unique_stream("race");
    backend.append(&stream, ExpectedVersion::NoStream, events(0, 1)).await.expect("seed the stream");
    for round in 0..5u64 {
        let version = 1 + round * 2;
        let tasks: Vec<_> = (0..16u64)
            .map(|task| {
                let backend = Arc::clone(&backend);
                let stream = stream.clone();
                tokio::spawn(async move {
                    backend.append(&stream, ExpectedVersion::Exact(version), events(task * 100, 2)).await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(result) => {
                    winners += 1;
                    assert_eq!(result.stream_version, version + 2);
                }
                Err(Error::Conflict { actual, .. }) => {
                    assert_eq!(actual, version + 2, "loser sees the winner's version")
                }
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
        assert_eq!(winners, 1, "contract 2: exactly one winner in round {round}");
    }
    let stored = backend.get_events(&stream).await.unwrap();
    assert_eq!(stored.len(), 11, "contract 1/3: only the winners' events, each whole");
    assert!(stored.iter().enumerate().all(|(i, e)| e.version == i as u64 + 1));
}

/// Contract 3 and 10: an append that fails (one event too large, in the middle) stores none of its events.
pub async fn failed_append_stores_nothing<B: EventStoreBackend>(backend: B) {
    let stream = unique_stream("atomic");
    backend.append(&stream, ExpectedVersion::Any, events(1, 2)).await.expect("append");
    let head = backend.head_position().await.unwrap();
    let mut batch = events(10, 5);
    let huge = format!(r#"{{"blob":"{}"}}"#, "z".repeat(5 * 1024 * 1024));
    batch[2] = NewEvent::new("Huge", huge);
    let result = backend.append(&stream, ExpectedVersion::Exact(2), batch).await;
    assert!(matches!(result, Err(Error::EventTooLarge { .. })), "contract 10: too large, got {result:?}");
    let result = backend.append(&stream, ExpectedVersion::Exact(1), events(20, 50)).await;
    expect_conflict(result, &stream, ExpectedVersion::Exact(1), 2);
    assert_eq!(backend.stream_version(&stream).await.unwrap(), 2, "contract 3: all or nothing");
    assert_eq!(
        backend.head_position().await.unwrap(),
        head,
        "contract 3: no position used by a failed append is visible"
    );
    assert_eq!(whole_log(&backend).await.len(), 2);
}

/// Contract 4: positions strictly increase in commit order across streams.
pub async fn positions_increase_across_streams<B: EventStoreBackend>(backend: B) {
    let streams: Vec<String> = (0..4).map(|i| unique_stream(&format!("pos{i}"))).collect();
    let mut last = 0;
    for round in 0..5u64 {
        for stream in &streams {
            let result = backend.append(stream, ExpectedVersion::Any, events(round, 2)).await.unwrap();
            assert!(result.first_position > last, "contract 4: a later append gets a higher position");
            assert!(result.last_position > result.first_position);
            last = result.last_position;
        }
    }
    let log = whole_log(&backend).await;
    assert_eq!(log.len(), 40);
    assert!(log.windows(2).all(|w| w[0].position < w[1].position), "contract 4: the log is in position order");
    assert_eq!(backend.head_position().await.unwrap(), last);
}

/// Contract 4: with many concurrent writers on many streams, a reader tailing the log by
/// position never sees a lower position appear after a higher one, and in the end has seen
/// every committed event exactly once (no skipped commit).
pub async fn concurrent_writers_never_let_a_tailing_reader_skip<B: EventStoreBackend>(backend: B) {
    let backend = Arc::new(backend);
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 40;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move {
                let stream = unique_stream(&format!("tail{w}"));
                for i in 0..APPENDS {
                    backend.append(&stream, ExpectedVersion::Any, events(i, 1 + i % 3)).await.expect("append");
                }
            })
        })
        .collect();
    let total: u64 = WRITERS * (0..APPENDS).map(|i| 1 + i % 3).sum::<u64>();
    let reader = {
        let backend = Arc::clone(&backend);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while (seen.len() as u64) < total {
                assert!(tokio::time::Instant::now() < deadline, "reader saw {} of {total} events", seen.len());
                let page = backend.read_all(after, 7).await.expect("read_all");
                for event in page {
                    assert!(event.position > after, "contract 4: position {} after {after}", event.position);
                    after = event.position;
                    seen.push(event.metadata.event_id);
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    for writer in writers {
        writer.await.expect("writer");
    }
    let seen = reader.await.expect("reader");
    let log = whole_log(&*backend).await;
    assert_eq!(log.len() as u64, total);
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "contract 4: no event seen twice");
    let logged: Vec<_> = log.iter().map(|e| e.metadata.event_id).collect();
    assert_eq!(seen, logged, "contract 4: the tailing reader saw exactly the log, in order");
    let mut by_stream: HashMap<_, Vec<u64>> = HashMap::new();
    for event in &log {
        by_stream.entry(event.stream_id.clone()).or_default().push(event.version);
    }
    for versions in by_stream.values() {
        assert!(versions.iter().enumerate().all(|(i, v)| *v == i as u64 + 1), "contract 1 under concurrency");
    }
}

/// Contract 5: a stream larger than one page reads page by page, without gaps or repeats.
pub async fn read_stream_pages<B: EventStoreBackend>(backend: B) {
    let stream = unique_stream("pages");
    let appended = events(0, 250);
    for chunk in appended.chunks(50) {
        backend.append(&stream, ExpectedVersion::Any, chunk.to_vec()).await.unwrap();
    }
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = backend.read_stream(&stream, after, 100).await.unwrap();
        assert!(page.len() <= 100, "a page holds at most `limit` events");
        let Some(last) = page.last() else { break };
        after = last.version;
        read.extend(page);
    }
    assert_same_events(&backend, &read, &appended);
    let middle = backend.read_stream(&stream, 120, 5).await.unwrap();
    assert_eq!(middle.iter().map(|e| e.version).collect::<Vec<_>>(), vec![121, 122, 123, 124, 125]);
    assert!(backend.read_stream(&stream, 250, 10).await.unwrap().is_empty());
    assert!(backend.read_stream(&stream, 1000, 10).await.unwrap().is_empty());
    assert!(
        backend.read_stream(&unique_stream("missing"), 0, 10).await.unwrap().is_empty(),
        "a missing stream reads empty"
    );
    assert_eq!(backend.get_events_after(&stream, 240).await.unwrap().len(), 10, "seed operation get_events_after");
    let streamed: Vec<_> = read::stream_events(&backend, &stream, 10, 33).try_collect().await.unwrap();
    assert_eq!(streamed.len(), 240, "contract 5: streamed read of a stream");
    assert_eq!(streamed.first().unwrap().version, 11);
}

/// Contract 5, without the page: `visit_stream` lends the events `read_stream` returns, in
/// order, at most `limit`, and an error from the visitor ends the read (aggregate loads).
pub async fn visit_stream_lends_what_read_stream_returns<B: EventStoreBackend>(backend: B) {
    visit::lends_what_read_stream_returns(backend).await;
}

/// Contract 5: the whole log reads page by page, and as a stream, in position order.
pub async fn read_all_pages<B: EventStoreBackend>(backend: B) {
    let mut appended = Vec::new();
    for i in 0..30u64 {
        let stream = format!("{}-{}", unique_stream("all"), i % 5);
        let batch = events(i * 10, 1 + i % 4);
        backend.append(&stream, ExpectedVersion::Any, batch.clone()).await.unwrap();
        appended.extend(batch);
    }
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = backend.read_all(after, 16).await.unwrap();
        assert!(page.len() <= 16);
        let Some(last) = page.last() else { break };
        after = last.position;
        read.extend(page);
    }
    assert_same_events(&backend, &read, &appended);
    assert!(read.windows(2).all(|w| w[0].position < w[1].position));
    let streamed: Vec<_> = read::all_events(&backend, 0, 9).try_collect().await.unwrap();
    assert_eq!(streamed, read, "contract 5: streamed read of the log");
    let from_middle = backend.read_all(read[20].position, 3).await.unwrap();
    assert_eq!(from_middle, read[21..24].to_vec());
    assert_eq!(backend.get_all_events().await.unwrap(), read, "seed operation get_all_events");
}

/// Tools list streams in id order, page by page, with their versions.
pub async fn list_streams_pages_in_order<B: EventStoreBackend>(backend: B) {
    let prefix = unique_stream("list");
    let mut names = Vec::new();
    for i in 0..25u64 {
        let name = format!("{prefix}-{i:03}");
        backend.append(&name, ExpectedVersion::Any, events(i, 1 + i % 3)).await.unwrap();
        names.push((name, 1 + i % 3));
    }
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = backend.list_streams(after.as_deref(), 10).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(last.to_string());
        listed.extend(page.into_iter().map(|(id, version)| (id.to_string(), version)));
    }
    let ours: Vec<_> = listed.into_iter().filter(|(id, _)| id.starts_with(&prefix)).collect();
    assert_eq!(ours, names, "streams listed in id order with their versions");
}

/// Contract 7: no snapshot is `Ok(None)`; the latest snapshot (highest version) is kept.
pub async fn snapshots_keep_the_latest<B: EventStoreBackend>(backend: B) {
    if !backend.capabilities().snapshots {
        let result = backend.save_snapshot("s", Snapshot::new(1, "{}")).await;
        assert!(matches!(result, Err(Error::Unsupported { .. })), "without snapshots: Unsupported, got {result:?}");
        return;
    }
    let stream = unique_stream("snap");
    assert_eq!(backend.get_latest_snapshot(&stream).await.unwrap(), None, "contract 7: absent is Ok(None)");
    backend.append(&stream, ExpectedVersion::Any, events(1, 10)).await.unwrap();
    assert_eq!(backend.get_latest_snapshot(&stream).await.unwrap(), None);
    let first = Snapshot { version: 5, payload: r#"{"balance":5}"#.into(), timestamp: Timestamp::from_micros(1_000) };
    backend.save_snapshot(&stream, first.clone()).await.unwrap();
    assert_eq!(backend.get_latest_snapshot(&stream).await.unwrap().as_ref().map(|s| s.version), Some(5));
    let second = Snapshot { version: 9, payload: r#"{"balance":9}"#.into(), timestamp: Timestamp::from_micros(2_000) };
    backend.save_snapshot(&stream, second.clone()).await.unwrap();
    let older = Snapshot { version: 7, payload: r#"{"balance":7}"#.into(), timestamp: Timestamp::from_micros(3_000) };
    backend.save_snapshot(&stream, older).await.unwrap();
    let latest = backend.get_latest_snapshot(&stream).await.unwrap().expect("snapshot");
    assert_eq!(latest.version, 9, "contract 7: the highest version is kept");
    assert!(same_payload(&backend.capabilities(), &latest.payload, &second.payload));
    assert_eq!(latest.timestamp, second.timestamp);
    let other = unique_stream("snap-other");
    assert_eq!(backend.get_latest_snapshot(&other).await.unwrap(), None, "snapshots are per stream");
}

/// Contract 7 and 10: a snapshot above the stream's version, at version 0, or for a missing
/// stream is refused and changes nothing.
pub async fn invalid_snapshots_are_refused<B: EventStoreBackend>(backend: B) {
    if !backend.capabilities().snapshots {
        return;
    }
    let stream = unique_stream("badsnap");
    let result = backend.save_snapshot(&stream, Snapshot::new(1, "{}")).await;
    assert!(matches!(result, Err(Error::InvalidSnapshot { .. })), "missing stream: {result:?}");
    backend.append(&stream, ExpectedVersion::Any, events(1, 3)).await.unwrap();
    backend.save_snapshot(&stream, Snapshot::new(2, r#"{"v":2}"#)).await.unwrap();
    for version in [0, 4, 100] {
        let result = backend.save_snapshot(&stream, Snapshot::new(version, "{}")).await;
        assert!(matches!(result, Err(Error::InvalidSnapshot { .. })), "version {version}: {result:?}");
    }
    let result = backend.save_snapshot("", Snapshot::new(1, "{}")).await;
    assert!(matches!(result, Err(Error::InvalidStreamId { .. })), "empty stream id: {result:?}");
    assert_eq!(backend.get_latest_snapshot(&stream).await.unwrap().map(|s| s.version), Some(2));
}

/// Contract 9: retrying an append whose events carry stored ids succeeds without storing
/// them twice and reports the original positions; partial or foreign repeats are refused.
pub async fn idempotent_retries<B: EventStoreBackend>(backend: B) {
    if !backend.capabilities().idempotent_appends {
        return;
    }
    let stream = unique_stream("idem");
    let batch = events(1, 3);
    let first = backend.append(&stream, ExpectedVersion::NoStream, batch.clone()).await.unwrap();
    let retry =
        backend.append(&stream, ExpectedVersion::NoStream, batch.clone()).await.expect("contract 9: a retry succeeds");
    assert!(retry.deduplicated, "contract 9: the retry is reported as deduplicated");
    assert_eq!(
        (retry.stream_version, retry.first_position, retry.last_position),
        (first.stream_version, first.first_position, first.last_position)
    );
    backend.append(&stream, ExpectedVersion::Exact(3), events(10, 2)).await.unwrap();
    let late_retry =
        backend.append(&stream, ExpectedVersion::Any, batch.clone()).await.expect("retry after later appends");
    assert!(late_retry.deduplicated);
    assert_eq!(late_retry.first_position, first.first_position);
    assert_eq!(backend.stream_version(&stream).await.unwrap(), 5, "contract 9: nothing stored twice");

    let mut partial = vec![batch[2].clone()];
    partial.extend(events(20, 1));
    let result = backend.append(&stream, ExpectedVersion::Any, partial).await;
    assert!(matches!(result, Err(Error::DuplicateEventId { stored_version: 3, .. })), "partial repeat: {result:?}");
    let reordered = vec![batch[1].clone(), batch[0].clone()];
    let result = backend.append(&stream, ExpectedVersion::Any, reordered).await;
    assert!(matches!(result, Err(Error::DuplicateEventId { .. })), "reordered repeat: {result:?}");
    let other = unique_stream("idem-other");
    let result = backend.append(&other, ExpectedVersion::Any, batch.clone()).await;
    assert!(matches!(result, Err(Error::DuplicateEventId { .. })), "ids of another stream: {result:?}");
    let repeated = event("Twice", 2).with_event_id(EventId::from_u128(42));
    let twice = vec![repeated.clone(), repeated];
    let result = backend.append(&other, ExpectedVersion::Any, twice).await;
    assert!(
        matches!(result, Err(Error::DuplicateEventId { stored_version: 0, .. })),
        "one id twice in an append: {result:?}"
    );
    assert_eq!(backend.stream_version(&stream).await.unwrap(), 5, "refused repeats write nothing");
    assert_eq!(backend.stream_version(&other).await.unwrap(), 0);
}

/// Contract 13: `find_event` names the stream, version and position of every acknowledged
/// event by its id, and `None` for an id never stored (or only in a failed append).
pub async fn find_event_locates_stored_events<B: EventStoreBackend>(backend: B) {
    let stream = unique_stream("find");
    let other = unique_stream("find-other");
    let batch = events(1, 3);
    let first = backend.append(&stream, ExpectedVersion::NoStream, batch.clone()).await.unwrap();
    backend.append(&other, ExpectedVersion::NoStream, events(5, 2)).await.unwrap();
    let refused = events(9, 2);
    let conflict = backend.append(&stream, ExpectedVersion::Exact(1), refused.clone()).await;
    assert!(matches!(conflict, Err(Error::Conflict { .. })), "{conflict:?}");
    for (offset, event) in batch.iter().enumerate() {
        let found = backend.find_event(event.metadata.event_id).await.expect("find_event");
        let found = found.unwrap_or_else(|| panic!("contract 13: stored event {offset} is found by its id"));
        assert_eq!(found.stream.as_str(), stream.as_str(), "contract 13: the stream of event {offset}");
        assert_eq!(found.version, offset as u64 + 1, "contract 13: the version of event {offset}");
        assert!(
            found.position >= first.first_position && found.position <= first.last_position,
            "contract 13: the position of event {offset}: {} not in {}..={}",
            found.position,
            first.first_position,
            first.last_position
        );
    }
    for event in &refused {
        let found = backend.find_event(event.metadata.event_id).await.expect("find_event");
        assert_eq!(found, None, "contract 13: an id only in a failed append is not found");
    }
    let unknown = backend.find_event(EventId::from_u128(0xdead_beef_0000_0000_0000_0000_0000_0001)).await;
    assert_eq!(unknown.expect("find_event"), None, "contract 13: an id never stored is not found");
}

/// Contract 14: named checkpoints are compare-and-set, independent of each other, refuse a
/// bad name or a position beyond the log's head without changing, and of concurrent saves
/// from one expected position exactly one wins.
pub async fn checkpoints_compare_and_set<B: EventStoreBackend>(backend: B) {
    checkpoints::compare_and_set(backend).await;
}

/// Contracts 10 and 11: bad stream ids, event types and sizes get typed errors (not panics)
/// and change nothing.
pub async fn bad_input_is_refused<B: EventStoreBackend>(backend: B) {
    let stream = unique_stream("bad");
    backend.append(&stream, ExpectedVersion::Any, events(1, 1)).await.unwrap();
    let cases: Vec<(String, Vec<NewEvent>, &str)> = vec![
        (String::new(), events(1, 1), "empty stream id"),
        ("x".repeat(1025), events(1, 1), "stream id over 1024 bytes"),
        ("nul\0byte".into(), events(1, 1), "stream id with NUL"),
        (stream.clone(), vec![NewEvent::new("", "{}")], "empty event type"),
        (stream.clone(), vec![NewEvent::new("T\0", "{}")], "event type with NUL"),
        (stream.clone(), vec![NewEvent::new("t".repeat(300), "{}")], "event type over 256 bytes"),
        (
            stream.clone(),
            vec![NewEvent::new("Big", format!(r#"{{"b":"{}"}}"#, "b".repeat(4 * 1024 * 1024)))],
            "event over 4 MiB",
        ),
        (stream.clone(), events(0, 10_001), "more than 10,000 events"),
    ];
    for (id, batch, what) in cases {
        match backend.append(&id, ExpectedVersion::Any, batch).await {
            Err(
                Error::InvalidStreamId { .. }
                | Error::InvalidEventType { .. }
                | Error::EventTooLarge { .. }
                | Error::TooManyEvents { .. },
            ) => {}
            other => panic!("contract 10: {what} must be refused with a typed error, got {other:?}"),
        }
    }
    if backend.capabilities().json_payloads {
        let result = backend
            .append(&stream, ExpectedVersion::Any, vec![NewEvent::new("Binary", vec![0u8, 159, 146, 150])])
            .await;
        assert!(
            matches!(result, Err(Error::InvalidPayload { .. })),
            "contract 10: non-JSON payload in a JSON store: {result:?}"
        );
    }
    assert_eq!(backend.stream_version(&stream).await.unwrap(), 1, "contract 10: nothing stored changed");
    assert_eq!(whole_log(&backend).await.len(), 1);
    let injection = "x'); DROP TABLE events; --";
    backend.append(injection, ExpectedVersion::Any, events(2, 1)).await.expect("odd but valid stream ids are data");
    assert_eq!(backend.read_stream(injection, 0, 10).await.unwrap()[0].stream_id, injection);
    let unicode = "компания/账户-🦀";
    backend.append(unicode, ExpectedVersion::Any, events(3, 1)).await.unwrap();
    assert_eq!(backend.stream_version(unicode).await.unwrap(), 1);
}

/// Metadata (ids, correlation, causation, time, headers) and payloads come back as appended;
/// binary payloads byte for byte where the backend stores bytes.
pub async fn metadata_and_payloads_round_trip<B: EventStoreBackend>(backend: B) {
    let stream = unique_stream("meta");
    let metadata = Metadata::new()
        .with_event_id(EventId::new())
        .with_correlation_id(EventId::from_u128(7))
        .with_causation_id(EventId::from_u128(8))
        .with_header("user", "ada")
        .with_header("tenant", "ünïcode ✓");
    let mut with_meta = NewEvent::new("Meta", r#"{"nested":{"a":[1,2,3]},"s":"é"}"#).with_metadata(metadata);
    with_meta.metadata.timestamp = Timestamp::from_micros(1_700_000_000_123_456);
    let mut batch = vec![with_meta, event("Plain", 1)];
    if !backend.capabilities().json_payloads {
        batch.push(NewEvent::new("Binary", vec![0u8, 255, 0, 159, 146, 150, b'\n']));
        batch.push(NewEvent::new("Empty", Vec::new()));
    }
    backend.append(&stream, ExpectedVersion::Any, batch.clone()).await.unwrap();
    let stored = backend.get_events(&stream).await.unwrap();
    assert_same_events(&backend, &stored, &batch);
    let from_log = whole_log(&backend).await;
    assert_same_events(&backend, &from_log, &batch);
}

async fn collect<B: EventStoreBackend + ?Sized>(
    subscription: &mut RawSubscription<B>,
    count: usize,
) -> Vec<RecordedEvent> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let next = tokio::time::timeout(PATIENCE, subscription.next()).await;
        out.push(
            next.unwrap_or_else(|_| panic!("subscription stalled after {} of {count} events", out.len()))
                .expect("next"),
        );
    }
    out
}

/// Contract 8: subscriptions from the beginning, from a checkpoint in the middle and from the
/// head deliver committed events in order, and resume from a checkpoint without gap or repeat.
pub async fn subscriptions_start_where_asked<B: EventStoreBackend>(backend: B) {
    let backend = Arc::new(backend);
    let stream = unique_stream("sub");
    backend.append(&stream, ExpectedVersion::Any, events(0, 10)).await.unwrap();
    let log = whole_log(&*backend).await;
    let options = SubscriptionOptions { page_size: 3, ..SubscriptionOptions::default() };

    let mut from_start = RawSubscription::start(Arc::clone(&backend), StartFrom::Beginning, options).await.unwrap();
    assert_eq!(collect(&mut from_start, 10).await, log, "from the beginning");

    let mut from_middle =
        RawSubscription::start(Arc::clone(&backend), StartFrom::After(log[3].position), options).await.unwrap();
    let middle = collect(&mut from_middle, 2).await;
    assert_eq!(middle, log[4..6].to_vec(), "from a checkpoint");
    let checkpoint = from_middle.checkpoint();
    assert_eq!(checkpoint, log[5].position);
    drop(from_middle);
    let mut resumed =
        RawSubscription::start(Arc::clone(&backend), StartFrom::After(checkpoint), options).await.unwrap();
    assert_eq!(collect(&mut resumed, 4).await, log[6..].to_vec(), "resumed after the checkpoint: no gap, no repeat");

    let mut from_end = RawSubscription::start(Arc::clone(&backend), StartFrom::End, options).await.unwrap();
    assert_eq!(from_end.try_next().await.unwrap(), None, "from the head: nothing old");
    backend.append(&stream, ExpectedVersion::Any, events(100, 2)).await.unwrap();
    let fresh = collect(&mut from_end, 2).await;
    assert_eq!(fresh.iter().map(|e| e.version).collect::<Vec<_>>(), vec![11, 12], "from the head: new events only");
    let more = collect(&mut from_start, 2).await;
    assert_eq!(more, fresh, "a caught-up subscription goes live");
}

/// Contract 8: appends racing a subscription's switch from catch-up to live produce no gap
/// and no duplicate, and a subscriber waiting at the head is woken by a commit.
pub async fn subscription_switch_to_live_has_no_gap_or_duplicate<B: EventStoreBackend>(backend: B) {
    let backend = Arc::new(backend);
    let streams: Vec<String> = (0..3).map(|i| unique_stream(&format!("live{i}"))).collect();
    backend.append(&streams[0], ExpectedVersion::Any, events(0, 20)).await.unwrap();
    let writer = {
        let backend = Arc::clone(&backend);
        let streams = streams.clone();
        tokio::spawn(async move {
            for i in 0..60u64 {
                backend.append(&streams[(i % 3) as usize], ExpectedVersion::Any, events(i, 1 + i % 2)).await.unwrap();
                if i % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let total = 20 + (0..60u64).map(|i| 1 + i % 2).sum::<u64>() as usize;
    let options = SubscriptionOptions { page_size: 4, max_wait: Duration::from_secs(5) };
    let mut subscription = RawSubscription::start(Arc::clone(&backend), StartFrom::Beginning, options).await.unwrap();
    let received = collect(&mut subscription, total).await;
    writer.await.unwrap();
    assert_eq!(received, whole_log(&*backend).await, "contract 8: exactly the log, in order");

    let waiter = {
        let backend = Arc::clone(&backend);
        tokio::spawn(async move {
            let mut live = RawSubscription::start(backend, StartFrom::End, options).await.unwrap();
            collect(&mut live, 1).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    backend.append(&streams[1], ExpectedVersion::Any, events(999, 1)).await.unwrap();
    let woken = waiter.await.unwrap();
    assert_eq!(woken[0].stream_id, streams[1].as_str(), "contract 8: a waiting subscriber sees the commit");
}

/// Contract 8: a subscriber that does not read never blocks appends or loses events.
pub async fn slow_subscriber_blocks_nothing<B: EventStoreBackend>(backend: B) {
    let backend = Arc::new(backend);
    let stream = unique_stream("slow");
    let mut idle = RawSubscription::start(Arc::clone(&backend), StartFrom::Beginning, SubscriptionOptions::default())
        .await
        .unwrap();
    let appends = async {
        for i in 0..200u64 {
            backend.append(&stream, ExpectedVersion::Any, events(i, 5)).await.unwrap();
        }
    };
    tokio::time::timeout(PATIENCE, appends).await.expect("contract 8: appends go on while a subscriber idles");
    let received = collect(&mut idle, 1000).await;
    assert_eq!(received.len(), 1000);
    assert!(received.windows(2).all(|w| w[0].position < w[1].position));
}

/// Contract 12: a dropped append future leaves the store consistent (whole append or none).
pub async fn dropped_append_leaves_store_consistent<B: EventStoreBackend>(backend: B) {
    let backend = Arc::new(backend);
    let stream = unique_stream("dropped");
    for i in 0..20u64 {
        let task = {
            let backend = Arc::clone(&backend);
            let stream = stream.clone();
            tokio::spawn(async move { backend.append(&stream, ExpectedVersion::Any, events(i * 10, 5)).await })
        };
        if i % 2 == 0 {
            tokio::task::yield_now().await;
        }
        task.abort();
        let _ = task.await;
    }
    backend.append(&stream, ExpectedVersion::Any, events(1000, 1)).await.expect("store still usable");
    let stored = backend.get_events(&stream).await.unwrap();
    assert_eq!(stored.len() % 5, 1, "contract 3/12: only whole appends are stored ({} events)", stored.len());
    assert!(stored.iter().enumerate().all(|(i, e)| e.version == i as u64 + 1));
}

/// Contract 6 and the seed's operations: `flush` succeeds and `stats` counts what is stored and
/// names the durability mode, the same as `capabilities()`.
pub async fn flush_and_stats<B: EventStoreBackend>(backend: B) {
    let a = unique_stream("stats-a");
    let b = unique_stream("stats-b");
    backend.append(&a, ExpectedVersion::Any, events(1, 3)).await.unwrap();
    backend.append(&b, ExpectedVersion::Any, events(1, 2)).await.unwrap();
    if backend.capabilities().snapshots {
        backend.save_snapshot(&a, Snapshot::new(2, r#"{"s":1}"#)).await.unwrap();
    }
    backend.flush().await.expect("flush");
    let stats = backend.stats().await.expect("stats");
    assert_eq!(stats.backend, backend.name());
    assert_eq!(stats.durability, backend.capabilities().durability, "contract 6: the mode is in stats()");
    assert_eq!(stats.events, 5);
    assert_eq!(stats.streams, 2);
    assert_eq!(stats.snapshots, u64::from(backend.capabilities().snapshots));
    assert_eq!(stats.head_position, backend.head_position().await.unwrap());
}

/// Contracts 1–4 and 8 under concurrency: appenders and readers run at once and every call is
/// recorded; the history checker (`crate::history`) finds no read of an unacknowledged or
/// failed append, no acknowledged append missing from a later read, no gap or overlap in
/// versions or positions, and no event skipped by a tailing reader. Three seeds by default;
/// `ALLFRAME_HISTORY_SEEDS=N` runs N (the longer run, see docs/TESTING.md).
pub async fn concurrent_history_is_consistent<B: EventStoreBackend>(backend: B) {
    let backend = Arc::new(backend);
    let seeds: u64 = std::env::var("ALLFRAME_HISTORY_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    for seed in 1..=seeds {
        let options = crate::history::HistoryOptions { seed, ..Default::default() };
        let report = crate::history::run_history(Arc::clone(&backend), options).await;
        report.assert_ok();
        assert!(report.appends_ok > 0 && report.reads > 0, "the history did something: {report}");
        eprintln!("history on {}, seed {seed}: {report}", backend.name());
    }
}

/// Contract 9: a retry whose ids span two earlier appends of one stream (with another stream's
/// events between them in the log) is answered with that stream's own version and positions.
pub async fn retry_spanning_two_appends_answers_with_its_stream<B: EventStoreBackend>(backend: B) {
    if !backend.capabilities().idempotent_appends {
        return;
    }
    let (a, b) = (unique_stream("span-a"), unique_stream("span-b"));
    let first = events(1, 2);
    let second = events(3, 2);
    let r1 = backend.append(&a, ExpectedVersion::Any, first.clone()).await.unwrap();
    backend.append(&b, ExpectedVersion::Any, events(10, 3)).await.unwrap();
    let r2 = backend.append(&a, ExpectedVersion::Any, second.clone()).await.unwrap();
    // Versions 2 and 3 of `a`: the last event of the first append and the first of the second.
    let span = vec![first[1].clone(), second[0].clone()];
    let result = backend.append(&a, ExpectedVersion::Any, span).await.expect("contract 9: a retry of stored ids");
    assert!(result.deduplicated, "contract 9: a retry is reported as deduplicated");
    assert_eq!(result.stream_version, 3, "contract 9: the retry's version is that of its last event");
    assert_eq!(result.first_position, r1.last_position, "contract 9: first position of the retry");
    assert_eq!(result.last_position, r2.first_position, "contract 9: last position of the retry");
    assert_eq!(backend.stream_version(&a).await.unwrap(), 4, "contract 9: the retry stored nothing");
    assert_eq!(backend.stream_version(&b).await.unwrap(), 3);
}

/// Contract 10: a snapshot larger than the configured limit (`Limits::max_snapshot_bytes`,
/// 64 MiB by default) is refused with a typed error, and the stored one is kept.
pub async fn oversized_snapshot_is_refused<B: EventStoreBackend>(backend: B) {
    if !backend.capabilities().snapshots {
        return;
    }
    let stream = unique_stream("big-snapshot");
    backend.append(&stream, ExpectedVersion::Any, events(1, 2)).await.unwrap();
    backend.save_snapshot(&stream, Snapshot::new(1, r#"{"s":1}"#)).await.unwrap();
    let limit = allframe_cqrs_core::Limits::default().max_snapshot_bytes;
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(limit));
    match backend.save_snapshot(&stream, Snapshot::new(2, huge)).await {
        Err(Error::InvalidSnapshot { .. }) => {}
        other => panic!("contract 10: a snapshot over the limit must be refused, got {other:?}"),
    }
    let kept = backend.get_latest_snapshot(&stream).await.unwrap().expect("the earlier snapshot is kept");
    assert_eq!(kept.version, 1, "contract 10: nothing changed");
}

/// Contract 8 and 10: subscription settings that would make a subscriber spin forever (no
/// events per read, or no wait between reads) are refused with a typed error.
pub async fn spinning_subscription_settings_are_refused<B: EventStoreBackend>(backend: B) {
    let backend = Arc::new(backend);
    for options in [
        SubscriptionOptions { page_size: 0, ..SubscriptionOptions::default() },
        SubscriptionOptions { max_wait: Duration::ZERO, ..SubscriptionOptions::default() },
    ] {
        match RawSubscription::start(Arc::clone(&backend), StartFrom::Beginning, options).await {
            Err(Error::Configuration { .. }) => {}
            Err(other) => panic!("contract 10: subscription with {options:?} must be refused, got {other:?}"),
            Ok(_) => panic!("contract 10: subscription with {options:?} must be refused, it started"),
        }
    }
}
