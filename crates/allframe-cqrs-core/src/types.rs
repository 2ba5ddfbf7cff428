//! Byte-level record types shared by every backend.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::{Error, Result};

/// The name of an event stream (usually one aggregate instance, such as `account-42`).
///
/// Cheap to clone. Any UTF-8 text is accepted here; appends check it against [`Limits`]
/// (not empty, not too long, no NUL byte).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// Makes a stream id from any string.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        StreamId(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for StreamId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for StreamId {
    fn from(s: &str) -> Self {
        StreamId(s.into())
    }
}

impl From<String> for StreamId {
    fn from(s: String) -> Self {
        StreamId(s.into())
    }
}

impl From<&String> for StreamId {
    fn from(s: &String) -> Self {
        StreamId(s.as_str().into())
    }
}

impl PartialEq<str> for StreamId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for StreamId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

/// A 16-byte identifier in UUID layout (version 7: time-ordered, then random).
///
/// Every event has one; appends that repeat stored ids are idempotent (contract point 9).
/// Correlation and causation ids use the same type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventId(pub [u8; 16]);

impl EventId {
    /// A new, unique id: 48 bits of Unix milliseconds, then 74 random bits (UUIDv7 layout).
    ///
    /// The random bits come from the standard library's per-process random hash keys, so
    /// no extra dependency is needed; ids are unique, not secret.
    pub fn new() -> Self {
        Self::at(Timestamp::now())
    }

    /// A new, unique id whose time part is `now` (saves a second clock read).
    fn at(now: Timestamp) -> Self {
        // Per process: three random keys (from the standard library's random hash keys) and a
        // counter. Each id's 74 random bits are a keyed bijection of the counter, so ids of one
        // process never repeat, and ids of different processes differ by their keys. Two
        // SipHash runs per id used to cost about 440 instructions; this costs a few dozen.
        static KEYS: OnceLock<[u64; 3]> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let keys = KEYS.get_or_init(|| {
            let random = std::collections::hash_map::RandomState::new();
            [random.hash_one(1u64), random.hash_one(2u64) | 1, random.hash_one(3u64)]
        });
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        // `mix64` and multiplying by an odd key are bijections of u64: `a` is unique per count.
        let a = mix64(count.wrapping_mul(keys[1]) ^ keys[0]);
        let b = mix64(a ^ keys[2]);
        // 12 bits of `rand_a`: the 2 bits of `a` that `rand_b` has no room for, 10 bits of `b`.
        let rand_a = (((a >> 62) << 10) | (b >> 54)) as u16;
        let millis = now.as_micros().max(0) as u64 / 1000;
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        bytes[6..8].copy_from_slice(&((rand_a & 0x0fff) | 0x7000).to_be_bytes());
        bytes[8..].copy_from_slice(&((a & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000).to_be_bytes());
        EventId(bytes)
    }

    /// The id from a 128-bit number (big-endian byte order), handy in tests.
    pub const fn from_u128(value: u128) -> Self {
        EventId(value.to_be_bytes())
    }

    /// An id derived from `domain`, `key` and `index` alone (FNV-1a, 128 bits, with the UUID
    /// version 8 and variant bits set), so that a retried write repeats its ids and is
    /// idempotent (contract point 9). Ids derived in different domains never meet by design.
    /// Stored forever, so this function never changes.
    pub fn derived(domain: &str, key: &str, index: u64) -> Self {
        const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
        let mut hash = OFFSET;
        let mut feed = |bytes: &[u8]| {
            for byte in bytes {
                hash ^= u128::from(*byte);
                hash = hash.wrapping_mul(PRIME);
            }
        };
        feed(domain.as_bytes());
        feed(b"\0");
        feed(key.as_bytes());
        feed(b"\0");
        feed(&index.to_le_bytes());
        let versioned = (hash & !(0xf << 76)) | (0x8 << 76);
        EventId::from_u128((versioned & !(0b11 << 62)) | (0b10 << 62))
    }

    /// The raw 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The nil id (all zero bytes).
    pub const fn nil() -> Self {
        EventId([0; 16])
    }
}

/// The MurmurHash3 64-bit finaliser: a bijection of u64 that spreads every input bit.
const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The error for an [`EventId`] that is not 32 hexadecimal digits (dashes allowed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an event id (32 hex digits, dashes allowed): `{0}`")]
pub struct ParseEventIdError(String);

impl FromStr for EventId {
    type Err = ParseEventIdError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let digits: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
        if digits.len() != 32 {
            return Err(ParseEventIdError(s.to_owned()));
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in digits.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| ParseEventIdError(s.to_owned()))?;
            bytes[i] = u8::from_str_radix(text, 16).map_err(|_| ParseEventIdError(s.to_owned()))?;
        }
        Ok(EventId(bytes))
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.collect_str(self) } else { s.serialize_bytes(&self.0) }
    }
}

