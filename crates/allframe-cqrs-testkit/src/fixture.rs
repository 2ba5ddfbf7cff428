//! On-disk format fixtures: a fixed content that a durable backend writes once into a
//! checked-in directory (`tests/fixtures/format-N/`), and the check that every later version of
//! the backend still opens that directory and reads exactly that content. A store written today
//! must open in every later version; a format change that breaks this fails the fixture test
//! instead of a user's store.
//!
//! The content is deterministic (fixed event ids, timestamps, payloads and headers), so the
//! check compares every field.

use std::path::Path;

use allframe_cqrs_core::{EventId, EventStoreBackend, ExpectedVersion, Metadata, NewEvent, Snapshot, Timestamp};

/// Copies a checked-in fixture directory (its files, not subdirectories) to `to`, so that the
/// store opened on it never changes the fixture itself.
pub fn copy_fixture(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read fixture {}: {e}", from.display())) {
        let entry = entry.expect("a fixture file");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a fixture file");
    }
}

/// The streams of the fixture and how many events each gets.
const STREAMS: [(&str, u64); 3] = [("account-1", 5), ("account-2", 3), ("order-7", 4)];

/// The event of `stream` at `version` (1-based), with everything fixed.
fn fixture_event(stream_index: usize, version: u64) -> NewEvent {
    let n = (stream_index as u128) * 100 + u128::from(version);
    let mut metadata = Metadata::new()
        .with_event_id(EventId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n))
        .with_correlation_id(EventId::from_u128(0xc0 + stream_index as u128))
        .with_header("source", "fixture");
    metadata.timestamp = Timestamp::from_micros(1_700_000_000_000_000 + n as i64);
    NewEvent::new(
        if version == 1 { "Opened" } else { "Changed" },
        format!(r#"{{"stream":{stream_index},"version":{version},"note":"format fixture"}}"#),
    )
    .with_metadata(metadata)
}

