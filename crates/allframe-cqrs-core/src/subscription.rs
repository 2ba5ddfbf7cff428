//! Catch-up subscriptions: read the log from a checkpoint, then wait for new commits.
//!
//! There is no separate "live" channel to switch to. A subscription always reads the log
//! by position; when it has read everything it waits for the backend's commit signal and
//! reads again. So events arrive only after they are committed, in global order, with no
//! gap or duplicate where catch-up turns into live delivery, and a slow subscriber only
//! falls behind: it never blocks or loses an append (contract point 8).

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::EventStoreBackend;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::event::{Envelope, Event};
use crate::store::decode_envelope;
use crate::types::RecordedEvent;

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// From the first event of the log.
    Beginning,
    /// After a checkpoint: the position of the last event already handled.
    After(u64),
    /// After the events committed when the subscription is created: new events only.
    End,
}

/// Settings of a subscription.
#[derive(Clone, Copy, Debug)]
pub struct SubscriptionOptions {
    /// Events fetched per read.
    pub page_size: usize,
    /// Longest wait for a commit signal before reading again (bounds the delay when a
    /// backend's notification is lost).
    pub max_wait: Duration,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions { page_size: 512, max_wait: Duration::from_millis(500) }
    }
}

/// A subscription to the whole log, yielding stored events as bytes.
#[derive(Debug)]
pub struct RawSubscription<B: ?Sized> {
    backend: Arc<B>,
    checkpoint: u64,
    buffer: VecDeque<RecordedEvent>,
    options: SubscriptionOptions,
    delivered: Delivered,
}

/// Counts the events a subscription reads (`allframe_subscription_events_total`, by backend):
/// one counter registered when the subscription starts, added to once per page. Nothing
/// without the `metrics` feature.
#[derive(Clone, Debug)]
struct Delivered {
    #[cfg(feature = "metrics")]
    events: metrics::Counter,
}

impl Delivered {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn register(backend: &'static str) -> Self {
        Delivered {
            #[cfg(feature = "metrics")]
            events: metrics::counter!(crate::metric_names::SUBSCRIPTION_EVENTS, "backend" => backend),
        }
    }

    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn add(&self, events: usize) {
        #[cfg(feature = "metrics")]
        self.events.increment(events as u64);
    }
}

impl<B: EventStoreBackend + ?Sized> RawSubscription<B> {
    /// Starts a subscription. `StartFrom::End` reads the head position now.
    ///
    /// A `page_size` or `max_wait` of zero is refused with [`Error::Configuration`]: either
    /// would make the subscription spin without ever waiting.
    ///
    /// With the `metrics` feature, the events it reads are counted in
    /// `allframe_subscription_events_total`, with the recorder installed now.
    pub async fn start(backend: Arc<B>, from: StartFrom, options: SubscriptionOptions) -> Result<Self> {
        if options.page_size == 0 || options.max_wait.is_zero() {
            return Err(Error::Configuration {
                reason: format!("subscription page_size and max_wait must be above zero (got {options:?})"),
            });
        }
        let checkpoint = match from {
            StartFrom::Beginning => 0,
            StartFrom::After(position) => position,
            StartFrom::End => backend.head_position().await?,
        };
        let delivered = Delivered::register(backend.name());
        Ok(RawSubscription { backend, checkpoint, buffer: VecDeque::new(), options, delivered })
    }

    /// The next committed event, waiting for one if the subscription has caught up.
    ///
    /// Cancel-safe: dropping the future loses nothing, the next call goes on from the checkpoint.
    pub async fn next(&mut self) -> Result<RecordedEvent> {
        loop {
            if let Some(event) = self.try_next().await? {
                return Ok(event);
            }
            (*self.backend).wait_for_commit(self.checkpoint, self.options.max_wait).await?;
        }
    }

    /// The next committed event if one is there now, without waiting for new commits.
    pub async fn try_next(&mut self) -> Result<Option<RecordedEvent>> {
        if self.buffer.is_empty() {
            let page = (*self.backend).read_all(self.checkpoint, self.options.page_size).await?;
            self.delivered.add(page.len());
            self.buffer.extend(page);
        }
        Ok(self.buffer.pop_front().inspect(|event| {
            // Equal only for the parts of one stored event that upcasters split.
            debug_assert!(event.position >= self.checkpoint, "backend returned a position below the checkpoint");
            self.checkpoint = event.position;
        }))
    }

    /// The position of the last event returned: store it, and resume with `StartFrom::After(checkpoint)`.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }
}

/// A subscription to the whole log, yielding decoded events.
#[derive(Debug)]
pub struct Subscription<E, B: ?Sized> {
    raw: RawSubscription<B>,
    codec: Codec,
    _event: PhantomData<fn() -> E>,
}

impl<E: Event, B: EventStoreBackend + ?Sized> Subscription<E, B> {
    pub(crate) fn new(raw: RawSubscription<B>, codec: Codec) -> Self {
        Subscription { raw, codec, _event: PhantomData }
    }

    /// The next committed event, decoded, waiting for one if caught up. Cancel-safe.
    ///
    /// A payload that does not decode is returned as an error and the checkpoint moves
    /// past it, so a poison event does not block the subscription forever.
    ///
    /// The library's own streams ([`SYSTEM_STREAM_PREFIX`](crate::SYSTEM_STREAM_PREFIX)) are
    /// skipped.
    pub async fn next(&mut self) -> Result<Envelope<E>> {
        loop {
            let record = self.raw.next().await?;
            if !crate::types::is_system_stream(&record.stream_id) {
                return decode_envelope(self.codec, record);
            }
        }
    }

    /// The next committed event if one is there now, without waiting.
    pub async fn try_next(&mut self) -> Result<Option<Envelope<E>>> {
        loop {
            match self.raw.try_next().await? {
                Some(record) if crate::types::is_system_stream(&record.stream_id) => continue,
                Some(record) => return decode_envelope(self.codec, record).map(Some),
                None => return Ok(None),
            }
        }
    }

    /// The position of the last event returned.
    pub fn checkpoint(&self) -> u64 {
        self.raw.checkpoint()
    }
}
