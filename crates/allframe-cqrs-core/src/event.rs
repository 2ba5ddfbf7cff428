//! Typed events, aggregates and projections.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{EventId, Metadata, StreamId};

/// A domain event: something that happened, stored in a stream.
///
/// The stored name of each event ([`Event::event_type`]) defaults to the name serde gives it:
/// the variant's name for an enum (with `#[serde(rename = "...")]` applied), the type's for a
/// struct. So an empty `impl` is enough, as with the AllFrame 0.1 crates:
///
/// ```
/// use allframe_cqrs_core::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// enum AccountEvent {
///     Opened { owner: String },
///     #[serde(rename = "MoneyDeposited")]
///     Deposited { amount: u64 },
/// }
///
/// impl Event for AccountEvent {}
///
/// assert_eq!(AccountEvent::Opened { owner: "ada".into() }.event_type(), "Opened");
/// assert_eq!(AccountEvent::Deposited { amount: 5 }.event_type(), "MoneyDeposited");
/// ```
///
/// `#[derive(Event)]` (the `allframe` facade) names variants without touching their serde
/// names and fills [`Event::EVENT_TYPES`]; a hand-written `event_type` works as before.
pub trait Event: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The stable name stored beside the payload. Keep it unchanged once events are stored:
    /// tools, SQL queries and upcasters rely on it. The default is serde's name of the value
    /// (see [`event_name`](crate::event_name)); Rust's `type_name` is not stable, so it is never
    /// used.
    fn event_type(&self) -> &'static str {
        crate::event_name::serde_name(self)
    }

    /// Every type name this event type can decode. When not empty, reading a stored event
    /// whose type is not listed fails with [`Error::UnknownEventType`](crate::Error::UnknownEventType)
    /// rather than a decoding error.
    const EVENT_TYPES: &'static [&'static str] = &[];

    /// The version of the event type's schema (`#[derive(Event)]` with `#[event(version = N)]`),
    /// starting at 1: the event versioning layer records it with each stored event's type.
    const SCHEMA_VERSION: u32 = 1;
}

/// State rebuilt from a stream's events; the decision-making side of a command.
///
/// Serializable so that snapshots can store it.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The events this aggregate is built from.
    type Event: Event;

    /// Applies one event to the state. Must not fail: events are facts already decided.
    ///
    /// Loads call it while the backend may hold a read lock on the events (the memory backend
    /// lends them in place), so it must not call the store.
    fn apply(&mut self, event: &Self::Event);

    /// The version of the state's schema, recorded with each snapshot: a snapshot taken under
    /// another version is not decoded, and the aggregate is rebuilt from its events instead.
    /// Raise it when the state's serialized form changes. At 1, snapshots are stored as they
    /// always were (no version recorded, no code added).
    const SCHEMA_VERSION: u32 = 1;
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
