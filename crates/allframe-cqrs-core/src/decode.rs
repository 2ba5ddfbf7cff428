//! Decoding stored events into typed ones: the one choke point every typed read goes
//! through. A stored event is checked against the event type's names, then its payload
//! decoded; with upcasters, an event of an older schema version is first turned into the
//! events it stands for now (none, one or several).

use std::sync::Arc;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::event::{Envelope, Event};
use crate::types::RecordedEvent;
use crate::upcast::Upcast;

/// How a store decodes: its codec, and its upcasters if it has any.
pub(crate) struct Decoder<E> {
    pub(crate) codec: Codec,
    pub(crate) upcast: Option<Arc<dyn Upcast<E>>>,
}

impl<E> std::fmt::Debug for Decoder<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("codec", &self.codec).field("upcast", &self.upcast).finish()
    }
}

impl<E> Clone for Decoder<E> {
    fn clone(&self) -> Self {
        Decoder { codec: self.codec, upcast: self.upcast.clone() }
    }
}

impl<E: Event> Decoder<E> {
    /// Gives each event `record` stands for to `out`, borrowing the record.
    pub(crate) fn each(&self, record: &RecordedEvent, out: &mut dyn FnMut(E) -> Result<()>) -> Result<()> {
        if let Some(upcast) = &self.upcast
            && upcast.decode(record, self.codec, out)?
        {
            return Ok(());
        }
        out(decode_event(self.codec, record)?)
    }

    /// The envelopes of the events `record` stands for (one, without upcasters).
    pub(crate) fn envelopes(&self, record: RecordedEvent) -> Result<Decoded<Envelope<E>>> {
        if self.upcast.is_none() {
            return decode_envelope(self.codec, record).map(Decoded::one);
        }
        let mut events = Vec::new();
        self.each(&record, &mut |event| {
            events.push(event);
            Ok(())
        })?;
        let envelopes = events.into_iter().map(|event| Envelope {
            stream_id: record.stream_id.clone(),
            version: record.version,
            position: record.position,
            event,
            metadata: record.metadata.clone(),
        });
        Ok(Decoded::many(envelopes.collect()))
    }
}

/// The events one stored event stands for: one (without upcasters, no allocation) or any
/// number.
#[derive(Debug)]
pub struct Decoded<T>(DecodedInner<T>);

#[derive(Debug)]
enum DecodedInner<T> {
    One(Option<T>),
    Many(std::vec::IntoIter<T>),
}

impl<T> Decoded<T> {
    pub(crate) fn one(item: T) -> Self {
        Decoded(DecodedInner::One(Some(item)))
    }

    pub(crate) fn many(items: Vec<T>) -> Self {
        Decoded(DecodedInner::Many(items.into_iter()))
    }
}

/// The results of decoding one stored event, one by one: its events, or its error.
pub(crate) struct Results<T>(Option<Result<Decoded<T>>>);

impl<T> Results<T> {
    pub(crate) fn of(decoded: Result<Decoded<T>>) -> Self {
        Results(Some(decoded))
    }
}

impl<T> Iterator for Results<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        match self.0.take()? {
            Ok(mut decoded) => {
                let next = decoded.next();
                if next.is_some() {
                    self.0 = Some(Ok(decoded));
                }
                next.map(Ok)
            }
            Err(error) => Some(Err(error)),
        }
    }
}

impl<T> Iterator for Decoded<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.0 {
            DecodedInner::One(item) => item.take(),
            DecodedInner::Many(items) => items.next(),
        }
    }
}

/// Decodes one stored event into an [`Envelope`], as stored (no upcasting).
pub(crate) fn decode_envelope<E: Event>(codec: Codec, record: RecordedEvent) -> Result<Envelope<E>> {
    let event = decode_event(codec, &record)?;
    Ok(Envelope {
        stream_id: record.stream_id,
        version: record.version,
        position: record.position,
        event,
        metadata: record.metadata,
    })
}

/// Decodes the event of one stored record as stored, which is only borrowed.
pub(crate) fn decode_event<E: Event>(codec: Codec, record: &RecordedEvent) -> Result<E> {
    decode_payload(codec, record, &record.event_type, &record.payload)
}

/// Decodes `payload` as an event of type `event_type` for the stored event `record` (named in
/// errors): its type is checked against [`Event::EVENT_TYPES`], then the payload decoded.
/// What upcasters call for each event they make.
pub fn decode_payload<E: Event>(codec: Codec, record: &RecordedEvent, event_type: &str, payload: &[u8]) -> Result<E> {
    if !E::EVENT_TYPES.is_empty() && !E::EVENT_TYPES.contains(&event_type) {
        return Err(Error::UnknownEventType {
            stream: record.stream_id.clone(),
            version: record.version,
            event_type: event_type.to_owned(),
        });
    }
    codec.decode::<E>(payload).map_err(|source| Error::Decode {
        stream: record.stream_id.clone(),
        version: record.version,
        event_type: event_type.to_owned(),
        source,
    })
}
