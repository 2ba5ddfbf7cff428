//! Streamed reads: a stream or the whole log as a `futures::Stream`, fetched page by page,
//! so memory stays bounded by one page however large the store is (contract point 5).

use futures_core::Stream;
use futures_util::{StreamExt, TryStreamExt, stream};

use crate::backend::EventStoreBackend;
use crate::error::{Error, Result};
use crate::types::RecordedEvent;

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
            Some(last) if page.len() == page_size => Some(last.version),
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
            Some(last) if page.len() == page_size => Some(last.position),
            _ => None,
        };
        if page.is_empty() { Ok(None) } else { Ok(Some((page, next))) }
    })
    .map_ok(|page| stream::iter(page.into_iter().map(Ok)))
    .try_flatten()
    .boxed()
}
