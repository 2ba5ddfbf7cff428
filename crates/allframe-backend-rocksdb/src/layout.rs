//! The on-disk layout: column family names, key and value encodings.
//!
//! Every integer in a key is big-endian, so that RocksDB's byte-wise key order is the numeric
//! order (log order). Stream ids end with a `0x00` byte inside keys: ids never contain NUL
//! (see [`Limits`](allframe_cqrs_core::Limits)), so `id ‖ 0x00` is a prefix of no other
//! stream's keys, and stream keys sort by id byte order. Ids that cannot be stored (with a NUL,
//! or empty) are read as absent without a look at the index, whose range for them would cover
//! other streams' keys ([`can_be_stored`]). The layout is described in
//! `docs/ROCKSDB.md` and argued in `docs/decisions/0301-rocksdb-layout.md`.

use allframe_cqrs_core::{Bytes, EventId, Metadata, NewEvent, RecordedEvent, Snapshot, StreamId, Timestamp};

/// Metadata of the store (`format`, `counters`) lives in RocksDB's default column family.
pub(crate) const CF_META: &str = "default";
/// Events by global position: `position (u64 BE)` → event record.
pub(crate) const CF_EVENTS: &str = "events";
/// The stream index: `stream ‖ 0x00 ‖ last version (u64 BE)` → `first version ‖ first position`
/// (both u64 BE), one entry per append (a run of contiguous versions at contiguous positions).
pub(crate) const CF_STREAM_INDEX: &str = "stream_index";
/// Stream heads: `stream` → its version (u64 BE).
pub(crate) const CF_STREAM_HEADS: &str = "stream_heads";
/// Event ids: `event id (16 bytes)` → its position (u64 BE), for idempotent retries.
pub(crate) const CF_EVENT_IDS: &str = "event_ids";
/// Snapshots: `stream` → `version (u64 BE) ‖ timestamp (i64 BE) ‖ payload`.
pub(crate) const CF_SNAPSHOTS: &str = "snapshots";

/// Every column family of a store, in creation order.
pub(crate) const ALL_CFS: [&str; 6] =
    [CF_META, CF_EVENTS, CF_STREAM_INDEX, CF_STREAM_HEADS, CF_EVENT_IDS, CF_SNAPSHOTS];

/// Key of the format marker in [`CF_META`].
pub(crate) const KEY_FORMAT: &[u8] = b"format";
/// The format marker's value: names the layout and its version.
pub(crate) const FORMAT_V1: &[u8] = b"allframe-cqrs rocksdb layout 1";
/// Key of the counters in [`CF_META`]: `streams (u64 BE) ‖ snapshots (u64 BE)`.
pub(crate) const KEY_COUNTERS: &[u8] = b"counters";
/// Prefix of the named checkpoints' keys in [`CF_META`] (contract point 14):
/// `checkpoint/ ‖ name` → position (u64 BE). No other meta key starts with it.
pub(crate) const CHECKPOINT_PREFIX: &[u8] = b"checkpoint/";

/// The key of checkpoint `name`.
pub(crate) fn checkpoint_key(name: &str) -> Vec<u8> {
    [CHECKPOINT_PREFIX, name.as_bytes()].concat()
}

/// First byte of every event record: the record layout version.
const EVENT_RECORD_V1: u8 = 1;

/// Why a stored record could not be read.
pub(crate) type DecodeError = &'static str;

/// The key of the event at `position`.
pub(crate) fn position_key(position: u64) -> [u8; 8] {
    position.to_be_bytes()
}

/// Reads a big-endian u64 that must be exactly 8 bytes.
pub(crate) fn read_u64(bytes: &[u8]) -> Result<u64, DecodeError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| "expected an 8-byte big-endian integer")?;
    Ok(u64::from_be_bytes(array))
}

/// Whether `stream` can own index keys: every stored id is non-empty and has no NUL byte
/// ([`Limits`](allframe_cqrs_core::Limits) refuses others on append). The key range of an id
/// with a NUL would cover another stream's keys (`a ‖ 0x00` is the prefix of all of `a`'s),
/// so such ids are read as absent without looking at the index.
pub(crate) fn can_be_stored(stream: &str) -> bool {
    !stream.is_empty() && !stream.as_bytes().contains(&0)
}

/// Whether `key` is an index key of the stream whose prefix (`stream ‖ 0x00`) is `prefix`:
/// exactly the prefix and an 8-byte version.
pub(crate) fn is_index_key_of(key: &[u8], prefix: &[u8]) -> bool {
    key.len() == prefix.len() + 8 && key.starts_with(prefix)
}

/// `stream ‖ 0x00`: the prefix of all of a stream's index keys.
pub(crate) fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 9);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key
}