impl<'de> serde::Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = <Cow<'de, str>>::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            let bytes = <Cow<'de, [u8]>>::deserialize(d)?;
            let array: [u8; 16] =
                bytes.as_ref().try_into().map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"16 bytes"))?;
            Ok(EventId(array))
        }
    }
}

/// Microseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let micros = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i64,
            Err(e) => -(e.duration().as_micros() as i64),
        };
        Timestamp(micros)
    }

    /// A timestamp from microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// As RFC 3339 in UTC, to the second (`2026-12-01T20:15:07Z`), for tools and messages.
    pub fn to_rfc3339(self) -> String {
        let seconds = self.0.div_euclid(1_000_000);
        let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (H. Hinnant's `civil_from_days`).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let (h, m, s) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }

    /// As a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_micros(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(self.0.unsigned_abs())
        }
    }
}

/// What is stored with every event besides its payload.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Metadata {
    /// The event's unique id; repeating it makes an append idempotent.
    pub event_id: EventId,
    /// The id shared by every event of one business transaction, when set.
    pub correlation_id: Option<EventId>,
    /// The id of the event or command that caused this one, when set.
    pub causation_id: Option<EventId>,
    /// When the event was created.
    pub timestamp: Timestamp,
    /// Free-form application headers (user id, tenant, schema version, ...).
    pub headers: BTreeMap<String, String>,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata::new()
    }
}

/// The error for metadata bytes that [`Metadata::decode`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event metadata: {0}")]
pub struct MetadataDecodeError(&'static str);

const META_CORRELATION: u8 = 1;
const META_CAUSATION: u8 = 2;
const META_HEADERS: u8 = 4;

impl Metadata {
    /// Metadata with a fresh event id and the current time.
    pub fn new() -> Self {
        let timestamp = Timestamp::now();
        Metadata {
            event_id: EventId::at(timestamp),
            correlation_id: None,
            causation_id: None,
            timestamp,
            headers: BTreeMap::new(),
        }
    }

    /// Sets the event id.
    pub fn with_event_id(mut self, id: EventId) -> Self {
        self.event_id = id;
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: EventId) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: EventId) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Adds one header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Appends the binary form to `out`: a flags byte, the event id, the timestamp
    /// (i64 little-endian), the optional ids, then the headers as
    /// `u32 count, (u32 len, bytes, u32 len, bytes)*`, all little-endian.
    /// Durable backends store this form; [`Metadata::decode`] reads it back.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.correlation_id.is_some() {
            flags |= META_CORRELATION;
        }
        if self.causation_id.is_some() {
            flags |= META_CAUSATION;
        }
        if !self.headers.is_empty() {
            flags |= META_HEADERS;
        }
        out.push(flags);
        out.extend_from_slice(&self.event_id.0);
        out.extend_from_slice(&self.timestamp.0.to_le_bytes());
        if let Some(id) = self.correlation_id {
            out.extend_from_slice(&id.0);
        }
        if let Some(id) = self.causation_id {
            out.extend_from_slice(&id.0);
        }
        if !self.headers.is_empty() {
            out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
            for (key, value) in &self.headers {
                for text in [key, value] {
                    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
    }

    /// The binary form as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// The length of the binary form in bytes.
    pub fn encoded_len(&self) -> usize {
        let ids = 16 * (self.correlation_id.is_some() as usize + self.causation_id.is_some() as usize);
        let headers = if self.headers.is_empty() {
            0
        } else {
            4 + self.headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>()
        };
        1 + 16 + 8 + ids + headers
    }

    /// Reads the binary form written by [`Metadata::encode_into`]; the input must be exactly one record.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, MetadataDecodeError> {
        let mut reader = ByteReader(bytes);
        let flags = reader.u8()?;
        if flags & !(META_CORRELATION | META_CAUSATION | META_HEADERS) != 0 {
            return Err(MetadataDecodeError("unknown flag bits"));
        }
        let event_id = EventId(reader.array()?);
        let timestamp = Timestamp(i64::from_le_bytes(reader.array()?));
        let correlation_id = if flags & META_CORRELATION != 0 { Some(EventId(reader.array()?)) } else { None };
        let causation_id = if flags & META_CAUSATION != 0 { Some(EventId(reader.array()?)) } else { None };
        let mut headers = BTreeMap::new();
        if flags & META_HEADERS != 0 {
            let count = u32::from_le_bytes(reader.array()?);
            for _ in 0..count {
                let key = reader.string()?;
                let value = reader.string()?;
                headers.insert(key, value);
            }
        }
        if !reader.0.is_empty() {
            return Err(MetadataDecodeError("trailing bytes"));
        }
        Ok(Metadata { event_id, correlation_id, causation_id, timestamp, headers })
    }
}