/// The snapshot of `stream` in the fixture.
fn fixture_snapshot(stream_index: usize) -> Snapshot {
    let mut snapshot = Snapshot::new(2, format!(r#"{{"snapshot_of":{stream_index}}}"#));
    snapshot.timestamp = Timestamp::from_micros(1_700_000_001_000_000 + stream_index as i64);
    snapshot
}

/// Writes the fixture's content into an empty store, interleaving the streams so that global
/// positions and stream versions differ. Call it from an `#[ignore]`d test that makes a new
/// `tests/fixtures/format-N/`; never rewrite a checked-in fixture.
pub async fn write_fixture<B: EventStoreBackend + ?Sized>(backend: &B) {
    write_fixture_after_filler(backend, 0).await;
}

/// The stream that holds the filler events of [`write_fixture_after_filler`].
const FILLER_STREAM: &str = "bulk";

/// The `n`-th filler event (0-based), about 250 bytes, everything fixed.
fn filler_event(n: u64) -> NewEvent {
    let mut metadata =
        Metadata::new().with_event_id(EventId::from_u128(0x0190_0000_0000_7000_9000_0000_0000_0000 + u128::from(n)));
    metadata.timestamp = Timestamp::from_micros(1_690_000_000_000_000 + n as i64);
    NewEvent::new("Filled", format!(r#"{{"n":{n},"pad":"{}"}}"#, "f".repeat(200))).with_metadata(metadata)
}

/// The fixture after `filler` events in a stream of their own: enough of them fill a durable
/// backend's first files (AllSource's first log segments, which it then rewrites as Parquet
/// files with their index files and manifest), so that a fixture pins those formats too.
pub async fn write_fixture_after_filler<B: EventStoreBackend + ?Sized>(backend: &B, filler: u64) {
    for batch in (0..filler).collect::<Vec<_>>().chunks(50) {
        let events = batch.iter().map(|n| filler_event(*n)).collect();
        backend.append(FILLER_STREAM, ExpectedVersion::Exact(batch[0]), events).await.expect("filler append");
    }
    for version in 1..=5u64 {
        for (index, (stream, count)) in STREAMS.iter().enumerate() {
            if version <= *count {
                let event = fixture_event(index, version);
                backend.append(stream, ExpectedVersion::Exact(version - 1), vec![event]).await.expect("fixture append");
            }
        }
    }
    for (index, (stream, _)) in STREAMS.iter().enumerate().take(2) {
        backend.save_snapshot(stream, fixture_snapshot(index)).await.expect("fixture snapshot");
    }
    backend.flush().await.expect("fixture flush");
}

/// Checks that `backend` (opened on a copy of a fixture directory) holds exactly the fixture:
/// every event's stream, version, position, type, payload and metadata, the snapshots, the
/// stream list, the head, and that it still takes an append after them.
pub async fn check_fixture<B: EventStoreBackend + ?Sized>(backend: &B) {
    check_fixture_after_filler(backend, 0).await;
}

/// [`check_fixture`] for a fixture written by [`write_fixture_after_filler`] with `filler`.
pub async fn check_fixture_after_filler<B: EventStoreBackend + ?Sized>(backend: &B, filler: u64) {
    let all = backend.get_all_events().await.expect("read the fixture's log");
    assert!(all.len() as u64 >= filler, "the fixture's filler events");
    let (filled, log) = all.split_at(filler as usize);
    for (n, event) in filled.iter().enumerate() {
        let new = filler_event(n as u64);
        assert_eq!((event.position, event.version), (n as u64 + 1, n as u64 + 1), "filler event {n}");
        assert_eq!((event.stream_id.as_str(), &*event.event_type), (FILLER_STREAM, "Filled"), "filler {n}");
        assert_eq!(event.metadata, new.metadata, "metadata of filler event {n}");
        assert_eq!(event.payload, new.payload, "payload of filler event {n}");
    }
    let mut expected = Vec::new();
    for version in 1..=5u64 {
        for (index, (stream, count)) in STREAMS.iter().enumerate() {
            if version <= *count {
                expected.push((*stream, version, fixture_event(index, version)));
            }
        }
    }
    assert_eq!(log.len(), expected.len(), "the fixture's number of events");
    for (position, (event, (stream, version, new))) in log.iter().zip(&expected).enumerate() {
        assert_eq!(event.position, filler + position as u64 + 1, "position of {stream} v{version}");
        assert_eq!((event.stream_id.as_str(), event.version), (*stream, *version), "stream and version");
        assert_eq!(event.event_type, new.event_type, "event type of {stream} v{version}");
        assert_eq!(event.metadata, new.metadata, "metadata of {stream} v{version}");
        let same = event.payload == new.payload
            || serde_json::from_slice::<serde_json::Value>(&event.payload).ok()
                == serde_json::from_slice::<serde_json::Value>(&new.payload).ok();
        assert!(same, "payload of {stream} v{version}");
    }
    let streams = backend.list_streams(None, 10).await.expect("list the fixture's streams");
    let listed: Vec<(&str, u64)> = streams.iter().map(|(id, v)| (id.as_str(), *v)).collect();
    let mut want = vec![("account-1", 5), ("account-2", 3), ("order-7", 4)];
    if filler > 0 {
        want.insert(2, (FILLER_STREAM, filler));
    }
    assert_eq!(listed, want, "the fixture's streams");
    for (index, (stream, _)) in STREAMS.iter().enumerate() {
        let snapshot = backend.get_latest_snapshot(stream).await.expect("read a fixture snapshot");
        let want = (index < 2).then(|| fixture_snapshot(index));
        assert_eq!(snapshot.map(|s| (s.version, s.timestamp)), want.as_ref().map(|s| (s.version, s.timestamp)));
    }
    assert_eq!(backend.head_position().await.expect("head"), filler + 12);
    let next = backend
        .append("account-2", ExpectedVersion::Exact(3), vec![NewEvent::new("Changed", r#"{"after":"fixture"}"#)])
        .await
        .expect("an append after the fixture's events");
    assert_eq!((next.stream_version, next.first_position), (4, filler + 13), "appends go on after the fixture");
}
