//! The replay manager: a range of the log, filtered by stream and event type, into any
//! handler, at full speed or at a set rate, with progress and cancellation, in bounded memory
//! (one page at a time).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use allframe_cqrs_core::{BoxError, Envelope, Event, EventStore, EventStoreBackend};

use crate::error::ProjectionError;

/// Cancels a running replay from elsewhere (another task, a signal handler); cheap to clone.
/// The replay stops before its next page and reports how far it got.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the replays holding this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// How far a replay is, given to its progress callback about ten times a second and at the end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// The position the replay started after.
    pub start: u64,
    /// The position it goes up to (the head when it started, or the range's end).
    pub end: u64,
    /// The position of the last event read.
    pub position: u64,
    /// Events given to the handler.
    pub handled: u64,
    /// Events read, handled or not.
    pub read: u64,
    /// Time since the replay started.
    pub elapsed: Duration,
}

impl Progress {
    /// The share of the range read, from 0 to 1.
    pub fn fraction(&self) -> f64 {
        let total = self.end.saturating_sub(self.start);
        if total == 0 { 1.0 } else { self.position.saturating_sub(self.start) as f64 / total as f64 }
    }

    /// Events read per second so far.
    pub fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 { self.read as f64 / seconds } else { 0.0 }
    }

    /// The time left at the rate so far, when there is a rate to go by.
    pub fn remaining(&self) -> Option<Duration> {
        let rate = self.rate();
        let left = self.end.saturating_sub(self.position) as f64;
        (rate > 0.0).then(|| Duration::from_secs_f64(left / rate))
    }
}

/// What a replay did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplayReport {
    /// The final progress.
    pub progress: Progress,
    /// Whether it was cancelled before the end of its range.
    pub cancelled: bool,
}

/// A replay of part of the log, built with the setters and started with [`run`](Self::run).
///
/// ```
/// # use allframe_cqrs_core::Event;
/// # use allframe_cqrs_projections::Replay;
/// # use allframe_backend_memory::{EventStore, InMemoryEventStore};
/// # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
/// # enum AccountEvent { Opened, Deposited { amount: u64 } }
/// # impl Event for AccountEvent {}
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store: EventStore<AccountEvent> = EventStore::new();
/// store.append("account-1", vec![AccountEvent::Opened, AccountEvent::Deposited { amount: 5 }]).await?;
/// let mut total = 0;
/// let report = Replay::new(&store)
///     .event_types(["Deposited"])
///     .run(|envelope| {
///         if let AccountEvent::Deposited { amount } = envelope.event { total += amount; }
///         Ok(())
///     }, |_progress| {})
///     .await?;
/// assert_eq!((total, report.progress.handled, report.progress.read), (5, 1, 2));
/// # Ok(())
/// # }
/// ```
pub struct Replay<'a, E, B: ?Sized> {
    store: &'a EventStore<E, B>,
    after: u64,
    through: Option<u64>,
    streams: Vec<String>,
    event_types: Vec<String>,
    max_rate: Option<f64>,
    page_size: usize,
    cancel: CancelToken,
}

impl<E, B: ?Sized> std::fmt::Debug for Replay<'_, E, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("after", &self.after)
            .field("through", &self.through)
            .field("streams", &self.streams)
            .field("event_types", &self.event_types)
            .field("max_rate", &self.max_rate)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl<'a, E: Event, B: EventStoreBackend + ?Sized> Replay<'a, E, B> {
    /// A replay of the whole log as it is when it starts.
    pub fn new(store: &'a EventStore<E, B>) -> Self {
        Replay {
            store,
            after: 0,
            through: None,
            streams: Vec::new(),
            event_types: Vec::new(),
            max_rate: None,
            page_size: 512,
            cancel: CancelToken::new(),
        }
    }

    /// Starts after `position` (exclusive).
    pub fn after(mut self, position: u64) -> Self {
        self.after = position;
        self
    }

    /// Ends at `position` (inclusive) instead of the head at the start.
    pub fn through(mut self, position: u64) -> Self {
        self.through = Some(position);
        self
    }

    /// Only events of these streams (all when none is given).
    pub fn streams<S: Into<String>>(mut self, streams: impl IntoIterator<Item = S>) -> Self {
        self.streams = streams.into_iter().map(Into::into).collect();
        self
    }

    /// Only events of these stored types (all when none is given); others are not decoded.
    pub fn event_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// At most `events_per_second` events read per second (for a replay beside live traffic).
    pub fn max_rate(mut self, events_per_second: f64) -> Self {
        self.max_rate = (events_per_second > 0.0).then_some(events_per_second);
        self
    }

    /// Events read per page: the replay's memory bound.
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Stops the replay when `token` is cancelled.
    pub fn cancel_with(mut self, token: &CancelToken) -> Self {
        self.cancel = token.clone();
        self
    }

    /// Runs the replay: each event of the range that passes the filters, decoded, goes to
    /// `handler` in global order; `progress` hears how far it is. The library's own streams
    /// are passed over. Dropping the future also stops it.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::Failed`] when the handler returns an error or an event does not
    /// decode (the replay stops there; its position is in the error), or a store error.
    pub async fn run(
        self,
        mut handler: impl FnMut(Envelope<E>) -> Result<(), BoxError> + Send,
        mut progress: impl FnMut(&Progress) + Send,
    ) -> Result<ReplayReport, ProjectionError> {
        let backend = self.store.backend();
        let end = match self.through {
            Some(through) => through,
            None => backend.head_position().await?,
        };
        let started = Instant::now();
        let mut now =
            Progress { start: self.after, end, position: self.after, handled: 0, read: 0, elapsed: Duration::ZERO };
        let mut reported = started;
        let mut cancelled = false;
        'pages: while now.position < end {
            if self.cancel.is_cancelled() {
                cancelled = true;
                break;
            }
            let limit = usize::try_from(end - now.position).unwrap_or(usize::MAX).min(self.page_size);
            let page = backend.read_all(now.position, limit).await?;
            if page.is_empty() {
                break;
            }
            for record in page {
                if record.position > end {
                    break 'pages;
                }
                let position = record.position;
                if self.wants(&record) {
                    let failed =
                        |reason: String| ProjectionError::Failed { name: "replay".to_owned(), position, reason };
                    let event = self.store.decode_event(&record).map_err(|error| failed(error.to_string()))?;
                    handler(crate::runner::envelope(record, event)).map_err(|error| failed(error.to_string()))?;
                    now.handled += 1;
                }
                now.position = position;
                now.read += 1;
            }
            now.elapsed = started.elapsed();
            if let Some(rate) = self.max_rate {
                let due = Duration::from_secs_f64(now.read as f64 / rate);
                if due > now.elapsed {
                    tokio::time::sleep(due - now.elapsed).await;
                    now.elapsed = started.elapsed();
                }
            }
            if reported.elapsed() >= Duration::from_millis(100) {
                progress(&now);
                reported = Instant::now();
            }
        }
        now.elapsed = started.elapsed();
        progress(&now);
        Ok(ReplayReport { progress: now, cancelled })
    }

    fn wants(&self, record: &allframe_cqrs_core::RecordedEvent) -> bool {
        !allframe_cqrs_core::is_system_stream(&record.stream_id)
            && (self.streams.is_empty() || self.streams.iter().any(|stream| stream == record.stream_id.as_str()))
            && (self.event_types.is_empty() || self.event_types.iter().any(|name| name == &*record.event_type))
    }
}
