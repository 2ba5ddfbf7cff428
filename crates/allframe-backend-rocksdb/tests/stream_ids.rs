//! Reads of stream ids that no stream can have (NUL bytes, empty) or that are prefixes of
//! others never see another stream's keys: they read as absent, as on the other backends.

mod common;

use allframe_backend_rocksdb::RocksDbConfig;
use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, NewEvent, Snapshot};
use common::TempStore;

/// Streams that exist: `a` and ids that share its first byte or sort right after `a ‖ 0x00`.
const STORED: [&str; 4] = ["a", "ab", "a\u{1}", "a-b"];

/// Ids that must read as absent: NUL inside, NUL at the end, empty, a NUL-padded `a`.
const ABSENT: [&str; 8] = ["a\0", "a\0b", "a\0\0", "a\0a", "\0", "", "a\0\0\0\0\0\0\0\0", "ab\0"];

/// Appends `count` events to `stream` in appends of `per_append` (several index runs), with
/// payloads naming the stream and version.
async fn fill(store: &TempStore, stream: &str, count: u64, per_append: u64) {
    let mut version = 0;
    while version < count {
        let n = per_append.min(count - version);
        let events = (version + 1..=version + n).map(|v| NewEvent::new("Filled", format!("{stream}#{v}"))).collect();
        store.append(stream, ExpectedVersion::Exact(version), events).await.unwrap();
        version += n;
    }
}

async fn check_reads(store: &TempStore, versions: &[(&str, u64)]) {
    for id in ABSENT {
        for after in [0, 1, 5, 255, 256, u64::MAX - 1] {
            let read = store.read_stream(id, after, 100).await;
            assert!(matches!(&read, Ok(events) if events.is_empty()), "read_stream({id:?}, {after}) = {read:?}");
        }
        assert_eq!(store.stream_version(id).await.unwrap(), 0, "stream_version({id:?})");
        assert_eq!(store.get_latest_snapshot(id).await.unwrap(), None, "get_latest_snapshot({id:?})");
        assert!(store.get_events(id).await.unwrap().is_empty(), "get_events({id:?})");
        let appended = store.append(id, ExpectedVersion::Any, vec![NewEvent::new("Bad", "x")]).await;
        assert!(matches!(appended, Err(Error::InvalidStreamId { .. })), "append({id:?}) = {appended:?}");
    }
    // The stored streams read whole and only their own events.
    for (stream, version) in versions {
        let events = store.get_events(stream).await.unwrap();
        assert_eq!(events.len() as u64, *version, "{stream:?}");
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event.stream_id, *stream);
            assert_eq!(event.version, i as u64 + 1);
            assert_eq!(&event.payload[..], format!("{stream}#{}", i + 1).as_bytes());
        }
        assert_eq!(store.stream_version(stream).await.unwrap(), *version);
        assert!(store.get_latest_snapshot(stream).await.unwrap().is_some(), "{stream:?} keeps its snapshot");
    }
    let mut listed = versions.iter().map(|(s, v)| (s.to_string(), *v)).collect::<Vec<_>>();
    listed.sort();
    let streams = store.list_streams(None, usize::MAX).await.unwrap();
    let streams: Vec<(String, u64)> = streams.into_iter().map(|(s, v)| (s.as_str().to_owned(), v)).collect();
    assert_eq!(streams, listed, "list_streams is unaffected");
    for id in ABSENT {
        let after = store.list_streams(Some(id), usize::MAX).await.unwrap();
        let expected: Vec<&(String, u64)> = listed.iter().filter(|(s, _)| s.as_bytes() > id.as_bytes()).collect();
        assert_eq!(after.len(), expected.len(), "list_streams(after {id:?})");
    }
}

async fn streams_in_order(order: &[&str]) {
    let store = TempStore::new(RocksDbConfig::default().sync(false));
    let mut versions = Vec::new();
    for (i, stream) in order.iter().enumerate() {
        // `a` gets enough events that its versions' low byte wraps (keys with bytes 0x00..0xff).
        let count = if *stream == "a" { 300 } else { 3 + i as u64 };
        fill(&store, stream, count, 7).await;
        store.save_snapshot(stream, Snapshot::new(count, format!("{stream} at {count}"))).await.unwrap();
        versions.push((*stream, count));
    }
    check_reads(&store, &versions).await;
}