/// `stream ‖ 0x01`: the exclusive upper bound of a stream's index keys.
pub(crate) fn stream_upper_bound(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 1);
    key.extend_from_slice(stream.as_bytes());
    key.push(1);
    key
}

/// The index key of the run of `stream` ending at `last_version`.
pub(crate) fn index_key(stream: &str, last_version: u64) -> Vec<u8> {
    let mut key = stream_prefix(stream);
    key.extend_from_slice(&last_version.to_be_bytes());
    key
}

/// An index entry: versions `first_version..=last_version` are at positions from `first_position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) first_version: u64,
    pub(crate) last_version: u64,
    pub(crate) first_position: u64,
}

impl Run {
    /// The index value: `first version ‖ first position`.
    pub(crate) fn value(&self) -> [u8; 16] {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&self.first_version.to_be_bytes());
        value[8..].copy_from_slice(&self.first_position.to_be_bytes());
        value
    }

    /// Reads an index entry of the stream whose key prefix is `prefix_len` bytes long.
    pub(crate) fn decode(key: &[u8], value: &[u8], prefix_len: usize) -> Result<Run, DecodeError> {
        let last_version = read_u64(key.get(prefix_len..).ok_or("index key too short")?)?;
        if value.len() != 16 {
            return Err("index value is not 16 bytes");
        }
        let first_version = read_u64(&value[..8])?;
        let first_position = read_u64(&value[8..])?;
        if first_version == 0 || first_version > last_version {
            return Err("index run has versions out of order");
        }
        Ok(Run { first_version, last_version, first_position })
    }
}

/// The counters record: `streams ‖ snapshots`.
pub(crate) fn counters_value(streams: u64, snapshots: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&streams.to_be_bytes());
    value[8..].copy_from_slice(&snapshots.to_be_bytes());
    value
}

/// Reads the counters record.
pub(crate) fn decode_counters(value: &[u8]) -> Result<(u64, u64), DecodeError> {
    if value.len() != 16 {
        return Err("counters record is not 16 bytes");
    }
    Ok((read_u64(&value[..8])?, read_u64(&value[8..])?))
}

/// Appends the event record to `out`:
/// `1 ‖ version (u64 BE) ‖ stream len (u32 BE) ‖ stream ‖ type len (u32 BE) ‖ type ‖
/// metadata len (u32 BE) ‖ metadata ‖ payload`.
pub(crate) fn encode_event(out: &mut Vec<u8>, stream: &str, version: u64, event: &NewEvent) {
    out.clear();
    let meta_len = event.metadata.encoded_len();
    out.reserve(1 + 8 + 12 + stream.len() + event.event_type.len() + meta_len + event.payload.len());
    out.push(EVENT_RECORD_V1);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&(stream.len() as u32).to_be_bytes());
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(&(event.event_type.len() as u32).to_be_bytes());
    out.extend_from_slice(event.event_type.as_bytes());
    out.extend_from_slice(&(meta_len as u32).to_be_bytes());
    event.metadata.encode_into(out);
    out.extend_from_slice(&event.payload);
}

/// The parts of an event record before its payload.
pub(crate) struct EventHeader<'a> {
    pub(crate) version: u64,
    pub(crate) stream: &'a [u8],
    pub(crate) event_type: &'a [u8],
    pub(crate) metadata: &'a [u8],
    /// Offset of the payload in the record.
    pub(crate) payload_offset: usize,
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], DecodeError> {
    let end = at.checked_add(n).filter(|end| *end <= bytes.len()).ok_or("event record truncated")?;
    let out = &bytes[*at..end];
    *at = end;
    Ok(out)
}

fn take_len(bytes: &[u8], at: &mut usize) -> Result<usize, DecodeError> {
    let raw: [u8; 4] = take(bytes, at, 4)?.try_into().map_err(|_| "event record truncated")?;
    Ok(u32::from_be_bytes(raw) as usize)
}

/// Reads the header of an event record.
pub(crate) fn decode_header(record: &[u8]) -> Result<EventHeader<'_>, DecodeError> {
    let mut at = 0;
    if take(record, &mut at, 1)? != [EVENT_RECORD_V1] {
        return Err("unknown event record version");
    }
    let version = read_u64(take(record, &mut at, 8)?)?;
    let len = take_len(record, &mut at)?;
    let stream = take(record, &mut at, len)?;
    let len = take_len(record, &mut at)?;
    let event_type = take(record, &mut at, len)?;
    let len = take_len(record, &mut at)?;
    let metadata = take(record, &mut at, len)?;
    Ok(EventHeader { version, stream, event_type, metadata, payload_offset: at })
}

