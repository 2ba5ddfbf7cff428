//! Moving a store between backends: [`copy_store`] (or [`copy_rewritten`], which changes each
//! event on its way) and [`verify_stores`].
//!
//! Both work on bytes, so they need no event type, and both page through the stores, so
//! memory stays bounded by one page however large the store is.

use std::collections::HashMap;
use std::fmt;

use crate::backend::EventStoreBackend;
use crate::error::{Error, Result};
use crate::types::{ExpectedVersion, RecordedEvent, StreamId};

/// Settings of [`copy_store`].
#[derive(Clone, Copy, Debug)]
pub struct CopyOptions {
    /// Events read from the source per page (and the most written per append).
    pub page_size: usize,
    /// Whether to copy the latest snapshot of each stream too.
    pub snapshots: bool,
    /// Most bytes (payloads plus metadata) written in one append: large events are copied in
    /// several appends, so that one append stays within the destination's frame or message
    /// limits. An event larger than this is written alone.
    pub max_append_bytes: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions { page_size: 1024, snapshots: true, max_append_bytes: 8 * 1024 * 1024 }
    }
}

/// Progress of a copy, passed to the progress callback after every page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyProgress {
    /// Source events read so far.
    pub read: u64,
    /// Events written to the destination so far.
    pub written: u64,
    /// Events found already in the destination (an earlier, interrupted copy) and skipped.
    pub skipped: u64,
    /// Events in the source when the copy started.
    pub total: u64,
    /// Snapshots copied.
    pub snapshots: u64,
}

/// Copies every event of `from` into `to`, in global order, keeping stream ids, versions,
/// event ids, types, payloads and metadata (timestamps included); then the latest snapshot
/// of each stream.
///
/// Resumable: run again after an interruption, it skips what the destination already holds
/// and stores nothing twice. What it skips is compared first: when the destination holds
/// other events for a stream (other ids at those versions, or more events than the source),
/// the copy fails with [`Error::Conflict`] naming that stream, before writing anything to it.
///
/// Global positions are assigned by the destination; their order follows the source's.
pub async fn copy_store<F, T>(
    from: &F,
    to: &T,
    options: CopyOptions,
    progress: impl FnMut(CopyProgress),
) -> Result<CopyProgress>
where
    F: EventStoreBackend + ?Sized,
    T: EventStoreBackend + ?Sized,
{
    copy_rewritten(from, to, options, &mut Unchanged, progress).await
}

/// What a copy makes of each source event on its way to the destination ([`copy_rewritten`]):
/// the same event ([`copy_store`]), or others (an upcasting copy writes each at its current
/// schema version, split or dropped). The copy stays resumable as long as the rewrite is
/// deterministic: the same source events make the same destination events, ids included.
pub trait Rewrite {
    /// Pushes onto `out` the destination events of `event`, in order, each with the
    /// destination stream version it gets (consecutive within a stream from one event to the
    /// next). Called once per source event, in global order, from the first on every run.
    ///
    /// # Errors
    ///
    /// Fails the copy (nothing of `event` is written).
    fn rewrite(&mut self, event: RecordedEvent, out: &mut Vec<RecordedEvent>) -> Result<()>;

    /// The destination version of `stream` once its source events up to `version` are copied.
    fn destination_version(&self, stream: &StreamId, version: u64) -> u64;

    /// Whether the latest snapshots are copied (a rewrite that changes versions cannot).
    fn keeps_snapshots(&self) -> bool;
}

/// The rewrite of [`copy_store`]: none.
struct Unchanged;

impl Rewrite for Unchanged {
    fn rewrite(&mut self, event: RecordedEvent, out: &mut Vec<RecordedEvent>) -> Result<()> {
        out.push(event);
        Ok(())
    }

    fn destination_version(&self, _: &StreamId, version: u64) -> u64 {
        version
    }

    fn keeps_snapshots(&self) -> bool {
        true
    }
}

