//! Contract point 9 in one place: from where each of an append's event ids is already stored,
//! decide whether the append is new, a retry of stored events, or a refused partial repeat.
//!
//! Backends look ids up (their primitive: a hash map, an index file, a column family, a
//! unique index); [`resolve_retry`] applies the rule (the policy), so every backend answers a
//! retry the same way, field for field.

use crate::error::{Error, Result};
use crate::types::{AppendResult, NewEvent, StreamId};

/// Where an event id is stored: its stream, version and global position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAt {
    /// The stream holding the event.
    pub stream: StreamId,
    /// Its version in that stream.
    pub version: u64,
    /// Its global position.
    pub position: u64,
}

/// Decides an append from `stored[i]`, where the id of `events[i]` is stored (`None`: not
/// stored).
///
/// * no id stored: `Ok(None)`, a new append;
/// * every id stored in `stream` at consecutive versions, in order (by one earlier append or
///   by consecutive ones): `Ok(Some(result))`, the stored positions and the version of the
///   last event, with `deduplicated: true`;
/// * anything else: [`Error::DuplicateEventId`] naming the first stored id when the first id
///   is new; the first id when it is stored in another stream or the run breaks at a new id;
///   otherwise the id that breaks the run.
///
/// ```
/// use allframe_cqrs_core::retry::{StoredAt, resolve_retry};
/// use allframe_cqrs_core::{NewEvent, StreamId};
/// let events = vec![NewEvent::new("Opened", "{}")];
/// assert_eq!(resolve_retry("a", &events, &[None]).unwrap(), None);
/// let at = StoredAt { stream: StreamId::from("a"), version: 1, position: 7 };
/// let retry = resolve_retry("a", &events, &[Some(at)]).unwrap().unwrap();
/// assert!(retry.deduplicated && retry.first_position == 7 && retry.stream_version == 1);
/// ```
pub fn resolve_retry(stream: &str, events: &[NewEvent], stored: &[Option<StoredAt>]) -> Result<Option<AppendResult>> {
    debug_assert_eq!(events.len(), stored.len(), "one lookup per event");
    let duplicate = |index: usize| {
        let at = stored[index].as_ref().expect("only stored ids are named");
        Error::DuplicateEventId {
            event_id: events[index].metadata.event_id,
            stored_stream: at.stream.clone(),
            stored_version: at.version,
        }
    };
    let Some(first) = stored.first().and_then(Option::as_ref) else {
        return match stored.iter().position(Option::is_some) {
            Some(index) => Err(duplicate(index)),
            None => Ok(None),
        };
    };
    if first.stream != *stream {
        return Err(duplicate(0));
    }
    let mut last = first;
    for (offset, at) in stored.iter().enumerate().skip(1) {
        match at {
            Some(at) if at.stream == *stream && at.version == first.version + offset as u64 => last = at,
            Some(_) => return Err(duplicate(offset)),
            None => return Err(duplicate(0)),
        }
    }
    Ok(Some(AppendResult {
        stream_version: last.version,
        first_position: first.position,
        last_position: last.position,
        deduplicated: true,
    }))
}

/// [`resolve_retry`] with the ids looked up one at a time by `lookup`, for backends whose
/// index answers per id: a new append (no id stored, the common case) costs one lookup per
/// event and no allocation; only when an id is found are the rest looked up and collected.
pub fn resolve_retry_with<F>(stream: &str, events: &[NewEvent], mut lookup: F) -> Result<Option<AppendResult>>
where
    F: FnMut(&NewEvent) -> Result<Option<StoredAt>>,
{
    let mut found = None;
    for (index, event) in events.iter().enumerate() {
        if let Some(at) = lookup(event)? {
            found = Some((index, at));
            break;
        }
    }
    let Some((first_found, at)) = found else { return Ok(None) };
    let mut stored: Vec<Option<StoredAt>> = Vec::with_capacity(events.len());
    stored.resize(first_found, None);
    stored.push(Some(at));
    for event in &events[first_found + 1..] {
        stored.push(lookup(event)?);
    }
    resolve_retry(stream, events, &stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EventId;

    fn at(stream: &str, version: u64, position: u64) -> Option<StoredAt> {
        Some(StoredAt { stream: StreamId::from(stream), version, position })
    }

    fn events(n: u128) -> Vec<NewEvent> {
        (1..=n).map(|i| NewEvent::new("T", "{}").with_event_id(EventId::from_u128(i))).collect()
    }

    fn named(result: Result<Option<AppendResult>>) -> (u128, String, u64) {
        match result {
            Err(Error::DuplicateEventId { event_id, stored_stream, stored_version }) => {
                (u128::from_be_bytes(event_id.0), stored_stream.to_string(), stored_version)
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }

    #[test]
    fn a_retry_spanning_appends_reports_its_own_stream() {
        let result = resolve_retry("a", &events(2), &[at("a", 2, 2), at("a", 3, 6)]).unwrap().unwrap();
        assert_eq!(result, AppendResult { stream_version: 3, first_position: 2, last_position: 6, deduplicated: true });
    }

    #[test]
    fn partial_or_foreign_repeats_name_the_right_id() {
        assert_eq!(named(resolve_retry("a", &events(2), &[None, at("b", 4, 9)])), (2, "b".into(), 4));
        assert_eq!(named(resolve_retry("a", &events(2), &[at("b", 1, 1), at("b", 2, 2)])), (1, "b".into(), 1));
        assert_eq!(named(resolve_retry("a", &events(2), &[at("a", 1, 1), None])), (1, "a".into(), 1));
        assert_eq!(named(resolve_retry("a", &events(2), &[at("a", 1, 1), at("a", 3, 3)])), (2, "a".into(), 3));
        assert_eq!(resolve_retry("a", &events(2), &[None, None]).unwrap(), None);
    }

    #[test]
    fn the_lazy_lookup_decides_the_same_and_stops_early_for_new_appends() {
        let cases: Vec<Vec<Option<StoredAt>>> = vec![
            vec![None, None, None],
            vec![None, at("b", 4, 9), None],
            vec![at("a", 2, 2), at("a", 3, 6), at("a", 4, 7)],
            vec![at("a", 1, 1), None, at("a", 3, 3)],
        ];
        for stored in cases {
            let events = events(stored.len() as u128);
            let mut lookups = 0;
            let lazy = resolve_retry_with("a", &events, |event| {
                lookups += 1;
                let i = events.iter().position(|e| e.metadata.event_id == event.metadata.event_id).unwrap();
                Ok(stored[i].clone())
            });
            assert_eq!(format!("{lazy:?}"), format!("{:?}", resolve_retry("a", &events, &stored)), "{stored:?}");
            assert_eq!(lookups, events.len(), "each id is looked up once: {stored:?}");
        }
    }
}
