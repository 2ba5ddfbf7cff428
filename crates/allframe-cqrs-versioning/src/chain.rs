//! A checked chain of upcasters, applied to one stored event at a time: from the version it
//! was written with (its `allframe.schema_version` header) up to the current one, step by step.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use allframe_cqrs_core::{BoxError, Codec, RecordedEvent, schema_version};

use crate::json_edit::Known;
use crate::shape::{ChainShape, Step};
use crate::upcasters::{Made, Payload, StepFn};

/// Upcasters checked by [`Upcasters::build`](crate::Upcasters::build), applied to one stored
/// event at a time ([`Chain::apply`], [`Chain::upcast`]).
pub struct Chain {
    steps: BTreeMap<(String, u32), StepFn>,
    /// The types that have steps; others read the same at every version.
    versioned: BTreeSet<String>,
    current: u32,
    /// The types the event type reads at the current version (`Event::EVENT_TYPES`).
    event_types: &'static [&'static str],
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("current", &self.current)
            .field("steps", &self.steps.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Chain {
    pub(crate) fn new(
        steps: BTreeMap<(String, u32), StepFn>,
        current: u32,
        event_types: &'static [&'static str],
    ) -> Self {
        let versioned = steps.keys().map(|(event_type, _)| event_type.clone()).collect();
        Chain { steps, versioned, current, event_types }
    }

    /// What the chain reads, without its code: recorded in the store's schema registry so that
    /// tools with no access to the application's code can tell which stored events it reads.
    pub fn shape(&self) -> ChainShape {
        ChainShape {
            version: self.current,
            event_types: self.event_types.iter().map(|name| (*name).to_owned()).collect(),
            steps: self.steps().map(|(event_type, from)| Step { event_type: event_type.to_owned(), from }).collect(),
        }
    }

    /// The schema version events are read at.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// The steps, as (type, version read), in order.
    pub fn steps(&self) -> impl Iterator<Item = (&str, u32)> {
        self.steps.keys().map(|(event_type, from)| (event_type.as_str(), *from))
    }

    /// What a stored `event_type` at schema version `version` with `payload` is at the current
    /// version: `None` when the chain leaves it as it is.
    ///
    /// # Errors
    ///
    /// A step failed, or the type has steps but none reads it at a version it reaches.
    pub fn apply(
        &self,
        event_type: &str,
        version: u32,
        payload: &[u8],
        codec: Codec,
    ) -> Result<Option<Upcasted>, BoxError> {
        if version >= self.current || !self.versioned.contains(event_type) {
            return Ok(None);
        }
        let mut events: Vec<(String, Payload)> =
            vec![(event_type.to_owned(), Payload::Bytes(payload.to_vec(), Known::Unread))];
        // One buffer for what each step makes, reused from step to step.
        let mut made: Made = Vec::new();
        for at in version..self.current {
            let mut next = Vec::with_capacity(events.len());
            for (name, payload) in events {
                // The name moves into the lookup key and back: no copy per step.
                let key = (name, at);
                let step = self.steps.get(&key);
                let name = key.0;
                match step {
                    Some(step) => {
                        step(payload, codec, &mut made)
                            .map_err(|error| format!("upcasting `{name}` from schema version {at}: {error}"))?;
                        // A step keeps the name it read for one event at most.
                        let mut name = name;
                        for (made_name, payload) in made.drain(..) {
                            next.push((made_name.unwrap_or_else(|| std::mem::take(&mut name)), payload));
                        }
                    }
                    None if !self.versioned.contains(&name) => next.push((name, payload)),
                    None => return Err(format!("no upcaster reads `{name}` at schema version {at}").into()),
                }
            }
            events = next;
        }
        let written = events.into_iter().map(|(name, payload)| Ok((Cow::Owned(name), payload.into_bytes()?)));
        Ok(Some(written.collect::<Result<_, BoxError>>()?))
    }
}

impl Chain {
    /// What the stored `record` stands for at the current version (from the version its
    /// `allframe.schema_version` header names; none: version 1), or `None` when the chain
    /// leaves it as it is.
    ///
    /// # Errors
    ///
    /// As [`Chain::apply`].
    pub fn upcast(&self, record: &RecordedEvent, codec: Codec) -> Result<Option<Upcasted>, BoxError> {
        self.apply(&record.event_type, schema_version::of(&record.metadata), &record.payload, codec)
    }
}

/// What a stored event stands for at the current schema version: its events (none if dropped,
/// several if split), each as a type name and a payload in the store's codec.
pub type Upcasted = Vec<(Cow<'static, str>, Vec<u8>)>;
