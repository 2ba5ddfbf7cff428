//! Typed events, aggregates and projections.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{EventId, Metadata, StreamId};

/// A domain event: something that happened, stored in a stream.
///
/// ```
/// use allframe_cqrs_core::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// enum AccountEvent {
///     Opened { owner: String },
///     Deposited { amount: u64 },
/// }
///
/// impl Event for AccountEvent {
///     fn event_type(&self) -> &'static str {
///         match self {
///             AccountEvent::Opened { .. } => "AccountOpened",
///             AccountEvent::Deposited { .. } => "MoneyDeposited",
///         }
///     }
/// }
/// ```
pub trait Event: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The stable name stored beside the payload. Keep it unchanged once events are stored:
    /// tools, SQL queries and upcasters rely on it. (Rust's `type_name` is not stable, so
    /// it is not used as a default.)
    fn event_type(&self) -> &'static str;

    /// Every type name this event type can decode. When not empty, reading a stored event
    /// whose type is not listed fails with [`Error::UnknownEventType`](crate::Error::UnknownEventType)
    /// rather than a decoding error.
    const EVENT_TYPES: &'static [&'static str] = &[];
}

/// State rebuilt from a stream's events; the decision-making side of a command.
///
/// Serializable so that snapshots can store it.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The events this aggregate is built from.
    type Event: Event;

    /// Applies one event to the state. Must not fail: events are facts already decided.
    fn apply(&mut self, event: &Self::Event);
}

/// A read model fed with events in global order.
pub trait Projection<E: Event>: Send {
    /// Applies one event. The envelope carries the position to checkpoint.
    fn apply(&mut self, event: &Envelope<E>);
}

/// A decoded event with where it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope<E> {
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its version in the stream.
    pub version: u64,
    /// Its global position.
    pub position: u64,
    /// The decoded event.
    pub event: E,
    /// Its metadata.
    pub metadata: Metadata,
}

/// A typed event to append together with its metadata (id, correlation, causation, headers).
#[derive(Clone, Debug, PartialEq)]
pub struct EventData<E> {
    /// The event.
    pub event: E,
    /// Its metadata.
    pub metadata: Metadata,
}

impl<E> EventData<E> {
    /// The event with fresh metadata (new id, current time).
    pub fn new(event: E) -> Self {
        EventData { event, metadata: Metadata::new() }
    }

    /// Sets the event id, so that retrying the append is idempotent.
    pub fn with_id(mut self, id: EventId) -> Self {
        self.metadata.event_id = id;
        self
    }

    /// Replaces the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

impl<E> From<E> for EventData<E> {
    fn from(event: E) -> Self {
        EventData::new(event)
    }
}
