//! Streamed reads: a stream or the whole log as a `futures::Stream`, fetched page by page,
//! so memory stays bounded by one page however large the store is (contract point 5).

use std::collections::{BTreeSet, btree_set};
use std::ops::Bound;
use std::time::{Duration, Instant};

use futures_core::Stream;
use futures_util::{StreamExt, TryStreamExt, stream};

use crate::backend::EventStoreBackend;
use crate::error::{Error, Result};
use crate::types::{RecordedEvent, StreamId};

/// The events of `stream` after `after_version`, fetched `page_size` at a time.
pub fn stream_events<'a, B: EventStoreBackend + ?Sized>(
    backend: &'a B,
    stream: &'a str,
    after_version: u64,
    page_size: usize,
) -> impl Stream<Item = Result<RecordedEvent>> + Send + 'a {
    let page_size = page_size.max(1);
    stream::try_unfold(Some(after_version), move |cursor| async move {
        let Some(after) = cursor else { return Ok::<_, Error>(None) };
        let page = backend.read_stream(stream, after, page_size).await?;
        let next = match page.last() {
            // `>=`: a backend that reads through upcasters may return more than asked.
            Some(last) if page.len() >= page_size => Some(last.version),
            _ => None,
        };
        if page.is_empty() { Ok(None) } else { Ok(Some((page, next))) }
    })
    .map_ok(|page| stream::iter(page.into_iter().map(Ok)))
    .try_flatten()
}

/// The whole log after `after_position`, fetched `page_size` at a time, up to the head
/// as it is when the last page is read.
pub fn all_events<B: EventStoreBackend + ?Sized>(
    backend: &B,
    after_position: u64,
    page_size: usize,
) -> impl Stream<Item = Result<RecordedEvent>> + Send + '_ {
    let page_size = page_size.max(1);
    stream::try_unfold(Some(after_position), move |cursor| async move {
        let Some(after) = cursor else { return Ok::<_, Error>(None) };
        let page = backend.read_all(after, page_size).await?;
        let next = match page.last() {
            Some(last) if page.len() >= page_size => Some(last.position),
            _ => None,
        };
        if page.is_empty() { Ok(None) } else { Ok(Some((page, next))) }
    })
    .map_ok(|page| stream::iter(page.into_iter().map(Ok)))
    .try_flatten()
    .boxed()
}

/// Waits until `stream` reads at version `version` or above, or `max_wait` has passed, and
/// returns the version it reads.
///
/// After a conflict that names the stream's actual version, the winning append may still be
/// committing (a group commit's sync in flight): its version is taken, but not readable yet.
/// Deciding again before it is readable would lose the race again, so command retries wait
/// here first.
pub async fn wait_for_version<B: EventStoreBackend + ?Sized>(
    backend: &B,
    stream: &str,
    version: u64,
    max_wait: Duration,
) -> Result<u64> {
    let deadline = Instant::now() + max_wait;
    loop {
        let head = backend.head_position().await?;
        let readable = match version.checked_sub(1) {
            Some(after) => backend.read_stream(stream, after, 1).await?.first().map(|e| e.version),
            None => Some(0),
        };
        if let Some(readable) = readable {
            return Ok(readable);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(version.saturating_sub(1));
        }
        backend.wait_for_commit(head, (deadline - now).min(Duration::from_millis(50))).await?;
    }
}

/// The stream ids of `order` that sort after `after` (all when `None`), in byte order: what
/// [`list_streams`](crate::EventStoreBackend::list_streams) pages through, for backends that
/// keep their stream ids in a `BTreeSet`.
pub fn streams_after<'a>(order: &'a BTreeSet<StreamId>, after: Option<&str>) -> btree_set::Range<'a, StreamId> {
    let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
    order.range::<str, _>((lower, Bound::Unbounded))
}
