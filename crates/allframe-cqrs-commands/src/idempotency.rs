//! Durable idempotency keys, built on the store's own guarantees.
//!
//! A dispatch with key `k` gives its `i`-th event the id [`event_id`]`(k, i)`, a UUIDv8 derived
//! from the key alone. The append is then idempotent by contract point 9: of two dispatches
//! with one key, only one appends, whichever process runs them, before or after a restart.
//! The first dispatch's outcome is found again by contract point 13 (`find_event`, an index
//! lookup on every backend): its first event carries the command's name, stream and event
//! count in headers, and its last event's id is known. A command that produced no events
//! records the key with one marker event in the library's stream [`RECORD_STREAM`], which typed
//! readers of the whole log skip.

use std::time::Duration;

use allframe_cqrs_core::retry::StoredAt;
use allframe_cqrs_core::{EventId, EventStoreBackend, Metadata, NewEvent, RecordedEvent};

use crate::command::Outcome;
use crate::error::DispatchError;

/// The stream of markers of commands that produced no events.
pub const RECORD_STREAM: &str = "$allframe-commands";
/// The event type of those markers.
pub const RECORD_EVENT_TYPE: &str = "allframe.CommandRecorded";

/// Header naming the command (first event of an idempotent dispatch).
pub const HEADER_COMMAND: &str = "allframe.command";
/// Header holding the idempotency key.
pub const HEADER_KEY: &str = "allframe.idempotency_key";
/// Header holding the number of events the dispatch produced.
pub const HEADER_EVENTS: &str = "allframe.command_events";
/// Header holding the command's stream (on markers, whose own stream is [`RECORD_STREAM`]).
pub const HEADER_STREAM: &str = "allframe.command_stream";
/// Header holding the command's stream version (on markers).
pub const HEADER_VERSION: &str = "allframe.command_stream_version";

/// The id of the `index`-th event produced by a dispatch with idempotency `key`
/// ([`EventId::derived`] in the domain `allframe.idempotency.v1`). Stored forever, so this
/// function never changes.
pub fn event_id(key: &str, index: u64) -> EventId {
    EventId::derived("allframe.idempotency.v1", key, index)
}

/// Gives the events of an idempotent dispatch their derived ids and the first one its headers.
pub(crate) fn stamp(events: &mut [NewEvent], key: &str, command: &'static str) {
    let count = events.len();
    for (index, event) in events.iter_mut().enumerate() {
        event.metadata.event_id = event_id(key, index as u64);
    }
    if let Some(first) = events.first_mut() {
        record(&mut first.metadata.headers, key, command, count);
    }
}

/// The headers that let [`recorded`] find a keyed dispatch again, on its first event.
fn record(headers: &mut std::collections::BTreeMap<String, String>, key: &str, command: &'static str, events: usize) {
    headers.insert(HEADER_COMMAND.into(), command.into());
    headers.insert(HEADER_KEY.into(), key.into());
    headers.insert(HEADER_EVENTS.into(), events.to_string());
}

/// The marker of an idempotent dispatch that produced no events.
pub(crate) fn marker(key: &str, command: &'static str, stream: &str, version: u64, mut metadata: Metadata) -> NewEvent {
    metadata.event_id = event_id(key, 0);
    let headers = &mut metadata.headers;
    record(headers, key, command, 0);
    headers.insert(HEADER_STREAM.into(), stream.into());
    headers.insert(HEADER_VERSION.into(), version.to_string());
    // The facts are in the headers (readable by SQL too, in the metadata); the payload is an
    // empty JSON object.
    NewEvent::new(RECORD_EVENT_TYPE, b"{}".to_vec()).with_metadata(metadata)
}

/// The outcome of the first dispatch with `key`, if there was one: `command` on `stream`, or
/// [`DispatchError::DuplicateCommand`] when the key belongs to another command.
pub(crate) async fn recorded<E>(
    backend: &dyn EventStoreBackend,
    key: &str,
    command: &'static str,
    stream: &str,
) -> Result<Option<Outcome>, DispatchError<E>> {
    let Some(first_at) = backend.find_event(event_id(key, 0)).await? else { return Ok(None) };
    let first = read_located(backend, &first_at).await?;
    let headers = &first.metadata.headers;
    let recorded_command = headers.get(HEADER_COMMAND).map(String::as_str).unwrap_or("?");
    let recorded_stream = headers.get(HEADER_STREAM).map(String::as_str).unwrap_or(&first_at.stream);
    if recorded_command != command
        || recorded_stream != stream
        || headers.get(HEADER_KEY).map(String::as_str) != Some(key)
    {
        return Err(DispatchError::DuplicateCommand {
            key: key.to_owned(),
            first: format!("{recorded_command} on {recorded_stream}"),
        });
    }
    let events: u64 = headers.get(HEADER_EVENTS).and_then(|n| n.parse().ok()).unwrap_or(1);
    let command_id = first.metadata.causation_id.unwrap_or(first.metadata.event_id);
    let mut outcome = Outcome {
        command,
        command_id,
        stream_id: stream.to_owned(),
        events,
        stream_version: first_at.version,
        first_position: first_at.position,
        last_position: first_at.position,
        replayed: true,
        conflict_retries: 0,
    };
    if events == 0 {
        outcome.stream_version = headers.get(HEADER_VERSION).and_then(|v| v.parse().ok()).unwrap_or(0);
        outcome.first_position = 0;
        outcome.last_position = 0;
    } else if events > 1 {
        let last = backend.find_event(event_id(key, events - 1)).await?.ok_or_else(|| {
            allframe_cqrs_core::Error::corruption(
                backend.name(),
                "",
                first_at.position,
                format!("the last event of idempotent command {command} (key `{key}`) is missing"),
            )
        })?;
        outcome.stream_version = last.version;
        outcome.last_position = last.position;
    }
    Ok(Some(outcome))
}

/// Reads the event at `at`, waiting a little for an append that is still committing.
async fn read_located(
    backend: &dyn EventStoreBackend,
    at: &StoredAt,
) -> Result<RecordedEvent, allframe_cqrs_core::Error> {
    for _ in 0..50 {
        let page = backend.read_stream(&at.stream, at.version.saturating_sub(1), 1).await?;
        if let Some(event) = page.into_iter().next().filter(|e| e.version == at.version) {
            return Ok(event);
        }
        backend.wait_for_commit(at.position.saturating_sub(1), Duration::from_millis(100)).await?;
    }
    Err(allframe_cqrs_core::Error::Timeout { backend: backend.name(), operation: "reading an idempotency record" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_distinct_and_uuid_v8() {
        assert_eq!(event_id("order-17", 0), event_id("order-17", 0));
        assert_ne!(event_id("order-17", 0), event_id("order-17", 1));
        assert_ne!(event_id("order-17", 0), event_id("order-18", 0));
        let text = event_id("k", 0).to_string();
        assert_eq!(text.as_bytes()[14], b'8', "version 8: {text}");
        assert!(matches!(text.as_bytes()[19], b'8' | b'9' | b'a' | b'b'), "RFC variant: {text}");
        // Pinned: stored forever.
        assert_eq!(event_id("k", 0), event_id("k", 0));
    }
}