struct ByteReader<'a>(&'a [u8]);

impl ByteReader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], MetadataDecodeError> {
        if self.0.len() < n {
            return Err(MetadataDecodeError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> std::result::Result<u8, MetadataDecodeError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], MetadataDecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn string(&mut self) -> std::result::Result<String, MetadataDecodeError> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| MetadataDecodeError("header is not UTF-8"))
    }
}

/// An event to append: type name, encoded payload and metadata. No stream, version or position yet.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewEvent {
    /// Stable name of the event's type.
    pub event_type: Cow<'static, str>,
    /// The encoded event.
    pub payload: Bytes,
    /// Event id, correlation, causation, time and headers.
    pub metadata: Metadata,
}

impl NewEvent {
    /// An event with fresh metadata (new id, current time).
    pub fn new(event_type: impl Into<Cow<'static, str>>, payload: impl Into<Bytes>) -> Self {
        NewEvent { event_type: event_type.into(), payload: payload.into(), metadata: Metadata::new() }
    }

    /// Replaces the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the event id (for idempotent retries).
    pub fn with_event_id(mut self, id: EventId) -> Self {
        self.metadata.event_id = id;
        self
    }

    /// Size counted against [`Limits::max_event_bytes`]: type name, payload and metadata.
    pub fn size(&self) -> usize {
        self.event_type.len() + self.payload.len() + self.metadata.encoded_len()
    }
}

/// An event as stored: its stream, version and global position, plus what was appended.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its version in the stream: 1 for the first event, then contiguous.
    pub version: u64,
    /// Its global position: strictly increasing in commit order across all streams.
    pub position: u64,
    /// Stable name of the event's type.
    pub event_type: Cow<'static, str>,
    /// The encoded event.
    pub payload: Bytes,
    /// Event id, correlation, causation, time and headers.
    pub metadata: Metadata,
}

impl RecordedEvent {
    /// The event without its stream, version and position, as it was appended.
    pub fn to_new_event(&self) -> NewEvent {
        NewEvent { event_type: self.event_type.clone(), payload: self.payload.clone(), metadata: self.metadata.clone() }
    }
}

/// A stored snapshot of one stream's state at a version.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Snapshot {
    /// The stream version the state includes (all events up to and including it).
    pub version: u64,
    /// The encoded state.
    pub payload: Bytes,
    /// When it was taken.
    pub timestamp: Timestamp,
}

impl Snapshot {
    /// A snapshot taken now.
    pub fn new(version: u64, payload: impl Into<Bytes>) -> Self {
        Snapshot { version, payload: payload.into(), timestamp: Timestamp::now() }
    }