#[tokio::test]
async fn ids_with_nul_or_empty_read_as_absent() {
    streams_in_order(&STORED).await;
}

#[tokio::test]
async fn ids_with_nul_or_empty_read_as_absent_in_reverse_creation_order() {
    let mut reversed = STORED;
    reversed.reverse();
    streams_in_order(&reversed).await;
}

/// Ids longer than the open's limit may exist (written with a larger limit): reads find them,
/// and the shorter stream they extend reads only its own events.
#[tokio::test]
async fn over_long_ids_read_their_own_events_only() {
    let long = "a".repeat(40);
    let store = TempStore::new(
        RocksDbConfig::default()
            .sync(false)
            .limits(allframe_cqrs_core::Limits { max_stream_id_bytes: 64, ..Default::default() }),
    );
    fill(&store, &long, 5, 2).await;
    fill(&store, "a", 3, 1).await;
    let path = store.backend.path().to_path_buf();
    let TempStore { backend, dir } = store;
    drop(backend);
    let backend = allframe_backend_rocksdb::RocksDbBackend::open_with(
        &path,
        RocksDbConfig::default()
            .sync(false)
            .limits(allframe_cqrs_core::Limits { max_stream_id_bytes: 16, ..Default::default() }),
    )
    .unwrap();
    assert_eq!(backend.get_events(&long).await.unwrap().len(), 5);
    assert_eq!(backend.get_events("a").await.unwrap().len(), 3);
    assert!(backend.get_events(&"a".repeat(41)).await.unwrap().is_empty());
    assert!(backend.get_events(&"a".repeat(39)).await.unwrap().is_empty());
    drop(backend);
    drop(dir);
}

use common::Rng;

impl Rng {
    /// An id of up to `max_len` characters from an alphabet of bytes around the delimiter.
    fn id(&mut self, alphabet: &[char], max_len: u64) -> String {
        let len = self.below(max_len + 1);
        (0..len).map(|_| alphabet[self.below(alphabet.len() as u64) as usize]).collect()
    }
}

/// Random stored ids and random looked-up ids (with NUL, empty, prefixes and extensions of
/// stored ones) over bytes next to the delimiter: every read agrees with a model.
#[tokio::test]
async fn random_ids_read_what_a_model_says() {
    const STORED_CHARS: [char; 5] = ['a', 'b', '\u{1}', '\u{7f}', 'ÿ'];
    const LOOKUP_CHARS: [char; 6] = ['a', 'b', '\u{1}', '\u{7f}', 'ÿ', '\0'];
    let store = TempStore::new(RocksDbConfig::default().sync(false));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut model = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let stream = rng.id(&STORED_CHARS, 4);
        if stream.is_empty() || model.contains_key(&stream) {
            continue;
        }
        let count = 1 + rng.below(20);
        fill(&store, &stream, count, 1 + rng.below(5)).await;
        model.insert(stream, count);
    }
    let mut cases = 0;
    for _ in 0..3000 {
        let id = rng.id(&LOOKUP_CHARS, 5);
        let after = rng.below(8);
        let expected = model.get(&id).copied().unwrap_or(0);
        let read = store.read_stream(&id, after, 100).await.unwrap_or_else(|e| panic!("read_stream({id:?}): {e:?}"));
        assert_eq!(read.len() as u64, expected.saturating_sub(after), "read_stream({id:?}, {after})");
        assert!(read.iter().all(|e| e.stream_id == *id.as_str()), "read_stream({id:?}) saw another stream");
        assert_eq!(store.stream_version(&id).await.unwrap(), expected, "stream_version({id:?})");
        cases += 1;
    }
    let listed = store.list_streams(None, usize::MAX).await.unwrap();
    let listed: Vec<(String, u64)> = listed.into_iter().map(|(s, v)| (s.as_str().to_owned(), v)).collect();
    assert_eq!(listed, model.into_iter().collect::<Vec<_>>(), "list_streams in id byte order");
    eprintln!("stream ids: {cases} random lookups checked against the model");
}