/// [`copy_store`] with each source event passed through `rewrite`; resumable and checked in
/// the same way (the destination events of a stream are compared by version, id and type with
/// what an earlier run stored). Snapshots are copied only if the rewrite keeps them.
///
/// # Errors
///
/// As [`copy_store`], and what `rewrite` returns.
pub async fn copy_rewritten<F, T, R>(
    from: &F,
    to: &T,
    options: CopyOptions,
    rewrite: &mut R,
    mut progress: impl FnMut(CopyProgress),
) -> Result<CopyProgress>
where
    F: EventStoreBackend + ?Sized,
    T: EventStoreBackend + ?Sized,
    R: Rewrite + ?Sized,
{
    let page_size = options.page_size.max(1);
    let mut state = CopyProgress { total: from.stats().await?.events, ..CopyProgress::default() };
    let mut after = 0;
    let mut rewritten = Vec::new();
    loop {
        let page = from.read_all(after, page_size).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        state.read += page.len() as u64;
        // Destination versions of the streams in this page, fetched once per page.
        let mut versions: HashMap<StreamId, u64> = HashMap::new();
        let mut run = Run::default();
        for source in page {
            rewritten.clear();
            rewrite.rewrite(source, &mut rewritten)?;
            for event in rewritten.drain(..) {
                let version = match versions.get(&event.stream_id) {
                    Some(version) => *version,
                    None => {
                        let version = to.stream_version(&event.stream_id).await?;
                        versions.insert(event.stream_id.clone(), version);
                        version
                    }
                };
                let present = event.version <= version;
                if !run.takes(&event, present, options.max_append_bytes) {
                    run.finish(to, &mut versions, &mut state).await?;
                }
                run.push(event, present);
            }
        }
        run.finish(to, &mut versions, &mut state).await?;
        progress(state);
    }
    let snapshots =
        options.snapshots && rewrite.keeps_snapshots() && from.capabilities().snapshots && to.capabilities().snapshots;
    let mut after_stream: Option<StreamId> = None;
    loop {
        let streams = from.list_streams(after_stream.as_deref(), page_size).await?;
        let Some((last, _)) = streams.last() else { break };
        after_stream = Some(last.clone());
        for (stream, source_version) in streams {
            // Every source event is in the destination now; more there means foreign events.
            let expected = rewrite.destination_version(&stream, source_version);
            let copied = to.stream_version(&stream).await?;
            if copied > expected {
                return Err(foreign(stream, expected, copied));
            }
            if !snapshots {
                continue;
            }
            if let Some(snapshot) = from.get_latest_snapshot(&stream).await? {
                to.save_snapshot(&stream, snapshot).await?;
                state.snapshots += 1;
            }
        }
    }
    progress(state);
    Ok(state)
}

/// The conflict for a destination stream that holds events the source does not have.
fn foreign(stream: StreamId, source_version: u64, destination_version: u64) -> Error {
    Error::Conflict { stream, expected: ExpectedVersion::Exact(source_version), actual: destination_version }
}

/// Consecutive source events of one stream, all already in the destination (to compare) or
/// all missing from it (to append in one go).
#[derive(Default)]
struct Run {
    events: Vec<RecordedEvent>,
    present: bool,
    bytes: usize,
}

impl Run {
    /// Whether `event` can join this run.
    fn takes(&self, event: &RecordedEvent, present: bool, max_bytes: usize) -> bool {
        let Some(first) = self.events.first() else { return true };
        first.stream_id == event.stream_id
            && self.present == present
            && (present || self.bytes + event_bytes(event) <= max_bytes)
    }

    fn push(&mut self, event: RecordedEvent, present: bool) {
        self.present = present;
        self.bytes += event_bytes(&event);
        self.events.push(event);
    }

    /// Compares a present run with the destination, or appends a missing one expecting the
    /// version before its first event.
    async fn finish<T: EventStoreBackend + ?Sized>(
        &mut self,
        to: &T,
        versions: &mut HashMap<StreamId, u64>,
        state: &mut CopyProgress,
    ) -> Result<()> {
        let events = std::mem::take(&mut self.events);
        self.bytes = 0;
        let Some(first) = events.first() else { return Ok(()) };
        let stream = first.stream_id.clone();
        let before = first.version - 1;
        let last_version = events.last().map_or(0, |e| e.version);
        if self.present {
            let stored = to.read_stream(&stream, before, events.len()).await?;
            let same = stored.len() == events.len()
                && stored.iter().zip(&events).all(|(d, s)| {
                    d.version == s.version && d.metadata.event_id == s.metadata.event_id && d.event_type == s.event_type
                });
            if !same {
                let actual = versions.get(&stream).copied().unwrap_or(0);
                return Err(Error::Conflict { stream, expected: ExpectedVersion::Exact(before), actual });
            }
            state.skipped += events.len() as u64;
            return Ok(());
        }
        let expected = ExpectedVersion::Exact(before);
        let count = events.len() as u64;
        let result = to.append(&stream, expected, events.iter().map(RecordedEvent::to_new_event).collect()).await?;
        if result.stream_version != last_version {
            return Err(Error::Conflict { stream, expected, actual: result.stream_version });
        }
        versions.insert(stream, last_version);
        state.written += count;
        Ok(())
    }
}

/// What an event weighs in an append: payload, type name and metadata.
fn event_bytes(event: &RecordedEvent) -> usize {
    event.payload.len() + event.event_type.len() + event.metadata.encoded_len()
}

/// The first difference [`verify_stores`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The stream where the stores differ.
    pub stream: StreamId,
    /// The version, when the difference is in an event (0: the stream or its snapshot).
    pub version: u64,
    /// What differs.
    pub what: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.version == 0 {
            write!(f, "stream `{}`: {}", self.stream, self.what)
        } else {
            write!(f, "stream `{}` version {}: {}", self.stream, self.version, self.what)
        }
    }
}