    /// The rule every backend applies before storing a snapshot: its version is 1 or more
    /// and not above the stream's current version.
    pub fn check_version(&self, stream: &str, stream_version: u64) -> Result<()> {
        if self.version == 0 || self.version > stream_version {
            return Err(Error::InvalidSnapshot {
                stream: StreamId::from(stream),
                reason: format!(
                    "snapshot version {} is outside the stream's versions 1..={stream_version}",
                    self.version
                ),
            });
        }
        Ok(())
    }
}

/// What the caller expects the stream's version to be before an append.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum ExpectedVersion {
    /// No check.
    #[default]
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last version must be exactly this (`Exact(0)` is the same as `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    /// Checks a stream whose current version is `current` (0: no stream).
    pub fn check(self, stream: &str, current: u64) -> Result<()> {
        let ok = match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::StreamExists => current > 0,
            ExpectedVersion::Exact(n) => current == n,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Conflict { stream: StreamId::from(stream), expected: self, actual: current })
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(n) => write!(f, "version {n}"),
        }
    }
}

/// The outcome of a successful append.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct AppendResult {
    /// The stream's version after the append (the last appended event's version).
    pub stream_version: u64,
    /// Global position of the first appended event (0 when nothing was appended).
    pub first_position: u64,
    /// Global position of the last appended event (0 when nothing was appended).
    pub last_position: u64,
    /// True when every event was already stored by an earlier identical append,
    /// and this call wrote nothing (an idempotent retry).
    pub deduplicated: bool,
}

/// Streams whose ids start with this hold the library's own records, such as the command
/// bus's idempotency records of commands that produced no events. Typed whole-log readers
/// ([`EventStore::get_all_events`](crate::EventStore::get_all_events),
/// [`stream_all`](crate::EventStore::stream_all), [`project`](crate::EventStore::project), typed
/// subscriptions) skip them, since they are not the application's events; raw reads, copies
/// and checks see them like any other stream.
pub const SYSTEM_STREAM_PREFIX: &str = "$allframe-";

/// Whether `stream` is one of the library's own streams ([`SYSTEM_STREAM_PREFIX`]).
pub fn is_system_stream(stream: &str) -> bool {
    stream.starts_with(SYSTEM_STREAM_PREFIX)
}

/// Input limits every backend enforces (contract point 10).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Limits {
    /// Longest stream id, in bytes.
    pub max_stream_id_bytes: usize,
    /// Longest event type name, in bytes.
    pub max_event_type_bytes: usize,
    /// Largest single event (type name + payload + metadata), in bytes.
    pub max_event_bytes: usize,
    /// Most events in one append.
    pub max_events_per_append: usize,
    /// Largest snapshot payload, in bytes (stored lengths must fit the backends' formats).
    pub max_snapshot_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stream_id_bytes: 1024,
            max_event_type_bytes: 256,
            max_event_bytes: 4 * 1024 * 1024,
            max_events_per_append: 10_000,
            max_snapshot_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Checks a stream id: not empty, not longer than the limit, no NUL byte.
    pub fn check_stream_id(&self, stream: &str) -> Result<()> {
        check_name(stream, self.max_stream_id_bytes).map_err(|reason| Error::InvalidStreamId { reason })
    }

    /// Checks a checkpoint save (contract points 10 and 14): the name follows the stream-id
    /// rules, and `position` is not beyond `head`, the log's last position.
    pub fn check_checkpoint(&self, name: &str, position: u64, head: u64) -> Result<()> {
        check_name(name, self.max_stream_id_bytes)
            .map_err(|reason| Error::InvalidCheckpoint { name: name.to_owned(), reason })?;
        if position > head {
            return Err(Error::InvalidCheckpoint {
                name: name.to_owned(),
                reason: format!("position {position} is beyond the log's head at {head}"),
            });
        }
        Ok(())
    }

    /// Checks a snapshot before it is saved: the stream id, and the payload's size, so that a
    /// snapshot too large for the backend's format is refused instead of stored damaged.
    pub fn check_snapshot(&self, stream: &str, snapshot: &Snapshot) -> Result<()> {
        self.check_stream_id(stream)?;
        let size = snapshot.payload.len();
        if size > self.max_snapshot_bytes {
            return Err(Error::InvalidSnapshot {
                stream: StreamId::from(stream),
                reason: format!("it is {size} bytes, more than the limit of {} bytes", self.max_snapshot_bytes),
            });
        }
        Ok(())
    }

    /// Checks a whole append: the stream id, the count, and each event's type name and size.
    pub fn check_append(&self, stream: &str, events: &[NewEvent]) -> Result<()> {
        self.check_stream_id(stream)?;
        if events.len() > self.max_events_per_append {
            return Err(Error::TooManyEvents { count: events.len(), limit: self.max_events_per_append });
        }
        for event in events {
            check_name(&event.event_type, self.max_event_type_bytes)
                .map_err(|reason| Error::InvalidEventType { reason })?;
            let size = event.size();
            if size > self.max_event_bytes {
                return Err(Error::EventTooLarge { size, limit: self.max_event_bytes });
            }
        }
        check_unique_ids(stream, events)
    }
}

/// Refuses an append that carries one event id twice (reported with `stored_version: 0`).
fn check_unique_ids(stream: &str, events: &[NewEvent]) -> Result<()> {
    let duplicate = if events.len() <= 16 {
        events.iter().enumerate().find_map(|(i, a)| {
            events[..i].iter().any(|b| b.metadata.event_id == a.metadata.event_id).then_some(a.metadata.event_id)
        })
    } else {
        // Taken out of a heap in order, as 128-bit integers (same order as the bytes): no
        // hashing, no input can make it slow (unlike a hash set with a cheap hasher), and a
        // fraction of a general sort's code in every binary that appends.
        let mut ids: std::collections::BinaryHeap<u128> =
            events.iter().map(|e| u128::from_be_bytes(e.metadata.event_id.0)).collect();
        let mut previous = ids.pop();
        let mut repeated = None;
        while let Some(id) = ids.pop() {
            if Some(id) == previous {
                repeated = Some(EventId(id.to_be_bytes()));
                break;
            }
            previous = Some(id);
        }
        repeated
    };
    match duplicate {
        Some(event_id) => {
            Err(Error::DuplicateEventId { event_id, stored_stream: StreamId::from(stream), stored_version: 0 })
        }
        None => Ok(()),
    }
}

fn check_name(name: &str, max: usize) -> std::result::Result<(), String> {
    if name.is_empty() {
        Err("it is empty".into())
    } else if name.len() > max {
        Err(format!("it is {} bytes long, more than the limit of {max}", name.len()))
    } else if name.contains('\0') {
        Err("it contains a NUL byte".into())
    } else {
        Ok(())
    }
}

/// When an acknowledged append is safe from a crash.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Durability {
    /// Kept in memory only: lost when the process ends.
    Volatile,
    /// Written to the OS but never forced to disk by us: survives a process crash,
    /// not a power loss or kernel crash.
    NoSync,
    /// Forced to disk on an interval: a power loss loses at most the last interval.
    Interval(Duration),
    /// Forced to disk (fsync / fdatasync / synchronous commit) before the append is
    /// acknowledged; concurrent appends share one sync (group commit).
    Synchronous,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Volatile => f.write_str("volatile (memory only)"),
            Durability::NoSync => f.write_str("no sync (survives a process crash, not a power loss)"),
            Durability::Interval(d) => write!(f, "sync every {d:?}"),
            Durability::Synchronous => f.write_str("synchronous (synced before acknowledging)"),
        }
    }
}

/// What a backend can do; a backend says so here rather than silently doing nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct Capabilities {
    /// The backend's durability mode as configured.
    pub durability: Durability,
    /// Snapshots are stored.
    pub snapshots: bool,
    /// Appends with stored event ids are recognised as retries.
    pub idempotent_appends: bool,
    /// Subscribers are woken on commit (otherwise they poll).
    pub live_notifications: bool,
    /// Data outlives the process (the store can be reopened).
    pub persistent: bool,
    /// Payloads must be JSON documents and are stored as such (PostgreSQL `jsonb`): they come
    /// back equal as JSON, possibly re-formatted, and non-JSON payloads are refused.
    /// When false, payloads come back byte for byte.
    pub json_payloads: bool,
}

impl Capabilities {
    /// Capabilities with the given durability and everything else supported.
    pub const fn full(durability: Durability, persistent: bool) -> Self {
        Capabilities {
            durability,
            snapshots: true,
            idempotent_appends: true,
            live_notifications: true,
            persistent,
            json_payloads: false,
        }
    }
}

/// Counters and facts a backend reports through `stats()`.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct BackendStats {
    /// The backend's name.
    pub backend: &'static str,
    /// Durability mode in force.
    pub durability: Durability,
    /// Number of events stored.
    pub events: u64,
    /// Number of streams.
    pub streams: u64,
    /// Number of streams with a snapshot.
    pub snapshots: u64,
    /// Highest global position stored (0: empty).
    pub head_position: u64,
    /// Backend-specific facts, such as bytes on disk or a repaired torn tail.
    pub details: BTreeMap<String, String>,
}

impl BackendStats {
    /// Stats with the given counters and no details.
    pub fn new(backend: &'static str, durability: Durability) -> Self {
        BackendStats {
            backend,
            durability,
            events: 0,
            streams: 0,
            snapshots: 0,
            head_position: 0,
            details: BTreeMap::new(),
        }
    }

    /// The seed's name for `events`.
    pub fn total_events(&self) -> u64 {
        self.events
    }

    /// The seed's name for `streams`.
    pub fn total_aggregates(&self) -> u64 {
        self.streams
    }

    /// The seed's name for `snapshots`.
    pub fn total_snapshots(&self) -> u64 {
        self.snapshots
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn timestamps_print_as_rfc3339() {
        assert_eq!(Timestamp::from_micros(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp::from_micros(1_796_156_107_000_000).to_rfc3339(), "2026-12-01T20:15:07Z");
        assert_eq!(Timestamp::from_micros(951_782_400_000_000).to_rfc3339(), "2000-02-29T00:00:00Z");
        assert_eq!(Timestamp::from_micros(-1_000_000).to_rfc3339(), "1969-12-31T23:59:59Z");
    }

    use super::*;

    #[test]
    fn new_ids_are_unique_time_ordered_uuid_v7() {
        let now = Timestamp::now();
        let ids: Vec<EventId> = (0..200_000).map(|_| EventId::at(now)).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "an id repeated");
        for id in &ids {
            assert_eq!(id.0[6] >> 4, 7, "version nibble of {id}");
            assert_eq!(id.0[8] >> 6, 0b10, "variant bits of {id}");
        }
        let later = EventId::at(Timestamp::from_micros(now.as_micros() + 2_000));
        assert!(ids.iter().all(|id| *id < later), "the time part orders ids");
        // The random bits are spread: each of the 74 bits is set in about half the ids.
        // Bits counted from the top: 52..64 are `rand_a`, 66..128 `rand_b`.
        for bit in (52..64).chain(66..128) {
            let set = ids.iter().filter(|id| (u128::from_be_bytes(id.0) >> (127 - bit)) & 1 == 1).count();
            assert!((95_000..105_000).contains(&set), "bit {bit} set in {set} of 200000 ids");
        }
    }

    #[test]
    fn an_append_that_repeats_an_id_is_refused_small_or_large() {
        let limits = Limits::default();
        for len in [2usize, 16, 17, 100] {
            let mut events: Vec<NewEvent> = (0..len).map(|_| NewEvent::new("Happened", vec![1])).collect();
            assert!(limits.check_append("s", &events).is_ok(), "{len} distinct ids");
            let repeated = events[0].metadata.event_id;
            events[len - 1].metadata.event_id = repeated;
            match limits.check_append("s", &events) {
                Err(Error::DuplicateEventId { event_id, .. }) => assert_eq!(event_id, repeated, "{len} events"),
                other => panic!("{len} events with a repeated id: {other:?}"),
            }
        }
    }
}
