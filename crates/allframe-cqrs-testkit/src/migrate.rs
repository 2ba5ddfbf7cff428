//! Cases for moving stores between backends (`allframe_cqrs_core::migrate`): a copy round
//! trip, an interrupted copy that resumes, and `verify` finding the first difference. Each
//! takes two fresh, empty backends, which may be of different kinds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use allframe_cqrs_core::migrate::{CopyOptions, copy_store, verify_stores};
use allframe_cqrs_core::{
    AppendResult, BackendStats, Capabilities, Error, EventId, EventStoreBackend, ExpectedVersion, Metadata, NewEvent,
    RecordedEvent, Result, Snapshot, StreamId, Timestamp, async_trait,
};

use crate::cases::{event, unique_stream};

/// Fills `backend` with a sample: interleaved streams, metadata with ids and headers, old
/// timestamps, and snapshots. Returns the number of events written.
pub async fn fill_sample<B: EventStoreBackend + ?Sized>(backend: &B, events_per_stream: u64) -> u64 {
    let streams: Vec<String> = (0..7).map(|i| format!("{}-{i}", unique_stream("sample"))).collect();
    let mut written = 0;
    for round in 0..events_per_stream.div_ceil(3) {
        for (s, stream) in streams.iter().enumerate() {
            let batch: Vec<NewEvent> = (0..3)
                .map(|k| {
                    let n = round * 3 + k;
                    let mut e = event("Sampled", n * 10 + s as u64);
                    e.metadata = Metadata::new()
                        .with_correlation_id(EventId::from_u128(u128::from(round) + 1))
                        .with_header("stream", format!("{s}"));
                    e.metadata.timestamp = Timestamp::from_micros(1_600_000_000_000_000 + n as i64);
                    e
                })
                .collect();
            backend.append(stream, ExpectedVersion::Any, batch).await.expect("fill the sample");
            written += 3;
        }
    }
    if backend.capabilities().snapshots {
        for stream in streams.iter().step_by(2) {
            backend.save_snapshot(stream, Snapshot::new(3, format!(r#"{{"at":"{stream}"}}"#))).await.expect("snapshot");
        }
    }
    written
}

/// A copy leaves two stores equal by `verify`, and copying again writes nothing.
pub async fn copy_round_trip<A: EventStoreBackend, B: EventStoreBackend>(source: A, destination: B) {
    let written = fill_sample(&source, 60).await;
    let mut reports = 0;
    let copied =
        copy_store(&source, &destination, CopyOptions { page_size: 100, ..CopyOptions::default() }, |_| reports += 1)
            .await
            .expect("copy");
    assert_eq!((copied.read, copied.written, copied.skipped, copied.total), (written, written, 0, written));
    assert!(reports >= (written / 100) as usize, "progress is reported every page");
    let verified = verify_stores(&source, &destination, 50).await.expect("verify");
    assert_eq!(verified.difference, None, "the copy is identical");
    assert_eq!(verified.events, written);
    assert_eq!(verified.streams, 7);
    let again = copy_store(&source, &destination, CopyOptions::default(), |_| {}).await.expect("copy again");
    assert_eq!((again.written, again.skipped), (0, written), "a second copy stores nothing twice");
    let log = destination.get_all_events().await.unwrap();
    assert!(log.windows(2).all(|w| w[0].position < w[1].position));
    let source_order: Vec<EventId> =
        source.get_all_events().await.unwrap().iter().map(|e| e.metadata.event_id).collect();
    let copied_order: Vec<EventId> = log.iter().map(|e| e.metadata.event_id).collect();
    assert_eq!(source_order, copied_order, "the copy keeps the global order");
}

/// A copy interrupted part-way (the destination fails after some appends) and run again
/// gives the same result as an uninterrupted one.
pub async fn interrupted_copy_resumes<A: EventStoreBackend, B: EventStoreBackend>(source: A, destination: B) {
    let written = fill_sample(&source, 45).await;
    let failing = FailAfter::new(destination, 5);
    let error = copy_store(&source, &failing, CopyOptions { page_size: 64, ..CopyOptions::default() }, |_| {}).await;
    assert!(error.is_err(), "the copy was interrupted");
    let partial = failing.inner.stats().await.unwrap().events;
    assert!(partial > 0 && partial < written, "part of the store was copied ({partial} of {written})");
    let resumed = copy_store(&source, &failing.inner, CopyOptions { page_size: 64, ..CopyOptions::default() }, |_| {})
        .await
        .expect("resumed copy");
    assert_eq!(resumed.written + resumed.skipped, written);
    assert_eq!(resumed.skipped, partial, "the resumed copy skips exactly what was copied");
    assert_eq!(verify_stores(&source, &failing.inner, 100).await.unwrap().difference, None);
}

/// `verify` reports the first difference: a missing event, a changed payload, a missing stream.
pub async fn verify_finds_first_difference<A: EventStoreBackend, B: EventStoreBackend>(left: A, right: B) {
    fill_sample(&left, 6).await;
    copy_store(&left, &right, CopyOptions::default(), |_| {}).await.unwrap();
    let stream = left.list_streams(None, 1).await.unwrap().remove(0).0;
    left.append(&stream, ExpectedVersion::Any, vec![event("Extra", 1)]).await.unwrap();
    let report = verify_stores(&left, &right, 10).await.unwrap();
    let difference = report.difference.expect("a difference");
    assert_eq!((difference.stream.as_str(), difference.version), (stream.as_str(), 7));
    assert!(difference.what.contains("missing from the second"), "{difference}");
    right.append(&stream, ExpectedVersion::Any, vec![event("Other", 2)]).await.unwrap();
    let difference = verify_stores(&left, &right, 10).await.unwrap().difference.expect("a difference");
    assert_eq!(difference.version, 7);
    assert!(difference.what.contains("event ids"), "{difference}");
    let lonely = unique_stream("zz-only-right");
    right.append(&lonely, ExpectedVersion::Any, vec![event("Alone", 1)]).await.unwrap();
    let other = unique_stream("zz-only-right-2");
    left.append(&other, ExpectedVersion::Any, vec![event("Alone", 2)]).await.unwrap();
    let mut listed = verify_stores(&left, &right, 3).await.unwrap();
    assert!(listed.difference.take().is_some());
}

/// A copy into a destination whose stream holds other events at the same versions fails with
/// a conflict naming that stream, and writes nothing to it (it used to skip them by version
/// and report success over a mix of two stores).
pub async fn copy_into_foreign_stream_conflicts<A: EventStoreBackend, B: EventStoreBackend>(source: A, destination: B) {
    fill_sample(&source, 9).await;
    let (stream, _) = source.list_streams(None, 1).await.unwrap().remove(0);
    let foreign = vec![event("Foreign", 1), event("Foreign", 2)];
    destination.append(&stream, ExpectedVersion::NoStream, foreign.clone()).await.unwrap();
    match copy_store(&source, &destination, CopyOptions::default(), |_| {}).await {
        Err(Error::Conflict { stream: named, .. }) => assert_eq!(named, stream, "the conflict names the stream"),
        other => panic!("a copy into a stream holding other events must conflict, got {other:?}"),
    }
    let kept = destination.get_events(&stream).await.unwrap();
    let ids: Vec<EventId> = kept.iter().map(|e| e.metadata.event_id).collect();
    let foreign_ids: Vec<EventId> = foreign.iter().map(|e| e.metadata.event_id).collect();
    assert_eq!(ids, foreign_ids, "nothing was written to the foreign stream");
}

/// A destination stream with more events than the source's (the source's, then others) is a
/// conflict too, found when the copy is run again.
pub async fn copy_refuses_destination_with_extra_events<A: EventStoreBackend, B: EventStoreBackend>(
    source: A,
    destination: B,
) {
    fill_sample(&source, 6).await;
    copy_store(&source, &destination, CopyOptions::default(), |_| {}).await.expect("first copy");
    let (stream, version) = source.list_streams(None, 1).await.unwrap().remove(0);
    destination.append(&stream, ExpectedVersion::Exact(version), vec![event("Extra", 1)]).await.unwrap();
    match copy_store(&source, &destination, CopyOptions::default(), |_| {}).await {
        Err(Error::Conflict { stream: named, actual, .. }) => {
            assert_eq!((named, actual), (stream, version + 1), "the conflict names the stream and its version")
        }
        other => panic!("a destination with extra events must conflict, got {other:?}"),
    }
}

/// Large events are copied in appends of at most `max_append_bytes` (one event alone when it
/// is larger), so a copy never sends an append past the destination's frame or message limit.
pub async fn large_events_copy_in_bounded_appends<A: EventStoreBackend, B: EventStoreBackend>(
    source: A,
    destination: B,
) {
    let stream = unique_stream("large");
    for round in 0..4u64 {
        let batch: Vec<NewEvent> = (0..6)
            .map(|i| NewEvent::new("Large", format!(r#"{{"n":{},"pad":"{}"}}"#, round * 6 + i, "x".repeat(200_000))))
            .collect();
        source.append(&stream, ExpectedVersion::Any, batch).await.unwrap();
    }
    let recording = FailAfter::new(destination, usize::MAX);
    let options = CopyOptions { max_append_bytes: 500_000, ..CopyOptions::default() };
    let copied = copy_store(&source, &recording, options, |_| {}).await.expect("copy");
    assert_eq!(copied.written, 24);
    let largest = recording.largest_append_bytes.load(Ordering::SeqCst);
    assert!(largest <= 500_000, "an append of {largest} bytes went past the 500000-byte bound");
    assert!(recording.appends.load(Ordering::SeqCst) >= 12, "24 events of 200 kB take at least 12 appends");
    assert_eq!(verify_stores(&source, &recording.inner, 8).await.unwrap().difference, None);
}

/// A backend that fails every append after a number of them, to interrupt copies, and
/// records the appends it passes on.
#[derive(Debug)]
pub struct FailAfter<B> {
    /// The real backend.
    pub inner: B,
    /// Appends that still succeed.
    pub appends_left: AtomicUsize,
    /// Appends passed on to `inner`.
    pub appends: AtomicUsize,
    /// The largest append passed on, in bytes (payloads, type names and metadata).
    pub largest_append_bytes: AtomicUsize,
}

impl<B> FailAfter<B> {
    /// `inner`, failing every append after the first `appends` ones.
    pub fn new(inner: B, appends: usize) -> Self {
        FailAfter {
            inner,
            appends_left: AtomicUsize::new(appends),
            appends: AtomicUsize::new(0),
            largest_append_bytes: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl<B: EventStoreBackend> EventStoreBackend for FailAfter<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult> {
        if self.appends_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() {
            return Err(Error::Timeout { backend: "fail-after", operation: "append (injected)" });
        }
        let bytes: usize = events.iter().map(NewEvent::size).sum();
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.largest_append_bytes.fetch_max(bytes, Ordering::SeqCst);
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(&self, stream: &str, after: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, after, limit).await
    }
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }
    async fn stream_version(&self, stream: &str) -> Result<u64> {
        self.inner.stream_version(stream).await
    }
    async fn head_position(&self) -> Result<u64> {
        self.inner.head_position().await
    }
    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>> {
        self.inner.list_streams(after, limit).await
    }
    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()> {
        self.inner.save_snapshot(stream, snapshot).await
    }
    async fn get_latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        self.inner.get_latest_snapshot(stream).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
    async fn stats(&self) -> Result<BackendStats> {
        self.inner.stats().await
    }
    async fn find_event(&self, id: allframe_cqrs_core::EventId) -> Result<Option<allframe_cqrs_core::retry::StoredAt>> {
        self.inner.find_event(id).await
    }
    async fn wait_for_commit(&self, after: u64, max_wait: Duration) -> Result<()> {
        self.inner.wait_for_commit(after, max_wait).await
    }
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        self.inner.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()> {
        self.inner.save_checkpoint(name, expected, position).await
    }
}