/// What [`verify_stores`] compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Streams compared.
    pub streams: u64,
    /// Events compared.
    pub events: u64,
    /// Snapshots compared.
    pub snapshots: u64,
    /// The first difference, if any.
    pub difference: Option<Difference>,
}

/// Compares two stores stream by stream (ids, versions, event ids, types, payloads,
/// metadata, latest snapshots) and reports the first difference. Positions are not
/// compared: each backend assigns its own.
///
/// Payloads are equal when their bytes are, or when both are JSON documents with equal values:
/// a copy through PostgreSQL's `jsonb` re-formats documents but keeps what they say.
pub async fn verify_stores<A, B>(a: &A, b: &B, page_size: usize) -> Result<VerifyReport>
where
    A: EventStoreBackend + ?Sized,
    B: EventStoreBackend + ?Sized,
{
    let page_size = page_size.max(1);
    let mut report = VerifyReport::default();
    let mut after: Option<StreamId> = None;
    loop {
        let left = a.list_streams(after.as_deref(), page_size).await?;
        let right = b.list_streams(after.as_deref(), page_size).await?;
        for (index, entry) in left.iter().enumerate() {
            let Some(other) = right.get(index) else {
                report.difference = Some(missing(&entry.0, "is missing from the second store"));
                return Ok(report);
            };
            if other.0 != entry.0 {
                let (stream, side) = if other.0 < entry.0 { (&other.0, "first") } else { (&entry.0, "second") };
                report.difference = Some(missing(stream, &format!("is missing from the {side} store")));
                return Ok(report);
            }
            report.streams += 1;
            if let Some(difference) = compare_stream(a, b, &entry.0, page_size, &mut report).await? {
                report.difference = Some(difference);
                return Ok(report);
            }
        }
        if right.len() > left.len() {
            report.difference = Some(missing(&right[left.len()].0, "is missing from the first store"));
            return Ok(report);
        }
        let Some(last) = left.last() else { return Ok(report) };
        if left.len() < page_size {
            return Ok(report);
        }
        after = Some(last.0.clone());
    }
}

fn missing(stream: &StreamId, what: &str) -> Difference {
    Difference { stream: stream.clone(), version: 0, what: what.to_owned() }
}

/// Payloads are the same when their bytes are, or when both are JSON documents with equal
/// values (a `jsonb` store re-formats documents and orders their keys).
fn same_payload(left: &[u8], right: &[u8]) -> bool {
    if left == right {
        return true;
    }
    let parse = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).ok();
    matches!((parse(left), parse(right)), (Some(l), Some(r)) if l == r)
}

async fn compare_stream<A, B>(
    a: &A,
    b: &B,
    stream: &str,
    page_size: usize,
    report: &mut VerifyReport,
) -> Result<Option<Difference>>
where
    A: EventStoreBackend + ?Sized,
    B: EventStoreBackend + ?Sized,
{
    let differ = |version: u64, what: String| Some(Difference { stream: StreamId::from(stream), version, what });
    let mut after = 0;
    loop {
        let left = a.read_stream(stream, after, page_size).await?;
        let right = b.read_stream(stream, after, page_size).await?;
        for (l, r) in left.iter().zip(&right) {
            report.events += 1;
            let what = if l.version != r.version {
                Some(format!("versions {} and {}", l.version, r.version))
            } else if l.metadata.event_id != r.metadata.event_id {
                Some(format!("event ids {} and {}", l.metadata.event_id, r.metadata.event_id))
            } else if l.event_type != r.event_type {
                Some(format!("event types `{}` and `{}`", l.event_type, r.event_type))
            } else if !same_payload(&l.payload, &r.payload) {
                Some("payloads differ".to_owned())
            } else if l.metadata != r.metadata {
                Some("metadata differs".to_owned())
            } else {
                None
            };
            if let Some(what) = what {
                return Ok(differ(l.version, what));
            }
        }
        if left.len() != right.len() {
            let (longer, side) = if left.len() > right.len() { (&left, "second") } else { (&right, "first") };
            let version = longer[left.len().min(right.len())].version;
            return Ok(differ(version, format!("event missing from the {side} store")));
        }
        let Some(last) = left.last() else { break };
        after = last.version;
        if left.len() < page_size {
            break;
        }
    }
    let (left, right) = (a.get_latest_snapshot(stream).await?, b.get_latest_snapshot(stream).await?);
    match (&left, &right) {
        (None, None) => {}
        (Some(l), Some(r)) if l.version == r.version && same_payload(&l.payload, &r.payload) => {
            report.snapshots += 1;
        }
        _ => {
            let describe = |s: &Option<crate::types::Snapshot>| {
                s.as_ref().map_or("none".to_owned(), |s| format!("version {}", s.version))
            };
            return Ok(differ(0, format!("latest snapshots differ: {} and {}", describe(&left), describe(&right))));
        }
    }
    Ok(None)
}
