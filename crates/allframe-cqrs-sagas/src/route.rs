//! Routing the log's events to sagas: which instance an event begins or continues. A router is
//! typed where the application writes it ([`Saga::start_on`](crate::Saga::start_on),
//! [`Choreography::correlate`](crate::Choreography::correlate)) and erased here, so the
//! orchestrator reads the log once, as bytes, for every saga.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use allframe_cqrs_core::{Codec, Envelope, Event, RecordedEvent, is_system_stream};
use serde_json::Value;

/// Where one event goes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Routed {
    /// Begin an orchestration's instance `id` with `input` (passed over if it exists).
    Begin { id: String, input: Value },
    /// Give the event to a choreography's instance `id`, beginning it if it does not exist.
    Start(String),
    /// Give the event to a choreography's instance `id` if it exists and has not finished.
    Continue(String),
    /// The event is the saga's but cannot be routed (it does not decode, the router panicked):
    /// the saga's router stops there, so that no event is skipped unseen.
    Refused(String),
}

type RouteFn = dyn Fn(&RecordedEvent, Codec) -> Option<Routed> + Send + Sync;

/// An erased router: one stored event in, where it goes out (`None`: not this saga's).
#[derive(Clone)]
pub(crate) struct Router(Arc<RouteFn>);

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Router")
    }
}

impl Router {
    /// Decodes events as `E` (those whose stored type is in `events`, or `E::EVENT_TYPES` when
    /// `events` is empty, or every event of an application stream when both are empty) and
    /// asks `route`.
    pub(crate) fn typed<E, F>(events: &'static [&'static str], route: F) -> Self
    where
        E: Event,
        F: Fn(&Envelope<E>) -> Option<Routed> + Send + Sync + 'static,
    {
        Router(Arc::new(move |record, codec| {
            if is_system_stream(&record.stream_id) {
                return None;
            }
            let types = if events.is_empty() { E::EVENT_TYPES } else { events };
            if !types.is_empty() && !types.contains(&&*record.event_type) {
                return None;
            }
            let event = match codec.decode::<E>(&record.payload) {
                Ok(event) => event,
                // No declared types: an event that is not an `E` is another event type's.
                Err(_) if types.is_empty() => return None,
                Err(error) => {
                    return Some(Routed::Refused(format!(
                        "event {} at position {} does not decode: {error}",
                        record.event_type, record.position
                    )));
                }
            };
            let envelope = Envelope {
                stream_id: record.stream_id.clone(),
                version: record.version,
                position: record.position,
                event,
                metadata: record.metadata.clone(),
            };
            match std::panic::catch_unwind(AssertUnwindSafe(|| route(&envelope))) {
                Ok(routed) => routed,
                Err(_) => Some(Routed::Refused(format!(
                    "routing event {} at position {} panicked",
                    record.event_type, record.position
                ))),
            }
        }))
    }

    /// Where `record` goes.
    pub(crate) fn route(&self, record: &RecordedEvent, codec: Codec) -> Option<Routed> {
        (self.0)(record, codec)
    }
}
