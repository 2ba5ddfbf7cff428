//! `copy --upcast`, the migration pipeline: a copy of a store in which every event is written
//! at its current schema version, through the chain (split events become several, dropped
//! ones none, so a stream's versions are renumbered). Resumable like a plain copy: the
//! destination events of each source event are always the same (the first part keeps the
//! stored event's id, the others get ids derived from it), so a run after an interruption
//! compares what is there and writes only the rest.

use std::collections::HashMap;

use allframe_cqrs_core::migrate::{CopyOptions, CopyProgress, Rewrite, copy_rewritten};
use allframe_cqrs_core::{
    BoxError, Codec, Error, EventId, EventStoreBackend, RecordedEvent, Result, StreamId, is_system_stream,
    schema_version,
};

use crate::chain::Chain;

/// Copies every event of `from` into `to` at the chain's current schema version (the
/// library's own streams as they are), in global order, keeping stream ids, event ids (a split
/// event's later parts get ids derived from its id), metadata and timestamps. Snapshots are not
/// copied: their versions and state are the old ones, and aggregates rebuild from the events.
///
/// Resumable like [`copy_store`](allframe_cqrs_core::migrate::copy_store). Memory holds, besides
/// a page, one number per stream whose versions a split or a drop shifted.
///
/// # Errors
///
/// [`Error::Decode`] naming a stored event the chain cannot read, or one written at a newer
/// version than the chain's (nothing of it is written),
/// [`Error::Conflict`] for a destination stream holding other events, or a store's error.
pub async fn copy_upcast<F, T>(
    from: &F,
    to: &T,
    chain: &Chain,
    codec: Codec,
    options: CopyOptions,
    progress: impl FnMut(CopyProgress),
) -> Result<CopyProgress>
where
    F: EventStoreBackend + ?Sized,
    T: EventStoreBackend + ?Sized,
{
    let mut rewrite = UpcastRewrite { chain, codec, shift: HashMap::new() };
    copy_rewritten(from, to, options, &mut rewrite, progress).await
}

/// The domain of the ids of split events' later parts.
const PART_ID_DOMAIN: &str = "allframe.upcast-part";

struct UpcastRewrite<'a> {
    chain: &'a Chain,
    codec: Codec,
    /// Destination version minus source version, for streams where it is not 0.
    shift: HashMap<StreamId, i64>,
}

impl UpcastRewrite<'_> {
    fn shifted(&self, stream: &StreamId, version: u64) -> u64 {
        (version as i64 + self.shift.get(stream).copied().unwrap_or(0)) as u64
    }
}

impl Rewrite for UpcastRewrite<'_> {
    fn rewrite(&mut self, event: RecordedEvent, out: &mut Vec<RecordedEvent>) -> Result<()> {
        if is_system_stream(&event.stream_id) {
            out.push(event);
            return Ok(());
        }
        let decode = |source: BoxError| Error::Decode {
            stream: event.stream_id.clone(),
            version: event.version,
            event_type: event.event_type.to_string(),
            source,
        };
        let stored = schema_version::of(&event.metadata);
        if stored > self.chain.current_version() {
            let current = self.chain.current_version();
            return Err(decode(
                format!("written at schema version {stored}, newer than this build's {current}").into(),
            ));
        }
        let upcasted = self.chain.upcast(&event, self.codec).map_err(decode)?;
        let mut metadata = event.metadata.clone();
        metadata.headers.remove(schema_version::SCHEMA_VERSION_HEADER);
        if self.chain.current_version() != 1 {
            let current = self.chain.current_version().to_string();
            metadata.headers.insert(schema_version::SCHEMA_VERSION_HEADER.to_owned(), current);
        }
        let first = self.shifted(&event.stream_id, event.version);
        let parts = match upcasted {
            None => vec![(event.event_type.clone(), event.payload.clone())],
            Some(parts) => parts.into_iter().map(|(name, payload)| (name, payload.into())).collect(),
        };
        let count = parts.len() as i64;
        for (index, (event_type, payload)) in parts.into_iter().enumerate() {
            let mut metadata = metadata.clone();
            if index > 0 {
                metadata.event_id =
                    EventId::derived(PART_ID_DOMAIN, &event.metadata.event_id.to_string(), index as u64);
            }
            out.push(RecordedEvent {
                stream_id: event.stream_id.clone(),
                version: first + index as u64,
                position: event.position,
                event_type,
                payload,
                metadata,
            });
        }
        if count != 1 {
            *self.shift.entry(event.stream_id).or_insert(0) += count - 1;
        }
        Ok(())
    }

    fn destination_version(&self, stream: &StreamId, version: u64) -> u64 {
        self.shifted(stream, version)
    }

    fn keeps_snapshots(&self) -> bool {
        false
    }
}