/// Reads a whole event record stored at `position`.
///
/// `stream_id` is reused when it names the record's stream, so that reading one stream
/// allocates the id once.
pub(crate) fn decode_event(
    record: &[u8],
    position: u64,
    stream_id: &mut Option<StreamId>,
) -> Result<RecordedEvent, DecodeError> {
    let header = decode_header(record)?;
    let stream = std::str::from_utf8(header.stream).map_err(|_| "stream id is not UTF-8")?;
    let stream_id = match stream_id {
        Some(id) if id.as_str() == stream => id.clone(),
        slot => slot.insert(StreamId::from(stream)).clone(),
    };
    let event_type = std::str::from_utf8(header.event_type).map_err(|_| "event type is not UTF-8")?;
    let metadata = Metadata::decode(header.metadata).map_err(|_| "malformed event metadata")?;
    Ok(RecordedEvent {
        stream_id,
        version: header.version,
        position,
        event_type: event_type.to_owned().into(),
        payload: Bytes::copy_from_slice(&record[header.payload_offset..]),
        metadata,
    })
}

/// The event id of an event.
pub(crate) fn event_id_key(id: &EventId) -> &[u8; 16] {
    id.as_bytes()
}

/// The snapshot record: `version ‖ timestamp ‖ payload`.
pub(crate) fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + snapshot.payload.len());
    out.extend_from_slice(&snapshot.version.to_be_bytes());
    out.extend_from_slice(&snapshot.timestamp.as_micros().to_be_bytes());
    out.extend_from_slice(&snapshot.payload);
    out
}

/// The version of a stored snapshot record.
pub(crate) fn snapshot_version(record: &[u8]) -> Result<u64, DecodeError> {
    read_u64(record.get(..8).ok_or("snapshot record truncated")?)
}

/// Reads a snapshot record.
pub(crate) fn decode_snapshot(record: &[u8]) -> Result<Snapshot, DecodeError> {
    if record.len() < 16 {
        return Err("snapshot record truncated");
    }
    let version = read_u64(&record[..8])?;
    let micros: [u8; 8] = record[8..16].try_into().map_err(|_| "snapshot record truncated")?;
    Ok(Snapshot {
        version,
        payload: Bytes::copy_from_slice(&record[16..]),
        timestamp: Timestamp::from_micros(i64::from_be_bytes(micros)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_records_round_trip() {
        let event = NewEvent::new("Deposited", &b"{\"amount\":5}"[..])
            .with_metadata(Metadata::new().with_header("tenant", "t1").with_correlation_id(EventId::from_u128(9)));
        let mut record = Vec::new();
        encode_event(&mut record, "account-1", 7, &event);
        let mut cached = None;
        let decoded = decode_event(&record, 42, &mut cached).unwrap();
        assert_eq!(decoded.stream_id, "account-1");
        assert_eq!((decoded.version, decoded.position), (7, 42));
        assert_eq!(decoded.to_new_event(), event);
        for cut in 0..record.len() - event.payload.len() {
            assert!(decode_event(&record[..cut], 42, &mut cached).is_err(), "truncated at {cut}");
        }
    }

    #[test]
    fn index_keys_sort_by_stream_then_version() {
        let mut keys = vec![
            index_key("a-b", 1),
            index_key("a", 256),
            index_key("a", 2),
            index_key("b", 1),
            index_key("a", u64::MAX),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                index_key("a", 2),
                index_key("a", 256),
                index_key("a", u64::MAX),
                index_key("a-b", 1),
                index_key("b", 1)
            ]
        );
        assert!(index_key("a", u64::MAX) < stream_upper_bound("a"));
        assert!(stream_upper_bound("a") <= index_key("a-b", 0));
    }

    #[test]
    fn only_stored_ids_own_their_index_range() {
        for id in ["", "a\0", "\0", "a\0b", "\0a"] {
            assert!(!can_be_stored(id), "{id:?}");
        }
        assert!(can_be_stored("a") && can_be_stored("a\u{1}"));
        // `a`'s keys lie in the range of `a ‖ 0x00`, which is why such ids are never looked up,
        // and are not keys of it by shape either.
        let key = index_key("a", 5);
        assert!(key >= index_key("a\0", 0) && key < stream_upper_bound("a\0"));
        assert!(!is_index_key_of(&key, &stream_prefix("a\0")));
        assert!(is_index_key_of(&key, &stream_prefix("a")));
        assert!(!is_index_key_of(&index_key("ab", 5), &stream_prefix("a")));
    }

    #[test]
    fn snapshots_round_trip() {
        let snapshot = Snapshot::new(3, &b"state"[..]);
        let record = encode_snapshot(&snapshot);
        assert_eq!(decode_snapshot(&record).unwrap(), snapshot);
        assert_eq!(snapshot_version(&record).unwrap(), 3);
        assert!(decode_snapshot(&record[..10]).is_err());
    }
}
